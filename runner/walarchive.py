"""`dbb-backup archive --engine postgresql`: continuous archiving of a PostgreSQL server's WAL into a folder or a
bucket, for point-in-time restores (`pgpitr`). The PostgreSQL half of `archive.py`, with the same store
(`archivestore`), the same status endpoint (`archivestatus`) and the same publishing rules.

The server's WAL is streamed over the replication protocol by the server's own tool, `pg_receivewal`, through a
physical replication slot of its own (`slot_name(NAME)`, created if missing, reserving WAL at once), so that the
server keeps every segment the archiver has not yet received, even while it is down (`--drop-slot` drops it once
archiving has ended for good: `drop_slot`). Each segment is published into `<output-dir>/<name>-wal/` (or
`s3://bucket/<prefix>/<name>-wal/`):

    000000010000000000000003.zst            a completed segment, zstd-compressed, byte for byte as streamed
    000000010000000000000003.json           its entry (`WalEntry`): segment, timeline, start/end LSN, until, ...
    000000010000000000000004.partial.zst    the segment being written, as far as it is archived
    000000010000000000000004.partial.json   its entry ("closed": false)
    00000002.history(.zst/.json)            a timeline history file, when the server changed timeline

With a key (`--encryption-key-file`) each object is encrypted after compression as an archived binlog is
(`archiveobject.seal`), named `….zst.enc`, and its entry records the key ("keyId", "keyFingerprint"); a restore
(`pgpitr`) refuses before it touches anything when the keys it was given do not hold that key. The spool of such
an archive is not in its folder (see below): the archive's volume holds no plaintext WAL.

`until` is the newest instant (the server's clock) up to which the archive is known to hold every commit: every
max_lag / 2 seconds the archiver asks the server for its WAL insert position and the time (one query), waits until
pg_receivewal has written that position (pg_stat_replication, our application name), publishes the segment it is in,
and records that time in its entry. Commit records are written before the commit returns, so every transaction
committed before that instant is in the archive. Reading the last commit time out of each segment would need a WAL
decoder; the checked instant is cheap, never overstates, and moves forward even on an idle server.

Resuming, with no gap and no duplicate: segments are named by the server (timeline and number), so the archive holds
each once by construction. pg_receivewal receives into a spool that outlives a run (`.receive` in the archive folder;
for a bucket or an encrypted archive, under TMPDIR, the Pod's emptyDir) and resumes from its newest segment; the slot
only advances past a segment once pg_receivewal has completed it in that spool, and a run starts by publishing what the
spool holds. An empty spool (the first run, or a lost emptyDir) is seeded with the archive's newest completed segment,
so that streaming starts right after it.

A gap: the server removed WAL the archive needs before it was archived (the slot was invalidated past
`max_slot_wal_keep_size`, or dropped by hand, or the spool was lost after the slot had moved past what the archive
holds). pg_receivewal then ends at once, naming the segment it asked for; the run records the gap in the archive
(`archivestore.Gap` with segment names, `<resumed>.gap.json`: the segment the archive holds last, the missing ones,
the one it resumed at, when it was found), logs a warning, creates the slot again if it is gone or invalidated (it
then reserves WAL from the last checkpoint's redo position), and starts pg_receivewal where the slot keeps WAL from:
its spool emptied and seeded with a placeholder of the segment before, as above, which lies in the gap and is never
published. A run that finds the same gap again (it stopped before anything after it was archived) keeps the record
it has. /status reports `gapAt` (when the gap was found: without a WAL decoder no later instant is known) and a
`recoverableFrom` after it, and is ready again while it streams; the operator takes a base backup at once, and no
point-in-time restore replays across the gap (`pgpitr`). A server whose WAL is behind the archive's newest segment,
or of another history (reset, or restored from an older copy), still ends the run with `ArchiveGap`: its segments
would be archived under names the archive holds for other WAL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import structlog

from runner import archiveobject, engines
from runner.archivestatus import ArchiveStatus, serving
from runner.archivestore import (
    ENTRY,
    PARTIAL,
    ArchiveStore,
    FolderArchive,
    Gap,
    S3Archive,
    forget_pruned,
    optional_string,
)
from runner.crypto import Key, Keyring, load_key
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber, one_line
from runner.naming import ENCRYPTED_SUFFIX
from runner.objectstore import list_keys
from runner.process import Tool, run_capture

__all__ = [
    "WalEntry",
    "WalOptions",
    "archive_wal",
    "check_keys",
    "drop_slot",
    "in_gap",
    "lsn",
    "lsn_text",
    "next_segment",
    "read_wal_index",
    "run",
    "segment_name",
    "segment_order",
    "segment_start",
    "slot_name",
    "unpack",
    "wal_archive_name",
    "wal_gap",
]

log = structlog.get_logger("dbb-backup")

CATCH_UP: Final = 10.0  # seconds a check (or a stop) waits for pg_receivewal to write the server's position
SEGMENT: Final = re.compile(r"[0-9A-F]{24}")
HISTORY: Final = re.compile(r"[0-9A-F]{8}\.history")
# The server no longer has a segment pg_receivewal asked for (walsender's XLogRead): a gap, resumed after.
_REMOVED: Final = re.compile(r"requested WAL segment ([0-9A-F]{24}) has already been removed", re.IGNORECASE)
# The server's WAL is behind the archive's, or of another history: it was reset or restored from an older copy.
_BEHIND: Final = re.compile(
    r"requested starting point .* (is ahead of the WAL flush position|is not in this server's history)", re.I
)
_NO_HBA: Final = re.compile(r"no pg_hba\.conf entry for replication connection", re.IGNORECASE)
_NO_ATTRIBUTE: Final = re.compile(r"must be superuser or replication role|permission denied to start WAL", re.I)


def wal_archive_name(prefix: str) -> str:
    """The WAL archive of the base backups named `<prefix>-<UTC>…`: the folder or key prefix beside them."""
    return f"{prefix}-wal"


def slot_name(name: str) -> str:
    """The archiver's replication slot for `--name`: lower-case letters, digits and `_`, at most 63 bytes, and
    distinct for distinct names (a hash of the name ends it)."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", name.lower())[:40]
    return f"dbb_{cleaned}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def lsn(text: str) -> int:
    """`16/B374D848` as a number."""
    high, _, low = text.strip().partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_start(name: str, segment_size: int) -> int:
    """The LSN a segment begins at (`TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment number in two halves)."""
    per_id = 0x100000000 // segment_size
    return (int(name[8:16], 16) * per_id + int(name[16:24], 16)) * segment_size


def segment_name(timeline: int, position: int, segment_size: int) -> str:
    number = position // segment_size
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def next_segment(name: str, segment_size: int, step: int = 1) -> str:
    """The segment `step` after `name` on its timeline (-1: the one before)."""
    return segment_name(int(name[:8], 16), segment_start(name, segment_size) + step * segment_size, segment_size)


def segment_order(name: str) -> tuple[str, str]:
    """Segments by position first, then timeline: a later timeline's segment continues an earlier one's numbers."""
    return name[8:], name[:8]


@dataclass(frozen=True)
class WalEntry:
    segment: str  # the server's file name: a segment, or a timeline's `.history`
    object: str  # the archived file beside the entry
    closed: bool
    timeline: int
    start_lsn: str | None  # a segment's first byte; None for a history file
    end_lsn: str | None  # a completed segment's end; a partial one's: what the archive surely holds
    until: str | None  # RFC 3339 (server clock): every commit before it is in the archive up to this segment
    wal_size: int  # bytes of the file it holds
    size: int  # of the object as stored
    sha256: str  # of the object as stored
    # An encrypted object's key (`.zst.enc`), as a binlog's entry names it: its id and fingerprint. None: plain.
    key_id: str | None = None
    key_fingerprint: str | None = None

    @property
    def encrypted(self) -> bool:
        return self.object.endswith(ENCRYPTED_SUFFIX)

    def to_json(self) -> str:
        data: dict[str, object] = {
            "segment": self.segment,
            "object": self.object,
            "closed": self.closed,
            "timeline": self.timeline,
            "startLsn": self.start_lsn,
            "endLsn": self.end_lsn,
            "until": self.until,
            "walSize": self.wal_size,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.key_id is not None or self.key_fingerprint is not None:
            data |= {"keyId": self.key_id, "keyFingerprint": self.key_fingerprint}
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> WalEntry:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("segment"), str):
            raise ValueError("not a WAL archive entry")
        try:
            return cls(
                data["segment"],
                str(data["object"]),
                data["closed"] is True,
                int(data["timeline"]),
                data.get("startLsn"),
                data.get("endLsn"),
                data.get("until"),
                int(data["walSize"]),
                int(data["size"]),
                str(data["sha256"]),
                optional_string(data, "keyId"),
                optional_string(data, "keyFingerprint"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a WAL archive entry: {error}") from None


def merge_wal_index(texts: list[str]) -> dict[str, WalEntry]:
    """{file: its entry}, in name order (timeline, then segment number): a completed file's entry, else its
    partial one. Unreadable entries (none are written so) are left out."""
    entries: dict[str, WalEntry] = {}
    for text in texts:
        try:
            entry = WalEntry.from_json(text)
        except ValueError:
            continue
        if entry.segment not in entries or entry.closed:
            entries[entry.segment] = entry
    return dict(sorted(entries.items()))


def read_wal_index(store: ArchiveStore) -> dict[str, WalEntry]:
    """The entries of a WAL archive, from a folder or a bucket (archivestore's two stores)."""
    texts: list[str] = []
    if isinstance(store, FolderArchive):
        if store.folder.is_dir():
            for path in store.folder.glob(f"*{ENTRY}"):
                if not path.name.startswith("."):
                    with contextlib.suppress(OSError):
                        texts.append(path.read_text(encoding="utf-8"))
    elif isinstance(store, S3Archive):
        base = store.location.key("")
        for key in list_keys(store.client, store.location.bucket, base):
            name = key.removeprefix(base)
            if "/" in name or name.startswith(".") or not name.endswith(ENTRY):
                continue
            with contextlib.suppress(FileNotFoundError), store.open(name) as body:
                texts.append(body.read().decode("utf-8", errors="replace"))
    return merge_wal_index(texts)


def unpack(store: ArchiveStore, entry: WalEntry, path: Path, keys: Keyring | None = None) -> None:
    """The entry's file, decrypted (with `keys`) and decompressed into `path`, its stored bytes held to the entry's
    sha256; of its current entry if a running archiver replaced it meanwhile (`archiveobject.read_current`)."""

    def read(found: WalEntry) -> None:
        archiveobject.unseal(store, found, found.segment, found.wal_size, path, keys, "WAL")

    archiveobject.read_current(entry, read, lambda e: read_wal_index(store).get(e.segment))


def check_keys(entries: Iterable[WalEntry], keys: Keyring | None) -> None:
    """Before anything is touched: the keys decrypt every one of `entries` (each as its entry names its key)."""
    for entry in entries:
        if entry.encrypted:
            archiveobject.keys_for(entry, keys, "WAL")


# --- the server ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalOptions:
    connection: Connection
    store: ArchiveStore  # a FolderArchive or S3Archive at `<…>/<name>-wal`
    name: str  # --name: names the slot
    max_lag: float = 60.0
    key: Key | None = None  # encrypts each archived file as a binlog is (archiveobject.seal)


def _query(connection: Connection, sql: str, scrub: Scrubber, timeout: float = 30.0) -> list[str]:
    argv = engines.psql_argv(connection, "postgres")
    env = engines.child_env(Engine.POSTGRESQL, connection)
    return run_capture([*argv, "-c", sql], env, scrub, timeout=timeout).strip().split("|")


def check_server(connection: Connection, slot: str, scrub: Scrubber) -> int:
    """The preconditions, each refused with what to set; creates the slot if missing. Returns the segment size."""
    wal_level, may_replicate, segment_size = _query(
        connection,
        "SELECT current_setting('wal_level'), (SELECT rolreplication OR rolsuper FROM pg_roles"
        " WHERE rolname = current_user), (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')",
        scrub,
    )
    if wal_level not in ("replica", "logical"):
        raise RunnerError(
            Reason.WAL_LEVEL_MINIMAL,
            f"the server's wal_level is {wal_level}: set wal_level = replica (and max_wal_senders > 0) and restart it",
        )
    if may_replicate != "t":
        raise RunnerError(
            Reason.REPLICATION_NOT_ALLOWED,
            f"the user {connection.user} may not stream WAL: ALTER ROLE {connection.user} WITH REPLICATION",
        )
    _create_slot(connection, slot, scrub)
    return int(segment_size)


def _create_slot(connection: Connection, slot: str, scrub: Scrubber) -> None:
    """The slot, unless it exists. It reserves WAL from its creation on (`true`: from the last checkpoint's redo
    position), so that a base backup taken next finds its WAL kept."""
    create = (
        "SELECT count(pg_create_physical_replication_slot(name, true)) FROM (SELECT"  # noqa: S608 - slot_name()
        f" '{slot}'::name AS name) AS wanted WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots"
        f" WHERE slot_name = '{slot}')"
    )
    _query(connection, create, scrub)


def _reserving_slot(connection: Connection, name: str, segment_size: int, removed: str, scrub: Scrubber) -> str:
    """The segment from which `name`'s slot keeps WAL on the server, after the slot is made to keep some: created if
    missing, and dropped and created again if it was invalidated (past max_slot_wal_keep_size it keeps nothing) or
    if its restart_lsn is in `removed` or before, WAL the server no longer has: the walsender takes pg_receivewal's
    flush position as the slot's restart_lsn as is, so the position pg_receivewal asked to start at (the removed
    segment) can be set back into the slot before the walsender refuses it. Created again, it keeps WAL from the
    last checkpoint's redo position. The segment holding restart_lsn, on the server's timeline: not
    pg_walfile_name's, which names the segment before when the position is exactly on a boundary (as a checkpoint's
    redo position right after a switch is)."""
    slot = slot_name(name)
    look = (
        "SELECT wal_status, restart_lsn, pg_walfile_name(pg_current_wal_lsn())"  # noqa: S608 - slot_name()
        f" FROM pg_replication_slots WHERE slot_name = '{slot}'"
    )

    def kept(found: list[str]) -> str | None:
        if len(found) != 3 or not found[1] or not SEGMENT.fullmatch(found[2]):
            return None
        return segment_name(int(found[2][:8], 16), lsn(found[1]), segment_size)

    found = _query(connection, look, scrub)  # [''] when there is no such slot
    if len(found) == 3 and (found[0] == "lost" or not found[1]):
        log.warning("the replication slot was invalidated: it is created again", slot=slot)
        drop_slot(connection, name, CATCH_UP, scrub)
    elif (start := kept(found)) is not None and segment_order(start) <= segment_order(removed):
        log.warning("the replication slot points at WAL the server removed: it is created again", slot=slot)
        drop_slot(connection, name, CATCH_UP, scrub)
    _create_slot(connection, slot, scrub)
    resume = kept(_query(connection, look, scrub))
    if resume is None:
        raise RunnerError(Reason.DUMP_FAILED, f"the replication slot {slot} keeps no WAL on the server")
    return resume


def _server_position(connection: Connection, slot: str, scrub: Scrubber) -> tuple[int, str, int | None] | None:
    """(the server's WAL insert position, its clock then, what our pg_receivewal has written); None if it does not
    answer (a warning: the lag grows)."""
    try:
        insert, now, written = _query(
            connection,
            "SELECT pg_current_wal_insert_lsn(), to_char(clock_timestamp() AT TIME ZONE 'UTC',"  # noqa: S608
            ' \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\'), (SELECT max(write_lsn) FROM pg_stat_replication'
            f" WHERE application_name = '{slot}')",
            scrub,
            timeout=CATCH_UP,
        )
    except RunnerError as error:
        log.warning("the server did not say where it writes its WAL", error=error.message)
        return None
    return lsn(insert), now, lsn(written) if written else None


def _receive_argv(connection: Connection, spool: Path, slot: str) -> list[str]:
    """pg_receivewal into `spool` through `slot`: --no-loop ends it when the connection is lost (the run then
    fails and the Pod restarts it, reported); replies every second, so that a check sees its write position soon."""
    return [
        "pg_receivewal",
        "-D",
        str(spool),
        "-S",
        slot,
        "--no-loop",
        "--status-interval=1",
        *("-h", connection.host, "-p", str(connection.port), "-U", connection.user, "-w"),
    ]


# --- the archiver -------------------------------------------------------------------------------------------------


def receive_spool(store: ArchiveStore, *, encrypted: bool = False) -> Path:
    """pg_receivewal's folder, kept between runs (see above). An encrypted archive keeps it off the archive's volume
    (under TMPDIR, as for a bucket), so that no plaintext WAL lies beside the encrypted objects."""
    if isinstance(store, FolderArchive) and not encrypted:
        return store.folder / ".receive"
    digest = hashlib.sha256(store.where.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f".dbb-wal-{digest}"


def _utc(moment: str | None) -> str | None:
    return None if moment is None else moment[:19] + "Z"


PAGE: Final = 8192  # XLOG_BLCKSZ
LONG_HEADER: Final = 40  # a segment's first page header; other pages' are 24 bytes


def _sent_by(position: int) -> int:
    """What the stream must have delivered for the server's insert `position`: an insert position just past a page
    header (right after a segment switch, on an idle server) has nothing in its page yet, so the page's start."""
    offset = position % PAGE
    return position - offset if offset <= LONG_HEADER else position


def _caught_up(position: int, _now: str, written: int | None) -> bool:
    """Whether pg_receivewal has written the server's insert `position`."""
    return written is not None and written >= _sent_by(position)


def in_gap(gap: Gap, segment: str) -> bool:
    """Whether a WAL gap record (`Gap` with segment names: see above) names `segment` as missing."""
    return segment_order(gap.first_missing) <= segment_order(segment) <= segment_order(gap.last_missing)


def wal_gap(index: dict[str, WalEntry], removed: str, resume: str, segment_size: int, now: datetime) -> Gap:
    """The gap to record when the server no longer has `removed` (the segment the archive needed next) and keeps
    WAL from `resume` on. ArchiveGap (fatal) when `resume` is not after `removed`: the server's WAL is not the
    history the archive holds."""
    if SEGMENT.fullmatch(removed) is None or segment_order(resume) <= segment_order(removed):
        said = f"the server no longer has {removed}, and keeps WAL from {resume}"
        raise RunnerError(Reason.ARCHIVE_GAP, _behind(index, said))
    done = [name for name, e in index.items() if e.closed and SEGMENT.fullmatch(name)]
    after = max(done, key=segment_order) if done else None
    found = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Gap(after, removed, next_segment(resume, segment_size, -1), resume, found)


def _behind(index: dict[str, WalEntry], said: str) -> str:
    segments = [name for name in index if SEGMENT.fullmatch(name)]
    newest = max(segments, key=segment_order) if segments else "none"
    return (
        f"the server's WAL is behind the archive's newest segment ({newest}), or of another history: {said}; the "
        "server was reset or restored from an older copy, and its WAL would be archived under names the archive "
        "holds for other WAL. Archive it under a new --name and take a new base backup"
    )


class _WalArchiver:
    def __init__(
        self, options: WalOptions, spool: Path, segment_size: int, status: ArchiveStatus, scrub: Scrubber
    ) -> None:
        self.options = options
        self.scrub = scrub
        self.store = options.store
        self.spool = spool
        self.segment_size = segment_size
        self.status = status
        self.index = read_wal_index(self.store)
        self.gaps = self.store.gaps()
        self.slot = slot_name(options.name)
        self.published_partial: dict[str, str] = {}  # segment: sha256 of the file last published
        self.checked_at = -float("inf")
        self.closed: list[str] = []
        self.receiving: Callable[[], bool] = lambda: True  # whether pg_receivewal still runs (archive_wal sets it)
        self.report(None)

    def seed(self) -> None:
        """An empty spool starts after the archive's newest completed segment (see above). pg_receivewal reads only a
        completed segment's name and size to resume after it: one encrypted with a key this run does not hold (it was
        rotated) is seeded as a placeholder of its size. Neither is published again (the archive has it), and the
        spool drops it once the next segment completes."""
        if any(SEGMENT.fullmatch(p.name.removesuffix(PARTIAL)) for p in self.spool.iterdir()):
            return
        done = [e for e in self.index.values() if e.closed and SEGMENT.fullmatch(e.segment)]
        if not done:
            return
        newest, key = done[-1], self.options.key
        path = self.spool / newest.segment
        if newest.encrypted and (key is None or key.fingerprint != newest.key_fingerprint):
            with path.open("wb") as placeholder:
                placeholder.truncate(newest.wal_size)
        else:
            unpack(self.store, newest, path, Keyring.of(key) if key else None)
        log.info("streaming resumes after the archive's newest segment", segment=newest.segment)

    def publish_completed(self) -> None:
        for path in sorted(self.spool.iterdir()):
            if not (SEGMENT.fullmatch(path.name) or HISTORY.fullmatch(path.name)):
                continue
            known = self.index.get(path.name)
            if known is None or not known.closed:
                partial = known.until if known is not None else None
                self.publish(path, closed=True, end=None, until=partial)
            newest = max((p.name for p in self.spool.iterdir() if SEGMENT.fullmatch(p.name)), default=None)
            if path.name != newest:  # the newest stays: pg_receivewal resumes after it
                path.unlink()

    def check(self, *, final: bool) -> None:
        """Every max_lag / 2 (and at a stop): is the archive complete as of the server's now? Then publish the
        segment that position is in, with that instant as its `until`."""
        if not final and time.monotonic() - self.checked_at < self.options.max_lag / 2:
            return
        asked = self.checked_at = time.monotonic()
        found = _server_position(self.options.connection, self.slot, self.scrub)
        deadline = asked + CATCH_UP
        while found is not None and not _caught_up(*found) and time.monotonic() < deadline and self.receiving():
            time.sleep(0.2)
            again = _server_position(self.options.connection, self.slot, self.scrub)
            found = None if again is None else (found[0], found[1], again[2])
        self.publish_completed()
        if not final:
            self.forget_pruned()
        if found is None or not _caught_up(*found):
            log.warning("the archive has not caught up with the server", final=final)
            self.report(None, checked=True)
            return
        position, now = _sent_by(found[0]), found[1]
        holding = self._holding(position)
        if holding is not None:
            path, closed = holding
            self.publish(path, closed=closed, end=position, until=now)
        self.report(asked, checked=True)

    def forget_pruned(self) -> None:
        """What a run's `--prune-wal` deleted (`baseretention`) leaves this run's view too."""
        forget_pruned(self.store, self.index, self.gaps, closed=lambda segment: self.index[segment].closed)

    def _holding(self, position: int) -> tuple[Path, bool] | None:
        """The spool file that holds the byte before `position` (the end of the newest record)."""
        for path in sorted(self.spool.iterdir(), reverse=True):
            name = path.name.removesuffix(PARTIAL)
            if SEGMENT.fullmatch(name):
                start = segment_start(name, self.segment_size)
                if start < position <= start + self.segment_size:
                    return path, not path.name.endswith(PARTIAL)
        return None

    def publish(self, path: Path, *, closed: bool, end: int | None, until: str | None) -> None:
        name = path.name.removesuffix(PARTIAL)
        if any(in_gap(gap, name) for gap in self.gaps):
            return  # the placeholder a resume after a gap seeds (`resume_after`): none of the server's WAL
        is_segment = SEGMENT.fullmatch(name) is not None
        stem = name if closed else name + PARTIAL
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        known = self.index.get(name)
        unchanged = known is not None and known.closed and closed
        unchanged = unchanged or (not closed and known is not None and self.published_partial.get(name) == digest)
        if unchanged and known is not None:
            # Unchanged since it was published: only its `until` moves on (an idle server).
            entry = replace(known, until=_utc(until) or known.until, end_lsn=lsn_text(end) if end else known.end_lsn)
        else:
            key = self.options.key
            stored, out = archiveobject.seal(self.store, stem, [data], key)
            start = segment_start(name, self.segment_size) if is_segment else None
            if end is None and closed and start is not None:
                end = start + self.segment_size
            entry = WalEntry(
                name,
                stored,
                closed,
                int(name[:8], 16),
                lsn_text(start) if start is not None else None,
                lsn_text(end) if end is not None else None,
                _utc(until) or (known.until if known is not None else None),
                len(data),
                out.size,
                out.sha256.hexdigest(),
                key.id if key is not None else None,
                key.fingerprint if key is not None else None,
            )
            if not closed:
                self.published_partial[name] = digest
        self.store.put(stem + ENTRY, entry.to_json().encode())
        self.index[name] = entry
        self.index = dict(sorted(self.index.items()))
        if closed:
            for leftover in (name + PARTIAL + ENTRY, *archiveobject.names(name + PARTIAL)):
                self.store.remove(leftover)
            self.published_partial.pop(name, None)
            self.closed.append(name)
            log.info("WAL archived", segment=name, closed=True, size=entry.size)

    def resume_after(self, removed: str) -> None:
        """The server no longer has `removed`, which the archive needed next: records the gap (once: a run that finds
        the same gap again keeps the record it has, and its `foundAt`), and seeds the spool so that pg_receivewal
        starts where the slot, recreated if need be, keeps WAL from: with a placeholder of the segment before (see
        `seed`), which lies in the gap and is never published."""
        resume = _reserving_slot(self.options.connection, self.options.name, self.segment_size, removed, self.scrub)
        gap = wal_gap(self.index, removed, resume, self.segment_size, datetime.now(UTC))
        known = next((g for g in self.gaps if g.first_missing == gap.first_missing), None)
        if known is not None:
            gap = replace(gap, found_at=known.found_at)
        if known != gap:
            self.store.put(gap.name, gap.to_json().encode())
            if known is not None and known.name != gap.name:
                self.store.remove(known.name)
            self.gaps = sorted(
                [*(g for g in self.gaps if g is not known), gap], key=lambda g: segment_order(g.resumed_at)
            )
        log.warning(
            "WAL was removed from the server before it was archived: archiving resumes after it, and no "
            "point-in-time restore replays across it; take a new base backup",
            firstMissing=gap.first_missing,
            lastMissing=gap.last_missing,
            resumedAt=gap.resumed_at,
        )
        for path in self.spool.iterdir():
            path.unlink()
        with (self.spool / gap.last_missing).open("wb") as placeholder:
            placeholder.truncate(self.segment_size)
        self.report(None)

    def report(self, current: float | None, *, checked: bool = False) -> None:
        gap = self.gaps[-1] if self.gaps else None
        after = [
            e.until
            for e in self.index.values()
            if e.until and (gap is None or segment_order(e.segment) >= segment_order(gap.resumed_at))
        ]
        untils = [e.until for e in self.index.values() if e.until]
        changes: dict[str, object] = {
            # Nothing replays across the newest gap: the archive's range starts after it. There is no WAL decoder
            # to say when the first commit after it was: the gap is dated by when it was found.
            "recoverable_from": min(after) if after else None,
            "recoverable_until": max(untils) if untils else None,
            "gap_at": gap.found_at if gap is not None else None,
            "archived": sum(1 for e in self.index.values() if e.closed),
            "binlog": next(reversed(self.index), None),
        }
        if current is not None:
            changes["current_at"] = current
        self.status.update(checked=checked, **changes)


def archive_wal(
    options: WalOptions, scrub: Scrubber, stop: threading.Event, status: ArchiveStatus | None = None
) -> dict[str, Any]:
    """Archives until `stop` is set (or a fatal error), reporting into `status` as it goes."""
    store = options.store
    slot = slot_name(options.name)
    poll = min(0.5, options.max_lag / 4)
    with store.claim():
        segment_size = check_server(options.connection, slot, scrub)
        spool = receive_spool(store, encrypted=options.key is not None)
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        work = _WalArchiver(options, spool, segment_size, status if status is not None else ArchiveStatus(), scrub)
        work.publish_completed()
        work.seed()
        log.info("archiving started", archive=store.where, slot=slot, maxLag=options.max_lag)
        resumed = False
        while (removed := _stream(work, stop, poll)) is not None:
            # WAL the archive needs was removed from the server: one resume after it per run. The slot keeps what
            # follows it, so a second removal is no gap a resume can close.
            if resumed:
                raise RunnerError(
                    Reason.ARCHIVE_GAP, f"the server removed WAL segment {removed} though the slot should keep it"
                )
            work.resume_after(removed)
            resumed = True
    newest = next(reversed(work.index.values()), None)
    return {
        "status": "Stopped",
        "archive": store.where,
        "closed": work.closed,
        "newest": newest.segment if newest else None,
        "until": newest.until if newest else None,
    }


def _stream(work: _WalArchiver, stop: threading.Event, poll: float) -> str | None:
    """pg_receivewal into the spool, publishing as it goes, until `stop` (None) or until it ends by itself: the
    segment the server no longer has, when it ended for that (else the refusal it ended with)."""
    options, scrub, slot = work.options, work.scrub, work.slot
    env = {**engines.child_env(Engine.POSTGRESQL, options.connection), "PGAPPNAME": slot}
    argv = _receive_argv(options.connection, work.spool, slot)
    with Tool(argv, env, scrub, stdout=None, die_with_parent=True) as tool:
        work.receiving = lambda: tool.process.poll() is None
        while not stop.is_set() and tool.process.poll() is None:
            work.publish_completed()
            work.check(final=False)
            stop.wait(poll)
        stopped = stop.is_set()
        if stopped:
            work.check(final=True)
        tool.kill()
        tool.process.wait()
        work.publish_completed()
        if stopped:
            return None
        return _tool_failed(tool, work.index)


def _tool_failed(tool: Tool, index: dict[str, WalEntry]) -> str:
    """pg_receivewal ended by itself: the segment it asked for when the server had removed it, else a refusal its
    message explains (or a lost connection)."""
    try:
        tool.finish()
    except RunnerError as error:
        removed = _REMOVED.search(error.message)
        if removed is not None:
            return removed.group(1)
        if _BEHIND.search(error.message):
            raise RunnerError(Reason.ARCHIVE_GAP, _behind(index, error.message)) from None
        if _NO_HBA.search(error.message):
            raise RunnerError(
                Reason.REPLICATION_NOT_ALLOWED,
                "pg_hba.conf has no replication entry for this user and host: add a line such as "
                "`host replication <user> <address>/32 scram-sha-256` and reload the server",
            ) from None
        if _NO_ATTRIBUTE.search(error.message):
            raise RunnerError(
                Reason.REPLICATION_NOT_ALLOWED, "the user may not stream WAL: ALTER ROLE <user> WITH REPLICATION"
            ) from None
        raise
    raise RunnerError(Reason.DUMP_FAILED, f"{tool.name} stopped streaming")


SLOT_POLL: Final = 0.5  # seconds between two looks at an active slot
_SLOT_BUSY: Final = re.compile(r"replication slot .* (is active|does not exist)", re.IGNORECASE)


def drop_slot(connection: Connection, name: str, timeout: float, scrub: Scrubber) -> dict[str, Any]:
    """`archive --engine postgresql --drop-slot`: the slot of `--name`'s archiver dropped, so that the server stops
    keeping WAL for an archive no one writes any more. A slot an archiver still streams through is active and cannot
    be dropped: wait up to `timeout` seconds for it to go (its Pod stopping), then refuse, naming it."""
    slot = slot_name(name)
    # One statement: the slot dropped only if it is inactive, and what was found. The drop is in a CTE the outer
    # query reads, so that PostgreSQL runs it.
    statement = (
        "WITH found AS (SELECT slot_name, active FROM pg_replication_slots"  # noqa: S608 - slot_name()
        f" WHERE slot_name = '{slot}'), dropped AS (SELECT pg_drop_replication_slot(slot_name) FROM found"
        " WHERE NOT active) SELECT (SELECT count(*) FROM found), (SELECT count(*) FROM dropped)"
    )
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        try:
            found, dropped = _query(connection, statement, scrub)
        except RunnerError as error:
            # It became active, or went, between the look and the drop: look again.
            if not _SLOT_BUSY.search(error.message):
                raise
            found, dropped = "1", "0"
        if found == "0" or dropped == "1":
            log.info("replication slot dropped" if dropped == "1" else "no replication slot to drop", slot=slot)
            return {"status": "SlotDropped", "slot": slot, "dropped": dropped == "1"}
        if time.monotonic() >= deadline:
            raise RunnerError(
                Reason.TIMEOUT,
                f"the replication slot {slot} is still active after {timeout:g}s: an archiver still streams through"
                " it; stop it first",
            )
        if not waiting:
            log.info("the replication slot is active: waiting for its archiver to stop", slot=slot, timeout=timeout)
            waiting = True
        time.sleep(SLOT_POLL)


def run(args: Any, connection: Connection, store: ArchiveStore, scrub: Scrubber) -> dict[str, Any]:
    """`dbb-backup archive --engine postgresql` (main's `archive`): as for binlogs, SIGTERM and SIGINT end the
    archiving, not the run, and a fatal error is served on /healthz until the process exits."""
    key = load_key(args.encryption_key_file) if args.encryption_key_file is not None else None
    options = WalOptions(connection, store, args.name, args.max_lag, key)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    status = ArchiveStatus()
    with serving(status, args.status_port):
        try:
            return archive_wal(options, scrub, stop, status)
        except RunnerError as error:
            status.failed(error.reason, one_line(scrub(error.message)))
            raise
