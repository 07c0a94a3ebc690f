"""The one cron schedule parser, used by the webhook (to validate) and the reconciler (to fire).

What it accepts is what a Kubernetes CronJob accepts: robfig/cron v3 `ParseStandard` plus the API server's ban on
`TZ` in the schedule. Five fields (minute hour day-of-month month day-of-week), the descriptors `@yearly @annually
@monthly @weekly @daily @midnight @hourly`, month and day names (three letters, any case), `*` and `?`, lists,
ranges and steps. When it fires is when a CronJob fires, including robfig's day rule: if day-of-month or
day-of-week is a star (`*`, `?`, or `*/1`, all of which set robfig's "star bit") both must match; otherwise either
may.

Where we deliberately differ from a CronJob, each for a reason:
- `@every <duration>` is refused: it fires relative to the controller's last run rather than the clock, which
  suits no backup policy, and the API contract lists only the descriptors above.
- `*-5` (robfig silently reads it as `*`) is refused: the user meant something else.
- Schedules that can never fire (`0 0 31 2 *`) are refused; a CronJob accepts them and never runs.
- Across DST changes we follow Vixie/ISC cron's long-standing rule, by the hour field:
  - A schedule whose hour is `*` or a step (`0 * * * *`, `*/5 * * * *`, `0 */2 * * *`, `@hourly`) repeats within a
    day and follows the clock: it fires whenever the wall clock shows one of its times. When the clocks go back it
    fires in the repeated hour again (hourly backups stay an hour apart in real time, with no hour left without a
    backup); when they go forward, the wall times that do not exist do not fire, so nothing bunches up at the jump.
  - Any other schedule (a fixed hour or list of hours: `30 2 * * *`, `0 1,13 * * *`) fires exactly once per
    nominal (wall-clock) slot: a slot in the repeated hour at its first occurrence only, and a slot that does not
    exist at the moment the clocks jump (several such slots collapse into that one firing). A daily backup at 02:30
    neither runs twice on the night the clocks go back nor is skipped on the night they go forward.
  A CronJob (robfig/cron in Go's time package) does neither: it fires twice in the repeated hour for fixed-hour
  schedules and skips the missing hour's slots, while `0 * * * *` goes two hours without a run when the clocks go
  back.

A window (`spec.window`) spreads a fleet that shares one schedule: each DatabaseBackup runs at a fixed offset after
each firing, `window_offset` (a whole number of minutes below the window's length, from a hash of its uid), so the
same object keeps the same time across restarts and replicas, and the fleet's runs fall evenly across the window.
The offset is real time, added to the firing's instant: a window is as long on a DST night as on any other. Shifting
every firing by the same amount keeps one run per firing: exactly once per window instance, as for plain slots.

croniter does the calendar walk, over naive wall-clock times: we hand it a canonical expression (explicit lists,
and `*` exactly where robfig has its star bit) because croniter alone differs from robfig (it accepts `L W # H`,
six fields, day-of-week 7 and wrapping ranges, and treats `*/1` as a restriction). The mapping from wall-clock
slots to instants is ours.
"""

from __future__ import annotations

import calendar
import copy
import functools
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = [
    "MAX_WINDOW",
    "Schedule",
    "ScheduleError",
    "parse_schedule",
    "parse_time",
    "parse_time_zone",
    "parse_window",
    "rfc3339",
    "window_offset",
    "within_window",
]

MAX_WINDOW = timedelta(days=7)
_WINDOW = re.compile(r"(?:(?P<hours>[0-9]{1,3})h)?(?:(?P<minutes>[0-9]{1,5})m)?")
_WINDOW_GAPS = 60  # firings looked at for the shortest gap a window must fit in


@functools.lru_cache(maxsize=1024)
def _parsed(cron: str) -> croniter:
    """`cron` parsed once: croniter expands an expression into every value of every field, about 0.8 ms for
    `* * * * *`, and a schedule walks several times per reconcile."""
    return croniter(cron, datetime(2000, 1, 1))


def _walk(cron: str, start: datetime) -> croniter:
    """A walk through `cron`'s times from `start`: a copy of the parsed expression (its expanded fields are shared
    and never changed by a walk) with its own position."""
    walk = copy.copy(_parsed(cron))
    walk.set_current(start, force=True)
    return walk


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be used. The message names the value and says why, with no prefix,
    so that callers can put the field path in front: `spec.schedule: <message>`."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)

    def describe_range(self) -> str:
        text = f"{self.low}-{self.high}"
        if self.names:
            text += f" or {_first(self)}-{_last(self)}"
        return text


_MONTH_NAMES = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day-of-week", 0, 6, _DAY_NAMES),
)
_FIELD_NAMES = " ".join(f.name for f in _FIELDS)

# robfig's parseDescriptor table; the star bits matter for the day rule.
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Characters of cron dialects that Kubernetes does not speak (Quartz, Jenkins).
_FOREIGN = re.compile(r"[LW#H]", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]+")

# The longest a day of the month can be in each month; February counts its leap day.
_MAX_DAY = {m: (29 if m == 2 else calendar.monthrange(2001, m)[1]) for m in range(1, 13)}


@dataclass(frozen=True)
class _Values:
    values: frozenset[int]
    star: bool  # robfig's star bit: `*`, `?`, or a step of 1 over the whole range


@dataclass(frozen=True, eq=False)
class Schedule:
    """A parsed schedule in a time zone. Pure: every method is a function of its arguments."""

    expression: str
    time_zone: ZoneInfo
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    day_of_month_star: bool
    day_of_week_star: bool
    _cron: str
    follows_clock: bool = False  # the hour is `*` or a step: fires whenever the wall clock shows a slot
    offset: timedelta = timedelta(0)  # within a window (`within_window`): every firing this much later

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after `moment` (an aware datetime), as a UTC datetime."""
        if self.offset:
            return self._unshifted().next_after(_aware(moment) - self.offset) + self.offset
        now = _aware(moment).astimezone(UTC)
        if self.follows_clock:
            return self._next_on_the_clock(now)
        walk = _walk(self._cron, _wall(now.astimezone(self.time_zone)))
        while True:
            instant = self._instant(walk.get_next(datetime))
            # Only while `moment` lies in the second pass of a repeated hour can a later wall-clock slot map to an
            # earlier instant (its first occurrence); skip those.
            if instant > now:
                return instant

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last firing at or before `moment` (an aware datetime), as a UTC datetime."""
        if self.offset:
            return self._unshifted().latest_at_or_before(_aware(moment) - self.offset) + self.offset
        now = _aware(moment).astimezone(UTC)
        if self.follows_clock:
            return self._latest_on_the_clock(now)
        local = now.astimezone(self.time_zone)
        # Slots are whole minutes, and croniter's get_prev is strictly before its start: start a minute on.
        start = _wall(local).replace(second=0, microsecond=0) + timedelta(minutes=1)
        # In the second pass of a repeated hour, wall-clock slots up to the end of the repetition already fired
        # (at their first occurrence): start the walk back from there.
        start += _repeated_span(local)
        walk = _walk(self._cron, start)
        while True:
            instant = self._instant(walk.get_prev(datetime))
            if instant <= now:
                return instant

    def firings(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every firing in (after, until], in order."""
        current = self.next_after(after)
        while current <= until:
            yield current
            current = self.next_after(current)

    def _next_on_the_clock(self, now: datetime) -> datetime:
        """follows_clock: the first instant after `now` whose wall-clock reading is a slot. Wall times repeat only
        when the clocks go back; walking the wall clock forward from `now` finds everything but the repetition of
        times already passed, which a fall-back in the next hours brings back: walk those too."""
        local = now.astimezone(self.time_zone)
        best: datetime | None = None
        back = _coming_repetition(now, self.time_zone)
        if back:
            walk = _walk(self._cron, _wall(local) - back - timedelta(minutes=1))
            while (wall := walk.get_next(datetime)) <= _wall(local):
                best = _earliest([best, *(i for i in self._occurrences(wall) if i > now)])
        walk = _walk(self._cron, _wall(local))
        while True:
            later = [i for i in self._occurrences(walk.get_next(datetime)) if i > now]
            if later:
                found = _earliest([best, *later])
                assert found is not None
                return found

    def _latest_on_the_clock(self, now: datetime) -> datetime:
        """follows_clock: the last instant at or before `now` whose wall-clock reading is a slot. In the second
        pass of a repeated hour, times after the current wall time passed in the first: walk those too."""
        local = now.astimezone(self.time_zone)
        best: datetime | None = None
        span = _repeated_span(local)
        start = _wall(local).replace(second=0, microsecond=0) + timedelta(minutes=1)
        if span:
            walk = _walk(self._cron, start + span)
            while (wall := walk.get_prev(datetime)) >= start:
                best = _latest([best, *(i for i in self._occurrences(wall) if i <= now)])
        walk = _walk(self._cron, start)
        while True:
            earlier = [i for i in self._occurrences(walk.get_prev(datetime)) if i <= now]
            if earlier:
                found = _latest([best, *earlier])
                assert found is not None
                return found

    def _occurrences(self, wall: datetime) -> list[datetime]:
        """The instants (UTC) whose wall-clock reading is `wall`: none in a spring-forward gap, two in a repeated
        hour, else one."""
        found = []
        for fold in (0, 1):
            instant = wall.replace(tzinfo=self.time_zone, fold=fold).astimezone(UTC)
            if _wall(instant.astimezone(self.time_zone)) == wall and instant not in found:
                found.append(instant)
        return found

    def _instant(self, wall: datetime) -> datetime:
        """The instant (UTC) a wall-clock slot fires: its first occurrence when the clocks go back, the moment the
        clocks jump when they go forward past it.

        Instants are UTC because Python compares two datetimes of the same zone by wall clock, ignoring fold, and
        never finds a repeated-hour time equal to one in another zone."""
        first = wall.replace(tzinfo=self.time_zone, fold=0).astimezone(UTC)
        if _wall(first.astimezone(self.time_zone)) == wall:
            return first
        return _transition(wall.replace(tzinfo=self.time_zone, fold=1), first)

    def _unshifted(self) -> Schedule:
        return replace(self, offset=timedelta(0))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self._cron, self.time_zone.key, self.follows_clock, self.offset) == (
            other._cron,
            other.time_zone.key,
            other.follows_clock,
            other.offset,
        )

    def __hash__(self) -> int:
        return hash((self._cron, self.time_zone.key, self.follows_clock, self.offset))

    def __repr__(self) -> str:
        shifted = f", offset={self.offset}" if self.offset else ""
        return f"Schedule({self.expression!r}, time_zone={self.time_zone.key!r}{shifted})"


def parse_window(text: str) -> timedelta:
    """`spec.window`: hours and minutes (`4h`, `90m`, `1h30m`), at least a minute, at most MAX_WINDOW."""
    shown = json.dumps(text)
    found = _WINDOW.fullmatch(text)
    if not text or found is None:
        raise ScheduleError(f"{shown} is not a window: give hours and minutes, such as 4h, 90m or 1h30m")
    length = timedelta(hours=int(found["hours"] or 0), minutes=int(found["minutes"] or 0))
    if length < timedelta(minutes=1) or length > MAX_WINDOW:
        raise ScheduleError(f"{shown} is not between 1m and {int(MAX_WINDOW.total_seconds() // 3600)}h")
    return length


def window_offset(uid: str, window: timedelta) -> timedelta:
    """The fixed offset of the object `uid` in a window of length `window`: whole minutes in [0, window), from
    sha256 of the uid (even across a fleet, the same for every replica and after every restart)."""
    minutes = max(1, int(window.total_seconds() // 60))
    draw = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big")
    return timedelta(minutes=draw % minutes)


@functools.lru_cache(maxsize=4096)
def _shortest_gap(schedule: Schedule) -> timedelta:
    """The shortest time between two of the schedule's next _WINDOW_GAPS firings, from a fixed instant (so the
    answer never depends on when it is asked)."""
    moment = schedule.next_after(datetime(2026, 1, 1, tzinfo=UTC))
    shortest = None
    for _ in range(_WINDOW_GAPS):
        following = schedule.next_after(moment)
        gap = following - moment
        shortest = gap if shortest is None or gap < shortest else shortest
        moment = following
    assert shortest is not None
    return shortest


def within_window(schedule: Schedule, window: str | None, uid: str) -> Schedule:
    """`schedule` with `window` applied for the object `uid`: each firing moved by its offset (`window_offset`).
    Raises ScheduleError when the window is no window, or longer than the schedule's shortest gap between two
    firings (the windows would overlap, and the runs of one object would no longer fall one per window)."""
    if not window:
        return schedule
    length = parse_window(window)
    gap = _shortest_gap(schedule)
    if length > gap:
        raise ScheduleError(
            f"{json.dumps(window)} is longer than the {_span(gap)} between two firings of "
            f"{json.dumps(schedule.expression)}: the windows would overlap; give a shorter window or a sparser schedule"
        )
    return replace(schedule, offset=window_offset(uid, length))


def _span(length: timedelta) -> str:
    minutes = int(length.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m" if hours and minutes else f"{hours}h" if hours else f"{minutes}m"


def parse_time_zone(name: str) -> ZoneInfo:
    """An IANA time zone by name, e.g. `Europe/Berlin` or `Etc/UTC`."""
    # `Local` would be the controller's own zone, which differs between the webhook, the reconciler and the user.
    if not name or name.strip() != name or name.lower() == "local":
        raise ScheduleError(f"{name!r} is not an IANA time zone name such as Etc/UTC or Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"{name!r} is not an IANA time zone name such as Etc/UTC or Europe/Berlin") from None


# Schedules are immutable and few: the webhook judges the same ones on every apply, the reconciler on every sync.
@functools.lru_cache(maxsize=4096)
def parse_schedule(expression: str, time_zone: str = "Etc/UTC") -> Schedule:
    """Parse a CronJob schedule in an IANA time zone; raise ScheduleError saying what is wrong."""
    zone = parse_time_zone(time_zone)
    shown = json.dumps(expression)
    if not expression.strip():
        raise ScheduleError(
            f"{shown} is empty; a schedule needs 5 fields ({_FIELD_NAMES}) or a descriptor such as @daily"
        )
    # The API server refuses any `TZ` in a CronJob schedule (TZ=, CRON_TZ=); the zone has its own field.
    if "TZ" in expression:
        raise ScheduleError(f"{shown} sets a time zone inside the schedule; use spec.timeZone instead")
    text = expression
    if expression.startswith("@"):
        text = _descriptor(expression, shown)
    parts = text.split()
    if len(parts) != len(_FIELDS):
        hint = "; seconds and years are not supported" if len(parts) in (6, 7) else ""
        raise ScheduleError(
            f"{shown} has {len(parts)} field{'s' if len(parts) != 1 else ''}, a schedule needs 5 ({_FIELD_NAMES}){hint}"
        )
    minute, hour, dom, month, dow = (_parse_field(p, f, shown) for p, f in zip(parts, _FIELDS, strict=True))
    _check_fires(dom, month, dow, shown)
    # Vixie cron's test, on the hour field as written: a star or a step repeats within the day.
    follows_clock = hour.star or "/" in parts[1] or parts[1] in ("*", "?")
    return Schedule(
        expression=expression,
        time_zone=zone,
        minutes=minute.values,
        hours=hour.values,
        days_of_month=dom.values,
        months=month.values,
        days_of_week=dow.values,
        day_of_month_star=dom.star,
        day_of_week_star=dow.star,
        _cron=" ".join(
            [
                _canonical(minute.values, star=False),
                _canonical(hour.values, star=False),
                _canonical(dom.values, star=dom.star),
                _canonical(month.values, star=False),
                _canonical(dow.values, star=dow.star),
            ]
        ),
        follows_clock=follows_clock,
    )


def _descriptor(expression: str, shown: str) -> str:
    if expression in _DESCRIPTORS:
        return _DESCRIPTORS[expression]
    if expression.startswith("@every"):
        raise ScheduleError(
            f"{shown} uses @every, which fires relative to the last run rather than the clock; "
            'write it as a 5-field schedule, e.g. "*/5 * * * *"'
        )
    known = ", ".join(_DESCRIPTORS)
    raise ScheduleError(f"{shown} is not a known descriptor; use one of {known}, or 5 fields ({_FIELD_NAMES})")


def _parse_field(text: str, spec: _Field, shown: str) -> _Values:
    values: set[int] = set()
    star = False
    for item in text.split(","):
        item_values, item_star = _parse_item(item, spec, shown)
        values |= item_values
        star = star or item_star
    return _Values(frozenset(values), star)


def _parse_item(item: str, spec: _Field, shown: str) -> tuple[set[int], bool]:
    """One list element: `*`, `?`, `N`, `N-M`, each optionally `/step` (robfig's getRange)."""
    where = f"{shown} {spec.name}"
    range_text, _, step_text = item.partition("/")
    if "/" in step_text:
        raise ScheduleError(f'{where} "{item}" has more than one "/"')
    if range_text in ("*", "?"):
        low, high, star = spec.low, spec.high, True
    else:
        if range_text.startswith(("*", "?")):
            raise ScheduleError(f'{where} "{item}": a star cannot start a range; write "*" or a range such as 1-5')
        low_text, dash, high_text = range_text.partition("-")
        if "-" in high_text:
            raise ScheduleError(f'{where} "{item}" has more than one "-"')
        low = _value(low_text, spec, where, item)
        high = _value(high_text, spec, where, item) if dash else low
        # robfig: `N/step` means from N to the end of the range.
        if step_text and not dash:
            high = spec.high
        star = False
        if low > high:
            named = not low_text.isdigit()
            end, start = (_last(spec), _first(spec)) if named else (spec.high, spec.low)
            raise ScheduleError(
                f'{where} range "{range_text}" runs backwards; ranges do not wrap around, '
                f"use a list such as {low_text}-{end},{start}-{high_text}"
            )
    step = 1
    if step_text or item.endswith("/"):
        if not _NUMBER.fullmatch(step_text):
            raise ScheduleError(f'{where} "{item}": the step "{step_text}" is not a whole number')
        step = int(step_text)
        if step == 0:
            raise ScheduleError(f'{where} "{item}": the step must be a positive number, not 0')
        # robfig keeps the star bit only for a step of 1 over the full range.
        star = star and step == 1
    return set(range(low, high + 1, step)), star


def _value(text: str, spec: _Field, where: str, item: str) -> int:
    if spec.names and text.lower() in spec.names:
        return spec.names[text.lower()]
    if not _NUMBER.fullmatch(text):
        foreign = _FOREIGN.search(text)
        if foreign:
            raise ScheduleError(
                f'{where} "{item}" uses "{foreign.group()}", which Kubernetes cron does not support '
                "(L, W, # and H come from other cron dialects)"
            )
        kind = "a number" if not spec.names else f"a number or a name ({_first(spec)}-{_last(spec)})"
        raise ScheduleError(f'{where} "{item}": "{text}" is not {kind}')
    number = int(text)
    if not spec.low <= number <= spec.high:
        hint = " (0 is Sunday; 7 is not accepted)" if spec.name == "day-of-week" and number == 7 else ""
        raise ScheduleError(f"{where} {number} is out of range {spec.describe_range()}{hint}")
    return number


def _first(spec: _Field) -> str:
    """The first name of a field (SUN, JAN), or its lowest number."""
    return min(spec.names, key=spec.names.__getitem__).upper() if spec.names else str(spec.low)


def _last(spec: _Field) -> str:
    return max(spec.names, key=spec.names.__getitem__).upper() if spec.names else str(spec.high)


def _check_fires(dom: _Values, month: _Values, dow: _Values, shown: str) -> None:
    """Refuse what can never fire. Only a restricted day-of-month ANDed with a star day-of-week can: the days named
    may not exist in any month named (`31 2`). A restricted day-of-week always fires (weekly)."""
    if dom.star or not dow.star:
        return
    if any(day <= _MAX_DAY[m] for m in month.values for day in dom.values):
        return
    days = ",".join(str(d) for d in sorted(dom.values))
    months = ",".join(calendar.month_name[m] for m in sorted(month.values))
    raise ScheduleError(f"{shown} never fires: day-of-month {days} does not occur in {months}")


def _canonical(values: frozenset[int], *, star: bool) -> str:
    return "*" if star else ",".join(str(v) for v in sorted(values))


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("schedule math needs an aware datetime (with tzinfo)")
    return moment


def _wall(moment: datetime) -> datetime:
    """The naive wall-clock reading of an aware datetime (fold dropped)."""
    return moment.replace(tzinfo=None, fold=0)


def _repeated_span(local: datetime) -> timedelta:
    """How long the repetition lasts if `local` is in the second pass of a repeated hour, else zero."""
    if local.fold == 0:
        return timedelta(0)
    first = local.replace(fold=0).utcoffset()
    second = local.utcoffset()
    if first is None or second is None:
        return timedelta(0)
    return max(first - second, timedelta(0))


def _coming_repetition(now: datetime, zone: ZoneInfo) -> timedelta:
    """How much wall-clock time the clocks will repeat if they go back within the next three hours (Vixie cron's
    bound on a DST change), else zero."""
    ahead = (now + timedelta(hours=3)).astimezone(zone).utcoffset()
    current = now.astimezone(zone).utcoffset()
    if ahead is None or current is None:
        return timedelta(0)
    return max(current - ahead, timedelta(0))


def _earliest(instants: list[datetime | None]) -> datetime | None:
    present = [i for i in instants if i is not None]
    return min(present) if present else None


def _latest(instants: list[datetime | None]) -> datetime | None:
    present = [i for i in instants if i is not None]
    return max(present) if present else None


def _transition(before: datetime, after: datetime) -> datetime:
    """The instant the clocks jumped, between two aware datetimes on either side of it: a bisection to the second
    (zone transitions fall on whole seconds). Runs only for slots inside a spring-forward gap."""
    low = before.astimezone(UTC)
    high = after.astimezone(UTC)
    zone = before.tzinfo
    assert zone is not None
    offset_low = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) // 2
        if middle.astimezone(zone).utcoffset() == offset_low:
            low = middle
        else:
            high = middle
    return high


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time from an object we read, in UTC (one without an offset is taken as UTC); None when absent or
    unreadable (a hand edit must not crash a reader)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).astimezone(UTC)
