"""dbb-webhook: serves the admission webhook over TLS."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import structlog
from aiohttp import web

from common.kube import ConfigError, api_client
from common.logs import configure
from webhook.database import StatefulSets
from webhook.incluster import POLL_INTERVAL, CertificateKeeper
from webhook.metrics import Metrics
from webhook.rotation import ROTATION_GRACE
from webhook.server import make_app
from webhook.tls import CertificateReloader, TLSListener

log = structlog.get_logger("webhook")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbb-webhook", description="Serve the DatabaseBackup admission webhook.")
    parser.add_argument("--port", type=int, default=8443, help="HTTPS port (default: %(default)s)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")  # noqa: S104
    parser.add_argument(
        "--cert-dir", type=Path, default=Path("/tls"), help="folder with tls.crt and tls.key, re-read when they change"
    )
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster config)")
    parser.add_argument("--cert-reload-seconds", type=float, default=10.0, help="how often to look for new certs")
    managed = parser.add_argument_group(
        "certificates in the cluster (without cert-manager)",
        "With --cert-secret the webhook keeps its CA and certificate in that Secret, writes them into --cert-dir, "
        "renews them 30 days before expiry, and writes the CA into each --webhook-configuration's caBundle. It "
        f"re-reads the Secret every ~{POLL_INTERVAL:.0f} s: deleting it rotates the CA and certificate, the old CA "
        f"staying trusted for {ROTATION_GRACE.total_seconds() / 60:.0f} minutes.",
    )
    managed.add_argument("--cert-secret", help="Secret (in --namespace) holding the certificates")
    managed.add_argument("--service", default="dbb-webhook", help="the webhook's Service name (default: %(default)s)")
    managed.add_argument(
        "--namespace", default=os.environ.get("POD_NAMESPACE", "dbb-system"), help="default: $POD_NAMESPACE"
    )
    managed.add_argument(
        "--webhook-configuration", action="append", default=[], help="webhook configuration to keep caBundle of"
    )
    managed.add_argument("--extra-host", action="append", default=[], help="another DNS name or IP for the cert")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_level)
    try:
        asyncio.run(serve(args))
    except StartupError as error:
        print(f"dbb-webhook: {error}", file=sys.stderr)
        return 1
    return 0


class StartupError(Exception):
    pass


async def serve(args: argparse.Namespace) -> None:
    metrics = Metrics()

    def reloaded(result: str, not_after: object) -> None:
        metrics.certificate_reloads.labels(result).inc()
        if reloader.not_after is not None:
            metrics.certificate_expiry.set(reloader.not_after.timestamp())

    reloader = CertificateReloader(args.cert_dir, interval=args.cert_reload_seconds, on_reload=reloaded)
    try:
        api = await api_client(args.kubeconfig)
    except ConfigError as error:
        raise StartupError(str(error)) from None
    async with api:
        keeper = None
        if args.cert_secret:
            keeper = CertificateKeeper(
                api,
                args.namespace,
                args.cert_secret,
                args.service,
                args.webhook_configuration,
                args.cert_dir,
                args.extra_host,
                on_event=lambda event: metrics.certificate_reloads.labels(event).inc(),
            )
            await keeper.sync()
        if not reloader.reload():
            raise StartupError(f"no usable tls.crt and tls.key in {args.cert_dir}")
        statefulsets = StatefulSets.connect(api, metrics)
        app = make_app(statefulsets, metrics, ready=lambda: reloader.context is not None and statefulsets.synced)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        listener = TLSListener(runner.server, lambda: reloader.context)  # type: ignore[arg-type]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # Until the StatefulSet cache has synced, lookups go to the API server and /readyz says not ready.
        background = [asyncio.create_task(reloader.run()), asyncio.create_task(statefulsets.informer.run())]
        if keeper is not None:
            background.append(asyncio.create_task(keeper.run()))
        try:
            port = await listener.start(args.host, args.port)
            log.info("serving", host=args.host, port=port, cert_dir=str(args.cert_dir))
            await stop.wait()
        finally:
            log.info("stopping")
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await listener.close()
            await runner.cleanup()
