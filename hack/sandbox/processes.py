"""The sandbox's processes: started in sessions of their own, recorded on disk, stopped by process group.

A record names a process by pid *and* start time (`/proc/<pid>/stat`, field 22): pids are reused, and `down` must
never signal a stranger that got the number of a process that is long gone. Records are JSON files, one per
process, in `<dev>/run/<name>.pid`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hack.harness.controlplane import terminate as stop_process_group

__all__ = ["Record", "alive", "load_records", "port_free", "record", "spawn", "stop_record", "terminate"]


@dataclass(frozen=True)
class Record:
    name: str
    pid: int
    started: int  # start time in clock ticks since boot: tells our process from a later one with the same pid
    group: bool  # leads its own process group: signal the group, so its children (pg_dump, ...) stop too
    stop_signal: int = signal.SIGTERM
    ports: tuple[int, ...] = ()

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{self.name}.pid.partial"
        partial.write_text(json.dumps(asdict(self)))
        partial.replace(folder / f"{self.name}.pid")  # readers never see half a record

    def forget(self, folder: Path) -> None:
        (folder / f"{self.name}.pid").unlink(missing_ok=True)


def start_ticks(pid: int) -> int | None:
    """The start time of a live (not zombie) process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields from the last ")".
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def record(name: str, pid: int, *, group: bool, stop_signal: int = signal.SIGTERM, ports: Sequence[int] = ()) -> Record:
    started = start_ticks(pid)
    if started is None:
        raise RuntimeError(f"{name} (pid {pid}) is not running")
    return Record(name, pid, started, group, stop_signal, tuple(ports))


def load_records(folder: Path) -> list[Record]:
    found = []
    for path in sorted(folder.glob("*.pid")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(path.read_text())
            found.append(Record(**{**data, "ports": tuple(data.get("ports", ()))}))
    return found


def alive(entry: Record) -> bool:
    return start_ticks(entry.pid) == entry.started


def spawn(argv: Sequence[str], log: Path, *, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A process in a session (and so a process group) of its own: a Ctrl-C in the terminal reaches only the
    supervisor, which then stops everything in order."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True
        )


def terminate(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Stop a child of ours and its process group (the harness's way, with the sandbox's longer grace)."""
    stop_process_group(process, grace)


def stop_record(entry: Record, grace: float = 15.0) -> bool:
    """Stop a recorded process that is not our child (we cannot wait for it: poll). True if it is gone."""
    if not alive(entry):
        return True
    _signal(entry, entry.stop_signal)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(entry):
            return True
        time.sleep(0.1)
    _signal(entry, signal.SIGKILL)
    time.sleep(0.5)
    return not alive(entry)


def _signal(entry: Record, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if entry.group:
            os.killpg(entry.pid, signum)
        else:
            os.kill(entry.pid, signum)


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port. SO_REUSEADDR: a connection in TIME_WAIT is not a process left behind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
