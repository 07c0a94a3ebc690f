"""The rules of a read-only query session, shared by `queries` (what runs, and when) and `querysession` (the
libpq sessions that run it): the transaction each query runs in, the role check and what fails it, and how a
result prints. See `queries` for why each rule exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from runner.engines import PG_LOCK_WAIT_TIMEOUT, Connection

__all__ = [
    "BEGIN",
    "END",
    "FIX_SETTINGS",
    "ROLE_CHECK",
    "STATEMENT_TIMEOUT",
    "UNSAFE_ROLES",
    "Credential",
    "Query",
    "printed",
    "role_problems",
]

STATEMENT_TIMEOUT: Final = "10min"
# Predefined roles that reach beyond reading the database: the server's files and programs, other sessions, every
# session's statistics and queries (pg_monitor holds pg_read_all_stats), writing every table.
UNSAFE_ROLES: Final = (
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_write_all_data",
    "pg_signal_backend",
    "pg_read_all_stats",
    "pg_monitor",
)

_SETTINGS: Final = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("statement_timeout", STATEMENT_TIMEOUT),
    ("lock_timeout", PG_LOCK_WAIT_TIMEOUT),
)
# A query's transaction. The SELECT that fixes its settings is its first query, so its snapshot is taken before the
# user's statement, which then can no longer make it read-write.
BEGIN: Final = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
FIX_SETTINGS: Final = "SELECT " + ", ".join(f"pg_catalog.set_config('{k}', '{v}', true)" for k, v in _SETTINGS)
END: Final = "ROLLBACK"
# The role itself and every role it is a member of (so may become), with what each may do; then the remote
# extensions whose functions any of them may execute in this database (dblink, postgres_fdw: they open connections
# to other hosts, where a query could send what it reads).
ROLE_CHECK: Final = """
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls, r.rolname = current_user
FROM pg_catalog.pg_roles r WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') ORDER BY r.rolname;
SELECT DISTINCT e.extname FROM pg_catalog.pg_extension e
JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.refobjid = e.oid
  AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
WHERE e.extname IN ('dblink', 'postgres_fdw') AND EXISTS (
  SELECT 1 FROM pg_catalog.pg_roles r WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')
  AND pg_catalog.has_function_privilege(r.oid, d.objid, 'EXECUTE'))
ORDER BY 1
"""


@dataclass(frozen=True)
class Query:
    name: str
    database: str
    sql: str


@dataclass(frozen=True)
class Credential:
    """A login to run queries as: QUERY_USER/QUERY_PASSWORD, or a scratch server's throwaway role."""

    user: str
    password: str = field(repr=False)

    def on(self, connection: Connection) -> Connection:
        """`connection`'s server (host, port, TLS), logged in as this role."""
        return replace(connection, user=self.user, password=self.password)


def printed(rows: Sequence[Sequence[bytes | None]]) -> str:
    """Rows as `psql -At` prints them: text values, `|` between columns, NULL as nothing, a newline after each; rows
    without columns (`SELECT FROM t`) print nothing at all."""
    return "".join(
        "|".join("" if v is None else v.decode("utf-8", "replace") for v in row) + "\n" for row in rows if row
    )


def role_problems(roles: Sequence[Sequence[Any]], extensions: Sequence[str], database: str) -> list[str]:
    """What makes the queries' role more than a reader, from ROLE_CHECK's answers: `roles` are the role itself and
    every role it is a member of, as (name, superuser, createrole, replication, bypassrls, is itself); `extensions`
    the remote ones whose functions it may execute in `database`. Phrases that follow "it"; none for a reader."""
    if any(superuser and itself for _, superuser, *_, itself in roles):
        return ["is a superuser"]  # a member of every role, and all the rest: the rest says nothing more
    problems = []
    for name, superuser, createrole, replication, bypassrls, itself in roles:
        via = "" if itself else f" through role {name}, which it can become"
        if superuser:
            problems.append("is a superuser" if itself else f"can become the superuser {name}")
        held = (("CREATEROLE", createrole), ("REPLICATION", replication), ("BYPASSRLS", bypassrls))
        problems += [f"has {attribute}{via}" for attribute, has in held if has]
        if name in UNSAFE_ROLES:
            problems.append(f"is a member of {name}")
    problems += [f"can execute functions of {e} in database {database!r}, which reach other hosts" for e in extensions]
    return problems
