"""The cost of per-DatabaseBackup metrics (reconciler.backup_metrics): scrape time and memory at 1,000, 5,000 and
10,000 DatabaseBackups, against the same run without them.

Each side runs in a fresh process that builds the cache the reconciler holds of N DatabaseBackups (the shape of a
real object after a few runs: spec, status with conditions, last backup, last failure, last verification, five
restore drills; 120 pairs of daily schedule and time zone, each object's last backup ending at its own second in the
last 20 hours, so each object's due slot is looked up and the first scrape finds them) and the reconciler's
Metrics, then scrapes the page as the health port serves it (`Metrics.exposition`; its pieces joined here) five
times. "Without" is the same process whose per-object metrics were never given the cache: only the operator-wide
series. Memory is the process's peak RSS (`ru_maxrss`), which holds the cache too: the reconciler's Job and Pod
caches are not in it, so the ratio is larger here than in a real reconciler, never smaller.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.bench.results import table

SIZES = tuple(int(s) for s in os.environ.get("BENCH_METRICS_SIZES", "1000,5000,10000").split(","))
SCRAPES = 5
ZONES = ("Etc/UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe")


def cached(index: int, now: datetime) -> dict[str, Any]:
    """The i-th DatabaseBackup as the reconciler caches it."""
    name, namespace = f"db-{index:05d}", f"team-{index % 50:02d}"
    # Each object's last backup ended at its own second, within the last 20 hours.
    done = now - timedelta(hours=index % 20, seconds=(index * 37) % 900)

    def at(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseBackup",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"00000000-0000-4000-8000-{index:012d}",
            "resourceVersion": str(100000 + index),
            "generation": 1,
            "creationTimestamp": "2026-11-01T00:00:00Z",
        },
        "spec": {
            "databaseName": name,
            "schedule": f"{index % 60} {index % 24} * * *",
            "timeZone": ZONES[index % len(ZONES)],
            "engine": "PostgreSQL",
            "connection": {
                "host": f"{name}.{namespace}.svc",
                "port": 5432,
                "databases": ["app"],
                "credentialsSecret": {"name": f"{name}-credentials", "passwordKey": "password"},
            },
            "storage": {"persistentVolumeClaim": {"claimName": f"{name}-backups"}},
            "backupPath": f"/backups/{name}",
            "retention": {"keepLast": 7},
            "verify": {"schedule": "0 4 * * 0"},
        },
        "status": {
            "phase": "Succeeded",
            "lastBackupTime": at(done),
            "inProgress": False,
            "lastScheduleTime": at(done - timedelta(minutes=1)),
            "nextBackupTime": at(done + timedelta(days=1)),
            "lastBackup": {
                "file": f"/backups/{name}/{name}-20261206T020000Z.dump.gz",
                "size": 1_000_000 + index,
                "sha256": f"{index:064x}",
                "duration": "42.1s",
                "completionTime": at(done),
            },
            "lastFailure": {"time": at(done - timedelta(days=3)), "reason": "DumpFailed", "message": "x" * 120},
            "consecutiveFailures": 0,
            "active": [],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Scheduled",
                    "message": "",
                    "lastTransitionTime": at(done),
                },
                {
                    "type": "BackupSucceeded",
                    "status": "True",
                    "reason": "Succeeded",
                    "message": "",
                    "lastTransitionTime": at(done),
                },
            ],
            "observedGeneration": 1,
            "lastVerification": {
                "time": at(done - timedelta(days=1)),
                "result": "Passed",
                "job": f"{name}-verify-1",
                "backups": [
                    {"file": f"/backups/{name}/{name}-2026120{d}T020000Z.dump.gz", "result": "Passed"}
                    for d in range(1, 4)
                ],
            },
            "restoreDrills": [
                {
                    "time": at(done - timedelta(days=d)),
                    "file": f"/backups/{name}/{name}-2026120{d}T020000Z.dump",
                    "result": "Passed",
                    "seconds": 40.0 + d,
                    "tables": 12,
                    "rows": 1_000_000,
                    "queries": 2,
                    "job": f"{name}-v{d}",
                }
                for d in range(1, 6)
            ],
        },
    }


def child(size: int, with_series: bool) -> dict[str, float]:
    """Run in a fresh process: build the cache and the metrics, scrape five times."""
    from reconciler.metrics import Metrics

    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    store = {(f"team-{i % 50:02d}", f"db-{i:05d}"): cached(i, now) for i in range(size)}
    metrics = Metrics()
    if with_series:
        metrics.backups.read_from(lambda: store.values(), lambda: now)
    times, sizes, longest = [], [], 0.0
    for _ in range(SCRAPES):
        started = last = time.perf_counter()
        size = series = 0
        for piece in metrics.exposition():  # streamed, as the health port sends it
            size += len(piece)
            series += piece.count(b"\n") - piece.count(b"\n#") - piece.startswith(b"#")
            longest = max(longest, time.perf_counter() - last)  # the event loop's longest wait for its turn
            last = time.perf_counter()
        times.append(time.perf_counter() - started)
        sizes.append(size)
    return {
        "first": times[0],
        "warm": sorted(times[1:])[len(times[1:]) // 2],
        "bytes": float(sizes[-1]),
        "longest": longest,
        "series": float(series),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run(size: int, with_series: bool) -> dict[str, float]:
    code = (
        "import json, sys; from tests.bench.bench_metrics import child; "
        f"print(json.dumps(child({size}, {with_series})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> str:
    rows, verdicts = [], []
    for size in SIZES:
        without, with_ = _run(size, False), _run(size, True)
        # Checked before it is reported: every DatabaseBackup has its series, the baseline none.
        assert with_["series"] >= 13 * size, with_
        assert without["series"] < 100, without
        memory = with_["rss_mb"] / without["rss_mb"]
        rows.append(
            [
                f"{size:,}",
                f"{int(with_['series']):,}",
                f"{with_['bytes'] / 1e6:.1f}",
                f"{without['warm'] * 1000:.1f}",
                f"{with_['first'] * 1000:.0f}",
                f"{with_['warm'] * 1000:.0f}",
                f"{with_['longest'] * 1000:.0f}",
                f"{without['rss_mb']:.0f}",
                f"{with_['rss_mb']:.0f}",
                f"{memory:.3f}",
            ]
        )
        if size == max(SIZES):
            verdicts.append(
                f"- scrape at {size:,}: {with_['warm']:.2f} s warm, {with_['first']:.2f} s first (target < 1 s): "
                + ("met" if max(with_["warm"], with_["first"]) < 1 else "MISSED")
            )
        verdicts.append(
            f"- memory at {size:,}: {memory:.3f} × without (target ≤ 1.15): " + ("met" if memory <= 1.15 else "MISSED")
        )
    header = [
        "DatabaseBackups",
        "series",
        "scrape MB",
        "scrape ms, without",
        "scrape ms, with (first)",
        "scrape ms, with (warm)",
        "longest piece ms",
        "peak RSS MB, without",
        "peak RSS MB, with",
        "RSS × without",
    ]
    intro = (
        f"The reconciler's /metrics page (`Metrics.exposition`), {SCRAPES} scrapes per process; the first finds "
        "each object's due slot (computed once per span between two slots of a schedule, see "
        "`BackupMetrics._first_slot_after`), the others reuse it. Each side in a fresh process holding the same "
        "cache. The page is streamed in pieces with a turn of the event loop between them: the longest piece is "
        "the longest the reconciler's loop waits on a scrape."
    )
    return "\n".join([intro, "", table(header, rows), "", *verdicts])
