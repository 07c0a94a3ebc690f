"""The webhook over real TLS on loopback: TLS 1.2+, plain HTTP answered with a 400, certificates swapped live."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from certs.serving import ensure_serving_certificate
from common.tls import CertificateReloader, TLSListener
from tests.unit.test_webhook_http import FakeFinder
from webhook.metrics import Metrics

HOSTS = ["127.0.0.1", "localhost"]


class Server:
    def __init__(self, cert_dir: Path, listener: TLSListener, reloader: CertificateReloader, port: int) -> None:
        self.cert_dir, self.listener, self.reloader, self.port = cert_dir, listener, reloader, port

    def client_context(self, ca: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca or self.cert_dir / "ca.crt"))

    async def get(self, path: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{self.port}{path}", ssl=context or self.client_context()) as response,
        ):
            return response.status, await response.text()

    async def peer_serial(self, ca: Path) -> int:
        return await peer_serial(self.port, ca)


async def peer_serial(port: int, ca: Path) -> int:
    """The serial number of the certificate served on 127.0.0.1:port, to a client that trusts only `ca`."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context(cafile=str(ca)))
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    from webhook.server import make_app

    cert_dir = tmp_path / "tls"
    ensure_serving_certificate(cert_dir, HOSTS)
    reloader = CertificateReloader(cert_dir)
    assert reloader.reload()
    runner = web.AppRunner(make_app(FakeFinder(), Metrics(), ready=lambda: True), access_log=None)
    await runner.setup()
    listener = TLSListener(runner.server, lambda: reloader.context, first_byte_timeout=0.3)  # type: ignore[arg-type]
    port = await listener.start("127.0.0.1", 0)
    try:
        yield Server(cert_dir, listener, reloader, port)
    finally:
        await listener.close()
        await runner.cleanup()


async def test_https_is_served_with_a_certificate_the_ca_vouches_for(server: Server) -> None:
    assert await server.get("/healthz") == (200, "ok")


def tls_1_1_client(ca: Path) -> ssl.SSLContext:
    """A client that really offers TLS 1.1: OpenSSL's default security level would refuse it on the client side,
    which would prove nothing about the server."""
    context = ssl.create_default_context(cafile=str(ca))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def test_tls_older_than_1_2_is_refused(server: Server) -> None:
    # asyncio force-closes a connection whose handshake failed, so the client may see a reset instead of the alert.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.open_connection("127.0.0.1", server.port, ssl=tls_1_1_client(server.cert_dir / "ca.crt"))


async def test_plain_http_gets_a_400_that_says_https(server: Server) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}/healthz") as response,
    ):
        assert response.status == 400
        assert "this port speaks HTTPS only" in await response.text()


async def test_a_client_that_says_nothing_is_disconnected(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_new_certificates_apply_to_new_connections_without_a_restart(server: Server, tmp_path: Path) -> None:
    old_ca = tmp_path / "old-ca.crt"
    shutil.copy(server.cert_dir / "ca.crt", old_ca)
    before = await server.peer_serial(old_ca)
    # A new CA and certificate, as a rotation by another tool would leave them.
    for name in ("ca.crt", "ca.key", "tls.crt", "tls.key"):
        (server.cert_dir / name).unlink()
    ensure_serving_certificate(server.cert_dir, HOSTS)
    assert server.reloader.reload()
    after = await server.peer_serial(server.cert_dir / "ca.crt")
    assert after != before
    assert await server.get("/healthz") == (200, "ok")


async def test_a_half_rotated_pair_keeps_the_old_certificate_serving(server: Server, tmp_path: Path) -> None:
    before = await server.peer_serial(server.cert_dir / "ca.crt")
    other = tmp_path / "other"
    ensure_serving_certificate(other, HOSTS)
    # The new certificate has arrived, its key not yet: they do not match.
    shutil.copy(other / "tls.crt", server.cert_dir / "tls.crt")
    results: list[str] = []
    server.reloader.on_reload = lambda result, _: results.append(result)
    assert server.reloader.reload() is False
    assert results == ["error"]
    assert await server.peer_serial(server.cert_dir / "ca.crt") == before
    # Then the key arrives: the pair loads.
    shutil.copy(other / "tls.key", server.cert_dir / "tls.key")
    assert server.reloader.reload() is True
    assert await server.peer_serial(other / "ca.crt") != before


async def test_unchanged_files_are_not_reloaded(server: Server) -> None:
    live = server.reloader.context
    assert server.reloader.reload() is False
    assert server.reloader.context is live
