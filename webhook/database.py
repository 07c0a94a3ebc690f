"""What admission needs to know about the database: its StatefulSet, and the claims its Pods mount.

Every answer must come well inside the API server's `timeoutSeconds`; the caller (`webhook.lookup`) gives each
admission request one deadline for all of it. Within that, the StatefulSet comes from a watch-backed cache, and the
API server is asked only when the cache cannot know:
- once the cache has synced, what it holds is the answer;
- a miss while its watch stream is open is trusted, after a short wait: the watch starts from the list's
  resourceVersion, so an object the cache lacks was created after the list, and the API server sends its event
  within milliseconds of the write. The one gap is a StatefulSet applied a moment before its DatabaseBackup (one
  `kubectl apply -f` with both): we wait up to `watch_grace` for its event, then answer "not found" without a GET;
- before the first sync, or while the watch is down (reconnecting after an error, between a list and its watch),
  the cache may be behind by any amount: one live GET, inside the deadline.
The Pods (which claims they mount) come from a second cache that holds only what a StatefulSet creates: Pods with
the `statefulset.kubernetes.io/pod-name` label, each cut down to its name, owners and claim names, so it stays small
in a cluster of many Pods. Once it is synced and watching, its answer stands (a Pod created in the same millisecond
as the admission mounts nothing yet); before that, the Pods are listed live by the StatefulSet's selector.
Live reads are shared: while one is on the way, admissions that need the same answer wait for it instead of asking
again (a burst of creates costs one read at a time, not one each). Nothing is kept once a read is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import GROUP, PLURAL, VERSION
from common.informer import Event, Informer
from common.kube import raw, timeout
from common.stores.model import STORE_PLURAL
from common.volumes import pod_claims
from webhook.backups import Database
from webhook.metrics import Metrics

__all__ = ["WATCH_GRACE", "DatabaseFinder", "StatefulSets", "Unanswered"]

# The longest a watch event for a just-created StatefulSet is waited for. Events arrive in milliseconds; a second is
# generous, and half of the lookup budget (webhook.lookup.LOOKUP_BUDGET) leaves the other half for the Pods.
WATCH_GRACE: Final = 1.0
# Every Pod a StatefulSet creates carries it (with its own name as the value); other Pods are not cached.
STATEFULSET_POD_LABEL: Final = "statefulset.kubernetes.io/pod-name"

Read = Callable[[str, str], Awaitable[dict[str, Any] | None]]  # (namespace, name) -> object, None if not found
ListIn = Callable[[str], Awaitable[list[dict[str, Any]]]]  # namespace -> its objects of one kind


T = TypeVar("T")


class Unanswered(Exception):
    """The API server gave no usable answer; the message says what happened, for a warning."""


class DatabaseFinder(Protocol):
    @property
    def cached(self) -> bool:
        """True when `find`, `statefulsets` and `pods` answer from watch caches, without asking the API server."""
        ...

    async def find(self, namespace: str, name: str) -> Database: ...

    async def statefulsets(self, namespace: str) -> list[dict[str, Any]]:
        """Every StatefulSet of the namespace. Raises Unanswered."""
        ...

    async def pods(self, namespace: str) -> dict[str, tuple[str, ...]]:
        """The claims each Pod that a StatefulSet of the namespace made mounts, by Pod name. Raises Unanswered."""
        ...

    async def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Service, None if it does not exist. Raises Unanswered."""
        ...

    async def namespace(self, namespace: str) -> dict[str, Any]:
        """The Namespace's metadata ({} if it does not exist). Raises Unanswered."""
        ...

    async def backupstore(self, name: str) -> dict[str, Any] | None:
        """The BackupStore, None if it does not exist. Raises Unanswered."""
        ...

    async def databasebackup(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The DatabaseBackup (a DatabaseRestore's source), None if it does not exist. Raises Unanswered."""
        ...


class StatefulSets:
    def __init__(
        self,
        informer: Informer,
        read: Read,
        list_pods: ListIn,
        metrics: Metrics,
        *,
        watch_grace: float = WATCH_GRACE,
        read_service: Read | None = None,
        read_namespace: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
        read_backup: Read | None = None,
        read_store: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
        list_statefulsets: ListIn | None = None,
        pods: Informer | None = None,
    ) -> None:
        self.informer = informer
        self.pods_informer = pods
        self.informer.handler = self._arrived
        self._read, self._list_pods, self._metrics = read, list_pods, metrics
        self._read_service, self._read_namespace = read_service, read_namespace
        self._read_backup, self._read_store = read_backup, read_store
        self._list_statefulsets = list_statefulsets
        self._shared = _Shared()
        self.watch_grace = watch_grace
        self._changed = asyncio.Event()

    @classmethod
    def connect(cls, api: client.ApiClient, metrics: Metrics) -> StatefulSets:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)

        async def read(namespace: str, name: str) -> dict[str, Any] | None:
            # The caller's deadline cuts this short; the request timeout only backs it up.
            return await _absent_on_404(
                apps.read_namespaced_stateful_set(name, namespace, _preload_content=False, **timeout())
            )

        async def list_pods(namespace: str) -> list[dict[str, Any]]:
            found = await raw(
                core.list_namespaced_pod(
                    namespace, label_selector=STATEFULSET_POD_LABEL, _preload_content=False, **timeout()
                )
            )
            return list(found.get("items") or [])

        async def list_statefulsets(namespace: str) -> list[dict[str, Any]]:
            found = await raw(apps.list_namespaced_stateful_set(namespace, _preload_content=False, **timeout()))
            return list(found.get("items") or [])

        async def read_service(namespace: str, name: str) -> dict[str, Any] | None:
            return await _absent_on_404(
                core.read_namespaced_service(name, namespace, _preload_content=False, **timeout())
            )

        async def read_namespace(name: str) -> dict[str, Any] | None:
            return await _absent_on_404(core.read_namespace(name, _preload_content=False, **timeout()))

        custom = client.CustomObjectsApi(api)

        async def read_backup(namespace: str, name: str) -> dict[str, Any] | None:
            return await _absent_on_404(
                custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _preload_content=False, **timeout()
                )
            )

        async def read_store(name: str) -> dict[str, Any] | None:
            return await _absent_on_404(
                custom.get_cluster_custom_object(
                    GROUP, VERSION, STORE_PLURAL, name, _preload_content=False, **timeout()
                )
            )

        informer = Informer(
            name="statefulsets",
            list_call=apps.list_stateful_set_for_all_namespaces,
            on_restart=lambda reason: metrics.watch_restarts.labels(reason).inc(),
        )
        pods = Informer(
            name="pods",
            list_call=core.list_pod_for_all_namespaces,
            options={"label_selector": STATEFULSET_POD_LABEL},
            transform=_claims_only,
            on_restart=lambda reason: metrics.watch_restarts.labels(reason).inc(),
        )
        return cls(
            informer,
            read,
            list_pods,
            metrics,
            read_service=read_service,
            read_namespace=read_namespace,
            read_backup=read_backup,
            read_store=read_store,
            list_statefulsets=list_statefulsets,
            pods=pods,
        )

    @property
    def synced(self) -> bool:
        return self.informer.synced.is_set()

    @property
    def cached(self) -> bool:
        pods = self.pods_informer
        return self.synced and self.informer.watching and pods is not None and pods.synced.is_set() and pods.watching

    async def find(self, namespace: str, name: str) -> Database:
        if self.synced:
            found = self.informer.get(namespace, name)
            if found is None and self.informer.watching:
                found = await self._arrival(namespace, name)
                if found is None and self.informer.watching:
                    return Database(namespace, name, None)
            if found is not None:
                return Database(namespace, name, found)
        try:
            found = await self._ask("cache-miss", (namespace, name), lambda: self._read(namespace, name))
            return Database(namespace, name, found)
        except _FAILURES as error:
            return Database(namespace, name, None, _unanswered(error))

    async def statefulsets(self, namespace: str) -> list[dict[str, Any]]:
        if self.synced and self.informer.watching:
            return [sts for (where, _), sts in list(self.informer.store.items()) if where == namespace]
        read = self._list_statefulsets
        assert read is not None
        try:
            return await self._ask("statefulsets", (namespace,), lambda: read(namespace))
        except _FAILURES as error:
            raise Unanswered(_unanswered(error)) from None

    async def pods(self, namespace: str) -> dict[str, tuple[str, ...]]:
        cache = self.pods_informer
        found: list[dict[str, Any]]
        if cache is not None and cache.synced.is_set() and cache.watching:
            found = [pod for (where, _), pod in list(cache.store.items()) if where == namespace]
        else:
            try:
                found = await self._ask("pods", (namespace,), lambda: self._list_pods(namespace))
            except _FAILURES as error:
                raise Unanswered(_unanswered(error)) from None
        return {str(pod["metadata"]["name"]): pod_claims(pod) for pod in found}

    async def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        read = self._read_service
        assert read is not None
        try:
            return await self._ask("service", (namespace, name), lambda: read(namespace, name))
        except _FAILURES as error:
            raise Unanswered(_unanswered(error)) from None

    async def namespace(self, namespace: str) -> dict[str, Any]:
        read = self._read_namespace
        assert read is not None
        try:
            found = await self._ask("namespace", (namespace,), lambda: read(namespace))
        except _FAILURES as error:
            raise Unanswered(_unanswered(error)) from None
        return dict((found or {}).get("metadata") or {})

    async def backupstore(self, name: str) -> dict[str, Any] | None:
        read = self._read_store
        assert read is not None
        try:
            return await self._ask("backupstore", (name,), lambda: read(name))
        except _FAILURES as error:
            raise Unanswered(_unanswered(error)) from None

    async def databasebackup(self, namespace: str, name: str) -> dict[str, Any] | None:
        read = self._read_backup
        assert read is not None
        try:
            return await self._ask("databasebackup", (namespace, name), lambda: read(namespace, name))
        except _FAILURES as error:
            raise Unanswered(_unanswered(error)) from None

    async def _ask(self, what: str, key: tuple[str, ...], read: Callable[[], Awaitable[T]]) -> T:
        """One live read of `what`, shared with whoever asks for the same while it is on the way; counted once."""

        async def counted() -> T:
            self._metrics.kube_requests.labels(what).inc()
            return await read()

        return await self._shared.get((what, *key), counted)

    async def _arrival(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, if its watch event comes within `watch_grace`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.watch_grace
        while (found := self.informer.get(namespace, name)) is None and loop.time() < deadline:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await changed.wait()
        return found

    def _arrived(self, event: Event) -> None:
        # Wake every waiter; each looks for its own object and waits on the next Event if it is not there yet.
        self._changed.set()
        self._changed = asyncio.Event()


def _claims_only(pod: dict[str, Any]) -> dict[str, Any]:
    """What `pods` reads of a Pod: its name, owners and claims."""
    metadata = pod.get("metadata") or {}
    kept = ("name", "namespace", "resourceVersion", "ownerReferences")
    return {
        "metadata": {k: metadata[k] for k in kept if k in metadata},
        "spec": {"volumes": [{"persistentVolumeClaim": {"claimName": claim}} for claim in pod_claims(pod)]},
    }


class _Shared:
    """At most one read in flight per key. A waiter's deadline cancels its own wait, never the read the others
    wait for."""

    def __init__(self) -> None:
        self._flying: dict[tuple[str, ...], asyncio.Future[Any]] = {}

    async def get(self, key: tuple[str, ...], read: Callable[[], Awaitable[T]]) -> T:
        flying = self._flying.get(key)
        if flying is None:
            flying = asyncio.ensure_future(read())
            self._flying[key] = flying
            flying.add_done_callback(functools.partial(self._landed, key))
        result: T = await asyncio.shield(flying)
        return result

    def _landed(self, key: tuple[str, ...], flying: asyncio.Future[Any]) -> None:
        if self._flying.get(key) is flying:
            del self._flying[key]
        if not flying.cancelled():
            flying.exception()  # retrieved: a read whose waiters all gave up must not warn when it fails


_FAILURES: Final = (ApiException, aiohttp.ClientError, TimeoutError, OSError, ValueError)


async def _absent_on_404(call: Awaitable[Any]) -> dict[str, Any] | None:
    try:
        return await raw(call)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _unanswered(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"the API server answered {error.status} {error.reason}"
    return f"no answer from the API server ({type(error).__name__})"
