"""`dbb-backup archive`: continuous archiving of a MySQL/MariaDB server's binlogs into a folder or a bucket, for
point-in-time restores (`pitr`).

The server's binlogs are streamed over the replication protocol by the server's own tool, as a replica that never
stops (`mariadb-binlog --read-from-remote-server --raw --stop-never`, see `engines.mysql_binlog_stream_argv`), into
a local spool folder of this run; the tool writes each event as it arrives. Each binlog is published into
`<output-dir>/<name>-binlog/`, or under `s3://bucket/<prefix>/<name>-binlog/` (`archivestore`, the same names):

    mysql-bin.000003.zst            a closed binlog, zstd-compressed, byte for byte as the server wrote it
    mysql-bin.000003.json           its index entry: {"file", "object", "closed": true, "firstEvent", "lastEvent",
                                    "binlogSize", "size", "sha256"} (size and sha256 of the .zst as stored)
    mysql-bin.000004.partial.zst    the open binlog as far as it is archived, whole events only: its first piece
    mysql-bin.000004.partial.000000123456.zst   a later piece, from byte 123456 on
    mysql-bin.000004.partial.json   its entry ("closed": false; "pieces": the later pieces, in order)

With a key (`--encryption-key-file`) each object is encrypted after compression as a backup is (`crypto`), named
`….zst.enc`, and its entry records the key as a manifest does ("keyId", "keyFingerprint").

A binlog is closed once the tool has moved on to the next one (the server rotated it); the open one is published
at least every `max_lag / 2` seconds while it grows, so the archive is never more than `max_lag` behind the server:
what it grew by, as a new piece that takes over each last piece no longer than itself (`grown`: a binary counter, so
a binlog published n times is in at most log2(n) + 1 pieces, each byte stored at most that often, not n times).
Every file is replaced whole (a folder's through a temporary name, fsync and a rename; an object by a completed
upload), the data before its entry: an entry always describes complete files. When a binlog closes, its `.partial`
files and pieces go.

Resuming, with no gap and no duplicate: an archived binlog is the server's file of the same name, so the archive
holds each event once by construction. A run starts at the binlog after the newest one the archive has closed (the
first run: at the oldest the server has), and streams it whole from its start: the open binlog of an earlier run
(a `.partial`, or a closed file whose entry was never written) is archived again and replaces what is there. If
that binlog is gone from the server (purged before it was read), the archive has a gap it cannot close: the run
records it (`<resumed>.gap.json`, `archivestore.Gap`: the missing binlogs, when it was found), logs a warning, and
resumes at the server's oldest binlog after it; /status reports `gapAt` and a `recoverableFrom` after it, the
operator takes a new backup at once, and no point-in-time restore replays across it (`pitr`). A server whose newest
binlog is not after the archive's (it was reset) still ends the run with `ArchiveGap`.

One archiver per archive: in a folder it holds a lock on `<name>-binlog/.lock`; a bucket has none, and the operator
runs one archiver per DatabaseBackup (see `archivestore`). A run starts by removing what a killed run left
(temporary files or incomplete uploads, its spool). The tool dies with the runner, even by SIGKILL
(`Tool(die_with_parent=True)`). SIGTERM or SIGINT stop it: it waits (at most CATCH_UP seconds) until the tool has
received all the server had written at that moment, publishes the file it is on (closed if the server closed it,
else as `.partial`), and ends with `{"status": "Stopped"}`.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import structlog

from runner import engines
from runner.archiveobject import names, seal
from runner.archivestatus import ArchiveStatus
from runner.archivestore import (
    CHECKPOINT,
    ENTRY,
    PARTIAL,
    ArchiveStore,
    Checkpoint,
    Entry,
    Gap,
    Piece,
    archive_name,
    binlog_key,
    forget_pruned,
    is_piece,
    piece_stem,
    read_checkpoint,
    read_index,
    recoverable_until,
)
from runner.crypto import Key
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.process import Tool, run_capture

__all__ = [
    "ArchiveOptions",
    "Archiver",
    "Entry",
    "Published",
    "Scan",
    "archive",
    "archive_folder",
    "binlog_key",
    "grown",
    "predecessor",
    "read_index",
    "scan",
    "start_binlog",
    "successor",
]

log = structlog.get_logger("dbb-backup")

MAGIC: Final = b"\xfebin"
_HEADER: Final = struct.Struct("<IBIII")  # timestamp, type, server id, event size, next position (then 2 bytes flags)
HEADER_SIZE: Final = 19
STOP_EVENT: Final = 3
ROTATE_EVENT: Final = 4
READ_SIZE: Final = 1 << 20
CATCH_UP: Final = 10.0  # seconds a stop waits for the events the server had written
# The tool could not start at a binlog the server no longer has.
_PURGED: Final = "Could not find first log file name in binary log index file"


@dataclass(frozen=True)
class ArchiveOptions:
    connection: Connection
    store: ArchiveStore  # archive_folder's, or an S3Archive at `<prefix>/<name>-binlog`
    max_lag: float = 60.0
    key: Key | None = None  # encrypts each archived binlog as a backup is (archiveobject.seal)


def archive_folder(output_dir: Path, name: str) -> Path:
    return output_dir / archive_name(name)


def successor(name: str) -> str:
    """The binlog the server writes after `name`."""
    base, _, number = name.rpartition(".")
    return f"{base}.{int(number) + 1:0{len(number)}d}"


# --- reading a binlog file ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """What a binlog file holds so far: `size` bytes of whole events (the rest is an event still being written),
    the first and last event times (Unix seconds; None before the first), and whether its last event ends the file
    (a rotation to the next binlog, or the server's stop)."""

    size: int
    first: int | None = None
    last: int | None = None
    closed: bool = False


def scan(path: Path, since: Scan | None = None) -> Scan:
    """Walks the event headers of a binlog file (from where `since` stopped). A file the tool has created but not yet
    written its magic into has nothing whole, and is read from its start again the next time."""
    with path.open("rb") as file:
        total = os.fstat(file.fileno()).st_size
        if since is None or since.size < len(MAGIC):
            if file.read(len(MAGIC)) != MAGIC:
                return Scan(0)
            since = Scan(len(MAGIC))
        size, first, last, closed = since.size, since.first, since.last, since.closed
        while size + HEADER_SIZE <= total:
            file.seek(size)
            timestamp, kind, _server, length, _next = _HEADER.unpack(file.read(_HEADER.size))
            if length < HEADER_SIZE:
                raise RunnerError(Reason.DUMP_FAILED, f"{path.name}: a damaged event at byte {size}")
            if size + length > total:
                break  # the tool is still writing this event
            size += length
            if timestamp:  # the server's own artificial events carry none
                first = timestamp if first is None else first
                last = timestamp
            closed = kind in (ROTATE_EVENT, STOP_EVENT)
    return Scan(size, first, last, closed)


# --- the index (archivestore) -------------------------------------------------------------------------------


def predecessor(name: str) -> str:
    """The binlog the server wrote before `name`."""
    base, _, number = name.rpartition(".")
    return f"{base}.{int(number) - 1:0{len(number)}d}"


def start_binlog(on_server: list[str], archived: dict[str, Entry], now: datetime) -> tuple[str, Gap | None]:
    """The binlog a run starts at: after the newest closed one archived (else the open one of an earlier run, else
    the server's oldest), and the gap to record when the server no longer has it: then the run resumes at the
    server's oldest binlog after it, found at `now`. ArchiveGap (fatal) when the server lists nothing after the
    archive's newest binlog: it was reset, and resuming would archive another history under the same names."""
    if not on_server:
        raise RunnerError(Reason.ARCHIVE_GAP, "the server lists no binlogs")
    server = sorted(on_server, key=binlog_key)
    closed = [name for name, entry in archived.items() if entry.closed]
    newest = max(closed, key=binlog_key) if closed else None
    if newest is not None:
        wanted = successor(newest)
    elif archived:
        wanted = min(archived, key=binlog_key)  # the open binlog of a run that closed none
    else:
        return server[0], None
    if wanted in server:
        return wanted, None
    newer = [name for name in server if binlog_key(name) > binlog_key(wanted)]
    if not newer:
        raise RunnerError(
            Reason.ARCHIVE_GAP,
            f"the server's newest binlog {server[-1]} is not after the archive's {newest or wanted}: was it reset?",
        )
    resume = newer[0]
    return resume, Gap(newest, wanted, predecessor(resume), resume, _utc(int(now.timestamp())) or "")


# --- the archiver ------------------------------------------------------------------------------------------------


def _utc(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def server_binlogs(connection: Connection, scrub: Scrubber) -> list[str]:
    """The server's binlogs, oldest first; a clear refusal when binary logging is off."""
    client = engines.mysql_client_argv(connection)
    env = engines.child_env(Engine.MYSQL, connection)
    log_bin, _, binlog_format = (
        run_capture([*client, "-e", "SELECT @@log_bin, @@binlog_format"], env, scrub).strip().partition("\t")
    )
    if log_bin != "1":
        raise RunnerError(
            Reason.BINARY_LOGGING_OFF,
            "binary logging is off on the server: start it with log-bin, a server-id and binlog-format=ROW",
        )
    if binlog_format != "ROW":
        # Archived all the same (the binlog is what it is); a restore then picks statements by their default
        # database, which misses or misapplies one that writes another (docs/backup-format.md).
        log.warning(
            "the server's binlog_format is not ROW: point-in-time restores may miss statements; set binlog-format=ROW",
            binlogFormat=binlog_format,
        )
    listing = run_capture([*client, "-e", "SHOW BINARY LOGS"], env, scrub)
    return [line.split("\t")[0] for line in listing.splitlines() if line.strip()]


class Archiver:
    def __init__(
        self, options: ArchiveOptions, spool: Path, index: dict[str, Entry], gaps: list[Gap], status: ArchiveStatus
    ) -> None:
        self.options = options
        self.gaps = gaps
        self.store = options.store
        self.spool = spool
        self.index = index
        self.status = status
        self.scans: dict[str, Scan] = {}
        self.published: dict[str, list[Published]] = {}  # the open binlog's objects as this run stored them
        self.checked_at = -float("inf")
        self.closed: list[str] = []
        self.checkpoint = read_checkpoint(self.store)
        self.report(binlog=None)

    def publish_ready(self, *, final: bool, scrub: Scrubber | None = None) -> None:
        """Every binlog the tool has moved on from, as closed; the one it is on as `.partial` when it grew and
        max_lag / 2 passed since the last check (or `final`: this run stops), or as closed if the server closed it.
        A check (with `scrub`) first asks the server where it writes, for the lag (archivestatus)."""
        checking = not final and time.monotonic() - self.checked_at >= self.options.max_lag / 2
        asked, wall, server = time.monotonic(), int(time.time()), None
        if checking:
            self.checked_at = asked
            server = _server_position(self.options.connection, scrub) if scrub is not None else None
        names = sorted((p.name for p in self.spool.iterdir()), key=binlog_key)
        for done in names[:-1]:
            found = scan(self.spool / done, self.scans.get(done))
            if not found.closed or found.size != (self.spool / done).stat().st_size:
                raise RunnerError(Reason.DUMP_FAILED, f"{done} ends before its rotation event, yet {names[-1]} began")
            self.publish(done, found, closed=True)
            (self.spool / done).unlink()
            self.scans.pop(done, None)
        name = names[-1] if names else None
        if name is not None:
            found = self.scans[name] = scan(self.spool / name, self.scans.get(name))
            if final and found.closed:
                self.publish(name, found, closed=True)
            elif found.size > self.published_size(name) and (checking or final):
                self.publish(name, found, closed=False)
        if checking:
            self.forget_pruned()
        current = asked if server is not None and self.holds(server) else None
        if server is not None and current is not None:
            self.mark_complete(Checkpoint(server[0], server[1], _utc(wall) or ""))
        self.report(binlog=name, current=current, checked=checking or final)

    def mark_complete(self, checkpoint: Checkpoint) -> None:
        """Records that the archive held all the server had written at the checkpoint's time (`complete.json`): a
        restore may then name any second up to it, though no event came after the newest one. A store that refuses
        the write fails the run, as for an entry."""
        self.store.put(CHECKPOINT, checkpoint.to_json().encode())
        self.checkpoint = checkpoint

    def forget_pruned(self) -> None:
        """What a run's `--prune-binlogs` deleted (`archiveprune`) leaves this run's view too."""
        forget_pruned(self.store, self.index, self.gaps, closed=lambda file: self.index[file].closed)

    def holds(self, position: tuple[str, int]) -> bool:
        """Whether the archive holds the server's binlog up to `position` (file, byte offset)."""
        file, offset = position
        newest = next(reversed(self.index.values()), None)
        if newest is None:
            return False
        mine, theirs = binlog_key(newest.file), binlog_key(file)
        return mine > theirs or (mine == theirs and newest.binlog_size >= offset)

    def report(self, *, binlog: str | None, current: float | None = None, checked: bool = False) -> None:
        """The status the HTTP endpoint serves, from the index as published; `checked`: a check or a stop's
        publish (its `updated`)."""
        gap = self.gaps[-1] if self.gaps else None
        after = [e for e in self.index.values() if gap is None or binlog_key(e.file) >= binlog_key(gap.resumed_at)]
        firsts = [e.first_event for e in after if e.first_event]
        # Nothing replays across the newest gap: the archive is recoverable from the first event after it. Until one
        # is archived, the gap is dated by when it was found, so that the operator learns of it at once.
        gap_at = None if gap is None else (firsts[0] if firsts else gap.found_at)
        changes: dict[str, object] = {
            "recoverable_from": firsts[0] if firsts else None,
            "gap_at": gap_at,
            "recoverable_until": recoverable_until(self.index, self.checkpoint),
            "archived": sum(1 for e in self.index.values() if e.closed),
        }
        if binlog is not None:
            changes["binlog"] = binlog
        if current is not None:
            changes["current_at"] = current
        self.status.update(checked=checked, **changes)

    def publish(self, name: str, found: Scan, *, closed: bool) -> None:
        """The binlog `name` up to `found.size`: closed, whole; open, what it grew by since this run last published
        it (`grown`), under its partial entry."""
        kept, start, replaced = ([], 0, []) if closed else grown(self.published.get(name, []), found.size)
        stem = name if closed else name + PARTIAL if start == 0 else piece_stem(name, start)
        with (self.spool / name).open("rb") as source:
            stored, out = seal(self.store, stem, _read_range(source, start, found.size), self.options.key)
        pieces = [*kept, Published(start, found.size, stored, out.size, out.sha256.hexdigest())]
        self.put_entry(found, name, pieces, closed=closed)
        # Then what the entry no longer names: the pieces the new one replaced; when it holds the binlog from its
        # start, every piece any run left (a killed run's, or one whose entry was never written); when it is the
        # closed one, the partial entry (a reader that finds it gone reads the closed one) and both names of its
        # first object, as a run with or without a key may have left it.
        gone = [p.object for p in replaced]
        if start == 0:
            gone = [n for n in self.store.names(name + PARTIAL) if is_piece(name, n)]
        if closed:
            gone = [name + PARTIAL + ENTRY, *names(name + PARTIAL), *gone]
            self.published.pop(name, None)
            self.closed.append(name)
        else:
            self.published[name] = pieces
        for leftover in gone:
            if leftover != stored:
                self.store.remove(leftover)

    def published_size(self, name: str) -> int:
        """How far this run has published the open binlog `name` (its magic alone: nothing worth publishing)."""
        pieces = self.published.get(name)
        return pieces[-1].end if pieces else len(MAGIC)

    def put_entry(self, found: Scan, name: str, pieces: list[Published], *, closed: bool) -> None:
        """The entry of binlog `name` as `pieces` hold it (one: a closed binlog, or an open one's first), after its
        objects are stored."""
        key = self.options.key
        first, rest = pieces[0], pieces[1:]
        entry = Entry(
            name,
            first.object,
            closed,
            _utc(found.first),
            _utc(found.last),
            found.size,
            first.size,
            first.sha256,
            key.id if key is not None else None,
            key.fingerprint if key is not None else None,
            tuple(Piece(p.object, p.start, p.size, p.sha256) for p in rest),
        )
        self.store.put(name + ("" if closed else PARTIAL) + ENTRY, entry.to_json().encode())
        self.index[name] = entry
        self.index = dict(sorted(self.index.items(), key=lambda item: binlog_key(item[0])))
        log.info(
            "binlog archived",
            file=name,
            object=pieces[-1].object,
            closed=closed,
            binlogSize=found.size,
            fromByte=pieces[-1].start,
            size=pieces[-1].size,
            pieces=len(pieces),
            firstEvent=entry.first_event,
            lastEvent=entry.last_event,
        )


@dataclass(frozen=True)
class Published:
    """One stored object of a binlog this run published: its bytes [start, end), its name, size and sha256."""

    start: int
    end: int
    object: str
    size: int
    sha256: str


def grown(pieces: list[Published], size: int) -> tuple[list[Published], int, list[Published]]:
    """How an open binlog published as `pieces` (this run's, in order) is published at `size`: (the pieces kept,
    where the new one starts, the pieces it replaces). The new piece takes over each last piece no longer than
    itself, as a binary counter carries: a binlog published n times is held in at most log2(n) + 1 pieces, and each
    of its bytes is stored again at most that often, where publishing it whole each time stored it n times."""
    kept = list(pieces)
    start = kept[-1].end if kept else 0
    replaced: list[Published] = []
    while kept and kept[-1].end - kept[-1].start <= size - start:
        replaced.append(kept.pop())
        start = replaced[-1].start
    return kept, start, replaced


def _read_range(source: IO[bytes], start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of `source` (whole events of a binlog still being written), a block at a time."""
    source.seek(start)
    left = end - start
    while left and (data := source.read(min(READ_SIZE, left))):
        yield data
        left -= len(data)


def archive(
    options: ArchiveOptions, scrub: Scrubber, stop: threading.Event, status: ArchiveStatus | None = None
) -> dict[str, Any]:
    """Archives until `stop` is set (or a fatal error), reporting into `status` (archivestatus) as it goes."""
    store = options.store
    poll = min(0.5, options.max_lag / 4)
    with store.claim() as spool:
        index, gaps = store.index(), store.gaps()
        first, gap = start_binlog(server_binlogs(options.connection, scrub), index, datetime.now(UTC))
        if gap is not None:
            gaps = _record_gap(store, gap, gaps)
        work = Archiver(options, spool, index, gaps, status if status is not None else ArchiveStatus())
        log.info("archiving started", archive=store.where, first=first, maxLag=options.max_lag)
        argv = engines.mysql_binlog_stream_argv(options.connection, first, f"{spool}/", replica_id(store.where))
        env = engines.child_env(Engine.MYSQL, options.connection)
        with Tool(argv, env, scrub, stdout=None, die_with_parent=True) as tool:
            while not stop.is_set() and tool.process.poll() is None:
                work.publish_ready(final=False, scrub=scrub)
                stop.wait(poll)
            stopped = stop.is_set()
            if stopped:
                _catch_up(options.connection, spool, scrub, tool)
            tool.kill()
            tool.process.wait()
            work.publish_ready(final=True)
            if not stopped:
                _tool_failed(tool, first)
    newest = next(reversed(work.index.values()), None)
    return {
        "status": "Stopped",
        "archive": store.where,
        "closed": work.closed,
        "newest": newest.file if newest else None,
        "lastEvent": newest.last_event if newest else None,
    }


# Replica ids the archivers take: above those a team numbers its own servers and replicas with (1, 2, 101, ...).
REPLICA_IDS: Final = (1_000_000, 4_000_000_000)


def replica_id(where: str) -> int:
    """The replica id an archive's archiver connects with, the same on every restart and different for each archive:
    the server drops a replica when another one connects with the same id, so two archivers of one server (two
    DatabaseBackups, one per database) with the tool's default id would drop each other for ever."""
    low, high = REPLICA_IDS
    return low + int.from_bytes(hashlib.sha256(where.encode()).digest()[:8], "big") % (high - low)


def _record_gap(store: ArchiveStore, gap: Gap, gaps: list[Gap]) -> list[Gap]:
    """Writes `gap` into the archive before anything after it is (a restarted run that finds the same gap keeps the
    record it has, with its first `found_at`); the archive's gaps with it, oldest first."""
    known = next((g for g in gaps if g.name == gap.name), None)
    if known is None:
        store.put(gap.name, gap.to_json().encode())
        gaps = sorted([*gaps, gap], key=lambda g: binlog_key(g.resumed_at))
    log.warning(
        "binlogs were purged from the server before they were archived: archiving resumes after them, and no "
        "point-in-time restore replays across them; take a new backup",
        firstMissing=gap.first_missing,
        lastMissing=gap.last_missing,
        resumedAt=gap.resumed_at,
    )
    return gaps


def _server_position(connection: Connection, scrub: Scrubber) -> tuple[str, int] | None:
    """Where the server writes its binlog now (file, offset); None, with a warning, if it does not say."""
    try:
        status = run_capture(
            [*engines.mysql_client_argv(connection), "-e", "SHOW MASTER STATUS"],
            engines.child_env(Engine.MYSQL, connection),
            scrub,
            timeout=CATCH_UP,
        )
    except RunnerError as error:
        log.warning("the server did not say where it writes its binlog", error=error.message)
        return None
    name, _, rest = status.strip().partition("\t")
    offset = rest.split("\t")[0]
    return (name, int(offset)) if name and offset.isdigit() else None


def _catch_up(connection: Connection, spool: Path, scrub: Scrubber, tool: Tool) -> None:
    """Before a stop: waits (at most CATCH_UP seconds) until the tool has written all the server had written when
    the stop came, so that a clean stop leaves every event up to it archived."""
    found = _server_position(connection, scrub)
    if found is None:
        log.warning("stopping without catching up with the server")
        return
    name, position = found
    deadline = time.monotonic() + CATCH_UP
    while time.monotonic() < deadline and tool.process.poll() is None:
        present = sorted((p.name for p in spool.iterdir()), key=binlog_key)
        if present and binlog_key(present[-1]) > binlog_key(name):
            return
        if present and present[-1] == name and (spool / name).stat().st_size >= position:
            return
        time.sleep(0.05)
    log.warning("stopping before the tool caught up with the server", binlog=name, position=position)


def _tool_failed(tool: Tool, first: str) -> None:
    """The tool ended by itself (the server went away, or never had `first`)."""
    try:
        tool.finish()
    except RunnerError as error:
        if _PURGED in error.message:
            raise RunnerError(
                Reason.ARCHIVE_GAP, f"binlog {first} was purged from the server before it was archived"
            ) from None
        raise
    raise RunnerError(Reason.DUMP_FAILED, f"{tool.name} stopped streaming")
