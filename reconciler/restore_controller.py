"""The DatabaseRestore controller: a cache of DatabaseRestores and of their Jobs and Pods, a work queue, and a
reconcile that asks `restores.decide_restore` and applies the plan.

Beside the DatabaseBackup controller, not inside it: the two kinds share the run loop and the informer wiring
(`watches`), the executor, the Event recorder and the API client, and nothing of their decisions. A restore is
rare and runs once, so what deciding needs only before its Job exists (the source DatabaseBackup, the source and
target StatefulSets) is read with a GET then, not watched.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import (
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_RESTORE_NAME,
    LABEL_RUN,
    MANAGED_BY,
    PLURAL,
    RESTORE_PLURAL,
    RUN_RESTORE,
    STORE_PLURAL,
    VERSION,
)
from common.hosts import own_service
from common.informer import Event as WatchEvent
from common.informer import Informer, Key, key_of
from common.kube import raw, timeout
from common.restores.model import parse_restore_spec
from reconciler.jobs import restore_job_name
from reconciler.restore_plan import RestorePlan, RestoreWorld, decide_restore, lookups, needs_lookups
from reconciler.trust import NamespaceFacts
from reconciler.watches import Loop, remember, watch, write_status

__all__ = ["RestoreController"]

log = structlog.get_logger("reconciler.restores")


class RestoreController(Loop):
    kind = RESTORE_PLURAL
    workers = 4

    def watches(self) -> None:
        api, metrics, namespace = self.api, self.metrics, self.namespace
        self._custom = client.CustomObjectsApi(api)
        self._apps = client.AppsV1Api(api)
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        ours = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_RUN}={RUN_RESTORE}"
        custom = self._custom
        lists = (custom.list_cluster_custom_object, custom.list_namespaced_custom_object)
        self.restores = watch(
            "databaserestores",
            namespace,
            metrics,
            (*lists, (GROUP, VERSION), (RESTORE_PLURAL,)),
            handler=lambda event: self.queue.add(event.key),
        )
        restores = self.restores
        metrics.backups.restores_from(lambda: restores.store.values(), part=namespace)
        self.jobs = watch(
            "restore-jobs",
            namespace,
            metrics,
            (batch.list_job_for_all_namespaces, batch.list_namespaced_job, (), ()),
            handler=self._on_owned,
            label_selector=ours,
        )
        self.pods = watch(
            "restore-pods",
            namespace,
            metrics,
            (core.list_pod_for_all_namespaces, core.list_namespaced_pod, (), ()),
            handler=self._on_owned,
            label_selector=ours,
        )

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.restores, self.jobs, self.pods)

    def _on_owned(self, event: WatchEvent) -> None:
        metadata = event.object.get("metadata") or {}
        name = (metadata.get("labels") or {}).get(LABEL_RESTORE_NAME)
        if name:
            self.queue.add((event.key[0], str(name)))

    async def reconcile(self, key: Key) -> timedelta | None:
        obj = self.restores.get(*key)
        if obj is None:
            return None  # deleted: its Job carries an ownerReference and goes with it
        namespace, name = key
        job = self.jobs.get(namespace, restore_job_name(name, str(obj["metadata"].get("uid"))))
        pods = self._pods(namespace, job)
        world = RestoreWorld(obj=obj, now=self.clock(), job=job, termination_message=_message(pods))
        recheck = await self.end_stuck(self.jobs, [(job, pods)]) if job is not None else None
        if needs_lookups(obj, job):
            world = await self._look_up(world, namespace)
        plan = decide_restore(world, self.runner)
        await self._apply(obj, plan, world.now)
        return recheck

    def _pods(self, namespace: str, job: dict[str, Any] | None) -> list[dict[str, Any]]:
        if job is None:
            return []
        return [
            pod
            for (pod_namespace, _), pod in list(self.pods.store.items())
            if pod_namespace == namespace
            and ((pod.get("metadata") or {}).get("labels") or {}).get("job-name") == job["metadata"]["name"]
        ]

    async def _look_up(self, world: RestoreWorld, namespace: str) -> RestoreWorld:
        spec, _ = parse_restore_spec(world.obj.get("spec"))
        if spec is None:
            return world
        source = await self._get(
            self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, spec.database_backup, _preload_content=False, **timeout()
            )
        )
        database = (source or {}).get("spec", {}).get("databaseName") if source else None
        source_statefulset = await self._statefulset(namespace, database) if isinstance(database, str) else None
        target = None if spec.external is not None else spec.target_database_name or database
        target_statefulset = (
            source_statefulset
            if target == database
            else await self._statefulset(namespace, target)
            if isinstance(target, str)
            else None
        )
        found = RestoreWorld(
            obj=world.obj,
            now=world.now,
            source=source,
            source_statefulset=source_statefulset,
            target_statefulset=target_statefulset,
        )
        return replace(found, facts=await self._facts(found, namespace))

    async def _facts(self, world: RestoreWorld, namespace: str) -> NamespaceFacts:
        """What the trust rules read before a restore's Job: the namespace's labels, the Service its target host
        names, the source's BackupStore. Read live: a restore starts once."""
        host, store = lookups(world)
        service = own_service(host, namespace, self.cluster_domain) if host is not None else None
        core = client.CoreV1Api(self.api)
        meta = await self._get(core.read_namespace(namespace, _preload_content=False, **timeout()))
        found_service = (
            await self._get(core.read_namespaced_service(service, namespace, _preload_content=False, **timeout()))
            if service is not None
            else None
        )
        found_store = (
            await self._get(
                self._custom.get_cluster_custom_object(
                    GROUP, VERSION, STORE_PLURAL, store, _preload_content=False, **timeout()
                )
            )
            if store is not None
            else None
        )
        metadata = (meta or {}).get("metadata") or {}
        return NamespaceFacts(
            namespace,
            labels=metadata.get("labels") or {},
            annotations=metadata.get("annotations") or {},
            services={service: found_service} if service is not None and found_service is not None else {},
            stores={store: found_store} if store is not None and found_store is not None else {},
            cluster_domain=self.cluster_domain,
        )

    async def _statefulset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(
            self._apps.read_namespaced_stateful_set(name, namespace, _preload_content=False, **timeout())
        )

    @staticmethod
    async def _get(call: Any) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await raw(call)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    async def _apply(self, obj: dict[str, Any], plan: RestorePlan, now: datetime) -> None:
        namespace, name = key_of(obj)
        if plan.create is not None:
            try:
                created = await self.executor.start(plan.create)
            except ApiException as error:
                if error.status != 409:
                    raise
            else:
                self.metrics.api_requests.labels("create", "jobs").inc()
                remember(self.jobs, created)
        for event in plan.events:
            self.events.record(obj, event, now)
        if plan.status is not None:
            await self._write_status(obj, plan.status)
        if plan.create is not None or plan.events:
            log.info(
                "restore reconciled",
                namespace=namespace,
                name=name,
                phase=(plan.status or {}).get("phase"),
                events=[e.reason for e in plan.events],
            )

    async def _write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        await write_status(self._custom, RESTORE_PLURAL, self.restores, self.metrics, obj, status)


def _message(pods: list[dict[str, Any]]) -> str | None:
    """The runner's termination message, from the first of the Job's Pods that has one."""
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((container.get("state") or {}).get("terminated") or {}).get("message")
            if message:
                return str(message)
    return None
