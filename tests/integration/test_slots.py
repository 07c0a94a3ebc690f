"""The replication slot of a PostgreSQL archiver, through the reconciler on a real API server: a DatabaseBackup that
archives WAL carries the finalizer that holds the slot; deleted, or no longer archiving, its archiver goes and a
Job drops the slot; the finalizer goes once that Job has ended, with an event saying whether the slot was dropped.
No Job controller runs here: the tests finish the Jobs as it would."""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import GROUP, PLURAL, VERSION
from reconciler.slot import FINALIZER
from tests.integration.test_archivers import archiver, patch_spec
from tests.integration.test_reconciler import PASSWORD, Clock, Cluster, running, until
from tests.integration.test_reconciler import cluster as cluster  # the fixture


async def finalizers(cluster: Cluster) -> list[str] | None:
    """The DatabaseBackup's finalizers; None once it is gone."""
    try:
        obj = await cluster.backup()
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return list(obj["metadata"].get("finalizers") or [])


async def held(cluster: Cluster) -> bool:
    return FINALIZER in (await finalizers(cluster) or [])


async def gone(cluster: Cluster) -> bool:
    return await finalizers(cluster) is None


async def release_job(cluster: Cluster) -> dict[str, Any] | None:
    jobs = [j for j in await cluster.jobs() if j["metadata"]["labels"].get(f"{GROUP}/run") == "release-slot"]
    return jobs[0] if jobs else None


async def archiving(cluster: Cluster) -> None:
    await cluster.create_database()
    await cluster.create_backup(schedule="0 0 1 1 *", continuous={"maxLagSeconds": 20})


async def test_a_deleted_backup_keeps_its_finalizer_until_a_job_has_dropped_the_slot(cluster: Cluster) -> None:
    await archiving(cluster)
    async with running(cluster, Clock()):
        await until(lambda: archiver(cluster))
        await until(lambda: held(cluster))
        await cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.namespace, PLURAL, "nightly")
        job = await until(lambda: release_job(cluster))
        assert await finalizers(cluster) == [FINALIZER]  # still there: the slot is not dropped yet

        async def no_archiver() -> bool:
            return await archiver(cluster) is None

        await until(no_archiver)  # the slot's reader goes first
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        args = container["args"]
        assert args[:4] == ["dbb-backup", "archive", "--engine=postgresql", "--drop-slot"]
        assert "--name=nightly" in args
        assert f"--host=example-db.{cluster.namespace}.svc" in args
        assert not any(a.startswith(("--output", "--encryption")) for a in args)
        # The server only: no backup volume, no key, and the password as the kubelet resolves it.
        assert [v["name"] for v in pod["volumes"]] == ["tmp"]
        assert PASSWORD not in json.dumps(job)
        assert job["metadata"]["ownerReferences"][0]["name"] == "nightly"

        await cluster.finish(job, succeeded=True, message=json.dumps({"status": "SlotDropped", "dropped": True}))
        await until(lambda: gone(cluster))


async def test_a_slot_that_cannot_be_dropped_does_not_hold_the_deletion_and_is_reported(cluster: Cluster) -> None:
    await archiving(cluster)
    async with running(cluster, Clock()):
        await until(lambda: held(cluster))
        await cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.namespace, PLURAL, "nightly")
        job = await until(lambda: release_job(cluster))
        said = "could not connect to the server: connection refused"
        await cluster.finish(job, succeeded=False, message=json.dumps({"status": "Failed", "message": said}))
        await until(lambda: gone(cluster))

        async def warned() -> list[str]:
            return [e for e in await cluster.events() if "SlotNotReleased" in e]

        (event,) = await until(warned)
    assert said in event
    assert "keeps WAL for it until it is dropped by hand" in event


async def test_turning_archiving_off_drops_the_slot_and_lets_the_finalizer_go(cluster: Cluster) -> None:
    await archiving(cluster)
    async with running(cluster, Clock()):
        await until(lambda: held(cluster))
        await patch_spec(cluster, {"continuous": None})
        job = await until(lambda: release_job(cluster))
        await cluster.finish(job, succeeded=True, message=json.dumps({"status": "SlotDropped", "dropped": True}))

        async def let_go() -> bool:
            return await finalizers(cluster) == []

        await until(let_go)
        assert (await cluster.backup())["spec"]["schedule"] == "0 0 1 1 *"  # the DatabaseBackup itself stays
