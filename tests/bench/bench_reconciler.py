"""The reconciler at scale, on a real kube-apiserver, against a plain Job-creation loop measured in the same run.

For N = 1,000 and 5,000 DatabaseBackups, all scheduled for one minute far enough ahead that every object exists and
has status before it comes (so the due Jobs are all that happens at the slot):
- time from the reconciler's start to every object having status (phase Scheduled), and its peak RSS (VmHWM);
- at the minute: Jobs created per second from the slot to the last Job, against the baseline (a loop that creates
  the same number of Jobs with kubernetes-asyncio at the same concurrency: the API server's ceiling here), lateness
  p50/p99 from slot to Job creation (the reconciler's own histogram), and API writes per run;
- then an hour with nothing due, simulated with the clock (the controller in-process, `now` advanced a minute at a
  time and every object reconciled at each step): status writes (target 0).
The reconciler runs as the real `dbb-reconciler` process (job executor, no leader election).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes_asyncio import client, config

from common.constants import GROUP, PLURAL, VERSION
from common.defaults import default_spec
from common.kube import MERGE_PATCH, body, raw
from common.model import parse_spec
from reconciler.controller import Controller
from reconciler.executor import JobExecutor
from reconciler.jobs import RunnerSettings, backup_job
from reconciler.metrics import Metrics
from tests.bench.results import table
from tests.controlplane import ControlPlane, free_port
from tests.fixtures import databasebackup, statefulset

SIZES = (1000, 5000)
CONCURRENCY = 16  # the reconciler's workers and the baseline's requests in flight


def main() -> str:
    rows = [asyncio.run(_measure(size)) for size in SIZES]
    header = [
        "DatabaseBackups",
        "start → all scheduled",
        "peak RSS",
        "Jobs/s (reconciler)",
        "Jobs/s (baseline)",
        "ratio",
        "lateness p50",
        "lateness p99",
        "API writes per run",
        "status writes, idle hour",
    ]
    lines = [
        [
            f"{r['size']:,}",
            f"{r['scheduled_s']:.1f} s",
            f"{r['rss_mb']:.0f} MB",
            f"{r['rate']:.0f}",
            f"{r['baseline']:.0f}",
            f"{r['rate'] / r['baseline']:.2f}",
            f"{r['p50']:.2f} s",
            f"{r['p99']:.2f} s",
            f"{r['writes_per_run']:.2f}",
            f"{r['idle_writes']:.0f}",
        ]
        for r in rows
    ]
    small, large = rows[0], rows[-1]
    verdict = [
        f"- creation rate: {min(r['rate'] / r['baseline'] for r in rows):.2f} of the baseline at worst "
        f"(target ≥ 0.80): {'met' if all(r['rate'] >= 0.8 * r['baseline'] for r in rows) else 'MISSED'}",
        f"- lateness p99 at {small['size']:,}: {small['p99']:.2f} s (target < 2 s): "
        f"{'met' if small['p99'] < 2 else 'MISSED'}",
        f"- peak RSS at {large['size']:,}: {large['rss_mb']:.0f} MB (target < 150 MB): "
        f"{'met' if large['rss_mb'] < 150 else 'MISSED'}",
        f"- status writes in an idle hour: {sum(r['idle_writes'] for r in rows):.0f} (target 0)",
    ]
    notes = (
        "Per run the reconciler makes three writes (the Job, one status patch, one `Scheduled` Event) where the "
        "baseline makes one; lateness percentiles are read from the reconciler's histogram buckets (upper bounds)."
    )
    return "\n".join([table(header, lines), "", *verdict, "", notes])


async def _measure(size: int) -> dict[str, float]:
    with ControlPlane.start() as plane:
        api = await config.new_client_from_config(config_file=str(plane.kubeconfig))
        async with api:
            namespace = "bench"
            plane.kubectl("create", "namespace", namespace)
            plane.kubectl("create", "namespace", "baseline")
            sts = statefulset(namespace=namespace)
            del sts["status"]
            plane.kubectl("apply", "-f", "-", input=json.dumps(sts))
            baseline = await _baseline(api, size)
            # Room to create the objects and for the reconciler to give each its status before the slot.
            slot = (datetime.now(UTC) + timedelta(seconds=90 + size * 0.04)).replace(second=0, microsecond=0)
            slot += timedelta(minutes=1)
            await _create_backups(api, namespace, size, f"{slot.minute} {slot.hour} * * *")
            port = free_port()
            process = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on in the loop
                [
                    str(Path(sys.executable).parent / "dbb-reconciler"),
                    f"--kubeconfig={plane.kubeconfig}",
                    f"--namespace={namespace}",
                    f"--workers={CONCURRENCY}",
                    "--health-host=127.0.0.1",
                    f"--health-port={port}",
                    "--no-metrics-auth",
                    "--log-level=warning",
                ],
            )
            try:
                started = time.monotonic()
                await _until(lambda: _all_have_status(api, namespace, size), seconds=600)
                scheduled_s = time.monotonic() - started
                if datetime.now(UTC) >= slot:
                    raise RuntimeError(f"setup ran past the slot {slot:%H:%M}: the measurement would be meaningless")
                writes_before = _metric(port, "dbb_api_requests_total")
                await _until_metric(port, 'dbb_api_requests_total{resource="jobs",verb="create"}', size, seconds=900)
                created_at = datetime.now(UTC)
                await asyncio.sleep(3)  # the last status writes and Events
                writes = _metric(port, "dbb_api_requests_total") - writes_before
                rss_mb = _peak_rss_mb(process.pid)
                buckets = _histogram(port, "dbb_job_creation_lateness_seconds")
            finally:
                process.terminate()
                process.wait(30)
            rate = size / max((created_at - slot).total_seconds(), 0.001)
            idle_writes = await _idle_hour(api, namespace)
    return {
        "size": size,
        "scheduled_s": scheduled_s,
        "rss_mb": rss_mb,
        "rate": rate,
        "baseline": baseline,
        "p50": _quantile(buckets, 0.5),
        "p99": _quantile(buckets, 0.99),
        "writes_per_run": writes / size,
        "idle_writes": idle_writes,
    }


async def _baseline(api: client.ApiClient, size: int) -> float:
    """The same Jobs the reconciler creates (env, volumes, security context: the API server's cost depends on them),
    built by the same code, created by a plain loop."""
    batch = client.BatchV1Api(api)
    spec, _ = parse_spec(default_spec(databasebackup()["spec"], namespace="baseline", statefulset=statefulset()))
    assert spec is not None
    slot = datetime.now(UTC).replace(second=0, microsecond=0)

    async def create(index: int) -> None:
        owner = databasebackup(name=f"db-{index:05d}", namespace="baseline")
        owner["metadata"]["uid"] = f"00000000-0000-0000-0000-{index:012d}"
        job = backup_job(owner, spec, scheduled=slot, runner=RunnerSettings())
        await batch.create_namespaced_job("baseline", body(job))

    started = time.monotonic()
    await _bounded(create(i) for i in range(size))
    return size / (time.monotonic() - started)


async def _create_backups(api: client.ApiClient, namespace: str, size: int, schedule: str) -> None:
    custom = client.CustomObjectsApi(api)

    async def create(index: int) -> None:
        obj = databasebackup(name=f"db-{index:05d}", namespace=namespace, schedule=schedule)
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(obj))

    await _bounded((create(i) for i in range(size)), limit=32)


async def _bounded(calls: Iterable[Awaitable[None]], limit: int = CONCURRENCY) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(c) for c in calls))


async def _all_have_status(api: client.ApiClient, namespace: str, size: int) -> bool:
    listed = await raw(
        client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _preload_content=False
        )
    )
    return sum(1 for item in listed["items"] if (item.get("status") or {}).get("phase")) >= size


async def _idle_hour(api: client.ApiClient, namespace: str) -> float:
    """The controller in-process with a clock we move: every object moved to @daily (next slot far away), then an
    hour of minutes, each reconciling every object. Counts status writes after the first settle."""
    custom = client.CustomObjectsApi(api)
    listed = await raw(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _preload_content=False))
    patch = body({"spec": {"schedule": "0 0 * * *", "concurrencyPolicy": "Allow"}})
    await _bounded(
        (
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                item["metadata"]["name"],
                patch,
                **MERGE_PATCH,
            )
            for item in listed["items"]
        ),
        limit=32,
    )
    now = {"t": datetime.now(UTC).replace(hour=1, minute=0)}
    metrics = Metrics()
    controller = Controller(
        api,
        JobExecutor(api),
        RunnerSettings(),
        metrics,
        namespace=namespace,
        workers=CONCURRENCY,
        clock=lambda: now["t"],
    )
    task = asyncio.create_task(controller.run())
    try:
        await _until(lambda: _settled(controller), seconds=600)
        before = _counter(metrics, "dbb_api_requests_total", "databasebackups/status")
        for _ in range(60):
            now["t"] += timedelta(minutes=1)
            for key in list(controller.backups.store):
                controller.queue.add(key)
            await _until(lambda: _settled(controller), seconds=120)
        return _counter(metrics, "dbb_api_requests_total", "databasebackups/status") - before
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _settled(controller: Controller) -> bool:
    queue = controller.queue
    return controller.synced and len(queue) == 0 and not queue._processing


async def _until(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met in time")
        await asyncio.sleep(0.25)


async def _until_metric(port: int, name: str, value: float, seconds: float) -> None:
    async def reached() -> bool:
        return _metric(port, name) >= value

    await _until(reached, seconds)


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _metric(port: int, prefix: str) -> float:
    if "{" in prefix:
        name, labels = prefix.split("{", 1)
        wanted = set(labels.rstrip("}").split(","))
        total = 0.0
        for line in _metrics_text(port).splitlines():
            if line.startswith(name + "{") and wanted <= set(line.split("{", 1)[1].split("}")[0].split(",")):
                total += float(line.rsplit(" ", 1)[1])
        return total
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in _metrics_text(port).splitlines()
        if line.startswith(prefix) and not line.startswith("#")
    )


def _histogram(port: int, name: str) -> list[tuple[float, float]]:
    found = []
    for line in _metrics_text(port).splitlines():
        match = re.match(rf'{name}_bucket{{le="([^"]+)"}} (\S+)', line)
        if match:
            found.append((float(match.group(1)), float(match.group(2))))
    return found


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound
    return float("inf")


def _counter(metrics: Metrics, name: str, resource: str) -> float:
    return sum(
        s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == name and s.labels.get("resource") == resource
    )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
