"""PostgreSQL WAL archives with keys, and their slots' end, at the runner, against a real PostgreSQL 15: `dbb-backup
archive --engine postgresql --encryption-key-file` (every stored object encrypted), `restore --point-in-time` from
an encrypted archive and base backup (with the key, and refused untouched without it), and `archive --drop-slot`."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import zstandard

from hack.harness.databases import PostgresServer
from runner.crypto import Decryptor, load_key
from tests.backup.cli import wait_for
from tests.backup.conftest import KEY
from tests.backup.test_pitr_postgres import (
    archiving,
    base_backup,
    closed_segments,
    entries,
    newest_until,
    pitr_restore,
    server_now,
    written_rows,
)
from tests.backup.test_pitr_postgres import primary as primary  # the fixture


def stored_files(folder: Path) -> list[Path]:
    """Every file under the archive's folder, hidden ones included: what its volume holds."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def opened(stored: bytes, key: Path) -> bytes:
    """An encrypted object, decrypted and decompressed with `key`."""
    plain = Decryptor(load_key(key).secret, io.BytesIO(stored)).read()
    return zstandard.ZstdDecompressor().decompressobj().decompress(plain)


def test_an_encrypted_wal_archive_stores_no_plaintext_wal(
    primary: PostgresServer, tmp_path: Path, key_file: Path
) -> None:
    marker = f"dbb-marker-{uuid.uuid4().hex}"
    primary.sql("CREATE DATABASE secrets")
    primary.sql("CREATE TABLE notes (note text)", "secrets")
    with archiving(primary, tmp_path, "secrets", 1, "--encryption-key-file", str(key_file)):
        primary.sql(f"INSERT INTO notes VALUES ('{marker}')", "secrets")
        switched = primary.sql("SELECT pg_walfile_name(pg_switch_wal())")
        wait_for(lambda: switched in closed_segments(tmp_path, "secrets"), "the segment with the marker archived")
        primary.sql(f"INSERT INTO notes VALUES ('{marker}-partial')", "secrets")
        after = server_now(primary)
        wait_for(lambda: newest_until(tmp_path, "secrets") > after, "the partial segment archived past the insert")

    archive = tmp_path / "secrets-wal"
    index = entries(tmp_path, "secrets")
    objects = {e["object"] for e in index.values()}
    assert any(name.endswith(".partial.zst.enc") for name in objects), objects
    assert all(name.endswith(".zst.enc") for name in objects), objects
    fingerprint = load_key(key_file).fingerprint
    assert {(e["keyId"], e["keyFingerprint"]) for e in index.values()} == {(key_file.name, fingerprint)}
    files = stored_files(archive)
    assert {p.name for p in files} - objects - set(index) == {".lock"}, "no spool, no other file beside them"
    for path in files:
        data = path.read_bytes()
        assert marker.encode() not in data, f"plaintext WAL in {path}"
        if path.name in objects:
            assert data.startswith(b"DBBENC"), path
            with pytest.raises(zstandard.ZstdError):
                zstandard.ZstdDecompressor().decompressobj().decompress(data)
    # With the key, the objects do hold the marker: its absence above is the encryption's doing.
    segment = index[f"{switched}.json"]
    assert marker.encode() in opened((archive / segment["object"]).read_bytes(), key_file)
    assert any(f"{marker}-partial".encode() in opened((archive / o).read_bytes(), key_file) for o in objects)


@dataclass(frozen=True)
class Ledger:
    """An encrypted base backup and WAL archive of a database, and a point between two of its writes."""

    backup: Path
    point: datetime
    last: int  # the last row written before the point
    written: int  # rows written in all


def write_rows(server: PostgresServer, numbers: range) -> None:
    """One transaction a row, as an application writes."""
    server.sql(";".join(f"INSERT INTO rows (id) VALUES ({n})" for n in numbers), "ledger")


@pytest.fixture(scope="module")
def encrypted_ledger(primary: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    folder = tmp_path_factory.mktemp("ledger")
    key_file = folder / "backup.key"
    key_file.write_text(KEY + "\n")
    key = ("--encryption-key-file", str(key_file))
    primary.sql("CREATE DATABASE ledger")
    primary.sql("CREATE TABLE rows (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())", "ledger")
    with archiving(primary, folder, "ledger", 1, *key):
        write_rows(primary, range(1, 11))
        made = base_backup(primary, folder, "ledger", *key)
        write_rows(primary, range(11, 21))
        primary.sql("SELECT pg_switch_wal()")  # the recovery crosses from one archived segment into the next
        write_rows(primary, range(21, 31))
        point = server_now(primary)  # after row 30 committed, before row 31 began
        write_rows(primary, range(31, 51))
        end = server_now(primary)
        wait_for(lambda: newest_until(folder, "ledger") >= end, "the archive to reach the last write")
    assert made.name.endswith(".base.tar.zst.enc")
    assert all(e["object"].endswith(".zst.enc") for e in entries(folder, "ledger").values())
    return Ledger(made, point, 30, 50)


def test_a_point_in_time_restore_from_an_encrypted_archive_has_every_row_up_to_it_and_none_after(
    primary: PostgresServer, encrypted_ledger: Ledger
) -> None:
    ledger = encrypted_ledger
    key_file = ledger.backup.parent / "backup.key"

    outcome = pitr_restore(primary, ledger.backup, ledger.point, "ledger=ledger_pitr", "--key-file", str(key_file))

    assert outcome.code == 0, outcome.stderr
    assert sorted(written_rows(primary, "ledger_pitr")) == list(range(1, ledger.last + 1))
    assert len(written_rows(primary, "ledger")) == ledger.written > ledger.last, "rows were written after the point"
    assert outcome.result["replayed"] == "target"


def test_a_restore_from_an_encrypted_archive_without_its_key_is_refused_untouched(
    primary: PostgresServer, encrypted_ledger: Ledger, other_key_file: Path
) -> None:
    ledger = encrypted_ledger

    without = pitr_restore(primary, ledger.backup, ledger.point, "ledger=ledger_nokey")
    wrong = pitr_restore(primary, ledger.backup, ledger.point, "ledger=ledger_wrong", "--key-file", str(other_key_file))

    assert without.code == 1
    assert without.reason_line.startswith("dbb-backup: InvalidArguments: archived WAL "), without.stderr
    assert "is encrypted: give key 'backup.key' (--key-file, --key-dir)" in without.reason_line
    assert wrong.code == 1
    assert wrong.reason_line.startswith("dbb-backup: DecryptFailed: archived WAL "), wrong.stderr
    assert "needs key 'backup.key', which is not among those given (ids: 'other.key')" in wrong.reason_line
    assert not {"ledger_nokey", "ledger_wrong"} & set(primary.databases())
