"""`dbb-backup archive --status-port PORT`: what the archive holds and how far behind the server it is, over plain
HTTP on 0.0.0.0:PORT, for the operator (status.continuous) and the Pod's probes.

    GET /status   200 {"recoverableFrom", "recoverableUntil", "gapAt", "lagSeconds", "binlog", "archived",
                       "reason", "message", "updated"}  (StatusBody)
    GET /healthz  200 "ok" while the archiver runs; 503 and the reason after a fatal error
    anything else 404 (other methods: 501)

- `recoverableFrom`: the first event of the oldest archived binlog after the newest gap (all of them when the
  archive has none: nothing replays across a gap); `recoverableUntil`: the last event of the newest one published
  (closed or `.partial`), as the archive's index records them (RFC 3339, whole seconds; null while the archive holds
  no such event).
- `gapAt`: the first event archived after the newest gap (`archivestore.Gap`: binlogs the server purged before they
  were read), or, until one is archived, when the gap was found; null when the archive has no gap. A WAL archive's
  (`walarchive`) is when the gap was found, and its `recoverableFrom` the oldest `until` after the gap. The
  operator takes a backup at once when it is newer than the last successful one.
- `lagSeconds`: the age of the archive's view of the server. Every max_lag / 2 seconds the archiver asks the server
  where it is writing (SHOW MASTER STATUS, at instant t), then publishes what the binlog tool has received; if the
  archive then holds everything up to that position, the archive was complete as of t. `lagSeconds` is the seconds
  since the newest such t: it stays under max_lag / 2 plus one check on a healthy stream, and grows without bound
  when the stream stalls or the store refuses writes. Null before the first such check succeeds.
- `binlog`: the server binlog the tool is streaming (null before the first event arrives); `archived`: how many
  closed binlogs the archive holds (from earlier runs too).
- `reason` and `message`: a fatal error (a `Reason`, the message scrubbed of every secret as the run's failure line
  is); null while the archiver runs.
- `updated`: when the archiver last checked against the server (or published at a stop); null before the first.

A fatal error (`ArchiveGap` for a server that was reset, `BinaryLoggingOff`, a lost connection) is recorded here,
then the run ends as every run does: its failure line on stdout, in `--termination-log` and on stderr, and exit
status 1, so that the Pod restarts and the operator reads the reason from its last termination message. /healthz
answers 503 between the error and the exit, moments; /status is there only while the process runs. A stop
(SIGTERM) keeps /healthz at 200 until exit.

Every answer is a few hundred bytes of our own JSON: no path, no host, no credential. Requests are served by daemon
threads with a read timeout, so a client that sends nothing holds no thread for long, and nothing a client sends can
stop the server or the archiver.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final, TypedDict
from urllib.parse import urlsplit

from runner.errors import Reason, RunnerError

__all__ = ["ArchiveStatus", "State", "StatusBody", "render", "serving"]

REQUEST_TIMEOUT: Final = 10.0  # seconds a connection may take to send its request


class StatusBody(TypedDict):
    recoverableFrom: str | None
    recoverableUntil: str | None
    gapAt: str | None
    lagSeconds: float | None
    binlog: str | None
    archived: int
    reason: str | None
    message: str | None
    updated: str | None


@dataclass(frozen=True)
class State:
    """The archiver's view, as last published. `current_at` is a `time.monotonic()` instant at which the archive
    held everything the server had written; `updated` a wall-clock time."""

    recoverable_from: str | None = None
    recoverable_until: str | None = None
    gap_at: str | None = None
    binlog: str | None = None
    archived: int = 0
    current_at: float | None = None
    updated: datetime | None = None
    reason: str | None = None
    message: str | None = None


def _rfc(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(state: State, now: float) -> StatusBody:
    """The /status body for `state` at the monotonic instant `now`."""
    lag = None if state.current_at is None else round(max(0.0, now - state.current_at), 3)
    return {
        "recoverableFrom": state.recoverable_from,
        "recoverableUntil": state.recoverable_until,
        "gapAt": state.gap_at,
        "lagSeconds": lag,
        "binlog": state.binlog,
        "archived": state.archived,
        "reason": state.reason,
        "message": state.message,
        "updated": _rfc(state.updated),
    }


class ArchiveStatus:
    """The state the archiver writes and the HTTP threads read: replaced whole under a lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._state = State()
        self.clock = clock

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def update(self, *, checked: bool = False, **changes: object) -> None:
        """Some of State's fields; `checked`: the archiver has just checked against the server (`updated`)."""
        if checked:
            changes["updated"] = datetime.now(UTC)
        with self._lock:
            self._state = replace(self._state, **changes)  # type: ignore[arg-type]

    def failed(self, reason: str, message: str) -> None:
        """A fatal error; `message` already scrubbed."""
        with self._lock:
            self._state = replace(self._state, reason=reason, message=message)

    def body(self) -> StatusBody:
        return render(self.state, self.clock())


class _Handler(BaseHTTPRequestHandler):
    server_version = "dbb-backup"
    sys_version = ""
    timeout = REQUEST_TIMEOUT
    # http.server's own refusals (400, 501), short, and without echoing what the client sent.
    error_message_format = "%(code)d %(explain)s\n"
    error_content_type = "text/plain; charset=utf-8"
    status: ArchiveStatus  # set on the subclass `serving` makes

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/status":
            self._answer(HTTPStatus.OK, "application/json", json.dumps(self.status.body()) + "\n")
        elif path == "/healthz":
            reason = self.status.state.reason
            if reason is None:
                self._answer(HTTPStatus.OK, "text/plain", "ok\n")
            else:
                self._answer(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", f"{reason}\n")
        else:
            self._answer(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")

    def _answer(self, code: HTTPStatus, kind: str, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Not on stderr: the run's stderr is its JSON log, and a probe every few seconds is not news."""


@contextlib.contextmanager
def serving(status: ArchiveStatus, port: int, host: str = "0.0.0.0") -> Iterator[int | None]:  # noqa: S104 - the Pod's probes and the operator
    """Serves `status` on host:port in a daemon thread while the block runs; port 0 serves nothing. Yields the port."""
    if not port:
        yield None
        return
    handler = type("StatusHandler", (_Handler,), {"status": status})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--status-port {port}: {error.strerror}") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="status-http", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
