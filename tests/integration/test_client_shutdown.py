"""A controller stopped at any moment leaves no connection open: its client's close ends every TLS connection, those
its cancelled watches released included. Before Python 3.12.8 (CPython gh-118960) a TLS connection still shutting
down when the event loop ends keeps its socket for ever: the ResourceWarnings that failed CI runs at random."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc
import warnings
from typing import Any

from kubernetes_asyncio import client

from common.kube import api_client, timeout
from hack.harness.controlplane import ControlPlane
from reconciler.backup_controller import Controller
from reconciler.executor import JobExecutor
from reconciler.jobs import RunnerSettings
from reconciler.metrics import Metrics

CYCLES = 40


async def started_and_stopped(control_plane: ControlPlane, namespace: str, after: float) -> None:
    api = await api_client(control_plane.kubeconfig)
    async with api:
        controller = Controller(api, JobExecutor(api), RunnerSettings(), Metrics(), namespace=namespace)
        task = asyncio.create_task(controller.run())
        await asyncio.sleep(after)  # anywhere in its start: listing, opening watches, watching
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_controller_stopped_at_any_moment_leaves_no_socket_open(control_plane: ControlPlane, namespace: str) -> None:
    moments = random.Random(21)
    # What earlier tests of the session left for the collector is theirs, not these cycles': it goes first (a
    # ResourceWarning it raises then is reported against this test by pytest all the same, as any other would be).
    gc.collect()
    # Where each leaked socket was made, so that a failure names the path that escaped the client's close.
    tracemalloc.start(25)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            for _ in range(CYCLES):
                # A loop of its own each time: a connection left shutting down is lost when its loop ends.
                asyncio.run(started_and_stopped(control_plane, namespace, moments.uniform(0.0, 0.3)))
            gc.collect()
        leaked = [f"{w.message}\n{made_at(w.source)}" for w in caught if issubclass(w.category, ResourceWarning)]
    finally:
        tracemalloc.stop()
    assert leaked == []


def made_at(source: object) -> str:
    traceback = tracemalloc.get_object_traceback(source) if source is not None else None
    return "\n".join(traceback.format()) if traceback is not None else "(made before tracing began)"


async def cancelled_just_after_the_handshake(control_plane: ControlPlane) -> None:
    """One request whose connect is cancelled between the TLS handshake and the connect's return: asyncio then
    starts a graceful TLS shutdown that nobody awaits and that the connector never hears of."""
    api = await api_client(control_plane.kubeconfig)
    connector = api.rest_client.pool_manager.connector
    assert connector is not None
    protocol_factory = connector._factory
    requests: list[asyncio.Task[object]] = []

    def cancelling(*args: Any, **kwargs: Any) -> Any:
        protocol = protocol_factory(*args, **kwargs)
        made = protocol.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            made(transport)
            requests[0].cancel()  # the connect is still waiting for the handshake's result

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    connector._factory = cancelling  # type: ignore[assignment]

    async def listed() -> object:
        return await client.CoreV1Api(api).list_namespace(**timeout())

    async with api:
        requests.append(asyncio.create_task(listed()))
        (outcome,) = await asyncio.gather(*requests, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError)


def test_a_connect_cancelled_after_the_handshake_is_closed_with_the_client(control_plane: ControlPlane) -> None:
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(5):
            # The loop ends as soon as the client is closed: whatever the close left to finish later is lost.
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(cancelled_just_after_the_handshake(control_plane))
            finally:
                loop.close()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
