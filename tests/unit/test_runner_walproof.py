"""The pure half of the PostgreSQL archive proof: which segments recover one base backup to another's end LSN
(`pgpitr.plan_to_lsn`), which base backups a proof starts and ends at (`walproof.choose`), and what differs between
the recovered copy and the newer base backup (`walproof.first_difference`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from runner.archivestore import FolderArchive
from runner.basebackup import BaseManifest
from runner.errors import Reason, RunnerError
from runner.pgpitr import plan_to_lsn
from runner.walarchive import WalEntry
from runner.walproof import Base, WalProof, choose, first_difference

MB16 = 16 << 20


def manifest(start_lsn: str, end_lsn: str, file: str = "app-20261207T100000Z.base.tar.zst") -> BaseManifest:
    return BaseManifest(
        file, "15.18", "pg_basebackup 15", "db", 5432, "u", 1, "0" * 64, "none", None, None,
        "2026-12-07T10:00:00.000000Z", "2026-12-07T10:00:01.000000Z", 1.0, 1, start_lsn, end_lsn, MB16,
    )  # fmt: skip


OLDER = manifest("0/3000028", "0/3000100", "app-20261207T090000Z.base.tar.zst")
NEWER = manifest("0/6000028", "0/6000100", "app-20261207T100000Z.base.tar.zst")


def entry(number: int, *, closed: bool = True, end_lsn: str | None = None) -> WalEntry:
    name = f"00000001000000000000{number:04X}"
    return WalEntry(name, name + ".zst", closed, 1, None, end_lsn, None, MB16, 10, "0" * 64)


def index(*numbers: int) -> dict[str, WalEntry]:
    return {e.segment: e for e in (entry(n) for n in numbers)}


def test_the_segments_from_the_older_s_start_to_the_one_holding_the_newer_s_end_are_planned() -> None:
    planned = plan_to_lsn(OLDER, index(2, 3, 4, 5, 6, 7), NEWER)

    assert [e.segment[-1] for e in planned] == ["3", "4", "5", "6"]
    assert [e.segment[-1] for e in plan_to_lsn(NEWER, index(2, 3, 4, 5, 6, 7), NEWER)] == ["6"]


@pytest.mark.parametrize(
    ("archive", "says"),
    [
        (index(4, 5, 6), "the WAL archive has no 000000010000000000000003, where app-20261207T090000Z"),
        (
            index(3, 4, 6),
            "the WAL archive is missing segment 000000010000000000000005, before 000000010000000000000006",
        ),
        (index(3, 4, 5), "the WAL archive ends at 000000010000000000000005, before 000000010000000000000006"),
        (
            {**index(3, 4, 5), "000000010000000000000006": entry(6, closed=False, end_lsn="0/6000100")},
            "the WAL archive holds 000000010000000000000006 only up to 0/6000100, not yet past",
        ),
    ],
    ids=["no first segment", "a segment missing", "ends before", "partial not past the end"],
)
def test_an_archive_that_does_not_join_the_two_is_an_archive_gap(archive: dict[str, WalEntry], says: str) -> None:
    with pytest.raises(RunnerError) as refused:
        plan_to_lsn(OLDER, archive, NEWER)

    assert refused.value.reason is Reason.ARCHIVE_GAP
    assert refused.value.message.startswith(says)


def test_a_partial_end_segment_past_the_end_lsn_is_enough() -> None:
    archive = {**index(3, 4, 5), "000000010000000000000006": entry(6, closed=False, end_lsn="0/6000200")}

    assert len(plan_to_lsn(OLDER, archive, NEWER)) == 4


def test_another_timeline_is_refused() -> None:
    with pytest.raises(RunnerError) as refused:
        plan_to_lsn(OLDER, index(3, 4, 5, 6), replace(NEWER, timeline=2))

    assert refused.value.message == (
        "app-20261207T090000Z.base.tar.zst is on timeline 1, app-20261207T100000Z.base.tar.zst on 2"
    )


def archive_of(folder: Path, *numbers: int) -> FolderArchive:
    folder.mkdir()
    for number in numbers:
        written = entry(number)
        (folder / f"{written.segment}.json").write_text(written.to_json())
    return FolderArchive(folder)


def test_the_newest_older_base_backup_the_archive_reaches_the_newest_from_is_chosen(tmp_path: Path) -> None:
    oldest = Base(manifest("0/1000028", "0/1000100", "app-20261207T080000Z.base.tar.zst"), "oldest")
    middle = Base(manifest("0/3000028", "0/3000100", "app-20261207T090000Z.base.tar.zst"), "middle")
    newest = Base(NEWER, "newest")
    # 1 and 2 are archived but 3 is not: the middle one cannot start; the oldest cannot cross 3 either.
    store = archive_of(tmp_path / "wal", 1, 2, 4, 5, 6)

    chosen = choose([newest, middle, oldest], lambda _: store)

    assert isinstance(chosen, str)
    assert chosen == (
        f"the WAL archive at {store.where} does not reach {NEWER.file} from any older base backup (from "
        f"{middle.manifest.file}: the WAL archive has no 000000010000000000000003, where {middle.manifest.file} starts)"
    )

    whole = archive_of(tmp_path / "whole", 1, 2, 3, 4, 5, 6)
    proof = choose([newest, middle, oldest], lambda _: whole)

    assert isinstance(proof, WalProof)
    assert (proof.older, proof.newer) == (middle, newest)
    assert [e.segment[-1] for e in proof.replay] == ["3", "4", "5", "6"]
    assert [e.segment[-1] for e in proof.own] == ["6"]


def test_one_base_backup_or_none_is_nothing_to_prove(tmp_path: Path) -> None:
    def unused(_: Base) -> FolderArchive:
        raise AssertionError("no archive is read")

    assert choose([], unused) == "there is no base backup of this owner to prove the WAL archive against yet"
    assert (
        choose([Base(NEWER, "n")], unused)
        == f"{NEWER.file} is the only base backup yet: a proof needs an older one too"
    )


SAME = {"app": {"public.rows": (3, "-12"), "public.notes": (1, "7")}, "postgres": {}}


@pytest.mark.parametrize(
    ("replayed", "says"),
    [
        (SAME, None),
        ({"app": SAME["app"]}, "database 'postgres' of the base backup is missing from the recovered copy"),
        ({**SAME, "extra": {}}, "database 'extra' is in the recovered copy, not in the base backup"),
        ({**SAME, "app": {"public.rows": (3, "-12")}}, "table app.public.notes of the base backup is missing"),
        (
            {**SAME, "app": {**SAME["app"], "public.rows": (4, "-12")}},
            "table app.public.rows has 4 rows recovered, 3 in the base backup",
        ),
        (
            {**SAME, "app": {**SAME["app"], "public.rows": (3, "5")}},
            "table app.public.rows has the same 3 rows, but other contents (checksum 5, not -12)",
        ),
    ],
    ids=["same", "database missing", "database extra", "table missing", "rows differ", "contents differ"],
)
def test_the_first_difference_names_the_database_and_table(
    replayed: dict[str, dict[str, tuple[int, str]]], says: str | None
) -> None:
    found = first_difference(replayed, SAME)

    if says is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(says)
