"""`pgpitr.plan_recovery`: which archived WAL segments a point-in-time restore needs, and every refusal, decided
before anything is touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runner.archivestore import Gap
from runner.basebackup import BaseManifest
from runner.errors import Reason, RunnerError
from runner.pgpitr import parse_databases, plan_recovery
from runner.walarchive import WalEntry, lsn, next_segment, segment_name, segment_start, slot_name, wal_gap

MB16 = 16 << 20
BASE_END = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)


def manifest(start_lsn: str = "0/3000028", end_lsn: str = "0/3000100") -> BaseManifest:
    return BaseManifest(
        "app-20261207T095959Z.base.tar.zst", "15.18", "pg_basebackup 15", "db", 5432, "u", 1, "0" * 64, "none",
        None, None, "2026-12-07T09:59:59.000000Z", "2026-12-07T10:00:00.000000Z", 1.0, 1, start_lsn, end_lsn, MB16,
    )  # fmt: skip


def entry(number: int, until: datetime | None, *, closed: bool = True) -> WalEntry:
    name = f"00000001000000000000{number:04X}"
    stamp = until.strftime("%Y-%m-%dT%H:%M:%SZ") if until else None
    return WalEntry(name, name + ".zst", closed, 1, None, None, stamp, MB16, 10, "0" * 64)


def index(*entries: WalEntry) -> dict[str, WalEntry]:
    return {e.segment: e for e in entries}


def test_segments_from_the_base_backup_s_to_the_first_that_reaches_the_point_are_planned() -> None:
    archive = index(
        entry(2, BASE_END - timedelta(minutes=1)),
        entry(3, BASE_END + timedelta(seconds=5)),
        entry(4, BASE_END + timedelta(seconds=30)),
        entry(5, BASE_END + timedelta(seconds=60), closed=False),
    )

    plan = plan_recovery(manifest(), archive, BASE_END + timedelta(seconds=20))

    assert [e.segment[-1] for e in plan.entries] == ["3", "4"]


@pytest.mark.parametrize(
    ("point", "reason", "says"),
    [
        (BASE_END - timedelta(seconds=1), Reason.INVALID_ARGUMENTS, "is before the base backup ended"),
        (BASE_END + timedelta(minutes=5), Reason.INVALID_ARGUMENTS, "is after the newest archived WAL"),
    ],
)
def test_a_point_outside_the_base_backup_and_archive_is_refused(point: datetime, reason: Reason, says: str) -> None:
    archive = index(entry(3, BASE_END + timedelta(seconds=5)), entry(4, BASE_END + timedelta(minutes=1)))

    with pytest.raises(RunnerError) as refused:
        plan_recovery(manifest(), archive, point)

    assert refused.value.reason is reason
    assert says in refused.value.message


def test_a_missing_segment_is_an_archive_gap_naming_it() -> None:
    archive = index(entry(3, None), entry(5, BASE_END + timedelta(minutes=1)))

    with pytest.raises(RunnerError) as refused:
        plan_recovery(manifest(), archive, BASE_END + timedelta(seconds=30))

    assert refused.value.reason is Reason.ARCHIVE_GAP
    assert "missing segment 000000010000000000000004" in refused.value.message


def test_an_archive_without_the_base_backup_s_first_segment_is_an_archive_gap() -> None:
    with pytest.raises(RunnerError) as refused:
        plan_recovery(manifest(), index(entry(4, BASE_END + timedelta(minutes=1))), BASE_END + timedelta(seconds=1))

    assert refused.value.reason is Reason.ARCHIVE_GAP
    assert "has no 000000010000000000000003, where the base backup starts" in refused.value.message


GAP = Gap("000000010000000000000003", "000000010000000000000004", "000000010000000000000006",
          "000000010000000000000007", "2026-12-07T10:02:00Z")  # fmt: skip


def before_gap() -> dict[str, WalEntry]:
    """Segment 4 archived in part when the server removed the rest of it (and 5, 6)."""
    return index(entry(3, BASE_END + timedelta(seconds=5)), entry(4, BASE_END + timedelta(seconds=30), closed=False))


def gapped() -> dict[str, WalEntry]:
    """Archiving resumed at 7 after the gap."""
    return before_gap() | index(entry(7, BASE_END + timedelta(minutes=3)))


def test_a_point_before_a_recorded_gap_is_planned_up_to_it() -> None:
    plan = plan_recovery(manifest(), gapped(), BASE_END + timedelta(seconds=20), [GAP])

    assert [e.segment[-1] for e in plan.entries] == ["3", "4"]


def test_a_point_across_a_recorded_gap_is_an_archive_gap_naming_its_segments() -> None:
    with pytest.raises(RunnerError) as refused:
        plan_recovery(manifest(), gapped(), BASE_END + timedelta(minutes=2), [GAP])

    assert refused.value.reason is Reason.ARCHIVE_GAP
    assert refused.value.message.startswith(
        "the WAL archive has a gap: segments 000000010000000000000004 to 000000010000000000000006 were removed from"
        " the server before they were archived (found at 2026-12-07T10:02:00Z)"
    )


def test_a_partial_segment_before_another_is_never_replayed_past() -> None:
    with pytest.raises(RunnerError) as refused:
        plan_recovery(manifest(), gapped(), BASE_END + timedelta(minutes=2))

    assert refused.value.reason is Reason.ARCHIVE_GAP
    assert "holds only part of 000000010000000000000004" in refused.value.message


def test_a_gap_is_recorded_from_the_removed_segment_to_the_one_before_the_resume() -> None:
    found = BASE_END + timedelta(minutes=2)

    gap = wal_gap(before_gap(), "000000010000000000000004", "000000010000000000000007", MB16, found)

    assert gap == GAP
    assert gap.name == "000000010000000000000007.gap.json"


@pytest.mark.parametrize("resume", ["000000010000000000000004", "000000010000000000000002"])
def test_a_server_that_keeps_wal_no_later_than_the_removed_segment_is_refused(resume: str) -> None:
    with pytest.raises(RunnerError) as refused:
        wal_gap(before_gap(), "000000010000000000000004", resume, MB16, BASE_END)

    assert refused.value.reason is Reason.ARCHIVE_GAP
    assert "the server's WAL is behind the archive's newest segment (000000010000000000000004)" in (
        refused.value.message
    )


def test_segment_names_and_positions_agree() -> None:
    assert segment_name(1, lsn("0/3000028"), MB16) == "000000010000000000000003"
    assert segment_name(2, lsn("1/0"), MB16) == "000000020000000100000000"
    assert segment_start("000000020000000100000000", MB16) == lsn("1/0")
    assert next_segment("0000000200000001000000FF", MB16) == "000000020000000200000000"
    assert next_segment("000000020000000200000000", MB16, -1) == "0000000200000001000000FF"


def test_slot_names_are_what_postgresql_accepts_and_differ_by_name() -> None:
    assert slot_name("App-Orders.prod") == "dbb_app_orders_prod_" + slot_name("App-Orders.prod")[-8:]
    assert slot_name("a.b") != slot_name("a_b")
    assert len(slot_name("x" * 200)) <= 63


def test_databases_are_named_or_renamed_and_at_least_one_is_needed() -> None:
    assert parse_databases(("shop", "crm=crm_copy")) == {"shop": "shop", "crm": "crm_copy"}
    with pytest.raises(RunnerError, match="name the databases"):
        parse_databases(())
