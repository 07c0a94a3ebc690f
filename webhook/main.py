"""dbb-webhook: serves the admission webhook over TLS."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web
from cryptography import x509

from common.hosts import add_cluster_domain_flag
from common.kube import ConfigError, api_client
from common.logs import configure
from common.metrics_auth import MetricsAuth, add_metrics_auth_flag
from common.tls import CertificateReloader, TLSListener, add_cert_flags
from webhook.database import StatefulSets
from webhook.incluster import POLL_INTERVAL, STEPS, CertificateKeeper, KeeperFailure
from webhook.metrics import Metrics
from webhook.readiness import TOLERANCE, Report, keeper_report, report
from webhook.server import make_app
from webhook.supervisor import Supervisor

log = structlog.get_logger("webhook")

# Removing a terminating Pod from the Service's endpoints, and the API server noticing, takes a moment after the
# SIGTERM (or after the preStop sleep, deploy/webhook/deployment.yaml): a request routed here meanwhile must still
# be answered. In-flight requests then get up to _FINISH seconds (each lookup ends within 2 s, webhook.lookup).
SHUTDOWN_DELAY: Final = 5.0
_FINISH: Final = 10.0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbb-webhook", description="Serve the DatabaseBackup admission webhook.")
    parser.add_argument("--port", type=int, default=8443, help="HTTPS port (default: %(default)s)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")  # noqa: S104
    add_cert_flags(parser)
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster config)")
    managed = parser.add_argument_group(
        "certificates in the cluster (without cert-manager)",
        "With --cert-secret the webhook keeps its CA and certificate in that Secret, writes them into --cert-dir, "
        "renews them 30 days before expiry, and writes the CA into each --webhook-configuration's caBundle. It "
        f"re-reads the Secret every ~{POLL_INTERVAL:.0f} s: deleting it rotates the CA and certificate, the old CA "
        "staying trusted until every replica the Service routes to serves the new certificate.",
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
    managed.add_argument(
        "--cert-failure-tolerance",
        type=float,
        default=TOLERANCE.total_seconds(),
        help="seconds the keeper may go without a successful sync before /readyz fails; until then a failure only "
        "shows in /readyz's body, the log and dbb_webhook_certificate_keeper_failures_total (default: %(default)s)",
    )
    managed.add_argument(
        "--pod-name", default=os.environ.get("POD_NAME"), help="this replica's Pod, as the Service's endpoints name it"
    )
    add_metrics_auth_flag(parser)
    add_cluster_domain_flag(parser)
    parser.add_argument(
        "--shutdown-delay",
        type=float,
        default=SHUTDOWN_DELAY,
        help="after SIGTERM, seconds to go on answering with /readyz failing, until no endpoint routes here any more "
        "(default: %(default)s)",
    )
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

    reloader = CertificateReloader(
        args.cert_dir, interval=args.cert_reload_seconds, on_reload=reloaded, expiry=_not_after
    )
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
                pod=args.pod_name,
                serving=lambda: reloader.certificate,
                on_event=lambda event: metrics.certificate_reloads.labels(event).inc(),
                on_failure=lambda step: metrics.certificate_keeper_failures.labels(step).inc(),
            )
            for step in STEPS:  # every series exists from the start, so that increase() sees the first failure
                metrics.certificate_keeper_failures.labels(step)
            metrics.certificate_keeper_last_success.set_function(functools.partial(_last_success, keeper))
            try:
                await keeper.sync()
            except KeeperFailure as failure:
                raise StartupError(f"certificate keeper: {failure}") from None
        if not reloader.reload():
            raise StartupError(f"no usable tls.crt and tls.key in {args.cert_dir}")
        statefulsets = StatefulSets.connect(api, metrics)
        # Until the StatefulSet cache has synced, lookups go to the API server and /readyz says not ready; until the
        # Pod cache has, the Pods are listed live.
        tasks = {"reloader": reloader.run, "informer": statefulsets.informer.run}
        if statefulsets.pods_informer is not None:
            tasks["pods informer"] = statefulsets.pods_informer.run
        if keeper is not None:
            tasks["keeper"] = keeper.run
        supervisor = Supervisor(tasks, on_restart=lambda task: metrics.task_restarts.labels(task).inc())
        stop, draining = asyncio.Event(), asyncio.Event()
        tolerance = timedelta(seconds=args.cert_failure_tolerance)
        app = make_app(
            statefulsets,
            metrics,
            ready=lambda: report(
                draining=draining.is_set(),
                certificate_loaded=reloader.context is not None,
                cache_synced=statefulsets.synced,
                tasks_down=supervisor.down - {"keeper"},
                keeper=_keeper_report(keeper, reloader, tolerance),
            ),
            metrics_auth=MetricsAuth(api) if args.metrics_auth else None,
            cluster_domain=args.cluster_domain,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=_FINISH)
        await runner.setup()
        listener = TLSListener(runner.server, lambda: reloader.context)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        background = asyncio.create_task(supervisor.run())
        try:
            port = await listener.start(args.host, args.port)
            log.info("serving", host=args.host, port=port, cert_dir=str(args.cert_dir))
            await stop.wait()
            draining.set()
            log.info("draining: answering, not ready", seconds=args.shutdown_delay)
            await asyncio.sleep(args.shutdown_delay)
        finally:
            log.info("stopping")
            await listener.close()  # no new connections
            await runner.cleanup()  # idle ones closed, requests in flight answered
            background.cancel()
            await asyncio.gather(background, return_exceptions=True)


def _not_after(certificate: bytes) -> datetime:
    return x509.load_pem_x509_certificate(certificate).not_valid_after_utc


def _last_success(keeper: CertificateKeeper) -> float:
    success = keeper.status.last_success
    return success.timestamp() if success is not None else 0.0


def _keeper_report(
    keeper: CertificateKeeper | None, reloader: CertificateReloader, tolerance: timedelta
) -> Report | None:
    if keeper is None:  # certificates from files someone else keeps (cert-manager): nothing of ours to judge
        return None
    return keeper_report(keeper.status, reloader.not_after, datetime.now(UTC), tolerance=tolerance)
