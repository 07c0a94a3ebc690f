"""Where the reconciler's time goes while one slot's Jobs are created: `python -m tests.bench.profile_slot [N]`.

The controller in process (as `bench_reconciler`'s idle hour runs it) over N DatabaseBackups `* * * * *` on a real
kube-apiserver; cProfile runs from the slot until the N-th Job exists. Prints the functions by own time and by
cumulative time, and how the slot went (seconds to the last Job, against a plain creation loop of N such Jobs).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
from datetime import UTC, datetime, timedelta

from kubernetes_asyncio import client, config

from reconciler.controller import Controller
from reconciler.executor import JobExecutor
from reconciler.jobs import RunnerSettings
from reconciler.metrics import Metrics
from tests.bench.bench_reconciler import _baseline, _bounded, _counter, _next_minute, _settled, _until
from tests.controlplane import ControlPlane
from tests.fixtures import databasebackup, statefulset


async def profile(size: int) -> str:
    with ControlPlane.start() as plane:
        api = await config.new_client_from_config(config_file=str(plane.kubeconfig))
        async with api:
            for namespace in ("baseline", "dbb"):
                plane.kubectl("create", "namespace", namespace)
            sts = statefulset(namespace="dbb")
            del sts["status"]
            plane.kubectl("apply", "-f", "-", input=json.dumps(sts))
            floor = size / await _baseline(api, size)
            custom = client.CustomObjectsApi(api)

            async def create(index: int) -> None:
                obj = databasebackup(name=f"db-{index:05d}", namespace="dbb", schedule="* * * * *")
                obj["spec"]["concurrencyPolicy"] = "Allow"
                await custom.create_namespaced_custom_object("databases.test.io", "v1", "dbb", "databasebackups", obj)

            await _bounded((create(i) for i in range(size)), limit=32)
            metrics = Metrics()
            controller = Controller(api, JobExecutor(api), RunnerSettings(), metrics, namespace="dbb", workers=16)
            task = asyncio.create_task(controller.run())
            try:
                await _until(lambda: _settled(controller), seconds=600)
                slot = _next_minute(datetime.now(UTC) + timedelta(seconds=2))
                await asyncio.sleep((slot - datetime.now(UTC)).total_seconds() - 0.5)
                before = _counter(metrics, "create", "jobs")
                profiler = cProfile.Profile()
                profiler.enable()
                started = time.monotonic()

                async def all_created() -> bool:
                    return _counter(metrics, "create", "jobs") - before >= size

                await _until(all_created, seconds=300)
                took = time.monotonic() - started - 0.5
                profiler.disable()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    return f"slot → {size} Jobs: {took:.1f} s (plain creation loop: {floor:.1f} s)\n{out.getvalue()}"


if __name__ == "__main__":
    print(asyncio.run(profile(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)))
