"""Following a request to its end: read the objects again and again, judge them (`plugin.outcomes`), say what it
waits for whenever that changes, and show the progress of the Job doing the work while it runs.

Polling one object a second costs the API server little and cannot miss an end the way a watch that lapses between
two reads can; a command follows one request, not a fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

from kubernetes_asyncio import client

from plugin.logs import follow_log
from plugin.outcomes import Step
from plugin.progress import ProgressLine

__all__ = ["follow"]

POLL_SECONDS: Final = 1.0


async def follow(
    api: client.ApiClient,
    namespace: str,
    step: Callable[[], Awaitable[Step]],
    out: ProgressLine,
    *,
    poll: float = POLL_SECONDS,
) -> Step:
    """Until `step` says done: its notes (each once), and the progress of its Job while one is named."""
    said: str | None = None
    following: str | None = None
    logs: asyncio.Task[None] | None = None
    try:
        while True:
            now = await step()
            if now.job is not None and now.job != following and not now.done:
                await _stop(logs)
                following = now.job
                logs = asyncio.create_task(follow_log(api, namespace, now.job, out.progress, out.note))
            if now.done:
                return now
            if now.note is not None and now.note != said:
                out.note(now.note)
                said = now.note
            await asyncio.sleep(poll)
    finally:
        await _stop(logs)
        out.end()


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
