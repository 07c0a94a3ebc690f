"""The DatabaseBackupPolicy controller: keeps one DatabaseBackup per database each policy selects, as
`reconciler.policy_plan` decides, and writes each policy's status.

Every policy is decided in one pass (one key), because which policy keeps a database's DatabaseBackup depends on all
of them and on the hand-written ones: a pass over 2,000 StatefulSets is a few milliseconds, and the queue folds the
watch events of a burst into one pass. The caches are written through (our creations, writes and deletions), so the
next pass never acts on a view older than our own writes.

It runs only when the reconciler watches every namespace: a policy is cluster-scoped, and so are its selectors.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import GROUP, PLURAL, VERSION
from common.informer import Event, Informer, Key, key_of
from common.kube import body, raw, sent, timeout
from common.policies.model import POLICY_PLURAL
from common.policies.render import ANNOTATION_TEMPLATE, LABEL_POLICY, made_by
from common.statefulset import essentials
from reconciler.metrics import Metrics
from reconciler.policy_plan import Database, plan
from reconciler.queue import WorkQueue
from reconciler.watches import remember, restarts, write_status

__all__ = ["PolicyController"]

log = structlog.get_logger("reconciler.policies")

_ALL: Final[Key] = ("", "*")  # the one key: every policy is decided together
# A DatabaseBackup the API server refused (the webhook: a claim or store the namespace lacks) is asked for again
# after this long, or at once when its StatefulSet, its namespace or any policy changes.
REFUSAL_RETRY: Final = 60.0
_CONCURRENT_WRITES: Final = 16
# A DatabaseBackup's status (its last run failed or not) changes only the policies' counts: status writes are
# folded into one pass this many seconds after the first.
STATUS_SETTLE: Final = 5.0
_METADATA: Final = ("name", "namespace", "uid", "resourceVersion", "labels")


class PolicyController:
    kind = POLICY_PLURAL
    namespace: str | None = None  # cluster-wide only

    def __init__(
        self,
        api: client.ApiClient,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api, self.metrics, self.clock = api, metrics, clock
        self.queue: WorkQueue[Key] = WorkQueue()
        self._custom = client.CustomObjectsApi(api)
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self._refused: dict[Database, tuple[str, float]] = {}
        self._generations: dict[Key, object] = {}
        self._fingerprints: dict[tuple[str, str, str], str] = {}
        self.policies = Informer(
            name="databasebackuppolicies",
            list_call=self._custom.list_cluster_custom_object,
            arguments=(GROUP, VERSION, POLICY_PLURAL),
            handler=self._on_policy,
            on_restart=restarts(metrics, "databasebackuppolicies"),
        )
        self.namespaces = Informer(
            name="policy-namespaces",
            list_call=core.list_namespace,
            handler=self._on_namespace,
            transform=_labels_only,
            on_restart=restarts(metrics, "policy-namespaces"),
        )
        self.statefulsets = Informer(
            name="policy-statefulsets",
            list_call=apps.list_stateful_set_for_all_namespaces,
            handler=self._on_statefulset,
            transform=essentials,
            on_restart=restarts(metrics, "policy-statefulsets"),
        )
        self.backups = Informer(
            name="policy-databasebackups",
            list_call=self._custom.list_cluster_custom_object,
            arguments=(GROUP, VERSION, PLURAL),
            handler=self._on_backup,
            transform=_backup_essentials,
            on_restart=restarts(metrics, "policy-databasebackups"),
        )

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.policies, self.namespaces, self.statefulsets, self.backups)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    # --- watch handlers: any change may change the plan ---------------------------------------------------------

    def _on_policy(self, event: Event) -> None:
        # A new spec may fix what was refused. A status write (ours) changes no generation: no pass for it.
        generation = (event.object.get("metadata") or {}).get("generation")
        if event.type != "DELETED" and self._generations.get(event.key) == generation:
            return
        self._refused.clear()
        if event.type == "DELETED":
            self._generations.pop(event.key, None)
        else:
            self._generations[event.key] = generation
        self.queue.add(_ALL)

    def _on_namespace(self, event: Event) -> None:
        if self._changed("namespaces", event.object, event.type, event.key):
            for database in [d for d in self._refused if d[0] == event.key[1]]:
                del self._refused[database]
            self.queue.add(_ALL)

    def _on_statefulset(self, event: Event) -> None:
        if self._changed("statefulsets", event.object, event.type, event.key):
            self._refused.pop(event.key, None)
            self.queue.add(_ALL)

    def _on_backup(self, event: Event) -> None:
        status = event.object.get("status")
        if not self._changed("databasebackups", {**event.object, "status": None}, event.type, event.key):
            if self._changed("databasebackup-status", status, event.type, event.key) and self.policies.store:
                # Only the counts of failing ones change: one pass for many runs' status writes, a while later.
                self.queue.add_after(_ALL, STATUS_SETTLE)
            return
        self._changed("databasebackup-status", status, event.type, event.key)
        if self.policies.store or made_by(event.object) is not None:
            self.queue.add(_ALL)

    def _changed(self, kind: str, obj: object, type_: str, key: Key) -> bool:
        """Whether `obj` (a cached object's essentials, or a part of them) differs from what was last seen under
        `kind` and `key`, its resourceVersion aside: a StatefulSet's rollout, or a DatabaseBackup's status write on
        every run, asks for no pass over them all."""
        seen = (kind, *key)
        if type_ == "DELETED":
            return self._fingerprints.pop(seen, None) is not None
        if isinstance(obj, Mapping):
            metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
            obj = {**obj, "metadata": metadata}
        fingerprint = json.dumps(obj, sort_keys=True, default=str)
        if self._fingerprints.get(seen) == fingerprint:
            return False
        self._fingerprints[seen] = fingerprint
        return True

    # --- the pass ---------------------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> timedelta | None:
        started = time.perf_counter()
        now = time.monotonic()
        refused = {d: message for d, (message, at) in self._refused.items() if now - at < REFUSAL_RETRY}
        namespaces = {
            str((n.get("metadata") or {}).get("name") or ""): (n.get("metadata") or {}).get("labels") or {}
            for n in self.namespaces.store.values()
        }
        decided = plan(
            list(self.policies.store.values()),
            namespaces,
            list(self.statefulsets.store.values()),
            list(self.backups.store.values()),
            refused,
        )
        limit = asyncio.Semaphore(_CONCURRENT_WRITES)
        await asyncio.gather(
            *(self._create(limit, obj) for obj in decided.create),
            *(self._replace(limit, obj, version) for obj, version in decided.update),
            *(self._delete(limit, namespace, name) for namespace, name in decided.delete),
        )
        for name, status in decided.status.items():
            await self._write_status(name, status)
        self.metrics.reconcile_duration.observe(time.perf_counter() - started)
        if decided.create or decided.update or decided.delete:
            self.queue.add(_ALL)  # the statuses then count what now exists
        pending = [at for _, at in self._refused.values() if now - at < REFUSAL_RETRY]
        return timedelta(seconds=REFUSAL_RETRY - (now - min(pending)) + 0.5) if pending else None

    async def _create(self, limit: asyncio.Semaphore, obj: dict[str, Any]) -> None:
        namespace, name = key_of(obj)
        database = (namespace, obj["spec"]["databaseName"])
        async with limit:
            try:
                created = await raw(
                    self._custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, body(obj), _preload_content=False, **timeout()
                    )
                )
            except ApiException as error:
                if error.status == 409:
                    return  # made on an earlier pass: its watch event brings it
                if error.status in (400, 403, 422):
                    message = _refusal(error) or f"refused: HTTP {error.status}"
                    self._refused[database] = (message, time.monotonic())
                    log.warning("policy DatabaseBackup refused", namespace=namespace, name=name, reason=message[:300])
                    return
                raise
        self.metrics.api_requests.labels("create", PLURAL).inc()
        remember(self.backups, created)
        log.info("policy DatabaseBackup created", namespace=namespace, name=name, policy=_policy_of(obj))

    async def _replace(self, limit: asyncio.Semaphore, obj: dict[str, Any], version: str) -> None:
        """Write the template again: the spec whole (what the template dropped is defaulted again by the webhook),
        the policy's labels and annotations; the rest of the object (owner, other labels) stays."""
        namespace, name = key_of(obj)
        async with limit:
            try:
                stored = await raw(
                    self._custom.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name, _preload_content=False, **timeout()
                    )
                )
                metadata = stored.setdefault("metadata", {})
                metadata["resourceVersion"] = version
                metadata["labels"] = {**(metadata.get("labels") or {}), **obj["metadata"]["labels"]}
                metadata["annotations"] = {**(metadata.get("annotations") or {}), **obj["metadata"]["annotations"]}
                stored["spec"] = obj["spec"]
                updated = await raw(
                    self._custom.replace_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name, body(stored), _preload_content=False, **timeout()
                    )
                )
            except ApiException as error:
                if error.status in (404, 409):
                    self.queue.add(_ALL)  # deleted or changed meanwhile: decide again from the watch's view
                    return
                if error.status in (400, 403, 422):
                    database = (namespace, obj["spec"]["databaseName"])
                    self._refused[database] = (_refusal(error) or f"refused: HTTP {error.status}", time.monotonic())
                    return
                raise
        self.metrics.api_requests.labels("update", PLURAL).inc()
        remember(self.backups, updated)
        log.info("policy DatabaseBackup updated", namespace=namespace, name=name, policy=_policy_of(obj))

    async def _delete(self, limit: asyncio.Semaphore, namespace: str, name: str) -> None:
        async with limit:
            try:
                await sent(
                    self._custom.delete_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name, _preload_content=False, **timeout()
                    )
                )
            except ApiException as error:
                if error.status != 404:
                    raise
        self.metrics.api_requests.labels("delete", PLURAL).inc()
        self.backups.store.pop((namespace, name), None)
        log.info("policy DatabaseBackup deleted", namespace=namespace, name=name)

    async def _write_status(self, name: str, status: Mapping[str, Any]) -> None:
        stored = self.policies.store.get(("", name))
        if stored is not None and not _same(stored.get("status") or {}, status):
            await write_status(self._custom, POLICY_PLURAL, self.policies, self.metrics, stored, dict(status))

    async def run(self) -> None:
        tasks = [asyncio.create_task(i.run(), name=f"informer:{i.name}") for i in self.informers]
        try:
            await asyncio.gather(*(i.synced.wait() for i in self.informers))
            log.info("caches synced", kind=self.kind, **{i.name: len(i.store) for i in self.informers})
            self.queue.add(_ALL)
            tasks.append(asyncio.create_task(self.queue.run(1, self.reconcile), name=f"{self.kind}:workers"))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _same(stored: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether writing `status` (a merge patch) would change `stored`: every key it writes already holds its value."""
    return all(stored.get(key) == value for key, value in status.items())


def _refusal(error: ApiException) -> str | None:
    """The API server's (or the webhook's) words: the field and the value it refused (common.kube.checked puts
    the Status's reason and message in the exception's reason)."""
    text = str(error.reason or "").removeprefix("Invalid: ").removeprefix("Forbidden: ").removeprefix("BadRequest: ")
    return text[:500] or None


def _policy_of(obj: Mapping[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_POLICY) or "")


def _labels_only(namespace: dict[str, Any]) -> dict[str, Any]:
    metadata = namespace.get("metadata") or {}
    return {"metadata": {k: metadata[k] for k in ("name", "resourceVersion", "labels") if k in metadata}}


def _backup_essentials(backup: dict[str, Any]) -> dict[str, Any]:
    metadata = backup.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    spec = backup.get("spec") or {}
    status = backup.get("status") or {}
    return {
        "metadata": {
            **{k: metadata[k] for k in _METADATA if k in metadata},
            "annotations": {k: v for k, v in annotations.items() if k == ANNOTATION_TEMPLATE},
        },
        "spec": {k: spec[k] for k in ("databaseName", "suspend") if k in spec},
        "status": {k: status[k] for k in ("phase", "consecutiveFailures", "lastFailure") if k in status},
    }
