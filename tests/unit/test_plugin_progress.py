"""The runner's progress lines as `kubectl dbb --wait` reads and shows them."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from plugin.progress import Progress, ProgressLine, format_bytes, format_seconds, parse_progress, render


def line(**fields: Any) -> str:
    base = {"event": "progress", "level": "info", "timestamp": "2026-12-07T09:13:43.123456Z"}
    return json.dumps(base | fields)


def test_a_progress_line_is_read_with_every_field() -> None:
    text = line(phase="dump", bytes=1_234_567, total=3_000_000, elapsed=12.5, rate=98_765.4)
    assert parse_progress(text) == Progress("dump", 1_234_567, 3_000_000, 12.5, 98_765.4)


def test_the_last_line_says_done_and_a_total_may_be_unknown() -> None:
    text = line(phase="upload", bytes=10, total=None, elapsed=1, rate=10, done=True)
    assert parse_progress(text + "\n") == Progress("upload", 10, None, 1.0, 10.0, done=True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pg_dump: dumping contents of table public.orders",
        '{"event": "backup written", "file": "/backups/x.dump", "level": "info"}',
        '{"event": "progress", "phase": "dump", "bytes": 1',  # cut off
        line(phase="dump", bytes=-1, total=None, elapsed=1, rate=1),
        line(phase="dump", bytes=True, total=None, elapsed=1, rate=1),
        line(phase="dump", bytes="12", total=None, elapsed=1, rate=1),
        line(phase=None, bytes=12, total=None, elapsed=1, rate=1),
        line(phase="dump", bytes=12, total="many", elapsed=1, rate=1),
        "[1, 2]",
    ],
)
def test_every_other_line_is_ignored(text: str) -> None:
    assert parse_progress(text) is None


def test_a_missing_or_odd_rate_or_elapsed_reads_as_zero() -> None:
    assert parse_progress(line(phase="check", bytes=5, total=None)) == Progress("check", 5, None, 0.0, 0.0)
    assert parse_progress(line(phase="check", bytes=5, total=None, rate=float("nan"))) == Progress(
        "check", 5, None, 0.0, 0.0
    )


@pytest.mark.parametrize(
    ("progress", "shown"),
    [
        (
            Progress("dump", 1_288_490_189, 3_650_722_201, 25.4, 50_437_816),
            "dump      1.20 GiB of 3.40 GiB (35%)  48.1 MiB/s  25s, about 47s left",
        ),
        (Progress("upload", 52_428_800, None, 130, 403_298), "upload    50.0 MiB  394 KiB/s  2m10s"),
        (
            Progress("restore", 3_000, 3_000, 4000.0, 0.75, done=True),
            "restore   2.93 KiB of 2.93 KiB (100%)  1 B/s  1h06m, done",
        ),
        (Progress("verify", 0, 100, 0.0, 0.0), "verify    0 B of 100 B (0%)  0 B/s  0s"),
    ],
)
def test_progress_shows_bytes_rate_elapsed_and_with_a_total_percent_and_time_left(
    progress: Progress, shown: str
) -> None:
    assert render(progress) == shown


@pytest.mark.parametrize(
    ("count", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (10 * 1024**2, "10.0 MiB"), (150 * 1024**3, "150 GiB")],
)
def test_sizes_are_binary_with_three_significant_digits(count: int, shown: str) -> None:
    assert format_bytes(count) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.4, "0s"), (59, "59s"), (61, "1m01s"), (3599, "59m59s"), (7380, "2h03m")]
)
def test_times_have_the_precision_a_person_waiting_wants(seconds: float, shown: str) -> None:
    assert format_seconds(seconds) == shown


def test_on_a_terminal_progress_rewrites_one_line_and_notes_go_above_it() -> None:
    out = io.StringIO()
    shown = ProgressLine(out, terminal=True, width=80)
    shown.progress(Progress("dump", 1024, None, 1, 1024))
    shown.progress(Progress("dump", 2048, None, 2, 1024))
    shown.note("backup Job nightly-now-1 has ended")
    shown.end()
    assert out.getvalue() == (
        "\r\x1b[Kdump      1.00 KiB  1.00 KiB/s  1s"
        "\r\x1b[Kdump      2.00 KiB  1.00 KiB/s  2s"
        "\r\x1b[Kbackup Job nightly-now-1 has ended\ndump      2.00 KiB  1.00 KiB/s  2s"
        "\n"
    )


def test_elsewhere_each_progress_and_note_is_a_plain_line() -> None:
    out = io.StringIO()
    shown = ProgressLine(out, terminal=False)
    shown.note("waiting for the operator to start the backup")
    shown.progress(Progress("dump", 1024, None, 1, 1024))
    shown.progress(Progress("dump", 2048, None, 2, 1024, done=True))
    shown.end()
    assert out.getvalue() == (
        "waiting for the operator to start the backup\n"
        "dump      1.00 KiB  1.00 KiB/s  1s\n"
        "dump      2.00 KiB  1.00 KiB/s  2s, done\n"
    )


def test_on_a_narrow_terminal_the_progress_line_is_cut_to_stay_one_line() -> None:
    out = io.StringIO()
    ProgressLine(out, terminal=True, width=20).progress(Progress("restore", 3_000, 3_000, 4000.0, 0.75))
    assert out.getvalue() == "\r\x1b[Krestore   2.93 KiB "
