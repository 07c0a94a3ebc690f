"""The progress a Job's Pod writes to its log (pods/log), as the user may read it.

The Pod is found by the label the Job controller gives it. Its log is followed to its end; a Pod that is replaced
(a retried run) is followed in turn. A user who may not read the Pods or their logs is told once, and the command
goes on with status alone. Where no Pod ever appears (a cluster without kubelets, such as the local sandbox, whose
executor runs the runner itself), nothing is shown and status alone tells the story.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import checked, raw, timeout
from plugin.kube import refusal
from plugin.progress import Progress, parse_progress

__all__ = ["follow_log"]

JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
POLL_SECONDS: Final = 1.0
# A log may stay silent for long between progress lines (a slow query); past this the stream is opened again.
READ_TIMEOUT: Final = 300.0


async def follow_log(
    api: client.ApiClient,
    namespace: str,
    job: str,
    on_progress: Callable[[Progress], None],
    note: Callable[[str], None],
) -> None:
    """Report each progress line of the Job's Pods until cancelled (the caller decides when the work is done)."""
    core = client.CoreV1Api(api)
    read: dict[str, int] = {}  # lines already read, per Pod: a stream opened again skips them
    finished: set[str] = set()
    while True:
        try:
            pods = await raw(
                core.list_namespaced_pod(
                    namespace, label_selector=f"{JOB_NAME_LABEL}={job}", _preload_content=False, **timeout()
                )
            )
            for pod in _by_age(pods.get("items") or []):
                name = pod["metadata"]["name"]
                if name in finished or not _started(pod):
                    continue
                read[name] = await _read(core, namespace, pod, read.get(name, 0), on_progress)
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    finished.add(name)
        except ApiException as error:
            if error.status not in (400, 404):  # 400: its container is not running yet; 404: the Pod went
                # Forbidden above all (a user without pods/log), but any refusal: progress is a nicety.
                note(f"progress not shown: {refusal(error)}; following status only")
                return
        except (aiohttp.ClientError, TimeoutError):
            pass  # a dropped stream: look again
        await asyncio.sleep(POLL_SECONDS)


async def _read(
    core: client.CoreV1Api, namespace: str, pod: dict[str, Any], skip: int, on_progress: Callable[[Progress], None]
) -> int:
    """Follow one Pod's log to its end (or until it falls silent for READ_TIMEOUT); the lines read in all."""
    container = pod["spec"]["containers"][0]["name"]
    response = await checked(
        core.read_namespaced_pod_log(
            pod["metadata"]["name"],
            namespace,
            container=container,
            follow=True,
            _preload_content=False,
            _request_timeout=(5.0, READ_TIMEOUT),
        )
    )
    count = 0
    async with response:
        async for raw_line in response.content:
            count += 1
            if count <= skip:
                continue
            progress = parse_progress(raw_line.decode(errors="replace"))
            if progress is not None:
                on_progress(progress)
    return count


def _started(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")


def _by_age(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
