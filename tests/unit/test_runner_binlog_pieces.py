"""The open binlog, published in pieces: each publish stores what the binlog grew by, and carries over the last
pieces no longer than the new one (a binary counter), so that a binlog published n times is held in at most
log2(n) + 1 pieces and each byte is stored at most that often; a reader joins the pieces back into the binlog.
Through a real archive folder, without a server (the spool file is written here as the tool would)."""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path

import pytest

from runner.archive import MAGIC, ROTATE_EVENT, ArchiveOptions, Archiver, Published, grown, scan
from runner.archiveprune import prune_binlogs
from runner.archivestatus import ArchiveStatus
from runner.archivestore import Entry, FolderArchive, Gap, Piece, is_piece, piece_stem
from runner.crypto import Key, Keyring
from runner.engines import Connection
from runner.errors import Reason, RunnerError
from runner.pitr import unpacked, unpacked_current
from tests.unit.test_runner_archive_prune import backup_at

NAME = "mysql-bin.000004"


def event(timestamp: int, kind: int = 2, body: bytes = b"x" * 200) -> bytes:
    size = 19 + len(body)
    return struct.pack("<IBIIIH", timestamp, kind, 1, size, 0, 0) + body


def published(*ranges: tuple[int, int]) -> list[Published]:
    return [Published(start, end, f"o{start}", 1, "ab") for start, end in ranges]


def test_a_new_piece_takes_over_each_last_piece_no_longer_than_itself() -> None:
    assert grown([], 100) == ([], 0, [])
    # [0, 100) is longer than 40: kept; the new piece is [100, 140).
    assert grown(published((0, 100)), 140) == (published((0, 100)), 100, [])
    # [100, 140) is no longer than [140, 190): taken over; [0, 100) is longer than [100, 190): kept.
    assert grown(published((0, 100), (100, 140)), 190) == (published((0, 100)), 100, published((100, 140)))
    # Both carry: the binlog is stored whole again, from its start.
    assert grown(published((0, 100), (100, 150)), 200) == ([], 0, published((100, 150), (0, 100)))


@pytest.mark.parametrize("publishes", [1, 2, 7, 64, 1000])
def test_a_binlog_published_n_times_is_in_at_most_log2_n_plus_1_pieces_each_byte_stored_at_most_that_often(
    publishes: int,
) -> None:
    pieces: list[Published] = []
    stored = 0
    for size in range(100, 100 * (publishes + 1), 100):
        kept, start, _replaced = grown(pieces, size)
        pieces = [*kept, Published(start, size, "o", 1, "ab")]
        stored += size - start
    size = 100 * publishes
    bound = math.floor(math.log2(publishes)) + 1
    assert [p.start for p in pieces] == [0, *(p.end for p in pieces[:-1])]  # contiguous, from the binlog's start
    assert pieces[-1].end == size
    assert len(pieces) <= bound
    assert stored <= bound * size  # publishing it whole each time: publishes * (publishes + 1) / 2 * 100
    assert all(a.end - a.start > b.end - b.start for a, b in itertools.pairwise(pieces))


def test_an_entry_with_pieces_round_trips_and_names_its_objects_in_order() -> None:
    entry = Entry(
        NAME,
        f"{NAME}.partial.zst",
        False,
        None,
        None,
        300,
        40,
        "a" * 64,
        None,
        None,
        (
            Piece(f"{piece_stem(NAME, 200)}.zst", 200, 20, "b" * 64),
            Piece(f"{piece_stem(NAME, 250)}.zst", 250, 10, "c" * 64),
        ),
    )

    again = Entry.from_json(entry.to_json())

    assert again == entry
    assert [(e.object, size) for e, size in entry.piece_entries()] == [
        (f"{NAME}.partial.zst", 200),
        (f"{NAME}.partial.000000000200.zst", 50),
        (f"{NAME}.partial.000000000250.zst", 50),
    ]
    assert entry.stored_size == 70
    assert Entry.from_json(replace_pieces(entry.to_json())).pieces == ()  # an entry written before pieces


def replace_pieces(text: str) -> str:
    data = json.loads(text)
    del data["pieces"]
    return json.dumps(data)


@pytest.mark.parametrize(
    ("name", "piece"),
    [
        (f"{NAME}.partial.000000000200.zst", True),
        (f"{NAME}.partial.000000000200.zst.enc", True),
        (f"{NAME}.partial.zst", False),
        (f"{NAME}.partial.json", False),
        ("mysql-bin.0000040.partial.000000000200.zst", False),
        (f"{NAME}.partial.200.zst", False),
    ],
)
def test_a_piece_is_known_by_its_name(name: str, piece: bool) -> None:
    assert is_piece(NAME, name) is piece


def archiver(folder: Path, key: Key | None = None) -> tuple[Archiver, Path]:
    store = FolderArchive(folder / "archive")
    store.folder.mkdir()
    spool = folder / "spool"
    spool.mkdir()
    options = ArchiveOptions(Connection("db", 3306, "backup"), store, max_lag=2, key=key)
    return Archiver(options, spool, store.index(), [], ArchiveStatus()), spool


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_an_open_binlog_published_in_pieces_reads_back_byte_for_byte_and_leaves_no_stray_object(
    tmp_path: Path, encrypted: bool
) -> None:
    key = Key("2026-12", bytes(range(32))) if encrypted else None
    work, spool = archiver(tmp_path, key)
    binlog = spool / NAME
    data = MAGIC
    for second in range(1, 24):
        data += b"".join(event(1_000 + second) for _ in range(second))
        binlog.write_bytes(data)
        work.publish(NAME, scan(binlog), closed=False)
        entry = work.store.index()[NAME]
        assert not entry.closed
        assert entry.binlog_size == len(data)
        assert len(entry.pieces) + 1 <= math.floor(math.log2(second)) + 1
        stray = set(work.store.names(NAME)) - {f"{NAME}.partial.json", *(e.object for e, _ in entry.piece_entries())}
        assert stray == set()
        read = tmp_path / "read"
        read.mkdir(exist_ok=True)
        assert unpacked(work.store, entry, read, Keyring.of(key) if key else None).read_bytes() == data

    binlog.write_bytes(data + event(2_000, ROTATE_EVENT))
    work.publish(NAME, scan(binlog), closed=True)

    assert work.store.names(NAME) == sorted([f"{NAME}.json", f"{NAME}.zst" + (".enc" if encrypted else "")])


def test_a_run_that_starts_an_open_binlog_again_removes_every_piece_an_earlier_run_left(tmp_path: Path) -> None:
    work, spool = archiver(tmp_path)
    binlog = spool / NAME
    data = MAGIC
    for second in range(1, 6):
        data += event(1_000 + second) * (6 - second)  # shrinking steps: each publish adds a piece
        binlog.write_bytes(data)
        work.publish(NAME, scan(binlog), closed=False)
    assert len(work.store.index()[NAME].pieces) >= 2
    work.store.put(f"{piece_stem(NAME, 99)}.zst", b"a piece whose entry was never written")

    again = Archiver(work.options, spool, work.store.index(), [], ArchiveStatus())
    again.publish(NAME, scan(binlog), closed=False)

    assert work.store.index()[NAME].pieces == ()
    assert work.store.names(NAME) == [f"{NAME}.partial.json", f"{NAME}.partial.zst"]


def test_a_piece_replaced_while_it_was_read_fails_that_read_and_the_current_entry_is_read_instead(
    tmp_path: Path,
) -> None:
    work, spool = archiver(tmp_path)
    binlog = spool / NAME
    data = MAGIC + event(1_001) * 4
    for step in range(3):
        data += event(1_002)
        binlog.write_bytes(data)
        work.publish(NAME, scan(binlog), closed=False)
        if step == 1:
            old = work.store.index()[NAME]  # the third publish carries its second piece over

    with pytest.raises(RunnerError) as raised:
        unpacked(work.store, old, tmp_path, None)
    assert raised.value.reason in (Reason.VERIFY_FAILED, Reason.ARCHIVE_GAP)
    assert unpacked_current(work.store, old, tmp_path, None).read_bytes() == data


def test_retention_that_prunes_an_open_binlog_a_gap_left_removes_its_pieces_too(tmp_path: Path) -> None:
    work, spool = archiver(tmp_path)
    binlog = spool / NAME
    data = MAGIC
    for second in range(1, 6):
        data += event(1_000 + second) * (6 - second)
        binlog.write_bytes(data)
        work.publish(NAME, scan(binlog), closed=False)
    partial = work.store.index()[NAME]
    assert partial.pieces
    # The server purged it before it closed; the archive resumed at .000006, where the kept backup starts.
    work.store.put(
        "mysql-bin.000006.gap.json", Gap(None, NAME, "mysql-bin.000005", "mysql-bin.000006", "x").to_json().encode()
    )

    pruned = prune_binlogs(work.store, [backup_at("mysql-bin.000006")])

    assert work.store.names("mysql-bin.") == []
    assert pruned.result() == {"pruned": 1, "prunedBytes": partial.stored_size, "keptFrom": "mysql-bin.000006"}
