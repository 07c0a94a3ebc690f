"""`dbb-backup restore --point-in-time T` for MySQL/MariaDB: the backup, then the archived binlog up to T.

1. Decide, before anything on the server changes (`plan_replay`, pure): the backup's manifest must carry binlog
   coordinates (`binlog`); T must not be before the backup's end (the snapshot was taken between its start and its
   end, so only from its end on is every write in the dump surely at or before T) nor after the newest archived
   event; the archive must hold every binlog from the coordinates' file to the last one T needs, each closed but
   the last, with no name missing in between and none of them in a recorded gap (`archivestore.Gap`): a replay
   that would cross a gap is refused with `ArchiveGap`, naming the missing binlogs.
2. Restore the dump as `dbb-backup restore` does (into a new database by default; see `restore`).
3. Replay: the archived binlogs (each held to its entry's sha256 first) go through the binlog tool, from the
   coordinates' position in the first, for the backup's database only (renamed to the target), up to the first event
   at or after T, into the client. A replay that fails drops the database the restore created.

Before step 2, `check_statements` refuses a replay that would leave out a statement on the database (one that ran
while another database was the default) or, renamed, run one that names the source. With `--scratch-port`, steps 2
and 3 run on a scratch server under the database's own name and the result is then copied into the target
(scratchrestore); without it, `--replace` is refused.

Binlog events carry whole seconds, the time each statement started. `--stop-datetime` stops at the first event at
or after its value, so the replay stops at T rounded down to the second: for a whole-second T, exactly the
transactions before T are applied; for a T with a fraction, the transactions of T's own second are left out too
(never one after T). The tool reads the time in its local zone: it runs with TZ=UTC.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, cast

import structlog

from runner import admin, engines
from runner.archive import successor
from runner.archiveobject import keys_for, read_current, unseal
from runner.archivestore import (
    ArchiveStore,
    Checkpoint,
    Entry,
    FolderArchive,
    Gap,
    S3Archive,
    archive_name,
    binlog_key,
    read_checkpoint,
    recoverable_until,
)
from runner.binlog import Coordinates
from runner.crypto import Keyring
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.manifest import Manifest
from runner.objectstore import S3Location
from runner.process import Deadline, Tool, pipe
from runner.replaysafety import statements_naming
from runner.s3backup import S3Object

__all__ = [
    "Replay",
    "apply",
    "check_keys",
    "check_statements",
    "default_archive",
    "parse_instant",
    "plan_replay",
    "plan_replay_to",
    "prepare",
    "replay",
    "unpacked",
    "unpacked_current",
]

log = structlog.get_logger("dbb-backup")

READ_SIZE: Final = 1 << 20
_PREFIX = re.compile(r"(?P<prefix>.+)-[0-9]{8}T[0-9]{6}Z\.")


def parse_instant(text: str) -> datetime:
    """RFC 3339 with a zone (`2026-12-07T10:00:00Z`, `...+01:00`), as a UTC datetime."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS, f"--point-in-time {text!r} is not an RFC 3339 time with a zone (…Z or …+01:00)"
        )
    return moment.astimezone(UTC)


def _rfc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def default_archive(backup: Path | S3Object, manifest: Manifest) -> ArchiveStore:
    """The archive `dbb-backup archive --name <the backup's name prefix>` writes beside the backup: the folder
    `<the backup's folder>/<prefix>-binlog`, or the prefix `<the backup's prefix>/<prefix>-binlog` in its bucket."""
    found = _PREFIX.match(manifest.file)
    name = archive_name(found.group("prefix") if found else manifest.file)
    if isinstance(backup, Path):
        return FolderArchive(backup.parent / name)
    parent = backup.key.rpartition("/")[0]
    return S3Archive(backup.client, S3Location(backup.bucket, f"{parent}/{name}" if parent else name))


@dataclass(frozen=True)
class Replay:
    coordinates: Coordinates
    entries: list[Entry]  # in order, the first holding the coordinates
    stop: datetime  # replay events before this (T rounded down to the second)
    # Set: replay up to exactly this position in the last entry's binlog instead (a newer backup's coordinates);
    # `stop` is then that backup's end, for the record.
    stop_position: int | None = None


def _replayable(manifest: Manifest) -> Coordinates:
    """The backup's coordinates, or a refusal: a replay starts there, for its one database."""
    coordinates = manifest.binlog
    if coordinates is None or coordinates.file is None or coordinates.position is None:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"{manifest.file} has no binlog coordinates (a server without binary logging, or a backup made before "
            "they were recorded): it cannot be restored to a point in time",
        )
    if len(manifest.databases) != 1:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "a point in time is restored for one-database backups only")
    return coordinates


def _chain(coordinates: Coordinates, index: Mapping[str, Entry], gaps: Sequence[Gap]) -> list[str]:
    """The archived binlogs from the one holding the coordinates on, in the server's order."""
    assert coordinates.file is not None
    if coordinates.file not in index:
        where = "".join(f" ({_missing(g)})" for g in gaps if g.covers(coordinates.file))
        raise RunnerError(
            Reason.ARCHIVE_GAP, f"the archive has no {coordinates.file}, where the backup's snapshot sits{where}"
        )
    names = sorted(index, key=binlog_key)
    return names[names.index(coordinates.file) :]


def plan_replay(
    manifest: Manifest,
    index: Mapping[str, Entry],
    point: datetime,
    gaps: Sequence[Gap] = (),
    checkpoint: Checkpoint | None = None,
) -> Replay:
    """What to replay for `point`, or a refusal that says why (nothing has been touched yet). `checkpoint`: the
    archive's, which may reach past its newest event (archivestore.recoverable_until)."""
    coordinates = _replayable(manifest)
    end = datetime.fromisoformat(manifest.end)
    if point < end:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"--point-in-time {_rfc(point)} is before the backup ended ({manifest.end}): restore an older backup",
        )
    chain = _chain(coordinates, index, gaps)
    reach = recoverable_until({name: index[name] for name in chain}, checkpoint)
    newest = _time(reach)
    if newest is None or point > newest:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"--point-in-time {_rfc(point)} is after what the archive reaches ({reach or 'nothing after the backup'}):"
            " choose an earlier time",
        )
    stop = point.replace(microsecond=0)
    # Up to the last binlog that begins before the stop (its events may be needed); those after begin after it.
    begins = [_time(index[name].first_event) for name in chain]
    last = max(i for i, first in enumerate(begins) if i == 0 or first is None or first < stop)
    needed = chain[: last + 1]
    _refuse_holes(needed, index, gaps, f"--point-in-time {_rfc(point)}")
    return Replay(coordinates, [index[n] for n in needed], stop)


def plan_replay_to(manifest: Manifest, index: Mapping[str, Entry], newer: Manifest, gaps: Sequence[Gap] = ()) -> Replay:
    """What to replay from `manifest`'s coordinates to exactly `newer`'s (a later backup of the same database): the
    replay that should turn the one backup into the other; or a refusal that says why."""
    coordinates, until = _replayable(manifest), _replayable(newer)
    # _replayable refuses coordinates without a file or a position.
    assert coordinates.position is not None
    assert until.file is not None
    assert until.position is not None
    if (binlog_key(until.file), until.position) < (binlog_key(str(coordinates.file)), coordinates.position):
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"{newer.file}'s binlog coordinates are before {manifest.file}'s")
    chain = _chain(coordinates, index, gaps)
    if until.file not in chain:
        raise RunnerError(
            Reason.ARCHIVE_GAP, f"the archive has no {until.file} yet, where {newer.file}'s snapshot sits"
        )
    needed = chain[: chain.index(until.file) + 1]
    reach = index[until.file].binlog_size
    if reach < until.position:
        raise RunnerError(
            Reason.ARCHIVE_GAP,
            f"the archive holds {until.file} up to {reach}, not yet to {until.position} where {newer.file}'s "
            "snapshot sits",
        )
    _refuse_holes(needed, index, gaps, f"{newer.file}'s snapshot")
    return Replay(coordinates, [index[n] for n in needed], datetime.fromisoformat(newer.end), until.position)


def _refuse_holes(needed: Sequence[str], index: Mapping[str, Entry], gaps: Sequence[Gap], target: str) -> None:
    """The binlogs `needed` (in order) reach `target` with nothing missing between them, or a refusal."""
    for gap in gaps:
        # A gap lies between the first and the last binlog needed when the replay reads past it: its missing ones,
        # or what is left of one (the `.partial` of a binlog purged before it closed), were never archived whole.
        if binlog_key(needed[0]) <= binlog_key(gap.last_missing) and binlog_key(gap.resumed_at) <= binlog_key(
            needed[-1]
        ):
            raise RunnerError(
                Reason.ARCHIVE_GAP,
                f"{target} is after a gap in the archive ({_missing(gap)}): no replay crosses it; restore a backup "
                "taken after it",
            )
    for before, after in itertools.pairwise(needed):
        expected = successor(before)
        if after != expected:
            raise RunnerError(
                Reason.ARCHIVE_GAP, f"the archive is missing binlog {expected}, between {before} and {after}"
            )
    for name in needed[:-1]:
        if not index[name].closed:
            raise RunnerError(Reason.ARCHIVE_GAP, f"the archive holds only part of binlog {name}, before {needed[-1]}")


def _missing(gap: Gap) -> str:
    """The binlogs a gap lacks, in words."""
    if gap.first_missing == gap.last_missing:
        names = f"binlog {gap.first_missing} was purged from the server before it was"
    else:
        names = f"binlogs {gap.first_missing} to {gap.last_missing} were purged from the server before they were"
    return f"{names} archived, found {gap.found_at}"


def replay(
    plan: Replay,
    store: ArchiveStore,
    connection: Connection,
    source: str,
    target: str,
    scrub: Scrubber,
    deadline: Deadline,
    keys: Keyring | None = None,
) -> None:
    """Applies the planned binlog events of `source` to `target` (`keys`: for encrypted binlogs)."""
    with tempfile.TemporaryDirectory(prefix="dbb-binlogs-") as spool:
        argv = _decoder(plan, store, Path(spool), source, target, keys)
        reader_env = {**engines.child_env(Engine.MYSQL, connection), "TZ": "UTC"}
        client = [*engines.mysql_script_argv(connection), "--binary-mode"]
        client_env = engines.child_env(Engine.MYSQL, connection)
        pipe((argv, reader_env), (client, client_env), scrub, deadline, Reason.RESTORE_FAILED)
    log.info("binlog replayed", database=target, files=[e.file for e in plan.entries], until=_rfc(plan.stop))


def check_statements(
    plan: Replay,
    store: ArchiveStore,
    source: str,
    target: str,
    scrub: Scrubber,
    deadline: Deadline,
    keys: Keyring | None = None,
) -> None:
    """Before anything is touched, the statements of the replay's range that name `source` in their text (see
    replaysafety), from two decodes of it, as replayed and whole:
    - one that the replay leaves out (the tool picks statements by their default database: it ran while another
      database, or none, was the default) would be missing from the restored database, which would then be what
      `source` never was (a table without its column, rows for a table never created): refused, quoting it;
    - with `target` other than `source`, one that the replay applies would change `source` itself, which the tool's
      renaming leaves as written: refused. A replay on a scratch server is under the source's own name."""
    with tempfile.TemporaryDirectory(prefix="dbb-binlogs-") as spool:
        files = [str(unpacked_current(store, entry, Path(spool), keys)) for entry in plan.entries]
        decodes = (
            _replay_argv(plan, files, source, target, statements_only=True),
            _replay_argv(plan, files, None, statements_only=True),
        )
        # The two decodes at once: each is one tool process and a reader, and the restore waits for both.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="binlog-check") as pool:
            applied, whole = pool.map(lambda argv: _naming(argv, source, scrub, deadline), decodes)
    left_out = list((Counter(whole) - Counter(applied)).elements())
    if left_out:
        raise RunnerError(
            Reason.RESTORE_FAILED,
            f"the binlog to replay holds a statement on database {source!r} that ran while another database (or "
            f"none) was the default ({scrub(left_out[0])}): a replay applies the statements {source!r} was the "
            "default for, so it would be left out and the result would not be what the database was; nothing was "
            "restored: restore to a time before it, or from a backup taken after it",
        )
    if target != source and applied:
        raise RunnerError(
            Reason.RESTORE_FAILED,
            f"the binlog to replay names database {source!r} in a statement ({scrub(applied[0])}): replayed as "
            f"{target!r} it would change {source!r} itself, so nothing was restored; restore under the same name "
            "into another server instead",
        )


def _naming(argv: list[str], source: str, scrub: Scrubber, deadline: Deadline) -> list[str]:
    """The statements of the decoded SQL that name `source` (replaysafety)."""
    with Tool(argv, {**os.environ, "TZ": "UTC"}, scrub, deadline=deadline, failure=Reason.RESTORE_FAILED) as reader:
        stdout = reader.process.stdout
        assert stdout is not None
        # The Tool's pipe is unbuffered: read line by line as it is, it would cost a system call a byte.
        buffered = io.BufferedReader(cast(io.RawIOBase, stdout), READ_SIZE)
        found = list(statements_naming((raw.decode("utf-8", errors="replace") for raw in buffered), source))
        buffered.detach()  # the Tool closes its own pipe
        reader.finish()
    return found


def _decoder(
    plan: Replay, store: ArchiveStore, spool: Path, source: str, target: str, keys: Keyring | None
) -> list[str]:
    """The binlog tool's command that decodes the planned events, the binlogs unpacked into `spool` first."""
    files = [str(unpacked_current(store, entry, spool, keys)) for entry in plan.entries]
    return _replay_argv(plan, files, source, target)


def _replay_argv(
    plan: Replay, files: list[str], source: str | None, target: str | None = None, *, statements_only: bool = False
) -> list[str]:
    """Decoding `files` from the plan's coordinates to its stop: `source`'s events (as `target`), or all with None
    (`statements_only`: without the row events' base64, for reading the statements)."""
    assert plan.coordinates.position is not None
    stop = plan.stop.strftime("%Y-%m-%d %H:%M:%S")
    return engines.mysql_binlog_replay_argv(
        files,
        plan.coordinates.position,
        stop,
        source,
        target,
        stop_position=plan.stop_position,
        statements_only=statements_only,
    )


def unpacked_current(store: ArchiveStore, entry: Entry, into: Path, keys: Keyring | None) -> Path:
    """`unpacked`, of the binlog's current entry if a running archiver replaced it meanwhile (`read_current`)."""
    return read_current(entry, lambda found: unpacked(store, found, into, keys), lambda e: store.index().get(e.file))


def unpacked(store: ArchiveStore, entry: Entry, into: Path, keys: Keyring | None) -> Path:
    """The entry's binlog, decrypted and decompressed into `into`, its stored bytes held to the entry's sha256 (an
    open binlog's: its object, then each of its pieces after it, each held to its own)."""
    path = into / entry.file
    for index, (whole, size) in enumerate(entry.piece_entries()):
        unseal(store, whole, entry.file, size, path, keys, "binlog", append=index > 0)
    return path


def check_keys(plan: Replay, keys: Keyring | None) -> None:
    """Before anything is touched: the keys decrypt every binlog the replay reads (each as its entry names it)."""
    for entry in plan.entries:
        if entry.encrypted:
            keys_for(entry, keys, "binlog")


def prepare(
    manifest: Manifest, backup: Path | S3Object, archive: ArchiveStore | None, point: datetime
) -> tuple[Replay, ArchiveStore]:
    """Step 1: the plan, and the archive it reads (default: `default_archive`)."""
    store = archive if archive is not None else default_archive(backup, manifest)
    return plan_replay(manifest, store.index(), point, store.gaps(), read_checkpoint(store)), store


def apply(
    plan: Replay,
    store: ArchiveStore,
    connection: Connection,
    restored: Mapping[str, str],
    scrub: Scrubber,
    deadline: Deadline,
    *,
    created: bool,
    keys: Keyring | None = None,
) -> dict[str, object]:
    """Step 3, once the dump was restored (`restored`: {source: target}); a target the restore created is dropped
    again if the replay fails."""
    (source, target), *_ = restored.items()
    try:
        replay(plan, store, connection, source, target, scrub, deadline, keys)
    except BaseException:
        if created:
            admin.drop_database(Engine.MYSQL, connection, target, scrub)
        raise
    return {"replayedUntil": _rfc(plan.stop), "binlogs": [e.file for e in plan.entries]}
