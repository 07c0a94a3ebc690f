"""Real PostgreSQL 15 and MariaDB servers (one of each per session, plus an empty PostgreSQL for `all` restores),
sample databases with content worth checking, and the `dbb-backup` command run as the Job runs it.

The servers come from Debian's packages (`hack/databases.sh` installs them); see `servers.py`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup import content
from tests.backup.servers import PG_BIN, MariaDBServer, PostgresServer

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
