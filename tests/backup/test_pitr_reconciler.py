"""Point-in-time recovery through the operator, below the cluster: both controllers in process on the real API
server (the local executor playing kubelet for the backup Jobs, the archiver's Pod and the restore Job), a real
MariaDB with binary logging, backups and the binlog archive in a folder.

A DatabaseBackup with `spec.continuous` backs up once and gets its archiver; `status.continuous` reports the
archive's bounds from the archiver's own answer; rows are written around a whole second; a DatabaseRestore with
`pointInTime` at that second, judged against those bounds, restores every row written before it and none after.
Backups and archive in a folder, and in a real S3 bucket (SeaweedFS) through a BackupStore, encrypted."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from common.constants import ANNOTATION_BACKUP_NOW, GROUP, PLURAL, VERSION
from common.kube import api_client, body
from common.schedule import parse_time, rfc3339
from hack.harness.controlplane import ControlPlane
from hack.harness.databases import MariaDBServer
from hack.harness.objectstore import ACCESS_KEY, SECRET_KEY, SeaweedFS
from tests.backup.test_pitr_mariadb import binlogged as binlogged  # the fixture
from tests.backup.test_pitr_mariadb import written_rows
from tests.backup.test_restore_reconciler import create_restore, finished, restorer
from tests.backup.test_s3_reconciler import approve_store, reconciler, status_of, until
from tests.fixtures import databasebackup, governing_service, statefulset

MAX_LAG = 10


async def setup(api: client.ApiClient, namespace: str, server: MariaDBServer, **spec: Any) -> None:
    """A MariaDB StatefulSet, its Service and credentials, and DatabaseBackup `nightly` of `journal`, archiving
    continuously, asked to back up now; `spec` adds to it."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    sts = statefulset(
        namespace=namespace,
        image="mariadb:11.8",
        env=[{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        ports=[{"name": "mysql", "containerPort": 3306}],
    )
    del sts["status"]
    await apps.create_namespaced_stateful_set(namespace, body(sts))
    await core.create_namespaced_service(namespace, body(governing_service(sts)))
    data = {"password": server.password, "username": server.user}
    await core.create_namespaced_secret(namespace, body({"metadata": {"name": "db"}, "stringData": data}))
    obj = databasebackup(
        namespace=namespace,
        schedule="@yearly",
        engine="MySQL",
        connection={"databases": ["journal"], "credentialsSecret": {"name": "db", "usernameKey": "username"}},
        continuous={"maxLagSeconds": MAX_LAG},
        **spec,
    )
    obj["metadata"]["annotations"] = {ANNOTATION_BACKUP_NOW: "first"}
    await client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(obj))


async def in_a_bucket(api: client.ApiClient, namespace: str, store: SeaweedFS) -> dict[str, Any]:
    """The S3 keys and an encryption key as Secrets, and a BackupStore open to the namespace: the DatabaseBackup's
    spec for storing there, encrypted."""
    core = client.CoreV1Api(api)
    secrets = {
        "s3-keys": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
        "backup-keys": {"2026-12": os.urandom(32).hex()},
    }
    for name, data in secrets.items():
        await core.create_namespaced_secret(namespace, body({"metadata": {"name": name}, "stringData": data}))
    await approve_store(api, namespace, store)
    return {
        "storage": {"s3": {"store": namespace}},
        "encryption": {"keySecret": {"name": "backup-keys", "key": "2026-12"}},
    }


@pytest.mark.parametrize("where", ["folder", "bucket"])
async def test_a_databaserestore_reaches_a_second_between_two_writes(
    control_plane: ControlPlane,
    namespace: str,
    binlogged: MariaDBServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    where: str,
) -> None:
    server = binlogged
    server.sql("SET GLOBAL time_zone = '+00:00'")
    server.sql(
        "DROP DATABASE IF EXISTS journal; DROP DATABASE IF EXISTS journal_then;"
        "CREATE DATABASE journal; CREATE TABLE journal.rows (id int PRIMARY KEY, at datetime(6))"
    )
    ids = itertools.count(1)

    def write(count: int) -> list[int]:
        done = []
        for _ in range(count):
            done.append(next(ids))
            server.sql(f"INSERT INTO journal.rows VALUES ({done[-1]}, NOW(6))")
            time.sleep(0.25)  # spreads the writes over a few seconds
        return done

    write(3)
    root = tmp_path / "backups"
    api = await api_client(control_plane.kubeconfig)
    async with api:
        spec = await in_a_bucket(api, namespace, request.getfixturevalue("seaweedfs")) if where == "bucket" else {}
        await setup(api, namespace, server, **spec)
        async with reconciler(api, namespace, server, root), restorer(api, namespace, server, root):  # type: ignore[arg-type]

            async def backed_up() -> dict[str, Any] | None:
                status = await status_of(api, namespace)
                return status if status.get("lastBackup") else None

            backup = (await until(backed_up))["lastBackup"]["file"]
            before, after = await asyncio.to_thread(write, 6), await asyncio.to_thread(write, 6)
            written = written_rows(server, "journal")
            point = (written[before[-1]] + timedelta(seconds=1)).replace(microsecond=0)
            assert written[after[-1]] >= point
            last = max(written.values()).replace(microsecond=0)

            async def archived_past_the_writes() -> dict[str, Any] | None:
                continuous = (await status_of(api, namespace)).get("continuous") or {}
                until_ = parse_time(continuous.get("recoverableUntil"))
                return continuous if until_ is not None and until_ >= last else None

            continuous = await until(archived_past_the_writes, 180)
            assert continuous["archiver"] == "nightly-archiver"
            assert continuous["ready"] is True
            assert "message" not in continuous  # "has not answered yet" went when it answered
            assert continuous["recoverableFrom"] <= rfc3339(point)
            assert 0 <= continuous["lagSeconds"] <= MAX_LAG + 5

            moment = rfc3339(point)
            mapping = {"databases": [{"from": "journal", "to": "journal_then"}]}
            await create_restore(api, namespace, "then", pointInTime=moment, target=mapping)
            restored = await finished(api, namespace, "then")

    assert restored["phase"] == "Succeeded", restored
    assert restored["file"] == backup
    assert backup.startswith("s3://" if where == "bucket" else str(root))
    assert restored["replayedUntil"] == moment
    expected = sorted(i for i, at in written.items() if at < point)
    assert sorted(written_rows(server, "journal_then")) == expected
    assert before[-1] in expected
    assert after[-1] not in expected
    server.sql("DROP DATABASE journal_then")
