"""PostgreSQL point-in-time recovery through the in-cluster object store, encrypted, as a user sees it: a PostgreSQL
17 StatefulSet whose DatabaseBackup writes its dumps, base backups and WAL archive to a SeaweedFS bucket with an
encryption key; and a DatabaseRestore with `pointInTime` between two sets of writes into ANOTHER StatefulSet, a
fresh server: every row committed before the point is there, none after, and the restore's status says which base
backup it replayed from and up to when. No WAL or base backup is stored in the clear, and no secret is where the
operator writes. Then a check proves the archive between two base backups, on a replay server beside it."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.constants import ANNOTATION_BACKUP_NOW, ANNOTATION_VERIFY_NOW
from common.schedule import parse_time, rfc3339
from tests.e2e import databases, objectstore
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pitr import continuous, first_backup, wide_column

NAMESPACE = "e2e-pitr-pg-s3"
OWNER = "wal-s3"
YEARLY = "0 0 1 1 *"  # never fires during the suite: the only backup is the backup-now one
SECRET_KEY = "e2e-pitr-pg-s3-secret-key-sentinel-7c1d"  # the store's own key, looked for where the operator writes
KEY = os.urandom(32).hex()

World = tuple[objectstore.SeaweedFS, databases.Database, databases.Database]


@pytest.fixture(scope="module")
def world(kube: Kube, deployed: str) -> Iterator[World]:
    """The store, a PostgreSQL 17 source that allows replication, and a PostgreSQL 17 target without `app`."""
    with databases.namespace(kube, NAMESPACE):
        store = objectstore.SeaweedFS(NAMESPACE, "E2EPITRPGACCESSKEY", SECRET_KEY)
        objectstore.deploy(kube, store)
        source = databases.Database("postgresql", "17", "pg-src", NAMESPACE, "pitr-pg-s3-source-password")
        target = databases.Database("postgresql", "17", "pg-dst", NAMESPACE, "pitr-pg-s3-target-password")
        databases.deploy(kube, source, replication=True)
        databases.deploy(kube, target, database=None)
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "backup-key", "namespace": NAMESPACE},
                "stringData": {"2026-12": KEY},
            }
        )
        try:
            objectstore.wait_ready(kube, store)
            databases.wait_ready(kube, source)
            databases.wait_ready(kube, target)
            yield store, source, target
        finally:
            # Before the namespace goes: the slot is dropped while the source still runs.
            kube.run("delete", "dbb", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=300s", check=False)
            objectstore.remove(kube, store)


def server_now(kube: Kube, db: databases.Database) -> datetime:
    text = databases.sql(
        kube, db, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    )
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC)


def archived_until(kube: Kube) -> datetime:
    until = parse_time(continuous(kube, NAMESPACE, OWNER).get("recoverableUntil"))
    return until if until is not None else datetime.min.replace(tzinfo=UTC)


def rows(kube: Kube, db: databases.Database, database: str = "app") -> list[int]:
    return sorted(int(i) for i in databases.sql(kube, db, "SELECT id FROM journal", database).split())


def test_an_encrypted_archive_in_the_bucket_restores_to_a_second_on_another_statefulset(
    kube: Kube, world: World
) -> None:
    store, source, target = world
    prefix = f"{NAMESPACE}/{source.name}"  # the default: <namespace>/<databaseName>
    databases.sql(kube, source, "CREATE TABLE journal (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
    ids = itertools.count(1)

    def write(count: int) -> list[int]:
        done = [next(ids) for _ in range(count)]
        databases.sql(kube, source, "".join(f"INSERT INTO journal (id) VALUES ({i});" for i in done))
        return done

    kube.apply(
        databases.databasebackup(
            OWNER,
            source,
            YEARLY,
            backup_now="first",
            connection={"databases": ["app"]},
            storage=store.storage(),
            encryption={"keySecret": {"name": "backup-key", "key": "2026-12"}},
            continuous={"maxLagSeconds": 10},
            verify={"restoreTest": True},
        )
    )
    backup = first_backup(kube, NAMESPACE, OWNER, "the first run (dump and base backup, encrypted)")
    base = backup["baseBackup"]["file"]
    assert re.fullmatch(rf"s3://{store.bucket}/{prefix}/{OWNER}-\d{{8}}T\d{{6}}Z\.base\.tar\.zst\.enc", base), backup

    before = write(3)
    point = (server_now(kube, source) + timedelta(seconds=1)).replace(microsecond=0)  # after every commit above
    wait_for(f"the server's clock past {rfc3339(point)}", lambda: server_now(kube, source) >= point, 60, 0.2)
    after = write(3)
    latest = server_now(kube, source).replace(microsecond=0)

    def archived_past_the_writes() -> dict[str, Any] | None:
        found = continuous(kube, NAMESPACE, OWNER)
        until = parse_time(found.get("recoverableUntil"))
        return found if until is not None and until >= latest and found.get("recoverableFrom") else None

    status = wait_for(f"recoverableUntil at or after {rfc3339(latest)}", archived_past_the_writes, 240)
    print(f"status.continuous after the writes: {status}")
    assert status["ready"] is True, status
    assert status["recoverableFrom"] <= rfc3339(point), status  # RFC 3339 in UTC to the second: text order
    shown = wide_column(kube, NAMESPACE, "dbb", OWNER, "RECOVERABLE UNTIL")
    assert shown in (status["recoverableUntil"], continuous(kube, NAMESPACE, OWNER)["recoverableUntil"]), shown

    # The WAL archive is in the bucket beside the base backup, every segment encrypted: no plaintext WAL stored.
    archive = f"{prefix}/{OWNER}-wal/"
    names = [key.removeprefix(archive) for key in objectstore.keys(kube, store, archive)]
    print(f"the WAL archive in the bucket: {names}")
    data = [n for n in names if not n.endswith(".json")]
    assert data, names
    assert all(n.endswith(".zst.enc") for n in data), names

    moment = rfc3339(point)
    name = "wal-s3-then"
    kube.apply(
        {
            "apiVersion": "databases.test.io/v1",
            "kind": "DatabaseRestore",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "source": {"databaseBackup": OWNER},
                "target": {"databaseName": target.name},
                "pointInTime": moment,
            },
        }
    )

    def finished() -> dict[str, Any] | None:
        found: dict[str, Any] = kube.get("dbr", name, NAMESPACE).get("status", {})
        return found if found.get("phase") in ("Succeeded", "Failed") else None

    restored = wait_for(f"DatabaseRestore {name} to finish", finished, 600)
    print(f"status of {name}: {restored}")
    assert restored["phase"] == "Succeeded", restored
    assert (restored["target"], restored["file"], restored["replayedUntil"]) == (target.name, base, moment), restored
    assert restored["databases"] == [{"source": "app", "target": "app", "result": "Restored"}], restored
    # The restore Job read the base backup and the WAL from the bucket (it mounts no PVC), with the key.
    job = kube.get("job", restored["job"], NAMESPACE)["spec"]["template"]["spec"]
    assert not [v for v in job.get("volumes", []) if "persistentVolumeClaim" in v], job["volumes"]
    assert f"--host={target.host}" in job["containers"][0]["args"], job["containers"][0]["args"]
    # On the other server: the rows committed before the point, none after.
    assert rows(kube, target) == before
    assert rows(kube, source) == before + after
    assert wide_column(kube, NAMESPACE, "dbr", name, "POINT IN TIME") == moment

    written_by_operator = json.dumps(
        [
            kube.items("jobs", NAMESPACE),
            kube.items("deployments", NAMESPACE),
            kube.items("databasebackups", NAMESPACE),
            kube.items("databaserestores", NAMESPACE),
        ]
    )
    for secret in (source.password, target.password, SECRET_KEY, KEY):
        assert secret not in written_by_operator

    # The scheduled check proves the archive: the first base backup and the WAL after it, recovered to where the
    # second base backup ended, hold what the second holds, table by table.
    write(2)
    databases.sql(kube, source, "UPDATE journal SET id = id + 100 WHERE id = 1; CREATE TABLE later (x int)")
    kube("patch", "dbb", OWNER, "-n", NAMESPACE, "--type=merge", "-p",
         json.dumps({"metadata": {"annotations": {ANNOTATION_BACKUP_NOW: "second"}}}))  # fmt: skip

    def second_base() -> dict[str, Any] | None:
        last = kube.get("dbb", OWNER, NAMESPACE).get("status", {}).get("lastBackup") or {}
        found = last.get("baseBackup") or {}
        return found if found.get("file") not in (None, base) else None

    newer = wait_for("the second base backup", second_base, 300)
    ended = parse_time(newer["time"])
    assert ended is not None, newer
    wait_for("the archive past the second base backup", lambda: archived_until(kube) > ended, 180)
    kube("patch", "dbb", OWNER, "-n", NAMESPACE, "--type=merge", "-p",
         json.dumps({"metadata": {"annotations": {ANNOTATION_VERIFY_NOW: "prove"}}}))  # fmt: skip

    def verified() -> dict[str, Any] | None:
        found: dict[str, Any] | None = kube.get("dbb", OWNER, NAMESPACE).get("status", {}).get("lastVerification")
        return found if found and found.get("archive") else None

    verification = wait_for("the check that proves the archive", verified, 600)
    print(f"status.lastVerification: {verification}")
    assert verification["result"] == "Passed", verification
    proof = verification["archive"]
    assert proof["proven"] is True, proof
    assert (proof["from"].rsplit("/", 1)[-1], proof["to"].rsplit("/", 1)[-1]) == (
        base.rsplit("/", 1)[-1],
        newer["file"].rsplit("/", 1)[-1],
    ), proof
    assert proof["tables"] >= 2, proof  # journal and later, in app
