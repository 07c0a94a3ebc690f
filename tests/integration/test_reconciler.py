"""The reconciler on a real API server: Jobs on schedule with the right name, owner, volume and env; status and
Events from finished Jobs; no second Job for a slot after a restart; the admission guard; backup now.

No kubelet or Job controller runs here: tests finish Jobs themselves, as envtest users do, and create the Pod
that would carry the runner's termination message."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from common.constants import GROUP, PLURAL, VERSION
from common.informer import Informer
from common.kube import MERGE_PATCH, api_client, body, raw
from common.names import job_name
from common.schedule import parse_schedule, window_offset
from hack.harness.controlplane import ControlPlane
from reconciler.backup_controller import Controller
from reconciler.capacity import Capacity, Caps
from reconciler.executor import JobExecutor
from reconciler.jobs import RunnerSettings
from reconciler.metrics import Metrics
from tests.fixtures import databasebackup, governing_service, page_samples, statefulset

PASSWORD = "s3cret-Pa55word-never-shown"


@dataclass
class Clock:
    """Real time plus an offset the test sets: the controller's timers stay real, its `now` is ours."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def just_past_next_minute(self) -> datetime:
        real = datetime.now(UTC)
        slot = real.replace(second=0, microsecond=0) + timedelta(minutes=1)
        self.offset = slot + timedelta(milliseconds=500) - real
        return slot


@dataclass
class Cluster:
    api: client.ApiClient
    namespace: str
    plane: ControlPlane

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    async def backup(self, name: str = "nightly") -> dict[str, Any]:
        return await raw(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _preload_content=False
            )
        )

    async def jobs(self) -> list[dict[str, Any]]:
        listed = await raw(self.batch.list_namespaced_job(self.namespace, _preload_content=False))
        return list(listed["items"])

    async def events(self, name: str = "nightly") -> list[str]:
        listed = await raw(
            self.core.list_namespaced_event(
                self.namespace, field_selector=f"involvedObject.name={name}", _preload_content=False
            )
        )
        return [f"{e['type']} {e['reason']}: {e['message']}" for e in listed["items"]]

    async def create_database(self, name: str = "example-db", *, service: bool = True) -> None:
        sts = statefulset(name=name, namespace=self.namespace)
        del sts["status"]
        await client.AppsV1Api(self.api).create_namespaced_stateful_set(self.namespace, body(sts))
        if service:
            await self.core.create_namespaced_service(self.namespace, body(governing_service(sts)))
        await self.core.create_namespaced_secret(
            self.namespace, body({"metadata": {"name": f"{name}-credentials"}, "stringData": {"password": PASSWORD}})
        )

    async def create_backup(self, name: str = "nightly", **spec: Any) -> dict[str, Any]:
        obj = databasebackup(name=name, namespace=self.namespace, **{"schedule": "* * * * *", **spec})
        return await raw(
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body(obj), _preload_content=False
            )
        )

    async def pod(self, job: dict[str, Any], phase: str, state: dict[str, Any]) -> str:
        """What the Job controller and kubelet would make: the Job's Pod, its container in `state`."""
        name = job["metadata"]["name"]
        labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": name}
        pod = {
            "metadata": {"name": f"{name}-abcde", "labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "backup", "image": "x"}]},
        }
        await self.core.create_namespaced_pod(self.namespace, body(pod))
        container = {"name": "backup", "image": "x", "imageID": "", "ready": False, "restartCount": 0, "state": state}
        status = {"phase": phase, "containerStatuses": [container]}
        await self.core.patch_namespaced_pod_status(
            f"{name}-abcde", self.namespace, body({"status": status}), **MERGE_PATCH
        )
        return f"{name}-abcde"

    async def finish(self, job: dict[str, Any], *, succeeded: bool, message: str | None = None) -> None:
        """What the Job controller and kubelet would do: a Pod that ran (with the runner's termination message)
        and the Job's final status."""
        name = job["metadata"]["name"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if message is not None:
            terminated = {
                "exitCode": 0 if succeeded else 1,
                "message": message,
                "reason": "Completed",
                "startedAt": now,
                "finishedAt": now,
            }
            await self.pod(job, "Succeeded" if succeeded else "Failed", {"terminated": terminated})
        job_status: dict[str, Any]
        if succeeded:
            job_status = {
                "startTime": now,
                "completionTime": now,
                "succeeded": 1,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now},
                ],
            }
        else:
            job_status = {
                "startTime": now,
                "failed": 1,
                "conditions": [
                    {
                        "type": "FailureTarget",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "x",
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                        "lastTransitionTime": now,
                    },
                ],
            }
        await self.batch.patch_namespaced_job_status(name, self.namespace, body({"status": job_status}), **MERGE_PATCH)


@pytest.fixture
async def cluster(control_plane: ControlPlane, namespace: str) -> AsyncIterator[Cluster]:
    api = await api_client(control_plane.kubeconfig)
    async with api:
        yield Cluster(api, namespace, control_plane)


@contextlib.asynccontextmanager
async def running(
    cluster: Cluster, clock: Clock, metrics: Metrics | None = None, capacity: Capacity | None = None
) -> AsyncIterator[Controller]:
    controller = Controller(
        cluster.api,
        JobExecutor(cluster.api),
        RunnerSettings(image="dbb:test"),
        metrics or Metrics(),
        namespace=cluster.namespace,
        workers=4,
        clock=clock,
        capacity=capacity,
    )
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], Any], seconds: float = 20.0) -> Any:
    """Poll an async check until it returns something truthy."""
    async with asyncio.timeout(seconds):
        while not (result := await check()):  # noqa: ASYNC110 - polls the API server
            await asyncio.sleep(0.1)
    return result


async def test_a_due_backup_gets_its_job_with_name_owner_volume_and_no_secret(cluster: Cluster) -> None:
    await cluster.create_database()
    obj = await cluster.create_backup()
    clock = Clock()
    slot = clock.just_past_next_minute()
    metrics = Metrics()
    async with running(cluster, clock, metrics):
        jobs = await until(cluster.jobs)
    assert [j["metadata"]["name"] for j in jobs] == [job_name("nightly", slot)]
    job = jobs[0]
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (
        "DatabaseBackup",
        "nightly",
        obj["metadata"]["uid"],
        True,
        True,
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {"name": "backups", "persistentVolumeClaim": {"claimName": "example-db-backups"}}
    env = pod["containers"][0]["env"]
    assert {
        "name": "DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "example-db-credentials", "key": "password"}},
    } in env
    assert PASSWORD not in json.dumps(job)
    assert f"--host=example-db.{cluster.namespace}.svc" in pod["containers"][0]["args"]
    assert _count(metrics, "dbb_job_creation_lateness_seconds_count") == 1
    assert 0.4 < _count(metrics, "dbb_job_creation_lateness_seconds_sum") < 5  # the clock stood 0.5 s past the slot


async def test_the_caches_keep_only_what_the_reconcile_reads(cluster: Cluster) -> None:
    await cluster.create_database()
    await cluster.create_backup()
    clock = Clock()
    clock.just_past_next_minute()
    async with running(cluster, clock) as controller:
        job = (await until(cluster.jobs))[0]
        cached = await until(lambda: _cached(controller, cluster.namespace, job["metadata"]["name"]))
        statefulset = controller.statefulsets.get(cluster.namespace, "example-db")
    assert set(cached) == {"apiVersion", "kind", "metadata", "status"}  # no pod template
    assert "managedFields" not in cached["metadata"]
    assert statefulset is not None
    assert set(statefulset["spec"]) == {"serviceName", "volumeClaimTemplates", "template"}


async def _cached(controller: Controller, namespace: str, name: str) -> dict[str, Any] | None:
    return controller.jobs.get(namespace, name)


async def test_status_and_events_follow_a_successful_run(cluster: Cluster) -> None:
    await cluster.create_database()
    await cluster.create_backup()
    clock = Clock()
    clock.just_past_next_minute()
    result = {
        "status": "Succeeded",
        "file": "/backups/example-db/example-db-20261127T100000Z.dump.gz",
        "size": 4096,
        "sha256": "cd" * 32,
        "duration": 3.2,
    }
    async with running(cluster, clock):
        job = (await until(cluster.jobs))[0]
        running_status = await until(lambda: _status_field(cluster, "phase", "Running"))
        assert running_status["inProgress"] is True
        await cluster.finish(job, succeeded=True, message=json.dumps(result))
        status = await until(lambda: _status_field(cluster, "phase", "Succeeded"))
        events = await until(lambda: _with_reason(cluster, "BackupSucceeded"))
    assert status["inProgress"] is False
    assert status["lastBackup"]["file"] == result["file"]
    assert status["lastBackup"]["sha256"] == "cd" * 32
    assert status["lastBackup"]["duration"] == "3.2s"
    assert status["lastBackupTime"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "BackupSucceeded": "True"}
    assert any("Normal Scheduled: Started backup Job" in e for e in events)
    assert any(f"wrote {result['file']} (4,096 bytes) in 3.2s" in e for e in events)
    wait = cluster.plane.kubectl(
        "wait", "--for=condition=Ready", "dbb/nightly", "-n", cluster.namespace, "--timeout=10s"
    )
    assert "condition met" in wait.stdout


async def test_each_databasebackup_has_its_series_until_it_is_deleted(cluster: Cluster) -> None:
    await cluster.create_database()
    await cluster.create_backup()
    clock = Clock()
    clock.just_past_next_minute()
    metrics = Metrics()
    result = {"status": "Succeeded", "file": "/backups/example-db/x.dump.gz", "size": 4096, "sha256": "cd" * 32}
    async with running(cluster, clock, metrics):
        job = (await until(cluster.jobs))[0]
        await cluster.finish(job, succeeded=True, message=json.dumps(result))
        status = await until(lambda: _status_field(cluster, "phase", "Succeeded"))
        assert status["lastBackupTime"]
        assert _count(metrics, "dbb_backup_last_size_bytes", name="nightly") == 4096
        success = _count(metrics, "dbb_backup_last_success_timestamp_seconds", name="nightly")
        assert success == datetime.fromisoformat(status["lastBackupTime"]).timestamp()
        # The controller's clock stands half a second past the slot after this run (the test's clock runs ahead).
        assert 0 < _count(metrics, "dbb_backup_overdue_seconds", name="nightly") < 60
        # Its database is covered; with the DatabaseBackup gone, it is reported unprotected.
        protected = {"namespace": cluster.namespace, "statefulset": "example-db"}
        assert _count(metrics, "dbb_database_protected", **protected) == 1
        await cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.namespace, PLURAL, "nightly")
        await until(lambda: _no_series(metrics, "nightly"))
        assert [s.value for s in page_samples(metrics.exposition()) if protected.items() <= s.labels.items()] == [0]


async def _no_series(metrics: Metrics, name: str) -> bool:
    return not any(s.labels.get("name") == name for s in page_samples(metrics.exposition()))


async def test_a_failed_run_is_reported_with_the_runner_reason(cluster: Cluster) -> None:
    await cluster.create_database()
    await cluster.create_backup()
    clock = Clock()
    clock.just_past_next_minute()
    failure = {"status": "Failed", "reason": "DumpFailed", "message": "pg_dump: connection to server refused"}
    async with running(cluster, clock):
        job = (await until(cluster.jobs))[0]
        await cluster.finish(job, succeeded=False, message=json.dumps(failure))
        status = await until(lambda: _status_field(cluster, "phase", "Failed"))
        events = await until(lambda: _with_reason(cluster, "BackupFailed"))
    assert status["lastFailure"]["reason"] == "DumpFailed"
    assert status["lastFailure"]["message"] == "pg_dump: connection to server refused"
    assert status["consecutiveFailures"] == 1
    assert any("Warning BackupFailed" in e and "connection to server refused" in e for e in events)
    assert PASSWORD not in json.dumps(status) + json.dumps(events)


async def test_a_run_whose_pod_cannot_start_fails_with_the_kubelets_words(cluster: Cluster) -> None:
    await cluster.create_database()
    await cluster.create_backup()
    clock = Clock()
    clock.just_past_next_minute()
    kubelet = "couldn't find key username in Secret shop/example-db-credentials"
    async with running(cluster, clock):
        job = (await until(cluster.jobs))[0]
        name = job["metadata"]["name"]
        clock.offset += timedelta(seconds=40)  # past the 30 s grace of a config error
        waiting = {"reason": "CreateContainerConfigError", "message": kubelet}
        pod = await cluster.pod(job, "Pending", {"waiting": waiting})
        ended = await until(lambda: _job_ended_by_us(cluster, name))
        # What the Job controller does once the deadline is past.
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        failed = {
            "status": "True",
            "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline",
            "lastTransitionTime": now,
        }
        conditions = [{"type": "FailureTarget", **failed}, {"type": "Failed", **failed}]
        await cluster.batch.patch_namespaced_job_status(
            name,
            cluster.namespace,
            body({"status": {"startTime": now, "failed": 1, "conditions": conditions}}),
            **MERGE_PATCH,
        )
        backup = await until(lambda: _status_field(cluster, "phase", "Failed"))
        events = await until(lambda: _with_reason(cluster, "BackupFailed"))
    assert ended["spec"]["activeDeadlineSeconds"] == 1  # the API server took the cut
    assert backup["lastFailure"]["reason"] == "PodConfigError"
    assert backup["lastFailure"]["message"] == (
        f"Pod {pod} cannot start: container backup: CreateContainerConfigError: {kubelet}"
    )
    assert any("Warning BackupFailed" in e and "PodConfigError" in e for e in events)


async def _job_ended_by_us(cluster: Cluster, name: str) -> dict[str, Any] | None:
    job = await raw(cluster.batch.read_namespaced_job(name, cluster.namespace, _preload_content=False))
    return job if "databases.test.io/cannot-start" in (job["metadata"].get("annotations") or {}) else None


async def test_a_restart_mid_run_creates_no_second_job_for_the_slot(cluster: Cluster) -> None:
    await cluster.create_database()
    await cluster.create_backup()
    clock = Clock()
    clock.just_past_next_minute()
    async with running(cluster, clock):
        await until(cluster.jobs)
    # A fresh reconciler (empty caches), and one that starts while the old one's status write may be lost:
    # wipe lastScheduleTime as if the crash came between creating the Job and writing status.
    await cluster.custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        cluster.namespace,
        PLURAL,
        "nightly",
        body({"status": {"lastScheduleTime": None}}),
        **MERGE_PATCH,
    )
    async with running(cluster, clock) as controller:
        status = await until(lambda: _status_field(cluster, "lastScheduleTime"))
        await until(lambda: _settled(cluster, controller))
        jobs = await cluster.jobs()
    assert len(jobs) == 1
    assert status["active"] == [{"name": jobs[0]["metadata"]["name"]}]


async def test_an_invalid_object_gets_a_condition_and_an_event_not_a_retry_loop(cluster: Cluster) -> None:
    # Created around the webhook (this namespace is not judged by it): the reconciler's own guard must catch it.
    await cluster.create_database()
    await cluster.create_backup(schedule="0 0 31 2 *")
    metrics = Metrics()
    async with running(cluster, Clock(), metrics) as controller:
        status = await until(lambda: _status_field(cluster, "phase", "Invalid"))
        events = await until(lambda: _with_reason(cluster, "InvalidSpec"))
        await until(lambda: _settled(cluster, controller))
        # Settled with no failure backing off and no requeue booked: nothing makes it look again until the object
        # changes.
        assert controller.queue.booked((cluster.namespace, "nightly")) is None
    assert _count(metrics, "dbb_reconciles_total", result="error") == 0
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "never fires" in ready["message"]
    assert len(events) == 1
    assert await cluster.jobs() == []


async def test_a_missing_database_waits_and_resumes_when_it_appears(cluster: Cluster) -> None:
    await cluster.create_backup()
    clock = Clock()
    async with running(cluster, clock):
        await until(lambda: _status_field(cluster, "phase", "Pending"))
        assert any(
            'StatefulSet "example-db" not found' in e
            for e in await until(lambda: _with_reason(cluster, "DatabaseNotFound"))
        )
        await cluster.create_database()
        status = await until(lambda: _status_field(cluster, "phase", "Scheduled"))
    assert status["nextBackupTime"]


async def test_a_backup_refused_for_a_missing_service_runs_as_soon_as_the_service_appears(cluster: Cluster) -> None:
    # The host rule refuses while the Service is missing; its creation brings the object back at once, well before
    # the minute after which a refused object is looked at again anyway.
    await cluster.create_database(service=False)
    await cluster.create_backup()
    async with running(cluster, Clock()):
        refused = await until(lambda: _status_field(cluster, "phase", "Invalid"))
        ready = next(c for c in refused["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "Refused"
        assert f'no Service "example-db" in namespace "{cluster.namespace}"' in ready["message"]
        sts = statefulset(namespace=cluster.namespace)
        await cluster.core.create_namespaced_service(cluster.namespace, body(governing_service(sts)))
        await until(lambda: _status_field(cluster, "phase", "Scheduled"), seconds=30)


async def test_backup_now_starts_one_run_at_once(cluster: Cluster) -> None:
    await cluster.create_database()
    await cluster.create_backup(schedule="@yearly")
    async with running(cluster, Clock()) as controller:
        await until(lambda: _status_field(cluster, "phase", "Scheduled"))
        cluster.plane.kubectl(
            "annotate", "dbb", "nightly", "-n", cluster.namespace, "databases.test.io/backup-now=first"
        )
        jobs = await until(cluster.jobs)
        status = await until(lambda: _status_field(cluster, "lastBackupNowRequest", "first"))
        await until(lambda: _settled(cluster, controller))
        assert len(await cluster.jobs()) == 1
    assert jobs[0]["metadata"]["name"].startswith("nightly-now-")
    assert status["phase"] == "Running"


async def test_replace_starts_the_new_run_only_once_the_old_job_is_gone(cluster: Cluster) -> None:
    # No garbage collector runs here: a Job deleted in the foreground keeps its deletionTimestamp and the
    # foregroundDeletion finalizer until the test, playing the collector, removes it (as it would once the Pods,
    # and so the old run, had stopped).
    await cluster.create_database()
    await cluster.create_backup(concurrencyPolicy="Replace")
    clock = Clock()
    first = clock.just_past_next_minute()
    metrics = Metrics()
    async with running(cluster, clock, metrics) as controller:
        [old] = await until(cluster.jobs)
        old_name = old["metadata"]["name"]
        clock.offset += timedelta(minutes=1)
        await _poke(cluster, "next-slot")
        await until(lambda: _with_reason(cluster, "Replaced"))
        stopping = await raw(cluster.batch.read_namespaced_job(old_name, cluster.namespace, _preload_content=False))
        assert stopping["metadata"].get("deletionTimestamp")
        assert "foregroundDeletion" in stopping["metadata"]["finalizers"]
        # More passes while the old run stops: none starts the new run.
        done = _count(metrics, "dbb_reconciles_total")
        await _poke(cluster, "while-stopping")
        await until(lambda: _settled(cluster, controller))
        assert _count(metrics, "dbb_reconciles_total") > done
        assert [j["metadata"]["name"] for j in await cluster.jobs()] == [old_name]
        await cluster.batch.patch_namespaced_job(
            old_name, cluster.namespace, body({"metadata": {"finalizers": None}}), **MERGE_PATCH
        )
        new = await until(lambda: _jobs_other_than(cluster, old_name))
        events = await cluster.events()
    assert [j["metadata"]["name"] for j in new] == [job_name("nightly", first + timedelta(minutes=1))]
    assert sum(" Replaced:" in e for e in events) == 1


async def _poke(cluster: Cluster, value: str) -> None:
    """A change to the object, so that the reconciler looks at it now (at the test's clock)."""
    patch = {"metadata": {"annotations": {"test.databases.test.io/poke": value}}}
    await cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, PLURAL, "nightly", body(patch), **MERGE_PATCH
    )


async def _settled(cluster: Cluster, controller: Controller) -> bool:
    """The positive sign that nothing more happens: the controller's watches have delivered the current version of
    the DatabaseBackup and of each of its Jobs, its queue is idle (what those events queued has been handled, and
    no failure is backing off), and nothing was written meanwhile. From here it acts only when something changes or
    a requeue it booked comes due (`queue.booked`)."""
    backup, jobs = await cluster.backup(), await cluster.jobs()
    cached = {name for namespace, name in controller.jobs.store if namespace == cluster.namespace}
    caught_up = (
        _delivered(controller.backups, [backup])
        and _delivered(controller.jobs, jobs)
        and cached == {j["metadata"]["name"] for j in jobs}  # a deletion seen too
    )
    if not (caught_up and controller.queue.idle):
        return False
    return _versions(await cluster.backup(), await cluster.jobs()) == _versions(backup, jobs)


def _delivered(informer: Informer, objects: list[dict[str, Any]]) -> bool:
    """Whether the informer's list or watch has reached these objects' versions: its handler has run for them. The
    API server's resourceVersions are etcd revisions, so they compare as numbers."""
    reached = int(informer.resource_version or 0)
    return all(int(o["metadata"]["resourceVersion"]) <= reached for o in objects)


def _versions(backup: dict[str, Any], jobs: list[dict[str, Any]]) -> tuple[str, set[tuple[str, str]]]:
    version = backup["metadata"]["resourceVersion"]
    return version, {(j["metadata"]["name"], j["metadata"]["resourceVersion"]) for j in jobs}


async def _jobs_other_than(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [j for j in await cluster.jobs() if j["metadata"]["name"] != name]


async def _status_field(cluster: Cluster, field: str, value: Any = None) -> dict[str, Any] | None:
    status = (await cluster.backup()).get("status") or {}
    found = status.get(field)
    if found is None or (value is not None and found != value):
        return None
    return dict(status)


async def _with_reason(cluster: Cluster, reason: str) -> list[str]:
    events = await cluster.events()
    return events if any(f" {reason}:" in e for e in events) else []


def _count(metrics: Metrics, series: str, **labels: str) -> float:
    return sum(
        s.value for s in page_samples(metrics.exposition()) if s.name == series and labels.items() <= s.labels.items()
    )


async def test_a_window_gives_each_object_its_own_time_and_a_restarted_reconciler_the_same(cluster: Cluster) -> None:
    """On the real API server: three DatabaseBackups on one schedule and window, each scheduled at the firing plus
    the offset its uid gives (the one fact a second replica or a restart needs), and a new reconciler after a
    restart finds the same times and writes nothing."""
    await cluster.create_database()
    names = ("spread-a", "spread-b", "spread-c")
    created = [await cluster.create_backup(n, schedule="0 1 * * *", window="4h") for n in names]
    firing = parse_schedule("0 1 * * *").next_after(datetime.now(UTC) - timedelta(hours=4))
    expected = {}
    for obj in created:
        slot = firing + window_offset(obj["metadata"]["uid"], timedelta(hours=4))
        if slot <= datetime.now(UTC):  # this window's time has passed: the next window's
            slot += timedelta(days=1)
        expected[obj["metadata"]["name"]] = slot.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(set(expected.values())) == len(names), "three uids, three times (a 240-minute window)"

    async def scheduled() -> dict[str, dict[str, Any]] | None:
        found = {n: await cluster.backup(n) for n in names}
        done = all((o.get("status") or {}).get("nextBackupTime") for o in found.values())
        return found if done else None

    async with running(cluster, Clock()):
        first = await until(scheduled)
    assert {n: o["status"]["nextBackupTime"] for n, o in first.items()} == expected
    async with running(cluster, Clock()) as restarted:

        async def quiet() -> bool:
            objects = [await cluster.backup(n) for n in names]
            return _delivered(restarted.backups, objects) and restarted.queue.idle

        await until(quiet)
    again = {n: await cluster.backup(n) for n in names}
    assert {n: o["metadata"]["resourceVersion"] for n, o in again.items()} == {
        n: o["metadata"]["resourceVersion"] for n, o in first.items()
    }, "the same times: no status written"


async def test_a_cluster_cap_holds_due_runs_back_and_starts_each_once_in_slot_order(cluster: Cluster) -> None:
    """Four DatabaseBackups due in the same minute under a cap of two: two Jobs, the others Waiting (status and an
    Event say which cap); each Job that ends lets exactly one more start, and every run starts once. A Job once
    created stays, so a third running Job at any moment would still be counted at the next look."""
    await cluster.create_database()
    names = [f"capped-{i}" for i in range(4)]
    for name in names:
        await cluster.create_backup(name)
    clock = Clock()
    slot = clock.just_past_next_minute()
    finished: set[str] = set()

    async def jobs() -> list[str]:
        return sorted(j["metadata"]["name"] for j in await cluster.jobs())

    async with running(cluster, clock, capacity=Capacity(Caps(cluster=2, server=None))):
        for _ in names:
            expected = min(len(names), len(finished) + 2)
            started = await until(lambda expected=expected: _at_least(jobs, expected))  # type: ignore[misc]
            assert len(started) == expected, started
            if len(started) < len(names):
                waiting = await until(lambda: _waiting(cluster, names))
                assert {w["cap"] for w in waiting} == {"the cap of 2 running backups and checks in the cluster"}
                assert {w["slot"] for w in waiting} == {slot.strftime("%Y-%m-%dT%H:%M:%SZ")}
            running_now = [j for j in await cluster.jobs() if j["metadata"]["name"] not in finished]
            job = min(running_now, key=lambda j: j["metadata"]["name"])
            await cluster.finish(job, succeeded=True, message=json.dumps({"status": "Succeeded"}))
            finished.add(job["metadata"]["name"])
        assert len(await jobs()) == len(names), "each run started once"
        assert {j.rsplit("-", 1)[0] for j in await jobs()} == set(names)
        events = [e for n in names for e in await cluster.events(n)]
    assert any(e.startswith("Normal Waiting: The run due") for e in events), events


async def _at_least(jobs: Callable[[], Any], count: int) -> list[str] | None:
    found: list[str] = await jobs()
    return found if len(found) >= count else None


async def _waiting(cluster: Cluster, names: list[str]) -> list[dict[str, Any]] | None:
    found = []
    for name in names:
        status = (await cluster.backup(name)).get("status") or {}
        if status.get("phase") == "Waiting":
            found.append(status["waiting"])
    return found or None
