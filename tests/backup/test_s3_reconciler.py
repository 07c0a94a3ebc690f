"""A DatabaseBackup with `storage.s3`, end to end below the cluster: the reconciler (in process, with the local
executor playing kubelet) builds the Job with the keys by secretKeyRef, the runner streams to the real SeaweedFS
from the real PostgreSQL, and status shows the object's URL. The real cluster's run is in tests/e2e."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from common.constants import GROUP, PLURAL, VERSION
from common.kube import body, raw
from reconciler.aliases import HostAlias, alias_table
from reconciler.controller import Controller
from reconciler.executor import LocalExecutor
from reconciler.jobs import RunnerSettings
from reconciler.metrics import Metrics
from tests.backup.servers import PostgresServer
from tests.controlplane import ControlPlane
from tests.fixtures import databasebackup, governing_service, statefulset
from tests.objectstore import ACCESS_KEY, SECRET_KEY, SeaweedFS


async def until(check: Any, seconds: float = 120.0) -> Any:
    async with asyncio.timeout(seconds):
        while not (found := await check()):  # noqa: ASYNC110 - polls the API server
            await asyncio.sleep(0.2)
    return found


@contextlib.asynccontextmanager
async def reconciler(api: client.ApiClient, namespace: str, pg: PostgresServer, root: Path) -> AsyncIterator[None]:
    aliases = alias_table([HostAlias(f"example-db.{namespace}.svc", pg.host, pg.port)])
    executor = LocalExecutor(api, root, host_aliases=aliases)
    controller = Controller(api, executor, RunnerSettings(image="dbb:test"), Metrics(), namespace=namespace)
    task = asyncio.create_task(controller.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await executor.close()


async def test_a_databasebackup_to_s3_streams_there_and_status_shows_the_url(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    api = await config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    async with api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        sts = statefulset(namespace=namespace)
        del sts["status"]
        await apps.create_namespaced_stateful_set(namespace, body(sts))
        await core.create_namespaced_service(namespace, body(governing_service(sts)))
        for name, data in (
            ("example-db-credentials", {"password": pg.password, "username": pg.user}),
            ("s3-keys", {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}),
        ):
            await core.create_namespaced_secret(namespace, body({"metadata": {"name": name}, "stringData": data}))
        s3 = {
            "bucket": seaweedfs.bucket,
            "endpoint": seaweedfs.endpoint,
            "allowInsecure": True,
            "region": "us-east-1",
            "credentialsSecret": {"name": "s3-keys"},
        }
        obj = databasebackup(
            namespace=namespace, schedule="@yearly", storage={"s3": s3}, connection={"databases": ["shop"]}
        )
        obj["metadata"]["annotations"] = {"databases.test.io/backup-now": "first"}
        custom = client.CustomObjectsApi(api)
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(obj))

        async def last_backup() -> dict[str, Any] | None:
            found = await raw(
                custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, "nightly", _preload_content=False
                )
            )
            status = found.get("status") or {}
            assert status.get("phase") != "Failed", status.get("lastFailure")
            last: dict[str, Any] | None = status.get("lastBackup")
            return last if last and last.get("url") else None

        async with reconciler(api, namespace, pg, tmp_path / "backups"):
            last = await until(last_backup)
        jobs = await raw(client.BatchV1Api(api).list_namespaced_job(namespace, _preload_content=False))
    prefix = f"{namespace}/example-db/"
    assert last["url"].startswith(f"s3://{seaweedfs.bucket}/{prefix}nightly-")
    name = last["url"].rsplit("/", 1)[-1]
    assert seaweedfs.keys(prefix) == [prefix + name, prefix + name + ".json"]
    manifest = json.loads(
        seaweedfs.client().get_object(Bucket=seaweedfs.bucket, Key=prefix + name + ".json")["Body"].read()
    )
    assert (manifest["sha256"], manifest["size"], manifest["verified"]) == (last["sha256"], last["size"], True)
    assert not (tmp_path / "backups").exists() or list((tmp_path / "backups").rglob("*")) == []
    # The Job took the keys from the Secret by reference: no key in the Job, no volume for backups.
    spec = jobs["items"][0]["spec"]["template"]["spec"]
    assert SECRET_KEY not in json.dumps(jobs)
    assert ACCESS_KEY not in json.dumps(jobs)
    assert "backups" not in {v["name"] for v in spec["volumes"]}
