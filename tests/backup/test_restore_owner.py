"""`restore --owner NAMESPACE/NAME`: a DatabaseRestore restores only its source DatabaseBackup's backups. A file
whose manifest names another owner, or none, is refused before anything is read further or touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from hack.harness.content import pg_fingerprint
from hack.harness.databases import PostgresServer
from tests.backup.cli import backup, connection_args, dbb, password_env


def restore_as(pg: PostgresServer, file: Path, owner: str, target: str) -> dict[str, object]:
    args = ["restore", str(file), *connection_args(pg), f"--database={target}", f"--owner={owner}"]
    outcome = dbb(*args, env=password_env(pg))
    return {"code": outcome.code, **outcome.result}


@pytest.fixture
def owned(pg: PostgresServer, backups: Path) -> Path:
    return backup(pg, backups, "shop", owner="team-a/nightly", owner_uid="uid-a", verify=None)


def test_the_sources_own_backup_is_restored(pg: PostgresServer, owned: Path) -> None:
    try:
        assert restore_as(pg, owned, "team-a/nightly", "owned_copy")["code"] == 0
        assert pg_fingerprint(pg, "owned_copy") == pg_fingerprint(pg, "shop")
    finally:
        pg.drop_database("owned_copy")


@pytest.mark.parametrize("owner", ["team-b/nightly", "team-a/weekly"])
def test_another_owners_backup_is_refused_naming_both_owners(pg: PostgresServer, owned: Path, owner: str) -> None:
    before = pg.databases()
    refused = restore_as(pg, owned, owner, "foreign_copy")
    assert (refused["code"], refused["reason"]) == (1, "ForeignBackup")
    assert refused["message"] == f"{owned.name} is a backup of team-a/nightly, not of {owner}: not restored"
    assert pg.databases() == before


def test_a_backup_that_names_no_owner_is_refused(pg: PostgresServer, backups: Path) -> None:
    file = backup(pg, backups, "shop")
    before = pg.databases()
    refused = restore_as(pg, file, "team-a/nightly", "ownerless_copy")
    assert (refused["code"], refused["reason"]) == (1, "ForeignBackup")
    assert "names no owner" in str(refused["message"])
    # Nor does taking the manifest away help.
    file.with_name(file.name + ".json").unlink()
    args = ["restore", str(file), *connection_args(pg), "--database=ownerless_copy", "--owner=team-a/nightly"]
    without = dbb(*args, "--without-manifest", env=password_env(pg))
    assert (without.code, without.result["reason"]) == (1, "ForeignBackup")
    assert pg.databases() == before
