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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from common.constants import BACKUP_ROOT
from common.model import CredentialsSecret, Engine, FieldError, S3Storage, Tls, _Reader, _show, _tls, parse_spec
from common.validation import database_name_problems, is_host, tls_problems

__all__ = [
    "DatabaseRestoreSpec",
    "ExternalTarget",
    "NameMapping",
    "judge",
    "newest_backup",
    "parse_restore_spec",
    "restore_defaults",
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
    databases: tuple[NameMapping, ...] = ()
    replace: bool = False
    no_owner: bool = False  # PostgreSQL: without ownership and grants (a server that lacks the source's roles)


def parse_restore_spec(raw: object, path: str = "spec") -> tuple[DatabaseRestoreSpec | None, list[FieldError]]:
    errors: list[FieldError] = []
    if not isinstance(raw, Mapping):
        return None, [FieldError(path, f"must be an object, not {_show(raw)}")]
    spec = _Reader(raw, path, errors)
    source = spec.mapping("source", required=True)
    target = spec.mapping("target")
    backup = source.string("databaseBackup", required=True) if source else None
    file = source.string("file") if source else None
    credentials = None
    secret = target.mapping("credentialsSecret") if target else None
    if secret is not None and (name := secret.string("name", required=True)) is not None:
        credentials = CredentialsSecret(
            name, secret.string("usernameKey") or "username", secret.string("passwordKey") or "password"
        )
    mapping: list[NameMapping] = []
    listed = target.raw.get("databases") if target else None
    if listed is not None and not isinstance(listed, list):
        errors.append(FieldError(f"{path}.target.databases", f"must be a list, not {_show(listed)}"))
    for index, item in enumerate(listed if isinstance(listed, list) else []):
        where = f"{path}.target.databases[{index}]"
        if not isinstance(item, Mapping):
            errors.append(FieldError(where, f"must be an object with from and to, not {_show(item)}"))
            continue
        pair = _Reader(item, where, errors)
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
            databases=tuple(mapping),
            replace=bool(replace),
            no_owner=bool(spec.boolean("noOwner")),
        ),
        errors,
    )


def _external(target: _Reader, credentials: CredentialsSecret | None, path: str) -> ExternalTarget | None:
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
    tls = _tls(given.mapping("tls"))
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


def restore_defaults(raw_spec: Mapping[str, Any], source: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields admission fills in: `source.file` (the newest backup) and `target.databaseName` (the source's)."""
    defaults: dict[str, Any] = {}
    if source is None:
        return defaults
    given_source, given_target = (_object(raw_spec.get(key)) for key in ("source", "target"))
    if not given_source.get("file") and (newest := newest_backup(source)) is not None:
        defaults["source"] = {"file": newest}
    database = (source.get("spec") or {}).get("databaseName")
    external = "external" in given_target
    if not external and not given_target.get("databaseName") and isinstance(database, str) and database:
        defaults["target"] = {"databaseName": database}
    return defaults


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


def _object(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _found_damaged(source: Mapping[str, Any], file: str) -> str | None:
    """The reason the source's last scheduled check gave for `file`, if it found it damaged or missing."""
    last = (source.get("status") or {}).get("lastVerification") or {}
    for checked in last.get("backups") or []:
        if isinstance(checked, Mapping) and checked.get("file") == file and checked.get("result") == "Failed":
            return str(checked.get("reason") or "Failed")
    return None
