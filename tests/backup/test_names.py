"""Database names never read as options: a restore target (or a backed-up database) whose name looks like a client
option reaches every tool as a name, for both engines, and names no server takes are refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hack.harness.databases import MariaDBServer, PostgresServer
from tests.backup.cli import Server, backup, connection_args, dbb, password_env, restore, run_args

# Each would run `CREATE DATABASE pwned` if a client took it for an option: as SOURCE=TARGET, and as a plain TARGET
# (which holds no `=`, or it would read as a pair).
OPTION_LIKE = {
    ("mariadb", "SOURCE=TARGET"): "--init-command=CREATE DATABASE pwned",
    ("mariadb", "TARGET"): "-eCREATE DATABASE pwned",
    ("postgresql", "SOURCE=TARGET"): "--command=CREATE DATABASE pwned",
    ("postgresql", "TARGET"): "-cCREATE DATABASE pwned",
}


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Server:
    found: Server = request.getfixturevalue("pg" if request.param == "postgresql" else "mariadb")
    return found


@pytest.mark.parametrize("form", ["SOURCE=TARGET", "TARGET"])
def test_a_restore_target_that_looks_like_an_option_runs_no_sql(server: Server, backups: Path, form: str) -> None:
    target = OPTION_LIKE["postgresql" if isinstance(server, PostgresServer) else "mariadb", form]
    file = backup(server, backups, "shop")
    given = f"shop={target}" if form == "SOURCE=TARGET" else target
    try:
        # As the reconciler passes it. It may restore into a database of that very name; it must not run it.
        dbb("restore", str(file), *connection_args(server), f"--database={given}", env=password_env(server))
        assert "pwned" not in server.databases()
    finally:
        server.drop_database(target)
        server.drop_database("pwned")


def test_a_source_name_that_looks_like_an_option_is_a_name_too(mariadb: MariaDBServer, backups: Path) -> None:
    outcome = dbb(*run_args(mariadb, backups, "--init-command=CREATE DATABASE pwned"), env=password_env(mariadb))
    assert outcome.code == 1
    assert outcome.result["reason"] == "DatabaseNotFound"
    assert "pwned" not in mariadb.databases()


@pytest.mark.parametrize("name", ["a" * 65, "é" * 33])
def test_a_name_longer_than_64_bytes_is_refused_before_anything_runs(
    pg: PostgresServer, backups: Path, name: str
) -> None:
    ran = dbb(*run_args(pg, backups, name), env=password_env(pg))
    assert (ran.code, ran.result["reason"]) == (1, "InvalidArguments")
    assert "longer than 64 bytes" in ran.result["message"]
    file = backups / "shop-20200101T000000Z.dump"
    restored = restore(pg, file, f"shop={name}")
    assert (restored.code, restored.result["reason"]) == (1, "InvalidArguments")
    assert list(backups.iterdir()) == []
