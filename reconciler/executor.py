"""How a backup Job runs: `JobExecutor` creates the Job; the cluster's Job controller and kubelet run it, and the
runner's result comes back as the Pod's termination message. An archiver (reconciler.archiver) is a Deployment the
same way, and its state comes back as the answer its Pod gives to `GET /status`.

`Executor` is the seam: the sandbox (`hack/sandbox/executor.py`, where no kubelet runs) plugs in its own, which
runs the same Job's command itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Protocol

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import body, raw, sent, timeout
from reconciler.arguments import ARCHIVER_PORT

# An archiver's answer is a few hundred bytes; anything much larger, or slower, is not an answer.
STATUS_TIMEOUT: Final = 3.0
STATUS_LIMIT: Final = 16 * 1024

__all__ = ["Executor", "JobExecutor"]


class Executor(Protocol):
    async def start(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create the Job (ApiException 409 if it exists) and see that it runs; return the created Job."""
        ...

    async def stop(self, namespace: str, name: str) -> None:
        """End a running Job (concurrencyPolicy Replace). Its deletion completes only once its run has stopped."""
        ...

    async def apply_archiver(self, deployment: dict[str, Any], exists: bool) -> None:
        """Create the archiver's Deployment, or replace the one that `exists` with it."""
        ...

    async def remove_archiver(self, namespace: str, name: str) -> None:
        """Delete the archiver's Deployment, if there is one."""
        ...

    async def archiver_status(self, namespace: str, name: str, pod: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The archiver's answer to `GET /status` (`pod`: its running Pod, None when there is none); None when it
        does not answer."""
        ...

    async def close(self) -> None: ...


class JobExecutor:
    def __init__(self, api: client.ApiClient) -> None:
        self._batch = client.BatchV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._http: aiohttp.ClientSession | None = None

    async def start(self, job: dict[str, Any]) -> dict[str, Any]:
        namespace = job["metadata"]["namespace"]
        return await raw(self._batch.create_namespaced_job(namespace, body(job), _preload_content=False, **timeout()))

    async def stop(self, namespace: str, name: str) -> None:
        # Foreground: the Job stays (with a deletionTimestamp) until the garbage collector has deleted its Pods,
        # and a Pod is gone only once its containers have stopped. So "the Job is gone" means "the run stopped".
        try:
            await sent(
                self._batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Foreground", _preload_content=False, **timeout()
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def apply_archiver(self, deployment: dict[str, Any], exists: bool) -> None:
        namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        if not exists:
            try:
                await sent(self._apps.create_namespaced_deployment(namespace, body(deployment), **_unparsed()))
                return
            except ApiException as error:
                if error.status != 409:
                    raise
        # Unconditional (no resourceVersion): the template is ours, whatever another writer left there.
        await sent(self._apps.replace_namespaced_deployment(name, namespace, body(deployment), **_unparsed()))

    async def remove_archiver(self, namespace: str, name: str) -> None:
        try:
            await sent(
                self._apps.delete_namespaced_deployment(name, namespace, propagation_policy="Background", **_unparsed())
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def archiver_status(self, namespace: str, name: str, pod: Mapping[str, Any] | None) -> dict[str, Any] | None:
        address = ((pod or {}).get("status") or {}).get("podIP")
        if not isinstance(address, str) or not address:
            return None
        host = f"[{address}]" if ":" in address else address
        return await self.status_from(f"http://{host}:{ARCHIVER_PORT}/status")

    async def status_from(self, url: str) -> dict[str, Any] | None:
        """An archiver's JSON answer at `url`, or None: no answer, an error, too slow, too large, or not an object."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT))
        try:
            async with self._http.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    return None
                data = b""
                async for chunk in response.content.iter_chunked(4096):
                    data += chunk
                    if len(data) > STATUS_LIMIT:
                        return None
        except (aiohttp.ClientError, TimeoutError):
            return None
        try:
            answer = json.loads(data)
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def _unparsed() -> dict[str, Any]:
    return {"_preload_content": False, **timeout()}
