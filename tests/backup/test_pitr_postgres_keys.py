"""PostgreSQL WAL archives with keys, and their slots' end, at the runner, against a real PostgreSQL 15: `dbb-backup
archive --engine postgresql --encryption-key-file` (every stored object encrypted), `restore --point-in-time` from
an encrypted archive and base backup (with the key, and refused untouched without it), and `archive --drop-slot`."""

from __future__ import annotations

import io
import json
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import zstandard

from hack.harness.databases import PostgresServer
from runner.crypto import Decryptor, load_key
from runner.walarchive import slot_name
from tests.backup.cli import Outcome, connection_args, dbb, password_env, spawn, wait_for
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


@pytest.fixture
def emptydir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The archivers' TMPDIR, as the Pod's emptyDir is: an encrypted archive's spool goes there (and goes with it).
    Not a restore's: its scratch server, run as postgres, could not enter the test's folder."""
    folder = tmp_path / "emptydir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def stored_files(folder: Path) -> list[Path]:
    """Every file under the archive's folder, hidden ones included: what its volume holds."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def opened(stored: bytes, key: Path) -> bytes:
    """An encrypted object, decrypted and decompressed with `key`."""
    plain = Decryptor(load_key(key).secret, io.BytesIO(stored)).read()
    return zstandard.ZstdDecompressor().decompressobj().decompress(plain)


def test_an_encrypted_wal_archive_stores_no_plaintext_wal(
    primary: PostgresServer, tmp_path: Path, key_file: Path, emptydir: Path
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
    assert any(emptydir.iterdir()), "pg_receivewal's spool is in the emptyDir instead"
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


def test_an_archiver_with_a_new_key_and_a_lost_spool_resumes_with_no_gap(
    primary: PostgresServer, tmp_path: Path, key_file: Path, other_key_file: Path, emptydir: Path
) -> None:
    primary.sql("CREATE DATABASE rotated")
    primary.sql("CREATE TABLE ticks (id int)", "rotated")

    def write_and_switch() -> str:
        primary.sql("INSERT INTO ticks VALUES (1)", "rotated")
        return primary.sql("SELECT pg_walfile_name(pg_switch_wal())")

    with archiving(primary, tmp_path, "rotated", 1, "--encryption-key-file", str(key_file)):
        before = write_and_switch()
        wait_for(lambda: before in closed_segments(tmp_path, "rotated"), "a completed segment archived")
    # A new Pod: its emptyDir, where an encrypted archive's spool is, is gone; and the key was rotated meanwhile.
    assert any(emptydir.iterdir()), "the spool was in the emptyDir"
    shutil.rmtree(emptydir)
    emptydir.mkdir()
    write_and_switch()  # while no archiver ran: the slot kept it
    with archiving(primary, tmp_path, "rotated", 1, "--encryption-key-file", str(other_key_file)):
        last = write_and_switch()
        wait_for(lambda: last in closed_segments(tmp_path, "rotated"), "every completed segment archived")

    names = closed_segments(tmp_path, "rotated")
    numbers = [int(n[8:], 16) for n in names]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"a gap in {names}"
    index = entries(tmp_path, "rotated")
    assert index[f"{before}.json"]["keyId"] == "backup.key"
    assert {index[f"{n}.json"]["keyId"] for n in names if n > before} == {"other.key"}


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
    (folder / "emptydir").mkdir()
    key_file = folder / "backup.key"
    key_file.write_text(KEY + "\n")
    key = ("--encryption-key-file", str(key_file))
    primary.sql("CREATE DATABASE ledger")
    primary.sql("CREATE TABLE rows (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())", "ledger")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder / "emptydir"))  # see emptydir
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


# --- dropping the archiver's slot ----------------------------------------------------------------------------------


def drop_args(server: PostgresServer, name: str, *flags: str) -> list[str]:
    """`archive --drop-slot` as the operator's Job runs it: the connection and --name, no archive."""
    return ["archive", "--engine", "postgresql", *connection_args(server), "--name", name, "--drop-slot", *flags]


def drop_slot(server: PostgresServer, name: str, *flags: str) -> Outcome:
    return dbb(*drop_args(server, name, *flags), env=password_env(server), timeout=120)


def slots(server: PostgresServer) -> dict[str, bool]:
    """The server's replication slots: {name: active}."""
    rows = server.sql("SELECT slot_name, active FROM pg_replication_slots").splitlines()
    return {name: active == "t" for name, active in (row.split("|") for row in rows)}


def test_drop_slot_drops_the_archiver_s_slot_only_and_is_a_no_op_the_second_time(
    primary: PostgresServer, tmp_path: Path
) -> None:
    slot = slot_name("retired")
    primary.sql("SELECT pg_create_physical_replication_slot('someone_elses')")
    with archiving(primary, tmp_path, "retired", 1):
        wait_for(lambda: slots(primary).get(slot) is True, "the archiver to stream through its slot")

    first = drop_slot(primary, "retired")
    second = drop_slot(primary, "retired")

    assert first.code == 0, first.stderr
    assert first.result == {"status": "SlotDropped", "slot": slot, "dropped": True}
    assert slot not in slots(primary)
    assert "someone_elses" in slots(primary), "only the archiver's own slot is dropped"
    assert second.code == 0, second.stderr
    assert second.result == {"status": "SlotDropped", "slot": slot, "dropped": False}


def test_drop_slot_waits_for_the_archiver_to_stop_then_drops_its_slot(primary: PostgresServer, tmp_path: Path) -> None:
    slot = slot_name("stopping")
    logged: list[str] = []
    with archiving(primary, tmp_path, "stopping", 1):
        wait_for(lambda: slots(primary).get(slot) is True, "the archiver to stream through its slot")
        dropper = spawn(drop_args(primary, "stopping", "--timeout", "60"), primary)
        stderr = dropper.stderr
        assert stderr is not None

        def read_log() -> None:
            for line in stderr:
                logged.append(line)

        reader = threading.Thread(target=read_log, name="dropper-log")
        reader.start()
        wait_for(lambda: any("waiting for its archiver to stop" in line for line in logged), "the drop to wait")
        assert dropper.poll() is None
        assert slots(primary).get(slot) is True, "the slot stays while its archiver streams"
    # The archiver stopped (SIGTERM) as the block ended: its slot is no longer active, and the drop goes ahead.
    reader.join(timeout=60)  # its log ends as it exits
    out, _ = dropper.communicate(timeout=10)

    assert dropper.returncode == 0, "".join(logged)
    assert json.loads(out) == {"status": "SlotDropped", "slot": slot, "dropped": True}
    assert slot not in slots(primary)


def test_drop_slot_refuses_a_slot_still_active_after_its_timeout_naming_it(
    primary: PostgresServer, tmp_path: Path
) -> None:
    slot = slot_name("busy")
    with archiving(primary, tmp_path, "busy", 1) as archiver:
        wait_for(lambda: slots(primary).get(slot) is True, "the archiver to stream through its slot")
        refused = drop_slot(primary, "busy", "--timeout", "1")
        assert archiver.poll() is None, "the archiver streams on"
        assert slots(primary).get(slot) is True
    cleanup = drop_slot(primary, "busy")

    assert refused.code == 1
    assert refused.reason_line == (
        f"dbb-backup: Timeout: the replication slot {slot} is still active after 1s: an archiver still streams"
        " through it; stop it first"
    )
    assert cleanup.result["dropped"] is True


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "give --output-dir or --output-url (or --drop-slot)"),
        (["--output-dir", "/nowhere", "--timeout", "5"], "--timeout goes with --drop-slot"),
    ],
    ids=["no archive", "a timeout without --drop-slot"],
)
def test_an_archive_run_without_its_archive_or_with_a_stray_timeout_is_refused(
    primary: PostgresServer, flags: list[str], message: str
) -> None:
    args = ["archive", "--engine", "postgresql", *connection_args(primary), "--name", "app", *flags]
    outcome = dbb(*args, env=password_env(primary), timeout=60)

    assert outcome.code == 1
    assert outcome.reason_line == f"dbb-backup: InvalidArguments: {message}"


def test_drop_slot_for_a_mysql_archiver_is_refused(primary: PostgresServer) -> None:
    args = ["archive", "--engine", "mysql", *connection_args(primary), "--name", "app", "--drop-slot"]
    outcome = dbb(*args, env=password_env(primary), timeout=60)

    assert outcome.code == 1
    assert outcome.reason_line == "dbb-backup: InvalidArguments: --drop-slot: a PostgreSQL archiver's slot only"
