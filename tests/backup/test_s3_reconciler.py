"""A DatabaseBackup with `storage.s3`, end to end below the cluster: the reconciler (in process, with the local
executor playing kubelet) builds the Job with the keys by secretKeyRef, the runner streams to the real SeaweedFS
from the real PostgreSQL, and status shows the object's URL. The real cluster's run is in tests/e2e."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from certs.pki import issue, new_ca
from common.constants import ANNOTATION_BACKUP_NOW, GROUP, PLURAL, VERSION
from common.kube import MERGE_PATCH, api_client, body, raw
from hack.harness.controlplane import ControlPlane
from hack.harness.databases import PostgresServer
from hack.harness.objectstore import ACCESS_KEY, SECRET_KEY, SeaweedFS
from hack.sandbox.aliases import HostAlias, alias_table
from hack.sandbox.executor import LocalExecutor
from reconciler.backup_controller import Controller
from reconciler.jobs import RunnerSettings
from reconciler.metrics import Metrics
from tests.backup.cli import dbb, wait_for
from tests.backup.conftest import KEY
from tests.backup.test_failures import dump_is_waiting, table_locked
from tests.fixtures import databasebackup, governing_service, statefulset


async def until(check: Any, seconds: float = 120.0) -> Any:
    async with asyncio.timeout(seconds):
        while not (found := await check()):  # noqa: ASYNC110 - polls the API server
            await asyncio.sleep(0.2)
    return found


@contextlib.asynccontextmanager
async def reconciler(
    api: client.ApiClient,
    namespace: str,
    pg: PostgresServer,
    root: Path,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AsyncIterator[None]:
    """The reconciler in process, its local executor running Jobs against `pg` with backups under `root`."""
    aliases = alias_table([HostAlias(f"example-db.{namespace}.svc", pg.host, pg.port)])
    executor = LocalExecutor(api, root, host_aliases=aliases)
    runner = RunnerSettings(image="dbb:test")
    controller = Controller(api, executor, runner, Metrics(), namespace=namespace, clock=clock)
    task = asyncio.create_task(controller.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await executor.close()


async def approve_store(api: client.ApiClient, namespace: str, store: SeaweedFS) -> None:
    """The cluster administrators' BackupStore for `store`, keys from Secret `s3-keys` (cluster-scoped: one per
    test, named after its namespace)."""
    s3: dict[str, Any] = {
        "bucket": store.bucket,
        "endpoint": store.endpoint,
        "allowInsecure": store.ca is None,
        "region": "us-east-1",
        "credentialsSecret": {"name": "s3-keys"},
    }
    if store.ca is not None:
        s3["caBundle"] = store.ca.read_bytes().decode()
    approved = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupStore", "metadata": {"name": namespace}}
    custom = client.CustomObjectsApi(api)
    await custom.create_cluster_custom_object(GROUP, VERSION, "backupstores", body({**approved, "spec": {"s3": s3}}))


async def create(
    api: client.ApiClient, namespace: str, pg: PostgresServer, store: SeaweedFS, database: str, **spec: Any
) -> None:
    """The database's StatefulSet and Service, its credentials, the S3 keys, and DatabaseBackup `nightly` to the
    store (@yearly, with a backup-now annotation to run once at once); `spec` adds to the DatabaseBackup's."""
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
    await approve_store(api, namespace, store)
    obj = databasebackup(
        namespace=namespace,
        schedule="@yearly",
        storage={"s3": {"store": namespace}},
        connection={"databases": [database]},
        **spec,
    )
    obj["metadata"]["annotations"] = {ANNOTATION_BACKUP_NOW: "first"}
    await client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(obj))


async def status_of(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    found = await raw(
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "nightly", _preload_content=False)
    )
    status: dict[str, Any] = found.get("status") or {}
    return status


async def succeeded(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """Status, once a backup succeeded; a failure fails the test with its reason."""

    async def done() -> dict[str, Any] | None:
        status = await status_of(api, namespace)
        assert status.get("phase") != "Failed", status.get("lastFailure")
        return status if status.get("phase") == "Succeeded" and status.get("lastBackup") else None

    found: dict[str, Any] = await until(done, 300)
    return found


async def test_a_databasebackup_to_s3_streams_there_and_status_shows_the_url(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    api = await api_client(control_plane.kubeconfig)
    async with api:
        await create(api, namespace, pg, seaweedfs, "shop")

        async def last_backup() -> dict[str, Any] | None:
            status = await status_of(api, namespace)
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


async def test_the_store_stopped_mid_upload_fails_the_run_clearly_and_the_next_one_succeeds(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, tmp_path: Path
) -> None:
    pg.sql("CREATE DATABASE s3stop")
    pg.sql(
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g; CREATE TABLE zz_locked (id int);", "s3stop"
    )
    prefix = f"{namespace}/example-db/"
    api = await api_client(control_plane.kubeconfig)
    with SeaweedFS.start(tmp_path / "store") as store, contextlib.ExitStack() as lock:
        async with api, reconciler(api, namespace, pg, tmp_path / "backups"):
            # The dump waits on a locked table, its upload open: then the store goes away.
            await asyncio.to_thread(lock.enter_context, table_locked(pg, "s3stop", "zz_locked"))
            await create(api, namespace, pg, store, "s3stop")
            await asyncio.to_thread(
                wait_for, lambda: store.uploads(prefix) != [] and dump_is_waiting(pg), "the run to be mid-upload", 120
            )
            store.kill()
            await asyncio.to_thread(lock.close)

            async def failed() -> dict[str, Any] | None:
                status = await status_of(api, namespace)
                return status if status.get("phase") == "Failed" else None

            status = await until(failed, 300)
            failure = status["lastFailure"]
            assert failure["reason"] == "StorageError", failure
            assert f"s3://{store.bucket}/{prefix}nightly-" in failure["message"]
            assert f"at {store.endpoint}" in failure["message"]
            assert SECRET_KEY not in json.dumps(status)
            # The store is back; the next run (a slot, here a backup-now) succeeds and leaves no upload behind.
            await asyncio.to_thread(store.restart)
            custom = client.CustomObjectsApi(api)
            patch = {"metadata": {"annotations": {ANNOTATION_BACKUP_NOW: "second"}}}
            await custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "nightly", patch, **MERGE_PATCH
            )

            async def succeeded() -> dict[str, Any] | None:
                status = await status_of(api, namespace)
                return status if status.get("phase") == "Succeeded" and status.get("lastBackup") else None

            status = await until(succeeded, 300)
        name = status["lastBackup"]["url"].rsplit("/", 1)[-1]
        assert store.keys(prefix) == [prefix + name, prefix + name + ".json"]
        assert store.uploads(prefix) == [], "the failed run's upload was aborted"


async def test_an_https_store_with_a_private_ca_and_an_encrypted_backup(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, tmp_path: Path, key_file: Path
) -> None:
    """The CA (a ConfigMap) and the encryption key (a Secret) reach the run as volumes, as the kubelet mounts them."""
    ca = new_ca("dbb-test-s3-ca")
    server = issue(ca, "s3", hosts=["127.0.0.1"])
    api = await api_client(control_plane.kubeconfig)
    tls = (server.cert_pem, server.key_pem, ca.cert_pem)
    secret = {"metadata": {"name": "backup-key"}, "stringData": {"key": KEY}}
    with SeaweedFS.start(tmp_path / "store", tls=tls) as store:
        async with api, reconciler(api, namespace, pg, tmp_path / "backups"):
            await client.CoreV1Api(api).create_namespaced_secret(namespace, body(secret))
            await create(api, namespace, pg, store, "shop", encryption={"keySecret": {"name": "backup-key"}})
            status = await succeeded(api, namespace)
        url = status["lastBackup"]["url"]
        assert url.endswith(".enc")
        # What `kubectl dbb list` reads: the stored backups, with the key each needs, and no credentials.
        [stored] = status["backups"]
        assert stored["file"] == url
        assert (stored["encrypted"], stored["keyId"], stored["size"]) == (True, "key", status["lastBackup"]["size"])
        stamp = url.rsplit("-", 1)[1].split(".", 1)[0]
        assert stored["time"] == datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%dT%H:%M:%SZ")
        verified = dbb("verify", url, "--key-file", str(key_file), env=store.env)
        assert verified.code == 0, verified.stderr
        assert verified.result["tables"] == {"shop": 4}
        # The store speaks only HTTPS, with a certificate no public CA signed: without the CA nothing gets through.
        system_cas = {k: v for k, v in store.env.items() if k != "AWS_CA_BUNDLE"}
        refused = dbb("verify", url, "--key-file", str(key_file), env=system_cas)
        assert refused.code == 1
        assert refused.result["reason"] == "TlsFailed"
        assert "certificate verify failed" in refused.result["message"]
        empty = dbb("verify", url, "--key-file", str(key_file), env={**store.env, "AWS_CA_BUNDLE": ""})
        assert (empty.code, empty.result["reason"]) == (1, "InvalidArguments")
        assert "AWS_CA_BUNDLE" in empty.result["message"]
