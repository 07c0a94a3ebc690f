"""The runner's progress lines, read from a Job's log and shown to the user.

The runner writes one JSON object a line to stderr; a progress line is
`{"event": "progress", "phase": "dump", "bytes": 123, "total": 456 | null, "elapsed": 1.5, "rate": 82.0, ...}`
every few seconds of a long step, and a last one with `"done": true`. Every other line of the log is ignored here.

On a terminal the progress is one line rewritten in place; otherwise (a pipe, a CI log) each progress line is printed
as it comes, so that a log keeps the story.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from typing import TextIO, TypeGuard

__all__ = ["Progress", "ProgressLine", "format_bytes", "format_seconds", "parse_progress", "render"]


@dataclass(frozen=True)
class Progress:
    phase: str
    bytes: int
    total: int | None
    elapsed: float
    rate: float
    done: bool = False


def parse_progress(line: str) -> Progress | None:
    """The progress a log line reports, or None for any other line (other events, plain text, a cut-off line)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    if not isinstance(found, dict) or found.get("event") != "progress":
        return None
    phase, done_bytes, total = found.get("phase"), found.get("bytes"), found.get("total")
    elapsed, rate = found.get("elapsed"), found.get("rate")
    if not isinstance(phase, str) or not _count(done_bytes) or not (total is None or _count(total)):
        return None
    return Progress(
        phase=phase,
        bytes=done_bytes,
        total=total,
        elapsed=float(elapsed) if _number(elapsed) else 0.0,
        rate=float(rate) if _number(rate) else 0.0,
        done=found.get("done") is True,
    )


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def render(progress: Progress) -> str:
    """`dump  1.2 GiB of 3.4 GiB (35%)  48.1 MiB/s  25s, about 46s left`; without a total, no percent and no ETA."""
    amount = format_bytes(progress.bytes)
    if progress.total:
        percent = min(100, progress.bytes * 100 // progress.total)
        amount = f"{amount} of {format_bytes(progress.total)} ({percent}%)"
    parts = [
        f"{progress.phase:<8}",
        amount,
        f"{format_bytes(round(progress.rate))}/s",
        format_seconds(progress.elapsed),
    ]
    if progress.done:
        parts[-1] += ", done"
    elif progress.total and progress.rate > 0 and progress.bytes < progress.total:
        parts[-1] += f", about {format_seconds((progress.total - progress.bytes) / progress.rate)} left"
    return "  ".join(parts)


def format_bytes(count: int) -> str:
    """Binary units, three significant digits: `512 B`, `1.5 KiB`, `48.1 MiB`, `3.40 GiB`."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    if value >= 100:
        return f"{value:.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def format_seconds(seconds: float) -> str:
    """`7s`, `4m05s`, `2h03m`: the precision a person waiting wants."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLine:
    """Where progress and notes go. On a terminal the latest progress stays on one line, rewritten in place, and a
    note is printed above it; elsewhere every progress line and every note is a line of its own."""

    def __init__(self, out: TextIO, *, terminal: bool, width: int | None = None) -> None:
        self._out = out
        self._terminal = terminal
        # A line wider than the terminal wraps, and `\r` then rewrites only its last part: keep it one line.
        self._width = width or shutil.get_terminal_size().columns
        self._shown = ""  # the progress line on screen now (terminal only)

    def progress(self, progress: Progress) -> None:
        text = render(progress)
        if self._terminal:
            text = text[: self._width - 1]
            self._out.write("\r\x1b[K" + text)
            self._shown = text
        else:
            self._out.write(text + "\n")
        self._out.flush()

    def note(self, text: str) -> None:
        if self._terminal and self._shown:
            self._out.write("\r\x1b[K" + text + "\n" + self._shown)
        else:
            self._out.write(text + "\n")
        self._out.flush()

    def end(self) -> None:
        """Leave the progress line on screen as it last was, and move below it."""
        if self._terminal and self._shown:
            self._out.write("\n")
            self._out.flush()
        self._shown = ""
