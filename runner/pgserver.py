"""The scratch postgres of a point-in-time restore (`pgpitr`) as a process: one seam, `ServerProcess`, to start it,
to ask whether it has exited, and to stop it; two sides behind it.

- `LocalServer`: a child of the runner, from the server binaries of the base backup's major version installed beside
  it (a developer's machine, the tests).
- `SidecarServer`: the replay server beside the runner in a restore Job's Pod, the source's own image (the runner's
  has PostgreSQL's client tools only). They share one folder (`--replay-dir`, mounted at the same path in both) and
  talk through files in it, as the sidecar's script reads them (reconciler/replayserver.py, SUPERVISOR):

  - `start.N` (N = 1, 2, ...): start N, postgres's arguments one a line (written as `start.N.tmp`, then renamed, so
    that the sidecar never reads half of it);
  - `stop.N`: stop start N's server (the sidecar sends SIGINT, PostgreSQL's fast shutdown);
  - `exited.N`: the sidecar's answer, start N's exit status, however its server ended;
  - `done`: the runner has finished; the sidecar stops what runs and exits.

Either side appends the server's output to `postgres.log` in the scratch folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import structlog

from runner.errors import Reason, RunnerError

__all__ = ["LOG", "LocalServer", "ServerProcess", "SidecarServer", "letting_go"]

log = structlog.get_logger("dbb-backup")

LOG: Final = "postgres.log"
STOP_WAIT: Final = 60.0  # seconds a fast shutdown may take before we give up on the server
DONE: Final = "done"
_EXCHANGED = re.compile(r"(?:start|stop|exited)\.[0-9]+(?:\.tmp)?")  # the protocol's files, but `done`


class ServerProcess(Protocol):
    """The scratch server's process, as pgpitr drives it: one server at a time."""

    def start(self, arguments: list[str]) -> None:
        """Starts postgres with `arguments`; its output goes to the scratch folder's LOG."""
        ...

    def poll(self) -> int | None:
        """The last started server's exit status once it has exited; None while it runs (or before any start)."""
        ...

    def stop(self) -> None:
        """Asks the server to stop (fast shutdown) and waits, at most STOP_WAIT; nothing if it has exited."""
        ...

    def close(self) -> None:
        """The restore is over: stops the server, lets go of what runs it, and removes what only it needed."""
        ...


@dataclass
class LocalServer:
    binary: Path  # .../bin/postgres
    run_as: list[str]  # the argv prefix that runs it as another user (setpriv), or nothing
    log: Path
    _process: subprocess.Popen[bytes] | None = None

    def start(self, arguments: list[str]) -> None:
        with self.log.open("ab") as out:
            self._process = subprocess.Popen([*self.run_as, str(self.binary), *arguments], stdout=out, stderr=out)

    def poll(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()


@dataclass
class SidecarServer:
    folder: Path  # --replay-dir: the same path in the sidecar
    stop_wait: float = STOP_WAIT
    _started: int = field(default=0, init=False)  # N of the last start.N

    def start(self, arguments: list[str]) -> None:
        # The sidecar reads one argument a line: a newline would split one into two, or smuggle in another.
        for argument in arguments:
            if "\n" in argument:
                raise RunnerError(
                    Reason.INVALID_ARGUMENTS, f"the replay server takes no newline in an argument: {argument!r}"
                )
        self._started += 1
        written = self.folder / f"start.{self._started}.tmp"
        written.write_bytes(b"".join(os.fsencode(argument) + b"\n" for argument in arguments))
        written.rename(self.folder / f"start.{self._started}")

    def poll(self) -> int | None:
        if not self._started:
            return None
        try:
            status = (self.folder / f"exited.{self._started}").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return int(status)
        except ValueError:
            return 1  # the sidecar renames its answer into place whole: an unreadable one still means it exited

    def stop(self) -> None:
        if not self._started or self.poll() is not None:
            return
        (self.folder / f"stop.{self._started}").touch()
        waited = time.monotonic() + self.stop_wait
        while self.poll() is None:
            if time.monotonic() >= waited:
                # Not forever: the Pod ends with the runner, and its sidecar with it.
                log.warning("the replay server did not report its server stopped", start=self._started)
                return
            time.sleep(0.2)

    def leftovers(self) -> list[str]:
        """The protocol's files already in the folder: another start's, which this one would take for its own."""
        return sorted(p.name for p in self.folder.iterdir() if _EXCHANGED.fullmatch(p.name) or p.name in (DONE, LOG))

    def close(self) -> None:
        self.stop()
        _done(self.folder)
        # `done` stays: the sidecar may not have seen it yet.
        for path in self.folder.iterdir():
            if _EXCHANGED.fullmatch(path.name) or path.name == LOG:
                path.unlink(missing_ok=True)


def _done(folder: Path) -> None:
    # A folder that is not there was refused before anything else (pgpitr): nothing to tell.
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        (folder / DONE).touch()


@contextlib.contextmanager
def letting_go(folder: Path | None) -> Iterator[None]:
    """`done` in the replay server's `folder` on the way out, however it goes: also when the restore was refused
    before it started a server, so that the replay server exits (and its Pod completes) all the same."""
    try:
        yield
    finally:
        if folder is not None:
            _done(folder)
