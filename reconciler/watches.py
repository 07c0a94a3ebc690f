"""One informer over all namespaces or one, as each controller (DatabaseBackups, DatabaseRestores) watches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.informer import Event, Informer
from reconciler.metrics import Metrics

__all__ = ["watch"]


def watch(
    name: str,
    namespace: str | None,
    metrics: Metrics,
    calls: tuple[Any, Any, tuple[Any, ...], tuple[Any, ...]],
    *,
    handler: Callable[[Event], None],
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
