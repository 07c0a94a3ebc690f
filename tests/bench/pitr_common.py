"""What the point-in-time benchmarks of both engines share (`bench_pitr`, `bench_pitr_postgres`): the archiver's
memory read from /proc, its /status lag, percentiles, and the report's rows for ages and memory."""

from __future__ import annotations

import json
import math
import os
import threading
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tests.bench.bench_runner import run_pipeline
from tests.bench.results import table

# The same load on both engines: the writer's rows a second, for how long, how often the baseline's backups run.
RATE = 30
RPO_SECONDS = float(os.environ.get("DBB_BENCH_PITR_RPO_SECONDS", "180"))
BACKUP_EVERY = float(os.environ.get("DBB_BENCH_PITR_BACKUP_EVERY", "60"))
SAMPLES = 300
SEED = 24
HOUR_ROWS = int(os.environ.get("DBB_BENCH_PITR_HOUR_ROWS", str(RATE * 3600)))  # an hour of the writer's rate
ROUNDS = 3
MAX_LAG = 10.0
RPO_TARGET = MAX_LAG + 5
RSS_EVERY = 0.1
MEMORY_TARGET = 100
MB = 1 << 20


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def utc(text: str) -> float:
    """Unix seconds of an ISO 8601 time; one without an offset is UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def status_lag(port: int) -> float | None:
    """The archiver's own lagSeconds, from its /status endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as answer:
        lag: float | None = json.loads(answer.read())["lagSeconds"]
    return lag


class TreeRss(threading.Thread):
    """The peak of a process tree's summed PSS, and each process's VmHWM (by its name), read from /proc.

    PSS, not RSS: a child between fork and exec shares every page of the runner, and summed RSS would count them
    twice. Sampled every RSS_EVERY seconds, the sum can miss a peak shorter than that; VmHWM cannot."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.peak = 0
        self.samples = 0
        self.hwm: dict[str, int] = {}

    def run(self) -> None:
        while not self.stop.wait(RSS_EVERY):
            total = 0
            for pid in _tree(self.pid):
                name, hwm = _status(pid)
                total += _pss(pid)
                if hwm:
                    self.hwm[name] = max(self.hwm.get(name, 0), hwm)
            if total:
                self.peak = max(self.peak, total)
                self.samples += 1


def _tree(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                queue += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # it ended between two reads
    return found


def _status(pid: int) -> tuple[str, int]:
    """/proc/PID/status: its name and VmHWM in bytes (0 for a process that ended, or a zombie)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "?", 0
    fields = dict(line.partition(":")[::2] for line in lines)
    return fields.get("Name", "?").strip(), int(fields.get("VmHWM", "0 kB").split()[0]) * 1024


def _pss(pid: int) -> int:
    """/proc/PID/smaps_rollup's Pss in bytes (0 for a process that ended)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith("Pss:")), 0)


class LagPeak(threading.Thread):
    """The largest lag `read` reports (the archiver's /status lagSeconds), polled every half second."""

    def __init__(self, read: Callable[[], float | None]) -> None:
        super().__init__(daemon=True)
        self.read = read
        self.stop = threading.Event()
        self.peak = 0.0

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, self.read() or 0.0)


def baseline_rss(argv: list[str]) -> int:
    return run_pipeline([argv], dict(os.environ), None).tree_rss


def ages_row(label: str, ages: list[float], base: float | None) -> list[str]:
    """p50, p99, max, count, and p99 against `base` (None: this row is the baseline)."""
    p99 = nearest_rank(ages, 0.99)
    ratio = f"{p99 / base:.3f}" if base else "1.000 (baseline)"
    return [label, f"{nearest_rank(ages, 0.5):.2f}", f"{p99:.2f}", f"{max(ages):.2f}", str(len(ages)), ratio]


AGES_HEADER = ["what a loss at that instant would lose", "p50 s", "p99 s", "max s", "samples", "× baseline (p99)"]


def memory_section(title: str, runs: list[tuple[str, TreeRss]], python: int, helped: int) -> str:
    """The archiver's runner (VmHWM) and tree (summed PSS) in each of `runs` (what it was doing, its memory),
    against `python -c pass` and `dbb-backup --help`."""

    def row(label: str, measured: str, peak: int) -> list[str]:
        return [label, measured, f"{peak / MB:.0f}", f"{peak / python:.2f}", f"{peak / helped:.2f}"]

    def parts(memory: TreeRss) -> str:
        return ", ".join(f"{name} {hwm / MB:.0f}" for name, hwm in sorted(memory.hwm.items()))

    rows = [
        row("`python -c pass` (baseline)", "peak RSS (wait4)", python),
        row("`dbb-backup --help` (baseline)", "peak RSS (wait4)", helped),
    ]
    for during, memory in runs:
        rows.append(row(f"the archiver's runner, {during}", "peak RSS (VmHWM)", memory.hwm.get("dbb-backup", 0)))
        rows.append(row(f"the archiver's tree, {during}", "peak of summed PSS", memory.peak))
    tree = max(memory.peak for _, memory in runs)
    runner = max(memory.hwm.get("dbb-backup", 0) for _, memory in runs)
    verdict = f"archiver tree peak {tree / MB:.0f} MB, its runner's peak RSS {runner / MB:.0f} MB (target: both < "
    verdict += f"{MEMORY_TARGET} MB): " + ("met" if max(tree, runner) < MEMORY_TARGET * MB else "MISSED")
    notes = "each process's VmHWM, MB: " + "; ".join(f"{during}: {parts(memory)}" for during, memory in runs)
    header = ["process", "measured as", "MB", "× python -c pass", "× dbb-backup --help"]
    return f"{title}\n\n{table(header, rows)}\n\n- {notes}\n- {verdict}"
