"""The archivers' side of the backup controller: each DatabaseBackup's archiver Deployment made to match its plan
(`Plan.archiver`, from reconciler.archiver), and `status.continuous` kept from what the archiver answers.

The controller decides (pure) whether an archiver runs and with which template; this applies that and reports.
- Apply: the Deployment is created when missing, its template replaced when the digest differs, and deleted when
  the plan has none (continuous archiving off, the DatabaseBackup suspended, invalid or refused by a trust rule:
  an archiver never runs with access a backup run would not get).
- Report: while an archiver runs, the DatabaseBackup is looked at again every POLL (or sooner, at maxLagSeconds),
  its Pod asked for `/status` (through the executor), and `status.continuous` written when it changed, as its
  own merge patch: nothing else in status is written from here, and nothing else writes this.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Final

import structlog
from kubernetes_asyncio import client

from common.backups.model import ContinuousStatus, DatabaseBackupStatus
from common.constants import LABEL_BACKUP_NAME, LABEL_MANAGED_BY, LABEL_RUN, MANAGED_BY, PLURAL
from common.informer import Event as WatchEvent
from common.informer import Informer, Key, key_of
from common.values import Engine
from reconciler.archiver import RUN_ARCHIVE, archiver_name, continuous_status, is_current, replay_starts
from reconciler.executor import Executor
from reconciler.metrics import Metrics
from reconciler.watches import watch, write_status

__all__ = ["POLL", "Archivers"]

log = structlog.get_logger("reconciler")

POLL: Final = timedelta(seconds=15)


class Archivers:
    def __init__(
        self,
        api: client.ApiClient,
        executor: Executor,
        metrics: Metrics,
        backups: Informer,
        namespace: str | None,
        enqueue: Callable[[Key], None],
    ) -> None:
        self._executor, self._metrics, self._backups, self._enqueue = executor, metrics, backups, enqueue
        self._custom = client.CustomObjectsApi(api)
        apps = client.AppsV1Api(api)
        self.deployments = watch(
            "deployments",
            namespace,
            metrics,
            (apps.list_deployment_for_all_namespaces, apps.list_namespaced_deployment, (), ()),
            handler=self._on_deployment,
            label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_RUN}={RUN_ARCHIVE}",
            transform=_deployment_essentials,
        )
        self._pods: dict[Key, set[str]] = defaultdict(set)  # (namespace, DatabaseBackup) -> its archiver's Pods
        self._pod_cache: dict[Key, dict[str, Any]] = {}
        self._asked: dict[Key, float] = {}  # (namespace, DatabaseBackup) -> when its archiver was last asked

    def on_pod(self, event: WatchEvent) -> None:
        """The controller's Pod handler passes every Pod of ours here; an archiver's is indexed by its owner."""
        metadata = event.object.get("metadata") or {}
        labels = metadata.get("labels") or {}
        owner = labels.get(LABEL_BACKUP_NAME)
        if labels.get(LABEL_RUN) != RUN_ARCHIVE or not owner:
            return
        key = (event.key[0], str(owner))
        if event.type == "DELETED":
            self._pods[key].discard(event.key[1])
            self._pod_cache.pop(event.key, None)
        else:
            self._pods[key].add(event.key[1])
            self._pod_cache[event.key] = event.object

    def _on_deployment(self, event: WatchEvent) -> None:
        owner = ((event.object.get("metadata") or {}).get("labels") or {}).get(LABEL_BACKUP_NAME)
        if owner:
            self._enqueue((event.key[0], str(owner)))

    async def reconcile(self, obj: dict[str, Any], wanted: dict[str, Any] | None) -> timedelta | None:
        """Make the archiver match `wanted` and report it; when to look again."""
        namespace, name = key_of(obj)
        deployment = archiver_name(name)
        found = self.deployments.get(namespace, deployment)
        previous = ContinuousStatus.from_dict((obj.get("status") or {}).get("continuous"))
        if wanted is None:
            if found is not None:
                await self._executor.remove_archiver(namespace, deployment)
                self._metrics.api_requests.labels("delete", "deployments").inc()
                self.deployments.store.pop((namespace, deployment), None)
                log.info("archiver removed", namespace=namespace, name=name)
            if previous is not None:
                await write_status(self._custom, PLURAL, self._backups, self._metrics, obj, {"continuous": None})
            self._asked.pop((namespace, name), None)
            return None
        lag = ((obj.get("spec") or {}).get("continuous") or {}).get("maxLagSeconds")
        every = min(POLL, timedelta(seconds=lag)) if isinstance(lag, int) and lag > 0 else POLL
        if not is_current(found, wanted):
            await self._executor.apply_archiver(wanted, exists=found is not None)
            self._metrics.api_requests.labels("replace" if found else "create", "deployments").inc()
            self.deployments.store[(namespace, deployment)] = _deployment_essentials(wanted)
            log.info("archiver applied", namespace=namespace, name=name, replaced=found is not None)
        elif previous is not None and (since := time.monotonic() - self._asked.get((namespace, name), 0.0)) < (
            every.total_seconds()
        ):
            # Asked a moment ago: every status write brings the object back, and must not ask again at once.
            return every - timedelta(seconds=since)
        self._asked[(namespace, name)] = time.monotonic()
        pod = self._running_pod(namespace, name)
        answer = await self._executor.archiver_status(namespace, deployment, pod)
        wal = (obj.get("spec") or {}).get("engine") == Engine.POSTGRESQL.value
        starts = replay_starts(DatabaseBackupStatus.from_dict(obj.get("status")).last_backup, wal=wal)
        failure = None if answer is not None else self._last_failure(namespace, name)
        reported = continuous_status(deployment, answer, starts, previous, failure, wal=wal)
        if previous is None or reported.to_dict() != previous.to_dict():
            await write_status(
                self._custom, PLURAL, self._backups, self._metrics, obj, {"continuous": reported.to_patch()}
            )
        return every

    async def forget(self, namespace: str, name: str) -> None:
        """A deleted DatabaseBackup's archiver goes, if the garbage collector has not removed it already."""
        self._asked.pop((namespace, name), None)
        deployment = archiver_name(name)
        if self.deployments.get(namespace, deployment) is not None:
            await self._executor.remove_archiver(namespace, deployment)
            self._metrics.api_requests.labels("delete", "deployments").inc()
            self.deployments.store.pop((namespace, deployment), None)
            log.info("archiver of a deleted DatabaseBackup removed", namespace=namespace, name=name)

    def _last_failure(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The result line an archiver's Pod last ended with (its termination message), if it was a failure."""
        for pod_name in sorted(self._pods.get((namespace, name), ())):
            pod = self._pod_cache.get((namespace, pod_name)) or {}
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                for state in ("state", "lastState"):
                    message = ((container.get(state) or {}).get("terminated") or {}).get("message")
                    result = _result(message)
                    if result is not None and result.get("status") == "Failed":
                        return result
        return None

    def _running_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The archiver's Pod that runs (Recreate: at most one at a time, but a deleted one may linger)."""
        for pod_name in sorted(self._pods.get((namespace, name), ())):
            pod = self._pod_cache.get((namespace, pod_name)) or {}
            status = pod.get("status") or {}
            if status.get("phase") == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp"):
                return pod
        return None


def _result(message: object) -> dict[str, Any] | None:
    """The runner's JSON result line from a termination message (its last line), or None."""
    if not isinstance(message, str) or not message.strip():
        return None
    try:
        found = json.loads(message.strip().splitlines()[-1])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _deployment_essentials(deployment: dict[str, Any]) -> dict[str, Any]:
    """What deciding about an archiver reads of its Deployment: who owns it, its template's digest."""
    metadata = deployment.get("metadata") or {}
    kept = ("name", "namespace", "labels", "annotations", "ownerReferences", "resourceVersion", "uid")
    return {"metadata": {k: metadata[k] for k in kept if k in metadata}}
