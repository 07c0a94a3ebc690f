"""The controller: caches of the world, a work queue of DatabaseBackups, and a reconcile that reads the caches,
asks `plan.decide`, and applies the plan.

Reconcile, in order (each step is a small function):
1. Read the DatabaseBackup, its Jobs, their Pods' termination messages and the database StatefulSet from the caches.
   Nothing is fetched: the caches are kept current by watches, and workers start only once every cache has synced.
2. Decide (pure).
3. Apply: create Jobs (409 AlreadyExists means the run was started before: the name is the lock), delete Jobs
   (background propagation, so their Pods go too), write status as one merge patch when it changed. Events go to
   a background recorder.
4. Write what we wrote back into the caches, so the next reconcile does not act on a view older than our own
   writes (a duplicate Event, a needless status write).
A reconcile that creates a Job writes no status: it queues the object again, and that pass (which finds the Job by
name) writes it. When many backups share a minute, the queue's order then puts every due Job ahead of every status
write, so lateness is the API server's time to create Jobs, not three writes per backup. A crash in between leaves
a Job that the next reconcile finds by name.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.backups.model import Phase
from common.constants import (
    ANNOTATION_SCHEDULED_TIME,
    GROUP,
    LABEL_BACKUP_NAME,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    MANAGED_BY,
    PLURAL,
    STORE_PLURAL,
    VERSION,
)
from common.informer import Event as WatchEvent
from common.informer import Informer, Key, key_of
from common.kube import sent, timeout
from common.statefulset import essentials
from reconciler.archiver import RUN_ARCHIVE
from reconciler.archivers import Archivers
from reconciler.backup_plan import Plan, World, decide, decide_deleting
from reconciler.capacity import ANNOTATION_CAPS, Capacity, Caps
from reconciler.outcomes import is_verification, outcome
from reconciler.slots import Slots
from reconciler.stuck import GRACE
from reconciler.trust import NamespaceFacts
from reconciler.watches import Loop, remember, restarts, watch, write_status
from reconciler.world import Event

__all__ = ["Controller"]

log = structlog.get_logger("reconciler")


class Controller(Loop):
    kind = PLURAL
    workers = 16

    def __init__(self, *args: Any, capacity: Capacity | None = None, **kwargs: Any) -> None:
        # One Capacity for every controller of the process (one per watched namespace): the caps are cluster-wide.
        self.capacity = capacity if capacity is not None else Capacity(Caps())
        super().__init__(*args, **kwargs)

    def watches(self) -> None:
        api, metrics, namespace = self.api, self.metrics, self.namespace
        self._custom = client.CustomObjectsApi(api)
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        ours = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        self.backups = watch(
            "databasebackups",
            namespace,
            metrics,
            (
                self._custom.list_cluster_custom_object,
                self._custom.list_namespaced_custom_object,
                (GROUP, VERSION),
                (PLURAL,),
            ),
            handler=self._on_backup,
            transform=_without_last_applied,
        )
        self.jobs = watch(
            "jobs",
            namespace,
            metrics,
            (self._batch.list_job_for_all_namespaces, self._batch.list_namespaced_job, (), ()),
            handler=self._on_job,
            label_selector=ours,
            transform=_job_essentials,
        )
        self.pods = watch(
            "pods",
            namespace,
            metrics,
            (self._core.list_pod_for_all_namespaces, self._core.list_namespaced_pod, (), ()),
            handler=self._on_pod,
            label_selector=ours,
            transform=_pod_essentials,
        )
        apps = client.AppsV1Api(api)
        self.statefulsets = watch(
            "statefulsets",
            namespace,
            metrics,
            (apps.list_stateful_set_for_all_namespaces, apps.list_namespaced_stateful_set, (), ()),
            handler=self._on_statefulset,
            transform=essentials,
        )
        # What the trust rules read before every Job (reconciler.trust): Services, the namespace's labels and
        # annotations, and the BackupStores. Every Job is judged when it is due; a change to one of them brings back
        # only the objects it refused (their phase Invalid), so that a Service created a moment after its
        # StatefulSet is seen at once, not at the next minute's look.
        self.services = watch(
            "services",
            namespace,
            metrics,
            (self._core.list_service_for_all_namespaces, self._core.list_namespaced_service, (), ()),
            handler=lambda event: self._recheck_refused(event.key[0]),
            transform=_service_essentials,
        )
        self.namespaces = Informer(
            name="namespaces",
            list_call=self._core.list_namespace,
            options={"field_selector": f"metadata.name={namespace}"} if namespace is not None else {},
            handler=lambda event: self._recheck_refused(event.key[1]),
            transform=_namespace_essentials,
            on_restart=restarts(metrics, "namespaces"),
        )
        self.stores = Informer(
            name="backupstores",
            list_call=self._custom.list_cluster_custom_object,
            arguments=(GROUP, VERSION, STORE_PLURAL),
            handler=self._on_store,
            on_restart=restarts(metrics, "backupstores"),
        )
        # With spec.continuous: each DatabaseBackup's archiver, and status.continuous (reconciler.archivers).
        self.archivers = Archivers(api, self.executor, metrics, self.backups, namespace, self._enqueue)
        # With PostgreSQL archiving: its replication slot held by a finalizer, and dropped by a Job (reconciler.slot).
        self.slots = Slots(api, metrics, self._create, lambda obj, event: self.events.record(obj, event, self.clock()))
        self.metrics.backups.read_from(lambda: self.backups.store.values(), self.clock, part=namespace)
        self.metrics.backups.databases_from(lambda: self.statefulsets.store.values(), part=namespace)
        # Indexes from the objects we watch to the DatabaseBackups they concern.
        self._jobs_of: dict[Key, set[str]] = defaultdict(set)
        self._pods_of_job: dict[Key, set[str]] = defaultdict(set)
        self._database_of: dict[Key, str] = {}
        self._backups_of_database: dict[Key, set[str]] = defaultdict(set)
        self._statefulsets_in: dict[str, set[str]] = defaultdict(set)
        self._backups_in: dict[str, set[str]] = defaultdict(set)

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (
            self.backups,
            self.jobs,
            self.pods,
            self.statefulsets,
            self.services,
            self.namespaces,
            self.stores,
            self.archivers.deployments,
        )

    async def stopped(self) -> None:
        await self.executor.close()

    # --- watch handlers: map each change to the DatabaseBackup it concerns ------------------------------------

    def _on_backup(self, event: WatchEvent) -> None:
        namespace, name = event.key
        database = (event.object.get("spec") or {}).get("databaseName")
        previous = self._database_of.pop(event.key, None)
        if previous is not None:
            self._backups_of_database[(namespace, previous)].discard(name)
        if event.type == "DELETED":
            self._jobs_of.pop(event.key, None)
            self._backups_in[namespace].discard(name)
        else:
            self._backups_in[namespace].add(name)
        if event.type != "DELETED" and isinstance(database, str):
            self._database_of[event.key] = database
            self._backups_of_database[(namespace, database)].add(name)
        self._enqueue(event.key)

    def _on_job(self, event: WatchEvent) -> None:
        owner = _owner(event.object)
        if owner is None:
            return
        if event.type == "DELETED":
            self._jobs_of[owner].discard(event.key[1])
        else:
            self._jobs_of[owner].add(event.key[1])
        self._enqueue(owner)
        # A Job that ended gives its places under the caps back: the runs that waited longest look again now, ahead
        # of the keys the watches added (their time came, as a slot's does).
        running = event.type != "DELETED" and outcome(event.object, None).state == "Active"
        for waiter in self.capacity.seen(event.object, running):
            self.queue.add(waiter, first=True)

    def _on_pod(self, event: WatchEvent) -> None:
        # A Pod's termination message is part of its Job's outcome.
        namespace, pod = event.key
        job = ((event.object.get("metadata") or {}).get("labels") or {}).get("job-name")
        if isinstance(job, str):
            if event.type == "DELETED":
                self._pods_of_job[(namespace, job)].discard(pod)
            else:
                self._pods_of_job[(namespace, job)].add(pod)
        self.archivers.on_pod(event)
        owner = _owner(event.object)
        if owner is not None:
            self._enqueue(owner)

    def _on_statefulset(self, event: WatchEvent) -> None:
        namespace, database = event.key
        if event.type == "DELETED":
            self._statefulsets_in[namespace].discard(database)
        else:
            self._statefulsets_in[namespace].add(database)
        for name in list(self._backups_of_database.get((namespace, database), ())):
            self._enqueue((namespace, name))

    def _on_store(self, event: WatchEvent) -> None:
        # Rare (an administrator's change): every DatabaseBackup that names the store is judged again.
        store = event.key[1]
        for key, obj in list(self.backups.store.items()):
            storage = (obj.get("spec") or {}).get("storage") or {}
            if isinstance(storage, dict) and (storage.get("s3") or {}).get("store") == store:
                self._enqueue(key)

    def _recheck_refused(self, namespace: str) -> None:
        # Before the first sync every object is queued anyway; after it, only those a trust rule refused.
        if not self.synced:
            return
        for name in list(self._backups_in.get(namespace, ())):
            obj = self.backups.get(namespace, name)
            if obj is not None and (obj.get("status") or {}).get("phase") == Phase.INVALID:
                self._enqueue((namespace, name))

    def _enqueue(self, key: Key) -> None:
        self.queue.add(key)
        self.metrics.queue_depth.set(len(self.queue))

    # --- reconcile ------------------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> timedelta | None:
        started = time.perf_counter()
        self.metrics.queue_depth.set(len(self.queue))
        obj = self.backups.get(*key)
        if obj is None:
            # Deleted: its Jobs and its archiver carry ownerReferences and go with it. Where no garbage collector
            # runs (the local sandbox) the archiver would run on, so it is removed here too (once the cache is whole).
            if self.synced:
                await self.archivers.forget(*key)
            return None
        try:
            world = self._world(obj)
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                # On its way out, held by our finalizer: no run starts; the archiver goes, then its slot.
                await self.archivers.forget(*key)
                await self.slots.apply(obj, decide_deleting(world, self.runner))
                self.metrics.reconciles.labels("ok").inc()
                return None
            recheck = await self.end_stuck(self.jobs, ((job, self._pods_of(job)) for job in world.jobs))
            plan = decide(world, self.runner)
            await self._apply(obj, plan, world.now)
            polled = await self.archivers.reconcile(self.backups.get(*key) or obj, plan.archiver)
            await self.slots.apply(self.backups.get(*key) or obj, plan.slot)
        except Exception:
            self.metrics.reconciles.labels("error").inc()
            raise
        finally:
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)
        self.metrics.reconciles.labels("ok").inc()
        times = [t for t in (recheck, plan.requeue_after, polled) if t is not None]
        return min(times) if times else None

    def _pods_of(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        namespace, name = key_of(dict(job))
        return [
            pod
            for pod_name in self._pods_of_job.get((namespace, name), ())
            if (pod := self.pods.get(namespace, pod_name))
        ]

    def _world(self, obj: dict[str, Any]) -> World:
        namespace, name = key_of(obj)
        uid = obj["metadata"].get("uid")
        jobs = [
            job
            for job_name in sorted(self._jobs_of.get((namespace, name), ()))
            if (job := self.jobs.get(namespace, job_name)) is not None and _owner_uid(job) == uid
        ]
        database = (obj.get("spec") or {}).get("databaseName")
        statefulset = self.statefulsets.get(namespace, database) if isinstance(database, str) else None
        return World(
            obj=obj,
            jobs=jobs,
            now=self.clock(),
            statefulset=statefulset,
            termination_messages=self._termination_messages(namespace, {j["metadata"]["name"] for j in jobs}),
            facts=self._facts(namespace),
        )

    def _facts(self, namespace: str) -> NamespaceFacts:
        metadata = (self.namespaces.get("", namespace) or {}).get("metadata") or {}
        statefulsets = self.statefulsets.store
        return NamespaceFacts(
            namespace,
            labels=metadata.get("labels") or {},
            annotations=metadata.get("annotations") or {},
            services=_InNamespace(self.services.store, namespace),
            statefulsets=[
                found
                for name in sorted(self._statefulsets_in.get(namespace, ()))
                if (found := statefulsets.get((namespace, name))) is not None
            ],
            stores=_InNamespace(self.stores.store, ""),
            cluster_domain=self.cluster_domain,
        )

    def _termination_messages(self, namespace: str, job_names: set[str]) -> dict[str, str]:
        messages: dict[str, str] = {}
        for job in job_names:
            for pod_name in self._pods_of_job.get((namespace, job), ()):
                pod = self.pods.get(namespace, pod_name) or {}
                for container in (pod.get("status") or {}).get("containerStatuses") or []:
                    message = ((container.get("state") or {}).get("terminated") or {}).get("message")
                    if message:
                        messages[job] = message
        return messages

    async def _apply(self, obj: dict[str, Any], plan: Plan, now: datetime) -> None:
        namespace, name = key_of(obj)
        held, created = None, False
        for job in plan.create:
            held = held or self._held(obj, job)
            if held is None:
                await self._create(job)
                created = True
        if not plan.create:
            self.capacity.forget((namespace, name))  # owed nothing now (a deadline passed, suspended, deleted)
        if held is not None:
            for job_name in plan.delete:
                await self._delete(namespace, job_name)
            for event in plan.events:
                if event.reason not in ("Scheduled", "Replaced"):  # about a Job that is not created now
                    self.events.record(obj, event, now)
            if created:  # the status of the run that did start, on the next pass
                self.queue.add((namespace, name))
            await self._wait(obj, held, now)
            return
        for job_name in plan.delete:
            await self._delete(namespace, job_name)
        for job_name in plan.stop:
            # Not dropped from the cache: the Job counts as active until the watch reports it gone.
            await self.executor.stop(namespace, job_name)
            self.metrics.api_requests.labels("delete", "jobs").inc()
        for event in plan.events:
            self.events.record(obj, event, now)
        if plan.create:
            self.queue.add((namespace, name))  # status on the next pass: see the module docstring
        elif plan.status is not None:
            waited = "waiting" in (obj.get("status") or {})
            await self._write_status(obj, {**plan.status, "waiting": None} if waited else plan.status)
        if plan.create or plan.delete or plan.stop or plan.events:
            log.info(
                "reconciled",
                namespace=namespace,
                name=name,
                created=[j["metadata"]["name"] for j in plan.create],
                deleted=list(plan.delete),
                stopped=list(plan.stop),
                events=[e.reason for e in plan.events],
            )

    def _held(self, obj: dict[str, Any], job: dict[str, Any]) -> tuple[str, str] | None:
        """(slot, what holds it back) when a cap keeps this run from starting now; None when it may start, and is
        then counted (reconciler.capacity)."""
        metadata = job["metadata"]
        keys = tuple(str((metadata.get("annotations") or {}).get(ANNOTATION_CAPS) or "").split())
        if not keys:
            return None
        slot = _slot_of(job)
        blocker = self.capacity.admit(key_of(obj), slot, (metadata["namespace"], metadata["name"]), keys)
        for waiter in self.capacity.woken():  # an earlier run that can start: it goes first, now
            self.queue.add(waiter, first=True)
        return None if blocker is None else (slot, blocker)

    async def _wait(self, obj: dict[str, Any], held: tuple[str, str], now: datetime) -> None:
        """Status says what a due run waits for; its slot stays owed, and `_on_job` brings it back."""
        slot, blocker = held
        previous = obj.get("status") or {}
        waiting = {"slot": slot, "cap": blocker}
        if previous.get("phase") == Phase.WAITING and previous.get("waiting") == waiting:
            return
        message = f"The run due {slot} waits for {blocker}; it starts as soon as a place frees"
        if (previous.get("waiting") or {}).get("slot") != slot:
            self.events.record(obj, Event("Normal", "Waiting", message), now)
        await self._write_status(obj, {"phase": Phase.WAITING, "waiting": waiting})

    async def _create(self, job: dict[str, Any]) -> None:
        try:
            created = await self.executor.start(job)
        except ApiException as error:
            if error.status != 409:
                for waiter in self.capacity.release((job["metadata"]["namespace"], job["metadata"]["name"])):
                    self.queue.add(waiter, first=True)
                raise
            return  # AlreadyExists: this run was started before (a crash, a restart, another replica)
        self.metrics.api_requests.labels("create", "jobs").inc()
        annotations = created["metadata"].get("annotations") or {}
        scheduled = annotations.get("databases.test.io/scheduled-time")
        on_demand = "databases.test.io/backup-now" in annotations
        if scheduled and not on_demand and not is_verification(created):
            # Measured when the Job exists, not when it was decided: the API server's time is part of the delay.
            lateness = (self.clock() - datetime.fromisoformat(scheduled)).total_seconds()
            self.metrics.lateness.observe(max(lateness, 0.0))
        remember(self.jobs, created)
        owner = _owner(created)
        if owner is not None:
            self._jobs_of[owner].add(created["metadata"]["name"])

    async def _delete(self, namespace: str, job_name: str) -> None:
        try:
            await sent(
                self._batch.delete_namespaced_job(
                    job_name, namespace, propagation_policy="Background", _preload_content=False, **timeout()
                )
            )
            self.metrics.api_requests.labels("delete", "jobs").inc()
        except ApiException as error:
            if error.status != 404:
                raise
        self.jobs.store.pop((namespace, job_name), None)

    async def _write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        await write_status(self._custom, PLURAL, self.backups, self.metrics, obj, status)


LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"

# What the reconcile reads of each kind; the rest (pod templates, volume claims, most of a Pod) stays out of memory.


def _without_last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """`kubectl apply` keeps a JSON copy of the whole object in an annotation; nothing here reads it."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if LAST_APPLIED not in annotations:
        return obj
    kept = {key: value for key, value in annotations.items() if key != LAST_APPLIED}
    return {**obj, "metadata": {**obj["metadata"], "annotations": kept}}


def _job_essentials(job: dict[str, Any]) -> dict[str, Any]:
    """A Job without its spec, and of its labels only ours (the API server adds four of its own to each Job)."""
    metadata = dict(job.get("metadata") or {})
    metadata.pop("generation", None)
    metadata["labels"] = {
        key: value
        for key, value in (metadata.get("labels") or {}).items()
        if key.startswith(f"{GROUP}/") or key == LABEL_MANAGED_BY
    }
    return {
        "apiVersion": job.get("apiVersion"),
        "kind": job.get("kind"),
        "metadata": metadata,
        "status": job.get("status") or {},
    }


def _pod_essentials(pod: dict[str, Any]) -> dict[str, Any]:
    """A Pod's termination messages (its Job's outcome), and what tells that it cannot start (reconciler.stuck)."""
    status = pod.get("status") or {}
    statuses = [
        {"state": {"terminated": {"message": message}}}
        for container in status.get("containerStatuses") or []
        if (message := ((container.get("state") or {}).get("terminated") or {}).get("message"))
    ]
    waiting = {
        key: [
            {"name": container.get("name"), "state": {"waiting": state}}
            for container in status.get(key) or []
            if (state := (container.get("state") or {}).get("waiting") or {}).get("reason") in GRACE
        ]
        for key in ("initContainerStatuses", "containerStatuses")
    }
    if _is_archiver(pod):
        # Asked for its state at its address; why its last run ended (restartPolicy Always) is in its last
        # termination message (reconciler.archivers).
        statuses += [
            {"lastState": {"terminated": {"message": message}}}
            for container in status.get("containerStatuses") or []
            if (message := ((container.get("lastState") or {}).get("terminated") or {}).get("message"))
        ]
    kept: dict[str, Any] = {
        "phase": status.get("phase"),
        **({"podIP": status.get("podIP")} if _is_archiver(pod) and status.get("podIP") else {}),
        "containerStatuses": statuses + waiting["containerStatuses"],
        "conditions": [c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"],
    }
    if waiting["initContainerStatuses"]:
        kept["initContainerStatuses"] = waiting["initContainerStatuses"]
    return {"metadata": pod.get("metadata") or {}, "status": kept}


def _is_archiver(pod: dict[str, Any]) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN) == RUN_ARCHIVE


def _service_essentials(service: dict[str, Any]) -> dict[str, Any]:
    """What the host rule reads of a Service: is it an ExternalName, and to where."""
    spec = service.get("spec") or {}
    metadata = service.get("metadata") or {}
    kept = {k: metadata[k] for k in ("name", "namespace", "resourceVersion") if k in metadata}
    return {"metadata": kept, "spec": {k: spec[k] for k in ("type", "externalName") if k in spec}}


def _namespace_essentials(namespace: dict[str, Any]) -> dict[str, Any]:
    metadata = namespace.get("metadata") or {}
    kept = ("name", "resourceVersion", "labels", "annotations")
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != LAST_APPLIED}
    return {"metadata": {k: metadata[k] for k in kept if k in metadata} | {"annotations": annotations}}


class _InNamespace(Mapping[str, Mapping[str, Any]]):
    """A cache's objects of one namespace, by name, read in place ("" for cluster-scoped objects). Lookups are what
    the rules do; iterating walks the whole cache and is there only to be a Mapping."""

    def __init__(self, store: Mapping[Key, dict[str, Any]], namespace: str) -> None:
        self._store, self._namespace = store, namespace

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self._store[(self._namespace, name)]

    def __iter__(self) -> Iterator[str]:
        return (name for namespace, name in list(self._store) if namespace == self._namespace)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _owner(obj: dict[str, Any]) -> Key | None:
    metadata = obj.get("metadata") or {}
    name = (metadata.get("labels") or {}).get(LABEL_BACKUP_NAME)
    return (str(metadata.get("namespace") or ""), str(name)) if name else None


def _slot_of(job: Mapping[str, Any]) -> str:
    return str((job["metadata"].get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME) or "")


def _owner_uid(job: dict[str, Any]) -> str | None:
    for reference in (job.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("uid"))
    return None
