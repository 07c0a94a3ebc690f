"""The rules a DatabaseRestore is judged by, at admission and again before its Job: its source and file, its
target, and what it would overwrite."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Final

from common.backups.model import DatabaseBackupSpec, backup_time, parse_spec
from common.constants import BACKUP_ROOT
from common.fields import FieldError
from common.restores.model import (
    DatabaseRestoreSpec,
    ReplayStart,
    newest_backup,
    replay_start,
    source_location,
    targets,
)
from common.schedule import parse_time
from common.values import Engine, S3Storage

__all__ = ["judge"]

BASE_BACKUP: Final = re.compile(r"\.base\.tar\.zst(\.enc)?$")


def judge(
    spec: DatabaseRestoreSpec,
    namespace: str,
    source: Mapping[str, Any] | None,
    target_found: bool | None,
    s3: S3Storage | None = None,
) -> list[FieldError]:
    """Every reason to refuse this restore now. `source`: the DatabaseBackup (None: not found). `target_found`:
    whether the target StatefulSet exists (None: it could not be looked up, which is not a refusal). `s3`: the
    source's bucket storage, resolved through its BackupStore (the caller refuses a source whose store it cannot
    resolve)."""
    if source is None:
        return [
            FieldError(
                "spec.source.databaseBackup",
                f"DatabaseBackup {spec.database_backup!r} not found in namespace {namespace!r}",
            )
        ]
    errors: list[FieldError] = []
    source_spec, _ = parse_spec(source.get("spec"))
    if spec.point_in_time is not None:
        start = replay_start(spec, source, wal=source_spec is not None and source_spec.engine is Engine.POSTGRESQL)
        file = start.file
        errors += _point_in_time(spec, source, source_spec, start)
        if errors:
            return errors
    else:
        file = spec.file or newest_backup(source)
    if file is None:
        errors.append(
            FieldError(
                "spec.source.databaseBackup",
                f"DatabaseBackup {spec.database_backup!r} has no backup yet (status.lastBackup is empty): "
                "run one first (annotate it databases.test.io/backup-now)",
            )
        )
    else:
        location = source_location(source, s3)
        if location is not None and not _inside(file, location):
            errors.append(
                FieldError(
                    "spec.source.file",
                    f"{file!r} is not a backup of DatabaseBackup {spec.database_backup!r}, which writes under "
                    f"{location!r}",
                )
            )
        damaged = _found_damaged(source, file)
        if damaged is not None:
            errors.append(
                FieldError(
                    "spec.source.file",
                    f"{file!r} failed its last check ({damaged}): pick another backup with spec.source.file",
                )
            )
    target = (
        None if spec.external else spec.target_database_name or (source_spec.database_name if source_spec else None)
    )
    if target_found is False and target is not None:
        errors.append(
            FieldError(
                "spec.target.databaseName",
                f"StatefulSet {target!r} not found in namespace {namespace!r}",
            )
        )
    named = source_spec.connection.databases if source_spec is not None else ()
    protected = () if "all" in named else named  # `all` (or nothing): every database, names known to the backup only
    for index, entry in enumerate(spec.databases):
        if protected and entry.source not in protected:
            errors.append(
                FieldError(
                    f"spec.target.databases[{index}].from",
                    f"{entry.source!r} is not in the backup: DatabaseBackup {spec.database_backup!r} backs up "
                    f"{', '.join(map(repr, protected))}",
                )
            )
    if source_spec is not None and not spec.replace and target == source_spec.database_name:
        if protected:
            onto = ", ".join(repr(t) for t in sorted(set(targets(spec, protected).values()) & set(protected)))
        elif spec.databases and source_spec.engine is Engine.POSTGRESQL:
            onto = ""  # from a backup of all, PostgreSQL restores only the databases mapped: the restore judges them
        else:
            onto = "every database the backup holds (the source backs up all of them)"
        if onto:
            errors.append(
                FieldError(
                    "spec.replace",
                    f"false, and the restore would overwrite {onto} on StatefulSet {target!r}, which "
                    f"DatabaseBackup {spec.database_backup!r} backs up and which exists: set spec.replace: true, "
                    "or restore under another name with spec.target.databases",
                )
            )
    return errors


def _point_in_time(
    spec: DatabaseRestoreSpec,
    source: Mapping[str, Any],
    source_spec: DatabaseBackupSpec | None,
    replay: ReplayStart,
) -> list[FieldError]:
    """A point in time must lie in what the source's archive reaches, and the backup replayed from must precede it
    and be covered by the archive (status.continuous, which the archiver keeps). PostgreSQL replays from a base
    backup, and a base backup holds the whole server: the databases to take from it must be named."""
    assert spec.point_in_time is not None
    name, moment = spec.database_backup, spec.point_in_time
    if not isinstance((source.get("spec") or {}).get("continuous"), Mapping):
        return [
            FieldError(
                "spec.pointInTime",
                f"DatabaseBackup {name!r} has no spec.continuous, so only its backups' own times can be restored: "
                "leave pointInTime out, or turn continuous archiving on (it reaches back to its first backup after)",
            )
        ]
    if source_spec is not None and source_spec.engine is Engine.POSTGRESQL:
        refused = _wal_replay(spec, source_spec, replay)
        if refused:
            return refused
    continuous = (source.get("status") or {}).get("continuous") or {}
    first, last = continuous.get("recoverableFrom"), continuous.get("recoverableUntil")
    if not isinstance(first, str) or not isinstance(last, str):
        return [
            FieldError(
                "spec.pointInTime",
                f"DatabaseBackup {name!r} can restore to no point in time yet (status.continuous has no "
                "recoverableFrom and recoverableUntil): its archive needs a backup taken after archiving began",
            )
        ]
    at, start, end = parse_time(moment), parse_time(first), parse_time(last)
    if at is None or start is None or end is None or not start <= at <= end:
        return [
            FieldError(
                "spec.pointInTime",
                f"{moment!r} is outside what DatabaseBackup {name!r} can restore to: from {first} to {last}",
            )
        ]
    file = replay.file
    taken = parse_time(backup_time(file)) if file is not None else None
    if file is not None and not replay.pick and (taken is None or not start <= taken <= at):
        return [
            FieldError(
                "spec.source.file",
                f"{file!r} was not taken between {first} and {moment}, so the archive cannot replay from it to "
                "spec.pointInTime: leave spec.source.file out to use the newest backup that can",
            )
        ]
    return []


def _wal_replay(spec: DatabaseRestoreSpec, source_spec: DatabaseBackupSpec, replay: ReplayStart) -> list[FieldError]:
    """PostgreSQL: a base backup to replay from, and the databases to take from it."""
    name = spec.database_backup
    if replay.file is None:
        return [
            FieldError(
                "spec.pointInTime",
                f"DatabaseBackup {name!r} has no base backup yet (status.lastBackup.baseBackup is empty): a WAL "
                "replay starts from one, and each scheduled run takes one (annotate it databases.test.io/backup-now)",
            )
        ]
    if spec.file is not None and not BASE_BACKUP.search(spec.file):
        return [
            FieldError(
                "spec.source.file",
                f"{spec.file!r} is a dump, and a WAL replay starts from a base backup (<name>-<time>.base.tar.zst): "
                "leave spec.source.file out to use the newest base backup that can",
            )
        ]
    named = [d for d in source_spec.connection.databases if d != "all"]
    if not named and not spec.databases:
        return [
            FieldError(
                "spec.target.databases",
                f"empty, and DatabaseBackup {name!r} backs up every database: a base backup holds the whole "
                "server, so name the databases to restore (from: NAME, to: NAME)",
            )
        ]
    return []


def _inside(file: str, location: str) -> bool:
    """Whether `file` is directly in the source's folder or under its prefix (not below it: a deeper prefix is
    another DatabaseBackup's). A folder is judged by its path below the backup volume's mount point: the local
    sandbox reports `/backups/db/x` where it really is (`<dev>/backups/db/x`)."""
    if location.startswith("s3://") or not location.startswith(BACKUP_ROOT + "/"):
        name = file.removeprefix(location + "/")
        return file.startswith(location + "/") and "/" not in name and name not in ("", ".", "..")
    below = PurePosixPath(location).relative_to(BACKUP_ROOT).parts
    parent = PurePosixPath(file).parent.parts
    return len(parent) > len(below) and parent[-len(below) :] == below


def _found_damaged(source: Mapping[str, Any], file: str) -> str | None:
    """The reason the source's last scheduled check gave for `file`, if it found it damaged or missing."""
    last = (source.get("status") or {}).get("lastVerification") or {}
    for checked in last.get("backups") or []:
        if isinstance(checked, Mapping) and checked.get("file") == file and checked.get("result") == "Failed":
            return str(checked.get("reason") or "Failed")
    return None
