"""Backup file names, temporary names, and which files retention and cleanup may touch. Pure: names in, names out.

A backup is `<name>-<UTC start YYYYmmddTHHMMSSZ><ext>`, its manifest `<that>.json`, and the record of the checks
that restored it `<that>.drills.jsonl`; the operator's Jobs use the DatabaseBackup's name as `<name>`, so two
DatabaseBackups never share a prefix. While it is written it is
`.<final name>.partial` (the manifest `.<final name>.json.partial`) in the same folder: hidden, so that `ls`
shows complete backups only, and in the same folder, so that the rename that publishes it is atomic.

Extensions (the payload, then the compression we applied, then `.enc` if encrypted):

| ext | what |
|---|---|
| `.dump` | one PostgreSQL database, `pg_dump` custom format (gzip: pg_dump's own zlib; none: uncompressed) |
| `.dump.zst` | the same, uncompressed by pg_dump, zstd by us |
| `.tar` | several PostgreSQL databases (and `globals.sql` for `all`): a tar of the files above |
| `.set` | the same in a bucket: no object of its own, but a key prefix with one object per member (`<set>/<member>`) |
| `.sql`, `.sql.gz`, `.sql.zst` | MySQL/MariaDB: one `mariadb-dump`/`mysqldump` SQL script |

A PostgreSQL base backup (`basebackup.py`) is `<name>-<UTC start>.base.tar.zst[.enc]`: an extension no dump has, so
that nothing that reads dumps ever takes it for one (`parse_base_name` is its own parser).

Retention and cleanup match the whole name against that pattern for the given name prefix: a file that merely
starts with the prefix (`app-old.tar`, `app-2-20250101T000000Z.dump` for prefix `app`) is never ours. And a name
is not enough: retention deletes only the files whose manifest names the run's own owner (the caller reads the
manifests; these functions stay pure).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "EXTENSIONS",
    "BackupName",
    "base_prefix",
    "database_problem",
    "orphan_manifests",
    "parse_backup_name",
    "parse_base_name",
    "parse_stored_name",
    "stale_temporaries",
    "temporary_name",
    "validate_prefix",
]

TIMESTAMP_FORMAT: Final = "%Y%m%dT%H%M%SZ"
TEMP_SUFFIX: Final = ".partial"
MANIFEST_SUFFIX: Final = ".json"
# A check's restore drills of a backup, one JSON object per line (runner.drills): not `.json`, which is a manifest's.
DRILLS_SUFFIX: Final = ".drills.jsonl"
ENCRYPTED_SUFFIX: Final = ".enc"
EXTENSIONS: Final = (".dump", ".dump.zst", ".tar", ".set", ".sql", ".sql.gz", ".sql.zst")
_EXT_PATTERN: Final = r"(?:\.dump(?:\.zst)?|\.tar|\.set|\.sql(?:\.gz|\.zst)?)(?:\.enc)?"
_TIMESTAMP_PATTERN: Final = r"[0-9]{8}T[0-9]{6}Z"
_BASE_PATTERN: Final = r"\.base\.tar\.zst(?:\.enc)?"
MAX_PREFIX: Final = 180  # leaves room for the timestamp, extensions and `.partial` within a 255-byte file name
# PostgreSQL keeps 63 bytes of a name (NAMEDATALEN - 1), MySQL 64 characters: a longer name is never a database's.
MAX_DATABASE_NAME: Final = 64


@dataclass(frozen=True, order=True)
class BackupName:
    timestamp: str  # first, so that sorting orders by time
    prefix: str
    extension: str

    @property
    def file(self) -> str:
        return f"{self.prefix}-{self.timestamp}{self.extension}"

    @property
    def manifest(self) -> str:
        return self.file + MANIFEST_SUFFIX

    @property
    def drills(self) -> str:
        return self.file + DRILLS_SUFFIX

    @property
    def encrypted(self) -> bool:
        return self.extension.endswith(ENCRYPTED_SUFFIX)

    @classmethod
    def new(cls, prefix: str, started: datetime, extension: str) -> BackupName:
        return cls(started.astimezone(UTC).strftime(TIMESTAMP_FORMAT), prefix, extension)


def validate_prefix(prefix: str) -> str | None:
    """Why `prefix` cannot name backup files, or None. It becomes part of a file name, nothing more."""
    if not prefix:
        return "must not be empty"
    if "/" in prefix or "\0" in prefix:
        return "must not contain '/'"
    if prefix.startswith("."):
        return "must not start with '.' (temporary files do)"
    if len(prefix.encode()) > MAX_PREFIX:
        return f"must be at most {MAX_PREFIX} bytes"
    return None


def database_problem(name: str) -> str | None:
    """Why `name` cannot be a database's name, or None. What a name may hold beyond this is each server's to say;
    every tool gets it as an option's value (see `engines`), never as a word of its own."""
    if not name:
        return "is empty"
    if "\0" in name:
        return "holds a NUL byte"
    if len(name.encode("utf-8", errors="surrogateescape")) > MAX_DATABASE_NAME:
        return f"is longer than {MAX_DATABASE_NAME} bytes"
    return None


def temporary_name(final: str) -> str:
    return f".{final}{TEMP_SUFFIX}"


def _backup_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}-(?P<timestamp>{_TIMESTAMP_PATTERN})(?P<extension>{_EXT_PATTERN})")


def parse_backup_name(prefix: str, name: str) -> BackupName | None:
    """The backup `name` is, if it is a backup file (not a manifest) of ours for `prefix`."""
    match = _backup_pattern(prefix).fullmatch(name)
    return BackupName(match["timestamp"], prefix, match["extension"]) if match else None


def parse_base_name(prefix: str, name: str) -> BackupName | None:
    """The base backup `name` is, if it is one (not its manifest) of ours for `prefix`."""
    match = re.fullmatch(
        rf"{re.escape(prefix)}-(?P<timestamp>{_TIMESTAMP_PATTERN})(?P<extension>{_BASE_PATTERN})", name
    )
    return BackupName(match["timestamp"], prefix, match["extension"]) if match else None


def base_prefix(name: str) -> str | None:
    """The name prefix of the base backup `name`, if it is one's name (not its manifest's)."""
    match = re.fullmatch(rf"(?P<prefix>.+)-{_TIMESTAMP_PATTERN}{_BASE_PATTERN}", name)
    return match["prefix"] if match else None


def parse_stored_name(prefix: str, name: str) -> BackupName | None:
    """A dump or a base backup of ours for `prefix`: what cleanup of a killed run's leftovers may touch."""
    return parse_backup_name(prefix, name) or parse_base_name(prefix, name)


def orphan_manifests(names: Iterable[str], prefix: str) -> list[str]:
    """Manifests of `prefix` whose backup file is absent, also as a temporary file: a run that died between
    publishing the manifest and the file (see `stream.OutputFile.publish`). Whose they are is for the caller."""
    present = set(names)
    orphans = []
    for name in sorted(present):
        backup = (
            parse_backup_name(prefix, name.removesuffix(MANIFEST_SUFFIX)) if name.endswith(MANIFEST_SUFFIX) else None
        )
        if backup is not None and backup.file not in present and temporary_name(backup.file) not in present:
            orphans.append(name)
    return orphans


def stale_temporaries(names: Iterable[str], prefix: str) -> list[str]:
    """Our temporary files for `prefix` (data or manifest) among `names`. Whether one is stale (its writer is gone)
    is for the caller to find out: a live writer holds a lock on it."""
    pattern = re.compile(
        rf"\.{re.escape(prefix)}-{_TIMESTAMP_PATTERN}(?:{_EXT_PATTERN}|{_BASE_PATTERN})(?:{re.escape(MANIFEST_SUFFIX)})?"
        rf"{re.escape(TEMP_SUFFIX)}"
    )
    return sorted(n for n in names if pattern.fullmatch(n))
