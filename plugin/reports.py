"""What `kubectl dbb status` and `kubectl dbb list` print, decided from the objects and `now` alone.

Everything here reads recorded status: the stored backups come from `status.backups`, which the operator records
after every run, so a user needs neither storage credentials nor a Secret to see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from common.constants import DEFAULT_TIME_ZONE
from common.schedule import ScheduleError, parse_schedule, within_window
from plugin.progress import format_bytes
from plugin.shapes import items, one_line, parse_time, part, text
from plugin.tables import age, duration, table

__all__ = ["EMPTY_LIST", "backups_table", "overdue", "problems", "status_table"]

EMPTY_LIST: Final = "no stored backups recorded yet; the list is recorded after the next backup run"

# A due run takes a moment to show up (the reconciler wakes at the slot, then creates the Job): no alarm for that.
OVERDUE_GRACE: Final = timedelta(minutes=1)
MESSAGE_LENGTH: Final = 120  # of each problem in the table; `kubectl describe dbb` has the whole message


def status_table(objects: Sequence[Mapping[str, Any]], now: datetime, *, all_namespaces: bool) -> str:
    headers = ["NAME", "DATABASE", "LAST BACKUP", "SCHEDULE", "OVERDUE", "LAST VERIFIED", "PROBLEM"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    ordered = sorted(objects, key=lambda o: (_meta(o).get("namespace") or "", _meta(o).get("name") or ""))
    for obj in ordered:
        spec, status = part(obj, "spec"), part(obj, "status")
        late = overdue(obj, now)
        row = [
            str(_meta(obj).get("name") or ""),
            str(spec.get("databaseName") or ""),
            age(parse_time(status.get("lastBackupTime")), now),
            str(spec.get("schedule") or ""),
            duration(late) if late is not None else "",
            age(parse_time(part(status, "lastVerification").get("time")), now),
            "; ".join(problems(obj, now)),
        ]
        if all_namespaces:
            row.insert(0, str(_meta(obj).get("namespace") or ""))
        rows.append(row)
    return table(headers, rows)


def overdue(obj: Mapping[str, Any], now: datetime) -> timedelta | None:
    """How long since the slot that should have produced a backup and did not, as the reconciler's
    dbb_backup_overdue_seconds counts it: the schedule's first firing after the last success (after creation, if
    none). None when nothing is owed: suspended, a run under way, not due yet, or a schedule that cannot be read."""
    spec, status = part(obj, "spec"), part(obj, "status")
    if spec.get("suspend") is True or status.get("inProgress") is True:
        return None
    since = parse_time(status.get("lastBackupTime")) or parse_time(_meta(obj).get("creationTimestamp"))
    if since is None:
        return None
    try:
        schedule = parse_schedule(str(spec.get("schedule") or ""), str(spec.get("timeZone") or DEFAULT_TIME_ZONE))
        schedule = within_window(schedule, text(spec.get("window")), str(_meta(obj).get("uid") or ""))
    except ScheduleError:
        return None
    late = now - schedule.next_after(since)
    return late if late > OVERDUE_GRACE else None


def problems(obj: Mapping[str, Any], now: datetime) -> list[str]:
    """What is wrong, most urgent first: a configuration that cannot run, a cap holding the run back, the last run
    failed, no backup when one was due, stored backups that failed their check; and a suspended schedule."""
    spec, status = part(obj, "spec"), part(obj, "status")
    found = []
    ready = next((c for c in items(status.get("conditions")) if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "False":
        found.append(_short(f"{ready.get('reason') or 'NotReady'}: {ready.get('message') or ''}"))
    if status.get("phase") == "Waiting":
        found.append(_short(f"Waiting: {part(status, 'waiting').get('cap') or 'held back by a cap'}"))
    failure = part(status, "lastFailure")
    streak = status.get("consecutiveFailures")
    if failure and isinstance(streak, int) and streak > 0:
        times = f" ({streak} runs in a row)" if streak > 1 else ""
        found.append(_short(f"{failure.get('reason') or 'Failed'}: {failure.get('message') or ''}") + times)
    late = overdue(obj, now)
    if late is not None:
        found.append(f"overdue by {duration(late)}")
    verification = part(status, "lastVerification")
    if verification.get("result") == "Failed":
        bad = next((b for b in items(verification.get("backups")) if b.get("result") == "Failed"), {})
        what = bad.get("reason") or verification.get("reason") or "Failed"
        detail = bad.get("message") or verification.get("message") or ""
        found.append(_short(f"verification {what}: {detail}"))
    if spec.get("suspend") is True:
        found.append("suspended")
    return found


def backups_table(status: Mapping[str, Any], now: datetime) -> str:
    """The stored backups, newest first, from `status.backups`; EMPTY_LIST when none are recorded."""
    stored = items(status.get("backups"))
    if not stored:
        return EMPTY_LIST
    checked = {str(b.get("file")): b for b in items(part(status, "lastVerification").get("backups")) if b.get("file")}
    checked_at = parse_time(part(status, "lastVerification").get("time"))
    rows = []
    for backup in stored:
        size = backup.get("size")
        key = str(backup.get("keyId") or "") if backup.get("encrypted") is True else "-"
        rows.append(
            [
                str(backup.get("time") or ""),
                format_bytes(size) if isinstance(size, int) and not isinstance(size, bool) else "",
                key or "(no key id)",
                ",".join(str(rule) for rule in backup.get("keptBy") or []),
                _verified(checked.get(str(backup.get("file"))), checked_at, now),
            ]
        )
    lines = table(["TIME", "SIZE", "KEY", "KEPT BY", "VERIFIED"], rows)
    omitted = status.get("backupsOmitted")
    if isinstance(omitted, int) and omitted > 0:
        lines += f"\n... and {omitted} older backup{'s' if omitted != 1 else ''} not listed"
    return lines + _recoverable(part(status, "continuous"))


def _recoverable(continuous: Mapping[str, Any]) -> str:
    """With continuous archiving: the seconds a point-in-time restore (`restore --at`) reaches, and the archiver's
    state."""
    if not continuous:
        return ""
    first, last = continuous.get("recoverableFrom"), continuous.get("recoverableUntil")
    reach = f"from {first} to {last}" if first and last else "nothing yet (no backup since archiving began)"
    lag, updated = continuous.get("lagSeconds"), continuous.get("updated")
    # The lag the operator last saw, and when: the archive's reach moves on between two looks.
    when = f" at {updated}" if isinstance(updated, str) and updated else ""
    state = f"archive {lag:.0f}s behind{when}" if isinstance(lag, int | float) and not isinstance(lag, bool) else ""
    if continuous.get("ready") is not True:
        why = continuous.get("reason") or "not running"
        state = f"archiver {why}: {_short(str(continuous.get('message') or ''))}".rstrip(": ")
    return f"\npoint in time (--at): {reach}" + (f"; {state}" if state else "")


def _verified(check: Mapping[str, Any] | None, checked_at: datetime | None, now: datetime) -> str:
    """Every stored backup verified when it was written (a backup exists for readers only once its manifest says
    so); a later scheduled check of it is newer evidence."""
    if check is None:
        return "when written"
    when = f" {age(checked_at, now)} ago" if checked_at is not None else ""
    result = str(check.get("result") or "")
    if result == "Failed":
        return f"Failed{when} ({check.get('reason') or 'VerifyFailed'})"
    return f"{result}{when}"


def _short(message: str) -> str:
    line = one_line(message)
    return line if len(line) <= MESSAGE_LENGTH else line[: MESSAGE_LENGTH - 1] + "…"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return part(obj, "metadata")
