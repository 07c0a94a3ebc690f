"""dbb-reconciler run inside the test's event loop (its real `serve`, from the command line on), so that a relay in
the same loop can cut it off from the API server; stopped the way a kubelet stops it, by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from certs.serving import ensure_serving_certificate
from hack.harness.controlplane import free_port
from reconciler import main as reconciler_main


@dataclass
class Health:
    """The reconciler's health port, over HTTPS with a session that trusts the CA in `cert_dir`."""

    port: int
    session: aiohttp.ClientSession
    cert_dir: Path

    async def get(
        self, path: str, token: str | None = None, *, scheme: str = "https"
    ) -> tuple[int, str, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        url = f"{scheme}://127.0.0.1:{self.port}{path}"
        async with self.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.text(), dict(response.headers)

    async def status(self, path: str) -> int:
        try:
            return (await self.get(path))[0]
        except (aiohttp.ClientError, TimeoutError):
            return -1


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 30.0, what: str = "condition") -> float:
    """Poll `condition` until it holds; the seconds it took. Fails after `seconds`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(seconds):
            while not await condition():  # noqa: ASYNC110 - polls state outside this loop
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {seconds}s") from None
    return loop.time() - started


@contextlib.asynccontextmanager
async def reconciler(*argv: str) -> AsyncIterator[Health]:
    """Run `dbb-reconciler ARGV --health-host=127.0.0.1 --health-port=<free> --cert-dir=<a new CA's certificate for
    127.0.0.1>` until the block ends; it must then stop on SIGTERM with exit code 0."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="reconciler-tls-") as folder:
        cert_dir = Path(folder)
        ensure_serving_certificate(cert_dir, ["127.0.0.1", "localhost"])
        args = reconciler_main.parse(
            [*argv, "--health-host=127.0.0.1", f"--health-port={port}", f"--cert-dir={cert_dir}"]
        )
        task = asyncio.create_task(reconciler_main.serve(args), name="dbb-reconciler")
        trusting = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as session:
            health = Health(port, session, cert_dir)
            try:
                await until(lambda: _answers(health, task), what="the health port answers")
                yield health
            finally:
                if not task.done():
                    # serve() has installed its handlers by the time its health port answered.
                    signal.raise_signal(signal.SIGTERM)
                async with asyncio.timeout(30):
                    code = await task
    assert code == 0


async def _answers(health: Health, task: asyncio.Task[int]) -> bool:
    if task.done():
        task.result()  # its error, here
        raise AssertionError(f"dbb-reconciler returned {task.result()} at start")
    return await health.status("/healthz") == 200
