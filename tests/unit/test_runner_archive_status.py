"""The archiver's status endpoint (`archive --status-port`): its body, its lag, and an HTTP server that answers
every request, good or bad, over a real socket."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime

import pytest

from runner.archivestatus import ArchiveStatus, State, render, serving
from runner.errors import Reason, RunnerError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def status(clock: Clock) -> ArchiveStatus:
    return ArchiveStatus(clock)


@pytest.fixture
def port(status: ArchiveStatus) -> Iterator[int]:
    with serving(status, free_port(), host="127.0.0.1") as bound:
        assert bound is not None
        yield bound


def get(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body) of a GET on the status server at 127.0.0.1:port; (0, "") while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()
    except (ConnectionError, urllib.error.URLError):
        return 0, ""


def test_before_anything_is_archived_every_field_says_so() -> None:
    assert render(State(), now=5.0) == {
        "recoverableFrom": None,
        "recoverableUntil": None,
        "gapAt": None,
        "lagSeconds": None,
        "binlog": None,
        "archived": 0,
        "reason": None,
        "message": None,
        "updated": None,
    }


def test_the_lag_is_the_age_of_the_last_check_that_found_the_archive_complete(
    status: ArchiveStatus, clock: Clock
) -> None:
    status.update(checked=True, current_at=clock.now, binlog="mysql-bin.000002", archived=1)
    clock.now += 7.25
    status.update(checked=True)  # a check that found the archive behind: the lag keeps growing

    body = status.body()

    assert body["lagSeconds"] == 7.25
    assert body["binlog"] == "mysql-bin.000002"
    assert body["archived"] == 1
    assert body["updated"] is not None
    assert datetime.fromisoformat(body["updated"]).tzinfo is not None


def test_status_is_json_with_the_published_bounds(status: ArchiveStatus, port: int) -> None:
    status.update(
        checked=True,
        recoverable_from="2026-12-07T10:00:00Z",
        recoverable_until="2026-12-07T11:30:05Z",
        gap_at="2026-12-07T10:00:00Z",
        archived=3,
        binlog="mysql-bin.000004",
        current_at=status.clock(),
    )

    code, text = get(port, "/status")

    assert code == 200
    body = json.loads(text)
    assert body["recoverableFrom"] == "2026-12-07T10:00:00Z"
    assert body["recoverableUntil"] == "2026-12-07T11:30:05Z"
    assert body["gapAt"] == "2026-12-07T10:00:00Z"
    assert body["lagSeconds"] == 0.0
    assert (body["archived"], body["binlog"], body["reason"], body["message"]) == (3, "mysql-bin.000004", None, None)


def test_healthz_is_ok_while_running_and_503_with_the_reason_after_a_fatal_error(
    status: ArchiveStatus, port: int
) -> None:
    assert get(port, "/healthz") == (200, "ok\n")

    status.failed(Reason.ARCHIVE_GAP, "binlog mysql-bin.000004 was purged from the server before it was archived")

    assert get(port, "/healthz") == (503, "ArchiveGap\n")
    body = json.loads(get(port, "/status")[1])
    assert (body["reason"], body["message"]) == (
        "ArchiveGap",
        "binlog mysql-bin.000004 was purged from the server before it was archived",
    )


@pytest.mark.parametrize("path", ["/", "/status/", "/metrics", "/../etc/passwd", "/healthz/x"])
def test_an_unknown_path_is_404(port: int, path: str) -> None:
    assert get(port, path) == (404, "not found\n")


def test_a_query_string_is_ignored(port: int) -> None:
    assert get(port, "/healthz?verbose=1") == (200, "ok\n")


def test_garbage_and_other_methods_are_refused_and_the_server_keeps_answering(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"\x00\xff not http at all\r\n\r\n")
        garbage = b"".join(iter(lambda: raw.recv(1024), b""))
    request = urllib.request.Request(f"http://127.0.0.1:{port}/status", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - ours
    posted.value.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # a client that connects and says nothing

    assert garbage == b"400 Bad request syntax or unsupported method\n"  # no status line for what is not HTTP/1
    assert posted.value.code == 501
    assert get(port, "/healthz") == (200, "ok\n")


def test_port_zero_serves_nothing(status: ArchiveStatus) -> None:
    with serving(status, 0) as bound:
        assert bound is None


def test_a_port_in_use_is_an_invalid_argument(status: ArchiveStatus) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RunnerError) as raised, serving(status, port, host="127.0.0.1"):
            pass
    assert raised.value.reason is Reason.INVALID_ARGUMENTS
    assert raised.value.message == f"--status-port {port}: Address already in use"
