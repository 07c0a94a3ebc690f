"""Events on DatabaseBackups (core/v1, which `kubectl describe` shows). Messages never hold secrets: they come from
the plan, whose texts come from validation and from the runner's already scrubbed result."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import body, sent, timeout
from reconciler.metrics import Metrics
from reconciler.world import Event

COMPONENT = "dbb-reconciler"
log = structlog.get_logger("reconciler.events")


class EventRecorder:
    """Records Events in the background, as client-go's recorder does: an Event is worth a try, never a slower or
    failed reconcile. A bounded backlog drops (and logs) what it cannot hold rather than grow without limit."""

    def __init__(self, api: client.ApiClient, metrics: Metrics, instance: str, *, backlog: int = 10_000) -> None:
        self._core = client.CoreV1Api(api)
        self._metrics, self._instance = metrics, instance
        # The object as cached (shared, not copied) and the Event: the body is built when it is sent, so a burst
        # of thousands of runs in one minute does not hold thousands of bodies.
        self._pending: asyncio.Queue[tuple[Mapping[str, Any], Event, datetime]] = asyncio.Queue(maxsize=backlog)

    def record(self, obj: Mapping[str, Any], event: Event, now: datetime) -> None:
        try:
            self._pending.put_nowait((obj, event, now))
        except asyncio.QueueFull:
            log.warning("event dropped: backlog full", reason=event.reason)

    async def run(self, workers: int = 2) -> None:
        await asyncio.gather(*(self._work() for _ in range(workers)))

    async def _work(self) -> None:
        while True:
            obj, pending, now = await self._pending.get()
            event = event_body(obj, pending, now, self._instance)
            try:
                await sent(
                    self._core.create_namespaced_event(
                        event["metadata"]["namespace"], body(event), _preload_content=False, **timeout()
                    )
                )
                self._metrics.api_requests.labels("create", "events").inc()
            except (ApiException, OSError, TimeoutError) as error:
                # e.g. the namespace is terminating: a log line, not a retry storm.
                log.warning("event not recorded", reason=event["reason"], error=str(error)[:200])


def event_body(obj: Mapping[str, Any], event: Event, now: datetime, instance: str) -> dict[str, Any]:
    metadata = obj["metadata"]
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
