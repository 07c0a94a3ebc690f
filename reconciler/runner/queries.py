"""`verify.queries`: SQL whose result is recorded when a backup is taken and must come out the same after a restore.

A recorded result is only worth comparing if it describes the very data the dump holds. PostgreSQL can promise
that: a session exports its snapshot (`pg_export_snapshot()`), each query runs in a transaction that imports it
(`SET TRANSACTION SNAPSHOT`), and pg_dump is started with `--snapshot` on it; the exporting session stays open until
the dump has ended. MySQL and MariaDB cannot: mysqldump's consistent snapshot is its own and cannot be shared, so a
result recorded beside it could differ from the dump whenever anything writes meanwhile. Queries are refused there
(`InvalidArguments`; the webhook refuses them at apply time).

Every query runs read-only (`READ ONLY` transaction), with the session settings that decide how values print fixed
(UTC, ISO dates, shortest exact floats), through psql in unaligned, tuples-only form; its printed result is what is
compared, by sha256, and kept verbatim in the manifest when it is short (so that a mismatch can show both).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Final

import structlog

from reconciler.runner import engines
from reconciler.runner.engines import Connection, Engine
from reconciler.runner.errors import RunnerError, Scrubber, one_line
from reconciler.runner.manifest import SHOWN_RESULT, QueryResult
from reconciler.runner.naming import database_problem
from reconciler.runner.process import run_capture

__all__ = ["Query", "Snapshots", "parse_queries", "record", "run_query", "snapshots"]

log = structlog.get_logger("dbb-backup")

QUERY_TIMEOUT: Final = 600.0
_SETTINGS: Final = (
    "SET LOCAL TimeZone = 'UTC';\n"
    "SET LOCAL DateStyle = 'ISO, YMD';\n"
    "SET LOCAL IntervalStyle = 'postgres';\n"
    "SET LOCAL extra_float_digits = 1;\n"
    "SET LOCAL bytea_output = 'hex';\n"
)


@dataclass(frozen=True)
class Query:
    name: str
    database: str
    sql: str


def parse_queries(text: str) -> list[Query]:
    """`--queries`: a JSON list of {name, database, sql} (the Job's argument, from spec.verify.queries)."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise RunnerError("InvalidArguments", f"--queries is not JSON: {error}") from None
    if not isinstance(raw, list):
        raise RunnerError("InvalidArguments", "--queries must be a JSON list of {name, database, sql}")
    queries = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k] for k in ("name", "sql")):
            raise RunnerError("InvalidArguments", f"--queries[{index}] needs a name and an sql (strings)")
        database = item.get("database")
        if not isinstance(database, str) or not database:
            raise RunnerError("InvalidArguments", f"--queries[{index}] ({item['name']}): database is missing")
        if problem := database_problem(database):
            raise RunnerError("InvalidArguments", f"--queries[{index}] ({item['name']}): database {problem}")
        queries.append(Query(item["name"], database, item["sql"]))
    names = [q.name for q in queries]
    if len(set(names)) != len(names):
        raise RunnerError("InvalidArguments", f"--queries: names repeat: {names}")
    return queries


def record(query: Query, printed: str) -> QueryResult:
    digest = hashlib.sha256(printed.encode()).hexdigest()
    shown = printed if len(printed) <= SHOWN_RESULT else None
    return QueryResult(query.name, query.database, query.sql, digest, shown)


def run_query(connection: Connection, database: str, sql: str, scrub: Scrubber, *, snapshot: str | None = None) -> str:
    """What `sql` prints in `database`, read-only, with the fixed settings; in `snapshot` when given."""
    imported = f"SET TRANSACTION SNAPSHOT '{snapshot}';\n" if snapshot is not None else ""
    body = sql.rstrip().rstrip(";")
    script = f"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n{imported}{_SETTINGS}{body}\n;\nCOMMIT;\n"
    return run_capture(
        engines.psql_argv(connection, database),
        engines.child_env(Engine.POSTGRESQL, connection),
        scrub,
        stdin=script.encode(),
        timeout=QUERY_TIMEOUT,
        failure="QueryFailed",
    )


@dataclass
class Snapshots:
    """Per database with queries: the snapshot its pg_dump must use; and the results, recorded in it."""

    ids: dict[str, str] = field(default_factory=dict)
    results: list[QueryResult] = field(default_factory=list)


@contextmanager
def snapshots(
    engine: Engine, connection: Connection, queries: Sequence[Query], databases: Sequence[str], scrub: Scrubber
) -> Iterator[Snapshots]:
    """For each database that has queries: a session that exports its snapshot and holds it open while the block
    runs (the dumps), and the queries' results in that snapshot, recorded before the block starts."""
    found = Snapshots()
    if not queries:
        yield found
        return
    if engine is not Engine.POSTGRESQL:
        raise RunnerError(
            "InvalidArguments",
            "--queries needs PostgreSQL: mysqldump's snapshot cannot be shared, so a result recorded beside it "
            "could differ from the dump",
        )
    unknown = sorted({q.database for q in queries} - set(databases))
    if unknown:
        raise RunnerError("InvalidArguments", f"--queries name databases this run does not back up: {unknown}")
    with ExitStack() as stack:
        for database in dict.fromkeys(q.database for q in queries):
            found.ids[database] = stack.enter_context(_exported(connection, database, scrub))
        for query in queries:
            printed = run_query(connection, query.database, query.sql, scrub, snapshot=found.ids[query.database])
            found.results.append(record(query, printed))
            log.info("query recorded", query=query.name, database=query.database, lines=printed.count("\n"))
        yield found


@contextmanager
def _exported(connection: Connection, database: str, scrub: Scrubber) -> Iterator[str]:
    """A psql session in a repeatable-read transaction whose snapshot it exported; its id, while it stays open."""
    session = subprocess.Popen(
        engines.psql_argv(connection, database),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=engines.child_env(Engine.POSTGRESQL, connection),
    )
    assert session.stdin is not None
    assert session.stdout is not None
    assert session.stderr is not None
    try:
        session.stdin.write(b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();\n")
        session.stdin.flush()
        snapshot = session.stdout.readline().decode().strip()  # psql flushes after each result
        if not snapshot:
            session.stdin.close()
            session.wait(timeout=30)
            stderr = one_line(scrub(session.stderr.read().decode("utf-8", errors="replace")))
            raise RunnerError("QueryFailed", f"exporting a snapshot of {database!r} failed: {stderr or 'no answer'}")
        yield snapshot
    finally:
        if not session.stdin.closed:
            try:
                session.stdin.write(b"COMMIT;\n")
                session.stdin.close()
            except BrokenPipeError:
                pass
        try:
            session.wait(timeout=30)
        except subprocess.TimeoutExpired:
            session.kill()
            session.wait()
