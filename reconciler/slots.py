"""The replication slots' side of the backup controller: a `SlotPlan` (reconciler.slot, pure) applied.

- The Job that drops a slot is created like any run's (409: created before; the name is the lock).
- The finalizer is added or removed on a fresh read of the DatabaseBackup, written back whole with its
  resourceVersion (a change in between fails with 409, and the queue tries again with a newer read). Whole, not
  from the cache: the cache leaves out `kubectl apply`'s last-applied annotation, which a write from it would drop.
  The API server's admission policy lets the reconciler change nothing else of a DatabaseBackup it did not make
  (deploy/reconciler/admission.yaml).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import GROUP, PLURAL, VERSION
from common.informer import key_of
from common.kube import raw, sent, timeout
from reconciler.metrics import Metrics
from reconciler.slot import FINALIZER, SlotPlan
from reconciler.world import Event

__all__ = ["Slots"]

log = structlog.get_logger("reconciler")


class Slots:
    def __init__(
        self,
        api: client.ApiClient,
        metrics: Metrics,
        create: Callable[[dict[str, Any]], Awaitable[None]],
        record: Callable[[dict[str, Any], Event], None],
    ) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._metrics, self._create, self._record = metrics, create, record

    async def apply(self, obj: dict[str, Any], plan: SlotPlan) -> None:
        if plan.create is not None:
            await self._create(plan.create)
        for event in plan.events:
            self._record(obj, event)
        if plan.hold is not None:
            await self._finalizer(obj, plan.hold)

    async def _finalizer(self, obj: dict[str, Any], hold: bool) -> None:
        namespace, name = key_of(obj)
        try:
            fresh = await raw(
                self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _preload_content=False, **timeout()
                )
            )
        except ApiException as error:
            if error.status == 404:
                return
            raise
        finalizers = [str(f) for f in fresh["metadata"].get("finalizers") or []]
        if (FINALIZER in finalizers) == hold:
            return
        fresh["metadata"]["finalizers"] = (
            [*finalizers, FINALIZER] if hold else [f for f in finalizers if f != FINALIZER]
        )
        try:
            await sent(
                self._custom.replace_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, fresh, _preload_content=False, **timeout()
                )
            )
        except ApiException as error:
            if error.status == 404:
                return
            raise
        self._metrics.api_requests.labels("update", PLURAL).inc()
        log.info(
            "finalizer added" if hold else "finalizer removed", namespace=namespace, name=name, finalizer=FINALIZER
        )
