"""Point-in-time recovery for MariaDB, at the runner: binlog coordinates in the manifest, taken in the dump's own
snapshot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.harness.databases import MariaDBServer
from tests.backup.cli import backup, restore

BINLOG = {"log-bin": "mysql-bin", "server-id": "1", "binlog-format": "ROW"}


@pytest.fixture(scope="module")
def binlogged() -> Iterator[MariaDBServer]:
    """A MariaDB with binary logging on, as point-in-time recovery needs it, and a database `shop`."""
    with MariaDBServer.start(settings=BINLOG) as server:
        server.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id int PRIMARY KEY, at datetime(6))")
        yield server


def manifest_of(file: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(file.with_name(file.name + ".json").read_text())
    return loaded


def test_a_backup_records_the_binlog_position_of_its_snapshot(binlogged: MariaDBServer, backups: Path) -> None:
    binlogged.sql("INSERT INTO shop.orders VALUES (1, NOW(6)), (2, NOW(6))")
    file, position, *_ = binlogged.sql("SHOW MASTER STATUS").split("\t")
    gtid = binlogged.sql("SELECT @@gtid_binlog_pos")

    made = backup(binlogged, backups, "shop", verify=None)

    # Nothing was written while the dump ran: its snapshot is the server's newest state.
    assert manifest_of(made)["binlog"] == {"file": file, "position": int(position), "gtid": gtid}


def test_a_backup_of_a_server_without_binary_logging_has_no_binlog_key(mariadb: MariaDBServer, backups: Path) -> None:
    made = backup(mariadb, backups, "crm", verify=None)

    assert "binlog" not in manifest_of(made)


def test_a_backup_with_coordinates_restores_as_before(binlogged: MariaDBServer, backups: Path) -> None:
    binlogged.sql("INSERT INTO shop.orders VALUES (3, NOW(6))")
    made = backup(binlogged, backups, "shop", verify=None)

    outcome = restore(binlogged, made, "shop_copy")

    assert outcome.code == 0, outcome.stderr
    assert binlogged.sql("SELECT COUNT(*) FROM shop_copy.orders") == binlogged.sql("SELECT COUNT(*) FROM shop.orders")
    binlogged.drop_database("shop_copy")
