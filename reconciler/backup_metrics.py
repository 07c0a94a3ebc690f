"""Per-DatabaseBackup metrics, read from the cache at scrape time.

Nothing is kept per object between scrapes but the one value that costs schedule math (when the next backup was
due): each scrape walks the DatabaseBackups the reconciler already caches and reads their status. So a series
exists exactly as long as its DatabaseBackup does, and a reconcile pays nothing for metrics. docs/metrics.md
describes each series.

Overdue, exactly: the slot that should have produced a backup and did not is the schedule's first firing after the
last successful backup finished (after the object's creation, if none has), in the object's own time zone and DST
rule (`common.schedule`). Until that instant the backup is not overdue, however long the schedule's interval: a
weekly schedule is not late on day two, and a night whose clock jumps never moves it. A suspended DatabaseBackup
is owed nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.schedule import ScheduleError, parse_schedule
from reconciler.world import parse_time

__all__ = ["BackupMetrics"]

_LABELS: Final = ["namespace", "name"]
_DURATION: Final = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?$")

# (uid, spec.schedule, spec.timeZone, the time it counts from) -> the first slot after it, as a timestamp
_Due = tuple[str, str, str, str]


class BackupMetrics(Collector):
    """Empty until the controller gives it its cache (`read_from`): a standby replica exports no series."""

    def __init__(self) -> None:
        self._objects: Callable[[], Iterable[Mapping[str, Any]]] = tuple
        self._clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._due: dict[_Due, float | None] = {}

    def read_from(self, objects: Callable[[], Iterable[Mapping[str, Any]]], clock: Callable[[], datetime]) -> None:
        """`objects` gives the cached DatabaseBackups; `clock` the controller's now."""
        self._objects, self._clock, self._due = objects, clock, {}

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # collected fresh at each scrape; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock().timestamp()
        info = GaugeMetricFamily(
            "dbb_backup_info",
            "1 for each DatabaseBackup, with its engine, storage kind and schedule",
            labels=[*_LABELS, "engine", "storage", "schedule", "time_zone"],
        )
        families = {
            key: GaugeMetricFamily(name, text, labels=_LABELS)
            for key, name, text in (
                ("success", "dbb_backup_last_success_timestamp_seconds", "When the last successful backup finished"),
                ("failure", "dbb_backup_last_failure_timestamp_seconds", "When the last failed backup ended"),
                ("overdue", "dbb_backup_overdue_seconds", "Seconds since the slot that should have produced a backup"),
                ("next", "dbb_backup_next_timestamp_seconds", "When the next backup is due"),
                ("size", "dbb_backup_last_size_bytes", "Size of the last successful backup"),
                ("duration", "dbb_backup_last_duration_seconds", "How long the last successful backup took"),
                ("failures", "dbb_backup_consecutive_failures", "Failed runs since the last successful one"),
                ("suspended", "dbb_backup_suspended", "1 while the schedule is suspended"),
                ("verified", "dbb_verification_last_timestamp_seconds", "When the last verification finished"),
                ("passed", "dbb_verification_last_passed", "1 if the last verification passed, 0 if it failed"),
            )
        }
        seen: dict[_Due, float | None] = {}
        for obj in list(self._objects()):
            metadata = obj.get("metadata") or {}
            labels = [str(metadata.get("namespace") or ""), str(metadata.get("name") or "")]
            spec = obj.get("spec") or {}
            status = obj.get("status") or {}
            storage = spec.get("storage") or {}
            kind = "s3" if isinstance(storage, Mapping) and storage.get("s3") else "persistentVolumeClaim"
            schedule, zone = str(spec.get("schedule") or ""), str(spec.get("timeZone") or "Etc/UTC")
            info.add_metric([*labels, str(spec.get("engine") or ""), kind, schedule, zone], 1)
            suspended = spec.get("suspend") is True
            families["suspended"].add_metric(labels, 1 if suspended else 0)
            families["failures"].add_metric(labels, float(status.get("consecutiveFailures") or 0))
            success = _timestamp(status.get("lastBackupTime"))
            if success is not None:
                families["success"].add_metric(labels, success)
            failure = _timestamp((status.get("lastFailure") or {}).get("time"))
            if failure is not None:
                families["failure"].add_metric(labels, failure)
            upcoming = _timestamp(status.get("nextBackupTime"))
            if upcoming is not None:
                families["next"].add_metric(labels, upcoming)
            last = status.get("lastBackup") or {}
            if success is not None and isinstance(last.get("size"), int):
                families["size"].add_metric(labels, float(last["size"]))
            if success is not None and (took := _seconds(last.get("duration"))) is not None:
                families["duration"].add_metric(labels, took)
            verification = status.get("lastVerification") or {}
            if (checked := _timestamp(verification.get("time"))) is not None:
                families["verified"].add_metric(labels, checked)
                families["passed"].add_metric(labels, 1 if verification.get("result") == "Passed" else 0)
            if suspended:
                families["overdue"].add_metric(labels, 0)
                continue
            since = str(status.get("lastBackupTime") or metadata.get("creationTimestamp") or "")
            key = (str(metadata.get("uid") or ""), schedule, zone, since)
            due = seen[key] = self._due[key] if key in self._due else _first_slot_after(schedule, zone, since)
            if due is not None:
                families["overdue"].add_metric(labels, max(0.0, now - due))
        self._due = seen  # what a deleted or changed object needed goes with it
        yield info
        yield from families.values()


def _first_slot_after(schedule: str, zone: str, since: str) -> float | None:
    moment = parse_time(since)
    if moment is None:
        return None
    try:
        return parse_schedule(schedule, zone).next_after(moment).timestamp()
    except (ScheduleError, ValueError):
        return None  # not a schedule the reconciler runs (its status says Invalid): nothing is owed


def _timestamp(text: object) -> float | None:
    moment = parse_time(text)
    return moment.timestamp() if moment is not None else None


def _seconds(text: object) -> float | None:
    """`3.2s`, `4m5s`, `1h2m3s` (as status writes durations) in seconds."""
    match = _DURATION.match(text) if isinstance(text, str) and text else None
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
