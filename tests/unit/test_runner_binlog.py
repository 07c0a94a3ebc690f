"""Binlog coordinates read off a dump stream, and carried by the manifest."""

from __future__ import annotations

import json

import pytest

from runner.binlog import WINDOW, Coordinates, CoordinateSniffer, snapshot_coordinates
from runner.manifest import Manifest

HEAD = b"-- MariaDB dump 10.19\n--\n\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1234;\n\n"
TAIL = b"\n-- SET GLOBAL gtid_slave_pos='0-1-42';\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n-- Dump completed\n"


class Collected:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def close(self) -> None:
        self.closed = True


def sniffed(dump: bytes, piece: int) -> tuple[Coordinates | None, Collected]:
    sink = Collected()
    sniffer = CoordinateSniffer(sink)
    for start in range(0, len(dump), piece):
        sniffer.write(dump[start : start + piece])
    sniffer.close()
    return sniffer.coordinates(), sink


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_the_sniffer_reads_position_and_gtid_in_any_pieces_and_passes_the_dump_on(piece: int) -> None:
    # A routine body in the middle that mimics the GTID comment: the dump's own, last, one counts.
    body = b"INSERT INTO t VALUES (1);\n" * 10000 + b"-- SET GLOBAL gtid_slave_pos='9-9-9';\n" + b"x" * (3 * WINDOW)
    dump = HEAD + body + TAIL

    coordinates, sink = sniffed(dump, piece)

    assert coordinates == Coordinates("mysql-bin.000003", 1234, "0-1-42")
    assert bytes(sink.data) == dump
    assert sink.closed


def test_a_dump_without_a_gtid_comment_has_coordinates_without_gtid() -> None:
    assert sniffed(HEAD + b"-- Dump completed\n", 100)[0] == Coordinates("mysql-bin.000003", 1234, None)


def test_a_dump_without_a_position_comment_has_no_coordinates() -> None:
    assert sniffed(b"-- MariaDB dump\n" + TAIL, 100)[0] is None


def test_a_position_comment_after_the_head_is_table_data_not_coordinates() -> None:
    assert sniffed(b"x" * WINDOW + HEAD + TAIL, 4096)[0] is None


@pytest.mark.parametrize(
    ("version", "log_bin", "expected"),
    [
        ("10.11.19-MariaDB-0+deb12u1-log", "1", True),
        ("10.11.19-MariaDB-0+deb12u1", "0", False),
        ("8.0.40", "1", False),  # MySQL: the position only under FLUSH TABLES WITH READ LOCK
    ],
)
def test_coordinates_are_recorded_for_mariadb_with_binary_logging(version: str, log_bin: str, expected: bool) -> None:
    assert snapshot_coordinates(version, log_bin) is expected


MANIFEST = {
    "formatVersion": 1,
    "file": "shop-20261207T100000Z.sql.gz",
    "engine": "mysql",
    "serverVersion": "10.11.19-MariaDB",
    "databases": ["shop"],
    "globals": False,
    "layout": "sql",
    "size": 10,
    "sha256": "ab",
    "compression": "gzip",
    "encryption": "none",
    "tool": "mariadb-dump",
    "host": "db",
    "port": 3306,
    "user": "root",
    "start": "2026-12-07T10:00:00Z",
    "end": "2026-12-07T10:00:01Z",
    "duration": 1.0,
}


def test_the_manifest_carries_the_coordinates_and_leaves_the_key_out_without_them() -> None:
    coordinates = {"file": "mysql-bin.000003", "position": 1234, "gtid": None}
    with_them = Manifest.from_json(json.dumps(MANIFEST | {"binlog": coordinates}))
    without = Manifest.from_json(json.dumps(MANIFEST))

    assert with_them.binlog == Coordinates("mysql-bin.000003", 1234, None)
    assert json.loads(with_them.to_json())["binlog"] == coordinates
    assert without.binlog is None
    assert "binlog" not in json.loads(without.to_json())


def test_a_manifest_with_malformed_coordinates_is_refused() -> None:
    with pytest.raises(ValueError, match="binlog"):
        Manifest.from_json(json.dumps(MANIFEST | {"binlog": {"file": "x", "position": "1234"}}))
