"""`dbb-backup check --prove-archive` for PostgreSQL against a real PostgreSQL 15: two base backups of `run
--base-backup` with the WAL `archive` wrote between them, the older recovered to the newer's end LSN and compared
with the newer, table by table, on a scratch postgres from --pg-bin or on the replay server of --replay-dir (the
reconciler's SUPERVISOR); from a folder and from a bucket (SeaweedFS), plain and encrypted. A segment replaced or
gone fails the check; one whose entry is gone leaves nothing proven; one base backup proves nothing yet."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hack.harness.databases import PG_BIN, PostgresServer
from hack.harness.objectstore import SeaweedFS
from runner.walarchive import lsn, segment_name
from tests.backup.cli import Outcome, dbb, password_env, wait_for
from tests.backup.test_pitr_mariadb import next_second
from tests.backup.test_pitr_postgres import server_now
from tests.backup.test_pitr_postgres_base import UID, Place, archiving, fresh_database, run
from tests.backup.test_pitr_postgres_sidecar import assert_let_go, watching
from tests.backup.test_pitr_postgres_sidecar import primary as primary  # the fixtures
from tests.backup.test_pitr_postgres_sidecar import replay_dir as replay_dir
from tests.backup.test_pitr_postgres_sidecar import sidecar as sidecar


@pytest.fixture(params=["folder", "s3"])
def any_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "folder":
        return Place(tmp_path / "backups")
    store: SeaweedFS = request.getfixturevalue("seaweedfs")
    return Place(tmp_path, store, f"proof-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return Place(tmp_path / "backups")


def two_base_backups(server: PostgresServer, place: Place, name: str, *keyed: str) -> tuple[str, str]:
    """An older and a newer base backup (where each is) of a fresh database, archived all along: between them
    inserts, updates, deletes and a new table; a write after the newer one too, which the proof must not replay."""
    with archiving(server, place, name, *keyed):
        server.sql("INSERT INTO rows (id) SELECT generate_series(1, 50)", name)
        older = run(server, place, name, "--base-backup", *keyed)
        assert older.code == 0, older.stderr
        server.sql(
            "INSERT INTO rows (id) SELECT generate_series(51, 80);"
            "UPDATE rows SET at = clock_timestamp() WHERE id % 3 = 0;"
            "DELETE FROM rows WHERE id % 7 = 0;"
            "CREATE TABLE notes (id int PRIMARY KEY, body text);"
            "INSERT INTO notes VALUES (1, 'between'), (2, NULL)",
            name,
        )
        next_second()
        newer = run(server, place, name, "--base-backup", *keyed)
        assert newer.code == 0, newer.stderr
        server.sql("INSERT INTO rows (id) VALUES (1000); UPDATE notes SET body = 'after' WHERE id = 1", name)
        end = server_now(server)
        wait_for(lambda: place.newest_until(name) >= end, "the archive to reach the last write", timeout=120)
    return older.result["baseBackup"]["file"], newer.result["baseBackup"]["file"]


def prove(server: PostgresServer, place: Place, *flags: str) -> Outcome:
    """The scheduled check of the owner's backups, proving the archive."""
    location = place.where("").rstrip("/")
    args = ["check", location, "--owner-uid", UID, "--prove-archive", *flags]
    return dbb(*args, env=password_env(server) | place.env, timeout=600)


def tables_now(server: PostgresServer) -> int:
    """The tables of every database of the cluster: what a proof of its archive compares."""
    query = (
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'"
    )
    return sum(int(server.sql(query, database)) for database in server.databases())


def number(segment: str) -> int:
    """A 16 MiB segment's number: 256 to each `XXXXXXXX` of its name."""
    return int(segment[8:16], 16) * 256 + int(segment[16:24], 16)


def segments(first: str, last: str) -> list[str]:
    """The segment names from `first` to `last` (one timeline, 16 MiB segments), in order."""
    return [f"{first[:8]}{n >> 8:08X}{n & 0xFF:08X}" for n in range(number(first), number(last) + 1)]


def expected_proof(place: Place, older: str, newer: str, tables: int) -> dict[str, Any]:
    m, n = place.manifest(older), place.manifest(newer)
    end_segment = segment_name(n["wal"]["timeline"], lsn(n["wal"]["endLsn"]), n["wal"]["segmentSize"])
    until = datetime.fromisoformat(n["end"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "proven": True,
        "from": m["file"],
        "to": n["file"],
        "until": until,
        "walSegments": segments(m["wal"]["startSegment"], end_segment),
        "tables": tables,
    }


def test_the_check_proves_that_the_wal_archive_turns_the_older_base_backup_into_the_newest(
    primary: PostgresServer, any_place: Place
) -> None:
    place = any_place
    name = fresh_database(primary)
    older, newer = two_base_backups(primary, place, name)
    tables = tables_now(primary)

    outcome = prove(primary, place, "--pg-bin", str(PG_BIN))

    assert outcome.code == 0, outcome.stderr
    assert outcome.result["status"] == "Verified"
    expected = expected_proof(place, older, newer, tables)
    assert outcome.result["archive"] == expected
    assert len(expected["walSegments"]) >= 2, "the proof replays WAL written between the two"
    assert [c["result"] for c in outcome.result["checked"]] == ["Passed"], "the newest dump is checked too"
    assert primary.password not in outcome.stdout + outcome.stderr


def test_the_check_proves_the_archive_on_the_replay_server_beside_it(
    primary: PostgresServer, place: Place, replay_dir: Path, sidecar: subprocess.Popen[bytes]
) -> None:
    name = fresh_database(primary)
    older, newer = two_base_backups(primary, place, name)
    tables = tables_now(primary)

    with watching(replay_dir) as seen:
        outcome = prove(primary, place, f"--replay-dir={replay_dir}")

    assert outcome.code == 0, outcome.stderr
    assert outcome.result["archive"] == expected_proof(place, older, newer, tables)
    assert {"start.1", "stop.1", "start.2", "stop.2", "data", "wal"} <= seen, "both recoveries ran beside"
    assert "start.3" not in seen
    assert_let_go(sidecar, replay_dir)


def test_an_encrypted_archive_is_proven_with_the_keys_as_the_check_job_runs_it(
    primary: PostgresServer,
    any_place: Place,
    tmp_path: Path,
    key_file: Path,
    replay_dir: Path,
    sidecar: subprocess.Popen[bytes],
) -> None:
    place = any_place
    name = fresh_database(primary)
    older, newer = two_base_backups(primary, place, name, "--encryption-key-file", str(key_file))
    assert older.endswith(".base.tar.zst.enc")
    assert newer.endswith(".base.tar.zst.enc")
    assert all(e["object"].endswith(".zst.enc") for e in place.wal(name).values()), "the WAL is encrypted too"
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(key_file, keys / key_file.name)
    tables = tables_now(primary)
    keyless = prove(primary, place, "--pg-bin", str(PG_BIN))

    # The check Job's command line.
    outcome = prove(primary, place, "--backups=2", f"--key-dir={keys}", f"--replay-dir={replay_dir}")

    assert outcome.code == 0, outcome.stderr
    assert outcome.result["archive"] == expected_proof(place, older, newer, tables)
    assert [c["result"] for c in outcome.result["checked"]] == ["Passed", "Passed"]
    assert_let_go(sidecar, replay_dir)
    assert keyless.code == 1
    assert keyless.result["archive"] == {
        "proven": False,
        "reason": "InvalidArguments",
        "message": f"{Path(older).name} is encrypted: give key 'backup.key' (--key-file, --key-dir)",
    }


def tamper(place: Place, name: str, older: str, newer: str, harm: str) -> str:
    """Harms the segment after the older base backup's first, one the proof replays but the newer does not need;
    returns its name."""
    start = place.manifest(older)["wal"]["startSegment"]
    harmed, following = (f"{start[:8]}{n >> 8:08X}{n & 0xFF:08X}" for n in (number(start) + 1, number(start) + 2))
    assert harmed < place.manifest(newer)["wal"]["startSegment"], "the segment lies between the two"
    entries = place.wal(name)
    entry = entries[harmed]
    if harm == "replaced":
        # Another real segment under its name, its entry saying so: it unpacks, but does not continue the one before.
        other = entries[following]
        data = place.read(f"{name}-wal/{other['object']}")
        assert data is not None
        place.write(f"{name}-wal/{entry['object']}", data)
        forged = entry | {k: other[k] for k in ("size", "sha256", "walSize")}
        place.write(f"{name}-wal/{harmed}.json", json.dumps(forged).encode())
    elif harm == "object gone":
        delete(place, f"{name}-wal/{entry['object']}")
    else:
        delete(place, f"{name}-wal/{harmed}.json")
        delete(place, f"{name}-wal/{entry['object']}")
    return harmed


def delete(place: Place, name: str) -> None:
    if place.store is None:
        (place.folder / name).unlink()
    else:
        place.store.client().delete_object(Bucket=place.store.bucket, Key=f"{place.prefix}/{name}")


@pytest.mark.parametrize("harm", ["replaced", "object gone"])
def test_a_segment_replaced_or_gone_fails_the_check_naming_it(primary: PostgresServer, place: Place, harm: str) -> None:
    name = fresh_database(primary)
    older, newer = two_base_backups(primary, place, name)
    harmed = tamper(place, name, older, newer, harm)

    outcome = prove(primary, place, "--pg-bin", str(PG_BIN))

    assert outcome.code == 1
    result = outcome.result
    reason = "ArchiveMismatch" if harm == "replaced" else "ArchiveGap"
    assert (result["status"], result["reason"]) == ("Failed", reason)
    assert result["archive"] == {"proven": False, "reason": reason, "message": result["message"]}
    if harm == "replaced":
        m, n = place.manifest(older), place.manifest(newer)
        assert result["message"] == (
            f"recovering {m['file']} with the archived WAL ended before {n['file']}'s end LSN "
            f"({n['wal']['endLsn']}): a segment between does not continue the one before it"
        )
    else:
        assert result["message"] == f"the archive lists {harmed}, its {harmed}.zst is gone"
    assert outcome.reason_line == f"dbb-backup: {reason}: {result['message']}"
    assert [c["result"] for c in result["checked"]] == ["Passed"], "the backups themselves are fine"


def test_a_segment_missing_from_the_index_leaves_the_archive_unproven(primary: PostgresServer, place: Place) -> None:
    name = fresh_database(primary)
    older, newer = two_base_backups(primary, place, name)
    harmed = tamper(place, name, older, newer, "entry gone")

    outcome = prove(primary, place, "--pg-bin", str(PG_BIN))

    assert outcome.code == 0, outcome.stderr
    archive = outcome.result["archive"]
    assert archive["proven"] is False
    assert archive["why"].startswith(f"the WAL archive at {place.where(name + '-wal')} does not reach ")
    assert f"the WAL archive is missing segment {harmed}, before " in archive["why"]


def test_with_one_base_backup_there_is_nothing_to_prove_yet_and_the_check_passes(
    primary: PostgresServer, place: Place, replay_dir: Path, sidecar: subprocess.Popen[bytes]
) -> None:
    name = fresh_database(primary)
    only = run(primary, place, name, "--base-backup")
    assert only.code == 0, only.stderr

    outcome = prove(primary, place, f"--replay-dir={replay_dir}")

    assert outcome.code == 0, outcome.stderr
    assert outcome.result["status"] == "Verified"
    file = place.manifest(only.result["baseBackup"]["file"])["file"]
    assert outcome.result["archive"] == {
        "proven": False,
        "why": f"{file} is the only base backup yet: a proof needs an older one too",
    }
    assert_let_go(sidecar, replay_dir)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--pg-bin", "/x"], "--pg-bin and --replay-dir go with --prove-archive"),
        (
            ["--prove-archive", "--pg-bin", "/x", "--replay-dir", "/y"],
            "--pg-bin and --replay-dir: the replay server brings its own postgres",
        ),
    ],
    ids=["without --prove-archive", "both"],
)
def test_the_scratch_flags_are_refused_where_they_cannot_apply(tmp_path: Path, flags: list[str], says: str) -> None:
    outcome = dbb("check", str(tmp_path), "--owner-uid", UID, *flags, env=dict(os.environ))

    assert outcome.code == 1
    assert outcome.reason_line == f"dbb-backup: InvalidArguments: {says}", outcome.stderr
