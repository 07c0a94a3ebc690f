"""List-then-watch caches of raw Kubernetes objects, shared by the webhook (StatefulSets) and the reconciler
(DatabaseBackups, Jobs).

Why not `kubernetes_asyncio.watch.Watch`: it deserialises every event into generated models (slow, and we want the
JSON), retries a 410 Gone with the stale resourceVersion, and reads with `readline`, which has a length limit. Here:

- list (raw JSON), then watch from the list's resourceVersion with bookmarks on;
- every request has a read timeout: bookmarks arrive about once a minute, so a stream silent for `read_timeout`
  is dead, and we reconnect rather than hang (kubernetes-asyncio has no timeout by default);
- the server ends each watch after `watch_timeout` seconds; we resume from the last resourceVersion seen;
- 410 Gone (or "too old resource version") means our resourceVersion was compacted away: list again, and tell the
  handler about objects that vanished meanwhile;
- any other failure reconnects with capped exponential backoff and jitter. The loop ends only when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import structlog
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import checked

__all__ = ["Event", "Informer", "Key", "key_of"]

log = structlog.get_logger("informer")

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Handler = Callable[["Event"], None]
ListCall = Callable[..., Awaitable[Any]]

_MAX_LINE: Final = 16 * 1024 * 1024  # an object is at most ~1.5 MiB in etcd; anything past this is garbage


@dataclass(frozen=True)
class Event:
    type: str  # ADDED | MODIFIED | DELETED
    object: dict[str, Any]

    @property
    def key(self) -> Key:
        return key_of(self.object)


def key_of(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


@dataclass
class Informer:
    """A cache of one resource kept current by list+watch. `list_call` is a kubernetes-asyncio list method
    (namespaced or for all namespaces); `arguments` are its positional arguments, `options` its keyword ones
    (e.g. label_selector)."""

    name: str
    list_call: ListCall
    arguments: tuple[Any, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    handler: Handler | None = None
    on_restart: Callable[[str], None] | None = None
    # Keep only what readers use: a cache of thousands of whole objects (Jobs with their pod templates) is most of
    # a controller's memory. Applied to every object entering the store, listed, watched or written through.
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Lists come in pages, so that the first sync never holds every object's JSON and dicts at once.
    page_size: int = 500
    watch_timeout: int = 300
    read_timeout: float = 150.0
    connect_timeout: float = 5.0
    max_backoff: float = 30.0
    store: dict[Key, dict[str, Any]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    resource_version: str | None = None
    # A watch stream is open: an object missing from the store was, if anything, created moments ago and its event
    # is on the way. Readers that must not miss a fresh object ask the API server while this is False.
    watching: bool = False

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.get((namespace, name))

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                failures = 0  # a clean end: the server's watch timeout
            except _Gone:
                self._restart("gone")
                self.resource_version = None
            except (ApiException, aiohttp.ClientError, TimeoutError, ValueError, KeyError, OSError) as error:
                failures += 1
                delay = min(self.max_backoff, 0.5 * 2 ** min(failures, 8)) * random.uniform(0.5, 1.0)  # noqa: S311
                status = getattr(error, "status", None)
                log.warning("watch failed", informer=self.name, error=_describe(error), status=status, retry_in=delay)
                self._restart("error")
                if status == 410:
                    self.resource_version = None
                await asyncio.sleep(delay)

    def _restart(self, reason: str) -> None:
        if self.on_restart is not None:
            self.on_restart(reason)

    async def _list(self) -> None:
        fresh: dict[Key, dict[str, Any]] = {}
        version: str | None = None
        token: str | None = None
        while True:
            page = await self._page(token)
            kind = str(page.get("kind", "")).removesuffix("List")
            for item in page.get("items") or []:
                # List items carry no kind; the handlers and the store want whole objects.
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", page.get("apiVersion"))
                fresh[key_of(item)] = self.keep(item)
            metadata = page.get("metadata") or {}
            version = version or metadata["resourceVersion"]  # every page is the same snapshot
            token = metadata.get("continue")
            if not token:
                break
        vanished = [self.store[key] for key in self.store.keys() - fresh.keys()]
        previous = self.store
        self.store = fresh
        self.resource_version = version
        self.synced.set()
        log.debug("listed", informer=self.name, count=len(fresh), resource_version=self.resource_version)
        if self.handler is not None:
            for obj in vanished:
                self.handler(Event("DELETED", obj))
            for key, item in fresh.items():
                old = previous.get(key)
                if old is None or _version(old) != _version(item):
                    self.handler(Event("ADDED" if old is None else "MODIFIED", item))

    async def _page(self, token: str | None) -> dict[str, Any]:
        options = dict(self.options, limit=self.page_size)
        if token:
            options["_continue"] = token
        try:
            response = await checked(
                self.list_call(
                    *self.arguments,
                    **options,
                    _preload_content=False,
                    _request_timeout=(self.connect_timeout, max(self.read_timeout, 60.0)),
                )
            )
        except ApiException as error:
            if error.status == 410 and token:
                raise _Gone from None  # the continue token expired mid-list: start the list again
            raise
        async with response:
            page: dict[str, Any] = await response.json()
        return page

    def keep(self, obj: dict[str, Any]) -> dict[str, Any]:
        """What the store holds of an object: without managedFields, and through `transform`."""
        obj = _slim(obj)
        return self.transform(obj) if self.transform is not None else obj

    async def _watch(self) -> None:
        response = await checked(
            self.list_call(
                *self.arguments,
                **self.options,
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=self.resource_version,
                timeout_seconds=self.watch_timeout,
                _preload_content=False,
                _request_timeout=(self.connect_timeout, self.read_timeout),
            )
        )
        async with response:
            self.watching = True
            try:
                async for line in _lines(response.content):
                    self._apply(json.loads(line))
            finally:
                self.watching = False

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise _Gone
            raise ApiException(status=code, reason=f"{obj.get('reason')}: {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = version
        if kind == "BOOKMARK" or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        obj = self.keep(obj)
        key = key_of(obj)
        if kind != "DELETED" and _older(obj, self.store.get(key)):
            return  # our own write, stored on write, is newer than this event
        if kind == "DELETED":
            self.store.pop(key, None)
        else:
            self.store[key] = obj
        if self.handler is not None:
            self.handler(Event(kind, obj))


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-delimited JSON of any line length (aiohttp's readline refuses lines over 128 KiB)."""
    buffer = bytearray()
    async for chunk in content.iter_any():
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if line.strip():
                yield line
        if len(buffer) > _MAX_LINE:
            raise ValueError(f"a watch event over {_MAX_LINE} bytes")
    if buffer.strip():
        yield bytes(buffer)


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop managedFields: no reader needs them, and they are often most of an object's bytes."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return obj


def _older(incoming: dict[str, Any], stored: dict[str, Any] | None) -> bool:
    """Whether an event carries an older version than the store. resourceVersions are opaque to clients in
    principle; in practice they are etcd revisions, and we compare them only when both are plain numbers."""
    new, old = _version(incoming), _version(stored) if stored is not None else None
    return bool(new and old and new.isdigit() and old.isdigit() and int(new) < int(old))


def _version(obj: dict[str, Any]) -> str | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return str(value) if value is not None else None


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


@contextlib.asynccontextmanager
async def running(*informers: Informer, sync_timeout: float = 60.0) -> AsyncIterator[None]:
    """Run informers in the background until the block ends; enter once each has listed."""
    tasks: list[asyncio.Future[Any]] = [asyncio.create_task(i.run(), name=f"informer:{i.name}") for i in informers]
    synced: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(i.synced.wait() for i in informers)))
    try:
        done, _ = await asyncio.wait([synced, *tasks], timeout=sync_timeout, return_when=asyncio.FIRST_COMPLETED)
        if synced not in done:
            for task in done:
                task.result()  # an informer that died before syncing: its error, here
            raise TimeoutError(f"informers {[i.name for i in informers]} not synced within {sync_timeout}s")
        yield
    finally:
        synced.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(synced, *tasks, return_exceptions=True)
