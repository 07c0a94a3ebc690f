"""TLS for the operator's servers (the webhook, the reconciler's health port): certificates re-read when they
change, and a listener that tells TLS from plain HTTP.

Reloading. Certificates mounted from a Secret change without a filesystem event (kubelet swaps a symlink), so we
poll: read tls.crt and tls.key, and when their bytes change build a *new* SSLContext, check it (the key matches the
certificate, which `load_cert_chain` verifies), and only then swap it in. A failed load (a key and certificate read
mid-rotation) keeps the old context serving; it never leaves a broken one live. `common` does not import
cryptography, so a caller that wants the certificate's expiry (for a metric) passes the function that reads it.

Listening. Each accepted connection is peeked at before any TLS: a TLS ClientHello starts with byte 0x16. Anything
else is answered with a plain-text `400 Bad Request` that says this port speaks HTTPS (as nginx does), instead of
a handshake error the caller cannot read. A TLS connection is upgraded with `loop.start_tls` using the context that
is current at that moment, so a swapped-in certificate applies to every new connection at once.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import structlog

__all__ = ["CertificateReloader", "TLSListener", "add_cert_flags", "build_context"]

log = structlog.get_logger("tls")

_TLS_HANDSHAKE: Final = 0x16
_FIRST_BYTE_TIMEOUT: Final = 10.0
_PLAIN_HTTP_ANSWER: Final = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    b"Content-Length: 58\r\n\r\nthis port speaks HTTPS only: the request was plain HTTP.\r\n"
)


def add_cert_flags(parser: argparse.ArgumentParser) -> None:
    """`--cert-dir` and `--cert-reload-seconds`, the same on every command that serves TLS."""
    parser.add_argument(
        "--cert-dir",
        type=Path,
        default=Path("/tls"),
        help="folder with tls.crt and tls.key, re-read when they change (default: %(default)s)",
    )
    parser.add_argument(
        "--cert-reload-seconds", type=float, default=10.0, help="how often to look for new certs (default: %(default)s)"
    )


def build_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context with TLS 1.2 or newer. Raises (ssl.SSLError, OSError, ValueError) if the pair is unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class CertificateReloader:
    cert_dir: Path
    interval: float = 10.0
    on_reload: Callable[[str, datetime | None], None] | None = None  # (result, not_after)
    expiry: Callable[[bytes], datetime] | None = None  # a certificate's PEM -> its notAfter (else not_after is None)
    context: ssl.SSLContext | None = None
    not_after: datetime | None = None
    certificate: bytes | None = None  # the PEM of the certificate live in `context`
    _fingerprint: bytes = field(default=b"", repr=False)

    @property
    def cert_file(self) -> Path:
        return self.cert_dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.cert_dir / "tls.key"

    def reload(self) -> bool:
        """Load the files if they changed. True if a new context is now live."""
        try:
            cert, key = self.cert_file.read_bytes(), self.key_file.read_bytes()
        except OSError as error:
            self._report("error", f"cannot read certificate files: {error}")
            return False
        fingerprint = hashlib.sha256(cert + b"\0" + key).digest()
        if fingerprint == self._fingerprint:
            return False
        try:
            context = build_context(self.cert_file, self.key_file)
            not_after = self.expiry(cert) if self.expiry is not None else None
        except (ssl.SSLError, OSError, ValueError) as error:
            # Most often a rotation caught half-way: keep serving the old pair and look again next time.
            self._report("error", f"certificate files unusable, keeping the previous ones: {error}")
            return False
        self.context, self.not_after, self.certificate, self._fingerprint = context, not_after, cert, fingerprint
        self._report("loaded", None)
        log.info("certificate loaded", cert_dir=str(self.cert_dir), not_after=not_after and not_after.isoformat())
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.reload()

    def _report(self, result: str, message: str | None) -> None:
        if message:
            log.warning(message, cert_dir=str(self.cert_dir))
        if self.on_reload is not None:
            self.on_reload(result, self.not_after)


class TLSListener:
    """Serves an asyncio protocol factory (e.g. aiohttp's `web.Server`) over TLS on host:port."""

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        context: Callable[[], ssl.SSLContext | None],
        *,
        first_byte_timeout: float = _FIRST_BYTE_TIMEOUT,
    ) -> None:
        self._factory = protocol_factory
        self._context = context
        self.first_byte_timeout = first_byte_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Sniffer(self), host, port, reuse_address=True)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Sniffer(asyncio.Protocol):
    """Owns a fresh connection until its first byte says what it is."""

    def __init__(self, listener: TLSListener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # Keep the bytes in the kernel: we peek at them, and TLS must then read them from the start.
        transport.pause_reading()
        self._listener._track(asyncio.get_running_loop().create_task(self._route(transport)))

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused until routed
        pass

    async def _route(self, transport: asyncio.Transport) -> None:
        try:
            first = await _peek(transport, self._listener.first_byte_timeout)
            if first is None:
                transport.close()
                return
            if first != _TLS_HANDSHAKE:
                transport.write(_PLAIN_HTTP_ANSWER)
                transport.close()
                return
            context = self._listener._context()
            if context is None:
                transport.abort()
                return
            protocol = self._listener._factory()
            loop = asyncio.get_running_loop()
            tls = await loop.start_tls(transport, protocol, context, server_side=True, ssl_handshake_timeout=10.0)
            if tls is None:  # pragma: no cover - only for transports without TLS support
                transport.abort()
                return
            protocol.connection_made(tls)
        except (ssl.SSLError, OSError, ConnectionError, TimeoutError) as error:
            log.debug("connection dropped before TLS", error=str(error))
            transport.abort()


async def _peek(transport: asyncio.Transport, wait: float) -> int | None:
    """The first byte the client sent, left unread; None if the client closed or sent nothing in time.

    asyncio refuses `add_reader` on a descriptor a transport owns, and the transport's socket wrapper refuses
    `recv`; a duplicate descriptor of the same socket may do both. It is unregistered before it is closed: epoll
    keeps an entry for as long as another descriptor (the transport's) holds the socket open."""
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    loop = asyncio.get_running_loop()
    with socket.fromfd(raw.fileno(), raw.family, raw.type) as duplicate:
        duplicate.setblocking(False)
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(duplicate.fileno(), wake)
        try:
            await asyncio.wait_for(readable, wait)
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(duplicate.fileno())
        try:
            data = duplicate.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return None
        return data[0] if data else None
