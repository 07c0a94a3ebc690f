"""The reconciler at scale, side by side with the Kubernetes CronJob controller, on one real kube-apiserver per size.

For N = 1,000, 5,000 and 10,000, in the same run and on the same API server:
- the ceiling: a plain loop creating N of the very Jobs the reconciler creates (kubernetes-asyncio, 16 in flight);
- kube-controller-manager v1.34 (built from Go modules by `hack/cluster/build.sh`, cached) with
  `--controllers=cronjob`, at its defaults and tuned (`--kube-api-qps=1000 --kube-api-burst=2000
  --concurrent-cron-job-syncs=16`), over N CronJobs `* * * * *` (concurrencyPolicy Allow) whose jobTemplate is the
  Job the reconciler creates for the matching DatabaseBackup (same pod spec, labels, size);
- the reconciler (`dbb-reconciler`, the real process) over N DatabaseBackups `* * * * *` (Allow).

Each controller is measured the same way, cold: its N objects are created starting just after a minute boundary, the
controller is started, and the slot measured is the first minute boundary at least 15 s after its start (the next
one, when creating N objects and starting took longer). For that one full slot each reports the Jobs created for it,
their lateness p50/p99/max, the seconds until the slot's last Job, and the controller's peak RSS (VmHWM). Lateness
is exact per Job: the moment the Job reached the benchmark's own watch (a raw stream, timed before decoding) minus
its slot (the CronJob controller's name suffix, in minutes since the epoch; our `scheduled-time` annotation). The
reconciler's API writes per run are counted from the slot until it is quiet (no write for 5 s, no fixed sleep,
within the minute). Jobs never end on an API server without kubelets, so after each controller its Jobs (and
CronJobs) are deleted: the next starts from the same empty namespace state, not beside tens of thousands of active
Jobs.

Then an idle hour that can fail (N = 1,000): the controller in process with a clock stepped minute by minute
through a whole hour over N DatabaseBackups `0 * * * *`: exactly N Jobs and N status writes at the top of the hour
and no write in the 59 minutes between; the same again with the controller restarted (new process state, empty
caches) halfway through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from certs.serving import ensure_serving_certificate
from common.constants import ANNOTATION_SCHEDULED_TIME, GROUP, PLURAL, VERSION
from common.defaults import default_spec
from common.kube import api_client, body, raw
from common.model import parse_spec
from hack.harness.controlplane import ControlPlane, free_port
from reconciler.backup_controller import Controller
from reconciler.executor import JobExecutor
from reconciler.jobs import RunnerSettings, backup_job
from reconciler.metrics import Metrics
from tests.bench.results import table
from tests.fixtures import databasebackup, governing_service, statefulset

SIZES = tuple(int(s) for s in os.environ.get("BENCH_SIZES", "1000,5000,10000").split(","))  # BENCH_SIZES=1000,5000
CONCURRENCY = 16  # the reconciler's workers and the baseline's requests in flight
SLOT_WINDOW = 110.0  # how long after its slot a slot's Jobs are counted (the next slot's come at 60 s)
MARGIN = 15.0  # seconds from a controller's start to the earliest slot measured
TUNED = ("--kube-api-qps=1000", "--kube-api-burst=2000", "--concurrent-cron-job-syncs=16")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Slot:
    """One slot's Jobs as the benchmark's watch saw them arrive."""

    who: str
    size: int
    created: int = 0
    lateness: list[float] = field(default_factory=list)
    last_s: float = float("nan")
    rss_mb: float = float("nan")
    writes_per_run: float | None = None

    def quantile(self, q: float) -> float:
        if not self.lateness:
            return float("nan")
        ordered = sorted(self.lateness)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> str:
    kcm = _controller_manager()
    results = [asyncio.run(_measure(size, kcm)) for size in SIZES]
    idle_size = int(os.environ.get("BENCH_IDLE_SIZE", "1000"))  # 0: no idle hour (a quick run)
    idle = asyncio.run(_idle_hours(idle_size)) if idle_size else {}
    return _report(results, idle)


def _report(results: list[tuple[float, list[Slot]]], idle: dict[str, dict[str, int]]) -> str:
    header = [
        "N",
        "controller",
        "Jobs of the slot",
        "lateness p50",
        "p99",
        "max",
        "slot → last Job",
        "peak RSS",
        "API writes per run",
    ]
    lines = []
    for baseline, slots in results:
        for slot in slots:
            lines.append(
                [
                    f"{slot.size:,}",
                    slot.who,
                    f"{slot.created:,} of {slot.size:,}",
                    f"{slot.quantile(0.5):.2f} s",
                    f"{slot.quantile(0.99):.2f} s",
                    f"{max(slot.lateness, default=float('nan')):.2f} s",
                    f"{slot.last_s:.1f} s",
                    f"{slot.rss_mb:.0f} MB",
                    "" if slot.writes_per_run is None else f"{slot.writes_per_run:.2f}",
                ]
            )
        size = slots[0].size
        lines.append([f"{size:,}", "plain creation loop", "", "", "", "", f"{size / baseline:.1f} s", "", "1"])
    verdicts = []
    by_size = {slots[0].size: (baseline, slots) for baseline, slots in results}
    if 1000 in by_size:
        baseline, slots = by_size[1000]
        ours, tuned = slots[-1], slots[1]
        p99, cron_p99 = ours.quantile(0.99), tuned.quantile(0.99)
        floor = 1000 / baseline
        verdicts.append(
            f"- lateness p99 at 1,000: {p99:.2f} s against the tuned CronJob controller's {cron_p99:.2f} s and the "
            f"2 s target: {_verdict(ours.created == 1000 and p99 <= cron_p99 and p99 < 2)} (the plain loop alone "
            f"needs {floor:.1f} s to create 1,000 of these Jobs here)"
        )
    for size, limit in ((5000, 30.0), (10000, 60.0)):
        if size in by_size:
            ours = by_size[size][1][-1]
            ok = ours.created == size and ours.last_s <= limit
            verdicts.append(
                f"- every Job of the slot at {size:,} within {limit:.0f} s: {ours.created:,} Jobs, the last "
                f"{ours.last_s:.1f} s after the slot: {_verdict(ok)}"
            )
    for size, limit in ((5000, 150.0), (10000, 250.0)):
        if size in by_size:
            ours = by_size[size][1][-1]
            ok = ours.rss_mb < limit
            verdicts.append(f"- peak RSS at {size:,}: {ours.rss_mb:.0f} MB (target < {limit:.0f} MB): {_verdict(ok)}")
    for _, slots in results:
        ours = slots[-1]
        if ours.writes_per_run is not None:
            verdicts.append(
                f"- API writes per run at {ours.size:,}: {ours.writes_per_run:.2f} (target ≤ 3: Job, status, Event): "
                f"{_verdict(ours.writes_per_run <= 3)}"
            )
        else:
            verdicts.append(
                f"- API writes per run at {ours.size:,}: not counted, the reconciler was not quiet for 5 s before the "
                f"next slot: {_verdict(False)}"
            )
    for name, hour in idle.items():
        ok = (
            hour["jobs_at_top"] == hour["size"]
            and hour["status_at_top"] == hour["size"]
            and hour["writes_between"] == 0
        )
        verdicts.append(
            f"- idle hour ({name}), {hour['size']:,} × `0 * * * *`: {hour['jobs_at_top']:,} Jobs and "
            f"{hour['status_at_top']:,} status writes at the top of the hour ({hour['events_at_top']:,} Events), "
            f"{hour['writes_between']} writes in the 59 minutes between: {_verdict(ok)}"
        )
    notes = (
        "Lateness is exact per Job (arrival at the benchmark's watch minus the slot). The CronJob controller's own "
        "Jobs are the reconciler's Jobs (its jobTemplate is `backup_job`'s). The plain creation loop is the API "
        "server's ceiling on this machine: N of those Jobs, 16 in flight, no controller."
    )
    return "\n".join([table(header, lines), "", *verdicts, "", notes])


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _controller_manager() -> Path:
    """kube-controller-manager at the API server's version, as `make cluster-up` builds it (cached)."""
    folder = subprocess.run(
        ["bash", str(REPO / "hack/cluster/build.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(folder) / "kube-controller-manager"


async def _measure(size: int, kcm: Path) -> tuple[float, list[Slot]]:
    with ControlPlane.start() as plane:
        api = await api_client(plane.kubeconfig)
        async with api:
            for namespace in ("baseline", "cron-defaults", "cron-tuned", "dbb"):
                plane.kubectl("create", "namespace", namespace)
            sts = statefulset(namespace="dbb")
            del sts["status"]
            plane.kubectl("apply", "-f", "-", input=json.dumps(sts))
            plane.kubectl("apply", "-f", "-", input=json.dumps(governing_service(sts)))  # the host rule's Service
            baseline = await _baseline(api, size)
            print(f"  N={size}: plain loop {size / baseline:.1f} s", flush=True)
            slots: list[Slot] = []
            for who in ("cron-defaults", "cron-tuned", "dbb"):
                if who == "dbb":
                    slot = await _reconciler(plane, api, size)
                else:
                    slot = await _cronjobs(plane, api, kcm, size, who, TUNED if who == "cron-tuned" else ())
                slots.append(slot)
                print(
                    f"  N={size} {slot.who}: {slot.created} Jobs, p50 {slot.quantile(0.5):.2f} s, p99 "
                    f"{slot.quantile(0.99):.2f} s, last {slot.last_s:.1f} s, RSS {slot.rss_mb:.0f} MB, writes/run "
                    f"{slot.writes_per_run}",
                    flush=True,
                )
    return baseline, slots


def _template_job(namespace: str, index: int) -> dict[str, Any]:
    """The Job the reconciler creates for DatabaseBackup `db-<index>` (the same builder, the same spec)."""
    spec, _ = parse_spec(default_spec(databasebackup()["spec"], namespace=namespace, statefulset=statefulset()))
    assert spec is not None
    owner = databasebackup(name=f"db-{index:05d}", namespace=namespace)
    owner["metadata"]["uid"] = f"00000000-0000-0000-0000-{index:012d}"
    return backup_job(owner, spec, scheduled=datetime.now(UTC), runner=RunnerSettings())


async def _baseline(api: client.ApiClient, size: int) -> float:
    batch = client.BatchV1Api(api)

    async def create(index: int) -> None:
        await batch.create_namespaced_job("baseline", body(_template_job("baseline", index)))

    started = time.monotonic()
    await _bounded(create(i) for i in range(size))
    return size / (time.monotonic() - started)


async def _cronjobs(
    plane: ControlPlane, api: client.ApiClient, kcm: Path, size: int, namespace: str, flags: tuple[str, ...]
) -> Slot:
    batch = client.BatchV1Api(api)

    async def create(index: int) -> None:
        job = _template_job(namespace, index)
        metadata = job["metadata"]
        cronjob = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": f"db-{index:05d}", "namespace": namespace, "labels": metadata["labels"]},
            "spec": {
                "schedule": "* * * * *",
                "concurrencyPolicy": "Allow",
                "jobTemplate": {
                    "metadata": {"labels": metadata["labels"], "annotations": metadata["annotations"]},
                    "spec": job["spec"],
                },
            },
        }
        await batch.create_namespaced_cron_job(namespace, body(cronjob))

    await _minute_start()
    await _bounded((create(i) for i in range(size)), limit=32)
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on in the loop
        [
            str(kcm),
            f"--kubeconfig={plane.kubeconfig}",
            "--controllers=cronjob",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=0",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        slot = _next_minute(datetime.now(UTC) + timedelta(seconds=MARGIN))
        who = "CronJob controller, tuned" if flags else "CronJob controller, defaults"
        measured = await _watch_slot(api, namespace, size, slot, _cronjob_slot, who)
        measured.rss_mb = _peak_rss_mb(process.pid)
        return measured
    finally:
        process.terminate()
        process.wait(30)
        await batch.delete_collection_namespaced_cron_job(namespace)
        await _delete_jobs(batch, namespace)


async def _reconciler(plane: ControlPlane, api: client.ApiClient, size: int) -> Slot:
    custom = client.CustomObjectsApi(api)

    async def create(index: int) -> None:
        obj = databasebackup(name=f"db-{index:05d}", namespace="dbb", schedule="* * * * *", concurrencyPolicy="Allow")
        await custom.create_namespaced_custom_object(GROUP, VERSION, "dbb", PLURAL, body(obj))

    await _minute_start()
    await _bounded((create(i) for i in range(size)), limit=32)
    port, cert_dir = free_port(), plane.workdir / "reconciler-tls"
    ensure_serving_certificate(cert_dir, ["127.0.0.1"])
    scrape = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on in the loop
        [
            str(Path(sys.executable).parent / "dbb-reconciler"),
            f"--kubeconfig={plane.kubeconfig}",
            "--namespace=dbb",
            f"--workers={CONCURRENCY}",
            "--health-host=127.0.0.1",
            f"--health-port={port}",
            f"--cert-dir={cert_dir}",
            "--no-metrics-auth",
            "--log-level=warning",
        ],
    )
    try:
        slot = _next_minute(datetime.now(UTC) + timedelta(seconds=MARGIN))
        # Writes from the slot on (the first status of each object comes before it, unless the initial pass is
        # still going at the slot).
        watching = asyncio.create_task(_watch_slot(api, "dbb", size, slot, _our_slot, "dbb-reconciler"))
        await _until(lambda: _at(slot), seconds=120, every=0.05)
        writes_before = _metric(port, scrape, "dbb_api_requests_total")
        measured = await watching
        quiet = await _quiet(port, scrape, seconds=5, until=slot + timedelta(seconds=58))
        if quiet is not None:
            measured.writes_per_run = (quiet - writes_before) / max(measured.created, 1)
        measured.rss_mb = _peak_rss_mb(process.pid)
        return measured
    finally:
        process.terminate()
        process.wait(30)
        await _delete_jobs(client.BatchV1Api(api), "dbb")


def _cronjob_slot(job: dict[str, Any]) -> datetime | None:
    """The CronJob controller names each Job `<cronjob>-<scheduled time in minutes since the epoch>`."""
    suffix = job["metadata"]["name"].rsplit("-", 1)[-1]
    return datetime.fromtimestamp(int(suffix) * 60, UTC) if suffix.isdigit() else None


def _our_slot(job: dict[str, Any]) -> datetime | None:
    scheduled = (job["metadata"].get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME)
    return datetime.fromisoformat(scheduled) if scheduled else None


async def _watch_slot(
    api: client.ApiClient,
    namespace: str,
    size: int,
    slot: datetime,
    slot_of: Callable[[dict[str, Any]], datetime | None],
    who: str,
) -> Slot:
    """Jobs of `slot` as they reach a watch of the namespace, each timed as its line arrives (before decoding),
    until all `size` are there or SLOT_WINDOW has passed."""
    measured = Slot(who, size)
    batch = client.BatchV1Api(api)
    listed = await raw(batch.list_namespaced_job(namespace, limit=1, _preload_content=False))
    version = listed["metadata"]["resourceVersion"]
    deadline = slot + timedelta(seconds=SLOT_WINDOW)
    seen: set[str] = set()
    async with _watch_lines(batch, namespace, version, deadline) as lines:
        async for arrived, line in lines:
            event = json.loads(line)
            if event.get("type") != "ADDED":
                continue
            job = event["object"]
            if slot_of(job) != slot or job["metadata"]["name"] in seen:
                continue
            seen.add(job["metadata"]["name"])
            late = (arrived - slot).total_seconds()
            measured.lateness.append(late)
            measured.last_s = max(late, 0.0 if measured.last_s != measured.last_s else measured.last_s)
            if len(seen) >= size:
                break
    measured.created = len(seen)
    return measured


@contextlib.asynccontextmanager
async def _watch_lines(
    batch: client.BatchV1Api, namespace: str, version: str, deadline: datetime
) -> AsyncIterator[AsyncIterator[tuple[datetime, bytes]]]:
    timeout = max((deadline - datetime.now(UTC)).total_seconds(), 1.0)
    response: Any = await batch.list_namespaced_job(
        namespace,
        watch=True,
        resource_version=version,
        allow_watch_bookmarks=False,
        timeout_seconds=int(timeout) + 1,
        _preload_content=False,
        _request_timeout=timeout + 30,
    )

    async def lines() -> AsyncIterator[tuple[datetime, bytes]]:
        buffer = b""
        while datetime.now(UTC) < deadline:
            try:
                chunk = await asyncio.wait_for(response.content.readany(), timeout=1.0)
            except TimeoutError:
                continue
            if not chunk:
                return
            arrived = datetime.now(UTC)
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                if line.strip():
                    yield arrived, line

    try:
        yield lines()
    finally:
        response.release()


async def _quiet(port: int, scrape: ssl.SSLContext, *, seconds: float, until: datetime) -> float | None:
    """The reconciler's write count once it made no write for `seconds`; None if it was not quiet by `until`."""
    last, since = _metric(port, scrape, "dbb_api_requests_total"), time.monotonic()
    while datetime.now(UTC) < until:
        await asyncio.sleep(0.25)
        now = _metric(port, scrape, "dbb_api_requests_total")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return now
    return None


def _next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


async def _minute_start() -> None:
    """Just after a minute boundary, so that no boundary falls between the objects' creation and the slot measured
    (a controller would owe every object that earlier slot and make its Jobs at start)."""
    now = datetime.now(UTC)
    if now.second >= 2:
        boundary = _next_minute(now) + timedelta(seconds=1)
        await _until(lambda: _at(boundary), seconds=90, every=0.2)


async def _at(moment: datetime) -> bool:
    return datetime.now(UTC) >= moment


async def _delete_jobs(batch: client.BatchV1Api, namespace: str) -> None:
    """What kubelets and the Job controller would do in time: the Jobs end. Here they are simply deleted."""
    await batch.delete_collection_namespaced_job(namespace, propagation_policy="Background", _request_timeout=300)


# --- the idle hour ---------------------------------------------------------------------------------------------


async def _idle_hours(size: int) -> dict[str, dict[str, int]]:
    with ControlPlane.start() as plane:
        api = await api_client(plane.kubeconfig)
        async with api:
            found = {}
            for name, restart in (("straight through", False), ("restarted at minute 30", True)):
                namespace = "idle-restarted" if restart else "idle"
                plane.kubectl("create", "namespace", namespace)
                sts = statefulset(namespace=namespace)
                del sts["status"]
                plane.kubectl("apply", "-f", "-", input=json.dumps(sts))
                plane.kubectl("apply", "-f", "-", input=json.dumps(governing_service(sts)))  # the host rule's Service
                found[name] = await _idle_hour(api, namespace, size, restart=restart)
                print(f"  idle hour ({name}): {found[name]}", flush=True)
    return found


async def _idle_hour(api: client.ApiClient, namespace: str, size: int, *, restart: bool) -> dict[str, int]:
    """N objects `0 * * * *`, the controller in process on a clock stepped a minute at a time from the first minute
    after their creation through one whole hour: the writes of each step, once the controller is quiet."""
    custom = client.CustomObjectsApi(api)

    async def create(index: int) -> None:
        obj = databasebackup(name=f"db-{index:05d}", namespace=namespace, schedule="0 * * * *")
        obj["spec"]["concurrencyPolicy"] = "Allow"
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(obj))

    await _bounded((create(i) for i in range(size)), limit=32)
    clock = {"t": _next_minute(datetime.now(UTC))}
    if clock["t"].minute == 0:
        clock["t"] += timedelta(minutes=1)  # start between two tops of the hour
    metrics = Metrics()
    counts = {"size": size, "jobs_at_top": 0, "status_at_top": 0, "events_at_top": 0, "writes_between": 0}
    async with _running(api, namespace, metrics, clock) as controller:
        await _until(lambda: _settled(controller), seconds=900)
        await _quiet_in_process(metrics)
        for step in range(60):
            if restart and step == 30:
                break
            clock["t"] += timedelta(minutes=1)
            await _step(controller, metrics, counts, clock["t"])
        await _settle_the_hour(controller, metrics, counts)
    if restart:
        async with _running(api, namespace, metrics, clock) as controller:
            await _until(lambda: _settled(controller), seconds=900)
            before = _writes(metrics)
            await _quiet_in_process(metrics)
            counts["writes_between"] += int(_writes(metrics) - before)  # the restart itself: its first sync
            for _ in range(30, 60):
                clock["t"] += timedelta(minutes=1)
                await _step(controller, metrics, counts, clock["t"])
            await _settle_the_hour(controller, metrics, counts)
    return counts


async def _settle_the_hour(controller: Controller, metrics: Metrics, counts: dict[str, int]) -> None:
    """A write that came after the last step settled is the hour's too."""
    before = _writes(metrics)
    await _until(lambda: _settled(controller), seconds=300)
    await _quiet_in_process(metrics)
    counts["writes_between"] += int(_writes(metrics) - before)


async def _step(controller: Controller, metrics: Metrics, counts: dict[str, int], now: datetime) -> None:
    before = {k: _counter(metrics, *k) for k in (("create", "jobs"), ("patch", "databasebackups/status"))}
    writes = _writes(metrics)
    events = _counter(metrics, "create", "events")
    for key in list(controller.backups.store):
        controller.queue.add(key)
    await _until(lambda: _settled(controller), seconds=300)
    if now.minute == 0:
        # What the new Jobs' watch events bring back (status from the Jobs) belongs to the top of the hour too.
        await _quiet_in_process(metrics)
        counts["jobs_at_top"] += int(_counter(metrics, "create", "jobs") - before[("create", "jobs")])
        counts["status_at_top"] += int(
            _counter(metrics, "patch", "databasebackups/status") - before[("patch", "databasebackups/status")]
        )
        counts["events_at_top"] += int(_counter(metrics, "create", "events") - events)
    else:
        counts["writes_between"] += int(_writes(metrics) - writes)


@contextlib.asynccontextmanager
async def _running(
    api: client.ApiClient, namespace: str, metrics: Metrics, clock: dict[str, datetime]
) -> AsyncIterator[Controller]:
    controller = Controller(
        api,
        JobExecutor(api),
        RunnerSettings(),
        metrics,
        namespace=namespace,
        workers=CONCURRENCY,
        clock=lambda: clock["t"],
    )
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _quiet_in_process(metrics: Metrics, seconds: float = 5.0) -> None:
    last, since = _writes(metrics), time.monotonic()
    while time.monotonic() - since < seconds:
        await asyncio.sleep(0.25)
        now = _writes(metrics)
        if now != last:
            last, since = now, time.monotonic()


def _writes(metrics: Metrics) -> float:
    return sum(s.value for m in metrics.registry.collect() for s in m.samples if s.name == "dbb_api_requests_total")


def _counter(metrics: Metrics, verb: str, resource: str) -> float:
    return sum(
        s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == "dbb_api_requests_total" and s.labels.get("resource") == resource and s.labels.get("verb") == verb
    )


async def _settled(controller: Controller) -> bool:
    queue = controller.queue
    return controller.synced and len(queue) == 0 and not queue._processing


# --- helpers ---------------------------------------------------------------------------------------------------


async def _bounded(calls: Iterable[Awaitable[None]], limit: int = CONCURRENCY) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(c) for c in calls))


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, every: float = 0.25) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met in time")
        await asyncio.sleep(every)


def _metric(port: int, scrape: ssl.SSLContext, prefix: str) -> float:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=5, context=scrape) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and not line.startswith("#")
    )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
