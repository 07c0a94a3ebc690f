"""Thin helpers around kubernetes-asyncio: the one module that knows its quirks.

- A dict body makes PATCH default to JSON Patch; custom objects and their status want a merge patch. The generated
  stubs omit `_content_type`, so it travels as `**MERGE_PATCH`.
- Since kubernetes-asyncio 32 no request has a timeout unless given one: pass `**timeout(...)` to every call.
- Its aiohttp session trusts the environment, and with that aiohttp looks in ~/.netrc for credentials before every
  request, in a thread: a fifth of the webhook's time under load (tests/bench/RESULTS.md). Our credentials are the
  kubeconfig's or the service account's, never netrc's, and a proxy comes from the kubeconfig (`proxy-url`), so
  `api_client` turns that off.
- Closing the client closes its TLS connections gracefully, and a connection already released (a cancelled watch's)
  is not even waited for: its shutdown can outlive the event loop, and before Python 3.12.8 (CPython gh-118960) its
  socket is then never closed, a ResourceWarning for every informer of a stopped controller (seen in CI).
  `api_client` makes `close()` abort every TLS connection, released ones included: the process is done with them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import weakref
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, cast

from aiohttp.client_proto import ResponseHandler
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "MERGE_PATCH",
    "ConfigError",
    "api_client",
    "body",
    "checked",
    "closing_at_once",
    "raw",
    "sent",
    "timeout",
    "untrusting",
]

MERGE_PATCH: Final[Mapping[str, Any]] = {"_content_type": "application/merge-patch+json"}


def timeout(connect: float = 5.0, read: float = 30.0) -> dict[str, Any]:
    """Keyword arguments that bound one API request: (connect, read) seconds."""
    return {"_request_timeout": (connect, read)}


class ConfigError(Exception):
    """No usable Kubernetes configuration."""


async def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """A client from a kubeconfig file, else from the in-cluster service account."""
    try:
        if kubeconfig is not None:
            api = await config.new_client_from_config(config_file=str(kubeconfig))
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
    except (config.ConfigException, OSError) as error:
        raise ConfigError(f"cannot load Kubernetes configuration: {error}") from None
    return closing_at_once(untrusting(api))


def untrusting(api: client.ApiClient) -> client.ApiClient:
    """`api` with its session no longer reading the environment (~/.netrc, *_PROXY) before each request."""
    session = api.rest_client.pool_manager
    if not hasattr(session, "_trust_env"):
        raise RuntimeError("aiohttp.ClientSession has no _trust_env any more: see common/kube.py")
    session._trust_env = False
    return api


def closing_at_once(api: client.ApiClient) -> client.ApiClient:
    """`api` whose `close()` aborts its TLS connections rather than waiting for each shutdown handshake (see the
    module docstring)."""
    rest = api.rest_client
    session = rest.pool_manager
    graceful = rest.close
    connector = session.connector
    if connector is not None and hasattr(connector, "_cleanup_closed_disabled"):
        # Connections closed before the client (a cancelled watch's) are remembered, so that closing the client
        # aborts them too (aiohttp's enable_cleanup_closed, which kubernetes-asyncio does not set).
        connector._cleanup_closed_disabled = False

    # Every transport the connector's connections are made on, so that close() ends each one whatever path it
    # took: one released while the client closes, one whose connect finishes after, one whose connect was cancelled
    # just after the TLS handshake (asyncio then starts a graceful shutdown nobody awaits). Remembered when the
    # protocol is handed its transport, which every one of those paths passes; the connector's own close only
    # reaches the connections it holds.
    made: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
    closing = False

    def remember(transport: asyncio.Transport) -> None:
        if closing:
            transport.abort()
        else:
            made.add(transport)

    if connector is not None:
        if not hasattr(connector, "_factory"):
            raise RuntimeError("aiohttp's connector has no _factory any more: see common/kube.py")
        connector._factory = cast(Any, functools.partial(_Remembered, loop=connector._loop, remember=remember))

    async def close() -> None:
        nonlocal closing
        closing = True
        if session.connector is not None and not session.closed:
            await session.connector.close(abort_ssl=True)
        for transport in list(made):
            transport.abort()  # a no-op for one already closed
        await asyncio.sleep(0)  # each abort closes its socket in a callback: they run before this resumes
        await graceful()

    # Per client, not on the class: other clients keep their own close.
    rest.close = close  # type: ignore[method-assign]
    return api


class _Remembered(ResponseHandler):
    """aiohttp's connection protocol, telling `remember` the transport of each connection as it is made."""

    def __init__(self, loop: asyncio.AbstractEventLoop, remember: Callable[[asyncio.Transport], None]) -> None:
        super().__init__(loop)
        self._remember = remember

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._remember(cast(asyncio.Transport, transport))


async def raw(call: Awaitable[Any]) -> dict[str, Any]:
    """The JSON body of a call made with `_preload_content=False` (the stubs claim a model comes back)."""
    response = await checked(call)
    async with response:
        body: dict[str, Any] = await response.json()
    return body


async def sent(call: Awaitable[Any]) -> None:
    """A call made with `_preload_content=False` whose answer is not needed: ApiException for a non-2xx status,
    else nothing. The answer is read (so the connection is reused) but never decoded into kubernetes-asyncio's
    models, which costs more than the request (a deleted Job comes back whole)."""
    response = await checked(call)
    async with response:
        await response.read()


async def checked(call: Awaitable[Any]) -> Any:
    """The aiohttp response of a call made with `_preload_content=False`, or ApiException for a non-2xx status:
    without preloading, kubernetes-asyncio hands back error responses (a `Status` object) as if they succeeded."""
    response = cast(Any, await call)
    if 200 <= response.status < 300:
        return response
    async with response:
        text = await response.text()
    reason = response.reason
    try:
        status = json.loads(text)
        reason = f"{status.get('reason') or reason}: {status.get('message') or ''}".strip(": ")
    except (ValueError, AttributeError):
        pass
    raise ApiException(status=response.status, reason=reason)


def body(obj: Mapping[str, Any]) -> Any:
    """A JSON object as a request body. The API takes plain dicts; the stubs ask for generated models, which we
    never build (they are slow, and lose fields the model does not know)."""
    return obj
