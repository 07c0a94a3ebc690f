"""`verify.queries`: SQL whose result is recorded when a backup is taken and must come out the same after a restore.

A recorded result is only worth comparing if it describes the very data the dump holds. PostgreSQL can promise
that: a session exports its snapshot (`pg_export_snapshot()`), each query runs in a transaction that imports it
(`SET TRANSACTION SNAPSHOT`), and pg_dump is started with `--snapshot` on it; the exporting session stays open until
the dump has ended. MySQL and MariaDB cannot: mysqldump's consistent snapshot is its own and cannot be shared, so a
result recorded beside it could differ from the dump whenever anything writes meanwhile. Queries are refused there
(`InvalidArguments`; the webhook refuses them at apply time).

The SQL is written by whoever may create a DatabaseBackup, who cannot read the database's Secrets: a query can only
read, and cannot run anything else.
- It runs as a role of its own, never as the backup's credential (often the superuser): `QUERY_USER` and
  `QUERY_PASSWORD` (from `spec.verify.queryCredentialsSecret`). Before any query runs (and before anything is
  dumped) that role is checked in each database the queries use (`role_problems`): it must not be a superuser or
  able to become one, nor have, itself or through a role it may become, CREATEROLE, REPLICATION or BYPASSRLS, nor
  be a member of the roles that reach the server's files and programs, other sessions or their statistics
  (`UNSAFE_ROLES`), nor be able to execute a function of `dblink` or `postgres_fdw` (which reach other hosts). A
  role that fails fails the run with `UnsafeQueryRole`.
- It is one statement, enforced by the server: the text goes through the extended query protocol (Parse, Bind,
  Execute), which refuses more than one statement (`cannot insert multiple commands into a prepared statement`).
  Nothing here reads the SQL. It goes through libpq (psycopg), not psql, so there are no meta-commands (`\\!`,
  `\\getenv`, `\\set x \\`cmd\\``) to run.
- It runs in a transaction of its own, `REPEATABLE READ, READ ONLY`, whose snapshot is taken before the query (in
  the dump's snapshot at backup time), so that `SET transaction_read_only = off` comes too late; with the settings
  that decide how values print fixed (UTC, ISO dates, shortest exact floats, hex bytea), a `statement_timeout` and a
  `lock_timeout`. The transaction is always rolled back, never committed, and `DISCARD ALL` follows, so that
  nothing a query did to its session (a setting, a lock, a prepared statement) outlives it.
- A failing query is reported by its name, SQLSTATE and condition name (`22012 division_by_zero`), never with the
  server's message, which can carry data (`invalid input syntax for type integer: "<value>"`).

On a restored copy the queries run again (`verify`'s restore test): in a scratch server beside the runner, as a
throwaway login role with a random password made there for the purpose (`scratch_role`: a member of
`pg_read_all_data` on PostgreSQL 14+, else granted USAGE and SELECT on every schema, table and sequence of the
restored database), never as the scratch server's superuser; in a scratch database on the database's own server,
as `QUERY_USER`, checked as at backup time.

What a query prints is what `psql -At` printed, which older runners recorded: each row's values in text format, `|`
between columns, NULL as nothing, each row ending in a newline. It is compared by sha256 and kept verbatim in the
manifest when it is short (the manifest lives in the storage, never in a status); a mismatch names the query and
both results' digests and line counts, never a value.

The sessions themselves (libpq through psycopg) are in `querysession`, imported only by runs that have queries;
the rules both follow (the transaction, the role check, the printed form) are in `queryrules`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Final

import structlog

from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.manifest import SHOWN_RESULT, QueryResult
from runner.naming import database_problem
from runner.process import Deadline
from runner.queryrules import UNSAFE_ROLES, Credential, Query, printed, role_problems

__all__ = [
    "QUERY_PASSWORD_VARIABLE",
    "QUERY_USER_VARIABLE",
    "UNSAFE_ROLES",
    "Credential",
    "Query",
    "Snapshots",
    "credential_from_env",
    "parse_queries",
    "printed",
    "record",
    "require_credential",
    "role_problems",
    "snapshots",
]

log = structlog.get_logger("dbb-backup")

QUERY_USER_VARIABLE: Final = "QUERY_USER"
QUERY_PASSWORD_VARIABLE: Final = "QUERY_PASSWORD"  # noqa: S105 - a variable's name


def credential_from_env(environ: Mapping[str, str]) -> Credential | None:
    user = environ.get(QUERY_USER_VARIABLE, "")
    return Credential(user, environ.get(QUERY_PASSWORD_VARIABLE, "")) if user else None


def require_credential(credential: Credential | None, what: str) -> Credential:
    if credential is None:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"{what} need a read-only role of their own: give {QUERY_USER_VARIABLE} and {QUERY_PASSWORD_VARIABLE}",
        )
    return credential


def parse_queries(text: str) -> list[Query]:
    """`--queries`: a JSON list of {name, database, sql} (the Job's argument, from spec.verify.queries)."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--queries is not JSON: {error}") from None
    if not isinstance(raw, list):
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--queries must be a JSON list of {name, database, sql}")
    queries = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k] for k in ("name", "sql")):
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"--queries[{index}] needs a name and an sql (strings)")
        database = item.get("database")
        if not isinstance(database, str) or not database:
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"--queries[{index}] ({item['name']}): database is missing")
        if problem := database_problem(database):
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"--queries[{index}] ({item['name']}): database {problem}")
        queries.append(Query(item["name"], database, item["sql"]))
    names = [q.name for q in queries]
    if len(set(names)) != len(names):
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--queries: names repeat: {names}")
    return queries


def record(query: Query, text: str) -> QueryResult:
    digest = hashlib.sha256(text.encode()).hexdigest()
    shown = text if len(text) <= SHOWN_RESULT else None
    return QueryResult(query.name, query.database, query.sql, digest, shown, text.count("\n"))


@dataclass
class Snapshots:
    """Per database with queries: the snapshot its pg_dump must use; and the results, recorded in it."""

    ids: dict[str, str] = field(default_factory=dict)
    results: list[QueryResult] = field(default_factory=list)


@contextmanager
def snapshots(
    engine: Engine,
    connection: Connection,
    credential: Credential | None,
    queries: Sequence[Query],
    databases: Sequence[str],
    scrub: Scrubber,
    deadline: Deadline,
) -> Iterator[Snapshots]:
    """For each database that has queries: a session of the queries' role that exports its snapshot and holds it
    open while the block runs (the dumps), and the queries' results in that snapshot, recorded before the block
    starts. The role is checked in every one of those databases before the first query runs."""
    found = Snapshots()
    if not queries:
        yield found
        return
    if engine is not Engine.POSTGRESQL:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            "--queries needs PostgreSQL: mysqldump's snapshot cannot be shared, so a result recorded beside it "
            "could differ from the dump",
        )
    unknown = sorted({q.database for q in queries} - set(databases))
    if unknown:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--queries name databases this run does not back up: {unknown}")
    role = require_credential(credential, "--queries").on(connection)
    from runner.querysession import Session  # psycopg: only for runs with queries

    with ExitStack() as stack:
        sessions: dict[str, Session] = {}
        for database in dict.fromkeys(q.database for q in queries):
            sessions[database] = stack.enter_context(Session(role, database, scrub, deadline))
            sessions[database].check_role()
        for database in sessions:
            exporter = stack.enter_context(Session(role, database, scrub, deadline))
            found.ids[database] = exporter.export_snapshot()
        for query in queries:
            text = sessions[query.database].query(query, snapshot=found.ids[query.database])
            found.results.append(record(query, text))
            log.info("query recorded", query=query.name, database=query.database, lines=text.count("\n"))
        yield found
