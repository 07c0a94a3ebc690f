"""The archiver's decisions, without a server: where a run starts, what a gap is, how much of a binlog is whole;
and the point-in-time replay's plan."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runner.archive import MAGIC, ROTATE_EVENT, Entry, Scan, binlog_key, scan, start_binlog
from runner.archivestore import Gap
from runner.binlog import Coordinates
from runner.crypto import Key, Keyring
from runner.errors import Reason, RunnerError
from runner.manifest import Manifest
from runner.pitr import check_keys, parse_instant, plan_replay
from tests.unit.test_runner_binlog import MANIFEST


def entry(name: str, *, closed: bool = True) -> Entry:
    return Entry(name, name + ".zst", closed, None, None, 100, 50, "ab")


def archived(*names: str, open_one: str | None = None) -> dict[str, Entry]:
    found = {n: entry(n) for n in names}
    return found | ({open_one: entry(open_one, closed=False)} if open_one else {})


NOW = "2026-12-07T12:00:00Z"


def test_binlogs_sort_by_their_number_not_their_text() -> None:
    names = ["mysql-bin.1000000", "mysql-bin.000010", "mysql-bin.000009"]
    assert sorted(names, key=binlog_key) == ["mysql-bin.000009", "mysql-bin.000010", "mysql-bin.1000000"]


@pytest.mark.parametrize(
    ("server", "index", "expected"),
    [
        (["b.000003", "b.000004"], {}, "b.000003"),  # the first run: the oldest the server has
        (["b.000003", "b.000004", "b.000005"], archived("b.000003"), "b.000004"),
        # The open binlog of a killed run is streamed whole again, and replaces its partial.
        (["b.000003", "b.000004"], archived("b.000003", open_one="b.000004"), "b.000004"),
        (["b.000009", "b.000010"], archived("b.000009"), "b.000010"),
    ],
)
def test_a_run_starts_after_the_newest_closed_binlog(server: list[str], index: dict[str, Entry], expected: str) -> None:
    assert start_binlog(server, index, FOUND) == (expected, None)


FOUND = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("server", "index", "gap"),
    [
        (["b.000006", "b.000007"], archived("b.000003"), Gap("b.000003", "b.000004", "b.000005", "b.000006", NOW)),
        (["b.000005"], archived("b.000003"), Gap("b.000003", "b.000004", "b.000004", "b.000005", NOW)),
        # The open binlog of a run that closed none, purged: its partial is not whole, so it is in the gap.
        (["b.000004"], archived(open_one="b.000002"), Gap(None, "b.000002", "b.000003", "b.000004", NOW)),
    ],
)
def test_a_binlog_the_server_no_longer_has_is_a_gap_recorded_and_the_run_resumes_after_it(
    server: list[str], index: dict[str, Entry], gap: Gap
) -> None:
    assert start_binlog(server, index, FOUND) == (gap.resumed_at, gap)
    assert Gap.from_json(gap.to_json()) == gap
    assert gap.name == f"{gap.resumed_at}.gap.json"


@pytest.mark.parametrize(
    ("server", "index", "message"),
    [
        (["b.000001"], archived("b.000003"), "was it reset"),
        ([], {}, "lists no binlogs"),
    ],
)
def test_a_server_that_was_reset_or_lists_nothing_ends_the_run(
    server: list[str], index: dict[str, Entry], message: str
) -> None:
    with pytest.raises(RunnerError, match=message) as raised:
        start_binlog(server, index, FOUND)
    assert raised.value.reason is Reason.ARCHIVE_GAP


def event(timestamp: int, kind: int, body: bytes = b"x" * 10) -> bytes:
    size = 19 + len(body)
    return struct.pack("<IBIIIH", timestamp, kind, 1, size, 0, 0) + body


def test_a_scan_counts_whole_events_only_and_sees_the_rotation(tmp_path: Path) -> None:
    path = tmp_path / "b.000001"
    whole = MAGIC + event(0, 15) + event(1000, 2) + event(1005, 2)
    path.write_bytes(whole + event(1010, ROTATE_EVENT)[:-3])

    found = scan(path)

    assert found == Scan(len(whole), first=1000, last=1005, closed=False)
    path.write_bytes(whole + event(1010, ROTATE_EVENT))
    assert scan(path, found) == Scan(len(whole) + 29, first=1000, last=1010, closed=True)


def test_a_binlog_scanned_before_its_magic_was_written_is_read_from_its_start_again(tmp_path: Path) -> None:
    path = tmp_path / "b.000001"
    path.write_bytes(MAGIC[:2])
    early = scan(path)
    assert early == Scan(0)

    path.write_bytes(MAGIC + event(1000, 2))

    assert scan(path, early) == Scan(len(MAGIC) + 29, first=1000, last=1000, closed=False)


def test_a_file_that_is_not_a_binlog_has_nothing_whole(tmp_path: Path) -> None:
    path = tmp_path / "b.000001"
    path.write_bytes(b"not a binlog")
    assert scan(path) == Scan(0)


# --- the replay's plan ---------------------------------------------------------------------------------------


def timed(name: str, first: str, last: str) -> Entry:
    return Entry(name, name + ".zst", True, first, last, 100, 50, "ab")


def backup_manifest(**changes: Any) -> Manifest:
    written = Manifest.from_json(json.dumps(MANIFEST | {"databases": ["ledger"], "end": "2026-12-07T10:00:05Z"}))
    return replace(written, **({"binlog": Coordinates("b.000002", 1234, "0-1-42")} | changes))


INDEX = {
    "b.000002": timed("b.000002", "2026-12-07T09:00:00Z", "2026-12-07T10:00:30Z"),
    "b.000003": timed("b.000003", "2026-12-07T10:00:30Z", "2026-12-07T10:01:00Z"),
    "b.000004": timed("b.000004", "2026-12-07T10:01:00Z", "2026-12-07T10:02:00Z"),
}


@pytest.mark.parametrize(
    ("point", "files", "stop"),
    [
        ("2026-12-07T10:00:10Z", ["b.000002"], "2026-12-07T10:00:10+00:00"),
        # A fraction: the replay stops at the second it falls in, never after it.
        ("2026-12-07T10:00:40.750Z", ["b.000002", "b.000003"], "2026-12-07T10:00:40+00:00"),
        ("2026-12-07T11:01:30+01:00", ["b.000002", "b.000003", "b.000004"], "2026-12-07T10:01:30+00:00"),
    ],
)
def test_the_replay_reads_the_binlogs_from_the_coordinates_to_the_point(
    point: str, files: list[str], stop: str
) -> None:
    plan = plan_replay(backup_manifest(), INDEX, parse_instant(point))

    assert [e.file for e in plan.entries] == files
    assert plan.stop.isoformat() == stop
    assert plan.coordinates.position == 1234


@pytest.mark.parametrize(
    ("manifest", "index", "point", "reason", "message"),
    [
        (
            backup_manifest(binlog=None),
            INDEX,
            "2026-12-07T10:00:10Z",
            Reason.INVALID_ARGUMENTS,
            "no binlog coordinates",
        ),
        (backup_manifest(), INDEX, "2026-12-07T10:00:04Z", Reason.INVALID_ARGUMENTS, "before the backup ended"),
        (backup_manifest(), INDEX, "2026-12-07T10:02:01Z", Reason.INVALID_ARGUMENTS, "after what the archive reaches"),
        (
            backup_manifest(),
            {k: v for k, v in INDEX.items() if k != "b.000003"},
            "2026-12-07T10:01:30Z",
            Reason.ARCHIVE_GAP,
            "missing binlog b.000003",
        ),
        (backup_manifest(), {"b.000003": INDEX["b.000003"]}, "2026-12-07T10:00:40Z", Reason.ARCHIVE_GAP, "no b.000002"),
        (
            backup_manifest(databases=["a", "b"]),
            INDEX,
            "2026-12-07T10:00:10Z",
            Reason.INVALID_ARGUMENTS,
            "one-database backups only",
        ),
    ],
)
def test_a_point_the_backup_and_archive_cannot_reach_is_refused(
    manifest: Manifest, index: dict[str, Entry], point: str, reason: Reason, message: str
) -> None:
    with pytest.raises(RunnerError, match=message) as raised:
        plan_replay(manifest, index, parse_instant(point))
    assert raised.value.reason is reason


def test_a_point_in_time_needs_a_zone() -> None:
    with pytest.raises(RunnerError, match="with a zone"):
        parse_instant("2026-12-07T10:00:00")


SECRET = bytes(range(32))
KEY = Key("2026-12", SECRET)


def test_an_encrypted_binlog_s_entry_names_its_key_as_a_manifest_does() -> None:
    encrypted = replace(timed("b.000002", "2026-12-07T09:00:00Z", "2026-12-07T10:00:30Z"), object="b.000002.zst.enc")
    encrypted = replace(encrypted, key_id=KEY.id, key_fingerprint=KEY.fingerprint)

    written = json.loads(encrypted.to_json())

    assert (written["keyId"], written["keyFingerprint"]) == ("2026-12", KEY.fingerprint)
    assert Entry.from_json(encrypted.to_json()) == encrypted
    assert encrypted.encrypted
    plain = INDEX["b.000002"]
    assert "keyId" not in json.loads(plain.to_json())
    assert not plain.encrypted


@pytest.mark.parametrize(
    ("keys", "reason", "message"),
    [
        (None, Reason.INVALID_ARGUMENTS, "b.000003.zst.enc is encrypted: give key '2026-12' (--key-file, --key-dir)"),
        (
            Keyring.of(Key("old", bytes(32))),
            Reason.DECRYPT_FAILED,
            "b.000003.zst.enc needs key '2026-12', which is not among those given (ids: 'old')",
        ),
    ],
)
def test_a_replay_without_the_key_of_an_encrypted_binlog_is_refused_before_it_starts(
    keys: Keyring | None, reason: Reason, message: str
) -> None:
    third = replace(INDEX["b.000003"], object="b.000003.zst.enc", key_id=KEY.id, key_fingerprint=KEY.fingerprint)
    plan = plan_replay(backup_manifest(), INDEX | {"b.000003": third}, parse_instant("2026-12-07T10:01:30Z"))

    with pytest.raises(RunnerError) as raised:
        check_keys(plan, keys)

    assert (raised.value.reason, raised.value.message) == (reason, f"archived binlog {message}")
    check_keys(plan, Keyring.of(Key("old", bytes(32)), KEY))  # the key among others: no refusal


# b.000003 was purged before it was archived; the archiver resumed at b.000004.
GAP = Gap("b.000002", "b.000003", "b.000003", "b.000004", "2026-12-07T10:01:10Z")
GAPPED = {k: v for k, v in INDEX.items() if k != "b.000003"}


def test_a_replay_that_would_cross_a_gap_is_refused_naming_the_missing_binlogs() -> None:
    with pytest.raises(RunnerError) as raised:
        plan_replay(backup_manifest(), GAPPED, parse_instant("2026-12-07T10:01:30Z"), [GAP])

    assert raised.value.reason is Reason.ARCHIVE_GAP
    assert "binlog b.000003 was purged from the server before it was archived" in raised.value.message


def test_a_replay_that_ends_before_a_gap_or_starts_after_it_is_planned() -> None:
    before = plan_replay(backup_manifest(), GAPPED, parse_instant("2026-12-07T10:00:10Z"), [GAP])
    after_it = backup_manifest(binlog=Coordinates("b.000004", 4, None), end="2026-12-07T10:01:05Z")
    after = plan_replay(after_it, GAPPED, parse_instant("2026-12-07T10:01:30Z"), [GAP])

    assert [e.file for e in before.entries] == ["b.000002"]
    assert [e.file for e in after.entries] == ["b.000004"]


def test_a_replay_past_a_binlog_archived_only_in_part_is_refused() -> None:
    # The partial of b.000003, purged before it closed: the events after its part were never archived.
    partial = INDEX | {"b.000003": replace(INDEX["b.000003"], closed=False)}
    gap = Gap("b.000002", "b.000003", "b.000003", "b.000004", "2026-12-07T10:01:10Z")

    with pytest.raises(RunnerError, match="after a gap in the archive") as raised:
        plan_replay(backup_manifest(), partial, parse_instant("2026-12-07T10:01:30Z"), [gap])
    with pytest.raises(RunnerError, match=r"only part of binlog b\.000003"):
        plan_replay(backup_manifest(), partial, parse_instant("2026-12-07T10:01:30Z"))
    assert raised.value.reason is Reason.ARCHIVE_GAP
