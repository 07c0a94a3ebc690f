"""What each controller (DatabaseBackups, DatabaseRestores) does the same way: its informers over all namespaces or
one, its run loop, and the status write through to its own cache."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import GROUP, VERSION
from common.hosts import DEFAULT_CLUSTER_DOMAIN
from common.informer import Event, Informer, Key, key_of
from common.kube import MERGE_PATCH, body, raw, timeout
from reconciler.events import EventRecorder
from reconciler.executor import Executor
from reconciler.jobs import RunnerSettings
from reconciler.metrics import Metrics
from reconciler.outcomes import ANNOTATION_CANNOT_START, outcome
from reconciler.queue import WorkQueue
from reconciler.stuck import diagnose

__all__ = ["Loop", "remember", "restarts", "watch", "write_status"]

# What a Job's deadline is cut to, to end a run whose Pod cannot start: anything below the time it has run.
_ENDED_DEADLINE = 1

log = structlog.get_logger("reconciler")


class Loop:
    """A controller's run loop: its informers keep the caches; once every one has synced, every object of its kind
    (the first informer's) is queued, and workers reconcile one key at a time while the Event recorder sends."""

    kind: str  # the plural it reconciles, for logs and task names
    workers: int  # concurrent reconciles, unless given

    def __init__(
        self,
        api: client.ApiClient,
        executor: Executor,
        runner: RunnerSettings,
        metrics: Metrics,
        *,
        namespace: str | None = None,
        workers: int | None = None,
        identity: str = "dbb-reconciler",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    ) -> None:
        self.api, self.executor, self.runner, self.metrics = api, executor, runner, metrics
        self.namespace, self.identity, self.clock = namespace, identity, clock
        if workers is not None:
            self.workers = workers
        self.cluster_domain = cluster_domain
        self.queue: WorkQueue[Key] = WorkQueue()
        self.events = EventRecorder(api, metrics, identity)
        self.watches()

    def watches(self) -> None:
        """Make this controller's informers (the first: the objects of its kind) and its API handles."""
        raise NotImplementedError

    @property
    def informers(self) -> tuple[Informer, ...]:
        raise NotImplementedError

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    async def reconcile(self, key: Key) -> timedelta | None:
        """Bring one object to its desired state; the time after which to look at it again, if any."""
        raise NotImplementedError

    async def stopped(self) -> None:
        """After every task of the loop has ended: release what this controller alone holds."""

    async def end_stuck(
        self, jobs: Informer, runs: Iterable[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]
    ) -> timedelta | None:
        """End each active run (a Job and its Pods) whose Pod cannot start (reconciler.stuck): its reason goes on
        the Job, and its deadline is cut so that the Job controller fails it and deletes its Pods. Returns when
        to look again for a Pod still within its grace."""
        recheck: timedelta | None = None
        now = self.clock()
        for job, pods in runs:
            annotations = (job.get("metadata") or {}).get("annotations") or {}
            if not pods or ANNOTATION_CANNOT_START in annotations:
                continue
            seen = outcome(dict(job), None)
            if seen.state != "Active" or seen.deleting:
                continue
            found = diagnose(pods, now)
            if found.stuck is not None:
                namespace, name = key_of(dict(job))
                why = json.dumps({"reason": found.stuck.reason, "message": found.stuck.message})
                patch = {
                    "metadata": {"annotations": {ANNOTATION_CANNOT_START: why}},
                    "spec": {"activeDeadlineSeconds": _ENDED_DEADLINE},
                }
                try:
                    ended = await raw(
                        client.BatchV1Api(self.api).patch_namespaced_job(
                            name, namespace, body(patch), _preload_content=False, **MERGE_PATCH, **timeout()
                        )
                    )
                except ApiException as error:
                    if error.status == 404:
                        continue
                    raise
                self.metrics.api_requests.labels("patch", "jobs").inc()
                remember(jobs, ended)
                log.warning("run cannot start", namespace=namespace, job=name, reason=found.stuck.reason)
            elif found.recheck is not None:
                recheck = found.recheck if recheck is None else min(recheck, found.recheck)
        return recheck

    async def run(self) -> None:
        """Watch, and once every cache has synced, reconcile until cancelled."""
        informers = self.informers
        tasks = [asyncio.create_task(i.run(), name=f"informer:{i.name}") for i in informers]
        try:
            await asyncio.gather(*(i.synced.wait() for i in informers))
            log.info("caches synced", kind=self.kind, **{i.name: len(i.store) for i in informers})
            for key in list(informers[0].store):
                self.queue.add(key)
            tasks.append(asyncio.create_task(self.queue.run(self.workers, self.reconcile), name=f"{self.kind}:workers"))
            tasks.append(asyncio.create_task(self.events.run(), name=f"{self.kind}:events"))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stopped()


def watch(
    name: str,
    namespace: str | None,
    metrics: Metrics,
    calls: tuple[Any, Any, tuple[Any, ...], tuple[Any, ...]],
    *,
    handler: Callable[[Event], None] | None = None,
    label_selector: str | None = None,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Informer:
    """`calls`: the cluster-wide list call, the namespaced one, and the arguments before and after the namespace
    (the two calls differ only by it)."""
    cluster_call, namespaced_call, before, after = calls
    call, arguments = (
        (cluster_call, (*before, *after)) if namespace is None else (namespaced_call, (*before, namespace, *after))
    )
    options = {"label_selector": label_selector} if label_selector else {}
    return Informer(
        name=name,
        list_call=call,
        arguments=arguments,
        options=options,
        handler=handler,
        transform=transform,
        on_restart=restarts(metrics, name),
    )


def restarts(metrics: Metrics, name: str) -> Callable[[str], None]:
    """What an informer calls when its watch restarts: counted by informer and reason."""
    return lambda reason: metrics.watch_restarts.labels(name, reason).inc()


async def write_status(
    custom: client.CustomObjectsApi,
    plural: str,
    informer: Informer,
    metrics: Metrics,
    obj: dict[str, Any],
    status: dict[str, Any],
) -> None:
    """Merge-patch `status` of `obj` (one of `plural`; cluster-scoped when it has no namespace) and keep the answer
    in `informer`; an object deleted meanwhile is no error."""
    namespace, name = key_of(obj)
    patch = body({"status": status})
    options = {"_preload_content": False, **MERGE_PATCH, **timeout()}
    try:
        updated = await raw(
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name, patch, **options)
            if namespace
            else custom.patch_cluster_custom_object_status(GROUP, VERSION, plural, name, patch, **options)
        )
    except ApiException as error:
        if error.status == 404:
            return
        raise
    metrics.api_requests.labels("patch", f"{plural}/status").inc()
    remember(informer, updated)


def remember(informer: Informer, obj: dict[str, Any]) -> None:
    """Write-through: our own write is newer than what the cache holds until its watch event arrives."""
    informer.store[key_of(obj)] = informer.keep(obj)
