"""Running the database tools: a streamed stdin or stdout, stderr kept for the error message, a deadline.

A tool's stderr is drained by a thread into a bounded tail (a tool that writes a lot to stderr must never block on
it, and only its last lines say why it stopped). Every message built from stderr goes through the run's Scrubber.

The deadline (`--timeout`) is one timer for the whole run: when it fires it kills every tool still running, which
ends the stream we are reading, and the tool's `finish` reports `Timeout` instead of the tool's own failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Final, Protocol, Self

from runner.engines import classify_failure
from runner.errors import Reason, RunnerError, Scrubber, one_line

__all__ = ["Deadline", "Stoppable", "Tool", "pipe", "run_capture"]

PIPE_SIZE: Final = 1 << 20  # fewer wake-ups per byte than the 64 KiB default; Linux caps it at pipe-max-size
STDERR_TAIL: Final = 64 << 10


class Stoppable(Protocol):
    """What the deadline stops when it fires: a tool (killed), a query session (its statement cancelled)."""

    def kill(self) -> None: ...


class Deadline:
    """The run's time limit. `None` seconds means no limit."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._tools: set[Stoppable] = set()
        self._timer = threading.Timer(seconds, self._expire) if seconds else None
        if self._timer:
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            tools = list(self._tools)
        for tool in tools:
            tool.kill()

    def register(self, tool: Stoppable) -> None:
        with self._lock:
            if self.expired:
                tool.kill()
            self._tools.add(tool)

    def unregister(self, tool: Stoppable) -> None:
        with self._lock:
            self._tools.discard(tool)

    def check(self) -> None:
        if self.expired:
            raise self.error()

    def error(self) -> RunnerError:
        return RunnerError(Reason.TIMEOUT, f"the run did not finish within --timeout {self.seconds:g}s and was stopped")

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()


class Tool:
    """One running tool. Use as a context manager: leaving the block kills it if it still runs.

    `stdin`/`stdout`: "pipe" to stream through `write`/`read`, an open file to connect directly, None for
    /dev/null. `failure` is the reason used when the tool fails and its stderr says nothing more specific."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        scrub: Scrubber,
        *,
        stdin: str | IO[bytes] | None = None,
        stdout: str | IO[bytes] | None = "pipe",
        deadline: Deadline | None = None,
        failure: Reason = Reason.DUMP_FAILED,
        die_with_parent: bool = False,
    ) -> None:
        """`die_with_parent`: the tool is killed when the runner dies, even by SIGKILL (a tool that writes files,
        not a pipe to us, would otherwise outlive it)."""
        self.name = Path(argv[0]).name
        self._argv = list(argv)
        self._env = dict(env)
        self._scrub = scrub
        self._stdin = stdin
        self._stdout = stdout
        self._deadline = deadline
        self._failure = failure
        self._die_with_parent = die_with_parent
        self._tail = bytearray()
        self._process: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread | None = None

    def __enter__(self) -> Self:
        try:
            self._process = subprocess.Popen(
                self._argv,
                stdin=_redirect(self._stdin),
                stdout=_redirect(self._stdout),
                stderr=subprocess.PIPE,
                env=self._env,
                bufsize=0,
                preexec_fn=_kill_with_parent if self._die_with_parent else None,
            )
        except OSError as error:
            raise RunnerError(self._failure, f"cannot run {self.name}: {error.strerror}") from None
        for pipe in (self._process.stdout, self._process.stdin):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a smaller pipe only costs a few more wake-ups
                    fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._drainer = threading.Thread(target=self._drain, name=f"{self.name}-stderr", daemon=True)
        self._drainer.start()
        if self._deadline:
            self._deadline.register(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self.kill()
            self._process.wait()
        self._close_pipes()
        if self._deadline:
            self._deadline.unregister(self)

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "use Tool as a context manager"
        return self._process

    def read(self, size: int) -> bytes:
        assert self.process.stdout is not None
        return os.read(self.process.stdout.fileno(), size)

    def write(self, data: bytes) -> bool:
        """Feeds stdin; False once the tool has stopped reading (it exited: `finish` says why)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
        except BrokenPipeError:
            return False
        return True

    def close_stdin(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()

    def close_stdout(self) -> None:
        """Stops reading the tool's output: its next write fails (EPIPE, or SIGPIPE ends it), so that a tool whose
        output nobody wants ends rather than blocks, even one behind a wrapper that `kill` does not reach."""
        if self.process.stdout is not None:
            with contextlib.suppress(OSError):
                self.process.stdout.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self._process is not None and self._process.poll() is None:
                self._process.kill()

    def finish(self) -> None:
        """Waits for the tool; raises RunnerError if it failed, with its scrubbed stderr."""
        self.close_stdin()
        code = self.process.wait()
        if self._drainer:
            self._drainer.join()
        if self._deadline and self._deadline.expired and code != 0:
            raise self._deadline.error()
        if code == 0:
            return
        stderr = self.stderr()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        reason = classify_failure(stderr)
        reason = self._failure if reason == Reason.DUMP_FAILED else reason
        raise RunnerError(reason, f"{self.name} {how}" + (f": {stderr}" if stderr else ""))

    def stderr(self) -> str:
        return one_line(self._scrub(self._tail.decode("utf-8", errors="replace")))

    def _drain(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        fd = self._process.stderr.fileno()
        while chunk := os.read(fd, 65536):
            self._tail += chunk
            if len(self._tail) > STDERR_TAIL:
                del self._tail[: len(self._tail) - STDERR_TAIL]

    def _close_pipes(self) -> None:
        if self._process is None:
            return
        for pipe in (self._process.stdin, self._process.stdout, self._process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


_PR_SET_PDEATHSIG: Final = 1
# Looked up here, in the parent: the forked child only calls it (a lookup there could wait on a lock another thread
# of ours held at the fork).
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_SIGKILL: Final = int(signal.SIGKILL)


def _kill_with_parent() -> None:
    """In the forked child, before exec: SIGKILL when the thread that started it (the runner's main) ends."""
    _prctl(_PR_SET_PDEATHSIG, _SIGKILL)


def _redirect(target: str | IO[bytes] | None) -> int | IO[bytes]:
    if target == "pipe":
        return subprocess.PIPE
    if target is None:
        return subprocess.DEVNULL
    assert not isinstance(target, str)
    return target


def pipe(
    reader: tuple[Sequence[str], Mapping[str, str]],
    writer: tuple[Sequence[str], Mapping[str, str]],
    scrub: Scrubber,
    deadline: Deadline,
    failure: Reason,
) -> None:
    """`reader | writer` ((argv, env) each), both held to `deadline`: the writer's failure is raised first (it says
    why the reader's output was rejected), then the reader's."""
    with Tool(list(reader[0]), reader[1], scrub, deadline=deadline, failure=failure) as source:
        stdout = source.process.stdout
        with Tool(
            list(writer[0]), writer[1], scrub, stdin=stdout, stdout=None, deadline=deadline, failure=failure
        ) as sink:
            sink.finish()
        source.finish()


def run_capture(
    argv: Sequence[str],
    env: Mapping[str, str],
    scrub: Scrubber,
    *,
    stdin: bytes = b"",
    timeout: float = 60.0,
    failure: Reason = Reason.DUMP_FAILED,
) -> str:
    """Runs a short command (a query) and returns its stdout; failures become a RunnerError as for a Tool."""
    name = Path(argv[0]).name
    try:
        result = subprocess.run(
            list(argv), input=stdin, capture_output=True, env=dict(env), timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RunnerError(Reason.TIMEOUT, f"{name} did not answer within {timeout:g}s") from None
    except OSError as error:
        raise RunnerError(failure, f"cannot run {name}: {error.strerror}") from None
    if result.returncode != 0:
        stderr = one_line(scrub(result.stderr.decode("utf-8", errors="replace")))
        reason = classify_failure(stderr)
        reason = failure if reason == Reason.DUMP_FAILED else reason
        raise RunnerError(reason, f"{name} exited with {result.returncode}" + (f": {stderr}" if stderr else ""))
    return result.stdout.decode("utf-8", errors="replace")
