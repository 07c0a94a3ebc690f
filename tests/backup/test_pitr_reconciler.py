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

from common.backups.model import backup_time
from common.constants import ANNOTATION_BACKUP_NOW, ANNOTATION_VERIFY_NOW, GROUP, PLURAL, VERSION
from common.kube import MERGE_PATCH, api_client, body
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


async def annotate(api: client.ApiClient, namespace: str, annotation: str, value: str) -> None:
    patch = {"metadata": {"annotations": {annotation: value}}}
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "nightly", body(patch), **MERGE_PATCH
    )


async def test_a_check_proves_the_archive_rebuilds_the_newest_backup_from_the_one_before(
    control_plane: ControlPlane, namespace: str, binlogged: MariaDBServer, tmp_path: Path
) -> None:
    """With `spec.continuous` and a restore test, the check's scratch server (a local server in the Pod's place)
    restores the older backup, replays the archive to the newer one's binlog position, and finds every table equal
    to the newer backup restored: `status.lastVerification.archive` says so."""
    server = binlogged
    server.sql(
        "DROP DATABASE IF EXISTS journal; CREATE DATABASE journal;"
        "CREATE TABLE journal.rows (id int PRIMARY KEY, at datetime(6)); INSERT INTO journal.rows VALUES (1, NOW(6))"
    )
    root = tmp_path / "backups"
    api = await api_client(control_plane.kubeconfig)
    async with api:
        await setup(api, namespace, server, verify={"restoreTest": True})
        async with reconciler(api, namespace, server, root):  # type: ignore[arg-type]

            async def backed_up(previous: str | None) -> str | None:
                last = (await status_of(api, namespace)).get("lastBackup") or {}
                file = last.get("file")
                return str(file) if file and file != previous else None

            first = await until(lambda: backed_up(None), 180)
            server.sql(
                "INSERT INTO journal.rows VALUES (2, NOW(6)), (3, NOW(6)); UPDATE journal.rows SET id = 10 WHERE id = 1"
            )
            await annotate(api, namespace, ANNOTATION_BACKUP_NOW, "second")
            second = await until(lambda: backed_up(first), 180)
            taken = parse_time(backup_time(second))  # the second backup's start, from its name
            assert taken is not None

            async def archived_past_it() -> bool:
                continuous = (await status_of(api, namespace)).get("continuous") or {}
                reach = parse_time(continuous.get("recoverableUntil"))
                # Past the backup's end (a dump of this database takes well under the two seconds given to it).
                return reach is not None and reach > taken + timedelta(seconds=2)

            await until(archived_past_it, 180)  # the archive holds the binlog up to the second backup's position
            await annotate(api, namespace, ANNOTATION_VERIFY_NOW, "prove")

            async def verified() -> dict[str, Any] | None:
                found: dict[str, Any] | None = (await status_of(api, namespace)).get("lastVerification")
                return found

            verification = await until(verified, 300)

    assert verification["result"] == "Passed", verification
    proof = verification["archive"]
    assert proof["proven"] is True, proof
    assert (Path(proof["from"]).name, Path(proof["to"]).name) == (Path(first).name, Path(second).name)
    assert proof["tables"] == 1
    assert parse_time(proof["until"]) is not None
    assert server.sql("SHOW DATABASES LIKE 'journal\\_dbb\\_proof'") == ""  # the proof ran on the scratch server
