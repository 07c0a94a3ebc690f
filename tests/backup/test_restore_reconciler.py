"""DatabaseRestore end to end below the cluster: both controllers in process (the local executor playing kubelet) on
the real API server, the real PostgreSQL, backups in a folder. A DatabaseBackup backs up `shop`; a DatabaseRestore
restores that backup into a second database, whose content is then identical to the source's; a second
DatabaseRestore onto that now existing database, without replace, fails with the runner's TargetExists and changes
nothing; and a finished restore is never run again."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from common.constants import (
    API_VERSION,
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    MANAGED_BY,
    RESTORE_KIND,
    RESTORE_PLURAL,
    RUN_RESTORE,
    VERSION,
)
from common.informer import Informer
from common.kube import api_client, body, raw
from hack.harness.content import pg_fingerprint
from hack.harness.controlplane import ControlPlane
from hack.harness.databases import PostgresServer
from hack.sandbox.aliases import HostAlias, alias_table
from hack.sandbox.executor import LocalExecutor
from reconciler.jobs import RunnerSettings
from reconciler.metrics import Metrics
from reconciler.restore_controller import RestoreController
from tests.backup.test_s3_reconciler import reconciler, status_of, until
from tests.backup.test_verification_reconciler import setup


@contextlib.asynccontextmanager
async def restorer(
    api: client.ApiClient, namespace: str, pg: PostgresServer, root: Path
) -> AsyncIterator[RestoreController]:
    """The DatabaseRestore controller in process, its local executor running Jobs against `pg`, backups in `root`."""
    aliases = alias_table([HostAlias(f"example-db.{namespace}.svc", pg.host, pg.port)])
    executor = LocalExecutor(api, root, host_aliases=aliases)
    controller = RestoreController(api, executor, RunnerSettings(image="dbb:test"), Metrics(), namespace=namespace)
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await executor.close()


@contextlib.asynccontextmanager
async def _dropped(server: PostgresServer, database: str) -> AsyncIterator[None]:
    """`database` gone from `server` afterwards: the empty server is shared by the session, and must stay empty."""
    try:
        yield
    finally:
        server.sql(f"DROP DATABASE IF EXISTS {database}")


async def create_restore(api: client.ApiClient, namespace: str, name: str, **spec: Any) -> None:
    obj = {
        "apiVersion": API_VERSION,
        "kind": RESTORE_KIND,
        "metadata": {"name": name},
        "spec": {"source": {"databaseBackup": "nightly"}, **spec},
    }
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, RESTORE_PLURAL, body(obj)
    )


async def finished(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)

    async def done() -> dict[str, Any] | None:
        found = await raw(
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, RESTORE_PLURAL, name, _preload_content=False)
        )
        status: dict[str, Any] = found.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    result: dict[str, Any] = await until(done, 300)
    return result


async def test_a_databaserestore_restores_into_a_second_database_identical_to_the_source_and_runs_once(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    pg.sql("DROP DATABASE IF EXISTS shop_restored")
    api = await api_client(control_plane.kubeconfig)
    async with api:
        await setup(api, namespace, pg)
        async with reconciler(api, namespace, pg, root):
            async with restorer(api, namespace, pg, root):
                await restore_and_refuse(api, namespace, pg)
            # Run once: after a restart (a controller whose caches know nothing of the first one's work) has looked
            # at both finished restores and settled, each still has the one Job it ever had.
            async with restorer(api, namespace, pg, root) as fresh:
                await until(lambda: settled(api, namespace, fresh))
            restores, jobs = await restore_state(api, namespace)
    owners = Counter(r["uid"] for j in jobs for r in j["metadata"]["ownerReferences"] if r.get("controller"))
    assert owners == {r["metadata"]["uid"]: 1 for r in restores}
    assert (len(restores), len(jobs)) == (2, 2)


async def restore_and_refuse(api: client.ApiClient, namespace: str, pg: PostgresServer) -> None:
    """A restore into a copy that succeeds, then one onto that copy that is refused, with their Events."""

    async def backed_up() -> dict[str, Any] | None:
        last: dict[str, Any] | None = (await status_of(api, namespace)).get("lastBackup")
        return last

    backup = await until(backed_up)
    mapping = {"databases": [{"from": "shop", "to": "shop_restored"}]}
    await create_restore(
        api,
        namespace,
        "to-a-copy",
        source={"databaseBackup": "nightly", "file": backup["file"]},
        target=mapping,
    )
    status = await finished(api, namespace, "to-a-copy")
    assert status["phase"] == "Succeeded", status
    assert status["file"] == backup["file"]
    assert status["sha256"] == backup["sha256"]
    assert status["databases"] == [{"source": "shop", "target": "shop_restored", "result": "Restored"}]
    assert status["startTime"] <= status["completionTime"]
    assert status["restoreSeconds"] > 0  # kept by the API server: the schema has the field
    assert pg_fingerprint(pg, "shop_restored") == pg_fingerprint(pg, "shop")

    # The copy exists now: without replace the restore refuses it, whole, and the copy is as it was.
    pg.sql("CREATE TABLE marker (id int); INSERT INTO marker VALUES (42);", "shop_restored")
    before = pg_fingerprint(pg, "shop_restored")
    await create_restore(
        api,
        namespace,
        "onto-the-copy",
        source={"databaseBackup": "nightly", "file": backup["file"]},
        target=mapping,
    )
    refused = await finished(api, namespace, "onto-the-copy")
    assert (refused["phase"], refused["reason"]) == ("Failed", "TargetExists"), refused
    assert "shop_restored" in refused["message"]
    assert pg_fingerprint(pg, "shop_restored") == before

    async def events() -> list[tuple[str, str]] | None:
        found = await raw(client.CoreV1Api(api).list_namespaced_event(namespace, _preload_content=False))
        mine = [
            (e["involvedObject"]["name"], e["reason"])
            for e in found["items"]
            if e["involvedObject"]["kind"] == RESTORE_KIND
        ]
        return mine if len(mine) >= 4 else None

    assert sorted(await until(events)) == [
        ("onto-the-copy", "RestoreFailed"),
        ("onto-the-copy", "RestoreStarted"),
        ("to-a-copy", "RestoreStarted"),
        ("to-a-copy", "Restored"),
    ]


async def restore_state(api: client.ApiClient, namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every DatabaseRestore, and every restore Job (as the controller selects them) of `namespace`."""
    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    restores = await raw(
        custom.list_namespaced_custom_object(GROUP, VERSION, namespace, RESTORE_PLURAL, _preload_content=False)
    )
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_RUN}={RUN_RESTORE}"
    jobs = await raw(batch.list_namespaced_job(namespace, label_selector=selector, _preload_content=False))
    return list(restores["items"]), list(jobs["items"])


async def settled(api: client.ApiClient, namespace: str, controller: RestoreController) -> bool:
    """The controller's watches have delivered the current version of every DatabaseRestore and restore Job, its
    queue is idle (what those events queued has been handled), and nothing was written meanwhile: from here it acts
    only when something changes."""
    restores, jobs = await restore_state(api, namespace)
    if not (_delivered(controller.restores, restores) and _delivered(controller.jobs, jobs)):
        return False
    if not controller.queue.idle:
        return False
    return _versions(*await restore_state(api, namespace)) == _versions(restores, jobs)


def _delivered(informer: Informer, objects: list[dict[str, Any]]) -> bool:
    """Whether the informer's list or watch has reached these objects' versions (etcd revisions: numbers)."""
    reached = int(informer.resource_version or 0)
    return all(int(o["metadata"]["resourceVersion"]) <= reached for o in objects)


def _versions(*kinds: list[dict[str, Any]]) -> list[set[tuple[str, str]]]:
    return [{(o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in objects} for objects in kinds]


async def test_a_databaserestore_into_an_external_server_uses_its_host_and_its_secret(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, pg_empty: PostgresServer, tmp_path: Path
) -> None:
    """A rebuilt server that is no StatefulSet: reached at target.external's host and port, with the password of
    target.credentialsSecret (the empty server's own, not the source's)."""
    root = tmp_path / "backups"
    pg_empty.sql("DROP DATABASE IF EXISTS shop")
    api = await api_client(control_plane.kubeconfig)
    async with api, _dropped(pg_empty, "shop"):
        await setup(api, namespace, pg)
        secret = {
            "metadata": {"name": "rebuilt-credentials"},
            "stringData": {"username": pg_empty.user, "password": pg_empty.password},
        }
        await client.CoreV1Api(api).create_namespaced_secret(namespace, body(secret))
        async with reconciler(api, namespace, pg, root), restorer(api, namespace, pg, root):

            async def backed_up() -> dict[str, Any] | None:
                last: dict[str, Any] | None = (await status_of(api, namespace)).get("lastBackup")
                return last

            backup = await until(backed_up)
            target = {
                "external": {"host": pg_empty.host, "port": pg_empty.port},
                "credentialsSecret": {"name": "rebuilt-credentials"},
            }
            # An address outside the namespace's Services gets the password only where the administrators allow
            # it: the reconciler refuses before any Job, as the webhook would have.
            await create_restore(api, namespace, "unlabelled", target=target)
            unlabelled = await finished(api, namespace, "unlabelled")
            assert (unlabelled["phase"], unlabelled["reason"]) == ("Failed", "Refused"), unlabelled
            assert unlabelled["message"].startswith(f'spec.target.external.host: "{pg_empty.host}" is not a Service')
            assert "job" not in unlabelled
            control_plane.kubectl("label", "namespace", namespace, "databases.test.io/allow-external-hosts=true")
            # The rebuilt server lacks the roles that own the source's tables: the restore changes nothing, and
            # says what to do.
            await create_restore(api, namespace, "with-owners", target=target)
            refused = await finished(api, namespace, "with-owners")
            assert refused["phase"] == "Failed", refused
            assert 'role "app_reader" does not exist' in refused["message"]
            assert "set spec.noOwner: true" in refused["message"]
            assert "shop" not in pg_empty.databases()

            await create_restore(api, namespace, "to-the-rebuilt-server", target=target, noOwner=True)
            status = await finished(api, namespace, "to-the-rebuilt-server")
            assert status["phase"] == "Succeeded", status
            assert status["file"] == backup["file"]  # no source.file: the newest backup
            assert status["target"] == f"{pg_empty.host}:{pg_empty.port}"
            assert status["databases"] == [{"source": "shop", "target": "shop", "result": "Restored"}]
            # Every table, row and sequence as the source's; only the grants to the missing role are left out.
            source = pg_fingerprint(pg, "shop")
            assert pg_fingerprint(pg_empty, "shop") == {k: v for k, v in source.items() if not k.startswith("grant ")}
            assert any(k.startswith("grant ") for k in source)
