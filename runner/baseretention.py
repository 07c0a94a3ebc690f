"""`dbb-backup run --base-backup --prune-wal` (PostgreSQL): after the dumps, a base backup into the same folder or
bucket; then this owner's base backups beyond retention go, and the archived WAL no kept base backup needs.

Base backups (`<name>-<UTC>.base.tar.zst[.enc]`, `basebackup`) are kept by the dumps' own rules (`retention.plan`,
over the base backups alone, never mixed with the dumps): --keep-last, the calendar rules and --max-age as for the
dumps, and `--wal-window D` in place of the binlog window: the newest base backup that *ended* at or before now - D
and every one after it, so that every instant of the last D has a base backup to recover from (a base backup restores
only to instants after its end). The newest base backup and the one this run took always stay. Only base backups
whose manifest names this run's owner are considered (as for dumps: `backup.same_owner`).

Then the WAL archive beside them (`<name>-wal`, `walarchive`): the completed segments wholly before the oldest kept
base backup's start segment go (`wal_prunable`, pure), each entry before its object (`archiveprune.remove_archived`).
Never a partial segment, never a timeline's history file (tiny, and a recovery that follows timelines reads it),
nothing from that segment on; nothing at all when no base backup is kept. With them go the gap records
(`archivestore.Gap`) the archive resumed after at or before that segment: no replay from a kept base backup crosses
them any more.

The run's result gains `baseBackup` (`{"file", "time", "size", "sha256"}`, `time` the base backup's end) and, with
--prune-wal, `walRetention` (`{"baseBackupsKept", "baseBackupsDeleted", "pruned", "prunedBytes", "keptFrom"}`: the
base backups kept and deleted, then the WAL segments deleted, their stored bytes, and the oldest segment kept for a
base backup, as `binlogRetention` reports binlogs), and `oldestBaseBackup` (`{"file", "time"}`: the kept base backup
that ended first, the earliest a restore can start from).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from runner.archiveprune import Pruned, remove_archived
from runner.archivestore import ENTRY, ArchiveStore, FolderArchive, Gap, S3Archive
from runner.backup import same_owner
from runner.basebackup import BaseManifest, BaseOptions, read_s3_base_manifest, take_base_backup, take_base_backup_s3
from runner.errors import Reason, RunnerError, Scrubber
from runner.manifest import Owner
from runner.naming import MANIFEST_SUFFIX, parse_base_name
from runner.objectstore import S3Location, list_keys, storage_error
from runner.process import Deadline
from runner.retention import Plan, Policy, plan
from runner.walarchive import SEGMENT, WalEntry, read_wal_index, segment_order, wal_archive_name

__all__ = [
    "BASE_KEY",
    "RESULT_KEY",
    "BaseShelf",
    "FolderShelf",
    "S3Shelf",
    "base_plan",
    "base_step",
    "stale_wal_gaps",
    "wal_prunable",
]

log = structlog.get_logger("dbb-backup")

BASE_KEY: Final = "baseBackup"
RESULT_KEY: Final = "walRetention"


def base_plan(
    names: Iterable[str],
    prefix: str,
    policy: Policy,
    ours: Mapping[str, BaseManifest],
    now: datetime,
    protect: str | None = None,
) -> Plan:
    """What retention deletes of the base backups `ours` ({file: its manifest}, this owner's) among `names`, and
    why each kept one stays; `policy.binlog_window` is the WAL window here, measured from each one's end."""
    ready = {file: datetime.fromisoformat(manifest.end) for file, manifest in ours.items()}
    sizes = {file: manifest.size for file, manifest in ours.items()}
    verified = dict.fromkeys(ours, True)  # published only once whole and hashed: nothing to verify apart
    return plan(
        names, prefix, policy, verified, now=now, protect=protect, sizes=sizes, parse=parse_base_name, ready=ready
    )


def wal_prunable(index: Mapping[str, WalEntry], kept: Iterable[BaseManifest]) -> tuple[str | None, list[WalEntry]]:
    """(the oldest segment a kept base backup starts in, the archived segments wholly before it). A segment of an
    older timeline is before it when its number is; one of a later timeline never is."""
    starts = [manifest.start_segment for manifest in kept]
    if not starts:
        return None, []
    oldest = min(starts, key=lambda name: (name[8:], name[:8]))
    before = [
        entry
        for entry in index.values()
        if entry.closed
        and SEGMENT.fullmatch(entry.segment)
        and entry.segment[8:] < oldest[8:]
        and entry.segment[:8] <= oldest[:8]
    ]
    return oldest, before


def stale_wal_gaps(gaps: Iterable[Gap], oldest: str | None) -> list[Gap]:
    """The gap records no replay from a kept base backup crosses any more: those the archive resumed after at or
    before `oldest`, the segment the oldest kept base backup starts in (none when no base backup is kept)."""
    if oldest is None:
        return []
    return [gap for gap in gaps if segment_order(gap.resumed_at) <= segment_order(oldest)]


class BaseShelf(Protocol):
    """Where a run's base backups and their WAL archive are: its folder, or its bucket and prefix."""

    def take(self, options: BaseOptions, scrub: Scrubber, deadline: Deadline) -> tuple[str, BaseManifest]: ...

    def names(self, prefix: str) -> list[str]:
        """The names there that start with `<prefix>-` (base backups, manifests, and whatever else)."""
        ...

    def manifest(self, file: str) -> BaseManifest | None:
        """The base backup's manifest; None when it has none that reads as one."""
        ...

    def delete(self, name: str) -> None: ...

    def wal(self, prefix: str) -> ArchiveStore: ...


@dataclass(frozen=True)
class FolderShelf:
    folder: Path

    def take(self, options: BaseOptions, scrub: Scrubber, deadline: Deadline) -> tuple[str, BaseManifest]:
        path, manifest = take_base_backup(options, self.folder, scrub, deadline)
        return str(path), manifest

    def names(self, prefix: str) -> list[str]:
        return [p.name for p in self.folder.glob(f"{prefix}-*")]

    def manifest(self, file: str) -> BaseManifest | None:
        try:
            return BaseManifest.from_json((self.folder / (file + MANIFEST_SUFFIX)).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def delete(self, name: str) -> None:
        try:
            (self.folder / name).unlink(missing_ok=True)
        except OSError as error:
            raise RunnerError(Reason.STORAGE_ERROR, f"retention could not delete {name}: {error.strerror}") from None

    def wal(self, prefix: str) -> ArchiveStore:
        return FolderArchive(self.folder / wal_archive_name(prefix))


@dataclass(frozen=True)
class S3Shelf:
    client: Any
    location: S3Location
    object_arguments: dict[str, str]  # server-side encryption of what it writes

    def take(self, options: BaseOptions, scrub: Scrubber, deadline: Deadline) -> tuple[str, BaseManifest]:
        return take_base_backup_s3(options, self.client, self.location, self.object_arguments, scrub, deadline)

    def names(self, prefix: str) -> list[str]:
        base = self.location.key("")
        found = (key.removeprefix(base) for key in list_keys(self.client, self.location.bucket, base + f"{prefix}-"))
        return [name for name in found if "/" not in name]

    def manifest(self, file: str) -> BaseManifest | None:
        with contextlib.suppress(RunnerError):
            return read_s3_base_manifest(self.client, self.location.bucket, self.location.key(file))
        return None

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self.location.key(name))
        except Exception as error:
            raise storage_error(error, self.location.url(name)) from None

    def wal(self, prefix: str) -> ArchiveStore:
        inside = S3Location(self.location.bucket, self.location.key(wal_archive_name(prefix)))
        return S3Archive(self.client, inside, self.object_arguments)


@dataclass(frozen=True)
class BaseStep:
    options: BaseOptions  # its name is the run's --name, its owner the run's
    take: bool  # --base-backup
    prune: bool  # --prune-wal
    policy: Policy  # the run's retention, with --wal-window as its window


def base_step(step: BaseStep, shelf: BaseShelf, now: datetime, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    """The run's base backup and its retention (see above): the keys they add to the run's result."""
    result: dict[str, Any] = {}
    taken = None
    if step.take:
        where, manifest = shelf.take(step.options, scrub, deadline)
        taken = manifest.file
        result[BASE_KEY] = {"file": where, "time": manifest.end, "size": manifest.size, "sha256": manifest.sha256}
    if step.prune and step.policy.any:
        deadline.check()
        result[RESULT_KEY] = _prune(shelf, step.options.name, step.policy, step.options.owner, now, taken)
    return result


def _prune(
    shelf: BaseShelf, prefix: str, policy: Policy, owner: Owner | None, now: datetime, protect: str | None
) -> dict[str, object]:
    names = shelf.names(prefix)
    found = {name: shelf.manifest(name) for name in names if parse_base_name(prefix, name) is not None}
    ours = {name: manifest for name, manifest in found.items() if manifest and same_owner(manifest.owner, owner)}
    decided = base_plan(names, prefix, policy, ours, now, protect)
    for name in decided.delete:
        shelf.delete(name)
        log.info("old base backup deleted", file=name)
    deleted = [name for name in decided.delete if name in ours]
    pruned = _prune_wal(shelf.wal(prefix), [ours[file] for file in decided.kept])
    counts: dict[str, object] = {"baseBackupsKept": len(decided.kept), "baseBackupsDeleted": len(deleted)}
    if decided.kept:
        oldest = min(decided.kept, key=lambda name: ours[name].end)
        counts["oldestBaseBackup"] = {"file": oldest, "time": ours[oldest].end}
    return counts | pruned.result()


def _prune_wal(store: ArchiveStore, kept: list[BaseManifest]) -> Pruned:
    oldest, entries = wal_prunable(read_wal_index(store), kept)
    for entry in entries:
        remove_archived(store, entry.segment + ENTRY, entry.object)
        log.info("archived WAL pruned", segment=entry.segment, object=entry.object, size=entry.size, keptFrom=oldest)
    for gap in stale_wal_gaps(store.gaps(), oldest):
        store.remove(gap.name)
        log.info("gap record pruned", record=gap.name, keptFrom=oldest)
    return Pruned(tuple(e.segment for e in entries), sum(e.size for e in entries), oldest)
