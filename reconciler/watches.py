"""What each controller (DatabaseBackups, DatabaseRestores) does the same way: one informer over all namespaces or
one, and the status write through to its own cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import GROUP, VERSION
from common.informer import Event, Informer, key_of
from common.kube import MERGE_PATCH, body, raw, timeout
from reconciler.metrics import Metrics

__all__ = ["remember", "watch", "write_status"]


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
        on_restart=lambda reason: metrics.watch_restarts.labels(name, reason).inc(),
    )


async def write_status(
    custom: client.CustomObjectsApi,
    plural: str,
    informer: Informer,
    metrics: Metrics,
    obj: dict[str, Any],
    status: dict[str, Any],
) -> None:
    """Merge-patch `status` of `obj` (one of `plural`) and keep the answer in `informer`; an object deleted
    meanwhile is no error."""
    namespace, name = key_of(obj)
    try:
        updated = await raw(
            custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body({"status": status}),
                _preload_content=False,
                **MERGE_PATCH,
                **timeout(),
            )
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
