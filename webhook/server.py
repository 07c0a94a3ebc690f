"""The webhook's HTTP layer: decode, call the admission functions, encode. Nothing is decided here.

Bad input never becomes a 5xx: a body that is not JSON or not an AdmissionReview is a 400 with the reason; a body
over the limit is a 413 (aiohttp); the wrong method a 405, the wrong content type a 415. An unexpected error while
judging a request we could read is answered as a denial naming it, so kubectl shows it, and is logged.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.hosts import DEFAULT_CLUSTER_DOMAIN
from common.metrics_auth import MetricsAuth
from webhook.backups import host_to_check, image_to_check, mutate, store_to_check, validate_request
from webhook.database import DatabaseFinder
from webhook.lookup import LOOKUP_BUDGET, Lookup
from webhook.metrics import Metrics
from webhook.policies import validate_policy
from webhook.readiness import Report
from webhook.restores import mutate_restore, validate_restore
from webhook.reviews import AdmissionRequest, AdmissionResponse, BadReview, parse_review, review
from webhook.stores import validate_store

__all__ = ["MAX_BODY", "make_app"]

log = structlog.get_logger("webhook")

# The API server sends AdmissionReviews up to ~3 MiB (object and oldObject of a 1.5 MiB object); aiohttp's default
# limit is 1 MiB.
MAX_BODY: Final = 4 * 1024 * 1024


def make_app(
    finder: DatabaseFinder,
    metrics: Metrics,
    ready: Callable[[], bool | Report],
    metrics_auth: MetricsAuth | None = None,
    *,
    budget: float = LOOKUP_BUDGET,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> web.Application:
    """`ready`: what /readyz says, a Report with its reasons (webhook.readiness) or a bare bool. `metrics_auth`: who
    may read /metrics (see common.metrics_auth); None serves it to anyone. `budget`: seconds for all the lookups of
    one admission request (webhook.lookup)."""
    app = web.Application(client_max_size=MAX_BODY)
    handlers = _Handlers(Lookup(finder, budget, cluster_domain), metrics, ready, metrics_auth)
    app.router.add_post("/validate", handlers.validate)
    app.router.add_post("/mutate", handlers.mutate)
    app.router.add_post("/validate-restore", handlers.validate_restore)
    app.router.add_post("/mutate-restore", handlers.mutate_restore)
    app.router.add_post("/validate-store", handlers.validate_store)
    app.router.add_post("/validate-policy", handlers.validate_policy)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    return app


class _Handlers:
    def __init__(
        self, lookup: Lookup, metrics: Metrics, ready: Callable[[], bool | Report], auth: MetricsAuth | None
    ) -> None:
        self._lookup, self._metrics, self._ready, self._auth = lookup, metrics, ready, auth
        # prometheus_client's labels() takes a lock and builds a key on every call: a tenth of a request's time.
        self._count = functools.cache(metrics.requests.labels)
        self._time = functools.cache(metrics.duration.labels)

    async def validate(self, request: web.Request) -> web.StreamResponse:
        return await self._admit(request, "validate", self._validate)

    async def mutate(self, request: web.Request) -> web.StreamResponse:
        return await self._admit(request, "mutate", self._mutate)

    async def validate_restore(self, request: web.Request) -> web.StreamResponse:
        return await self._admit(request, "validate-restore", self._validate_restore)

    async def mutate_restore(self, request: web.Request) -> web.StreamResponse:
        return await self._admit(request, "mutate-restore", self._mutate_restore)

    async def validate_store(self, request: web.Request) -> web.StreamResponse:
        return await self._admit(request, "validate-store", _judged_store)

    async def validate_policy(self, request: web.Request) -> web.StreamResponse:
        return await self._admit(request, "validate-policy", _judged_policy)

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        state = self._ready()
        if isinstance(state, bool):
            state = Report() if state else Report(("see the webhook's log",))
        return web.Response(status=200 if state.ready else 503, text=state.text())

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        if self._auth is not None:
            verdict = await self._auth.check(request.headers.get("Authorization"))
            if not verdict.allowed:
                return web.Response(status=verdict.status, text=verdict.message + "\n", headers=verdict.headers)
        return web.Response(body=generate_latest(self._metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _validate(self, admission: AdmissionRequest) -> AdmissionResponse:
        lookup = self._lookup
        if host_to_check(admission) is None and store_to_check(admission) is None and image_to_check(admission) is None:
            # The usual update: at most the database lookup, and no tasks to run others beside it.
            return validate_request(admission, await lookup.for_validation(admission))
        # Every lookup at once, each within the budget: the request is answered within one budget.
        database, host, store, image = await asyncio.gather(
            lookup.for_validation(admission),
            lookup.for_host(admission),
            lookup.for_store(admission),
            lookup.for_image(admission),
        )
        return validate_request(admission, database, host, store=store, image=image)

    async def _mutate(self, admission: AdmissionRequest) -> AdmissionResponse:
        database = await self._lookup.for_defaults(admission)
        return mutate(admission, database.statefulset if database else None)

    async def _validate_restore(self, admission: AdmissionRequest) -> AdmissionResponse:
        return validate_restore(admission, await self._lookup.for_restore(admission))

    async def _mutate_restore(self, admission: AdmissionRequest) -> AdmissionResponse:
        return mutate_restore(admission, await self._lookup.for_restore(admission))

    async def _admit(
        self,
        request: web.Request,
        endpoint: str,
        decide: Callable[[AdmissionRequest], Awaitable[AdmissionResponse]],
    ) -> web.StreamResponse:
        started = time.perf_counter()
        result = "bad_request"
        try:
            if request.content_type != "application/json":
                return _refuse(415, f"Content-Type must be application/json, not {request.content_type or 'none'}")
            raw = await request.read()  # raises 413 past MAX_BODY
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as error:
                return _refuse(400, f"the body is not JSON: {error}")
            try:
                admission = parse_review(body)
            except BadReview as error:
                return _refuse(400, f"not an AdmissionReview v1 request: {error}")
            try:
                response = await decide(admission)
            except Exception as error:  # a bug must cost one denial, never a 5xx the API server retries blindly
                log.exception("admission failed", endpoint=endpoint, uid=admission["uid"])
                result = "error"
                response = {
                    "uid": admission["uid"],
                    "allowed": False,
                    "status": {"code": 500, "message": f"the webhook failed to judge this request: {error!r}"[:500]},
                }
            else:
                result = "allowed" if response["allowed"] else "denied"
            return web.json_response(review(response))
        finally:
            self._count(endpoint, result).inc()
            self._time(endpoint).observe(time.perf_counter() - started)


async def _judged_store(admission: AdmissionRequest) -> AdmissionResponse:
    return validate_store(admission)


async def _judged_policy(admission: AdmissionRequest) -> AdmissionResponse:
    return validate_policy(admission)


def _refuse(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")
