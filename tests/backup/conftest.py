"""Real PostgreSQL 15 and MariaDB servers (one of each per session, plus an empty PostgreSQL for `all` restores),
sample databases with content worth checking, and the `dbb-backup` command run as the Job runs it.

The servers come from Debian's packages (`hack/databases.sh` installs them); see `servers.py`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.harness import content
from hack.harness.databases import PG_BIN, MariaDBServer, PostgresServer

KEY = "q83vEi3SbnGU+0v9GXLhpIUzUoAr6MdUSn8Fo0G/wGs="  # key_file's: base64 of 32 bytes, as a Secret holds it


def _require(*tools: str) -> None:
    missing = [t for t in tools if not (shutil.which(t) or Path(t).exists())]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `bash hack/databases.sh` (installs PostgreSQL and MariaDB)")


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    _require(str(PG_BIN / "postgres"), "pg_dump", "pg_restore", "psql")
    with PostgresServer.start() as server:
        content.fill_postgres(server)
        yield server


@pytest.fixture(scope="session")
def pg_empty() -> Iterator[PostgresServer]:
    """A second, empty server: where a backup of `all` is restored, as after losing the first one. Its superuser has
    a password of its own, as a rebuilt server's would: the restore must not replace it with the backed-up one."""
    with PostgresServer.start(password="a-new-servers-own-password") as server:
        yield server


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    _require("mariadbd", "mariadb-install-db", "mariadb", "mariadb-dump")
    with MariaDBServer.start() as server:
        content.fill_mariadb(server)
        yield server


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    folder = tmp_path / "backups"
    folder.mkdir()
    return folder


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "backup.key"
    path.write_text(KEY + "\n")
    return path


@pytest.fixture
def other_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "other.key"
    path.write_bytes(bytes(range(32)))
    return path


READER, READER_PASSWORD = "ledger_reader", "reader-Pässword-7"


@pytest.fixture(scope="session")
def reader(pg: PostgresServer) -> Iterator[dict[str, str]]:
    """verify.queries' own role, which can only read (pg_read_all_data): its login as the Job passes it."""
    pg.sql(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'; GRANT pg_read_all_data TO {READER}")
    try:
        yield {"QUERY_USER": READER, "QUERY_PASSWORD": READER_PASSWORD}
    finally:
        pg.sql(f"DROP ROLE {READER}")


@pytest.fixture
def ledger(pg: PostgresServer) -> Iterator[str]:
    """A database of the test's own for queries (the session's sample databases stay as other tests count them)."""
    pg.sql("CREATE DATABASE ledger")
    pg.sql(
        "CREATE TABLE entries (id int PRIMARY KEY, amount numeric(12,2), at timestamptz);"
        "INSERT INTO entries SELECT i, i * 1.25, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 hour'"
        "  FROM generate_series(1, 500) i;"
        "CREATE TABLE gate (id int);",
        "ledger",
    )
    try:
        yield "ledger"
    finally:
        pg.drop_database("ledger")
