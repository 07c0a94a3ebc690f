"""The shared list+watch cache on a real API server: it follows changes, and recovers from 410 Gone by listing
again and reporting what vanished meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
    assert stale is not None
    # While the informer is away: a delete, then writes until the API server no longer serves a watch from `stale`
    # (410 Gone, which is what the informer must survive), asked of the server itself rather than waited for.
    await core.delete_namespaced_config_map("gone", "default")
    churned = 0
    async with asyncio.timeout(120):
        while churned < 5 or not await _too_old(core, stale):
            await core.create_namespaced_config_map("default", config_map(f"churn-{churned}"))
            churned += 1
            await asyncio.sleep(0.2)
    last = f"churn-{churned - 1}"
    events.clear()
    informer.resource_version = stale
    task = asyncio.create_task(informer.run())
    try:
        await until(lambda: informer.get("default", "gone") is None and last in {e.key[1] for e in events})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert restarts[0] == "gone"
    assert ("DELETED", "gone") in [(e.type, e.key[1]) for e in events]
    assert informer.get("default", "kept") is not None


async def _too_old(core: client.CoreV1Api, resource_version: str) -> bool:
    """Whether a watch from `resource_version` is answered with 410 Gone (its first line an ERROR with code 410)."""
    response: Any = await core.list_namespaced_config_map(
        "default", watch=True, resource_version=resource_version, timeout_seconds=1, _preload_content=False
    )
    async with response:
        line = await response.content.readline()
    event = json.loads(line) if line.strip() else {}
    return bool(event.get("type") == "ERROR" and (event.get("object") or {}).get("code") == 410)
