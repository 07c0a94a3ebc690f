"""The webhook's StatefulSet cache on a real API server: once synced, a miss is answered without a live GET, and a
StatefulSet created a moment ago is found through the watch; the Pods come from the cache of StatefulSets' Pods
once it is synced, and are listed by the StatefulSet's selector before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from common.kube import body
from tests.fixtures import statefulset
from webhook.database import StatefulSets
from webhook.metrics import Metrics


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def statefulsets(api_client: client.ApiClient, metrics: Metrics) -> AsyncIterator[StatefulSets]:
    found = StatefulSets.connect(api_client, metrics)
    task = asyncio.create_task(found.informer.run())
    try:
        await asyncio.wait_for(found.informer.synced.wait(), 60)
        yield found
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def pods_cached(statefulsets: StatefulSets) -> AsyncIterator[None]:
    assert statefulsets.pods_informer is not None
    task = asyncio.create_task(statefulsets.pods_informer.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def live_gets(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("dbb_webhook_kube_requests_total", {"reason": "cache-miss"}) or 0.0


async def created(api_client: client.ApiClient, namespace: str, name: str = "example-db") -> dict[str, Any]:
    sts = statefulset(name, namespace)
    del sts["status"]
    apps = client.AppsV1Api(api_client)
    made = await apps.create_namespaced_stateful_set(namespace, body(sts))
    return {"metadata": {"name": name, "uid": made.metadata.uid}, "spec": sts["spec"]}


async def test_a_synced_cache_answers_a_miss_without_a_live_get(
    statefulsets: StatefulSets, metrics: Metrics, namespace: str
) -> None:
    await asyncio.wait_for(until_watching(statefulsets), 60)
    found = await statefulsets.find(namespace, "nope")
    assert found.statefulset is None
    assert found.error is None
    assert live_gets(metrics) == 0


async def test_a_statefulset_created_a_moment_ago_is_found_through_the_watch(
    api_client: client.ApiClient, statefulsets: StatefulSets, metrics: Metrics, namespace: str
) -> None:
    await asyncio.wait_for(until_watching(statefulsets), 60)
    await created(api_client, namespace, "fresh-db")
    found = await statefulsets.find(namespace, "fresh-db")  # no wait in between
    assert found.statefulset is not None
    assert live_gets(metrics) == 0


async def test_the_pods_of_every_statefulset_of_the_namespace_with_their_claims_listed_live_then_from_the_cache(
    api_client: client.ApiClient, statefulsets: StatefulSets, metrics: Metrics, namespace: str
) -> None:
    sts = await created(api_client, namespace)
    core = client.CoreV1Api(api_client)
    owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "example-db", "uid": sts["metadata"]["uid"]}
    for name, owners, labelled in (("example-db-0", [owner], True), ("ledger-db-0", [], True), ("web", [], False)):
        labels = {"app": name, **({"statefulset.kubernetes.io/pod-name": name} if labelled else {})}
        pod = {
            "metadata": {"name": name, "labels": labels, "ownerReferences": owners},
            "spec": {
                "containers": [{"name": "db", "image": "postgres:16"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": f"data-{name}"}}],
            },
        }
        await core.create_namespaced_pod(namespace, body(pod))
    # Every Pod a StatefulSet made (its pod-name label), whichever StatefulSet: another database's data counts too.
    expected = {"example-db-0": ("data-example-db-0",), "ledger-db-0": ("data-ledger-db-0",)}
    assert await statefulsets.pods(namespace) == expected  # the Pod cache is not running: a live list
    assert pod_lists(metrics) == 1
    cache = statefulsets.pods_informer
    assert cache is not None
    async with pods_cached(statefulsets):
        await asyncio.wait_for(until_cached(statefulsets), 60)
        assert await statefulsets.pods(namespace) == expected
        assert pod_lists(metrics) == 1  # answered from the cache
    assert [s["metadata"]["name"] for s in await statefulsets.statefulsets(namespace)] == ["example-db"]


async def until_cached(statefulsets: StatefulSets) -> None:
    cache = statefulsets.pods_informer
    assert cache is not None
    while True:
        if cache.synced.is_set() and cache.watching:
            return
        await asyncio.sleep(0.05)


def pod_lists(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("dbb_webhook_kube_requests_total", {"reason": "pods"}) or 0.0


async def until_watching(statefulsets: StatefulSets) -> None:
    """The watch is open once the list is done; the tests' wait_for bounds this."""
    while True:
        if statefulsets.informer.watching:
            return
        await asyncio.sleep(0.05)
