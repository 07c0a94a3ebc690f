"""Per-DatabaseBackup metrics, read from the cache at scrape time.

Nothing is kept per object between scrapes but the one value that costs schedule math (when the next backup was
due): each scrape walks the DatabaseBackups the reconciler already caches and reads their status. So a series
exists exactly as long as its DatabaseBackup does, and a reconcile pays nothing for metrics. docs/metrics.md
describes each series.

At 10,000 DatabaseBackups that is 110,000 series. prometheus_client's collectors build an object per sample and the
whole page in memory, in one go on the event loop: 1.1 s and twice the memory of the cache, measured
(tests/bench/bench_metrics.py). So this writes the text exposition format itself, family by family, in pieces that
the health port streams with a yield to the event loop between them.

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

from common.schedule import ScheduleError, parse_schedule, within_window
from common.statefulset import facts
from reconciler.world import parse_time

__all__ = ["FAMILIES", "BackupMetrics"]

# (name, help): every family is a gauge labelled namespace and name, but the first, which adds more labels.
FAMILIES: Final = (
    ("dbb_backup_info", "1 for each DatabaseBackup, with its engine, storage kind and schedule"),
    ("dbb_backup_last_success_timestamp_seconds", "When the last successful backup finished"),
    ("dbb_backup_last_failure_timestamp_seconds", "When the last failed backup ended"),
    ("dbb_backup_overdue_seconds", "Seconds since the slot that should have produced a backup"),
    ("dbb_backup_next_timestamp_seconds", "When the next backup is due"),
    ("dbb_backup_last_size_bytes", "Size of the last successful backup"),
    ("dbb_backup_last_duration_seconds", "How long the last successful backup took"),
    ("dbb_backup_kept", "Backups retention kept after the last successful run"),
    ("dbb_backup_kept_bytes", "Size of the backups retention kept, together"),
    ("dbb_backup_consecutive_failures", "Failed runs since the last successful one"),
    ("dbb_backup_suspended", "1 while the schedule is suspended"),
    ("dbb_verification_last_timestamp_seconds", "When the last verification finished"),
    ("dbb_verification_last_passed", "1 if the last verification passed, 0 if it failed"),
    ("dbb_restore_drill_last_duration_seconds", "How long the last restore drill took to restore and check a backup"),
    ("dbb_restore_drill_last_timestamp_seconds", "When the last restore drill finished"),
    ("dbb_restore_drill_last_passed", "1 if the last restore drill passed, 0 if it failed"),
    ("dbb_continuous_ready", "With spec.continuous: 1 while its archiver runs and answers, else 0"),
    ("dbb_continuous_lag_seconds", "With spec.continuous: how far the archive was behind the server, last reported"),
    ("dbb_continuous_max_lag_seconds", "With spec.continuous: its maxLagSeconds, the lag it promises to stay under"),
    ("dbb_continuous_recoverable_until_timestamp_seconds", "With spec.continuous: the newest second archived"),
)
PROTECTED: Final = "dbb_database_protected"
PROTECTED_HELP: Final = "1 if a DatabaseBackup that is not suspended backs up this database StatefulSet, else 0"
_DURATION: Final = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?$")
_PIECE: Final = 1000  # lines per piece of the page
_TURN: Final = 200  # DatabaseBackups read between two turns of the event loop (a cold one costs ~0.1 ms)
_SPANS_PER_SCHEDULE: Final = 8  # the spans between two slots kept per (schedule, time zone)
_SPANS: Final = 20_000  # (schedule, time zone) pairs kept before the spans are found again

# (uid, spec.schedule, spec.timeZone, the time it counts from) -> the first slot after it, as a timestamp
_Due = tuple[str, str, str, str]
# One DatabaseBackup's labels (rendered) and its value in each family after the first (None: no sample)
_Row = tuple[str, str, tuple[float | None, ...]]


class BackupMetrics:
    """Empty until the controller gives it its cache (`read_from`): a standby replica exports no series.

    A reconciler that watches several namespaces runs a controller per namespace, each with its own caches: each
    gives its own under its `part` (its namespace), and a scrape reads them all."""

    def __init__(self) -> None:
        self._objects: dict[str | None, Callable[[], Iterable[Mapping[str, Any]]]] = {}
        self._restores: dict[str | None, Callable[[], Iterable[Mapping[str, Any]]]] = {}
        self._databases: dict[str | None, Callable[[], Iterable[Mapping[str, Any]]]] = {}
        self._clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._due: dict[_Due, float | None] = {}
        self._covered: set[tuple[str, str]] = set()  # (namespace, databaseName) of the last scrape's DatabaseBackups
        self._spans: dict[tuple[str, str, float], list[tuple[float, float]]] = {}

    def read_from(
        self,
        objects: Callable[[], Iterable[Mapping[str, Any]]],
        clock: Callable[[], datetime],
        part: str | None = None,
    ) -> None:
        """`objects` gives the cached DatabaseBackups (of `part`: a namespace, None for all); `clock` the
        controller's now."""
        self._objects[part], self._clock, self._due = objects, clock, {}

    def restores_from(self, restores: Callable[[], Iterable[Mapping[str, Any]]], part: str | None = None) -> None:
        """`restores` gives the cached DatabaseRestores: a restore that succeeded is a restore drill of its source
        too, its measured time (`status.restoreSeconds`) the drill's duration, if it is newer than the last check's."""
        self._restores[part] = restores

    def databases_from(self, statefulsets: Callable[[], Iterable[Mapping[str, Any]]], part: str | None = None) -> None:
        """`statefulsets` gives the cached StatefulSets: each that is a database (as defaulting recognises one)
        gets `dbb_database_protected`."""
        self._databases[part] = statefulsets

    @staticmethod
    def _all(sources: Mapping[str | None, Callable[[], Iterable[Mapping[str, Any]]]]) -> list[Mapping[str, Any]]:
        return [obj for source in list(sources.values()) for obj in list(source())]

    def _coverage(self, covered: set[tuple[str, str]]) -> Iterator[bytes]:
        """`dbb_database_protected`: 1 for each database StatefulSet that a DatabaseBackup which is not suspended
        backs up (`covered`: (namespace, spec.databaseName)), else 0."""
        lines = [f"# HELP {PROTECTED} {PROTECTED_HELP}", f"# TYPE {PROTECTED} gauge"]
        for obj in self._all(self._databases):
            metadata = obj.get("metadata") or {}
            namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
            engine = facts(obj, namespace).engine
            if engine is None:
                continue  # not a database we back up
            value = 1.0 if (namespace, name) in covered else 0.0
            lines.append(
                f'{PROTECTED}{{engine="{engine}",namespace="{_escape(namespace)}",statefulset="{_escape(name)}"}} '
                f"{value!r}"
            )
            if len(lines) >= _PIECE:
                yield ("\n".join(lines) + "\n").encode()
                lines = []
        yield ("\n".join(lines) + "\n").encode()

    def _restored(self) -> dict[tuple[str, str], tuple[float, float]]:
        """{(namespace, source DatabaseBackup): (when, seconds)} of the newest succeeded DatabaseRestore of each."""
        newest: dict[tuple[str, str], tuple[float, float]] = {}
        for obj in self._all(self._restores):
            status = obj.get("status") or {}
            seconds = status.get("restoreSeconds")
            finished = _timestamp(status.get("completionTime"))
            if status.get("phase") != "Succeeded" or finished is None or not isinstance(seconds, int | float):
                continue
            source = ((obj.get("spec") or {}).get("source") or {}).get("databaseBackup")
            key = (str((obj.get("metadata") or {}).get("namespace")), str(source))
            if key not in newest or newest[key][0] < finished:
                newest[key] = (finished, float(seconds))
        return newest

    def exposition(self) -> Iterator[bytes]:
        """The page, in the text exposition format (version 0.0.4), in pieces of about a thousand lines; an empty
        piece after each 200 DatabaseBackups read, so that the first scrape after a start (which computes every
        due slot) gives the event loop its turns too."""
        rows: list[_Row] = []
        for chunk in self._rows():
            rows += chunk
            yield b""
        for index, (name, text) in enumerate(FAMILIES):
            lines = [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
            for labels, info, values in rows:
                if index == 0:
                    lines.append(f"{name}{{{labels},{info}}} 1.0")
                elif (value := values[index - 1]) is not None:
                    lines.append(f"{name}{{{labels}}} {value!r}")
                if len(lines) >= _PIECE:
                    yield ("\n".join(lines) + "\n").encode()
                    lines = []
            if lines:
                yield ("\n".join(lines) + "\n").encode()
        yield from self._coverage(self._covered)

    def _rows(self) -> Iterator[list[_Row]]:
        now = self._clock().timestamp()
        seen: dict[_Due, float | None] = {}
        rows: list[_Row] = []
        restored = self._restored()
        self._covered = covered = set()
        for obj in self._all(self._objects):
            if len(rows) == _TURN:
                yield rows
                rows = []
            metadata = obj.get("metadata") or {}
            spec = obj.get("spec") or {}
            status = obj.get("status") or {}
            labels = f'name="{_escape(metadata.get("name"))}",namespace="{_escape(metadata.get("namespace"))}"'
            storage = spec.get("storage") or {}
            kind = "s3" if isinstance(storage, Mapping) and storage.get("s3") else "persistentVolumeClaim"
            schedule, zone = str(spec.get("schedule") or ""), str(spec.get("timeZone") or "Etc/UTC")
            window = str(spec.get("window") or "")
            info = (
                f'engine="{_escape(spec.get("engine"))}",schedule="{_escape(schedule)}",storage="{kind}",'
                f'time_zone="{_escape(zone)}",window="{_escape(window)}"'
            )
            suspended = spec.get("suspend") is True
            if not suspended:
                covered.add((str(metadata.get("namespace")), str(spec.get("databaseName"))))
            success = _timestamp(status.get("lastBackupTime"))
            last = status.get("lastBackup") or {}
            size = float(last["size"]) if success is not None and isinstance(last.get("size"), int) else None
            took = _seconds(last.get("duration")) if success is not None else None
            kept = float(last["kept"]) if success is not None and isinstance(last.get("kept"), int) else None
            kept_bytes = (
                float(last["keptBytes"]) if success is not None and isinstance(last.get("keptBytes"), int) else None
            )
            verification = status.get("lastVerification") or {}
            checked = _timestamp(verification.get("time"))
            passed = (1.0 if verification.get("result") == "Passed" else 0.0) if checked is not None else None
            drills = status.get("restoreDrills")
            drill = drills[0] if isinstance(drills, list) and drills and isinstance(drills[0], Mapping) else {}
            drilled = _timestamp(drill.get("time"))
            drill_seconds = drill.get("seconds") if isinstance(drill.get("seconds"), int | float) else None
            drill_passed = drill.get("result") == "Passed"
            restore = restored.get((str(metadata.get("namespace")), str(metadata.get("name"))))
            if restore is not None and (drilled is None or restore[0] > drilled):
                (drilled, drill_seconds), drill_passed = restore, True
            archiving = isinstance(spec.get("continuous"), Mapping)
            continuous = status.get("continuous") if archiving else None
            continuous = continuous if isinstance(continuous, Mapping) else {}
            lag = continuous.get("lagSeconds")
            max_lag = (spec.get("continuous") or {}).get("maxLagSeconds") if archiving else None
            overdue: float | None = 0.0
            if not suspended:
                since = str(status.get("lastBackupTime") or metadata.get("creationTimestamp") or "")
                uid = str(metadata.get("uid") or "")
                key = (uid, f"{schedule}/{window}", zone, since)
                if key in self._due:
                    due = seen[key] = self._due[key]
                else:
                    due = seen[key] = self._first_slot_after(schedule, zone, since, window, uid)
                overdue = max(0.0, now - due) if due is not None else None
            values = (
                success,
                _timestamp((status.get("lastFailure") or {}).get("time")),
                overdue,
                _timestamp(status.get("nextBackupTime")),
                size,
                took,
                kept,
                kept_bytes,
                float(status.get("consecutiveFailures") or 0),
                1.0 if suspended else 0.0,
                checked,
                passed,
                float(drill_seconds) if drilled is not None and drill_seconds is not None else None,
                drilled,
                (1.0 if drill_passed else 0.0) if drilled is not None else None,
                (1.0 if continuous.get("ready") is True else 0.0) if archiving else None,
                float(lag) if isinstance(lag, int | float) and not isinstance(lag, bool) else None,
                float(max_lag if isinstance(max_lag, int) else 60) if archiving else None,
                _timestamp(continuous.get("recoverableUntil")),
            )
            rows.append((labels, info, values))
        self._due = seen  # what a deleted or changed object needed goes with it
        if len(self._spans) > _SPANS:
            self._spans.clear()
        yield rows

    def _first_slot_after(self, schedule: str, zone: str, since: str, window: str = "", uid: str = "") -> float | None:
        """The schedule's first slot after `since`. Objects of one schedule whose last backup fell between the same
        two slots owe the same one: once `next_after(a)` is `slot`, no slot lies in (a, slot), so every moment in
        [a, slot) owes `slot` too. Each (schedule, time zone) keeps the few spans it found, and a fleet on one
        schedule computes its slot a handful of times, not once per object. With a window, per offset in it."""
        moment = parse_time(since)
        if moment is None:
            return None
        try:
            slots = within_window(parse_schedule(schedule, zone), window, uid)
        except (ScheduleError, ValueError):
            return None  # not a schedule the reconciler runs (its status says Invalid): nothing is owed
        at = moment.timestamp()
        spans = self._spans.setdefault((schedule, zone, slots.offset.total_seconds()), [])
        for low, slot in spans:
            if low <= at < slot:
                return slot
        found = slots.next_after(moment).timestamp()
        for index, (low, slot) in enumerate(spans):
            if slot == found:
                spans[index] = (min(low, at), slot)
                return found
        spans.append((at, found))
        del spans[:-_SPANS_PER_SCHEDULE]
        return found


def _escape(value: object) -> str:
    """A label value as the text format writes it."""
    text = "" if value is None else str(value)
    if "\\" in text or '"' in text or "\n" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


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
