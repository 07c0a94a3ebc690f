"""File names, retention plans and temporary files: what is ours, and what retention and cleanup may touch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.runner.naming import (
    BackupName,
    parse_backup_name,
    retention_plan,
    stale_temporaries,
    temporary_name,
    validate_prefix,
)


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
    assert retention_plan(present, "db", keep) == deleted


def test_retention_deletes_a_manifest_with_its_backup_and_nothing_foreign() -> None:
    present = [*backups(1, 2), "db-20250101T000000Z.dump.json", "notes.txt", "db-old.dump", "dbx-20250101T000000Z.dump"]
    assert retention_plan(present, "db", 1) == ["db-20250101T000000Z.dump", "db-20250101T000000Z.dump.json"]


def test_retention_never_deletes_the_protected_backup() -> None:
    assert retention_plan(backups(1, 2, 3), "db", 1, protect=backups(1)[0]) == backups(2)


def test_retention_refuses_to_keep_nothing() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        retention_plan(backups(1), "db", 0)


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
