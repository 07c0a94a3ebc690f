"""A per-object work queue, as client-go's workqueue behaves:

- a key is handled by one worker at a time;
- adding a key that is already waiting does nothing (duplicates fold into one);
- adding a key that is being handled makes it run once more afterwards (nothing is lost);
- `add_after` keeps only the earliest pending time per key;
- a handler that raises is retried with exponential backoff per key (0.5 s doubling up to 5 min), reset by a
  success; a handler that returns a delay is requeued after it (the next slot plus padding);
- a key whose time came (`add_after`: a slot is due) goes ahead of keys added by watch events, and a waiting key
  whose time comes moves ahead. When a thousand slots fall due in the same second, their Jobs are created first,
  and the status writes and Events those runs cause (which re-add the same keys, from the watches) wait behind
  them instead of taking turns with them: the slot's last Job is not held up by the first ones' paperwork. Never
  for long: after DUE_STREAK due keys in a row, one other key goes, so that a controller that cannot keep up
  with its slots still writes status.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from datetime import timedelta
from typing import Generic, TypeVar

import structlog

__all__ = ["WorkQueue"]

log = structlog.get_logger("reconciler.queue")

K = TypeVar("K", bound=Hashable)
DUE_STREAK = 8


class WorkQueue(Generic[K]):
    def __init__(self, *, base_delay: float = 0.5, max_delay: float = 300.0) -> None:
        # Two lines, the due ones first; one token per entry. A key moved ahead leaves a stale entry behind, which
        # a worker skips (the key is no longer waiting, or is handled once either way).
        self._due: deque[K] = deque()
        self._other: deque[K] = deque()
        self._entries = asyncio.Semaphore(0)
        self._due_keys: set[K] = set()
        self._streak = 0  # due keys taken in a row
        self._waiting: set[K] = set()
        self._processing: set[K] = set()
        self._again: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self.base_delay, self.max_delay = base_delay, max_delay

    def __len__(self) -> int:
        """Keys waiting to be handled now (not those scheduled for later)."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """No key waiting, being handled, to run again or backing off after a failure: no handler runs until a key
        is added or a requeue's time comes. The sign, for whoever watches, that the handlers have settled."""
        return not (self._waiting or self._processing or self._again or self._failures)

    def booked(self, key: K) -> float | None:
        """Seconds until `key`'s requeue or retry (add_after) fires; None when none is booked."""
        pending = self._timers.get(key)
        return None if pending is None else max(0.0, pending[0] - asyncio.get_running_loop().time())

    def add(self, key: K, *, due: bool = False, first: bool = False) -> None:
        """`due`: its time came (a slot): ahead of the keys the watches added. `first`: ahead of the due keys too
        (a waiting run a freed place is kept for, which must not wait behind a thousand slots' first looks)."""
        due = due or first
        if key in self._processing:
            self._again.add(key)
            if due:
                self._due_keys.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._enter(key, due, first)
        elif first or (due and key not in self._due_keys):
            self._enter(key, due, first)  # moves ahead; its other entry is skipped

    def _enter(self, key: K, due: bool, first: bool = False) -> None:
        if due:
            self._due_keys.add(key)
            if first:
                self._due.appendleft(key)
            else:
                self._due.append(key)
        else:
            self._other.append(key)
        self._entries.release()

    async def _next(self) -> K:
        while True:
            await self._entries.acquire()
            if self._due and (self._streak < DUE_STREAK or not self._other):
                key, self._streak = self._due.popleft(), self._streak + 1
            else:
                key, self._streak = self._other.popleft(), 0
            if key in self._waiting:
                self._waiting.discard(key)
                self._due_keys.discard(key)
                return key

    def add_after(self, key: K, delay: timedelta | float) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if seconds <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + seconds
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return  # an earlier look is already booked
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key, due=True)

    def retry(self, key: K) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay: float = min(self.max_delay, self.base_delay * 2.0**failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    async def run(self, workers: int, handle: Callable[[K], Awaitable[timedelta | None]]) -> None:
        """Handle keys with `workers` concurrent workers until cancelled."""
        tasks = [asyncio.create_task(self._work(handle), name=f"worker-{n}") for n in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _, timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    async def _work(self, handle: Callable[[K], Awaitable[timedelta | None]]) -> None:
        while True:
            key = await self._next()
            self._processing.add(key)
            try:
                requeue = await handle(key)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                delay = self.retry(key)
                log.warning(
                    "reconcile failed",
                    key=str(key),
                    error=f"{type(error).__name__}: {error}"[:400],
                    retry_in=delay,
                    exc_info=not isinstance(error, (OSError, TimeoutError)),
                )
            else:
                self.forget(key)
                if requeue is not None:
                    self.add_after(key, requeue)
            finally:
                self._processing.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key, due=key in self._due_keys)
