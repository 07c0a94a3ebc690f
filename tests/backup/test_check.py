"""`dbb-backup check`: the newest stored backups of one owner, checked again as they are stored now, against the
real database servers' dumps in a folder and in a real SeaweedFS bucket. It reports each backup's verdict and
changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import pytest

from hack.harness.databases import MariaDBServer, PostgresServer
from hack.harness.objectstore import SeaweedFS
from runner import drills
from tests.backup.cli import Outcome, backup, dbb, password_env, run_args
from tests.backup.test_retention_and_verify import next_second
from tests.backup.test_s3_backup import run_to_s3

Server = PostgresServer | MariaDBServer
UID = "0b5e7c1e-0000-4000-8000-000000000001"


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Server:
    found: Server = request.getfixturevalue("pg" if request.param == "postgresql" else "mariadb")
    return found


def owned(server: Server, folder: Path, name: str, uid: str, key: Path) -> Path:
    flags = {"name": name, "owner": f"ns/{name}", "owner_uid": uid, "verify": None}
    return backup(server, folder, "shop", encryption_key_file=str(key), **flags)


def check(location: str, *flags: str, env: dict[str, str] | None = None) -> Outcome:
    return dbb("check", location, "--owner-uid", UID, *flags, env=env or password_env_free())


def password_env_free() -> dict[str, str]:
    """The check needs no database credentials at all: none are given."""
    return {k: v for k, v in os.environ.items() if k not in ("DB_PASSWORD", "PGPASSWORD", "MYSQL_PWD")}


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_check_finds_a_changed_backup_and_a_deleted_one_and_changes_nothing(
    server: Server, tmp_path: Path, key_file: Path
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    files: list[Path] = []
    for _ in range(3):
        if files:
            next_second(files[-1].name)  # a run refuses to replace a published backup of the same second
        files.append(owned(server, folder, "nightly", UID, key_file))
    stranger = owned(server, folder, "other", str(uuid.uuid4()), key_file)

    passed = check(str(folder), "--backups", "2", "--key-file", str(key_file))
    assert passed.code == 0, passed.stderr
    assert passed.result["status"] == "Verified"
    # The newest first; only this owner's; each with the sha256 its manifest recorded.
    assert [c["file"] for c in passed.result["checked"]] == [str(files[2]), str(files[1])]
    for entry, file in zip(passed.result["checked"], (files[2], files[1]), strict=True):
        manifest = json.loads(Path(f"{file}.json").read_text())
        assert (entry["result"], entry["sha256"]) == ("Passed", manifest["sha256"])

    # Damage: one byte of the newest changed in place, the oldest deleted (its manifest left behind).
    data = bytearray(files[2].read_bytes())
    data[len(data) // 2] ^= 0x01
    files[2].write_bytes(bytes(data))
    files[0].unlink()
    before = snapshot(folder)
    log = tmp_path / "termination-log"
    failed = check(str(folder), "--backups", "3", "--key-file", str(key_file), "--termination-log", str(log))
    assert failed.code == 1
    assert log.read_text() == failed.stdout
    verdicts = {c["file"]: c for c in failed.result["checked"]}
    assert failed.result["status"] == "VerifyFailed"
    assert set(verdicts) == {str(f) for f in files}
    assert verdicts[str(files[2])]["result"] == "Failed"
    assert verdicts[str(files[2])]["reason"] == "VerifyFailed"
    assert "sha256" in verdicts[str(files[2])]["message"]
    assert verdicts[str(files[1])]["result"] == "Passed"
    assert (verdicts[str(files[0])]["result"], verdicts[str(files[0])]["reason"]) == ("Failed", "BackupMissing")
    assert failed.reason_line.startswith(f"dbb-backup: VerifyFailed: {files[2]}: VerifyFailed")
    # Nothing deleted, nothing rewritten, whatever it found; the other owner's backup untouched and unchecked.
    assert snapshot(folder) == before
    assert stranger.exists()


def test_check_with_the_wrong_key_fails_that_backup_and_with_none_yet_passes_empty(
    pg: PostgresServer, tmp_path: Path, key_file: Path, other_key_file: Path
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    empty = check(str(folder))
    assert (empty.code, empty.result["status"], empty.result["checked"]) == (0, "Verified", [])
    file = owned(pg, folder, "nightly", UID, key_file)
    wrong = check(str(folder), "--key-file", str(other_key_file))
    assert wrong.code == 1
    [entry] = wrong.result["checked"]
    # Known from the manifest's key fingerprint, before a byte of the backup is read.
    assert (entry["file"], entry["result"], entry["reason"]) == (str(file), "Failed", "KeyMissing")
    assert entry["message"].endswith("which is not among the keys given (ids: 'other.key'): it cannot be restored")


def test_check_in_a_bucket_finds_a_deleted_object(pg: PostgresServer, seaweedfs: SeaweedFS, key_file: Path) -> None:
    prefix = f"check-{uuid.uuid4().hex[:8]}"
    url = f"s3://{seaweedfs.bucket}/{prefix}"
    flags = ["--verify", "--name", "nightly", "--owner", "ns/nightly", "--owner-uid", UID]
    flags += ["--encryption-key-file", str(key_file)]
    objects: list[str] = []
    for _ in range(2):
        if objects:
            next_second(objects[-1])  # backup names have whole seconds
        made = run_to_s3(pg, seaweedfs, url, *flags)
        assert made.code == 0, made.stderr
        objects.append(made.result["file"])
    env = password_env_free() | seaweedfs.env
    passed = check(url, "--backups", "2", "--key-file", str(key_file), env=env)
    assert passed.code == 0, passed.stderr
    assert [(c["file"], c["result"]) for c in passed.result["checked"]] == [
        (objects[1], "Passed"),
        (objects[0], "Passed"),
    ]
    keys = [o.removeprefix(f"s3://{seaweedfs.bucket}/") for o in objects]
    seaweedfs.client().delete_object(Bucket=seaweedfs.bucket, Key=keys[0])
    failed = check(url, "--backups", "2", "--key-file", str(key_file), env=env)
    assert failed.code == 1
    assert [(c["result"], c.get("reason")) for c in failed.result["checked"]] == [
        ("Passed", None),
        ("Failed", "BackupMissing"),
    ]
    # Still there: the newer object, and both manifests (a check deletes nothing, not even an orphaned manifest).
    assert seaweedfs.keys(prefix) == sorted([keys[1], keys[0] + ".json", keys[1] + ".json"])
    assert password_env(pg)["DB_PASSWORD"] not in failed.stdout + failed.stderr


def test_a_restore_test_runs_in_a_scratch_server_and_never_reaches_the_source(
    pg: PostgresServer, tmp_path: Path, key_file: Path
) -> None:
    """`--restore-test` restores every database of an `all` backup (roles as owners, which a scratch server lacks)
    into a throwaway server, as the check's Pod has one beside it; the source server sees no connection at all."""
    folder = tmp_path / "backups"
    folder.mkdir()
    flags = {"name": "nightly", "owner": "ns/nightly", "owner_uid": UID, "verify": None}
    file = backup(pg, folder, "all", encryption_key_file=str(key_file), **flags)
    with PostgresServer.start(password="the-scratch-servers-own") as scratch:
        source_connections = len(re.findall("connection authorized", pg.log))
        env = password_env_free() | {"DB_PASSWORD": "the-scratch-servers-own"}
        args = ["--key-file", str(key_file), "--restore-test", "--scratch-port", str(scratch.port)]
        outcome = check(str(folder), *args, "--scratch-user", scratch.user, env=env)
        assert outcome.code == 0, outcome.stderr
        [entry] = outcome.result["checked"]
        assert (entry["file"], entry["result"], entry["restoreTested"]) == (str(file), "Passed", True)
        # The drill's evidence: how long, and what was compared (the sample's tables, every row counted).
        assert entry["restoreSeconds"] > 0
        assert entry["tables"] >= 2
        assert entry["rows"] >= entry["tables"]
        assert len(re.findall("connection authorized", pg.log)) == source_connections
        assert re.search(r"connection authorized: user=\S+ database=dbb_verify_", scratch.log)
        # The full record, beside the backup: this drill, with each table's rows.
        record = Path(f"{file}.drills.jsonl")
        [drill] = drills.parse(record.read_text())
        assert (drill["file"], drill["result"], drill["by"]) == (str(file), "Passed", "dbb-backup check")
        assert drill["restoreSeconds"] == entry["restoreSeconds"]
        assert drill["backupTime"] == entry["time"]
        assert sum(sum(tables.values()) for tables in drill["rows"].values()) == entry["rows"]
        assert drill["sha256"] == entry["sha256"]
        again = check(str(folder), *args, "--scratch-user", scratch.user, env=env)
        assert again.code == 0, again.stderr
        first, second = drills.parse(record.read_text())  # each drill appended, the oldest first
        assert first == drill
        assert second["time"] >= drill["time"]
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [], "no temporary file left"
        # Each scratch database was dropped again.
        assert "dbb_verify_" not in scratch.sql("SELECT string_agg(datname, ',') FROM pg_database")

        unreachable = check(str(folder), *args[:3], "--scratch-port", "1", "--scratch-user", "x", "--scratch-wait", "1")
        assert unreachable.code == 1
        assert unreachable.result["reason"] == "Unreachable"
        assert "scratch server at 127.0.0.1:1" in unreachable.result["message"]


def test_a_runs_restore_test_goes_to_the_scratch_server_beside_it_not_to_the_source(
    pg: PostgresServer, tmp_path: Path
) -> None:
    """`run --restore-test --scratch-port`: the new backup is restored into the scratch server (as the backup Job's
    Pod has one beside it); the source server serves the dump only, and no dbb_verify_ database is made there."""
    folder = tmp_path / "backups"
    folder.mkdir()
    verify_connections = r"connection authorized: user=\S+ database=dbb_verify_"
    with PostgresServer.start(password="the-scratch-servers-own") as scratch:
        before = len(re.findall(verify_connections, pg.log))  # other tests' restore tests on the source
        env = password_env(pg) | {"SCRATCH_PASSWORD": "the-scratch-servers-own"}
        flags = ["--verify", "--restore-test", "--scratch-port", str(scratch.port), "--scratch-user", scratch.user]
        outcome = dbb(*run_args(pg, folder, "shop", name="nightly"), *flags, env=env)
        assert outcome.code == 0, outcome.stderr
        assert outcome.result["verified"] is True
        assert len(re.findall(verify_connections, pg.log)) == before
        assert re.search(verify_connections, scratch.log)
        assert "dbb_verify_" not in scratch.sql("SELECT string_agg(datname, ',') FROM pg_database")
        assert "the-scratch-servers-own" not in outcome.stdout + outcome.stderr


def test_a_drill_in_a_bucket_is_recorded_beside_the_object_and_a_record_that_cannot_be_written_changes_no_verdict(
    mariadb: MariaDBServer, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    prefix = f"drills-{uuid.uuid4().hex[:8]}"
    url = f"s3://{seaweedfs.bucket}/{prefix}"
    made = run_to_s3(
        mariadb, seaweedfs, url, "--verify", "--name", "nightly", "--owner", "ns/nightly", "--owner-uid", UID
    )
    assert made.code == 0, made.stderr
    key = made.result["file"].removeprefix(f"s3://{seaweedfs.bucket}/")
    with MariaDBServer.start() as scratch:
        env = password_env_free() | seaweedfs.env | {"DB_PASSWORD": scratch.password}
        args = ["--restore-test", "--scratch-port", str(scratch.port), "--scratch-user", scratch.user]
        outcome = check(url, *args, env=env)
        assert outcome.code == 0, outcome.stderr
        [entry] = outcome.result["checked"]
        body = seaweedfs.client().get_object(Bucket=seaweedfs.bucket, Key=key + ".drills.jsonl")["Body"].read()
        [drill] = drills.parse(body.decode())
        assert (drill["result"], drill["restoreSeconds"]) == ("Passed", entry["restoreSeconds"])
        manifest = json.loads(seaweedfs.client().get_object(Bucket=seaweedfs.bucket, Key=key + ".json")["Body"].read())
        assert drill["rows"] == manifest["rows"], "each table's rows, as the backup holds them"
        assert sum(manifest["rows"]["shop"].values()) > 0

        # A folder whose record cannot be written (here the record's name is taken by a folder): the drill
        # passed, and says so; the record's trouble is logged.
        folder = tmp_path / "backups"
        folder.mkdir()
        file = backup(mariadb, folder, "shop", name="nightly", owner="ns/nightly", owner_uid=UID, verify=None)
        Path(f"{file}.drills.jsonl").mkdir()
        blocked = check(str(folder), *args, env=env)
        assert blocked.code == 0, blocked.stderr
        assert blocked.result["checked"][0]["result"] == "Passed"
        assert "the restore drill was not recorded" in blocked.stderr
