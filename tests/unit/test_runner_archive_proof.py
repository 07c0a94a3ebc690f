"""The pure half of `check --prove-archive`: which two backups are compared (`choose`), the replay planned between
them to exactly the newer one's binlog position (`pitr.plan_replay_to`), and how a difference is told."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runner.archiveproof import choose, first_difference, provable
from runner.archivestore import Entry, FolderArchive, Gap
from runner.binlog import Coordinates
from runner.engines import mysql_binlog_replay_argv
from runner.errors import RunnerError
from runner.listing import Found
from runner.pitr import plan_replay_to
from tests.unit.test_runner_binlog_archive import GAP, GAPPED, INDEX, backup_manifest


def backup(name: str, file: str, position: int, **changes: Any) -> Found:
    manifest = backup_manifest(file=name, binlog=Coordinates(file, position, None), **changes)
    return Found(manifest, f"/backups/{name}", present=True)


OLDEST = backup("ledger-20261207T090000Z.sql.gz", "b.000001", 4)  # before the archive's first binlog
OLDER = backup("ledger-20261207T095900Z.sql.gz", "b.000002", 1234)
NEWER = backup("ledger-20261207T100100Z.sql.gz", "b.000004", 60, end="2026-12-07T10:01:02Z")


def archive(folder: Path, index: dict[str, Entry], gaps: Sequence[Gap] = ()) -> FolderArchive:
    """An archive folder holding the entries of `index` (their data objects are not needed to plan) and `gaps`."""
    for entry in index.values():
        (folder / f"{entry.file}.json").write_text(entry.to_json())
    for gap in gaps:
        (folder / gap.name).write_text(gap.to_json())
    return FolderArchive(folder)


def test_the_replay_runs_from_the_older_backups_coordinates_to_exactly_the_newer_ones() -> None:
    plan = plan_replay_to(OLDER.manifest, INDEX, NEWER.manifest)

    assert [e.file for e in plan.entries] == ["b.000002", "b.000003", "b.000004"]
    assert (plan.coordinates.position, plan.stop_position) == (1234, 60)
    assert plan.stop.isoformat() == "2026-12-07T10:01:02+00:00"  # the newer backup's end, for the record


def test_the_binlog_tool_stops_at_a_position_in_the_last_file_instead_of_a_time() -> None:
    argv = mysql_binlog_replay_argv(["a", "b"], 1234, "2026-12-07 10:00:00", "ledger", "ledger", stop_position=60)

    assert "--stop-position=60" in argv
    assert not any(a.startswith("--stop-datetime") for a in argv)
    assert argv[-3:] == ["--", "a", "b"]


@pytest.mark.parametrize(
    ("index", "gaps", "newer", "message"),
    [
        (INDEX, [], backup("n", "b.000005", 4).manifest, "no b.000005 yet"),
        # The open binlog archived so far, not yet to the newer backup's position.
        (INDEX | {"b.000004": replace(INDEX["b.000004"], closed=False)}, [], backup("n", "b.000004", 101).manifest,
         "up to 100, not yet to 101"),
        (GAPPED, [], NEWER.manifest, "missing binlog b.000003"),
        (GAPPED, [GAP], NEWER.manifest, "after a gap in the archive"),
        (INDEX, [], backup("n", "b.000002", 1000).manifest, "coordinates are before"),
    ],
)  # fmt: skip
def test_a_replay_the_archive_cannot_make_is_refused(
    index: dict[str, Entry], gaps: list[Gap], newer: Any, message: str
) -> None:
    with pytest.raises(RunnerError, match=message):
        plan_replay_to(OLDER.manifest, index, newer, gaps)


def test_the_newest_backup_is_proven_from_the_newest_older_one_the_archive_reaches_it_from(tmp_path: Path) -> None:
    between = backup("ledger-20261207T100030Z.sql.gz", "b.000003", 10)
    # A backup of another database, in between, is never the older one.
    other = backup("other-20261207T100040Z.sql.gz", "b.000003", 20, databases=["other"])

    chosen = choose([NEWER, other, between, OLDER], lambda _: archive(tmp_path, INDEX))

    assert not isinstance(chosen, str)
    assert (chosen.older, chosen.newer) == (between, NEWER)
    assert [e.file for e in chosen.plan.entries] == ["b.000003", "b.000004"]


def test_an_older_backup_before_the_archive_begins_is_passed_over_for_one_after(tmp_path: Path) -> None:
    chosen = choose([NEWER, OLDEST, OLDER], lambda _: archive(tmp_path, INDEX))

    assert not isinstance(chosen, str)
    assert chosen.older == OLDER


@pytest.mark.parametrize(
    ("backups", "why"),
    [
        ([], "there is no MySQL backup with binlog coordinates to prove the archive against yet"),
        ([NEWER], "ledger-20261207T100100Z.sql.gz is the only backup of 'ledger' yet: a proof needs an older one too"),
        (
            [NEWER, OLDEST],
            "the archive at {archive} does not reach ledger-20261207T100100Z.sql.gz from any older "
            "backup (from ledger-20261207T090000Z.sql.gz: the archive has no b.000001, where the backup's snapshot "
            "sits)",
        ),
    ],
)
def test_with_nothing_to_prove_yet_the_choice_says_why(backups: list[Found], why: str, tmp_path: Path) -> None:
    assert choose(backups, lambda _: archive(tmp_path, INDEX)) == why.format(archive=tmp_path)


def test_only_present_one_database_mysql_backups_with_coordinates_take_part() -> None:
    assert provable(OLDER)
    assert not provable(replace(OLDER, present=False))
    assert not provable(Found(replace(OLDER.manifest, binlog=None), OLDER.where, True))
    assert not provable(Found(replace(OLDER.manifest, databases=["a", "b"]), OLDER.where, True))
    assert not provable(Found(replace(OLDER.manifest, engine="postgresql"), OLDER.where, True))


@pytest.mark.parametrize(
    ("replayed", "restored", "said"),
    [
        ({"a": (1, "7")}, {"a": (1, "7")}, None),
        ({"a": (1, "7"), "b": (2, "9")}, {"a": (1, "7")}, "table 'b' is in the replayed copy, not in the backup"),
        ({"a": (1, "7")}, {"a": (1, "7"), "b": (0, "0")}, "table 'b' of the backup is missing from the replayed copy"),
        ({"a": (1, "7"), "b": (2, "9")}, {"a": (1, "8"), "b": (3, "9")}, "table 'a' has the same 1 rows, but other "
         "contents: CHECKSUM TABLE 7 replayed, 8 in the backup"),
        ({"b": (2, "9")}, {"b": (3, "9")}, "table 'b' has 2 rows replayed, 3 in the backup"),
    ],
)  # fmt: skip
def test_the_first_difference_in_table_order_is_told(
    replayed: dict[str, tuple[int, str]], restored: dict[str, tuple[int, str]], said: str | None
) -> None:
    assert first_difference(replayed, restored) == said
