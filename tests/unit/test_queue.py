"""The work queue: one handler per key at a time, duplicates folded, nothing lost, failures backed off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from reconciler.queue import WorkQueue

Handler = Callable[[str], Awaitable[timedelta | None]]


@contextlib.asynccontextmanager
async def working(queue: WorkQueue[str], handle: Handler, workers: int = 4) -> AsyncIterator[None]:
    task = asyncio.create_task(queue.run(workers, handle))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for a condition the queue's handlers make true; the deadline is only reached when it never comes."""
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - the handlers set plain values
            await asyncio.sleep(0.005)


def settled(queue: WorkQueue[str]) -> bool:
    """Nothing waiting, nothing being handled, nothing to run again, no timer: the queue can do no more."""
    return len(queue) == 0 and not queue._processing and not queue._again and not queue._timers


async def test_duplicates_waiting_in_the_queue_fold_into_one_run() -> None:
    queue: WorkQueue[str] = WorkQueue()
    runs: list[str] = []

    async def handle(key: str) -> None:
        runs.append(key)

    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    async with working(queue, handle):
        await until(lambda: len(runs) == 2 and settled(queue))
    assert sorted(runs) == ["a", "b"]


async def test_a_key_is_never_handled_by_two_workers_and_an_add_meanwhile_runs_once_more() -> None:
    queue: WorkQueue[str] = WorkQueue()
    inside = 0
    most = 0
    runs = 0
    release = asyncio.Event()

    async def handle(key: str) -> None:
        nonlocal inside, most, runs
        inside += 1
        most = max(most, inside)
        runs += 1
        if runs == 1:
            await release.wait()
        inside -= 1

    queue.add("a")
    async with working(queue, handle):
        await until(lambda: runs == 1)
        queue.add("a")  # while the first run is still going: it is held back, not handed to a second worker
        queue.add("a")
        assert (runs, len(queue), queue._again) == (1, 0, {"a"})
        release.set()
        await until(lambda: runs == 2 and settled(queue))
    assert most == 1
    assert runs == 2


async def test_a_failing_key_backs_off_exponentially_and_success_resets_it() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=1.0)
    assert [queue.retry("a") for _ in range(4)] == pytest.approx([0.01, 0.02, 0.04, 0.08])
    queue.forget("a")
    assert queue.retry("a") == pytest.approx(0.01)


async def test_a_handler_error_is_retried_not_fatal() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01)
    attempts = 0

    async def handle(key: str) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise OSError("API server unreachable")

    queue.add("a")
    async with working(queue, handle):
        await until(lambda: attempts == 3 and settled(queue))
    assert attempts == 3


async def test_the_queue_is_idle_only_when_nothing_is_waiting_running_or_backing_off() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=60.0)
    release = asyncio.Event()
    failed = asyncio.Event()

    async def handle(key: str) -> timedelta | None:
        if key == "slow":
            await release.wait()
        if key == "failing":
            failed.set()
            raise OSError("API server unreachable")
        return timedelta(minutes=5) if key == "requeued" else None

    assert queue.idle
    queue.add("slow")
    assert not queue.idle  # waiting
    async with working(queue, handle):
        await until(lambda: "slow" in queue._processing)
        assert not queue.idle  # being handled
        release.set()
        queue.add("requeued")
        await until(lambda: queue.idle)
        booked = queue.booked("requeued")
        assert booked is not None  # a requeue booked later does not keep it busy
        assert 299 < booked <= 300
        assert queue.booked("slow") is None
        queue.add("failing")
        await failed.wait()
        await until(lambda: "failing" not in queue._processing)
        assert not queue.idle  # backing off: it runs again by itself
        failing = queue.booked("failing")
        assert failing is not None
        assert 59 < failing <= 60


async def test_a_requested_requeue_happens_after_the_delay() -> None:
    queue: WorkQueue[str] = WorkQueue()
    times: list[float] = []

    async def handle(key: str) -> timedelta | None:
        times.append(asyncio.get_running_loop().time())
        return timedelta(milliseconds=100) if len(times) == 1 else None

    queue.add("a")
    async with working(queue, handle):
        await until(lambda: len(times) == 2 and settled(queue))
    # A timer never fires early; how late it fires is the machine's business, not the queue's.
    assert times[1] - times[0] >= 0.1


async def test_add_after_keeps_the_earliest_time() -> None:
    queue: WorkQueue[str] = WorkQueue()
    seen: list[float] = []

    async def handle(key: str) -> None:
        seen.append(asyncio.get_running_loop().time())

    start = asyncio.get_running_loop().time()
    queue.add_after("a", 0.5)
    queue.add_after("a", 0.05)
    queue.add_after("a", 0.3)
    [(when, _)] = queue._timers.values()  # one timer, the earliest
    assert start + 0.05 <= when < start + 0.3
    async with working(queue, handle):
        await until(lambda: len(seen) == 1 and settled(queue))
    assert seen[0] >= when


async def test_keys_whose_time_came_go_ahead_of_the_watches_and_each_runs_once() -> None:
    """A slot's keys are handled before the status passes and watch events queued before them: the Jobs first."""
    queue: WorkQueue[str] = WorkQueue()
    runs: list[str] = []
    done = asyncio.Event()

    async def handle(key: str) -> None:
        runs.append(key)
        if len(runs) == 6:
            done.set()

    for key in ("watch-1", "watch-2", "watch-3", "watch-4"):
        queue.add(key)
    queue.add("slot-1", due=True)
    queue.add("watch-3", due=True)  # waiting already: its time came, so it moves ahead, and runs once
    queue.add("slot-2", due=True)
    assert len(queue) == 6
    async with working(queue, handle, workers=1):
        await asyncio.wait_for(done.wait(), timeout=10)
    assert runs == ["slot-1", "watch-3", "slot-2", "watch-1", "watch-2", "watch-4"]
    assert len(queue) == 0


async def test_a_run_a_freed_place_is_kept_for_goes_ahead_of_every_slot() -> None:
    """A thousand slots' first looks are due at once; the waiting run a freed cap place is kept for (`first`) goes
    before them, or the place stays empty while they are handled."""
    queue: WorkQueue[str] = WorkQueue()
    runs: list[str] = []
    done = asyncio.Event()

    async def handle(key: str) -> None:
        runs.append(key)
        if len(runs) == 5:
            done.set()

    queue.add("watch-1")
    for key in ("slot-1", "slot-2", "waiter-2"):
        queue.add(key, due=True)
    queue.add("waiter-1", first=True)
    queue.add("waiter-2", first=True)  # due already: moves to the front, and runs once
    assert len(queue) == 5
    async with working(queue, handle, workers=1):
        await asyncio.wait_for(done.wait(), timeout=10)
    assert runs == ["waiter-2", "waiter-1", "slot-1", "slot-2", "watch-1"]
    assert len(queue) == 0


async def test_a_timer_makes_a_key_due() -> None:
    queue: WorkQueue[str] = WorkQueue()
    runs: list[str] = []
    done = asyncio.Event()
    gate = asyncio.Event()

    async def handle(key: str) -> None:
        if key == "busy":
            await gate.wait()  # holds the only worker while the others queue up
        runs.append(key)
        if len(runs) == 3:
            done.set()

    queue.add("busy")
    async with working(queue, handle, workers=1):
        queue.add("watch")
        queue.add_after("slot", 0.01)
        while "slot" not in queue._due_keys:  # noqa: ASYNC110 - the queue has no event for a timer firing
            await asyncio.sleep(0.01)
        gate.set()
        await asyncio.wait_for(done.wait(), timeout=10)
    assert runs == ["busy", "slot", "watch"]


async def test_due_keys_never_starve_the_others() -> None:
    """A controller that cannot keep up with its slots still writes status: one other key after every streak."""
    from reconciler.queue import DUE_STREAK

    queue: WorkQueue[str] = WorkQueue()
    runs: list[str] = []
    done = asyncio.Event()
    total = 2 * DUE_STREAK + 2

    async def handle(key: str) -> None:
        runs.append(key)
        if len(runs) == total:
            done.set()

    queue.add("status-1")
    queue.add("status-2")
    for index in range(2 * DUE_STREAK):
        queue.add(f"slot-{index}", due=True)
    async with working(queue, handle, workers=1):
        await asyncio.wait_for(done.wait(), timeout=10)
    assert runs.index("status-1") == DUE_STREAK
    assert runs.index("status-2") == 2 * DUE_STREAK + 1
