"""`dbb-backup run --prune-binlogs`: after retention, the archived binlogs no kept backup needs go.

A point-in-time restore replays from a backup's coordinates (`binlog.Coordinates`) on, so of the archive beside the
backups (`archivestore`, the same `<name>-binlog`) only the binlogs from the oldest kept backup's coordinates' file
on are needed. Deleted (`prunable`, pure):
- each closed binlog wholly before that file: its entry first, then its object, so that an entry always names an
  object that exists (a reader that lists the entry a moment before reads a binlog no replay needs);
- each gap record (`archivestore.Gap`) whose archive resumed at or before that file: no replay from a kept backup
  can cross it any more; with it, the `.partial` of a binlog it lists as missing (never whole, never needed);
- never the file itself, nor anything after it, nor the open binlog's `.partial`.
Without a kept backup with coordinates nothing goes: the archive may be all there is to restore from later. The
kept backups are those retention kept (this owner's); `run` prunes binlogs only when it has a retention rule, as a
bucket's run without one reads only its newest manifests.
The run's result reports `{"pruned", "prunedBytes", "keptFrom"}` (`Pruned.result`). The WAL archive of PostgreSQL
base backups is pruned by the same steps (`remove_archived`, `Pruned`; see `baseretention`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from runner.archivestore import ENTRY, PARTIAL, ArchiveStore, Entry, Gap, binlog_key
from runner.manifest import Manifest
from runner.naming import parse_backup_name

__all__ = ["Pruned", "folder_manifests", "prunable", "prune_binlogs", "remove_archived"]

log = structlog.get_logger("dbb-backup")

RESULT_KEY: Final = "binlogRetention"


@dataclass(frozen=True)
class Pruned:
    files: tuple[str, ...] = ()  # the binlogs (WAL segments) whose archived copies were deleted, oldest first
    bytes: int = 0  # their stored objects' sizes together
    kept_from: str | None = None  # the oldest file a kept backup needs (None: no kept backup says)

    def result(self) -> dict[str, object]:
        return {"pruned": len(self.files), "prunedBytes": self.bytes, "keptFrom": self.kept_from}


def prunable(
    index: Mapping[str, Entry], gaps: Sequence[Gap], kept: Iterable[Manifest]
) -> tuple[str | None, list[Entry], list[Gap]]:
    """(the oldest binlog a kept backup needs, the entries to delete, the gap records to delete)."""
    starts = [m.binlog.file for m in kept if m.binlog is not None and m.binlog.file is not None]
    if not starts:
        return None, [], []
    oldest = min(starts, key=binlog_key)
    stale_gaps = [g for g in gaps if binlog_key(g.resumed_at) <= binlog_key(oldest)]
    entries = []
    for entry in index.values():
        if binlog_key(entry.file) >= binlog_key(oldest):
            continue
        if entry.closed or any(g.covers(entry.file) for g in stale_gaps):
            entries.append(entry)
    return oldest, entries, stale_gaps


def prune_binlogs(store: ArchiveStore, kept: Iterable[Manifest]) -> Pruned:
    """Deletes what `prunable` names from `store`."""
    oldest, entries, gaps = prunable(store.index(), store.gaps(), kept)
    for entry in entries:
        remove_archived(store, entry.file + ("" if entry.closed else PARTIAL) + ENTRY, entry.object)
        for piece in entry.pieces:  # an open binlog's later pieces (a partial a gap left)
            store.remove(piece.object)
        log.info(
            "archived binlog pruned", file=entry.file, object=entry.object, size=entry.stored_size, keptFrom=oldest
        )
    for gap in gaps:
        store.remove(gap.name)
        log.info("gap record pruned", record=gap.name, keptFrom=oldest)
    return Pruned(tuple(e.file for e in entries), sum(e.stored_size for e in entries), oldest)


def remove_archived(store: ArchiveStore, entry: str, stored: str) -> None:
    """One archived file: its entry first, then its object, so that an entry always names an object that exists
    (a reader that listed the entry a moment before reads a file no restore needs)."""
    store.remove(entry)
    store.remove(stored)


def folder_manifests(folder: Path, prefix: str, files: Iterable[str]) -> Iterator[Manifest]:
    """The manifests of the backups `files` of `prefix` in `folder` (those that have a readable one)."""
    for file in files:
        backup = parse_backup_name(prefix, file)
        if backup is None:
            continue
        try:
            yield Manifest.from_json((folder / backup.manifest).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
