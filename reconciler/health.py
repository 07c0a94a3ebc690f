"""The reconciler's health port: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`.

`/healthz` only says the process answers: restarting a replica cures nothing that readiness reports, and a
restart loop of both replicas during an API server outage would only add to it.

`/readyz` says this replica does its part, which is one of:
- it leads (or runs without leader election) and its caches have synced;
- it stands by, and reads the Lease within the renew deadline: ready to take over when the leader goes.
In both cases the API server must have answered lately. A synced cache stays "synced" through an outage (the watch
only retries), and a leader that cannot renew keeps its Lease until the renew deadline: neither alone shows that
the replica can still work, so a small probe asks the API server's `/version` every few seconds.

`/metrics` goes through `common.metrics_auth` unless that is turned off (`--no-metrics-auth`).

The port speaks only HTTPS, as the webhook's does (common.tls): a plain-HTTP request is answered `400` before anything
is read from it, so a scrape works only with its bearer token encrypted. The certificate is the pair in
`--cert-dir`, re-read when it changes. The kubelet's probes (`scheme: HTTPS`) do not verify it and send no token,
so `/healthz` and `/readyz` ask for none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
import structlog
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST

from common.kube import checked, timeout
from common.metrics_auth import MetricsAuth
from common.tls import CertificateReloader, TLSListener
from reconciler.leader import LeaderElection

__all__ = ["ApiContact", "HealthServer", "NoCertificate", "Readiness", "health_app", "serve_health"]

log = structlog.get_logger("reconciler.health")


@dataclass
class ApiContact:
    """Whether the API server answered lately: a GET of `/version` (allowed to everyone by the default RBAC) every
    `period` seconds. Unreachable at once when a probe fails; also once no probe has succeeded for a period and a
    request timeout (a probe that hangs)."""

    api: client.ApiClient
    period: float = 2.0
    request_timeout: float = 3.0
    clock: Callable[[], float] = time.monotonic
    _good_until: float = field(default=0.0, init=False, repr=False)
    _failing: bool = field(default=False, init=False, repr=False)

    @property
    def reachable(self) -> bool:
        return self.clock() < self._good_until

    async def run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.period)

    async def probe(self) -> bool:
        try:
            async with asyncio.timeout(self.request_timeout):
                response = await checked(
                    client.VersionApi(self.api).get_code(
                        _preload_content=False, **timeout(self.request_timeout, self.request_timeout)
                    )
                )
                async with response:
                    await response.read()
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as error:
            self._good_until = 0.0
            if not self._failing:
                log.warning("the API server does not answer", error=f"{type(error).__name__}: {error}"[:300])
            self._failing = True
            return False
        self._good_until = self.clock() + self.period + self.request_timeout
        if self._failing:
            log.info("the API server answers again")
        self._failing = False
        return True


@dataclass
class Readiness:
    """What `/readyz` reports; see the module docstring."""

    contact: ApiContact
    synced: Callable[[], bool]
    election: LeaderElection | None = None

    def problems(self) -> list[str]:
        found = [] if self.contact.reachable else ["the API server does not answer"]
        if self.election is None or self.election.is_leader:
            if not self.synced():
                found.append("caches not synced yet")
        elif not self.election.in_contact:
            found.append("standing by, but the Lease could not be read lately")
        return found


def health_app(readiness: Readiness, page: Callable[[], Iterable[bytes]], auth: MetricsAuth | None) -> web.Application:
    """`page`: the /metrics page, in pieces."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        problems = readiness.problems()
        if problems:
            return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
        return web.Response(text="ok")

    async def metrics(request: web.Request) -> web.StreamResponse:
        if auth is not None:
            verdict = await auth.check(request.headers.get("Authorization"))
            if not verdict.allowed:
                return web.Response(status=verdict.status, text=verdict.message + "\n", headers=verdict.headers)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        await response.prepare(request)
        for piece in page():
            await response.write(piece)
            await asyncio.sleep(0)  # a page of 10,000 DatabaseBackups must not hold up reconciles
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class NoCertificate(Exception):
    """The health port has no certificate to serve."""


@dataclass
class HealthServer:
    runner: web.AppRunner
    listener: TLSListener
    reloading: asyncio.Task[None]
    port: int

    async def close(self) -> None:
        self.reloading.cancel()
        await asyncio.gather(self.reloading, return_exceptions=True)
        await self.listener.close()
        await self.runner.cleanup()


async def serve_health(app: web.Application, host: str, port: int, reloader: CertificateReloader) -> HealthServer:
    """Serve `app` over TLS on host:port with the reloader's certificate, re-read while it runs."""
    if reloader.context is None and not reloader.reload():
        raise NoCertificate(f"no usable tls.crt and tls.key in {reloader.cert_dir} (--cert-dir) for the health port")
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    server = runner.server
    assert server is not None  # set up above
    listener = TLSListener(server, lambda: reloader.context)
    try:
        bound = await listener.start(host, port)
    except BaseException:
        await runner.cleanup()
        raise
    # reload() catches every error it expects; anything else ends the task, logged, and the loaded pair serves on.
    reloading = asyncio.create_task(reloader.run(), name="certificate reloader")
    reloading.add_done_callback(_reloader_ended)
    return HealthServer(runner, listener, reloading, bound)


def _reloader_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("certificate reloader stopped", exc_info=task.exception())
