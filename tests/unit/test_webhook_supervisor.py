"""A background task that crashes or is killed is logged, fails /readyz while it is down, and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.unit.test_webhook_http import FakeFinder
from webhook.metrics import Metrics
from webhook.server import make_app
from webhook.supervisor import Supervisor

ClientMaker = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


class Task:
    """A background task we drive: each start counts, and `crash` makes the running one raise."""

    def __init__(self) -> None:
        self.starts = 0
        self.crash = asyncio.Event()

    async def __call__(self) -> None:
        self.starts += 1
        self.crash = crash = asyncio.Event()
        await crash.wait()
        raise aiohttp.ServerDisconnectedError()  # not an OSError: what killed the keeper silently before


class Backoff:
    """The supervisor's sleep, held until released, so the test sees the task down for as long as it looks."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.release = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.release.wait()
        self.release = asyncio.Event()


@pytest.fixture
async def supervised() -> AsyncIterator[tuple[Supervisor, Task, Task, Backoff]]:
    reloader, informer, backoff = Task(), Task(), Backoff()
    supervisor = Supervisor({"reloader": reloader, "informer": informer}, sleep=backoff)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: reloader.starts == informer.starts == 1)
    yield supervisor, reloader, informer, backoff
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 - a condition of our own objects, checked each loop turn
            await asyncio.sleep(0)


async def readyz(http: TestClient[web.Request, web.Application]) -> int:
    async with http.get("/readyz") as response:
        return response.status


async def test_a_crashed_task_is_logged_fails_readiness_while_down_and_is_restarted(
    aiohttp_client: ClientMaker, supervised: tuple[Supervisor, Task, Task, Backoff]
) -> None:
    supervisor, reloader, _, backoff = supervised
    http = await aiohttp_client(make_app(FakeFinder(), Metrics(), ready=lambda: supervisor.healthy))
    assert await readyz(http) == 200

    with structlog.testing.capture_logs() as logs:
        reloader.crash.set()
        await until(lambda: backoff.delays == [1.0])
    assert await readyz(http) == 503
    (entry,) = [e for e in logs if e["event"] == "background task crashed"]
    assert entry["task"] == "reloader"
    assert isinstance(entry["exc_info"], aiohttp.ServerDisconnectedError)

    backoff.release.set()
    await until(lambda: reloader.starts == 2 and supervisor.healthy)
    assert await readyz(http) == 200


async def test_a_killed_task_is_restarted_and_repeated_failures_back_off_longer(
    supervised: tuple[Supervisor, Task, Task, Backoff],
) -> None:
    supervisor, _, informer, backoff = supervised
    with structlog.testing.capture_logs() as logs:
        supervisor.running["informer"].cancel()
        await until(lambda: backoff.delays == [1.0])
    assert [e["task"] for e in logs if e["event"] == "background task cancelled"] == ["informer"]
    assert supervisor.down == {"informer"}
    backoff.release.set()
    await until(lambda: informer.starts == 2)
    informer.crash.set()
    await until(lambda: backoff.delays == [1.0, 2.0])
    backoff.release.set()
    await until(lambda: informer.starts == 3 and supervisor.healthy)
