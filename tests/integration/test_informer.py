"""The shared list+watch cache on a real API server: it follows changes, and recovers from 410 Gone by listing
again and reporting what vanished meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from common.informer import Event, Informer, running
from common.kube import api_client, body
from hack.harness.controlplane import ControlPlane


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polls state that another task changes
            await asyncio.sleep(0.05)


def config_map(name: str) -> Any:
    return body({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})


async def test_the_cache_follows_creates_updates_and_deletes(control_plane: ControlPlane, namespace: str) -> None:
    api = await api_client(control_plane.kubeconfig)
    async with api:
        core = client.CoreV1Api(api)
        await core.create_namespaced_config_map(namespace, config_map("before"))
        events: list[tuple[str, str]] = []
        informer = Informer(
            "configmaps",
            core.list_namespaced_config_map,
            (namespace,),
            handler=lambda e: events.append((e.type, e.key[1])),
        )
        async with running(informer):
            assert informer.get(namespace, "before") is not None
            await core.create_namespaced_config_map(namespace, config_map("after"))
            await until(lambda: informer.get(namespace, "after") is not None)
            await core.delete_namespaced_config_map("before", namespace)
            await until(lambda: informer.get(namespace, "before") is None)
        assert events == [("ADDED", "before"), ("ADDED", "after"), ("DELETED", "before")]
        stored = informer.get(namespace, "after")
        assert stored is not None
        assert stored["kind"] == "ConfigMap"
        assert "managedFields" not in stored["metadata"]


@pytest.fixture(scope="module")
def compacting_control_plane() -> Iterator[ControlPlane]:
    # Watches served straight from etcd, which forgets old revisions within seconds: a stale resourceVersion then
    # really is 410 Gone, as after a long disconnect in a busy cluster.
    with ControlPlane.start(
        install_crd=False, extra_args=["--watch-cache=false", "--etcd-compaction-interval=1s"]
    ) as cp:
        yield cp


@pytest.fixture
async def core(compacting_control_plane: ControlPlane) -> AsyncIterator[client.CoreV1Api]:
    api = await api_client(compacting_control_plane.kubeconfig)
    async with api:
        yield client.CoreV1Api(api)


async def test_a_stale_resource_version_lists_again_and_reports_what_vanished(core: client.CoreV1Api) -> None:
    events: list[Event] = []
    restarts: list[str] = []
    informer = Informer(
        "configmaps",
        core.list_namespaced_config_map,
        ("default",),
        handler=events.append,
        on_restart=restarts.append,
        max_backoff=0.5,
    )
    await core.create_namespaced_config_map("default", config_map("kept"))
    await core.create_namespaced_config_map("default", config_map("gone"))
    async with running(informer):
        assert informer.get("default", "gone") is not None
    stale = informer.resource_version
    # While the informer is away: a delete, then enough writes and time for etcd to compact past `stale`.
    await core.delete_namespaced_config_map("gone", "default")
    for index in range(5):
        await core.create_namespaced_config_map("default", config_map(f"churn-{index}"))
        await asyncio.sleep(0.6)
    events.clear()
    informer.resource_version = stale
    task = asyncio.create_task(informer.run())
    try:
        await until(lambda: informer.get("default", "gone") is None and "churn-4" in {e.key[1] for e in events})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert restarts[0] == "gone"
    assert ("DELETED", "gone") in [(e.type, e.key[1]) for e in events]
    assert informer.get("default", "kept") is not None
