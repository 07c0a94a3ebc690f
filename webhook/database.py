"""Does the database StatefulSet exist? Answered from a watch-backed cache, with one live GET on a miss so that a
database created a moment ago (not yet seen by the watch) is not refused."""

from __future__ import annotations

from typing import Protocol

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.informer import Informer
from common.kube import raw, timeout
from webhook.admission import Database
from webhook.metrics import Metrics

__all__ = ["DatabaseFinder", "StatefulSets"]


class DatabaseFinder(Protocol):
    async def find(self, namespace: str, name: str) -> Database: ...


class StatefulSets:
    def __init__(self, api: client.ApiClient, metrics: Metrics) -> None:
        self._apps = client.AppsV1Api(api)
        self._metrics = metrics
        self.informer = Informer(
            name="statefulsets",
            list_call=self._apps.list_stateful_set_for_all_namespaces,
            on_restart=lambda reason: metrics.watch_restarts.labels(reason).inc(),
        )

    @property
    def synced(self) -> bool:
        return self.informer.synced.is_set()

    async def find(self, namespace: str, name: str) -> Database:
        if self.synced:
            found = self.informer.get(namespace, name)
            if found is not None:
                return Database(namespace, name, found)
        self._metrics.kube_requests.labels("cache-miss").inc()
        try:
            body = await raw(
                self._apps.read_namespaced_stateful_set(name, namespace, _preload_content=False, **timeout(2.0, 5.0))
            )
            return Database(namespace, name, body)
        except ApiException as error:
            if error.status == 404:
                return Database(namespace, name, None)
            return Database(namespace, name, None, f"the API server answered {error.status} {error.reason}")
        except (TimeoutError, OSError, aiohttp.ClientError) as error:
            return Database(namespace, name, None, f"no answer from the API server ({type(error).__name__})")
