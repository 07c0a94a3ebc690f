"""The few statements the runner itself sends to a server: create, drop, look for and count in databases.

Names are quoted as identifiers (never interpolated raw); names compared as values go in as hex literals, so any
name, quotes and all, is safe (hence the `noqa: S608`: no text of a user's reaches the SQL unencoded).
"""

from __future__ import annotations

import structlog

from reconciler.runner import engines
from reconciler.runner.engines import Connection, Engine
from reconciler.runner.errors import RunnerError, Scrubber
from reconciler.runner.process import run_capture

__all__ = ["count_tables", "create_database", "database_exists", "drop_database", "pg_server_version"]

log = structlog.get_logger("dbb-backup")


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
    return run_capture(argv, env, scrub, failure="RestoreFailed")


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
