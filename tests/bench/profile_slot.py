"""Where the reconciler's time (or memory) goes while one slot's Jobs are created:
`python -m tests.bench.profile_slot [N] [--memory] [--window=SECONDS]`.

The controller in process (as `bench_reconciler`'s idle hour runs it) over N DatabaseBackups `* * * * *` on a real
kube-apiserver, logging at warning as `make deploy` runs it (info logs a line per created Job, which the deployed
process does not pay for); the slot is the first after its initial pass. cProfile runs from half a second before
the slot until the N-th Job exists, or only for the first `--window` seconds after the slot. Prints how the slot
went (seconds to the last Job, against a plain creation loop of N such Jobs; Jobs created by each of the first
seconds), then the functions by own time and by cumulative time. With `--memory`, tracemalloc runs instead, from
before the controller starts: the peak of traced memory, and the lines that held the most when the slot's Jobs
were all created.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from kubernetes_asyncio import client

from common.kube import api_client
from common.logs import configure
from hack.harness.controlplane import ControlPlane
from reconciler.backup_controller import Controller
from reconciler.executor import JobExecutor
from reconciler.jobs import RunnerSettings
from reconciler.metrics import Metrics
from tests.bench.bench_reconciler import _baseline, _bounded, _counter, _next_minute, _settled, _until
from tests.fixtures import databasebackup, governing_service, statefulset

TIMELINE = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0)  # seconds after the slot


async def profile(size: int, memory: bool = False, window: float | None = None) -> str:
    configure("warning")
    with ControlPlane.start() as plane:
        api = await api_client(plane.kubeconfig)
        async with api:
            for namespace in ("baseline", "dbb"):
                plane.kubectl("create", "namespace", namespace)
            sts = statefulset(namespace="dbb")
            del sts["status"]
            plane.kubectl("apply", "-f", "-", input=json.dumps(sts))
            plane.kubectl("apply", "-f", "-", input=json.dumps(governing_service(sts)))  # the host rule's Service
            floor = size / await _baseline(api, size)
            custom = client.CustomObjectsApi(api)

            async def create(index: int) -> None:
                obj = databasebackup(name=f"db-{index:05d}", namespace="dbb", schedule="* * * * *")
                obj["spec"]["concurrencyPolicy"] = "Allow"
                await custom.create_namespaced_custom_object("databases.test.io", "v1", "dbb", "databasebackups", obj)

            await _bounded((create(i) for i in range(size)), limit=32)
            metrics = Metrics()
            if memory:
                tracemalloc.start()
            controller = Controller(api, JobExecutor(api), RunnerSettings(), metrics, namespace="dbb", workers=16)
            task = asyncio.create_task(controller.run())
            try:
                await _until(lambda: _settled(controller), seconds=600)
                slot = _next_minute(datetime.now(UTC) + timedelta(seconds=2))
                await asyncio.sleep((slot - datetime.now(UTC)).total_seconds() - 0.5)
                before = _counter(metrics, "create", "jobs")
                profiler = cProfile.Profile()
                if not memory:
                    profiler.enable()
                started = time.monotonic()
                created_by: dict[float, int] = {}

                async def all_created() -> bool:
                    created = _counter(metrics, "create", "jobs") - before
                    since_slot = time.monotonic() - started - 0.5
                    for mark in TIMELINE:
                        if since_slot >= mark and mark not in created_by:
                            created_by[mark] = int(created)
                    if window is not None and since_slot >= window:
                        profiler.disable()
                    return created >= size

                await _until(all_created, seconds=300, every=0.05)
                took = time.monotonic() - started - 0.5
                profiler.disable()
                if memory:
                    snapshot = tracemalloc.take_snapshot()
                    _, peak = tracemalloc.get_traced_memory()
                    tracemalloc.stop()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    timeline = ", ".join(f"{created_by.get(mark, size)} by {mark:g} s" for mark in TIMELINE if mark < took + 0.5)
    head = f"slot → {size} Jobs: {took:.1f} s (plain creation loop: {floor:.1f} s); Jobs created: {timeline}\n"
    if memory:
        top = snapshot.statistics("traceback")[:15]
        lines = [
            f"traced peak {peak / 2**20:.0f} MiB; held at the last Job {sum(s.size for s in top) / 2**20:.0f} MiB in:"
        ]
        for stat in top:
            lines.append(f"{stat.size / 2**20:7.1f} MiB {stat.count:>8} blocks")
            lines.extend(f"        {line}" for line in stat.traceback.format(limit=4))
        return head + "\n".join(lines)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    what = f"the first {window:g} s after the slot" if window is not None else "the whole slot"
    return f"{head}profiled: {what} (from 0.5 s before it)\n{out.getvalue()}"


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    windows = [float(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--window=")]
    size = int(numbers[0]) if numbers else 1000
    print(asyncio.run(profile(size, memory="--memory" in sys.argv, window=next(iter(windows), None))))
