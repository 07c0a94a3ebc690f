"""The supervisor: start every part of the sandbox in order, watch them, stop them in the reverse order.

Every part is entered into one ExitStack as soon as it runs, so whatever ends the supervisor (Ctrl-C, SIGTERM from
`down`, a part that fails to start or dies later) stops exactly what was started, newest first: the reconciler
before the webhook (no backup starts while the admission path goes away), both before PostgreSQL and the control
plane they talk to.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

import yaml

from certs.pki import write_private
from certs.serving import ensure_serving_certificate
from common.constants import ANNOTATION_BACKUP_NOW, GROUP, PLURAL, VERSION
from hack.harness.content import fill_mariadb, fill_postgres
from hack.harness.controlplane import ControlPlane, free_port
from hack.harness.databases import PG_BIN, MariaDBServer, PostgresServer
from hack.harness.objectstore import SeaweedFS
from hack.sandbox import manifests
from hack.sandbox.manifests import (
    BACKUP,
    DATABASE,
    MARIADB,
    MARIADB_HOST,
    NAMESPACE,
    PITR_BACKUP,
    S3_BACKUP,
    SERVICE_HOST,
)
from hack.sandbox.paths import ROOT, DevDir, shown
from hack.sandbox.processes import Record, alive, load_records, record, spawn, terminate

__all__ = ["Console", "Supervisor", "instructions"]

SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
READY_TIMEOUT: Final = 30.0
# With the backup-now annotation the first run starts as soon as the reconciler sees the object; a few seconds
# of dump and verify. Past this the sandbox stays up anyway, for the user to look at what went wrong.
FIRST_BACKUP_TIMEOUT: Final = 60.0
VENV_BIN: Final = Path(sys.executable).parent


class Stop(Exception):
    """A signal asked the supervisor to stop."""


class StepFailed(Exception):
    """A part did not start; the message says what to do."""


@dataclass
class Console:
    """What the user reads: one line per part, with how long it took."""

    out: IO[str] = field(default_factory=lambda: sys.stdout)

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def done(self, label: str, seconds: float, detail: str) -> None:
        self.say(f"  ✓ {label:<15}{seconds:5.1f}s  {detail}")

    def failed(self, label: str, detail: str) -> None:
        self.say(f"  ✗ {label:<15}        {detail}")


@dataclass
class Supervisor:
    dev: DevDir
    detached: bool
    console: Console = field(default_factory=Console)
    stack: ExitStack = field(default_factory=ExitStack)
    plane: ControlPlane | None = None
    postgres: PostgresServer | None = None
    mariadb: MariaDBServer | None = None
    mariadb_record: Record | None = None
    store: SeaweedFS | None = None
    children: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)
    postgres_record: Record | None = None
    backed_up: bool = False
    state: dict[str, Any] = field(default_factory=dict)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, watch until told to stop or a part dies, stop. 0 after a requested stop."""
        self._catch_signals()
        began = time.monotonic()
        code = 0
        with self.stack:
            # Registered first, so it runs last: records go only once what they name has stopped.
            self.stack.callback(self._forget_state)
            try:
                self._remember(record("sandbox", os.getpid(), group=False))
                self._start_all()
                self._ready(time.monotonic() - began)
                code = self._watch()
            except Stop as stop:
                self.console.say(f"\n{stop}: stopping the sandbox...")
            except StepFailed as failure:
                self.console.say(f"\nThe sandbox did not start ({failure}); logs are in {shown(self.dev.logs)}/.")
                self.console.say("Stopping what did start...")
                code = 1
            stopping = time.monotonic()
        self.console.say(
            f"Stopped in {time.monotonic() - stopping:.1f}s. Backups are kept in {shown(self.dev.backups)}/."
        )
        return code

    def _catch_signals(self) -> None:
        def first(signum: int, _: FrameType | None) -> None:
            for other in SIGNALS:
                signal.signal(other, later)
            raise Stop(_SIGNAL_NAMES.get(signum, signal.Signals(signum).name))

        def later(_: int, __: FrameType | None) -> None:
            # Not through the Console: a signal handler may run in the middle of one of its writes.
            os.write(sys.stdout.fileno(), b"  (stopping; one moment)\n")

        for signum in SIGNALS:
            signal.signal(signum, first)

    def _start_all(self) -> None:
        self._step("tools", self._check_tools, quiet=True)
        self.console.say(f"Starting the DatabaseBackup sandbox (on 127.0.0.1 only; state in {shown(self.dev.root)}/)")
        self._step("control plane", self._start_control_plane)
        self._step("PostgreSQL 15", self._start_postgres)
        self._step("MariaDB", self._start_mariadb)
        self._step("object store", self._start_object_store)
        self._step("webhook", self._start_webhook)
        self._step("reconciler", self._start_reconciler)
        self._step("sample objects", self._apply_samples)
        # Not fatal: after a failed first backup the sandbox stays up, for the user to look at why.
        self._step("first backup", lambda: self._wait_for_first_backup(BACKUP), fatal=False)
        self._step("first to S3", lambda: self._wait_for_first_backup(S3_BACKUP), fatal=False)
        self._step("point in time", self._wait_for_archive, fatal=False)

    def _step(self, label: str, action: Callable[[], str], *, quiet: bool = False, fatal: bool = True) -> None:
        began = time.monotonic()
        try:
            detail = action()
        except Stop:
            raise
        except Exception as error:
            self.console.failed(
                label, str(error) if isinstance(error, StepFailed) else f"{type(error).__name__}: {error}"
            )
            if fatal:
                raise StepFailed(label) from error
            return
        if not quiet:
            self.console.done(label, time.monotonic() - began, detail)

    def _watch(self) -> int:
        """Until a signal: a part that dies takes the sandbox down, loudly, rather than leave it half working."""
        while True:
            for name, (exited, log) in self._watched().items():
                if exited() is not None:
                    self.console.say(f"\n✗ {name} exited ({exited()}). Last lines of {shown(log)}:")
                    self.console.say(_tail(log))
                    self.console.say("Stopping the sandbox...")
                    return 1
            time.sleep(0.5)

    def _watched(self) -> dict[str, tuple[Callable[[], str | None], Path]]:
        """name -> (how it ended or None while it runs, its log)."""
        found: dict[str, tuple[Callable[[], str | None], Path]] = {}
        for name, (process, log) in self.children.items():
            found[name] = (_ended(process), log)
        if self.plane is not None:
            for part in self.plane.processes:
                found[part.name] = (_ended(part.popen), part.log)
        if self.postgres is not None:
            # Not our Popen to poll (PostgresServer keeps it): the record tells whether the postmaster lives.
            entry, log = self.postgres_record, self.postgres.folder / "postgres.log"
            found["postgres"] = ((lambda: None if entry is None or alive(entry) else "gone"), log)
        if self.mariadb is not None:
            kept, error_log = self.mariadb_record, self.mariadb.folder / "mariadb.log"
            found["mariadb"] = ((lambda: None if kept is None or alive(kept) else "gone"), error_log)
        return found

    # --- the parts ---------------------------------------------------------------------------------------------

    def _check_tools(self) -> str:
        # As root, PostgresServer runs the server as the `postgres` user through setpriv.
        tools = (*_PG_CLIENTS, "setpriv") if os.geteuid() == 0 else _PG_CLIENTS
        tools = (*tools, *_MARIADB_TOOLS)
        needed = [PG_BIN / "initdb", PG_BIN / "postgres", *(Path(shutil.which(t) or t) for t in tools)]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise StepFailed(
                f"missing {', '.join(missing)}: run `bash hack/databases.sh` (installs PostgreSQL 15 and MariaDB)"
            )
        ours = [VENV_BIN / name for name in ("dbb-webhook", "dbb-reconciler", "dbb-backup")]
        if not all(p.is_file() for p in ours):
            raise StepFailed(f"dbb-webhook, dbb-reconciler or dbb-backup missing in {VENV_BIN}: run `make venv`")
        return ""

    def _start_control_plane(self) -> str:
        assets = _assets()
        # A fresh cluster each time: old objects would point at old ports and an old webhook CA.
        shutil.rmtree(self.dev.cluster, ignore_errors=True)
        self.plane = self.stack.enter_context(ControlPlane.start(assets, workdir=self.dev.cluster))
        for process in self.plane.processes:
            ports = _listening_ports(process.popen.args)  # type: ignore[arg-type]
            self._remember(record(process.name, process.popen.pid, group=True, ports=ports))
            _link_log(self.dev.logs / process.log.name, process.log)
        _write_kubeconfig(self.plane, self.dev.kubeconfig)
        self.state["api"] = self.plane.url
        return f"kube-apiserver {self.plane.url}, CRD installed"

    def _start_postgres(self) -> str:
        self.postgres = server = self.stack.enter_context(PostgresServer.start())
        pid = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
        # SIGINT is PostgreSQL's fast shutdown: it disconnects clients instead of waiting for them.
        self.postgres_record = record("postgres", pid, group=False, stop_signal=signal.SIGINT, ports=[server.port])
        self._remember(self.postgres_record)
        fill_postgres(server)
        self.state["postgres"] = {"host": server.host, "port": server.port, "user": server.user}
        self.state["postgres_folder"] = str(server.folder)
        return f"127.0.0.1:{server.port}, sample databases shop and crm"

    def _start_mariadb(self) -> str:
        binlog = {"log-bin": "mysql-bin", "server-id": "1", "binlog-format": "ROW"}
        self.mariadb = server = self.stack.enter_context(MariaDBServer.start(settings=binlog))
        pid = int((server.folder / "mariadb.pid").read_text().split()[0])
        self.mariadb_record = record("mariadb", pid, group=False, ports=[server.port])
        self._remember(self.mariadb_record)
        fill_mariadb(server)
        self.state["mariadb"] = {"host": server.host, "port": server.port, "user": server.user}
        return f"127.0.0.1:{server.port}, binary logging on, sample databases shop and crm"

    def _start_object_store(self) -> str:
        os.environ["WEED"] = _weed()  # hack.harness.objectstore starts this binary
        self.store = store = self.stack.enter_context(SeaweedFS.start(self.dev.object_store))
        port = int(store.endpoint.rsplit(":", 1)[1])
        self._remember(record("seaweedfs", store.process.pid, group=True, ports=[port]))
        _link_log(self.dev.logs / "seaweedfs.log", store.log)
        exports = "".join(f"export {name}={value}\n" for name, value in store.env.items())
        write_private(self.dev.s3_env, exports.encode())
        self.state["s3"] = {"endpoint": store.endpoint, "bucket": store.bucket}
        return f"SeaweedFS, S3 API {store.endpoint}, bucket {store.bucket} (keys in {shown(self.dev.s3_env)})"

    def _start_webhook(self) -> str:
        plane = self._plane()
        tls = self.dev.webhook_tls
        ensure_serving_certificate(tls, ["127.0.0.1", "localhost"])
        port = free_port()
        argv = [
            str(VENV_BIN / "dbb-webhook"),
            *("--kubeconfig", str(plane.kubeconfig), "--cert-dir", str(tls)),
            *("--host", "127.0.0.1", "--port", str(port)),
        ]
        self._child("webhook", argv, [port])
        url = f"https://127.0.0.1:{port}"
        _wait_http(f"{url}/readyz", ssl.create_default_context(cafile=str(tls / "ca.crt")), *self.children["webhook"])
        plane.kubectl("apply", "-f", "-", input=manifests.as_list(manifests.webhook_registration(port, tls / "ca.crt")))
        self.state["webhook"] = url
        return f"{url} (TLS), registered with the API server"

    def _start_reconciler(self) -> str:
        port, server = free_port(), self._postgres()
        tls = self.dev.reconciler_tls
        ensure_serving_certificate(tls, ["127.0.0.1", "localhost"])
        # What cluster DNS would do for a backup Job: the sample Service's name reaches the local PostgreSQL.
        alias = f"{SERVICE_HOST}={server.host}:{server.port}"
        maria = self._mariadb()
        argv = [
            *(sys.executable, "-m", "hack.sandbox.reconciler"),
            *("--kubeconfig", str(self._plane().kubeconfig)),
            *("--local-backup-root", str(self.dev.backups), "--local-host-alias", alias),
            *("--local-host-alias", f"{MARIADB_HOST}={maria.host}:{maria.port}"),
            *("--health-host", "127.0.0.1", "--health-port", str(port), "--cert-dir", str(tls)),
            # Loopback only, in a sandbox: its metrics need no token (a cluster's do: docs/security.md).
            "--no-metrics-auth",
        ]
        self._child("reconciler", argv, [port])
        trusting = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        _wait_http(f"https://127.0.0.1:{port}/readyz", trusting, *self.children["reconciler"])
        metrics = f"curl -s --cacert {shown(tls / 'ca.crt')} https://127.0.0.1:{port}/metrics | grep ^dbb_backup"
        self.state["reconciler_metrics"] = metrics
        return (
            f"local executor, backups in {shown(self.dev.backups)}/, {SERVICE_HOST} is {server.host}:{server.port}\n"
            f"    metrics (each DatabaseBackup's last success, how overdue it is, ...): {metrics}"
        )

    def _apply_samples(self) -> str:
        plane, server = self._plane(), self._postgres()
        plane.kubectl(
            "apply", "-f", "-", input=manifests.as_list(manifests.database_objects(server.password, server.port))
        )
        maria = self._mariadb()
        plane.kubectl(
            "apply",
            "-f",
            "-",
            input=manifests.as_list(manifests.mariadb_objects(maria.user, maria.password, maria.port)),
        )
        for name in (DATABASE, MARIADB):
            plane.kubectl(
                *("patch", "statefulset", name, "-n", NAMESPACE, "--subresource=status", "--type=merge"),
                *("-p", json.dumps(manifests.ready_status())),
            )
        # Through the webhook: its defaults and its checks apply, as they would in a cluster.
        store = self._store()
        samples = [
            manifests.sample_backup(),
            *manifests.s3_backup(store.endpoint, store.bucket, store.credentials),
            manifests.pitr_backup(),
        ]
        result = plane.kubectl("apply", "-f", "-", input=manifests.as_list(samples))
        for warning in result.stderr.strip().splitlines():
            self.console.say(f"    {warning}")
        return (
            f"namespace {NAMESPACE}: StatefulSets {DATABASE}, {MARIADB} (records), "
            f"DatabaseBackups {BACKUP}, {S3_BACKUP}, {PITR_BACKUP}"
        )

    def _wait_for_archive(self) -> str:
        """The MariaDB sample's first backup, then its archive reaching past it: point-in-time restores work."""
        plane = self._plane()
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{PITR_BACKUP}"
        deadline, wrote = time.monotonic() + FIRST_BACKUP_TIMEOUT, False
        while time.monotonic() < deadline:
            code, body = plane.get(path)
            status = (json.loads(body).get("status") or {}) if code == 200 else {}
            continuous = status.get("continuous") or {}
            if status.get("lastBackup") and not wrote:
                # An archive reaches as far as the last event it holds: a write after the first backup is what
                # makes a second after it restorable (docs/point-in-time.md).
                # With `shop` the default database, as an application's migrations run: a statement issued while
                # another (or none) is the default is left out of a point-in-time replay (docs/point-in-time.md).
                self._mariadb().sql(
                    "CREATE TABLE IF NOT EXISTS visits (at DATETIME(6)); INSERT INTO visits VALUES (NOW(6))", "shop"
                )
                wrote = True
            if continuous.get("recoverableFrom"):
                return (
                    f"{PITR_BACKUP}: restores reach any second from {continuous['recoverableFrom']} "
                    f"(kubectl dbb list {PITR_BACKUP} -n {NAMESPACE})"
                )
            if status.get("lastFailure"):
                failure = status["lastFailure"]
                raise StepFailed(f"the first backup failed: {failure['reason']}: {failure['message']}")
            if continuous.get("reason"):
                raise StepFailed(f"the archiver stopped: {continuous['reason']}: {continuous.get('message')}")
            time.sleep(0.5)
        raise StepFailed(
            f"nothing recoverable within {FIRST_BACKUP_TIMEOUT:.0f}s; see `kubectl describe dbb {PITR_BACKUP}`"
        )

    def _wait_for_first_backup(self, name: str) -> str:
        plane = self._plane()
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{name}"
        deadline = time.monotonic() + FIRST_BACKUP_TIMEOUT
        while time.monotonic() < deadline:
            code, body = plane.get(path)
            status = (json.loads(body).get("status") or {}) if code == 200 else {}
            if status.get("lastBackup"):
                last = status["lastBackup"]
                self.backed_up = self.backed_up or name == BACKUP
                where = last.get("url") or shown(Path(last["file"]))
                return f"{where} ({_size(int(last['size']))})"
            if status.get("lastFailure"):
                failure = status["lastFailure"]
                raise StepFailed(f"the first backup failed: {failure['reason']}: {failure['message']}")
            time.sleep(0.3)
        raise StepFailed(
            f"no backup within {FIRST_BACKUP_TIMEOUT:.0f}s; see `kubectl describe dbb {name} -n {NAMESPACE}`"
        )

    # --- helpers -----------------------------------------------------------------------------------------------

    def _child(self, name: str, argv: list[str], ports: list[int]) -> None:
        log = self.dev.logs / f"{name}.log"
        log.unlink(missing_ok=True)
        process = spawn(argv, log, cwd=ROOT)
        self.stack.callback(terminate, process)
        self.children[name] = (process, log)
        self._remember(record(name, process.pid, group=True, ports=ports))

    def _remember(self, entry: Record) -> None:
        """On disk for `down` and `status`; removed by _forget_state once everything has stopped."""
        entry.save(self.dev.records)

    def _ready(self, seconds: float) -> None:
        self.state.update(
            ready=True,
            pid=os.getpid(),
            detached=self.detached,
            since=datetime.now(UTC).isoformat(timespec="seconds"),
            kubeconfig=str(self.dev.kubeconfig),
            namespace=NAMESPACE,
            backup=BACKUP,
        )
        for line in instructions(self.dev, seconds, detached=self.detached, backed_up=self.backed_up):
            self.console.say(line)
        # Written last: `up` returns once it sees it, and everything above is then in the log.
        _write_json(self.dev.state, self.state)

    def _forget_state(self) -> None:
        self.dev.state.unlink(missing_ok=True)
        for entry in load_records(self.dev.records):
            entry.forget(self.dev.records)
        self.dev.kubeconfig.unlink(missing_ok=True)  # it names a server that is gone

    def _plane(self) -> ControlPlane:
        assert self.plane is not None
        return self.plane

    def _postgres(self) -> PostgresServer:
        assert self.postgres is not None
        return self.postgres

    def _mariadb(self) -> MariaDBServer:
        assert self.mariadb is not None
        return self.mariadb

    def _store(self) -> SeaweedFS:
        assert self.store is not None
        return self.store


_SIGNAL_NAMES: Final[dict[int, str]] = {
    signal.SIGINT: "Ctrl-C",
    signal.SIGHUP: "The terminal closed (SIGHUP)",
    signal.SIGTERM: "Asked to stop (SIGTERM)",
}
_PG_CLIENTS: Final = ("pg_dump", "pg_dumpall", "pg_restore", "psql", "pg_isready")
_MARIADB_TOOLS: Final = ("mariadbd", "mariadb-install-db", "mariadb", "mariadb-dump", "mariadb-binlog")


def instructions(dev: DevDir, seconds: float, *, detached: bool, backed_up: bool) -> list[str]:
    kubeconfig = shown(dev.kubeconfig)
    export = kubeconfig if kubeconfig.startswith("/") else f"$PWD/{kubeconfig}"
    stop = "make dev-down stops it" if detached else "Ctrl-C stops everything"
    if backed_up:
        about = [
            f"Ready in {seconds:.0f}s. The first backup was asked for at start (annotation {ANNOTATION_BACKUP_NOW});",
            "the next ones follow the sample's schedule, */5 * * * *.",
        ]
    else:
        about = [
            f"Running, but without a first backup (above): `kubectl describe dbb {BACKUP} -n {NAMESPACE}` says why.",
            "The schedule, */5 * * * *, tries again at its next slot.",
        ]
    return [
        "",
        *about,
        "",
        "Try:",
        f"  export KUBECONFIG={export}",
        "  kubectl get dbb -A",
        f"  kubectl describe dbb {BACKUP} -n {NAMESPACE}",
        f"  ls {shown(dev.backups)}/{DATABASE}",
        f"  source {shown(dev.s3_env)} && dbb-backup list s3://backups/{NAMESPACE}/{DATABASE}",
        "",
        f"Logs are in {shown(dev.logs)}/; {stop}.",
    ]


def _assets() -> Path:
    """kube-apiserver, etcd and kubectl, as `make envtest` finds or builds them. Unlike the tests' find_assets,
    the script's progress reaches the user: the first build takes minutes and must not look like a hang."""
    result = subprocess.run(["bash", str(ROOT / "hack" / "envtest.sh")], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise StepFailed(f"hack/envtest.sh failed ({result.returncode}); its output is above")
    return Path(result.stdout.strip().splitlines()[-1])


def _weed() -> str:
    """SeaweedFS's `weed`, as hack/seaweedfs.sh finds or builds it (its progress shown: the first build takes
    minutes)."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "seaweedfs.sh")], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise StepFailed(f"hack/seaweedfs.sh failed ({result.returncode}); its output is above")
    return result.stdout.strip().splitlines()[-1]


def _listening_ports(argv: Sequence[object]) -> list[int]:
    """The ports etcd and kube-apiserver were told to listen on, so `down` can check that they are free again."""
    ports = []
    for argument in map(str, argv):
        if argument.startswith("--secure-port="):
            ports.append(int(argument.split("=", 1)[1]))
        elif argument.startswith(("--listen-client-urls=", "--listen-peer-urls=")):
            ports.append(int(argument.rsplit(":", 1)[1]))
    return ports


def _write_kubeconfig(plane: ControlPlane, path: Path) -> None:
    """The control plane's admin kubeconfig, with the sample namespace as the context's default."""
    plane.write_kubeconfig(path, context="dbb-sandbox")
    config = yaml.safe_load(path.read_text())
    config["contexts"][0]["context"]["namespace"] = NAMESPACE
    write_private(path, yaml.safe_dump(config).encode())


def _wait_http(url: str, context: ssl.SSLContext | None, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StepFailed(f"exited with {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:  # noqa: S310 - our loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise StepFailed(f"{url} not ready within {READY_TIMEOUT:.0f}s:\n{_tail(log)}")


def _ended(process: subprocess.Popen[bytes]) -> Callable[[], str | None]:
    return lambda: None if process.poll() is None else f"exit code {process.returncode}"


def _link_log(link: Path, target: Path) -> None:
    """All logs in one folder: the control plane writes its own into its workdir."""
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def _write_json(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    partial.replace(path)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
