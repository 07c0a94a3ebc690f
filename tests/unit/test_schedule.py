"""The schedule parser accepts what a Kubernetes CronJob accepts and fires when it fires, once per slot across DST."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.schedule import (
    Schedule,
    ScheduleError,
    parse_schedule,
    parse_time_zone,
    parse_window,
    window_offset,
    within_window,
)

NEW_YORK = "America/New_York"
MINUTE = timedelta(minutes=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str, zone: str, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone), fold=fold)


def just_before_the_hour() -> datetime:
    return utc("2026-03-10T09:59:30")


def on_the_hour() -> datetime:
    return utc("2026-03-10T10:00:00")


# --- what is accepted -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "*/5 * * * *",
        "0 0 * * *",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "0 0 ? * MON-FRI",
        "0 0 1,15 * *",
        "30 2 * jan,Jul Sun",
        "5/15 * * * *",
        "*/60 * * * *",
        "0-59/10 * * * *",
        "0 0 */1 * 1",
        "0 0 29 2 *",
        "  0\t0 * * *  ",
        "0 0 1 1 ?",
        "59 23 31 12 6",
        "0 0 * * 0",
        "0 0 30 2,4 *",
    ],
)
def test_a_schedule_a_cronjob_accepts_is_accepted(expression: str) -> None:
    schedule = parse_schedule(expression)
    assert schedule.next_after(on_the_hour()) > on_the_hour()


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "*/5 * * *",
            '"*/5 * * *" has 4 fields, a schedule needs 5 (minute hour day-of-month month day-of-week)',
        ),
        (
            "0 */5 * * * *",
            "has 6 fields, a schedule needs 5 (minute hour day-of-month month day-of-week); seconds",
        ),
        ("0 0 0 * * * 2026", "has 7 fields"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("0 0 L * *", 'day-of-month "L" uses "L", which Kubernetes cron does not support'),
        ("0 0 15W * *", 'uses "W"'),
        ("0 0 * * 5#3", 'uses "#"'),
        ("H/15 * * * *", 'minute "H/15" uses "H"'),
        ("0 0 * * 7", "day-of-week 7 is out of range 0-6 or SUN-SAT (0 is Sunday; 7 is not accepted)"),
        (
            "0 0 * * FRI-MON",
            'range "FRI-MON" runs backwards; ranges do not wrap around, use a list such as FRI-SAT,SUN-MON',
        ),
        ("60 * * * *", "minute 60 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month 32 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12 or JAN-DEC"),
        ("0 0 * * MOX", '"MOX" is not a number or a name (SUN-SAT)'),
        ("-1 * * * *", '"" is not a number'),
        ("*/0 * * * *", "the step must be a positive number, not 0"),
        ("*/x * * * *", 'the step "x" is not a whole number'),
        ("*/ * * * *", 'the step "" is not a whole number'),
        ("1-2-3 * * * *", 'has more than one "-"'),
        ("*/2/3 * * * *", 'has more than one "/"'),
        ("*-5 * * * *", "a star cannot start a range"),
        ("1,,2 * * * *", '"" is not a number'),
        ("TZ=UTC 0 0 * * *", "sets a time zone inside the schedule; use spec.timeZone instead"),
        ("CRON_TZ=Europe/Berlin 0 0 * * *", "use spec.timeZone instead"),
        ("@every 5m", "uses @every"),
        ("@weekdays", "is not a known descriptor"),
        ("@DAILY", "is not a known descriptor"),
        ("0 0 31 2 *", "never fires: day-of-month 31 does not occur in February"),
        ("0 0 30,31 2 *", "never fires: day-of-month 30,31 does not occur in February"),
        ("0 0 31 4,6,9,11 *", "never fires: day-of-month 31 does not occur in April,June,September,November"),
    ],
)
def test_a_schedule_a_cronjob_refuses_is_refused_with_the_reason(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression)
    assert message in str(caught.value)


def test_the_message_quotes_the_schedule_as_written() -> None:
    with pytest.raises(ScheduleError, match=r'^"0 0 \* \* 7" day-of-week'):
        parse_schedule("0 0 * * 7")


@pytest.mark.parametrize("zone", ["Etc/UTC", "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_an_iana_time_zone_is_accepted(zone: str) -> None:
    assert parse_time_zone(zone).key == zone


@pytest.mark.parametrize("zone", ["", "Local", "local", "Mars/Olympus", "../etc/passwd", "/etc/localtime", " UTC"])
def test_anything_else_is_not_a_time_zone(zone: str) -> None:
    with pytest.raises(ScheduleError, match="is not an IANA time zone name"):
        parse_time_zone(zone)


def test_a_bad_time_zone_is_refused_by_the_schedule_parser_too() -> None:
    with pytest.raises(ScheduleError, match="'Mars/Olympus' is not an IANA time zone"):
        parse_schedule("0 0 * * *", "Mars/Olympus")


# --- when it fires --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # The cases where croniter alone and Kubernetes part ways (REFERENCE.md).
        pytest.param("0 0 */1 * 1", "2026-01-01T00:00", "2026-01-05T00:00", id="star-slash-one is a star: Mondays"),
        pytest.param("0 0 ? * 1", "2026-01-01T00:00", "2026-01-05T00:00", id="question mark is a star"),
        pytest.param("0 0 1 * 1", "2026-01-01T00:00", "2026-01-05T00:00", id="both restricted: either (Monday)"),
        pytest.param("0 0 1 * 1", "2026-01-26T00:00", "2026-02-01T00:00", id="both restricted: either (the 1st)"),
        pytest.param("0 0 1-31 * 1", "2026-01-01T00:00", "2026-01-02T00:00", id="full dom list is no star: daily"),
        pytest.param("0 0 */2 * 1", "2026-01-01T00:00", "2026-01-03T00:00", id="dom step 2 is restricted: OR"),
        pytest.param("0 0 13 * 5", "2026-01-01T00:00", "2026-01-02T00:00", id="Friday or the 13th"),
        pytest.param("@weekly", "2026-01-01T00:00", "2026-01-04T00:00", id="weekly is Sunday midnight"),
        pytest.param("@monthly", "2026-01-01T00:00", "2026-02-01T00:00", id="monthly"),
        pytest.param("@yearly", "2026-01-01T00:00", "2027-01-01T00:00", id="yearly"),
        pytest.param("5/15 * * * *", "2026-01-01T00:06", "2026-01-01T00:20", id="N/step runs from N to the end"),
        pytest.param("*/60 * * * *", "2026-01-01T00:00", "2026-01-01T01:00", id="step past the range"),
        pytest.param("0 0 29 2 *", "2026-01-01T00:00", "2028-02-29T00:00", id="leap day"),
        pytest.param("*/5 * * * *", "2026-03-10T09:59:30", "2026-03-10T10:00", id="just before the hour"),
        pytest.param("*/5 * * * *", "2026-03-10T10:00", "2026-03-10T10:05", id="strictly after"),
    ],
)
def test_it_fires_when_a_cronjob_fires(expression: str, after: str, expected: str) -> None:
    assert parse_schedule(expression).next_after(utc(after)) == utc(expected)


def test_firings_are_utc_instants_of_wall_clock_slots_in_the_zone() -> None:
    fired = parse_schedule("0 9 * * *", "Europe/Berlin").next_after(just_before_the_hour())
    assert fired == local("2026-03-11T09:00", "Europe/Berlin")
    assert fired.tzinfo is UTC
    assert fired == utc("2026-03-11T08:00")


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # Spring forward: 02:00 -> 03:00 EDT on 2026-03-08 (07:00 UTC). The 02:30 slot does not exist: it fires
        # when the clocks jump, instead of being skipped for the day as a CronJob does.
        pytest.param(
            "30 2 * * *",
            NEW_YORK,
            "2026-03-08T01:00",
            "2026-03-08T07:00",
            id="missing slot fires at the jump",
        ),
        pytest.param("30 2 * * *", NEW_YORK, "2026-03-08T07:00", "2026-03-09T06:30", id="and the next day as usual"),
        pytest.param("0 3 * * *", NEW_YORK, "2026-03-08T01:00", "2026-03-08T07:00", id="03:00 is the jump itself"),
        # Fall back: 02:00 EDT -> 01:00 EST on 2026-11-01 (06:00 UTC). 01:30 happens twice: fire once, the first.
        pytest.param("30 1 * * *", NEW_YORK, "2026-11-01T04:00", "2026-11-01T05:30", id="repeated slot fires first"),
        pytest.param("30 1 * * *", NEW_YORK, "2026-11-01T05:30", "2026-11-02T06:30", id="and not again"),
        pytest.param("30 1 * * *", NEW_YORK, "2026-11-01T06:10", "2026-11-02T06:30", id="from the second pass"),
        # Lord Howe goes back half an hour: 02:00 (+11:00) -> 01:30 (+10:30) on 2026-04-05 local.
        pytest.param("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T13:00", "2026-04-04T14:45", id="half-hour DST"),
        pytest.param("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T14:45", "2026-04-05T15:15", id="half-hour, once"),
    ],
)
def test_across_dst_it_fires_once_per_slot(expression: str, zone: str, after: str, expected: str) -> None:
    assert parse_schedule(expression, zone).next_after(utc(after)) == utc(expected)


def test_slots_inside_a_spring_forward_gap_collapse_into_one_firing() -> None:
    schedule = parse_schedule("*/15 2 * * *", NEW_YORK)  # a fixed hour: once per wall-clock slot
    fired = list(schedule.firings(utc("2026-03-08T06:40"), utc("2026-03-09T08:00")))
    # 02:00..02:45 do not exist on the 8th: one firing when the clocks jump; the next day, each slot.
    assert fired == [utc("2026-03-08T07:00"), *(utc(f"2026-03-09T06:{m:02}") for m in (0, 15, 30, 45))]


# Vixie/ISC cron's rule: a schedule whose hour is `*` or a step follows the clock, in the repeated hour too, and
# skips the wall times that do not exist; a fixed-hour schedule fires once per wall-clock slot. Fall-back and
# spring-forward in three zones, one of them with a 30-minute change (Lord Howe: +11 -> +10:30 at 02:00 on
# 2026-04-05, +10:30 -> +11 at 02:00 on 2026-10-04; Berlin: 2026-03-29 and 2026-10-25 at 01:00 UTC).
@pytest.mark.parametrize(
    ("expression", "zone", "start", "end", "expected"),
    [
        pytest.param(
            "0 * * * *", NEW_YORK, "2026-11-01T03:30", "2026-11-01T07:30",
            ["04:00", "05:00", "06:00", "07:00"], id="New York back: 01:00 EDT and 01:00 EST, an hour apart",
        ),
        pytest.param(
            "0 * * * *", NEW_YORK, "2026-03-08T04:30", "2026-03-08T08:30",
            ["05:00", "06:00", "07:00", "08:00"], id="New York forward: 01:00 EST, 03:00 EDT, an hour apart",
        ),
        pytest.param(
            "30 */2 * * *", "Europe/Berlin", "2026-10-24T22:00", "2026-10-25T03:00",
            ["22:30", "00:30", "01:30"], id="Berlin back: 02:30 CEST and 02:30 CET",
        ),
        pytest.param(
            "30 */2 * * *", "Europe/Berlin", "2026-03-28T22:00", "2026-03-29T03:00",
            ["23:30", "02:30"], id="Berlin forward: 00:30 CET, 02:30 does not exist, 04:30 CEST",
        ),
        pytest.param(
            "*/5 * * * *", "Australia/Lord_Howe", "2026-04-04T14:50", "2026-04-04T15:35",
            ["14:55", "15:00", "15:05", "15:10", "15:15", "15:20", "15:25", "15:30", "15:35"],
            id="Lord Howe back half an hour: every 5 minutes of real time, 01:30-01:55 twice",
        ),
        pytest.param(
            "*/5 * * * *", "Australia/Lord_Howe", "2026-10-03T15:15", "2026-10-03T15:40",
            ["15:20", "15:25", "15:30", "15:35", "15:40"], id="Lord Howe forward half an hour: 01:55 then 02:30",
        ),
        pytest.param(
            "30 1 * * *", "Australia/Lord_Howe", "2026-04-04T14:00", "2026-04-05T16:00",
            ["14:30", "15:00"], id="Lord Howe, a fixed hour: 01:30 once (the first), then the next day's",
        ),
    ],
)  # fmt: skip
def test_a_schedule_that_repeats_within_a_day_follows_the_clock_across_dst(
    expression: str, zone: str, start: str, end: str, expected: list[str]
) -> None:
    schedule = parse_schedule(expression, zone)
    assert schedule.follows_clock is (expression != "30 1 * * *")
    fired = [f.strftime("%H:%M") for f in schedule.firings(utc(start), utc(end))]
    assert fired == expected


def test_latest_at_or_before_counts_a_slot_that_fires_exactly_now() -> None:
    schedule = parse_schedule("*/5 * * * *")
    assert schedule.latest_at_or_before(on_the_hour()) == on_the_hour()
    assert schedule.latest_at_or_before(just_before_the_hour()) == utc("2026-03-10T09:55")


def test_latest_at_or_before_in_the_second_pass_of_a_repeated_hour() -> None:
    schedule = parse_schedule("45 1 * * *", NEW_YORK)
    # 01:15 EST (second pass): 01:45 already fired, at 01:45 EDT (05:45 UTC).
    moment = local("2026-11-01T01:15", NEW_YORK, fold=1)
    assert moment.astimezone(UTC) == utc("2026-11-01T06:15")
    assert schedule.latest_at_or_before(moment) == utc("2026-11-01T05:45")


def test_schedule_math_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        parse_schedule("* * * * *").next_after(datetime(2026, 1, 1))


def test_schedules_compare_by_meaning() -> None:
    assert parse_schedule("@daily") == parse_schedule("0 0 * * *")
    assert parse_schedule("0 0 * * 0") == parse_schedule("0 0 ? * SUN")
    assert parse_schedule("0 0 */1 * 1") != parse_schedule("0 0 1-31 * 1")
    assert parse_schedule("@daily") != parse_schedule("@daily", "Europe/Berlin")
    # The same times of day, but one follows the clock across DST and the other fires once per slot.
    assert parse_schedule("0 */12 * * *") != parse_schedule("0 0,12 * * *")


# --- against an independent oracle ------------------------------------------------------------------------------


def _robfig_matches(schedule: Schedule, wall: datetime) -> bool:
    """robfig/cron v3 SpecSchedule matching, written out: the day rule ANDs when either day field has its star."""
    dom = wall.day in schedule.days_of_month
    dow = (wall.weekday() + 1) % 7 in schedule.days_of_week
    day = (dom and dow) if (schedule.day_of_month_star or schedule.day_of_week_star) else (dom or dow)
    return wall.minute in schedule.minutes and wall.hour in schedule.hours and wall.month in schedule.months and day


def _oracle_firings(schedule: Schedule, start: datetime, minutes: int) -> list[datetime]:
    """Walk real minutes. A schedule that follows the clock fires whenever the wall time matches; any other fires
    on a matching wall time at its first occurrence, and at a forward jump when any skipped wall time matched."""
    zone = schedule.time_zone
    fired: list[datetime] = []
    previous_wall: datetime | None = None
    for step in range(1, minutes + 1):
        moment = (start + step * MINUTE).astimezone(zone)
        wall = moment.replace(tzinfo=None, fold=0)
        if schedule.follows_clock:
            if _robfig_matches(schedule, wall):
                fired.append(moment.astimezone(UTC))
            continue
        second_pass = moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()
        fire = not second_pass and _robfig_matches(schedule, wall)
        if previous_wall is not None and wall - previous_wall > MINUTE:
            skipped = previous_wall + MINUTE
            while skipped < wall and not fire:
                fire = _robfig_matches(schedule, skipped)
                skipped += MINUTE
        if fire:
            fired.append(moment.astimezone(UTC))
        if not second_pass:
            previous_wall = wall
    return fired


@pytest.mark.parametrize(
    ("expression", "zone", "start", "days"),
    [
        ("*/7 * * * *", NEW_YORK, "2026-03-07T00:00", 2),
        ("*/7 * * * *", NEW_YORK, "2026-10-31T00:00", 2),
        ("0,30 1-3 * * *", NEW_YORK, "2026-11-01T00:00", 1),
        ("0,30 1-3 * * *", NEW_YORK, "2026-03-08T00:00", 1),
        ("15 2 * * *", "Europe/Berlin", "2026-03-28T00:00", 3),
        ("*/10 2 * * *", "Europe/Berlin", "2026-10-24T00:00", 3),
        ("*/20 * * * *", "Australia/Lord_Howe", "2026-04-04T12:00", 1),
        ("*/20 * * * *", "Australia/Lord_Howe", "2026-10-03T12:00", 1),
        ("10,50 */3 * * *", "Australia/Lord_Howe", "2026-04-04T00:00", 2),
        ("*/13 * * * *", "Europe/Berlin", "2026-10-24T12:00", 2),
        ("0 0-23/2 * * *", "Europe/Berlin", "2026-03-28T12:00", 2),
        ("0 0 13 * 5", "Etc/UTC", "2026-01-01T00:00", 120),
        ("0 12 */1 * 1-5", "Asia/Kolkata", "2026-01-01T00:00", 30),
        ("0 0 1,15 FEB-APR *", "Etc/UTC", "2026-01-01T00:00", 120),
    ],
)
def test_firings_agree_with_a_minute_by_minute_oracle(expression: str, zone: str, start: str, days: int) -> None:
    schedule = parse_schedule(expression, zone)
    begin = utc(start)
    expected = _oracle_firings(schedule, begin, days * 24 * 60)
    assert expected, "the oracle window must contain firings"
    assert list(schedule.firings(begin, begin + timedelta(days=days))) == expected


@pytest.mark.parametrize("zone", ["Etc/UTC", NEW_YORK, "Europe/Berlin", "Australia/Lord_Howe"])
def test_latest_at_or_before_and_next_after_bracket_every_moment(zone: str) -> None:
    rng = random.Random(zone)
    expressions = ("*/7 * * * *", "30 1,2 * * *", "0 0 * * 0", "45 2 1 * *", "30 * * * *", "15 */2 * * *")
    schedules = [parse_schedule(e, zone) for e in expressions]
    for _ in range(300):
        moment = utc("2026-01-01T00:00") + timedelta(seconds=rng.randrange(365 * 86400))
        # Probe the DST days densely too.
        if rng.random() < 0.5:
            moment = rng.choice(
                [
                    utc("2026-03-08T06:00"),
                    utc("2026-11-01T05:00"),
                    utc("2026-03-29T00:30"),
                    utc("2026-10-25T00:30"),
                    utc("2026-04-04T14:00"),
                ]
            ) + timedelta(seconds=rng.randrange(7200))
        for schedule in schedules:
            latest = schedule.latest_at_or_before(moment)
            following = schedule.next_after(latest)
            assert latest <= moment < following, (schedule, moment, latest, following)
            assert schedule.next_after(moment) == following


def test_an_expression_is_parsed_once_however_often_its_schedules_walk() -> None:
    from common import schedule as module

    expression = "7,19 */3 * * 1-5"
    schedule = parse_schedule(expression, "Europe/Berlin")
    schedule.next_after(datetime(2026, 3, 1, tzinfo=UTC))
    parsed = module._parsed.cache_info().misses

    for day in range(1, 29):
        schedule.next_after(datetime(2026, 3, day, tzinfo=UTC))
        parse_schedule(expression, "Europe/Berlin").latest_at_or_before(datetime(2026, 3, day, tzinfo=UTC))

    assert module._parsed.cache_info().misses == parsed


def test_walks_that_share_a_parsed_expression_do_not_move_each_other() -> None:
    from croniter import croniter

    expression = "*/7 1-23/2 * * *"
    starts = [datetime(2026, 1, 1) + timedelta(minutes=13 * n) for n in range(40)]
    shared = [parse_schedule(expression) for _ in starts]

    interleaved = [s.next_after(start.replace(tzinfo=UTC)) for s, start in zip(shared, starts, strict=True)]

    alone = [croniter(expression, start).get_next(datetime).replace(tzinfo=UTC) for start in starts]
    assert interleaved == alone


# --- windows: a fleet on one schedule, spread --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "minutes"), [("4h", 240), ("90m", 90), ("1h30m", 90), ("168h", 7 * 24 * 60)])
def test_a_window_is_hours_and_minutes(text: str, minutes: int) -> None:
    assert parse_window(text) == timedelta(minutes=minutes)


@pytest.mark.parametrize(("text", "problem"), [("", "is not a window"), ("4 hours", "is not a window"),
                                               ("0m", "between 1m and 168h"), ("169h", "between 1m and 168h"),
                                               ("30s", "is not a window")])  # fmt: skip
def test_a_window_that_is_none_is_refused_with_its_value(text: str, problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem) as raised:
        parse_window(text)
    assert f'"{text}"' in str(raised.value)


def test_a_window_longer_than_the_gap_between_two_firings_is_refused() -> None:
    hourly = parse_schedule("0 * * * *")
    with pytest.raises(ScheduleError) as raised:
        within_window(hourly, "2h", "uid")
    assert str(raised.value).startswith('"2h" is longer than the 1h between two firings of "0 * * * *"')
    assert within_window(hourly, "1h", "uid").offset < timedelta(hours=1)
    weekdays = parse_schedule("0 1 * * 1-5")  # one day between most firings, three over the weekend
    assert within_window(weekdays, "24h", "uid").offset < timedelta(hours=24)
    with pytest.raises(ScheduleError, match="longer than the 24h between"):
        within_window(weekdays, "25h", "uid")


def uids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def test_a_thousand_objects_spread_evenly_over_the_window_each_at_its_own_fixed_minute() -> None:
    window = timedelta(hours=4)
    offsets = [window_offset(uid, window) for uid in uids(1000, seed=25)]
    assert all(timedelta(0) <= o < window and o.total_seconds() % 60 == 0 for o in offsets)
    # Another replica, or this one after a restart, computes each offset again from the uid alone.
    assert offsets == [window_offset(uid, window) for uid in uids(1000, seed=25)]
    buckets = [0] * 16  # quarter hours
    for offset in offsets:
        buckets[int(offset / (window / 16))] += 1
    expected = len(offsets) / len(buckets)
    chi_square = sum((n - expected) ** 2 / expected for n in buckets)
    assert chi_square < 37.70, buckets  # the 0.001 critical value at 15 degrees of freedom: uniform
    assert max(buckets) < 2 * expected, buckets  # no quarter hour takes twice its share


def test_a_window_moves_each_firing_by_the_offset_once_per_window_instance_across_dst() -> None:
    base = parse_schedule("30 1 * * *", NEW_YORK)
    for uid in uids(20, seed=3):
        shifted = within_window(base, "4h", uid)
        offset = shifted.offset
        start, end = utc("2026-02-25T00:00:00"), utc("2026-04-05T00:00:00")  # across the spring-forward night
        firings = list(base.firings(start, end))
        runs = list(shifted.firings(start + offset, end + offset))
        assert runs == [f + offset for f in firings], "one run per window instance, at its offset, none skipped"
        for moment in [start + timedelta(hours=h, minutes=17) for h in range(0, 24 * 38, 7)]:
            assert shifted.next_after(moment) == base.next_after(moment - offset) + offset
            assert shifted.latest_at_or_before(moment) == base.latest_at_or_before(moment - offset) + offset
            assert shifted.latest_at_or_before(moment) <= moment < shifted.next_after(moment)
