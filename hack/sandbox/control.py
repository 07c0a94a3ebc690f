"""The commands around the supervisor: `run` in the foreground, `up` in the background, `down`, `status`."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Final

from hack.sandbox.manifests import BACKUP, NAMESPACE
from hack.sandbox.paths import ENV_VAR, ROOT, DevDir, shown
from hack.sandbox.processes import Record, alive, load_records, port_free, stop_record
from hack.sandbox.supervisor import Console, Supervisor

__all__ = ["down", "run", "status", "up"]

# Who goes first when `down` stops what a dead supervisor left: the same order the supervisor stops them in.
STOP_ORDER: Final = ("reconciler", "webhook", "postgres", "kube-apiserver", "etcd", "sandbox")
# The supervisor stops everything within about this long (each part has its own grace, then SIGKILL).
SUPERVISOR_GRACE: Final = 90.0
NOT_RUNNING: Final = 3  # `status` exit code when stopped, as LSB init scripts have it


class AlreadyRunning(Exception):
    pass


# --- run, up --------------------------------------------------------------------------------------------------


def run(dev: DevDir, *, detached: bool = False) -> int:
    console = Console()
    try:
        with hold_lock(dev):
            sweep(dev, console)
            return Supervisor(dev, detached).run()
    except AlreadyRunning:
        console.say(f"A sandbox is already running with its state in {shown(dev.root)}/; `make dev-down` stops it.")
        return 1


def up(dev: DevDir) -> int:
    """The supervisor in a session of its own, its output in the log; echo that log until the sandbox is ready."""
    console = Console()
    if held(dev):
        console.say(f"The sandbox is already running (state in {shown(dev.root)}/); `make dev-down` stops it.")
        return 0
    dev.logs.mkdir(parents=True, exist_ok=True)
    log = dev.supervisor_log
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hack.sandbox", "run", "--detached"],
            cwd=ROOT,
            env={**os.environ, ENV_VAR: str(dev.root)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with log.open() as reader:
        try:
            return _follow(dev, process, reader, console)
        except KeyboardInterrupt:
            # Ctrl-C while starting: stop what has started, and show it stopping.
            process.send_signal(signal.SIGTERM)
            while process.poll() is None:
                _echo(reader, console)
                time.sleep(0.1)
            _echo(reader, console, final=True)
            return 130


def _follow(dev: DevDir, process: subprocess.Popen[bytes], reader: IO[str], console: Console) -> int:
    while True:
        _echo(reader, console)
        if _state(dev).get("pid") == process.pid:
            _echo(reader, console)
            return 0
        if process.poll() is not None:
            _echo(reader, console, final=True)
            return 1
        time.sleep(0.1)


def _echo(reader: IO[str], console: Console, *, final: bool = False) -> None:
    """New whole lines of the log; a line still being written waits for the next call (unless it is the last)."""
    while True:
        position = reader.tell()
        line = reader.readline()
        if not line:
            return
        if not line.endswith("\n") and not final:
            reader.seek(position)
            return
        console.say(line.rstrip("\n"))


# --- down -----------------------------------------------------------------------------------------------------


def down(dev: DevDir) -> int:
    console = Console()
    records = _ordered(load_records(dev.records))
    if not records and not held(dev):
        console.say("The sandbox is not running.")
        return 0
    began = time.monotonic()
    supervisor = next((r for r in records if r.name == "sandbox"), None)
    console.say(f"Stopping the sandbox ({len(records)} processes)...")
    if supervisor is not None and alive(supervisor):
        # The supervisor stops everything in order and then removes its records.
        os.kill(supervisor.pid, signal.SIGTERM)
        _wait_gone(supervisor, SUPERVISOR_GRACE)
    sweep(dev, console, quiet=True)
    left = [r.name for r in records if alive(r)]
    ports = sorted({port for r in records for port in r.ports})
    busy = [port for port in ports if not port_free(port)]
    if left or busy:
        console.say(f"  ✗ still running: {', '.join(left) or '-'}; ports still in use: {busy or '-'}")
        return 1
    console.say(
        f"  ✓ stopped in {time.monotonic() - began:.1f}s: {', '.join(r.name for r in records)}; "
        f"no process left, ports {', '.join(map(str, ports))} free"
    )
    console.say(f"Backups are kept in {shown(dev.backups)}/.")
    return 0


def sweep(dev: DevDir, console: Console, *, quiet: bool = False) -> None:
    """Stop and forget what a supervisor that did not stop cleanly (SIGKILL, a crash) left behind. Called with no
    supervisor running: under the lock, or by `down` after the supervisor has gone."""
    records = _ordered(load_records(dev.records))
    running = [r for r in records if alive(r)]
    if running and not quiet:
        names = ", ".join(r.name for r in running)
        console.say(f"Stopping what an earlier sandbox left running: {names}")
    for entry in running:
        stop_record(entry)
    for entry in records:
        entry.forget(dev.records)
    # PostgresServer's folder (in /tmp) is removed by its own shutdown; not when the supervisor died first.
    folder = _state(dev).get("postgres_folder")
    if isinstance(folder, str) and not any(r.name == "postgres" and alive(r) for r in records):
        shutil.rmtree(folder, ignore_errors=True)
    dev.state.unlink(missing_ok=True)
    dev.kubeconfig.unlink(missing_ok=True)


# --- status ---------------------------------------------------------------------------------------------------


def status(dev: DevDir) -> int:
    console = Console()
    records = _ordered(load_records(dev.records))
    if not records and not held(dev):
        console.say("The sandbox is not running: `make run` (foreground) or `make dev-up` (background) starts it.")
        return NOT_RUNNING
    state = _state(dev)
    if not held(dev):
        console.say("A sandbox stopped without cleaning up; `make dev-down` stops what it left:")
    elif state.get("ready"):
        mode = "in the background" if state.get("detached") else "in the foreground"
        console.say(f"The sandbox is running {mode} since {state.get('since')} (state in {shown(dev.root)}/):")
    else:
        console.say(f"The sandbox is starting (see {shown(dev.supervisor_log)}):")
    for entry in records:
        mark, note = ("✓", "") if alive(entry) else ("✗", "  not running")
        where = ", ".join(f"127.0.0.1:{port}" for port in entry.ports)
        console.say(f"  {mark} {entry.name:<15}pid {entry.pid:<8} {where}{note}".rstrip())
    if state.get("ready"):
        console.say(f"  export KUBECONFIG={state['kubeconfig']}; kubectl describe dbb {BACKUP} -n {NAMESPACE}")
        if state.get("reconciler_metrics"):
            console.say(f"  metrics: {state['reconciler_metrics']}")
    healthy = held(dev) and all(alive(r) for r in records)
    return 0 if healthy else 1


# --- helpers --------------------------------------------------------------------------------------------------


@contextmanager
def hold_lock(dev: DevDir) -> Iterator[None]:
    """One supervisor per dev folder. A flock rather than a pid file: the kernel drops it however the holder ends,
    and it is not inherited by the children (Python opens files non-inheritable)."""
    dev.root.mkdir(parents=True, exist_ok=True)
    with dev.lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(str(dev.root)) from None
        yield


def held(dev: DevDir) -> bool:
    """Whether a supervisor runs for this dev folder."""
    if not dev.lock.exists():
        return False
    try:
        with hold_lock(dev):
            return False
    except AlreadyRunning:
        return True


def _ordered(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: STOP_ORDER.index(r.name) if r.name in STOP_ORDER else -1)


def _wait_gone(entry: Record, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while alive(entry) and time.monotonic() < deadline:
        time.sleep(0.1)


def _state(dev: DevDir) -> dict[str, Any]:
    try:
        value = json.loads(dev.state.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
