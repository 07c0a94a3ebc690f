"""How a backup Job runs: `JobExecutor` creates the Job; the cluster's Job controller and kubelet run it, and the
runner's result comes back as the Pod's termination message.

`Executor` is the seam: the sandbox (`hack/sandbox/executor.py`, where no kubelet runs) plugs in its own, which
runs the same Job's command itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import body, raw, sent, timeout

__all__ = ["Executor", "JobExecutor"]


class Executor(Protocol):
    async def start(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create the Job (ApiException 409 if it exists) and see that it runs; return the created Job."""
        ...

    async def stop(self, namespace: str, name: str) -> None:
        """End a running Job (concurrencyPolicy Replace). Its deletion completes only once its run has stopped."""
        ...

    async def close(self) -> None: ...


class JobExecutor:
    def __init__(self, api: client.ApiClient) -> None:
        self._batch = client.BatchV1Api(api)

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

    async def close(self) -> None:
        return None
