"""Point-in-time recovery through the in-cluster object store, as a user sees it: a MariaDB StatefulSet with binary
logging whose DatabaseBackup writes its backups and, with `spec.continuous`, its binlog archive to a SeaweedFS bucket
(the archiver's Deployment takes the store's keys by reference, and mounts no PVC); `status.continuous` and its column;
the archive's objects in the bucket beside the backup; and a DatabaseRestore with `pointInTime` at a whole second
between two sets of numbered writes into ANOTHER StatefulSet, a fresh server: every row before the point is there,
none after, and the restore's status and columns say what was replayed into where."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from common.constants import LABEL_BACKUP_NAME
from common.schedule import parse_time, rfc3339
from tests.e2e import databases, objectstore
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pitr import continuous, first_restorable, server_now, wide_column, written_rows

NAMESPACE = "e2e-pitr-s3"
MAX_LAG = 10
# What a server needs for the archiver: the binlog, an id of its own, and row events (runner/archive.py).
BINARY_LOGGING = ("--log-bin=mysql-bin", "--server-id=1", "--binlog-format=ROW")
YEARLY = "0 0 1 1 *"  # never fires during the suite: the only backup is the backup-now one
SECRET_KEY = "e2e-pitr-s3-secret-key-sentinel-4b9e27"  # the store's own key, looked for where the operator writes
# An archived binlog (closed, or the open one as `.partial`): its data object and its index entry (archivestore.py);
# the open one's later pieces too (`.partial.<start>.zst`).
ARCHIVED = re.compile(r"(mysql-bin\.\d{6}(?:\.partial)?)(?:\.\d{12}(?=\.zst))?\.(zst|json)")

World = tuple[objectstore.SeaweedFS, databases.Database, databases.Database]


@pytest.fixture(scope="module")
def world(kube: Kube, deployed: str) -> Iterator[World]:
    """The store, a MariaDB 11.8 source with binary logging and a MariaDB 11.8 target without the `app` database
    (a fresh server to recover onto), all started at once."""
    with databases.namespace(kube, NAMESPACE):
        store = objectstore.SeaweedFS(NAMESPACE, "E2EPITRACCESSKEY", SECRET_KEY)
        objectstore.deploy(kube, store)
        source = databases.Database("mariadb", "11.8", "maria-src", NAMESPACE, "pitr-s3-source-password")
        target = databases.Database("mariadb", "11.8", "maria-dst", NAMESPACE, "pitr-s3-target-password")
        databases.deploy(kube, source, server_args=BINARY_LOGGING)
        databases.deploy(kube, target, database=None)
        try:
            objectstore.wait_ready(kube, store)
            databases.wait_ready(kube, source)
            databases.wait_ready(kube, target)
            yield store, source, target
        finally:
            objectstore.remove(kube, store)


def check_archiver(kube: Kube, store: objectstore.SeaweedFS, owner: str, prefix: str) -> None:
    """The archiver writes to the bucket, not to a PVC, and takes the key pair from the Secret by reference."""
    deployment = kube.get("deployment", f"{owner}-archiver", NAMESPACE)
    assert deployment["metadata"]["labels"][LABEL_BACKUP_NAME] == owner, deployment["metadata"]
    spec = deployment["spec"]["template"]["spec"]
    claims = [v for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]
    assert not claims, spec["volumes"]
    container = spec["containers"][0]
    assert "archive" in container["args"], container["args"]
    assert f"--output-url=s3://{store.bucket}/{prefix}" in container["args"], container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == store.endpoint
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": store.credentials_secret, "key": name}


def test_a_restore_from_the_bucket_reaches_a_second_on_another_statefulset(kube: Kube, world: World) -> None:
    store, source, target = world
    owner = "pitr-s3"
    prefix = f"{NAMESPACE}/{source.name}"  # the default: <namespace>/<databaseName>
    databases.sql(kube, source, "CREATE TABLE journal (id int PRIMARY KEY, at datetime(6))")
    ids = itertools.count(1)

    def write(count: int) -> list[int]:
        """`count` numbered rows, one statement (and one kubectl exec) each, stamped in UTC."""
        done = []
        for _ in range(count):
            done.append(next(ids))
            databases.sql(kube, source, f"SET time_zone = '+00:00'; INSERT INTO journal VALUES ({done[-1]}, NOW(6))")
        return done

    kube.apply(
        databases.databasebackup(
            owner,
            source,
            YEARLY,
            backup_now="first",
            connection={"databases": ["app"]},
            storage=store.storage(),
            continuous={"maxLagSeconds": MAX_LAG},
        )
    )

    backup, since, first = first_restorable(kube, NAMESPACE, owner, write)
    assert backup["file"].startswith(f"s3://{store.bucket}/{prefix}/{owner}-"), backup
    check_archiver(kube, store, owner, prefix)

    before = first + write(5)
    written = written_rows(kube, source)
    point = (max(written[i] for i in before) + timedelta(seconds=1)).replace(microsecond=0)
    # The rows after are written once the server's own clock has passed the point: no sleep decides which side
    # of it a row falls on.
    wait_for(f"the server's clock past {rfc3339(point)}", lambda: server_now(kube, source) >= point, 60, 0.2)
    after = write(5)
    written = written_rows(kube, source)
    assert max(written[i] for i in before) < point <= min(written[i] for i in after), written
    last = max(written.values()).replace(microsecond=0)

    def archived_past_the_writes() -> dict[str, Any] | None:
        found = continuous(kube, NAMESPACE, owner)
        until = parse_time(found.get("recoverableUntil"))
        return found if until is not None and until >= last else None

    status = wait_for(f"recoverableUntil at or after {rfc3339(last)}", archived_past_the_writes, 180)
    assert status["ready"] is True, status
    assert "reason" not in status, status
    assert status["recoverableFrom"] == since, status
    assert since < rfc3339(point), status  # RFC 3339 in UTC to the second: text order is time order
    assert status["lagSeconds"] >= 0, status
    print(f"status.continuous after the writes: {status}")

    # The column a user reads (`-o wide`), read between two reads of the object: an archive that moved on in
    # between shows one of them.
    shown = wide_column(kube, NAMESPACE, "dbb", owner, "RECOVERABLE UNTIL")
    assert shown in (status["recoverableUntil"], continuous(kube, NAMESPACE, owner)["recoverableUntil"]), shown

    # The archive is in the bucket beside the backup (`<prefix>/<owner>-binlog/`), as a client of the store lists
    # it: only archived binlogs and its checkpoint (`complete.json`, until when it held all the server wrote), at
    # least one indexed, and every index entry's data object there too (an entry is written after its object, and a
    # partial entry removed before its object).
    archive = f"{prefix}/{owner}-binlog/"
    listed = objectstore.keys(kube, store, archive)
    print(f"the archive in the bucket: {listed}")
    names = [key.removeprefix(archive) for key in listed]
    assert "complete.json" in names, names
    matched = [ARCHIVED.fullmatch(name) for name in names if name != "complete.json"]
    assert all(matched), names
    entries = {m.group(1) for m in matched if m and m.group(2) == "json"}
    objects = {m.group(1) for m in matched if m and m.group(2) == "zst"}
    assert entries, names
    assert entries <= objects, names
    backup_key = backup["file"].removeprefix(f"s3://{store.bucket}/")
    assert {backup_key, backup_key + ".json"} <= set(objectstore.keys(kube, store, f"{prefix}/{owner}-")), backup_key

    moment = rfc3339(point)
    name = "pitr-s3-then"
    kube.apply(
        {
            "apiVersion": "databases.test.io/v1",
            "kind": "DatabaseRestore",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "source": {"databaseBackup": owner},
                "target": {"databaseName": target.name},
                "pointInTime": moment,
            },
        }
    )
    # The webhook pins the backup taken at or before the point: the one in the bucket.
    assert kube.get("dbr", name, NAMESPACE)["spec"]["source"]["file"] == backup["file"]

    def finished() -> dict[str, Any] | None:
        found: dict[str, Any] = kube.get("dbr", name, NAMESPACE).get("status", {})
        return found if found.get("phase") in ("Succeeded", "Failed") else None

    restored = wait_for(f"DatabaseRestore {name} to finish", finished, 600)
    print(f"status of {name}: {restored}")
    assert restored["phase"] == "Succeeded", restored
    assert restored["target"] == target.name, restored
    assert restored["file"] == backup["file"], restored
    assert restored["replayedUntil"] == moment, restored
    assert restored["databases"] == [{"source": "app", "target": "app", "result": "Restored"}], restored
    # The restore Job read the backup and the archive from the bucket (it mounts no PVC) into the target's Service.
    job = kube.get("job", restored["job"], NAMESPACE)["spec"]["template"]["spec"]
    assert not [v for v in job.get("volumes", []) if "persistentVolumeClaim" in v], job["volumes"]
    args = job["containers"][0]["args"]
    assert backup["file"] in args, args
    assert f"--point-in-time={moment}" in args, args
    assert f"--host={target.host}" in args, args
    # On the other server: every row before the point (written_rows showed them all before it), none after it.
    # The backup holds the journal empty (every row was written after it), so each of them came from the archive.
    assert sorted(written_rows(kube, target)) == sorted(before)
    # The source is untouched: every row, before and after.
    assert sorted(written_rows(kube, source)) == sorted(before + after)

    # The columns a user reads: where it went, that it worked, and the second it stopped at (`-o wide`).
    assert wide_column(kube, NAMESPACE, "dbr", name, "TARGET") == target.name
    assert wide_column(kube, NAMESPACE, "dbr", name, "PHASE") == "Succeeded"
    assert wide_column(kube, NAMESPACE, "dbr", name, "POINT IN TIME") == moment

    # No password and no secret key where the operator writes: Jobs, the archiver's Deployment, both kinds' objects.
    written_by_operator = json.dumps(
        [
            kube.items("jobs", NAMESPACE),
            kube.items("deployments", NAMESPACE, f"{LABEL_BACKUP_NAME}={owner}"),
            kube.items("databasebackups", NAMESPACE),
            kube.items("databaserestores", NAMESPACE),
        ]
    )
    for secret in (source.password, target.password, SECRET_KEY):
        assert secret not in written_by_operator
