"""The libpq sessions `verify.queries` run in (see `queries` for what a query may do and why).

psycopg's pure-Python implementation, over the system libpq: the one the PostgreSQL tools load and
`engines.check_client_support` checked, so the TLS demands (`sslmode`, `sslrootcert`, `require_auth`) mean the same
for the queries as for pg_dump. This module is imported only by runs that have queries (psycopg takes half a
second to import); PSYCOPG_IMPL is set before psycopg is imported, so that psycopg-binary, when installed beside it
(a test dependency), is not used instead.

Results are awaited here, not inside libpq: `select` on the session's socket, a second at a time, so that SIGTERM
stops the run at once and `--timeout` stops it even when the server does not answer (the deadline also cancels the
statement that runs, as it kills a tool).
"""

from __future__ import annotations

import os

os.environ.setdefault("PSYCOPG_IMPL", "python")

import contextlib
import re
import secrets
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, Self

import psycopg
import structlog
from psycopg import pq
from psycopg.conninfo import make_conninfo

from runner.engines import CONNECT_TIMEOUT_SECONDS, Connection, classify_failure, pg_tls_params
from runner.errors import Reason, RunnerError, Scrubber, one_line
from runner.process import Deadline
from runner.queryrules import (
    BEGIN,
    END,
    FIX_SETTINGS,
    ROLE_CHECK,
    Credential,
    Query,
    printed,
    role_problems,
)

__all__ = ["Session", "condition", "scratch_role"]

log = structlog.get_logger("dbb-backup")

READ_ALL_DATA_SINCE: Final = 140000  # pg_read_all_data: PostgreSQL 14
WAKE_SECONDS: Final = 1.0  # how often a wait for the server looks at the deadline
_SNAPSHOT_ID: Final = re.compile(r"[0-9A-F]+-[0-9A-F]+(?:-[0-9]+)?")
_DONE: Final = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY)
_COPY: Final = (pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_BOTH)

Rows = list[list[bytes | None]]


class Session:
    """One libpq session to `database`, as `connection`'s user. Use as a context manager; any failure in it closes
    it (a failing query fails the run)."""

    def __init__(self, connection: Connection, database: str, scrub: Scrubber, deadline: Deadline) -> None:
        self.connection = connection
        self.database = database
        self._scrub = scrub
        self._deadline = deadline
        self._pgconn: pq.abc.PGconn | None = None
        self._lock = threading.Lock()  # the deadline's thread cancels while this one may be closing

    def __enter__(self) -> Self:
        pgconn = pq.PGconn.connect(conninfo(self.connection, self.database).encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = one_line(self._scrub(pgconn.get_error_message()))
            pgconn.finish()
            reason = classify_failure(message)
            raise RunnerError(
                Reason.QUERY_FAILED if reason == Reason.DUMP_FAILED else reason,
                f"the queries' role cannot connect to {self.database!r}: {message}",
            )
        self._pgconn = pgconn
        self._deadline.register(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._deadline.unregister(self)
        with self._lock:
            if self._pgconn is not None:
                if self._pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                    _cancel(self._pgconn)  # left while a statement runs (SIGTERM, a failure): the server stops it
                self._pgconn.finish()
                self._pgconn = None

    def kill(self) -> None:
        """Cancels the statement that runs, if any: from the deadline's thread too (PQcancel is safe there)."""
        with self._lock:
            if self._pgconn is not None:
                _cancel(self._pgconn)

    def execute(self, sql: str, what: str) -> list[Rows]:
        """Our own statements (the simple protocol: several at once): each one's rows."""
        self._live().send_query(sql.encode())
        return [_rows(r) for r in self._results(what)]

    def check_role(self) -> None:
        """UnsafeQueryRole unless this session's role can only read (`queries.role_problems`)."""
        roles, extensions = self.execute(ROLE_CHECK, "checking the queries' role")
        members = [((r[0] or b"").decode(), *(v == b"t" for v in r[1:])) for r in roles]
        remote = [(e[0] or b"").decode() for e in extensions]
        if found := role_problems(members, remote, self.database):
            raise RunnerError(
                Reason.UNSAFE_QUERY_ROLE,
                f"the queries' role ({self.connection.user}) must only read, and it " + "; it ".join(found),
            )

    def export_snapshot(self) -> str:
        """Opens the transaction whose snapshot the dump and the queries share, and keeps it open (it ends with the
        session): the id pg_dump and each query import."""
        rows = self.execute(f"{BEGIN}; SELECT pg_catalog.pg_export_snapshot()", "exporting a snapshot")[-1]
        snapshot = (rows[0][0] or b"").decode() if rows else ""
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise RunnerError(Reason.QUERY_FAILED, f"exporting a snapshot of {self.database!r} gave no snapshot id")
        return snapshot

    def query(self, query: Query, *, snapshot: str | None = None) -> str:
        """What `query` prints, in a read-only transaction of its own that is rolled back (in `snapshot` when given);
        then nothing it did to the session remains."""
        if snapshot is not None and not _SNAPSHOT_ID.fullmatch(snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        imported = f"; SET TRANSACTION SNAPSHOT '{snapshot}'" if snapshot is not None else ""
        try:
            self.execute(f"{BEGIN}{imported}; {FIX_SETTINGS}", f"query {query.name!r}: its transaction")
            # The extended protocol: the server takes exactly one statement, or refuses the text.
            self._live().send_query_params(query.sql.encode(), None)
            [result] = self._results(f"query {query.name!r}")
            text = printed(_rows(result))
            self.execute(END, "ending a query's transaction")
            # Not in one string with the ROLLBACK: DISCARD ALL refuses to run inside a transaction block, which a
            # string of several statements is.
            self.execute("DISCARD ALL", "resetting the session")
        except BaseException:
            self.close()
            raise
        return text

    def _live(self) -> pq.abc.PGconn:
        assert self._pgconn is not None, "use Session as a context manager"
        return self._pgconn

    def _results(self, what: str) -> list[pq.abc.PGresult]:
        """The results of what was sent, each checked; RunnerError, naming `what` and a SQLSTATE, for the first that
        failed. A server's message is never part of it: a query's can carry data."""
        pgconn = self._live()
        results: list[pq.abc.PGresult] = []
        try:
            while True:
                while pgconn.is_busy():
                    select.select([pgconn.socket], [], [], WAKE_SECONDS)
                    self._deadline.check()
                    pgconn.consume_input()
                result = pgconn.get_result()
                if result is None:
                    break
                results.append(result)
        except psycopg.OperationalError:
            self._deadline.check()
            raise RunnerError(Reason.QUERY_FAILED, f"{what}: the session to {self.database!r} was lost") from None
        for result in results:
            if result.status in _DONE:
                continue
            self._deadline.check()  # a statement the deadline cancelled: Timeout, not its 57014
            if result.status in _COPY:
                raise RunnerError(Reason.QUERY_FAILED, f"{what} failed: a COPY is not a query whose result is kept")
            raise RunnerError(Reason.QUERY_FAILED, f"{what} failed: {condition(result)}")
        return results


def _cancel(pgconn: pq.abc.PGconn) -> None:
    """Best effort: a server that cannot be reached to cancel ends the statement by its own timeout."""
    with contextlib.suppress(psycopg.OperationalError):
        pgconn.get_cancel().cancel()


def condition(result: pq.abc.PGresult) -> str:
    """`22012 division_by_zero`: the SQLSTATE and its condition name, never the message. The names come from
    psycopg's table of PostgreSQL's error codes, whose classes are named after the conditions in CamelCase (two
    conditions that PostgreSQL names twice carry a suffix there, `Ext` or `_`)."""
    state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode("ascii", "replace")
    if not state:
        return "no SQLSTATE (the connection failed)"
    try:
        name = psycopg.errors.lookup(state).__name__.rstrip("_").removesuffix("Ext")
    except KeyError:
        return state
    return f"{state} {re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()}"


def _rows(result: pq.abc.PGresult) -> Rows:
    return [[result.get_value(r, c) for c in range(result.nfields)] for r in range(result.ntuples)]


def conninfo(connection: Connection, database: str) -> str:
    """libpq's parameters, each quoted as libpq wants: the TLS demands the tools get in their environment
    (`engines.child_env`), and no password file."""
    params: dict[str, Any] = {
        "host": connection.host,
        "port": connection.port,
        "user": connection.user,
        "password": connection.password,
        "dbname": database,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "passfile": os.devnull,
        "client_encoding": "UTF8",
        "application_name": "dbb-backup queries",
        **pg_tls_params(connection.tls),
    }
    return make_conninfo("", **params)


@contextmanager
def scratch_role(
    superuser: Connection, database: str, server_version: int, scrub: Scrubber, deadline: Deadline
) -> Iterator[Credential]:
    """On a scratch server: a throwaway login role, with a random password used only here, that can read every
    table of `database` and nothing more; dropped afterwards, with its grants."""
    name, password = f"dbb_query_{secrets.token_hex(6)}", secrets.token_hex(24)
    if server_version >= READ_ALL_DATA_SINCE:
        grants = f"GRANT pg_read_all_data TO {name}"
    else:
        each = ("USAGE ON SCHEMA %I", "SELECT ON ALL TABLES IN SCHEMA %I", "SELECT ON ALL SEQUENCES IN SCHEMA %I")
        body = "".join(f" EXECUTE format('GRANT {g} TO {name}', s);" for g in each)  # %I quotes each schema
        schemas = "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname <> 'information_schema' AND nspname"
        grants = f"DO $$DECLARE s name; BEGIN FOR s IN {schemas} NOT LIKE 'pg\\_%' LOOP{body} END LOOP; END$$"
    with Session(superuser, database, scrub, deadline) as session:
        session.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'; {grants}", "making the queries' role")
    try:
        yield Credential(name, password)
    finally:
        try:
            with Session(superuser, database, scrub, deadline) as session:
                session.execute(f"DROP OWNED BY {name}; DROP ROLE {name}", "dropping the queries' role")
        except RunnerError as error:  # a scratch server's leftover, which goes with the server
            log.warning("could not drop the queries' scratch role", role=name, error=error.message)
