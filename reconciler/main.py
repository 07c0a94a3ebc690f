"""dbb-reconciler: runs each scheduled DatabaseBackup as a Job and records the outcome in status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from common.hosts import add_cluster_domain_flag
from common.kube import ConfigError, api_client
from common.logs import configure
from common.metrics_auth import MetricsAuth, add_metrics_auth_flag
from common.tls import CertificateReloader, add_cert_flags
from reconciler.backup_controller import Controller
from reconciler.capacity import Capacity, Caps
from reconciler.executor import Executor, JobExecutor
from reconciler.health import ApiContact, NoCertificate, Readiness, health_app, serve_health
from reconciler.jobs import RunnerSettings
from reconciler.leader import LeaderElection, LeadershipLost
from reconciler.metrics import Metrics
from reconciler.policy_controller import PolicyController
from reconciler.restore_controller import RestoreController

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

log = structlog.get_logger("reconciler")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbb-reconciler", description="Run the DatabaseBackup reconciler.")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster config)")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace; repeatable (default: all). Every list and watch is then namespaced, so a "
        "Role in each of them is all the RBAC it needs (overlays/namespaced/)",
    )
    parser.add_argument(
        "--runner-image",
        default=os.environ.get("DBB_RUNNER_IMAGE", "databasebackup-operator:latest"),
        help="image of the backup Jobs (default: $DBB_RUNNER_IMAGE or %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=16, help="concurrent reconciles (default: %(default)s)")
    caps = parser.add_argument_group("caps", "backup and check Jobs running at once (0: no cap; docs/fleet.md)")
    caps.add_argument("--max-running", type=_cap, default=0, help="in the cluster (default: no cap)")
    caps.add_argument("--max-running-per-namespace", type=_cap, default=0, help="per namespace (default: no cap)")
    caps.add_argument(
        "--max-running-per-server", type=_cap, default=1, help="backups per database server (default: %(default)s)"
    )
    caps.add_argument("--max-running-per-storage", type=_cap, default=0, help="per BackupStore or claim (no cap)")
    parser.add_argument("--leader-elect", action="store_true", help="act only while holding the Lease")
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "dbb-system"),
        help="namespace of the Lease (default: $POD_NAMESPACE or %(default)s)",
    )
    parser.add_argument("--lease-name", default="dbb-reconciler", help="name of the Lease (default: %(default)s)")
    parser.add_argument(
        "--lease-duration",
        type=float,
        default=15.0,
        help="seconds a candidate waits after the leader's last renewal (default: %(default)s)",
    )
    parser.add_argument(
        "--renew-deadline",
        type=float,
        default=10.0,
        help="the leader stops if it could not renew for this long (default: %(default)s)",
    )
    parser.add_argument(
        "--retry-period", type=float, default=2.0, help="how often to renew or try to acquire (default: %(default)s)"
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=8081,
        help="HTTPS port for /healthz, /readyz and /metrics (default: %(default)s; 0 disables)",
    )
    parser.add_argument("--health-host", default="0.0.0.0", help="address for the health port")  # noqa: S104
    add_cert_flags(parser)
    add_metrics_auth_flag(parser)
    add_cluster_domain_flag(parser)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def _cap(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give a number of Jobs, or 0 for no cap")
    return value


def caps(args: argparse.Namespace) -> Caps:
    return Caps(
        cluster=args.max_running or None,
        namespace=args.max_running_per_namespace or None,
        server=args.max_running_per_server or None,
        storage=args.max_running_per_storage or None,
    )


def main(argv: list[str] | None = None) -> int:
    return run(parse(argv))


def run(args: argparse.Namespace, executor: Callable[[ApiClient], Executor] = JobExecutor) -> int:
    configure(args.log_level)
    try:
        return asyncio.run(serve(args, executor))
    except (ConfigError, NoCertificate) as error:
        print(f"dbb-reconciler: {error}", file=sys.stderr)
        return 1


def parse(argv: list[str] | None = None, options: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The arguments, with the checks argparse cannot make alone (exit 2 with a message, as argparse does).
    `options`: a parser built on `parser()` with more flags (the sandbox's)."""
    options = options or parser()
    args = options.parse_args(argv)
    if any(not namespace for namespace in args.namespace):
        options.error("argument --namespace: must not be empty")
    args.namespace = sorted(set(args.namespace))
    return args


async def serve(args: argparse.Namespace, executor: Callable[[ApiClient], Executor] = JobExecutor) -> int:
    """Run until SIGTERM or a lost Lease. `executor` makes what runs each Job: the cluster's Job controller and
    kubelet (`JobExecutor`), or the sandbox's stand-in for them."""
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    reloader = CertificateReloader(args.cert_dir, interval=args.cert_reload_seconds)
    api = await api_client(args.kubeconfig)
    async with api:
        runs = executor(api)
        # One controller per watched namespace (or one for all): each lists and watches only its namespace, which is
        # what lets a Role per namespace replace the ClusterRole.
        controllers: list[Controller | RestoreController | PolicyController] = []
        capacity = Capacity(caps(args))  # shared: the caps hold across every watched namespace
        for namespace in args.namespace or [None]:
            runner = RunnerSettings(image=args.runner_image)
            controllers.append(
                Controller(
                    api,
                    runs,
                    runner,
                    metrics,
                    namespace=namespace,
                    workers=args.workers,
                    identity=identity,
                    cluster_domain=args.cluster_domain,
                    capacity=capacity,
                )
            )
            restores = RestoreController(
                api,
                runs,
                runner,
                metrics,
                namespace=namespace,
                identity=identity,
                cluster_domain=args.cluster_domain,
            )
            controllers.append(restores)
        if not args.namespace:
            # Policies are cluster-scoped and select namespaces: they need the cluster-wide view.
            controllers.append(PolicyController(api, metrics))
        election = (
            LeaderElection(
                api,
                args.lease_namespace,
                args.lease_name,
                identity,
                on_change=lambda leading: metrics.leader.set(1 if leading else 0),
            )
            if args.leader_elect
            else None
        )
        contact = ApiContact(api)
        readiness = Readiness(contact, lambda: all(c.synced for c in controllers), election)
        auth = MetricsAuth(api) if args.metrics_auth else None
        health = (
            await serve_health(
                health_app(readiness, metrics.exposition, auth), args.health_host, args.health_port, reloader
            )
            if args.health_port
            else None
        )
        probing = asyncio.create_task(contact.run(), name="api-contact")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            return await _run(controllers, identity, election, stop)
        finally:
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)
            if health is not None:
                await health.close()


async def _run(
    controllers: list[Controller | RestoreController | PolicyController],
    identity: str,
    election: LeaderElection | None,
    stop: asyncio.Event,
) -> int:
    """Work until SIGTERM (exit 0) or until the Lease is lost (exit 1: all work stopped at once; the Deployment
    restarts us as a candidate, the way controller-runtime does)."""
    stopping = asyncio.create_task(stop.wait(), name="stop")
    if election is not None:
        acquiring = asyncio.create_task(election.acquire(), name="acquire")
        await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            await asyncio.gather(acquiring, return_exceptions=True)
            return 0
        log.info("leading", identity=identity)
    tasks = [asyncio.create_task(_work(controllers), name="controllers"), stopping]
    if election is not None:
        tasks.append(asyncio.create_task(election.hold(), name="hold"))
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    code = 0
    for task in done:
        if task is stopping:
            continue
        error = task.exception()
        if isinstance(error, LeadershipLost):
            log.error("lost the lease: stopped all work", identity=identity)
            code = 1
        elif error is not None:
            log.error("stopped on error", error=f"{type(error).__name__}: {error}"[:300])
            code = 1
    if election is not None and code == 0:
        with contextlib.suppress(Exception):
            await election.release()
    log.info("stopped", exit_code=code)
    return code


async def _work(controllers: list[Controller | RestoreController | PolicyController]) -> None:
    """Run every controller; when one stops (on an error), stop the others too and raise its error."""
    tasks = [asyncio.create_task(c.run(), name=f"{type(c).__name__}:{c.namespace or '*'}") for c in controllers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
