"""The reconciler at scale, side by side with the Kubernetes CronJob controller, each on a clean kube-apiserver.

For N = 1,000, 5,000 and 10,000, in the same run, each on a control plane of its own started for it (a controller
must not cache another's objects; both watch the whole cluster, as deployed):
- the ceiling: a plain loop creating N of the very Jobs the reconciler creates (kubernetes-asyncio, 16 in flight);
- kube-controller-manager v1.34 (built from Go modules by `hack/cluster/build.sh`, cached) with
  `--controllers=cronjob`, at its defaults and tuned (`--kube-api-qps=1000 --kube-api-burst=2000
  --concurrent-cron-job-syncs=16`), over N CronJobs `* * * * *` (concurrencyPolicy Allow) whose jobTemplate is the
  Job the reconciler creates for the matching DatabaseBackup (same pod spec, labels, size);
- the reconciler (`dbb-reconciler`, the real process, without `--namespace`) over N DatabaseBackups `* * * * *`
  (Allow).
Both kinds keep HISTORY successful Jobs, and every object starts with that many finished runs of an earlier slot,
so that a run ends as it does in steady state: with the deletion of the oldest.

Each controller is measured the same way, cold: its N objects are created starting just after a minute boundary, the
controller is started, and the slot measured is the first minute boundary at least 15 s after its start (the next
one, when creating N objects and starting took longer). For that one full slot each reports the Jobs created for it,
their lateness p50/p99/max, the seconds until the slot's last Job, and the controller's peak RSS (VmHWM). Lateness
is exact per Job: the moment the Job reached the benchmark's own watch (a raw stream, timed before decoding) minus
its slot (the CronJob controller's name suffix, in minutes since the epoch; our `scheduled-time` annotation).

Then the slot's runs end, as kubelet and the Job controller would end them: once every Job of the slot has arrived,
the benchmark gives each a Pod whose container terminated with the runner's result line as its termination message,
and the Job a Complete status. API writes per run are counted from just before the slot until the controller is
quiet (no write for 5 s; within the minute, before the next slot's Jobs), at the API server: its
`apiserver_request_total` by verb and resource, less the benchmark's own writes (it counts each it sends) and the
API server's own lease renewals. So a run's writes are all there, start to end: its Job, status at the start and at
the end, Events, the history deletion, whichever controller makes them.

Then an idle hour that can fail (N = 1,000): the controller in process with a clock stepped minute by minute
through a whole hour over N DatabaseBackups `0 * * * *`: exactly N Jobs and N status writes at the top of the hour
and no write in the 59 minutes between, counted at the API server; the same again with the controller restarted
(new process state, empty caches) halfway through, the restart's own first pass counted among the minutes between.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from certs.serving import ensure_serving_certificate
from common.backups.defaults import default_spec
from common.backups.model import parse_spec
from common.constants import ANNOTATION_SCHEDULED_TIME, GROUP, PLURAL, VERSION
from common.kube import MERGE_PATCH, api_client, body, raw, sent
from common.logs import configure
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
QUIET = 5.0  # seconds without a write that end a count
TUNED = ("--kube-api-qps=1000", "--kube-api-burst=2000", "--concurrent-cron-job-syncs=16")
REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
HISTORY = 1  # successfulJobsHistoryLimit of both kinds: each run beyond it deletes the oldest, as in steady state
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
# The API server renews its own identity Lease every 10 s; neither controller here takes a Lease.
BACKGROUND = frozenset({"leases"})
# What the runner prints as its result (runner/report.py), as the finished Pods' termination message.
RESULT = {
    "status": "Succeeded",
    "file": "/backups/example-db/nightly-20261206T120000Z.dump.gz",
    "size": 1048576,
    "sha256": "0" * 64,
    "duration": 12.5,
    "verified": True,
}


@dataclass
class Slot:
    """One slot's Jobs as the benchmark's watch saw them arrive, and the writes its runs cost."""

    who: str
    size: int
    created: int = 0
    lateness: list[float] = field(default_factory=list)
    last_s: float = float("nan")
    rss_mb: float = float("nan")
    writes: Counter[str] | None = None  # per kind ("POST jobs"), for the whole slot; None: not quiet in time
    jobs: list[dict[str, Any]] = field(default_factory=list)  # the slot's Jobs as first seen

    def quantile(self, q: float) -> float:
        if not self.lateness:
            return float("nan")
        ordered = sorted(self.lateness)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    @property
    def writes_per_run(self) -> float | None:
        return None if self.writes is None else sum(self.writes.values()) / max(self.created, 1)

    def breakdown(self) -> str:
        if self.writes is None:
            return ""
        runs = max(self.created, 1)
        return ", ".join(f"{kind} {count / runs:.2f}" for kind, count in sorted(self.writes.items()) if count)


class ApiWrites:
    """Writes as the API server counts them (`apiserver_request_total`, by verb and resource/subresource), less the
    benchmark's own, which it declares with `sending` before each."""

    LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)
    LABEL = re.compile(r'(\w+)="([^"]*)"')

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.ours: Counter[str] = Counter()

    def sending(self, verb: str, resource: str) -> None:
        self.ours[f"{verb} {resource}"] += 1

    async def count(self) -> Counter[str]:
        status, text = await asyncio.to_thread(self.plane.get, "/metrics", 30.0)
        if status != 200:
            raise RuntimeError(f"kube-apiserver /metrics answered {status}")
        found: Counter[str] = Counter()
        for match in self.LINE.finditer(text.decode()):
            labels = dict(self.LABEL.findall(match["labels"]))
            if labels.get("verb") not in WRITE_VERBS or labels.get("resource") in BACKGROUND:
                continue
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            found[f"{labels['verb']} {resource}"] += int(float(match["value"]))
        found.subtract(self.ours)
        return found

    async def quiet(self, *, until: datetime, seconds: float = QUIET) -> Counter[str] | None:
        """The count once no write came for `seconds`; None if the writes had not stopped by `until`."""
        last, since = await self.count(), time.monotonic()
        while datetime.now(UTC) < until:
            await asyncio.sleep(1.0)
            now = await self.count()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return now
        return None


def _delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    found = Counter(after)
    found.subtract(before)
    return Counter({kind: count for kind, count in found.items() if count})


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
            per_run = slot.writes_per_run
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
                    "not quiet before the next slot" if per_run is None else f"{per_run:.2f}",
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
        ours, tuned = slots[-1], slots[1]
        mine, theirs = ours.writes_per_run, tuned.writes_per_run
        if mine is None:
            verdicts.append(
                f"- API writes per run at {ours.size:,}: not counted, the reconciler was not quiet for "
                f"{QUIET:.0f} s before the next slot: {_verdict(False)}"
            )
            continue
        against = "" if theirs is None else f" against the tuned CronJob controller's {theirs:.2f}"
        verdicts.append(
            f"- API writes per run at {ours.size:,}, start to end, at the API server: {mine:.2f}{against} "
            f"({ours.breakdown()}): {_verdict(theirs is not None and mine <= theirs)}"
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
    cron = [f"{s.who} at {s.size:,}: {s.breakdown()}" for _, slots in results for s in slots[:2] if s.writes]
    notes = (
        "Lateness is exact per Job (arrival at the benchmark's watch minus the slot). The CronJob controller's own "
        "Jobs are the reconciler's Jobs (its jobTemplate is `backup_job`'s). The plain creation loop is the API "
        "server's ceiling on this machine: N of those Jobs, 16 in flight, no controller. Each controller and the loop "
        "ran on a control plane of their own. API writes per run: every write the API server counted from just "
        "before the slot until the controller was quiet, after the benchmark ended each run (a Pod with the runner's "
        "result, a Complete Job), less the benchmark's own writes, over the slot's runs"
        + (f"; the CronJob controller's, by kind: {'; '.join(cron)}." if cron else ".")
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
            plane.kubectl("create", "namespace", "baseline")
            baseline = await _baseline(api, size)
    print(f"  N={size}: plain loop {size / baseline:.1f} s", flush=True)
    slots: list[Slot] = []
    for who in ("cron-defaults", "cron-tuned", "dbb"):
        with ControlPlane.start() as plane:
            api = await api_client(plane.kubeconfig)
            async with api:
                _database(plane)
                writes = ApiWrites(plane)
                if who == "dbb":
                    slot = await _reconciler(plane, api, writes, size)
                else:
                    slot = await _cronjobs(plane, api, writes, kcm, size, TUNED if who == "cron-tuned" else ())
        slots.append(slot)
        print(
            f"  N={size} {slot.who}: {slot.created} Jobs, p50 {slot.quantile(0.5):.2f} s, p99 "
            f"{slot.quantile(0.99):.2f} s, last {slot.last_s:.1f} s, RSS {slot.rss_mb:.0f} MB, writes/run "
            f"{slot.writes_per_run} ({slot.breakdown()})",
            flush=True,
        )
    return baseline, slots


def _database(plane: ControlPlane, namespace: str = NAMESPACE) -> None:
    """The namespace, the database StatefulSet the DatabaseBackups name and its governing Service (the host
    rule's); on every control plane, so that both controllers see the same cluster."""
    plane.kubectl("create", "namespace", namespace)
    sts = statefulset(namespace=namespace)
    del sts["status"]
    plane.kubectl("apply", "-f", "-", input=json.dumps(sts))
    plane.kubectl("apply", "-f", "-", input=json.dumps(governing_service(sts)))


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
    plane: ControlPlane,
    api: client.ApiClient,
    writes: ApiWrites,
    kcm: Path,
    size: int,
    flags: tuple[str, ...],
) -> Slot:
    batch = client.BatchV1Api(api)
    earlier = _next_minute(datetime.now(UTC)) - timedelta(minutes=3)  # the seeded history's slot

    async def create(index: int) -> None:
        job = _template_job(NAMESPACE, index)
        metadata = job["metadata"]
        cronjob = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": f"db-{index:05d}", "namespace": NAMESPACE, "labels": metadata["labels"]},
            "spec": {
                "schedule": "* * * * *",
                "concurrencyPolicy": "Allow",
                "successfulJobsHistoryLimit": HISTORY,
                "jobTemplate": {
                    "metadata": {"labels": metadata["labels"], "annotations": metadata["annotations"]},
                    "spec": job["spec"],
                },
            },
        }
        created = await raw(batch.create_namespaced_cron_job(NAMESPACE, body(cronjob), _preload_content=False))
        # Its history: a finished Job of an earlier slot, named and owned as the controller names and owns them.
        job["metadata"]["name"] = f"db-{index:05d}-{int(earlier.timestamp()) // 60}"
        job["metadata"]["ownerReferences"] = [_owner_reference(created)]
        await _seed(batch, job, earlier)

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
        who = "CronJob controller, tuned" if flags else "CronJob controller, defaults"
        return await _slot(api, writes, process.pid, size, _cronjob_slot, who)
    finally:
        process.terminate()
        process.wait(30)


async def _reconciler(plane: ControlPlane, api: client.ApiClient, writes: ApiWrites, size: int) -> Slot:
    custom = client.CustomObjectsApi(api)
    batch = client.BatchV1Api(api)
    earlier = _next_minute(datetime.now(UTC)) - timedelta(minutes=3)  # the seeded history's slot
    spec, _ = parse_spec(default_spec(databasebackup()["spec"], namespace=NAMESPACE, statefulset=statefulset()))
    assert spec is not None

    async def create(index: int) -> None:
        obj = databasebackup(
            name=f"db-{index:05d}",
            namespace=NAMESPACE,
            schedule="* * * * *",
            concurrencyPolicy="Allow",
            successfulJobsHistoryLimit=HISTORY,
        )
        created = await raw(
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(obj), _preload_content=False)
        )
        # Its history: a finished Job of an earlier slot, the Job the reconciler would have created for it.
        await _seed(batch, backup_job(created, spec, scheduled=earlier, runner=RunnerSettings()), earlier)

    await _minute_start()
    await _bounded((create(i) for i in range(size)), limit=32)
    port, cert_dir = free_port(), plane.workdir / "reconciler-tls"
    ensure_serving_certificate(cert_dir, ["127.0.0.1"])
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on in the loop
        [
            str(Path(sys.executable).parent / "dbb-reconciler"),
            f"--kubeconfig={plane.kubeconfig}",
            f"--workers={CONCURRENCY}",
            "--health-host=127.0.0.1",
            f"--health-port={port}",
            f"--cert-dir={cert_dir}",
            "--no-metrics-auth",
            "--log-level=warning",
        ],
    )
    try:
        return await _slot(api, writes, process.pid, size, _our_slot, "dbb-reconciler")
    finally:
        process.terminate()
        process.wait(30)


async def _slot(
    api: client.ApiClient,
    writes: ApiWrites,
    pid: int,
    size: int,
    slot_of: Callable[[dict[str, Any]], datetime | None],
    who: str,
) -> Slot:
    """The first full slot after the controller's start: its Jobs' lateness; then its runs ended, and the writes
    from just before the slot until the controller is quiet, if that is before the next slot."""
    slot = _next_minute(datetime.now(UTC) + timedelta(seconds=MARGIN))
    watching = asyncio.create_task(_watch_slot(api, NAMESPACE, size, slot, slot_of, who))
    # A second before the slot: scraping /metrics costs the API server, which the slot must not pay for.
    await _until(lambda: _at(slot - timedelta(seconds=1)), seconds=120, every=0.05)
    before = await writes.count()
    measured = await watching
    measured.rss_mb = _peak_rss_mb(pid)
    next_slot = slot + timedelta(seconds=58)
    if measured.created == size:
        left = (next_slot - datetime.now(UTC)).total_seconds()
        # Writes after the next slot cannot be told from its runs': a slot not ended and quiet by then is not counted.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_bounded(_finish(api, writes, job) for job in measured.jobs), max(left, 0.1))
            quiet = await writes.quiet(until=next_slot)
            measured.writes = None if quiet is None else _delta(quiet, before)
    measured.rss_mb = max(measured.rss_mb, _peak_rss_mb(pid))
    measured.jobs = []
    return measured


def _owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    metadata = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def _seed(batch: client.BatchV1Api, job: dict[str, Any], slot: datetime) -> None:
    """A finished run of an earlier slot (made before the controller starts: not counted)."""
    await sent(batch.create_namespaced_job(job["metadata"]["namespace"], body(job), _preload_content=False))
    ended = _rfc3339(slot + timedelta(seconds=20))
    await sent(
        batch.patch_namespaced_job_status(
            job["metadata"]["name"],
            job["metadata"]["namespace"],
            body({"status": _complete(_rfc3339(slot), ended)}),
            _preload_content=False,
            **MERGE_PATCH,
        )
    )


async def _finish(api: client.ApiClient, writes: ApiWrites, job: dict[str, Any]) -> None:
    """What kubelet and the Job controller would do for a run that succeeded: a Pod whose container terminated
    with the runner's result line as its termination message, then the Job's Complete status."""
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    metadata = job["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    now = _rfc3339(datetime.now(UTC))
    labels = {**((job["spec"]["template"].get("metadata") or {}).get("labels") or {}), "job-name": name}
    pod = {
        "metadata": {
            "name": f"{name}-run",
            "labels": labels,
            "ownerReferences": [_owner_reference(job)],
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "backup", "image": "dbb:bench"}]},
    }
    writes.sending("POST", "pods")
    await sent(core.create_namespaced_pod(namespace, body(pod), _preload_content=False))
    terminated = {"exitCode": 0, "reason": "Completed", "message": json.dumps(RESULT), "startedAt": now}
    container = {
        "name": "backup",
        "image": "dbb:bench",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {**terminated, "finishedAt": now}},
    }
    writes.sending("PATCH", "pods/status")
    await sent(
        core.patch_namespaced_pod_status(
            f"{name}-run",
            namespace,
            body({"status": {"phase": "Succeeded", "containerStatuses": [container]}}),
            _preload_content=False,
            **MERGE_PATCH,
        )
    )
    writes.sending("PATCH", "jobs/status")
    await sent(
        batch.patch_namespaced_job_status(
            name, namespace, body({"status": _complete(now, now)}), _preload_content=False, **MERGE_PATCH
        )
    )


def _complete(started: str, ended: str) -> dict[str, Any]:
    """A succeeded Job's status as the Job controller writes it (recent versions want SuccessCriteriaMet first)."""
    return {
        "startTime": started,
        "completionTime": ended,
        "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": ended},
            {"type": "Complete", "status": "True", "lastTransitionTime": ended},
        ],
    }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
            measured.jobs.append(job)
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


# --- the idle hour ---------------------------------------------------------------------------------------------


async def _idle_hours(size: int) -> dict[str, dict[str, int]]:
    configure("warning")  # as deployed: the in-process controller would log every Job it creates
    found = {}
    for name, restart in (("straight through", False), ("restarted at minute 30", True)):
        with ControlPlane.start() as plane:
            api = await api_client(plane.kubeconfig)
            async with api:
                _database(plane)
                found[name] = await _idle_hour(api, ApiWrites(plane), size, restart=restart)
        print(f"  idle hour ({name}): {found[name]}", flush=True)
    return found


async def _idle_hour(api: client.ApiClient, writes: ApiWrites, size: int, *, restart: bool) -> dict[str, int]:
    """N objects `0 * * * *`, the controller in process on a clock stepped a minute at a time from the first minute
    after their creation through one whole hour: the writes of each step, counted at the API server once the
    controller is quiet. The count runs on without a gap across the restart: its first pass is the minute's."""
    custom = client.CustomObjectsApi(api)

    async def create(index: int) -> None:
        obj = databasebackup(name=f"db-{index:05d}", namespace=NAMESPACE, schedule="0 * * * *")
        obj["spec"]["concurrencyPolicy"] = "Allow"
        await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(obj))

    await _bounded((create(i) for i in range(size)), limit=32)
    clock = {"t": _next_minute(datetime.now(UTC))}
    if clock["t"].minute == 0:
        clock["t"] += timedelta(minutes=1)  # start between two tops of the hour
    metrics = Metrics()
    counts = {"size": size, "jobs_at_top": 0, "status_at_top": 0, "events_at_top": 0, "writes_between": 0}
    async with _running(api, metrics, clock) as controller:
        await _until(lambda: _settled(controller), seconds=900)
        await _quiet_in_process(metrics)
        last = await writes.count()  # the hour starts here: its first pass (statuses of new objects) is before
        for step in range(60):
            if restart and step == 30:
                break
            clock["t"] += timedelta(minutes=1)
            last = await _step(controller, metrics, writes, counts, clock["t"], last)
    if restart:
        async with _running(api, metrics, clock) as controller:
            await _until(lambda: _settled(controller), seconds=900)
            for _ in range(30, 60):
                clock["t"] += timedelta(minutes=1)
                last = await _step(controller, metrics, writes, counts, clock["t"], last)
    # A write that came after the last step settled is the hour's too: the controllers are gone, the count stands.
    final = await writes.quiet(until=datetime.now(UTC) + timedelta(minutes=5))
    if final is None:
        raise RuntimeError("writes went on after the idle hour's controller stopped")
    counts["writes_between"] += sum(_delta(final, last).values())
    return counts


async def _step(
    controller: Controller,
    metrics: Metrics,
    writes: ApiWrites,
    counts: dict[str, int],
    now: datetime,
    last: Counter[str],
) -> Counter[str]:
    """One minute: every object looked at (as its requeue would), then the writes since `last`."""
    for key in list(controller.backups.store):
        controller.queue.add(key)
    await _until(lambda: _settled(controller), seconds=300)
    # What the new Jobs' watch events bring back (status from the Jobs) belongs to the minute too. The in-process
    # counter only says when the controller went quiet; the count is the API server's.
    await _quiet_in_process(metrics)
    found = await writes.count()
    made = _delta(found, last)
    if now.minute == 0:
        counts["jobs_at_top"] += made.pop("POST jobs", 0)
        counts["status_at_top"] += made.pop("PATCH databasebackups/status", 0)
        counts["events_at_top"] += made.pop("POST events", 0)
    counts["writes_between"] += sum(made.values())
    return found


@contextlib.asynccontextmanager
async def _running(api: client.ApiClient, metrics: Metrics, clock: dict[str, datetime]) -> AsyncIterator[Controller]:
    """The controller over the whole cluster, as deployed."""
    controller = Controller(
        api,
        JobExecutor(api),
        RunnerSettings(),
        metrics,
        workers=CONCURRENCY,
        clock=lambda: clock["t"],
    )
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _quiet_in_process(metrics: Metrics, seconds: float = QUIET) -> None:
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
        try:
            async with gate:
                await call
        finally:
            if inspect.iscoroutine(call):
                call.close()  # cancelled at the gate, it never ran: closed, not left unawaited

    await asyncio.gather(*(one(c) for c in calls))


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, every: float = 0.25) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met in time")
        await asyncio.sleep(every)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
