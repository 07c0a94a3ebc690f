"""`baseretention`: which of an owner's PostgreSQL base backups retention keeps (`base_plan`), and which archived
WAL segments and gap records no kept base backup needs (`wal_prunable`, `stale_wal_gaps`); pure, with named times."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from runner.archivestore import Gap
from runner.basebackup import BaseManifest
from runner.baseretention import base_plan, stale_wal_gaps, wal_prunable
from runner.manifest import Owner
from runner.naming import parse_backup_name, parse_base_name, stale_temporaries
from runner.objectstore import S3Location
from runner.retention import Policy
from runner.s3backup import own_key
from runner.walarchive import WalEntry

MB16 = 16 << 20
NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
OWNER = Owner("shop", "nightly", "uid-1")


def base(hours_ago: float, *, takes: timedelta = timedelta(minutes=10), start_segment: int = 3) -> BaseManifest:
    """A base backup started `hours_ago`, ending `takes` later, whose WAL starts in segment `start_segment`."""
    start = NOW - timedelta(hours=hours_ago)
    end = start + takes
    return BaseManifest(
        f"app-{start:%Y%m%dT%H%M%SZ}.base.tar.zst", "15.18", "pg_basebackup 15", "db", 5432, "u", 100, "0" * 64,
        "none", None, None, f"{start:%Y-%m-%dT%H:%M:%S.000000Z}", f"{end:%Y-%m-%dT%H:%M:%S.000000Z}", 1.0, 1,
        f"0/{start_segment:X}000028", f"0/{start_segment:X}000100", MB16, OWNER,
    )  # fmt: skip


def ours(*manifests: BaseManifest) -> dict[str, BaseManifest]:
    return {m.file: m for m in manifests}


def names(manifests: dict[str, BaseManifest]) -> list[str]:
    return [n for file in manifests for n in (file, file + ".json")]


def test_a_base_backup_name_is_no_dump_s_and_a_dump_s_name_is_no_base_backup_s() -> None:
    assert parse_base_name("app", "app-20261207T100000Z.base.tar.zst") is not None
    assert parse_base_name("app", "app-20261207T100000Z.base.tar.zst.enc") is not None
    assert parse_backup_name("app", "app-20261207T100000Z.base.tar.zst") is None
    assert parse_base_name("app", "app-20261207T100000Z.tar") is None
    assert parse_base_name("app", "app-2-20261207T100000Z.base.tar.zst") is None, "another owner's prefix"
    assert parse_base_name("app", "app-20261207T100000Z.base.tar.zst.json") is None, "its manifest"


def test_keep_last_deletes_the_older_base_backups_with_their_manifests() -> None:
    stored = ours(base(30), base(20), base(10))
    oldest = base(30).file

    decided = base_plan(names(stored), "app", Policy(keep_last=2), stored, NOW)

    assert decided.delete == (oldest, oldest + ".json")
    assert sorted(decided.kept) == sorted([base(20).file, base(10).file])


def test_the_base_backup_just_taken_and_the_newest_stay_whatever_the_cap_says() -> None:
    stored = ours(base(48), base(30))

    decided = base_plan(names(stored), "app", Policy(max_age=timedelta(hours=1)), stored, NOW, protect=base(48).file)

    assert decided.delete == ()
    assert decided.kept == {base(48).file: ("just written",), base(30).file: ("newest",)}


def test_the_window_keeps_the_newest_base_backup_that_ended_before_its_start_and_all_after() -> None:
    # The 24h one started before the window's edge (now - 24h) but ended after it: it cannot restore the edge, so
    # the one before it stays too.
    stored = ours(base(50), base(30), base(24.05, takes=timedelta(minutes=10)), base(2))

    decided = base_plan(names(stored), "app", Policy(keep_last=1, binlog_window=timedelta(hours=24)), stored, NOW)

    assert decided.delete == (base(50).file, base(50).file + ".json")
    assert decided.kept[base(30).file] == ("window",)
    assert decided.kept[base(24.05).file] == ("window",)


def test_a_base_backup_of_another_owner_is_never_planned() -> None:
    stored = ours(base(30), base(10))
    foreign = "app-20261201T000000Z.base.tar.zst"

    decided = base_plan([*names(stored), foreign], "app", Policy(keep_last=1), stored, NOW)

    assert foreign not in decided.delete
    assert decided.delete == (base(30).file, base(30).file + ".json")


def segment(number: int, *, timeline: int = 1, closed: bool = True) -> WalEntry:
    name = f"{timeline:08X}00000000{number:08X}"
    stem = name if closed else name + ".partial"
    return WalEntry(name, stem + ".zst", closed, timeline, None, None, None, MB16, 10, "0" * 64)


def index(*entries: WalEntry) -> dict[str, WalEntry]:
    history = WalEntry("00000002.history", "00000002.history.zst", True, 2, None, None, None, 40, 30, "0" * 64)
    return {e.segment: e for e in sorted([*entries, history], key=lambda e: e.segment)}


def test_segments_wholly_before_the_oldest_kept_base_backup_s_start_go_and_nothing_after() -> None:
    archive = index(segment(1), segment(2), segment(3), segment(4), segment(5, closed=False))

    oldest, prunable = wal_prunable(archive, [base(10, start_segment=4), base(30, start_segment=3)])

    assert oldest == "000000010000000000000003"
    assert [e.segment for e in prunable] == ["000000010000000000000001", "000000010000000000000002"]


@pytest.mark.parametrize("start", [1, 9], ids=["the-first-segment", "past-the-partial"])
def test_the_partial_segment_and_history_files_never_go(start: int) -> None:
    archive = index(segment(1, closed=False))

    _oldest, prunable = wal_prunable(archive, [base(1, start_segment=start)])

    assert prunable == []


def test_nothing_goes_when_no_base_backup_is_kept() -> None:
    assert wal_prunable(index(segment(1), segment(2)), []) == (None, [])


def test_an_older_timeline_s_segments_go_by_number_and_a_later_one_s_never() -> None:
    archive = index(segment(2), segment(6), segment(2, timeline=2), segment(4, timeline=3))
    kept = replace(base(1, start_segment=5), timeline=2)

    oldest, prunable = wal_prunable(archive, [kept])

    assert oldest == "000000020000000000000005"
    assert [e.segment for e in prunable] == ["000000010000000000000002", "000000020000000000000002"]


def wal_gap(resumed: int) -> Gap:
    def name(number: int) -> str:
        return f"0000000100000000{number:08X}"

    return Gap(name(resumed - 3), name(resumed - 2), name(resumed - 1), name(resumed), "2026-12-07T10:00:00Z")


def test_a_gap_record_goes_once_the_oldest_kept_base_backup_starts_at_or_after_its_resume() -> None:
    gaps = [wal_gap(5), wal_gap(9), wal_gap(12)]

    stale = stale_wal_gaps(gaps, "000000010000000000000009")

    assert stale == gaps[:2]
    assert stale_wal_gaps(gaps, None) == []  # no base backup kept: nothing says the gap is behind every replay


def test_a_killed_run_s_base_backup_upload_is_the_owner_s_to_abort_and_not_another_s() -> None:
    location = S3Location("bucket", "backups")

    assert own_key(location, "app", "backups/app-20261207T100000Z.base.tar.zst.enc")
    assert not own_key(location, "app", "backups/app-2-20261207T100000Z.base.tar.zst")
    assert not own_key(location, "app", "backups/app-wal/000000010000000000000003.zst")


def test_a_killed_run_s_base_backup_temporaries_are_the_owner_s_to_remove() -> None:
    names = [
        ".app-20261207T100000Z.base.tar.zst.enc.partial",
        ".app-20261207T100000Z.base.tar.zst.json.partial",
        ".app-2-20261207T100000Z.base.tar.zst.partial",
        "app-20261207T100000Z.base.tar.zst",
    ]

    assert stale_temporaries(names, "app") == names[:2]
