"""Caps at fleet size: N DatabaseBackups due in the same window, under a cluster cap, against the same run uncapped.

On a clean kube-apiserver each run: N DatabaseBackups of one StatefulSet, `schedule: "M H * * *"` with `window: 1m`
(every offset in a one-minute window is 0: the whole fleet is due at the same instant, the worst case a window can
give), the real `dbb-reconciler` process with `--max-running=CAP` (or no cap), and the server cap off (every object
backs up the same StatefulSet, which the default cap would run one at a time). The benchmark ends each Job as
kubelet and the Job controller would (a Pod with the runner's result, then Complete), HOLD (1 s) after it saw it,
FINISHERS (64) at a time, until all N ran.

Measured from one watch of the Jobs, in the API server's own order (so not sampled: every creation and every
completion is an event of it):
- peak concurrency: Jobs created and not yet complete, at its highest (capped: must equal CAP, never more);
- freed to next: from a completion's arrival to the arrival of the Job it let start (the k-th Job created after the
  first CAP is paired with the k-th completion), p50 and p99 (target p99 < 1 s);
- the whole fleet's time from the slot to the last completion;
- the reconciler's CPU seconds (utime + stime) and peak RSS, capped against uncapped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from certs.serving import ensure_serving_certificate
from common.constants import GROUP, PLURAL, VERSION
from common.kube import api_client, body, raw
from hack.harness.controlplane import ControlPlane, free_port
from tests.bench.bench_reconciler import (
    NAMESPACE,
    ApiWrites,
    _bounded,
    _database,
    _finish,
    _next_minute,
    _peak_rss_mb,
    _watch_lines,
)
from tests.bench.results import table
from tests.fixtures import databasebackup

SIZE = int(os.environ.get("BENCH_CAPS_SIZE", "5000"))
CAP = int(os.environ.get("BENCH_CAPS_CAP", "50"))
FINISHERS = 64
HOLD = float(os.environ.get("BENCH_CAPS_HOLD", "1.0"))  # seconds each run lasts, from its Job's arrival
# Seconds from the start of creation to the slot: creation, the reconciler's start and its sync.
LEAD = float(os.environ.get("BENCH_CAPS_LEAD", "100"))
DEADLINE = 900.0  # seconds after the slot by which the whole fleet must have run


@dataclass
class Run:
    who: str
    created: int = 0
    completed: int = 0
    peak: int = 0
    freed_to_next: list[float] = field(default_factory=list)
    last_s: float = float("nan")
    cpu_s: float = float("nan")
    rss_mb: float = float("nan")

    def quantile(self, q: float) -> float:
        ordered = sorted(self.freed_to_next)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


def main() -> str:
    runs = []
    for cap in (CAP, None):
        run = asyncio.run(_run(cap))
        print(f"  {run.who}: {run.created} Jobs, peak {run.peak}, p99 {run.quantile(0.99):.3f} s", flush=True)
        runs.append(run)
    capped, uncapped = runs
    header = ["run", "Jobs", "peak running", "freed → next p50 s", "p99 s", "slot → last done s", "CPU s", "RSS MB"]
    rows = [
        [
            r.who,
            f"{r.created:,}",
            f"{r.peak:,}",
            f"{r.quantile(0.5):.3f}" if r.freed_to_next else "—",
            f"{r.quantile(0.99):.3f}" if r.freed_to_next else "—",
            f"{r.last_s:.1f}",
            f"{r.cpu_s:.1f}",
            f"{r.rss_mb:.0f}",
        ]
        for r in runs
    ]
    verdicts = [
        f"- peak running Jobs under a cap of {CAP}: {capped.peak} (must equal the cap, never exceed it): "
        + ("met" if capped.peak == CAP else "MISSED"),
        f"- every run once: {capped.created:,} Jobs for {SIZE:,} DatabaseBackups: "
        + ("met" if capped.created == SIZE else "MISSED"),
        f"- freed to next, p99: {capped.quantile(0.99):.3f} s (target < 1 s): "
        + ("met" if capped.quantile(0.99) < 1 else "MISSED"),
        f"- reconciler CPU, capped / uncapped: {capped.cpu_s / uncapped.cpu_s:.2f}; peak RSS "
        f"{capped.rss_mb / uncapped.rss_mb:.2f}",
    ]
    intro = (
        f"{SIZE:,} DatabaseBackups due at the same instant (a one-minute window), the real dbb-reconciler on a "
        f"clean kube-apiserver, each Job ended by the benchmark {HOLD:.0f} s after it appeared ({FINISHERS} at a "
        "time); counted "
        "from one watch of the Jobs in the API server's order."
    )
    return "\n".join([intro, "", table(header, rows), "", *verdicts])


async def _run(cap: int | None) -> Run:
    who = f"--max-running={cap}" if cap else "no cap"
    with ControlPlane.start() as plane:
        api = await api_client(plane.kubeconfig)
        async with api:
            _database(plane)
            slot = _next_minute(datetime.now(UTC) + timedelta(seconds=LEAD))
            await _create(api, slot)
            process = _reconciler(plane, cap)
            try:
                run = await _watch(api, ApiWrites(plane), slot, cap, who)
                run.cpu_s = _cpu_seconds(process.pid)
                run.rss_mb = _peak_rss_mb(process.pid)
            finally:
                process.terminate()
                process.wait(30)
    return run


async def _create(api: client.ApiClient, slot: datetime) -> None:
    custom = client.CustomObjectsApi(api)
    schedule = f"{slot.minute} {slot.hour} * * *"

    async def create(index: int) -> None:
        obj = databasebackup(name=f"db-{index:05d}", namespace=NAMESPACE, schedule=schedule, window="1m")
        await raw(
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(obj), _preload_content=False)
        )

    await _bounded((create(i) for i in range(SIZE)), limit=32)
    if datetime.now(UTC) > slot - timedelta(seconds=20):
        raise RuntimeError(f"creating {SIZE:,} objects took past the slot's lead: raise LEAD")


def _reconciler(plane: ControlPlane, cap: int | None) -> subprocess.Popen[bytes]:
    port, cert_dir = free_port(), plane.workdir / "reconciler-tls"
    ensure_serving_certificate(cert_dir, ["127.0.0.1"])
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dbb-reconciler"),
            f"--kubeconfig={plane.kubeconfig}",
            "--health-host=127.0.0.1",
            f"--health-port={port}",
            f"--cert-dir={cert_dir}",
            "--no-metrics-auth",
            "--log-level=warning",
            f"--max-running={cap or 0}",
            "--max-running-per-server=0",
        ],
    )


async def _watch(api: client.ApiClient, writes: ApiWrites, slot: datetime, cap: int | None, who: str) -> Run:
    run = Run(who)
    batch = client.BatchV1Api(api)
    listed = await raw(batch.list_namespaced_job(NAMESPACE, limit=1, _preload_content=False))
    running: dict[str, dict[str, Any]] = {}
    finishing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    freed: list[float] = []  # arrival of each completion, in order
    late: list[float] = []  # arrival of each Job beyond the first `cap`, in order
    done: set[str] = set()

    async def finisher() -> None:
        while True:
            job = await finishing.get()
            await asyncio.sleep(max(0.0, job["seen"] + HOLD - time.monotonic()))  # a run takes its time
            await _finish(api, writes, job)

    finishers = [asyncio.create_task(finisher()) for _ in range(FINISHERS)]
    deadline = slot + timedelta(seconds=DEADLINE)
    try:
        version = listed["metadata"]["resourceVersion"]
        # The API server may end a watch early (under this load it does): resume from the last event seen.
        while run.completed < SIZE and datetime.now(UTC) < deadline:
            async with _watch_lines(batch, NAMESPACE, version, deadline) as lines:
                async for arrived, line in lines:
                    event = json.loads(line)
                    job = event["object"]
                    version = job["metadata"].get("resourceVersion") or version
                    name = job["metadata"]["name"]
                    at = time.monotonic()
                    if event["type"] == "ADDED" and name not in running and name not in done:
                        running[name] = job
                        run.created += 1
                        run.peak = max(run.peak, len(running))
                        if cap and run.created > cap:
                            late.append(at)
                        finishing.put_nowait({**job, "seen": at})
                    elif _complete(job) and name in running:
                        del running[name]
                        done.add(name)
                        run.completed += 1
                        freed.append(at)
                        if run.completed == SIZE:
                            run.last_s = (arrived - slot).total_seconds()
                            break
    finally:
        for task in finishers:
            task.cancel()
        await asyncio.gather(*finishers, return_exceptions=True)
    run.freed_to_next = [arrival - release for arrival, release in zip(late, freed, strict=False)]
    if run.completed < SIZE:
        raise RuntimeError(f"{who}: {run.completed:,} of {SIZE:,} runs done {DEADLINE:.0f} s after the slot")
    return run


def _complete(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
