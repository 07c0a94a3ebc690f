"""The few statements the runner itself sends to a server: create, drop, look for and count in databases.

Names are quoted as identifiers (never interpolated raw); names compared as values go in as hex literals, so any
name, quotes and all, is safe (hence the `noqa: S608`: no text of a user's reaches the SQL unencoded).
"""

from __future__ import annotations

import secrets
import time
from typing import Final

import structlog

from runner import engines
from runner.engines import Connection, Engine, TlsMode
from runner.errors import Reason, RunnerError, Scrubber
from runner.process import run_capture

__all__ = [
    "await_server",
    "count_tables",
    "create_database",
    "database_exists",
    "database_is_empty",
    "drop_database",
    "ensure_encrypted",
    "pg_replace_database",
    "pg_server_version",
]

log = structlog.get_logger("dbb-backup")

SWAP_ATTEMPTS: Final = 20  # terminated sessions take a moment to go; a rename waits for them, 0.25 s a round


def pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def my_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def query(engine: Engine, connection: Connection, sql: str, scrub: Scrubber, database: str | None = None) -> str:
    env = engines.child_env(engine, connection)
    if engine is Engine.POSTGRESQL:
        argv = [*engines.psql_argv(connection, database or "postgres"), "-c", sql]
    else:
        argv = [*engines.mysql_client_argv(connection, database), "-e", sql]
    return run_capture(argv, env, scrub, failure=Reason.RESTORE_FAILED)


def await_server(engine: Engine, connection: Connection, scrub: Scrubber, seconds: float) -> None:
    """Until the server answers a query: a scratch server beside us is still initialising when we start (the
    official images' entrypoints run it on the Unix socket only until then, so TCP is refused)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            query(engine, connection, "SELECT 1", scrub)
            return
        except RunnerError as error:
            if time.monotonic() > deadline:
                raise RunnerError(
                    Reason.UNREACHABLE,
                    f"the scratch server at {connection.host}:{connection.port} did not answer within "
                    f"{seconds:g}s: {error.message}",
                ) from None
        time.sleep(0.5)


def ensure_encrypted(engine: Engine, connection: Connection, scrub: Scrubber) -> None:
    """For `--tls-mode require` on MySQL: the 10.x clients fall back to a plain session when the server offers no
    TLS, even with `--ssl`. Asked over the same flags the tools use, before any of them runs (see engines)."""
    if engine is not Engine.MYSQL or connection.tls.mode is not TlsMode.REQUIRE:
        return
    argv = [*engines.mysql_client_argv(connection), "-e", engines.MYSQL_TLS_QUERY]
    if not engines.mysql_session_encrypted(run_capture(argv, engines.child_env(engine, connection), scrub)):
        raise RunnerError(
            Reason.TLS_FAILED, f"tls mode require: the server at {connection.host}:{connection.port} offers no TLS"
        )


def create_database(engine: Engine, connection: Connection, name: str, scrub: Scrubber) -> None:
    if engine is Engine.POSTGRESQL:
        query(engine, connection, f"CREATE DATABASE {pg_ident(name)}", scrub)
    else:
        query(engine, connection, f"CREATE DATABASE IF NOT EXISTS {my_ident(name)}", scrub)


def drop_database(engine: Engine, connection: Connection, name: str, scrub: Scrubber) -> None:
    """Best effort: a scratch database that cannot be dropped is logged, and must not hide the run's own outcome."""
    try:
        if engine is Engine.POSTGRESQL:
            query(engine, connection, f"DROP DATABASE IF EXISTS {pg_ident(name)} WITH (FORCE)", scrub)
        else:
            query(engine, connection, f"DROP DATABASE IF EXISTS {my_ident(name)}", scrub)
    except RunnerError as error:
        log.warning("could not drop the scratch database", database=name, error=error.message)


def database_exists(engine: Engine, connection: Connection, name: str, scrub: Scrubber) -> bool:
    hexed = name.encode("utf-8", errors="surrogateescape").hex()
    if engine is Engine.POSTGRESQL:
        sql = f"SELECT 1 FROM pg_database WHERE datname = convert_from(decode('{hexed}', 'hex'), 'UTF8')"  # noqa: S608
    else:
        sql = f"SELECT 1 FROM information_schema.schemata WHERE schema_name = X'{hexed}'"  # noqa: S608
    return query(engine, connection, sql, scrub).strip() == "1"


def database_is_empty(engine: Engine, connection: Connection, name: str, scrub: Scrubber) -> bool:
    """No relation, schema or function of its own (PostgreSQL), no table, view or routine (MySQL)."""
    if engine is Engine.POSTGRESQL:
        sql = """
            SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%')
                 + (SELECT count(*) FROM pg_namespace
                    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg\\_%')
                 + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%')
        """
        return int(query(engine, connection, sql, scrub, name).strip()) == 0
    hexed = name.encode("utf-8", errors="surrogateescape").hex()
    sql = (
        f"SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = X'{hexed}') "  # noqa: S608
        f"+ (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = X'{hexed}')"
    )
    return int(query(engine, connection, sql, scrub).strip()) == 0


def pg_server_version(connection: Connection, scrub: Scrubber) -> int:
    """The PostgreSQL server's `server_version_num` (150018 for 15.18): which session settings it knows."""
    return int(query(Engine.POSTGRESQL, connection, "SHOW server_version_num", scrub).strip())


def count_tables(engine: Engine, connection: Connection, database: str, scrub: Scrubber) -> int:
    """Base tables (PostgreSQL: ordinary and partitioned) outside the system schemas."""
    if engine is Engine.POSTGRESQL:
        sql = (
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%'"
        )
        return int(query(engine, connection, sql, scrub, database).strip())
    hexed = database.encode("utf-8", errors="surrogateescape").hex()
    tables = "SELECT COUNT(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
    sql = f"{tables} AND table_schema = X'{hexed}'"
    return int(query(engine, connection, sql, scrub).strip())


def count_rows(engine: Engine, connection: Connection, database: str, scrub: Scrubber) -> dict[str, int]:
    """Each base table's rows, named as the dumps name them (`RowCounter`): PostgreSQL `schema.table` quoted as
    pg_dump quotes identifiers, each table's own rows (`ONLY`: an inheritance parent's dump holds only its own);
    MySQL the table's name. Two queries: the statement is built by the server, which quotes every name."""
    if engine is Engine.POSTGRESQL:
        build = (
            "SELECT string_agg(format('SELECT %L, count(*) FROM ONLY %I.%I', format('%I.%I', n.nspname, c.relname), "
            "n.nspname, c.relname), ' UNION ALL ') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%'"
        )
        separator = "|"
    else:
        hexed = database.encode("utf-8", errors="surrogateescape").hex()
        select = (
            "SELECT GROUP_CONCAT(CONCAT('SELECT ', QUOTE(table_name), ', COUNT(*) FROM `', REPLACE(table_schema, "
            "'`', '``'), '`.`', REPLACE(table_name, '`', '``'), '`') SEPARATOR ' UNION ALL ') "
        )
        # The name goes in hex-encoded, as in count_tables.
        tables = f"FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema = X'{hexed}'"
        build = select + tables
        separator = "\t"
    statement = query(engine, connection, build, scrub, database).strip()
    if not statement or statement == "NULL":
        return {}
    counts: dict[str, int] = {}
    for line in query(engine, connection, statement, scrub, database).splitlines():
        name, _, count = line.rpartition(separator)
        if name:
            counts[name] = int(count)
    return counts


def pg_replace_database(connection: Connection, restored: str, target: str, scrub: Scrubber) -> None:
    """`restored` takes `target`'s name; the old `target` is dropped. The swap itself is one transaction (two
    renames), so at every moment `target` is either the old database or the whole restored one.

    A database that has sessions cannot be renamed: `target` first stops taking connections and its sessions are
    ended (a replace is a recovery: the applications must reconnect to the restored data anyway). If the swap
    cannot be made, `target` takes connections again, unchanged, and the caller drops `restored`."""
    old = f"{target[:40]}_dbb_old_{secrets.token_hex(4)}"
    quoted, hexed = pg_ident(target), target.encode("utf-8", errors="surrogateescape").hex()
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608 - the name goes in hex-encoded
        f"WHERE datname = convert_from(decode('{hexed}', 'hex'), 'UTF8') AND pid <> pg_backend_pid()"
    )
    renames = (
        f"ALTER DATABASE {quoted} RENAME TO {pg_ident(old)}; ALTER DATABASE {pg_ident(restored)} RENAME TO {quoted}"
    )
    swap = f"BEGIN; {renames}; COMMIT"
    query(Engine.POSTGRESQL, connection, f"ALTER DATABASE {quoted} WITH ALLOW_CONNECTIONS false", scrub)
    try:
        for attempt in range(SWAP_ATTEMPTS):
            query(Engine.POSTGRESQL, connection, terminate, scrub)
            try:
                query(Engine.POSTGRESQL, connection, swap, scrub)
                break
            except RunnerError as error:
                if "is being accessed by other users" not in error.message or attempt == SWAP_ATTEMPTS - 1:
                    raise
                time.sleep(0.25)
    except RunnerError:
        query(Engine.POSTGRESQL, connection, f"ALTER DATABASE {quoted} WITH ALLOW_CONNECTIONS true", scrub)
        raise
    log.info("replaced the database with the restored copy", database=target)
    drop_database(Engine.POSTGRESQL, connection, old, scrub)
