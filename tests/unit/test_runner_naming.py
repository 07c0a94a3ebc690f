"""File names, retention plans and temporary files: what is ours, and what retention and cleanup may touch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runner.engines import Connection, mysql_client_argv
from runner.errors import RunnerError
from runner.naming import (
    BackupName,
    database_problem,
    orphan_manifests,
    parse_backup_name,
    stale_temporaries,
    temporary_name,
    validate_prefix,
)
from runner.restore import parse_targets
from runner.retention import retention_plan


def test_a_name_is_the_prefix_the_utc_start_and_the_extension() -> None:
    started = datetime(2025, 3, 9, 7, 5, 3, tzinfo=UTC)
    name = BackupName.new("example-db", started, ".dump.zst.enc")
    assert name.file == "example-db-20250309T070503Z.dump.zst.enc"
    assert name.manifest == "example-db-20250309T070503Z.dump.zst.enc.json"
    assert temporary_name(name.file) == ".example-db-20250309T070503Z.dump.zst.enc.partial"
    assert parse_backup_name("example-db", name.file) == name


@pytest.mark.parametrize(
    "name",
    [
        "db-old.dump",
        "db-2-20250101T000000Z.dump",
        "dbx-20250101T000000Z.dump",
        "db-20250101T000000Z.dump.json",
        "db-20250101T000000Z.dump.gz",
        "db-20250101T000000Z.sql.bz2",
        "db-20250101T0000Z.dump",
        "db-20250101T000000Z.dump.partial",
        ".db-20250101T000000Z.dump.partial",
        "db-20250101T000000Z",
    ],
)
def test_names_that_merely_look_like_ours_are_not_ours(name: str) -> None:
    assert parse_backup_name("db", name) is None


def test_a_prefix_with_regex_characters_is_taken_literally() -> None:
    assert parse_backup_name("a.b", "a.b-20250101T000000Z.sql") is not None
    assert parse_backup_name("a.b", "axb-20250101T000000Z.sql") is None


def backups(*days: int, ext: str = ".dump") -> list[str]:
    return [f"db-202501{day:02d}T000000Z{ext}" for day in days]


def verified(names: list[str]) -> dict[str, bool]:
    return dict.fromkeys(names, True)


@pytest.mark.parametrize(
    ("present", "keep", "deleted"),
    [
        (backups(1, 2, 3), 2, backups(1)),
        (backups(3, 1, 2), 1, backups(1, 2)),
        (backups(1, 2), 5, []),
        ([], 3, []),
        (
            backups(1) + backups(2, ext=".sql.zst.enc") + backups(3, ext=".tar"),
            1,
            backups(1) + backups(2, ext=".sql.zst.enc"),
        ),
    ],
)
def test_retention_deletes_the_oldest_beyond_keep_last(present: list[str], keep: int, deleted: list[str]) -> None:
    assert retention_plan(present, "db", keep, verified(present)) == deleted


def test_retention_deletes_a_manifest_with_its_backup_and_nothing_foreign() -> None:
    present = [*backups(1, 2), "db-20250101T000000Z.dump.json", "notes.txt", "db-old.dump", "dbx-20250101T000000Z.dump"]
    plan = retention_plan(present, "db", 1, verified(present))
    assert plan == ["db-20250101T000000Z.dump", "db-20250101T000000Z.dump.json"]


def test_retention_never_touches_a_file_whose_manifest_names_another_owner() -> None:
    # Same folder, same prefix (a copy, a second install, a name reused after a delete): only `ours` counts.
    present = backups(1, 2, 3, 4)
    ours = verified(backups(2, 4))
    assert retention_plan(present, "db", 1, ours) == backups(2)


def test_only_verified_backups_count_and_nothing_newer_than_the_oldest_kept_goes() -> None:
    present = backups(1, 2, 3, 4, 5)
    ours = {**verified(backups(1, 3)), **dict.fromkeys(backups(2, 4, 5), False)}
    # Keep 2 verified: 3 and 1. Nothing is older than 1; the unverified 2, 4 and 5 are newer: all stay.
    assert retention_plan(present, "db", 2, ours) == []
    # Keep 1 verified: 3; the older 1 and the unverified 2 go; the newer unverified 4 and 5 stay.
    assert retention_plan(present, "db", 1, ours) == backups(1, 2)


def test_retention_deletes_nothing_without_enough_verified_backups() -> None:
    present = backups(1, 2, 3)
    assert retention_plan(present, "db", 1, dict.fromkeys(present, False)) == []


def test_retention_never_deletes_the_protected_backup() -> None:
    present = backups(1, 2, 3)
    assert retention_plan(present, "db", 1, verified(present), protect=backups(1)[0]) == backups(2)


def test_retention_refuses_to_keep_nothing() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        retention_plan(backups(1), "db", 0, verified(backups(1)))


def test_an_orphan_manifest_is_one_without_its_file_or_the_files_writer() -> None:
    names = [
        "db-20250101T000000Z.dump.json",  # orphan
        "db-20250102T000000Z.dump.json",
        "db-20250102T000000Z.dump",
        "db-20250103T000000Z.dump.json",
        ".db-20250103T000000Z.dump.partial",  # still being published
        "dbx-20250101T000000Z.dump.json",
        "db-old.json",
    ]
    assert orphan_manifests(names, "db") == ["db-20250101T000000Z.dump.json"]


def test_stale_temporaries_are_ours_for_this_prefix_only() -> None:
    names = [
        ".db-20250101T000000Z.dump.partial",
        ".db-20250101T000000Z.dump.json.partial",
        ".dbx-20250101T000000Z.dump.partial",
        ".db-20250101T000000Z.dump.partial.keep",
        "db-20250101T000000Z.dump",
        ".other",
    ]
    assert stale_temporaries(names, "db") == [
        ".db-20250101T000000Z.dump.json.partial",
        ".db-20250101T000000Z.dump.partial",
    ]


@pytest.mark.parametrize(
    ("prefix", "ok"), [("example-db", True), ("", False), ("a/b", False), (".hidden", False), ("x" * 300, False)]
)
def test_a_prefix_must_be_a_plain_file_name(prefix: str, ok: bool) -> None:
    assert (validate_prefix(prefix) is None) is ok


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("shop", None),
        ("--init-command=CREATE DATABASE x", None),  # a name the tools get as a value: harmless
        ("a" * 64, None),
        ("a" * 65, "is longer than 64 bytes"),
        ("é" * 33, "is longer than 64 bytes"),
        ("a\0b", "holds a NUL byte"),
        ("", "is empty"),
    ],
)
def test_a_database_name_is_at_most_64_bytes_without_nul(name: str, problem: str | None) -> None:
    assert database_problem(name) == problem


@pytest.mark.parametrize("targets", [("a\0b",), ("shop=a\0b",), ("a\0b=shop",), ("shop=" + "x" * 65,)])
def test_restore_targets_no_server_takes_are_refused(targets: tuple[str, ...]) -> None:
    with pytest.raises(RunnerError) as raised:
        parse_targets(targets)
    assert raised.value.reason == "InvalidArguments"


def test_the_mysql_client_gets_the_database_as_the_value_of_its_option() -> None:
    argv = mysql_client_argv(Connection("db", 3306, "backup"), "--init-command=CREATE DATABASE pwned")
    assert argv[-1] == "--database=--init-command=CREATE DATABASE pwned"
    assert "--init-command=CREATE DATABASE pwned" not in argv


def test_a_drill_record_is_neither_a_backup_nor_a_manifest() -> None:
    record = "db-20261206T010000Z.dump.drills.jsonl"
    assert parse_backup_name("db", record) is None
    assert orphan_manifests([record], "db") == []
    found = parse_backup_name("db", "db-20261206T010000Z.dump")
    assert found is not None
    assert found.drills == record
