"""Which of an owner's backups retention keeps, and why (pure: names and manifests' verdicts in, a plan out).

Rules, each optional and all at once ("a backup kept by any rule is kept"), over this owner's verified backups only:
- `last N`: the N newest;
- `daily N`, `weekly N`, `monthly N`, `yearly N`: the newest backup of each of the N most recent days (ISO weeks,
  months, years) that have one, in the DatabaseBackup's own time zone, so that "the backup of Monday" is Monday
  where its team lives;
- `max age`: a cap, not a rule that keeps: a backup older than it is deleted whatever the counts say. Compliance
  asks for "7 daily, 4 weekly, 12 monthly, and nothing older than a year"; a rule that keeps everything younger
  than an age is what the counts already say.
- `binlog window W` (point-in-time recovery): the newest verified backup taken at or before now - W, and every
  verified backup after it, so that every second of the window has a backup before it to replay the archived
  binlog from. It is applied after `max age` and overrides it: a window longer than the cap keeps what the window
  needs (a point-in-time restore the window promises must not fail for a cap). A backup's time is the one in its
  name, its start, unless the caller says when each became usable (`ready`: a PostgreSQL base backup restores
  only to instants after its end). Without a backup at or before now - W, every verified backup is kept.
Whatever the rules say, the newest verified backup is never deleted (a schedule whose backups all aged out keeps the
one that restores), nor the backup this run just wrote. An unverified backup (its read-back failed, or it was never
checked) counts for nothing: it goes once it is older than the oldest verified backup kept, and only when the plan
deletes a verified backup too, so that a short history is never thinned. Files of other owners never appear here:
the caller passes only this owner's (see `runner.backup.owned_backups`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from runner.manifest import Manifest
from runner.naming import TIMESTAMP_FORMAT, BackupName, parse_backup_name

# Which names are backups of a prefix, and which backup: dumps by default (naming.parse_backup_name).
Parse = Callable[[str, str], BackupName | None]

__all__ = ["RULES", "Plan", "Policy", "in_window", "parse_age", "plan", "retention_plan"]

# The reasons a backup is kept, in the order they are reported.
RULES: Final = ("last", "daily", "weekly", "monthly", "yearly", "window", "newest", "just written", "unverified")


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    max_age: timedelta | None = None
    time_zone: tzinfo = UTC
    binlog_window: timedelta | None = None

    @property
    def any(self) -> bool:
        """Whether retention deletes anything at all (without a rule, every backup stays)."""
        counts = (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_yearly)
        return any(counts) or self.max_age is not None or self.binlog_window is not None


@dataclass(frozen=True)
class Plan:
    delete: tuple[str, ...] = ()  # files, oldest first, each backup followed by its manifest when present
    kept: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # backup file -> the rules that keep it
    kept_bytes: int = 0  # the kept backups' sizes together, as their manifests record them (when given)
    # The kept backups, newest first, as the run's result lists them: (file, size, key id or None, rules).
    catalog: tuple[tuple[str, int, str | None, tuple[str, ...]], ...] = ()

    def counts(self) -> dict[str, int]:
        """How many backups each rule keeps (one backup may be kept by several)."""
        found: dict[str, int] = {}
        for reasons in self.kept.values():
            for reason in reasons:
                found[reason] = found.get(reason, 0) + 1
        return {rule: found[rule] for rule in RULES if rule in found}

    def listed(self, manifests: Mapping[str, Manifest]) -> Plan:
        """This plan with its catalog, from the kept backups' manifests ({file: manifest})."""
        kept = sorted((f for f in self.kept if f in manifests), key=lambda f: manifests[f].start, reverse=True)
        catalog = tuple((f, manifests[f].size, manifests[f].key_id, self.kept[f]) for f in kept)
        return replace(self, catalog=catalog)


_AGE: Final = re.compile(r"(?P<count>[1-9][0-9]{0,5})(?P<unit>[hdw])")
_UNITS: Final = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_age(text: str) -> timedelta:
    """`maxAge`: a whole number of hours, days or weeks (`36h`, `90d`, `52w`). Raises ValueError."""
    match = _AGE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a whole number of hours, days or weeks (such as 36h, 90d, 52w)")
    return int(match["count"]) * _UNITS[match["unit"]]


def moment(backup: BackupName) -> datetime:
    return datetime.strptime(backup.timestamp, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


_BUCKETS: Final[tuple[tuple[str, Callable[[datetime], object]], ...]] = (
    ("daily", lambda local: local.date()),
    ("weekly", lambda local: local.isocalendar()[:2]),
    ("monthly", lambda local: (local.year, local.month)),
    ("yearly", lambda local: local.year),
)


def plan(
    names: Iterable[str],
    prefix: str,
    policy: Policy,
    ours: Mapping[str, bool],
    *,
    now: datetime | None = None,
    protect: str | None = None,
    sizes: Mapping[str, int] | None = None,
    parse: Parse = parse_backup_name,
    ready: Mapping[str, datetime] | None = None,
) -> Plan:
    """What to delete of the backups of `prefix` in `names` that `ours` lists ({file: its manifest says verified}),
    and why each kept one stays. `now` is needed for `max_age` and `binlog_window` only; `sizes` ({file: bytes})
    for `kept_bytes`; `parse` says which names are backups; `ready` ({file: instant}) when each can first be
    restored to, for the window (default: its name's time)."""
    if policy.keep_last is not None and policy.keep_last < 1:
        raise ValueError("keep_last must be at least 1")
    present = set(names)
    backups = sorted(b for n in present if (b := parse(prefix, n)) is not None and b.file in ours)
    if not backups or not policy.any:
        return Plan(kept={b.file: () for b in backups}, kept_bytes=sum((sizes or {}).get(b.file, 0) for b in backups))
    verified = [b for b in backups if ours[b.file]]
    newest_first = verified[::-1]
    reasons: dict[str, list[str]] = {b.file: [] for b in backups}
    for backup in newest_first[: policy.keep_last or 0]:
        reasons[backup.file].append("last")
    counts = {"daily": policy.keep_daily, "weekly": policy.keep_weekly, "monthly": policy.keep_monthly}
    counts["yearly"] = policy.keep_yearly
    for rule, bucket in _BUCKETS:
        seen: set[object] = set()
        for backup in newest_first:
            if len(seen) >= counts[rule]:
                break
            key = bucket(moment(backup).astimezone(policy.time_zone))
            if key not in seen:
                seen.add(key)
                reasons[backup.file].append(rule)
    if policy.max_age is not None and now is not None:
        for backup in verified:
            if moment(backup) < now - policy.max_age:
                reasons[backup.file] = []
    if policy.binlog_window is not None and now is not None:
        for backup in in_window(verified, now - policy.binlog_window, ready):
            reasons[backup.file].append("window")
    if verified:
        reasons[verified[-1].file].append("newest")
    if protect is not None and protect in reasons:
        reasons[protect].append("just written")
    kept_verified = [b for b in verified if reasons[b.file]]
    dropped_verified = [b for b in verified if not reasons[b.file]]
    if dropped_verified and kept_verified:
        oldest_kept = kept_verified[0]
        for backup in backups:
            if not ours[backup.file] and backup > oldest_kept and not reasons[backup.file]:
                reasons[backup.file].append("unverified")
    elif not dropped_verified:
        for backup in backups:
            if not reasons[backup.file]:
                reasons[backup.file].append("unverified")
    delete: list[str] = []
    for backup in backups:
        if not reasons[backup.file]:
            delete.append(backup.file)
            if backup.manifest in present:
                delete.append(backup.manifest)
            if backup.drills in present:
                delete.append(backup.drills)
    kept = {b.file: tuple(r for r in RULES if r in reasons[b.file]) for b in backups if reasons[b.file]}
    return Plan(tuple(delete), kept, sum((sizes or {}).get(file, 0) for file in kept))


def in_window(
    verified: list[BackupName], edge: datetime, ready: Mapping[str, datetime] | None = None
) -> list[BackupName]:
    """The backups a window from `edge` on needs (oldest first in, oldest first out): the newest usable at or
    before `edge` (`ready`, else taken), and every one after it; all of them when none is that old."""
    usable = ready or {}
    before = [i for i, backup in enumerate(verified) if usable.get(backup.file, moment(backup)) <= edge]
    return verified[before[-1] if before else 0 :]


def retention_plan(
    names: Iterable[str], prefix: str, keep_last: int, ours: Mapping[str, bool], protect: str | None = None
) -> list[str]:
    """The files `plan` deletes with `last` as the only rule."""
    return list(plan(names, prefix, Policy(keep_last=keep_last), ours, protect=protect).delete)
