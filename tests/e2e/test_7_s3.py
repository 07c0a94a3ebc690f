"""Backups to S3 on a real cluster: SeaweedFS runs as a Pod behind a Service, and a DatabaseBackup per engine with
`spec.storage.s3` backs up to its bucket through cluster DNS. The object named by `status.lastBackup.url` is there,
`dbb-backup list` in another Pod shows it verified with its owner, a second run with keepLast 1 leaves only the new
backup in the bucket, and the secret key appears nowhere the operator writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from common.constants import LABEL_BACKUP_NAME
from tests.e2e import databases, objectstore
from tests.e2e.conftest import SYSTEM
from tests.e2e.kube import Kube, wait_for

NAMESPACE = "e2e-s3"
ENGINES = [("postgresql", "17"), ("mariadb", "11.8")]
SECRET_KEY = "e2e-s3-secret-key-sentinel-7d41c0"  # the test store's own key, looked for everywhere


@pytest.fixture(scope="module")
def world(kube: Kube, deployed: str) -> Iterator[tuple[objectstore.SeaweedFS, dict[str, databases.Database]]]:
    """The store and one seeded server per engine, all started at once."""
    with databases.namespace(kube, NAMESPACE):
        store = objectstore.SeaweedFS(NAMESPACE, "E2EACCESSKEY", SECRET_KEY)
        objectstore.deploy(kube, store)
        servers = {
            engine: databases.Database(engine, version, f"{engine}-s3-db", NAMESPACE, f"{engine}-s3-password")
            for engine, version in ENGINES
        }
        for db in servers.values():
            databases.deploy(kube, db)
        objectstore.wait_ready(kube, store)
        for db in servers.values():
            databases.wait_ready(kube, db)
            databases.seed(kube, db, rows=200, orders=500)
        try:
            yield store, servers
        finally:
            objectstore.remove(kube, store)


def backup_now(
    kube: Kube, store: objectstore.SeaweedFS, db: databases.Database, owner: str, request: str
) -> dict[str, Any]:
    """Applies `owner` (database `app` to S3, keepLast 1) with backup-now `request`; returns its status once a new
    backup shows. One database: one object per backup."""
    before = kube.get("dbb", owner, NAMESPACE).get("status", {}) if kube.exists("dbb", owner, NAMESPACE) else {}
    previous = before.get("lastBackup", {}).get("url")
    kube.apply(
        databases.databasebackup(
            owner,
            db,
            "0 0 1 1 *",
            backup_now=request,
            connection={"databases": ["app"]},
            storage=store.storage(),
            retention={"keepLast": 1},
        )
    )

    def succeeded() -> dict[str, Any] | None:
        status: dict[str, Any] = kube.get("dbb", owner, NAMESPACE).get("status", {})
        assert status.get("phase") != "Failed", status.get("lastFailure")
        url = status.get("lastBackup", {}).get("url")
        return status if status.get("phase") == "Succeeded" and url and url != previous else None

    return wait_for(f"{owner}'s backup {request} to S3", succeeded, 300)


def check_job(kube: Kube, store: objectstore.SeaweedFS, owner: str, prefix: str) -> None:
    """The Job writes to the bucket, not to a PVC, and takes the key pair from the Secret by reference."""
    jobs = kube.items("jobs", NAMESPACE, f"{LABEL_BACKUP_NAME}={owner}")
    assert jobs
    for job in jobs:
        spec = job["spec"]["template"]["spec"]
        assert not [v for v in spec.get("volumes", []) if "persistentVolumeClaim" in v], spec["volumes"]
        container = spec["containers"][0]
        assert f"--output-url=s3://{store.bucket}/{prefix}" in container["args"], container["args"]
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_ENDPOINT_URL"]["value"] == store.endpoint
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": store.credentials_secret, "key": name}


def assert_nowhere(kube: Kube, sentinel: str, store: objectstore.SeaweedFS) -> None:
    """Nowhere the operator writes: DatabaseBackups and their status, Events, Jobs, every Pod's spec, and the logs of
    every Pod in this namespace (the backup Jobs', the databases') and the operator's. The store's own log is left
    out: the store holds the key in its configuration, and what it logs is its business."""
    assert sentinel not in json.dumps(kube.items("databasebackups", NAMESPACE))
    assert sentinel not in json.dumps(kube.items("events", NAMESPACE))
    assert sentinel not in json.dumps(kube.items("jobs", NAMESPACE))
    for namespace in (NAMESPACE, SYSTEM):
        for pod in kube.items("pods", namespace):
            assert sentinel not in json.dumps(pod["spec"])
            if pod["metadata"].get("labels", {}).get("app.kubernetes.io/name") == store.name:
                continue
            for container in pod["spec"]["containers"]:
                assert sentinel not in kube.logs(namespace, pod["metadata"]["name"], container=container["name"])


@pytest.mark.parametrize("engine", [engine for engine, _ in ENGINES])
def test_a_backup_to_s3_is_listed_verified_and_pruned_on_the_bucket(
    kube: Kube, world: tuple[objectstore.SeaweedFS, dict[str, databases.Database]], engine: str
) -> None:
    store, servers = world
    db = servers[engine]
    owner = f"{engine}-to-s3"
    prefix = f"{NAMESPACE}/{db.name}"  # the default: <namespace>/<databaseName>

    first = backup_now(kube, store, db, owner, "1")
    url = first["lastBackup"]["url"]
    assert url.startswith(f"s3://{store.bucket}/{prefix}/{owner}-"), url
    assert first["lastBackup"]["file"] == url
    assert first["inProgress"] is False
    check_job(kube, store, owner, prefix)
    assert "BackupSucceeded" in {e["reason"] for e in kube.events(NAMESPACE, owner)}

    # Another Pod lists the prefix: the backup is there, whole, verified, and its manifest names its owner.
    listed, output = objectstore.dbb_backup(kube, store, "list", f"s3://{store.bucket}/{prefix}")
    assert listed["status"] == "Listed", listed
    entries = {e["file"]: e for e in listed["backups"]}
    assert url in entries, listed
    entry = entries[url]
    assert (entry["verified"], entry["present"], entry["owner"]) == (True, True, f"{NAMESPACE}/{owner}"), entry
    assert (entry["size"], entry["sha256"]) == (first["lastBackup"]["size"], first["lastBackup"]["sha256"])
    assert SECRET_KEY not in output

    # A second run with keepLast 1: retention removes the first backup and its manifest from the bucket.
    second = backup_now(kube, store, db, owner, "2")
    newer = second["lastBackup"]["url"]
    key = newer.removeprefix(f"s3://{store.bucket}/")
    assert objectstore.keys(kube, store, f"{prefix}/") == [key, key + ".json"]
    verified, output = objectstore.dbb_backup(kube, store, "verify", newer)
    assert verified["status"] == "Verified", verified
    assert SECRET_KEY not in output

    assert_nowhere(kube, SECRET_KEY, store)
