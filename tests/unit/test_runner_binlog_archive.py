"""The archiver's decisions, without a server: where a run starts, what a gap is, how much of a binlog is whole."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from runner.archive import MAGIC, ROTATE_EVENT, Entry, Scan, binlog_key, scan, start_binlog
from runner.errors import Reason, RunnerError


def entry(name: str, *, closed: bool = True) -> Entry:
    return Entry(name, name + ".zst", closed, None, None, 100, 50, "ab")


def archived(*names: str, open_one: str | None = None) -> dict[str, Entry]:
    found = {n: entry(n) for n in names}
    return found | ({open_one: entry(open_one, closed=False)} if open_one else {})


def test_binlogs_sort_by_their_number_not_their_text() -> None:
    names = ["mysql-bin.1000000", "mysql-bin.000010", "mysql-bin.000009"]
    assert sorted(names, key=binlog_key) == ["mysql-bin.000009", "mysql-bin.000010", "mysql-bin.1000000"]


@pytest.mark.parametrize(
    ("server", "index", "expected"),
    [
        (["b.000003", "b.000004"], {}, "b.000003"),  # the first run: the oldest the server has
        (["b.000003", "b.000004", "b.000005"], archived("b.000003"), "b.000004"),
        # The open binlog of a killed run is streamed whole again, and replaces its partial.
        (["b.000003", "b.000004"], archived("b.000003", open_one="b.000004"), "b.000004"),
        (["b.000009", "b.000010"], archived("b.000009"), "b.000010"),
    ],
)
def test_a_run_starts_after_the_newest_closed_binlog(server: list[str], index: dict[str, Entry], expected: str) -> None:
    assert start_binlog(server, index) == expected


@pytest.mark.parametrize(
    ("server", "index", "message"),
    [
        (["b.000006", "b.000007"], archived("b.000003"), "binlog b.000004 was purged"),
        (["b.000001"], archived("b.000003"), "was it reset"),
        ([], {}, "lists no binlogs"),
    ],
)
def test_a_binlog_the_server_no_longer_has_is_a_gap(server: list[str], index: dict[str, Entry], message: str) -> None:
    with pytest.raises(RunnerError, match=message) as raised:
        start_binlog(server, index)
    assert raised.value.reason is Reason.ARCHIVE_GAP


def event(timestamp: int, kind: int, body: bytes = b"x" * 10) -> bytes:
    size = 19 + len(body)
    return struct.pack("<IBIIIH", timestamp, kind, 1, size, 0, 0) + body


def test_a_scan_counts_whole_events_only_and_sees_the_rotation(tmp_path: Path) -> None:
    path = tmp_path / "b.000001"
    whole = MAGIC + event(0, 15) + event(1000, 2) + event(1005, 2)
    path.write_bytes(whole + event(1010, ROTATE_EVENT)[:-3])

    found = scan(path)

    assert found == Scan(len(whole), first=1000, last=1005, closed=False)
    path.write_bytes(whole + event(1010, ROTATE_EVENT))
    assert scan(path, found) == Scan(len(whole) + 29, first=1000, last=1010, closed=True)


def test_a_file_that_is_not_a_binlog_has_nothing_whole(tmp_path: Path) -> None:
    path = tmp_path / "b.000001"
    path.write_bytes(b"not a binlog")
    assert scan(path) == Scan(0)
