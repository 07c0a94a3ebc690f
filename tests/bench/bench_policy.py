"""A DatabaseBackupPolicy at fleet size: 2,000 database StatefulSets in 200 namespaces, one policy over all of them.

On a clean kube-apiserver: 200 namespaces with 10 PostgreSQL StatefulSets each, the real `dbb-reconciler` process
(cluster-wide, so its policy controller runs beside the backup and restore controllers), then one policy that
selects every namespace. Measured from one watch of the DatabaseBackups, in the API server's order:
- cover: from the policy's creation to the 2,000th DatabaseBackup;
- follow: a steady stream of new StatefulSets (STREAM of them, RATE a second, each in one of the 200 namespaces):
  from each StatefulSet's create call to its DatabaseBackup's ADDED event, p50 and p99 (target p99 < 5 s);
- baseline, the same run: the same stream of DatabaseBackups created directly by the benchmark (what a team writes
  by hand), from the create call to its ADDED event. The ratio is what the policy's pass adds to the API server's
  own round trip.

No webhook is registered: each DatabaseBackup is judged by it in a cluster (one admission call per creation), which
this measures neither for the policy's nor for the baseline's.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from certs.serving import ensure_serving_certificate
from common.constants import GROUP, PLURAL, POLICY_PLURAL, VERSION
from common.kube import api_client, body, raw
from hack.harness.controlplane import ControlPlane, free_port
from tests.bench.bench_caps import _cpu_seconds
from tests.bench.bench_reconciler import _bounded, _peak_rss_mb
from tests.bench.results import table
from tests.fixtures import databasebackup, statefulset

NAMESPACES = int(os.environ.get("BENCH_POLICY_NAMESPACES", "200"))
PER_NAMESPACE = int(os.environ.get("BENCH_POLICY_PER_NAMESPACE", "10"))
STREAM = int(os.environ.get("BENCH_POLICY_STREAM", "200"))
RATE = 10.0  # new StatefulSets (or DatabaseBackups) a second
COVER_DEADLINE = float(os.environ.get("BENCH_POLICY_COVER_DEADLINE", "600"))
OTHER = "bench-unselected"  # the baseline's namespace: no policy selects it


def main() -> str:
    result = asyncio.run(_run())
    follow, direct = result["follow"], result["direct"]
    total = NAMESPACES * PER_NAMESPACE
    rows = [
        ["new StatefulSet → its DatabaseBackup (policy)", f"{len(follow)}", _ms(follow, 0.5), _ms(follow, 0.99)],
        ["DatabaseBackup created directly (baseline)", f"{len(direct)}", _ms(direct, 0.5), _ms(direct, 0.99)],
    ]
    p99 = _quantile(follow, 0.99)
    verdicts = [
        f"- cover: {total:,} DatabaseBackups {result['cover']:.1f} s after the policy was created",
        f"- new StatefulSet to its DatabaseBackup, p99: {p99:.3f} s (target < 5 s): "
        + ("met" if p99 < 5 else "MISSED"),
        f"- ratio to the baseline, p50 {_quantile(follow, 0.5) / _quantile(direct, 0.5):.1f}×, "
        f"p99 {p99 / _quantile(direct, 0.99):.1f}×",
        f"- reconciler CPU over the whole run {result['cpu']:.1f} s, peak RSS {result['rss']:.0f} MB",
    ]
    intro = (
        f"One DatabaseBackupPolicy over {total:,} PostgreSQL StatefulSets in {NAMESPACES} namespaces, the real "
        f"dbb-reconciler on a clean kube-apiserver (no webhook); then {STREAM} new StatefulSets at {RATE:.0f} a "
        "second, and as the baseline as many DatabaseBackups created directly; counted from one watch of the "
        "DatabaseBackups."
    )
    return "\n".join([intro, "", table(["stream", "objects", "p50 ms", "p99 ms"], rows), "", *verdicts])


async def _run() -> dict[str, Any]:
    with ControlPlane.start() as plane:
        api = await api_client(plane.kubeconfig)
        async with api:
            core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
            names = [f"team-{n:03d}" for n in range(NAMESPACES)]

            async def namespace(name: str, labels: dict[str, str]) -> None:
                meta = {"name": name, "labels": labels}
                await raw(core.create_namespace(body({"metadata": meta}), _preload_content=False))

            await _bounded((namespace(n, {"backups": "on"}) for n in names), limit=32)
            await namespace(OTHER, {})
            await _bounded(
                (_statefulset(apps, n, f"db-{i:02d}") for n in names for i in range(PER_NAMESPACE)), limit=32
            )
            process = _reconciler(plane)
            try:
                async with _watch(custom) as added:
                    policy = {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "DatabaseBackupPolicy",
                        "metadata": {"name": "fleet"},
                        "spec": {
                            "namespaceSelector": {"matchLabels": {"backups": "on"}},
                            "template": {"spec": {"schedule": "0 1 * * *", "window": "4h"}},
                        },
                    }
                    started = time.monotonic()
                    await raw(
                        custom.create_cluster_custom_object(
                            GROUP, VERSION, POLICY_PLURAL, body(policy), _preload_content=False
                        )
                    )
                    total = NAMESPACES * PER_NAMESPACE
                    await _until(added, lambda: len(added) >= total, COVER_DEADLINE, f"{total} DatabaseBackups")
                    cover = max(added.values()) - started
                    follow = await _stream(added, lambda i: _new_database(apps, names, i))
                    direct = await _stream(added, lambda i: _by_hand(custom, i))
                cpu, rss = _cpu_seconds(process.pid), _peak_rss_mb(process.pid)
            finally:
                process.terminate()
                process.wait(30)
    return {"cover": cover, "follow": follow, "direct": direct, "cpu": cpu, "rss": rss}


async def _stream(added: Added, create: Callable[[int], tuple[str, Coroutine[Any, Any, None]]]) -> list[float]:
    """STREAM creations at RATE a second; for each, the seconds from its create call to the ADDED event of the
    DatabaseBackup it should bring (`create` gives its `<namespace>/<name>` and the call)."""
    sent: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []
    for index in range(STREAM):
        at = time.monotonic()
        expected, call = create(index)
        sent[expected] = at
        tasks.append(asyncio.create_task(call))
        await asyncio.sleep(max(0.0, at + 1 / RATE - time.monotonic()))
    await asyncio.gather(*tasks)
    await _until(added, lambda: all(n in added for n in sent), 120, f"{len(sent)} DatabaseBackups of the stream")
    return [added[name] - at for name, at in sent.items()]


def _new_database(apps: client.AppsV1Api, names: list[str], index: int) -> tuple[str, Coroutine[Any, Any, None]]:
    namespace = random.choice(names)
    return f"{namespace}/new-{index:04d}-fleet", _statefulset(apps, namespace, f"new-{index:04d}")


def _by_hand(custom: client.CustomObjectsApi, index: int) -> tuple[str, Coroutine[Any, Any, None]]:
    return f"{OTHER}/hand-{index:04d}", _direct(custom, f"hand-{index:04d}")


async def _statefulset(apps: client.AppsV1Api, namespace: str, name: str) -> None:
    sts = statefulset(name, namespace)
    del sts["status"]
    await raw(apps.create_namespaced_stateful_set(namespace, body(sts), _preload_content=False))


async def _direct(custom: client.CustomObjectsApi, name: str) -> None:
    obj = databasebackup(name=name, namespace=OTHER)
    await raw(custom.create_namespaced_custom_object(GROUP, VERSION, OTHER, PLURAL, body(obj), _preload_content=False))


class Added(dict[str, float]):
    """`<namespace>/<DatabaseBackup>` -> when its ADDED event arrived (monotonic), filled by `task` while the block
    runs."""

    task: asyncio.Task[None] | None = None


@asynccontextmanager
async def _watch(custom: client.CustomObjectsApi) -> AsyncIterator[Added]:
    listed = await raw(custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1, _preload_content=False))
    added = Added()

    async def read() -> None:
        response: Any = await custom.list_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            watch=True,
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=3000,
            _preload_content=False,
            _request_timeout=3600,
        )
        async with response:
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                now = time.monotonic()
                for line in lines:
                    if line.strip():
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"the benchmark's watch failed: {event['object']}")
                        if event["type"] == "ADDED":
                            metadata = event["object"]["metadata"]
                            added.setdefault(f"{metadata['namespace']}/{metadata['name']}", now)
        raise RuntimeError("the benchmark's watch of DatabaseBackups ended")

    task = added.task = asyncio.create_task(read())
    try:
        yield added
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _reconciler(plane: ControlPlane) -> subprocess.Popen[bytes]:
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
            f"--log-level={os.environ.get('BENCH_POLICY_LOG', 'warning')}",
        ],
    )


async def _until(added: Added, check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if added.task is not None and added.task.done():
            added.task.result()  # the watch ended: its error, not a timeout
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds:.0f} s ({len(added)} seen)")
        await asyncio.sleep(0.05)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


def _ms(values: list[float], q: float) -> str:
    return f"{_quantile(values, q) * 1000:.0f}"
