"""Keeps the webhook's background tasks (the StatefulSet informer, the certificate reloader, the keeper) running.

Each of them loops for ever and handles the failures it expects. One it does not expect (a bug, or an error type
nobody listed: `aiohttp.ServerDisconnectedError` is not an `OSError`) would otherwise end its task silently: the
webhook would go on serving with a certificate nobody renews or a cache nobody updates. So a task that ends, for
whatever reason, is logged with its error, counts as down (in `down`, and /readyz fails while it is, so the Service
sends requests to a replica that is whole; the certificate keeper excepted, whose own status says when its failures
matter: webhook.readiness), and is started again after a backoff that doubles up to `max_backoff` and starts over
once a run has lasted `stable` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog

__all__ = ["Supervisor"]

log = structlog.get_logger("webhook.supervisor")

Start = Callable[[], Awaitable[None]]


@dataclass
class Supervisor:
    tasks: Mapping[str, Start]
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    stable: float = 300.0
    on_restart: Callable[[str], None] | None = None  # task name, for a metric
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the backoff; tests hold it to look at a task down
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)

    @property
    def healthy(self) -> bool:
        return not self.down

    async def run(self) -> None:
        """Until cancelled; cancelling stops every task."""
        async with asyncio.TaskGroup() as group:
            for name, start in self.tasks.items():
                group.create_task(self._keep(name, start), name=f"supervise:{name}")

    async def _keep(self, name: str, start: Start) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            began = loop.time()
            task = self.running[name] = asyncio.ensure_future(start())
            try:
                await asyncio.wait([task])
            finally:
                if not task.done():  # we are being cancelled: take the task with us
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            self.down.add(name)
            failures = 1 if loop.time() - began >= self.stable else failures + 1
            delay = min(self.max_backoff, self.initial_backoff * 2 ** (failures - 1))
            _report(name, task, delay)
            if self.on_restart is not None:
                self.on_restart(name)
            await self.sleep(delay)
            self.down.discard(name)


def _report(name: str, task: asyncio.Task[None], delay: float) -> None:
    if task.cancelled():
        log.error("background task cancelled", task=name, restart_in=delay)
        return
    error = task.exception()
    if error is None:
        log.error("background task ended", task=name, restart_in=delay)
    else:
        log.error("background task crashed", task=name, restart_in=delay, exc_info=error)
