"""Continuous archiving of a PostgreSQL StatefulSet on a real cluster, as a user sees it: a DatabaseBackup with
`spec.continuous` whose archiver (a Deployment of the operator's, restricted Pod Security) streams the server's WAL
through a replication slot of its own to the backup PVC, a scheduled run that also takes the base backup a
point-in-time restore starts from, `status.continuous` moving past the rows written, a DatabaseRestore to a second
between two writes (replayed on the source's own image beside the restore Job), and, once the DatabaseBackup
is deleted, the slot dropped by a Job before the DatabaseBackup goes (the server would otherwise keep WAL for it for
ever)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.constants import LABEL_RESTORE_NAME
from common.schedule import parse_time, rfc3339
from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pitr import continuous, first_backup
from tests.e2e.pods import read_pvc

NAMESPACE = "e2e-pitr-pg"
OWNER = "wal"
YEARLY = "0 0 1 1 *"  # never fires during the suite: the only backup is the backup-now one


@pytest.fixture(scope="module")
def server(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    """PostgreSQL 17 (the newest the images have), with a `replication` line in pg_hba.conf."""
    with databases.namespace(kube, NAMESPACE):
        db = databases.Database("postgresql", "17", "pg-wal", NAMESPACE, "pitr-pg-password")
        databases.deploy(kube, db, replication=True)
        databases.wait_ready(kube, db)
        yield db
        # Before the namespace goes: a DatabaseBackup's slot is dropped while its server still runs.
        kube.run("delete", "dbb", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=300s", check=False)


def folder_of(db: databases.Database) -> str:
    return f"/backups/{db.name}"


def server_now(kube: Kube, db: databases.Database) -> datetime:
    text = databases.sql(
        kube, db, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    )
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC)


def archived_until(kube: Kube) -> datetime:
    until = parse_time(continuous(kube, NAMESPACE, OWNER).get("recoverableUntil"))
    return until if until is not None else datetime.min.replace(tzinfo=UTC)


def restore(name: str, point: str, db: databases.Database) -> dict[str, Any]:
    return {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseRestore",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "source": {"databaseBackup": OWNER},
            "target": {"databaseName": db.name, "databases": [{"from": "app", "to": "app_then"}]},
            "pointInTime": point,
        },
    }


def slots(kube: Kube, db: databases.Database) -> list[str]:
    return databases.sql(kube, db, "SELECT slot_name FROM pg_replication_slots ORDER BY 1", "postgres").split()


def test_wal_is_archived_restored_to_a_point_and_the_slot_goes_with_the_backup(
    kube: Kube, server: databases.Database
) -> None:
    db = server
    databases.sql(kube, db, "CREATE TABLE journal (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
    ids = itertools.count(1)
    kube.apply(databases.databasebackup(OWNER, db, YEARLY, backup_now="first", continuous={"maxLagSeconds": 10}))

    def held() -> list[str] | None:
        finalizers: list[str] = kube.get("dbb", OWNER, NAMESPACE)["metadata"].get("finalizers") or []
        return finalizers or None

    assert wait_for("the slot's finalizer", held, 120) == ["databases.test.io/replication-slot"]

    backup = first_backup(kube, NAMESPACE, OWNER, "the first run (dump and base backup)")
    print(f"lastBackup: {backup}")

    def ready() -> dict[str, Any] | None:
        """Ready, with a range: once the archive is known complete past the base backup's end."""
        found = continuous(kube, NAMESPACE, OWNER)
        return found if found.get("ready") is True and found.get("recoverableFrom") else None

    status = wait_for("status.continuous ready from the base backup on", ready, 300)
    print(f"status.continuous once the archiver runs: {status}")
    assert "reason" not in status, status
    # A WAL replay starts from a base backup, never from a dump: the range starts where the run's base backup ended.
    base = backup["baseBackup"]
    assert re.fullmatch(rf"{folder_of(db)}/{OWNER}-\d{{8}}T\d{{6}}Z\.base\.tar\.zst", base["file"]), backup
    assert status["recoverableFrom"] == base["time"], (status, backup)
    (slot,) = slots(kube, db)
    assert slot.startswith(f"dbb_{OWNER}_"), slot  # the archiver's own (runner/walarchive.py slot_name)

    for _ in range(5):
        databases.sql(kube, db, f"INSERT INTO journal (id) VALUES ({next(ids)})")
    last = datetime.fromisoformat(
        databases.sql(
            kube, db, "SELECT to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM journal"
        ).strip()
    ).replace(tzinfo=UTC)

    def archived_past_the_writes() -> dict[str, Any] | None:
        found = continuous(kube, NAMESPACE, OWNER)
        until = parse_time(found.get("recoverableUntil"))
        return found if until is not None and until >= last.replace(microsecond=0) else None

    status = wait_for(f"recoverableUntil at or after {rfc3339(last)}", archived_past_the_writes, 180)
    assert status["lagSeconds"] >= 0, status
    print(f"status.continuous after the writes: {status}")

    # A point between two writes: every row committed before it is restored, none after.
    before = [next(ids) for _ in range(3)]
    databases.sql(kube, db, "".join(f"INSERT INTO journal (id) VALUES ({i});" for i in before))
    point = (server_now(kube, db) + timedelta(seconds=1)).replace(microsecond=0)  # after every commit above
    wait_for(f"the server's clock past {rfc3339(point)}", lambda: server_now(kube, db) >= point, 60, 0.2)
    after = [next(ids) for _ in range(3)]
    for i in after:
        databases.sql(kube, db, f"INSERT INTO journal (id) VALUES ({i})")
    latest = server_now(kube, db).replace(microsecond=0)
    wait_for(f"recoverableUntil at or after {rfc3339(latest)}", lambda: archived_until(kube) >= latest, 180)
    moment = rfc3339(point)
    kube.apply(restore("wal-then", moment, db))
    assert "file" not in kube.get("dbr", "wal-then", NAMESPACE)["spec"]["source"]  # the runner picks the base backup

    def finished() -> dict[str, Any] | None:
        found: dict[str, Any] = kube.get("dbr", "wal-then", NAMESPACE).get("status", {})
        return found if found.get("phase") in ("Succeeded", "Failed") else None

    restored = wait_for("DatabaseRestore wal-then to finish", finished, 600)
    print(f"DatabaseRestore status: {restored}")
    assert restored["phase"] == "Succeeded", restored
    assert restored["replayedUntil"] == moment, restored
    assert restored["databases"] == [{"source": "app", "target": "app_then", "result": "Restored"}], restored
    rows = {int(i) for i in databases.sql(kube, db, "SELECT id FROM journal", "app_then").split()}
    assert rows == set(range(1, before[-1] + 1)), rows  # the five written first, the three before the point
    assert set(after) <= {int(i) for i in databases.sql(kube, db, "SELECT id FROM journal").split()}
    [job] = kube.items("jobs", NAMESPACE, f"{LABEL_RESTORE_NAME}=wal-then")
    [replay] = job["spec"]["template"]["spec"]["initContainers"]
    images = [c["image"] for c in kube.get("statefulset", db.name, NAMESPACE)["spec"]["template"]["spec"]["containers"]]
    assert replay["name"] == "replay-db"
    assert replay["image"] in images  # the source's own server image

    # On the backup PVC: the dump, the base backup beside it, and the WAL archive with an entry per segment.
    folder = folder_of(db)
    files = read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"ls -A {folder}/").split()
    assert any(re.fullmatch(rf"{OWNER}-\d{{8}}T\d{{6}}Z\.base\.tar\.zst", f) for f in files), files
    assert any(re.fullmatch(rf"{OWNER}-\d{{8}}T\d{{6}}Z\.base\.tar\.zst\.json", f) for f in files), files
    wal = read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"ls -A {folder}/{OWNER}-wal/").split()
    assert any(re.fullmatch(r"[0-9A-F]{24}\.json", f) for f in wal), wal
    assert any(re.fullmatch(r"[0-9A-F]{24}(\.partial)?\.zst", f) for f in wal), wal
    assert db.password not in json.dumps(kube.items("jobs", NAMESPACE))

    # Deleted: the archiver goes, a Job drops the slot, and only then the DatabaseBackup.
    kube("delete", "dbb", OWNER, "-n", NAMESPACE, "--wait=false")
    wait_for("the DatabaseBackup to be gone", lambda: not kube.exists("dbb", OWNER, NAMESPACE), 300)
    assert slots(kube, db) == [], "the archiver's slot is still on the server"
