"""The manifest beside each backup (`<backup file>.json`): what the file holds and how to check it.

Written once the backup is complete and (with `--verify`) verified, with the same temporary-name/fsync/rename steps,
and published just before the backup file itself gets its final name: a backup file with a final name always has
its manifest, and a reader takes a backup as existing only when its manifest says `verified`. It holds no secret:
no password, no key, and no user name that came from a Secret (`user` is then ""); `host`, `port` and `user` say
where the backup came from (and where `verify --restore-test` goes by default).

    {"formatVersion": 1, "file": "app-20250101T000000Z.dump", "engine": "postgresql",
     "serverVersion": "15.18", "databases": ["app"], "globals": false, "layout": "custom",
     "members": [], "size": 1234, "sha256": "...", "compression": "gzip", "encryption": "none",
     "tool": "pg_dump (PostgreSQL) 15.18", "host": "db", "port": 5432, "user": "backup",
     "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:00:05Z", "duration": 5.01, "verified": true,
     "owner": {"kind": "DatabaseBackup", "namespace": "shop", "name": "nightly", "uid": "6f1c..."},
     "keyId": "2026-12", "keyFingerprint": "8c1f...",
     "rows": {"app": {"public.customers": 2000, "public.orders": 5000}}}

`binlog` (MySQL/MariaDB with binary logging on): where the dump's snapshot sits in the server's binlog,
`{"file": "mysql-bin.000003", "position": 1234, "gtid": "0-1-42"}` (`runner.binlog`); absent otherwise.

`rows`: each table's rows as the backup holds them, counted in the dump while the run verified it (a PostgreSQL
table as `schema.table`, quoted as pg_dump quotes it; a MySQL table by its name); a restore test compares the
restored tables with them.

`queries` (only with `verify.queries`, PostgreSQL): each query as `{"name", "database", "sql", "sha256", "result",
"lines"}`, what it printed (as `psql -At` prints: text values, `|` between columns; fixed settings; see
`queries.py`) in the very snapshot pg_dump took; `result` is the text itself when it is at most 512 characters,
`lines` how many rows it printed. A restore test runs each again on the restored copy and compares.

`keyId` and `keyFingerprint` (encrypted backups): the key it needs, by its id (its entry in the key Secret) and its
fingerprint (`crypto.fingerprint`, which reveals nothing of the key). Verification tells from them, without reading
the backup, whether the key it needs is still there; manifests written before keys had ids have neither, and their
file's header names the key instead.

`owner` is the DatabaseBackup that made the backup (null for a run by hand without `--owner`); retention deletes
only backups whose manifest names its own owner's uid. Manifests written before `owner` and `verified` existed read
as owner null and verified false.

`layout`: `custom` (one pg_dump custom-format archive), `tar` (a tar of them, see `docs/backup-format.md`), `set`
(the same members as objects of their own, in a bucket) or `sql` (one mysqldump script). `members` lists a tar's or
a set's files with the database each holds; a set's members also carry their `size` and `sha256`, and the set's own
`size` is their sum and its `sha256` that of their `sha256sum` listing (`set_digest`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from runner.binlog import Coordinates
from runner.errors import Reason, RunnerError
from runner.naming import MANIFEST_SUFFIX

__all__ = [
    "FORMAT_VERSION",
    "Manifest",
    "Member",
    "Owner",
    "QueryResult",
    "manifest_path",
    "read_manifest",
    "set_digest",
]

FORMAT_VERSION: Final = 1
ENCRYPTION_NONE: Final = "none"
ENCRYPTION_AES: Final = "aes-256-gcm-chunked-v1"
SHOWN_RESULT: Final = 512  # a query's result up to this many characters is kept as it printed


@dataclass(frozen=True)
class Member:
    name: str
    database: str | None  # None for globals.sql
    # A set's member is an object of its own: its size and sha256 as stored. A tar's member has neither (the tar's
    # own checksum covers it).
    size: int | None = None
    sha256: str | None = None


def set_digest(members: list[Member]) -> str:
    """A set's sha256: of its members' `sha256sum` lines, in manifest order (`<sha256>  <name>\n` each)."""
    listing = "".join(f"{m.sha256}  {m.name}\n" for m in members)
    return hashlib.sha256(listing.encode()).hexdigest()


@dataclass(frozen=True)
class QueryResult:
    """A query and what it printed at backup time: its sha256 and, when short, the text itself."""

    name: str
    database: str
    sql: str
    sha256: str
    result: str | None = None
    lines: int | None = None  # rows printed; absent in manifests written before it was recorded

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "database": self.database, "sql": self.sql, "sha256": self.sha256}
        data |= {"result": self.result} if self.result is not None else {}
        return data | ({"lines": self.lines} if self.lines is not None else {})

    @classmethod
    def from_dict(cls, raw: object) -> QueryResult:
        if not isinstance(raw, dict) or not all(
            isinstance(raw.get(k), str) for k in ("name", "database", "sql", "sha256")
        ):
            raise ValueError("queries is not a list of {name, database, sql, sha256}")
        result, lines = raw.get("result"), raw.get("lines")
        return cls(
            raw["name"],
            raw["database"],
            raw["sql"],
            raw["sha256"],
            result if isinstance(result, str) else None,
            lines if isinstance(lines, int) and not isinstance(lines, bool) else None,
        )


@dataclass(frozen=True)
class Owner:
    namespace: str
    name: str
    uid: str
    kind: str = "DatabaseBackup"

    @classmethod
    def from_json(cls, data: object) -> Owner | None:
        if data is None:
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("namespace", "name", "uid")):
            raise ValueError("owner is not {kind, namespace, name, uid}")
        return cls(data["namespace"], data["name"], data["uid"], str(data.get("kind", "DatabaseBackup")))


@dataclass(frozen=True)
class Manifest:
    file: str
    engine: str
    server_version: str
    databases: list[str]
    globals: bool
    layout: str
    size: int
    sha256: str
    compression: str
    encryption: str
    tool: str
    host: str
    port: int
    user: str
    start: str
    end: str
    duration: float
    members: list[Member] = field(default_factory=list)
    verified: bool = False
    owner: Owner | None = None
    # Rows per table, per database, as the backup holds them (counted in the dump as the run verified it); a restore
    # test compares the restored tables with them. Empty in manifests written before, or by a run without --verify.
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    # verify.queries (PostgreSQL): each query, and what it printed in the snapshot the dump was taken in.
    queries: list[QueryResult] = field(default_factory=list)
    # The key an encrypted backup needs: its id (the Secret's entry) and its fingerprint (crypto.fingerprint). None
    # in manifests of unencrypted backups and in those written before keys had ids.
    key_id: str | None = None
    key_fingerprint: str | None = None
    # MySQL/MariaDB with binary logging: where the dump's snapshot sits in the binlog (runner.binlog). None: no
    # binary logging, another engine, or a manifest written before it was recorded.
    binlog: Coordinates | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = {_camel(k): v for k, v in asdict(self).items()}
        data["members"] = [{k: v for k, v in m.items() if v is not None or k == "database"} for m in data["members"]]
        data["queries"] = [q.to_dict() for q in self.queries]
        if not self.queries:
            del data["queries"]
        for name in ("keyId", "keyFingerprint", "binlog"):
            if data[name] is None:
                del data[name]
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("formatVersion") != FORMAT_VERSION:
            raise ValueError(f"unsupported formatVersion {data.get('formatVersion')!r}")
        values: dict[str, Any] = {}
        for name, kind in _FIELDS.items():
            value = data.get(_camel(name))
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{_camel(name)} is missing or not a {kind.__name__}")
            values[name] = value
        values["duration"] = float(values["duration"])
        members = data.get("members", [])
        if not isinstance(members, list) or not all(isinstance(m, dict) and "name" in m for m in members):
            raise ValueError("members is not a list of {name, database}")
        values["members"] = [_member(m) for m in members]
        if not all(isinstance(d, str) for d in values["databases"]):
            raise ValueError("databases is not a list of names")
        values["verified"] = data.get("verified") is True
        values["owner"] = Owner.from_json(data.get("owner"))
        values["rows"] = _rows(data.get("rows", {}))
        queries = data.get("queries", [])
        if not isinstance(queries, list):
            raise ValueError("queries is not a list")
        values["queries"] = [QueryResult.from_dict(item) for item in queries]
        for name in ("key_id", "key_fingerprint"):
            value = data.get(_camel(name))
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{_camel(name)} is not a string")
            values[name] = value
        values["binlog"] = Coordinates.from_dict(data.get("binlog"))
        return cls(**values)


_FIELDS: Final[dict[str, type]] = {
    "file": str,
    "engine": str,
    "server_version": str,
    "databases": list,
    "globals": bool,
    "layout": str,
    "size": int,
    "sha256": str,
    "compression": str,
    "encryption": str,
    "tool": str,
    "host": str,
    "port": int,
    "user": str,
    "start": str,
    "end": str,
    "duration": (int, float),  # type: ignore[dict-item]
}


def _rows(data: object) -> dict[str, dict[str, int]]:
    if not isinstance(data, dict) or not all(
        isinstance(tables, dict)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in tables.values())
        for tables in data.values()
    ):
        raise ValueError("rows is not {database: {table: count}}")
    return {str(database): {str(t): int(n) for t, n in tables.items()} for database, tables in data.items()}


def _member(data: dict[str, Any]) -> Member:
    size, sha256 = data.get("size"), data.get("sha256")
    if (size is not None and (not isinstance(size, int) or isinstance(size, bool))) or (
        sha256 is not None and not isinstance(sha256, str)
    ):
        raise ValueError(f"member {data['name']!r}: size or sha256 of the wrong type")
    return Member(str(data["name"]), data.get("database"), size, sha256)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def read_manifest(backup: Path) -> Manifest:
    path = manifest_path(backup)
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunnerError(Reason.VERIFY_FAILED, f"no manifest {path.name} beside the backup") from None
    except (OSError, ValueError) as error:
        raise RunnerError(Reason.VERIFY_FAILED, f"unreadable manifest {path.name}: {error}") from None
