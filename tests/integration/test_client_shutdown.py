"""A controller stopped at any moment leaves no connection open: its client's close ends every TLS connection, those
its cancelled watches released included. Before Python 3.12.8 (CPython gh-118960) a TLS connection still shutting
down when the event loop ends keeps its socket for ever: the ResourceWarnings that failed CI runs at random."""

from __future__ import annotations

import asyncio
import gc
import random
import warnings

from common.kube import api_client
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(CYCLES):
            # A loop of its own each time: a connection left shutting down is lost when its loop ends.
            asyncio.run(started_and_stopped(control_plane, namespace, moments.uniform(0.0, 0.3)))
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []
