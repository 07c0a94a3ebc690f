"""Retention by count and by calendar (runner.retention): what stays, why, and what a run deletes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runner.naming import TIMESTAMP_FORMAT
from runner.retention import Policy, parse_age, plan

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def name(moment: datetime) -> str:
    return f"db-{moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)}.dump"


def nightly(days: int, *, hour: int = 1) -> list[str]:
    """A backup every night at `hour`:00 UTC for the last `days` days, oldest first."""
    first = NOW.replace(hour=hour, minute=0) - timedelta(days=days - 1)
    return [name(first + timedelta(days=d)) for d in range(days)]


def kept(names: list[str], policy: Policy, ours: dict[str, bool] | None = None) -> dict[str, tuple[str, ...]]:
    decided = plan(names, "db", policy, ours if ours is not None else dict.fromkeys(names, True), now=NOW)
    assert set(decided.delete) | set(decided.kept) == set(names)  # every backup either stays or goes
    return dict(decided.kept)


def test_seven_daily_four_weekly_twelve_monthly_from_four_hundred_nights() -> None:
    names = nightly(400)
    found = kept(names, Policy(keep_daily=7, keep_weekly=4, keep_monthly=12, time_zone=BERLIN))
    by = {rule: sorted(n for n, rules in found.items() if rule in rules) for rule in ("daily", "weekly", "monthly")}
    assert by["daily"] == names[-7:]
    # Sundays are the newest of their ISO week; the current week (Mon 2026-11-30 .. today) counts as the first.
    assert [n[3:11] for n in by["weekly"]] == ["20261115", "20261122", "20261129", "20261206"]
    assert [n[3:11] for n in by["monthly"][-3:]] == ["20261031", "20261130", "20261206"]
    assert len(by["monthly"]) == 12
    assert by["monthly"][0][3:9] == "202601"  # twelve months: January to December 2026
    assert len(found) == len(set(by["daily"]) | set(by["weekly"]) | set(by["monthly"]))  # one backup, many rules


def test_days_are_counted_in_the_databasebackups_own_time_zone() -> None:
    # 23:30 UTC is already the next day in Berlin: three backups, on two Berlin days but three UTC days.
    names = [name(datetime(2026, 12, d, 23, 30, tzinfo=UTC)) for d in (3, 4)] + [
        name(datetime(2026, 12, 5, 12, tzinfo=UTC))
    ]
    in_utc = kept(names, Policy(keep_daily=2))
    in_berlin = kept(names, Policy(keep_daily=2, time_zone=BERLIN))
    assert sorted(in_utc) == names[1:]  # the days 4 and 5 (UTC)
    # In Berlin the 4th 23:30 UTC and the 5th 12:00 UTC share 5 December: the newest of it, and the 4th (Berlin).
    assert sorted(in_berlin) == [names[0], names[2]]


def test_max_age_caps_every_rule_but_never_takes_the_newest() -> None:
    names = nightly(400)
    found = kept(names, Policy(keep_yearly=5, keep_monthly=24, max_age=parse_age("200d")))
    assert min(found) >= name(NOW - timedelta(days=200))
    old = [name(NOW - timedelta(days=500)), name(NOW - timedelta(days=450))]
    assert kept(old, Policy(keep_last=5, max_age=parse_age("30d"))) == {old[1]: ("newest",)}


def test_a_backup_kept_by_any_rule_stays_and_the_reasons_are_counted() -> None:
    names = nightly(10)
    decided = plan(names, "db", Policy(keep_last=2, keep_daily=3), dict.fromkeys(names, True), now=NOW)
    assert decided.kept[names[-1]] == ("last", "daily", "newest")
    assert decided.kept[names[-3]] == ("daily",)
    assert decided.counts() == {"last": 2, "daily": 3, "newest": 1}
    assert len(decided.delete) == 7
    sizes = {n: 1000 + i for i, n in enumerate(names)}
    sized = plan(names, "db", Policy(keep_last=2, keep_daily=3), dict.fromkeys(names, True), now=NOW, sizes=sizes)
    assert sized.kept_bytes == 1007 + 1008 + 1009  # the three kept, as their manifests record them


def test_unverified_backups_count_for_nothing_and_go_only_with_an_older_verified_one() -> None:
    names = nightly(6)
    ours = {n: i % 2 == 0 for i, n in enumerate(names)}  # 0, 2, 4 verified; 1, 3, 5 not
    found = kept(names, Policy(keep_daily=2), ours)
    # The two newest verified days are 4 and 2; 5 and 3 are newer than the oldest kept (2) and stay; 0 and 1 go.
    assert sorted(found) == names[2:]
    assert found[names[5]] == ("unverified",)
    # Nothing verified goes: nothing goes at all.
    assert sorted(kept(names, Policy(keep_daily=5), ours)) == names


def test_without_a_rule_nothing_is_deleted_and_ages_are_whole_hours_days_or_weeks() -> None:
    names = nightly(30)
    assert plan(names, "db", Policy(), dict.fromkeys(names, True), now=NOW).delete == ()
    assert parse_age("36h") == timedelta(hours=36)
    assert parse_age("90d") == timedelta(days=90)
    assert parse_age("52w") == timedelta(weeks=52)
    for bad in ("0d", "1.5d", "90", "3m", "-1d", "d"):
        with pytest.raises(ValueError, match="whole number of hours, days or weeks"):
            parse_age(bad)


def test_a_deleted_backup_takes_its_manifest_and_its_drill_record_and_nothing_of_a_kept_one() -> None:
    backups = nightly(3)
    names = [*backups, *(f"{n}.json" for n in backups), f"{backups[0]}.drills.jsonl", f"{backups[2]}.drills.jsonl"]
    decided = plan(names, "db", Policy(keep_last=2), dict.fromkeys(backups, True), now=NOW)
    assert decided.delete == (backups[0], f"{backups[0]}.json", f"{backups[0]}.drills.jsonl")
    assert sorted(decided.kept) == backups[1:], "a drill record is no backup of its own"


def test_a_binlog_window_keeps_the_backup_before_its_oldest_second_and_all_after_over_max_age() -> None:
    names = nightly(10)
    window = Policy(keep_last=1, max_age=timedelta(days=1), binlog_window=timedelta(days=3))

    found = kept(names, window)

    # now - 3d is 12:00 three days ago: the backup of 01:00 that night is the one a replay to that second needs.
    assert sorted(found) == names[-4:]
    assert all("window" in found[n] for n in names[-4:])
    assert found[names[-1]] == ("last", "window", "newest")


def test_a_binlog_window_older_than_every_backup_keeps_them_all() -> None:
    names = nightly(3)

    found = kept(names, Policy(keep_last=1, binlog_window=timedelta(weeks=2)))

    assert sorted(found) == names
    assert Policy(binlog_window=timedelta(days=1)).any
