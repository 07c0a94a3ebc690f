"""The DatabaseRestore kind: its spec, and the judgments the webhook makes at apply time and the reconciler makes
again before it starts the Job (pure: the caller looks the source DatabaseBackup and the target StatefulSet up).

A DatabaseRestore names a DatabaseBackup (`spec.source.databaseBackup`) and one of its backups (`source.file`,
defaulted at admission to the newest one, so that what is restored is fixed when it is applied, not when a Job
happens to start); the target StatefulSet (`target.databaseName`, defaulted to the source's database) or a server
outside the namespace's StatefulSets (`target.external`: host, port, TLS, with `target.credentialsSecret`); a
mapping of database names; and `replace`.

What is refused, and where:
- at apply time (webhook and reconciler alike): a source that does not exist, has no backup yet, or whose chosen
  backup its last scheduled check found damaged or missing; a file outside the source's own storage; a target
  StatefulSet that does not exist; and, without `replace`, a restore onto a database the source itself backs up on
  its own StatefulSet. That database exists by definition: it is the one being protected.
- by the restore itself (`dbb-backup restore` without `--replace`): any other target database that exists, on an
  external server too (a server of another engine fails the restore's first connection). Only
  the database server knows, and the webhook neither holds database credentials nor connects to databases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from common.backups.model import backup_time, parse_spec
from common.fields import FieldError, Reader, show
from common.schedule import parse_time, rfc3339
from common.values import (
    CredentialsSecret,
    Engine,
    S3Storage,
    Tls,
    database_name_problems,
    is_host,
    read_tls,
    tls_problems,
)

__all__ = [
    "DatabaseRestoreSpec",
    "ExternalTarget",
    "NameMapping",
    "ReplayStart",
    "archives_wal",
    "backup_before",
    "newest_backup",
    "object_or_empty",
    "parse_restore_spec",
    "replay_start",
    "source_location",
    "targets",
]


@dataclass(frozen=True)
class NameMapping:
    source: str
    target: str


@dataclass(frozen=True)
class ExternalTarget:
    """`spec.target.external`: a database server outside this namespace's StatefulSets (a rebuilt server, a managed
    service), reached at `host:port` with `target.credentialsSecret`."""

    host: str
    port: int | None = None  # None: the engine's own (5432, 3306)
    tls: Tls | None = None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DatabaseRestoreSpec:
    database_backup: str
    file: str | None = None
    target_database_name: str | None = None
    external: ExternalTarget | None = None
    credentials_secret: CredentialsSecret | None = None
    # `usernameKey` was given: else a target StatefulSet may tell the user (see reconciler.restore_plan).
    username_key_given: bool = False
    databases: tuple[NameMapping, ...] = ()
    replace: bool = False
    no_owner: bool = False  # PostgreSQL: without ownership and grants (a server that lacks the source's roles)
    # With the source's spec.continuous: restore the backup, then replay the archive up to this second (RFC 3339 UTC)
    point_in_time: str | None = None


def parse_restore_spec(raw: object, path: str = "spec") -> tuple[DatabaseRestoreSpec | None, list[FieldError]]:
    errors: list[FieldError] = []
    if not isinstance(raw, Mapping):
        return None, [FieldError(path, f"must be an object, not {show(raw)}")]
    spec = Reader(raw, path, errors)
    source = spec.mapping("source", required=True)
    target = spec.mapping("target")
    backup = source.string("databaseBackup", required=True) if source else None
    file = source.string("file") if source else None
    credentials = None
    secret = target.mapping("credentialsSecret") if target else None
    username_key = secret.string("usernameKey") if secret is not None else None
    if secret is not None and (name := secret.string("name", required=True)) is not None:
        credentials = CredentialsSecret(name, username_key or "username", secret.string("passwordKey") or "password")
    mapping: list[NameMapping] = []
    listed = target.raw.get("databases") if target else None
    if listed is not None and not isinstance(listed, list):
        errors.append(FieldError(f"{path}.target.databases", f"must be a list, not {show(listed)}"))
    for index, item in enumerate(listed if isinstance(listed, list) else []):
        where = f"{path}.target.databases[{index}]"
        if not isinstance(item, Mapping):
            errors.append(FieldError(where, f"must be an object with from and to, not {show(item)}"))
            continue
        pair = Reader(item, where, errors)
        source_name, target_name = pair.string("from", required=True), pair.string("to", required=True)
        for key, name in (("from", source_name), ("to", target_name)):
            if name:
                errors.extend(database_name_problems(f"{where}.{key}", name))
        if source_name and target_name:
            mapping.append(NameMapping(source_name, target_name))
    seen: dict[str, str] = {}
    for index, entry in enumerate(mapping):
        if entry.source in seen:
            errors.append(FieldError(f"{path}.target.databases[{index}].from", f"{entry.source!r} is mapped twice"))
        seen[entry.source] = entry.target
    if len(set(seen.values())) != len(seen):
        errors.append(FieldError(f"{path}.target.databases", "two databases are mapped to the same name"))
    replace = spec.boolean("replace")
    point_in_time = _point_in_time(spec)
    external = _external(target, credentials, path) if target else None
    if backup is None or errors:
        return None, errors
    return (
        DatabaseRestoreSpec(
            database_backup=backup,
            file=file or None,
            target_database_name=(target.string("databaseName") if target else None) or None,
            external=external,
            credentials_secret=credentials,
            username_key_given=username_key is not None,
            databases=tuple(mapping),
            replace=bool(replace),
            no_owner=bool(spec.boolean("noOwner")),
            point_in_time=point_in_time,
        ),
        errors,
    )


def _point_in_time(spec: Reader) -> str | None:
    """`spec.pointInTime`, as RFC 3339 UTC to the second (binlog events carry whole seconds)."""
    text = spec.string("pointInTime")
    if text is None:
        return None
    moment = parse_time(text) if _RFC3339.fullmatch(text) else None
    if moment is None:
        spec.errors.append(
            FieldError(f"{spec.path}.pointInTime", f"{show(text)} is not an RFC 3339 time such as 2026-12-07T10:00:00Z")
        )
        return None
    return rfc3339(moment)


_RFC3339: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE)


def _external(target: Reader, credentials: CredentialsSecret | None, path: str) -> ExternalTarget | None:
    given = target.mapping("external")
    if given is None:
        return None
    where = f"{path}.target"
    if target.raw.get("databaseName"):
        target.errors.append(FieldError(where, "give databaseName or external, not both"))
    if credentials is None:
        target.errors.append(
            FieldError(
                f"{where}.credentialsSecret",
                "is required with external: the Secret with the user name and password for that server",
            )
        )
    host = given.string("host", required=True)
    if host is not None and not is_host(host):
        target.errors.append(FieldError(f"{where}.external.host", f"{host!r} is not a DNS name or an IP address"))
    port = given.integer("port", minimum=1, maximum=65535)
    tls = read_tls(given.mapping("tls"))
    if tls is not None:
        target.errors.extend(tls_problems(tls, None, f"{where}.external.tls"))
    return ExternalTarget(host, port, tls) if host else None


def source_location(source: Mapping[str, Any], s3: S3Storage | None = None) -> str | None:
    """Where the source DatabaseBackup's runs write: its backupPath, or, for a bucket, `s3://bucket/prefix` of its
    storage resolved through its BackupStore (`s3`; None when it could not be: then no location is known)."""
    spec = source.get("spec") or {}
    storage = spec.get("storage") or {}
    if isinstance(storage, Mapping) and "s3" in storage:
        return f"s3://{s3.bucket}/{s3.prefix}" if s3 is not None and s3.prefix else None
    path = spec.get("backupPath")
    return str(path).rstrip("/") if isinstance(path, str) and path else None


def backup_before(source: Mapping[str, Any], point_in_time: str) -> str | None:
    """The source's newest kept backup taken at or before `point_in_time` (status.backups), which a point-in-time
    restore loads before it replays the archive from that backup's binlog position."""
    moment = parse_time(point_in_time)
    if moment is None:
        return None
    for entry in (source.get("status") or {}).get("backups") or []:  # the newest first
        file = entry.get("file") if isinstance(entry, Mapping) else None
        taken = parse_time(backup_time(file)) if isinstance(file, str) else None
        if taken is not None and taken <= moment:
            return str(file)
    return None


@dataclass(frozen=True)
class ReplayStart:
    """What a point-in-time restore replays from: `file`, and whether the runner may take an older base backup
    beside it (`pick`, PostgreSQL: status names only the newest base backup, the runner finds the one that ended
    last at or before the point)."""

    file: str | None
    pick: bool = False


def replay_start(spec: DatabaseRestoreSpec, source: Mapping[str, Any], *, wal: bool) -> ReplayStart:
    """MySQL: spec.source.file, else the newest kept backup taken at or before the point (its binlog position).
    PostgreSQL (`wal`: its spec.continuous archives WAL, see archives_wal): spec.source.file, else its newest base
    backup (picked from)."""
    assert spec.point_in_time is not None
    if spec.file is not None:
        return ReplayStart(spec.file)
    if wal:
        last = object_or_empty(object_or_empty(source.get("status")).get("lastBackup"))
        base = object_or_empty(last.get("baseBackup")).get("file")
        return ReplayStart(str(base), pick=True) if isinstance(base, str) and base else ReplayStart(None)
    return ReplayStart(backup_before(source, spec.point_in_time))


def archives_wal(source: Mapping[str, Any]) -> bool:
    """Whether the DatabaseBackup `source` archives PostgreSQL WAL (a replay then starts from a base backup)."""
    spec, _ = parse_spec(source.get("spec"))
    return spec is not None and spec.engine is Engine.POSTGRESQL


def newest_backup(source: Mapping[str, Any]) -> str | None:
    """The source's newest backup, as its status names it (a published backup verified when it was written)."""
    last = (source.get("status") or {}).get("lastBackup") or {}
    file = last.get("url") or last.get("file")
    return str(file) if file else None


def targets(spec: DatabaseRestoreSpec, source_databases: tuple[str, ...]) -> dict[str, str]:
    """{source database: target database} for the databases the source names (an empty tuple: the source backs up
    every database, whose names only the backup knows; then only the mapping is known)."""
    mapped = {m.source: m.target for m in spec.databases}
    return {database: mapped.get(database, database) for database in source_databases} | mapped


def object_or_empty(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
