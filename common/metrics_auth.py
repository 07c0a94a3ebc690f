"""Who may read `/metrics`: the API server decides, as controller-runtime's metrics filter and kube-rbac-proxy do.

The metrics name namespaces, DatabaseBackups and failure reasons, and anyone who can reach a Pod's port could read
them. So a scrape must carry a bearer token, and:
1. TokenReview (authentication.k8s.io/v1) says whose token it is: 401 when there is none, or the API server does not
   know it;
2. SubjectAccessReview (authorization.k8s.io/v1) asks whether that user may `get` the non-resource URL `/metrics`:
   403 when not. Grant it with the ClusterRole `databasebackup-metrics-reader` (deploy/metrics/).
A review that could not be made (the API server unreachable, our own RBAC missing) is a 503 and is not cached: it
says nothing about the requester.

Decisions are cached for a short time, keyed by the token's sha256 (the token itself is never kept, logged or put in
a message): a scrape every 15 s then costs the API server two reviews a minute. Allowed decisions live longer than
refusals, as in controller-runtime, so a newly granted reader is let in soon; a revoked one keeps access for at most
`allow_ttl`.

No HTTP here: `check` takes the Authorization header and returns a Verdict that each server maps to its response.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import body, raw, timeout

__all__ = [
    "Identity",
    "MetricsAuth",
    "Verdict",
    "access_review",
    "add_metrics_auth_flag",
    "bearer_token",
    "decide_access",
    "decide_identity",
]

log = structlog.get_logger("metrics_auth")

READER_ROLE: Final = "databasebackup-metrics-reader"  # deploy/metrics/reader.yaml
# Failures that say nothing about the requester: the API server's own errors, the network, our timeouts.
_UNREVIEWABLE: Final = (ApiException, aiohttp.ClientError, TimeoutError, OSError, ValueError)


@dataclass(frozen=True)
class Verdict:
    status: int  # 200 allowed; 401 no or unknown token; 403 not allowed; 503 could not ask
    message: str

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6750: a 401 names the scheme the client should use.
        return {"WWW-Authenticate": 'Bearer realm="metrics"'} if self.status == 401 else {}


@dataclass(frozen=True)
class Identity:
    """Whom a token belongs to, as the TokenReview says: exactly what the SubjectAccessReview must ask about."""

    username: str
    uid: str
    groups: tuple[str, ...]
    extra: Mapping[str, list[str]]


def add_metrics_auth_flag(parser: argparse.ArgumentParser) -> None:
    """`--metrics-auth` (the default) / `--no-metrics-auth`, the same on both commands."""
    parser.add_argument(
        "--metrics-auth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve /metrics only to a bearer token the API server authenticates and authorizes for GET /metrics "
        "(TokenReview, SubjectAccessReview); --no-metrics-auth serves it to anyone (default: on)",
    )


# --- the decisions -------------------------------------------------------------------------------------------------


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case); None for anything else."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    return token


def decide_identity(review: Mapping[str, Any]) -> Identity | None:
    """The user of an answered TokenReview, or None when the token was not authenticated."""
    status = review.get("status") or {}
    user = status.get("user") or {}
    if status.get("authenticated") is not True or not user.get("username"):
        return None
    return Identity(
        username=str(user["username"]),
        uid=str(user.get("uid") or ""),
        groups=tuple(str(g) for g in user.get("groups") or ()),
        extra={str(k): [str(v) for v in values] for k, values in (user.get("extra") or {}).items()},
    )


def decide_access(review: Mapping[str, Any], identity: Identity, path: str) -> Verdict:
    """An answered SubjectAccessReview as a Verdict."""
    status = review.get("status") or {}
    if status.get("allowed") is True and status.get("denied") is not True:
        return Verdict(200, "ok")
    return Verdict(403, f"{identity.username} may not get {path} (bind the ClusterRole {READER_ROLE})")


def access_review(identity: Identity, path: str, verb: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "user": identity.username,
        "groups": list(identity.groups),
        "nonResourceAttributes": {"path": path, "verb": verb},
    }
    if identity.uid:
        spec["uid"] = identity.uid
    if identity.extra:
        spec["extra"] = dict(identity.extra)
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


# --- the reviews -------------------------------------------------------------------------------------------------


@dataclass
class MetricsAuth:
    """Checks scrapes of `path` against the API server. One per process; `check` is safe to call concurrently."""

    api: client.ApiClient
    path: str = "/metrics"
    verb: str = "get"
    allow_ttl: float = 60.0
    deny_ttl: float = 10.0
    max_entries: int = 1024  # random tokens must not grow the cache without bound
    clock: Callable[[], float] = time.monotonic
    _cache: OrderedDict[bytes, tuple[Verdict, float]] = field(default_factory=OrderedDict, init=False, repr=False)

    async def check(self, authorization: str | None) -> Verdict:
        token = bearer_token(authorization)
        if token is None:
            return Verdict(401, "a bearer token is required (Authorization: Bearer <token>)")
        key = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self.clock():
            return cached[0]
        try:
            verdict = await self._review(token)
        except _UNREVIEWABLE as error:
            log.warning("metrics access could not be reviewed", error=_describe(error))
            return Verdict(503, "could not review the token with the API server; try again")
        self._remember(key, verdict)
        return verdict

    async def _review(self, token: str) -> Verdict:
        identity = decide_identity(await self._token_review(token))
        if identity is None:
            return Verdict(401, "the token was not accepted by the API server")
        verdict = decide_access(await self._access_review(identity), identity, self.path)
        if not verdict.allowed:
            log.info("metrics access refused", user=identity.username, path=self.path)
        return verdict

    async def _token_review(self, token: str) -> dict[str, Any]:
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        api = client.AuthenticationV1Api(self.api)
        return await raw(api.create_token_review(body(review), _preload_content=False, **timeout(2.0, 5.0)))

    async def _access_review(self, identity: Identity) -> dict[str, Any]:
        review = access_review(identity, self.path, self.verb)
        api = client.AuthorizationV1Api(self.api)
        return await raw(api.create_subject_access_review(body(review), _preload_content=False, **timeout(2.0, 5.0)))

    def _remember(self, key: bytes, verdict: Verdict) -> None:
        now = self.clock()
        self._cache[key] = (verdict, now + (self.allow_ttl if verdict.allowed else self.deny_ttl))
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)  # the oldest decision


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__)[:300]
