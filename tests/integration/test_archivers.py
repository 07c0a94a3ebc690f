"""Continuous archiving through the reconciler on a real API server: a DatabaseBackup with `spec.continuous` gets
its archiver Deployment (accepted by the API server's own validation), a changed spec replaces its template, and
turning it off removes the Deployment and `status.continuous`. No kubelet runs here, so no archiver answers: status
says so, and is not ready."""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import GROUP, PLURAL, VERSION
from common.kube import MERGE_PATCH, body, raw
from tests.fixtures import governing_service, statefulset
from tests.integration.test_reconciler import PASSWORD, Clock, Cluster, running, until
from tests.integration.test_reconciler import cluster as cluster  # the fixture


async def mariadb(cluster: Cluster) -> None:
    sts = statefulset(
        namespace=cluster.namespace,
        image="mariadb:11.8",
        env=[{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        ports=[{"name": "mysql", "containerPort": 3306}],
    )
    del sts["status"]
    await client.AppsV1Api(cluster.api).create_namespaced_stateful_set(cluster.namespace, body(sts))
    await cluster.core.create_namespaced_service(cluster.namespace, body(governing_service(sts)))
    await cluster.core.create_namespaced_secret(
        cluster.namespace, body({"metadata": {"name": "db"}, "stringData": {"password": PASSWORD}})
    )


async def archiver(cluster: Cluster) -> dict[str, Any] | None:
    try:
        return await raw(
            client.AppsV1Api(cluster.api).read_namespaced_deployment(
                "nightly-archiver", cluster.namespace, _preload_content=False
            )
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


async def patch_spec(cluster: Cluster, spec: dict[str, Any]) -> None:
    await cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, PLURAL, "nightly", body({"spec": spec}), **MERGE_PATCH
    )


async def test_an_archiver_follows_spec_continuous_from_creation_to_removal(cluster: Cluster) -> None:
    await mariadb(cluster)
    obj = await cluster.create_backup(schedule="0 0 1 1 *", continuous={"maxLagSeconds": 20})
    async with running(cluster, Clock()):
        deployment = await until(lambda: archiver(cluster))
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "--max-lag=20" in container["args"]
        assert f"--host=example-db.{cluster.namespace}.svc" in container["args"]
        assert PASSWORD not in str(deployment)

        async def reported() -> dict[str, Any] | None:
            return ((await cluster.backup()).get("status") or {}).get("continuous")

        continuous = await until(reported)
        assert continuous == {
            "archiver": "nightly-archiver",
            "ready": False,
            "message": "the archiver has not answered yet",
        }

        await patch_spec(cluster, {"continuous": {"maxLagSeconds": 40}})

        async def replaced() -> bool:
            found = await archiver(cluster)
            return found is not None and "--max-lag=40" in found["spec"]["template"]["spec"]["containers"][0]["args"]

        await until(replaced)

        await patch_spec(cluster, {"continuous": None})

        async def removed() -> bool:
            return await archiver(cluster) is None and await reported() is None

        await until(removed)


async def test_a_deleted_databasebackup_s_archiver_goes_where_no_garbage_collector_runs(cluster: Cluster) -> None:
    await mariadb(cluster)
    await cluster.create_backup(schedule="0 0 1 1 *", continuous={"maxLagSeconds": 20})
    async with running(cluster, Clock()):
        await until(lambda: archiver(cluster))
        await cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.namespace, PLURAL, "nightly")

        async def gone() -> bool:
            return await archiver(cluster) is None

        await until(gone)  # this API server runs no garbage collector: the reconciler removed it


async def test_an_archiver_that_keeps_failing_is_reported_with_the_runners_reason(cluster: Cluster) -> None:
    """What the kubelet would show of an archiver whose every run ends at once: its Pod, running (restarting), its
    last termination message the runner's failure line."""
    await mariadb(cluster)
    await cluster.create_backup(schedule="0 0 1 1 *", continuous={})
    async with running(cluster, Clock()):
        deployment = await until(lambda: archiver(cluster))
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pod = {
            "metadata": {"name": "nightly-archiver-5d8f7-x2x9q", "labels": labels},
            "spec": {"containers": [{"name": "archive", "image": "x"}]},
        }
        await cluster.core.create_namespaced_pod(cluster.namespace, body(pod))
        said = "binary logging is off on the server: set log_bin (log-bin=mysql-bin), server_id and binlog_format=ROW"
        line = json.dumps({"status": "Failed", "reason": "BinaryLoggingOff", "message": said})
        container = {
            "name": "archive",
            "image": "x",
            "imageID": "",
            "ready": False,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": line}},
        }
        # An address on loopback where nothing listens: the archiver does not answer, as in a crash loop.
        status = {"phase": "Running", "podIP": "127.0.0.99", "containerStatuses": [container]}
        await cluster.core.patch_namespaced_pod_status(
            pod["metadata"]["name"], cluster.namespace, body({"status": status}), **MERGE_PATCH
        )

        async def reported() -> dict[str, Any] | None:
            continuous = ((await cluster.backup()).get("status") or {}).get("continuous") or {}
            return continuous if continuous.get("reason") else None

        continuous = await until(reported, 60)
    assert continuous["reason"] == "BinaryLoggingOff"
    assert continuous["message"] == said
    assert continuous["ready"] is False
