"""Progress of long work: the bytes a run writes to storage, and the stored bytes a verify, restore or check reads.

One phase at a time (the innermost one counts): `with phase("restore", total=size, file=name): ...`, and the two
points every byte passes through report to it: `advance(n)` in the stored reads (`checked.Measured`) and in the
writers (`stream.OutputFile`, `objectstore.MultipartUpload`).

How it shows depends on where stderr goes:
- a terminal: a bar (tqdm) with bytes, rate, elapsed and, where the size is known, percent and time left;
- anything else (a Job's log): plain JSON log lines, no control codes, every DBB_PROGRESS_INTERVAL seconds
  (default 10) and once when the phase ends. `kubectl dbb --wait` reads them from the Pod's log:

      {"event": "progress", "phase": "restore", "file": "...", "bytes": 1048576, "total": 52428800,
       "elapsed": 10.0, "rate": 104857.6, "level": "info", "timestamp": "..."}
      {"event": "progress", "phase": "restore", ..., "done": true}

`total` is null where the size is not known ahead (a dump). Phases: dump, verify, restore, decrypt.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

import structlog
from tqdm import tqdm

__all__ = ["INTERVAL_VARIABLE", "advance", "phase"]

log = structlog.get_logger("dbb-backup")

INTERVAL_VARIABLE: Final = "DBB_PROGRESS_INTERVAL"
DEFAULT_INTERVAL: Final = 10.0


class _Phase:
    def __init__(self, name: str, total: int | None, file: str | None, interval: float, terminal: bool) -> None:
        self.name, self.total, self.file = name, total, file
        self.bytes = 0
        self._interval = interval
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._bar: tqdm[Any] | None = None
        if terminal:
            self._bar = tqdm(
                total=total,
                desc=name if file is None else f"{name} {file}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                mininterval=min(interval, 0.5),
                dynamic_ncols=True,
            )

    def add(self, count: int) -> None:
        with self._lock:
            self.bytes += count
            if self._bar is not None:
                self._bar.update(count)
                return
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                self._report(now)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
            else:
                self._report(time.monotonic(), done=True)

    def _report(self, now: float, *, done: bool = False) -> None:
        elapsed = now - self._started
        rate = self.bytes / elapsed if elapsed > 0 else 0.0
        fields: dict[str, object] = {"phase": self.name, "bytes": self.bytes, "total": self.total}
        if self.file is not None:
            fields["file"] = self.file
        fields |= {"elapsed": round(elapsed, 3), "rate": round(rate, 1)}
        if done:
            fields["done"] = True
        log.info("progress", **fields)


_active: list[_Phase] = []


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_VARIABLE, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


@contextlib.contextmanager
def phase(name: str, *, total: int | None = None, file: str | None = None) -> Iterator[None]:
    """Count the bytes of `name` until the block ends (also when it fails: the last report says how far it got)."""
    current = _Phase(name, total, file, _interval(), sys.stderr.isatty())
    _active.append(current)
    try:
        yield
    finally:
        _active.remove(current)
        current.close()


def advance(count: int) -> None:
    """`count` more bytes for the innermost phase; nothing outside one."""
    if _active and count:
        _active[-1].add(count)
