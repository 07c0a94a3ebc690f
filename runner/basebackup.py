"""`dbb-backup basebackup` (and `run --base-backup`, `baseretention`): a PostgreSQL base backup, the starting point
of a point-in-time restore (`pgpitr`).

Everything around `run`'s dumps (retention by name pattern, `verify`, restore tests, `verify.queries`, `restore`'s
layouts) reads logical dumps of named databases. A base backup is a physical copy of the whole cluster that only a
point-in-time restore can use, together with the WAL archive (`walarchive`); its own name (`.base.tar.zst`) keeps it
out of every dump path, so that no retention or verification of dumps ever takes it for one of theirs.

    pg_basebackup -D - -Ft -X none -c fast   ─▶ zstd ─▶ (AES-256-GCM, as a backup) ─▶ <name>-<UTC>.base.tar.zst[.enc]

`-X none`: the WAL the copy needs (from its start to its end LSN) comes from the WAL archive, which the archiver's
slot keeps on the server until it is archived; a restore refuses a base backup whose WAL the archive lacks. `-c
fast`: an immediate checkpoint, so the backup starts at once. `-D - -Ft` streams one tar on stdout, which works for a
cluster without tablespaces of its own (pg_basebackup refuses otherwise). The WAL range (timeline, start and end
LSN) is read off pg_basebackup's own `backup_manifest`, the last member of that tar. The file is written like a backup
(temporary name, fsync, the manifest first, then the rename), or into a bucket like a dump (`take_base_backup_s3`:
one multipart upload, which exists for no reader until it completes, carrying its owner's uid as metadata; then its
manifest); its manifest, `<file>.json`:

    {"formatVersion": 1, "kind": "basebackup", "file", "engine": "postgresql", "serverVersion", "tool",
     "host", "port", "user", "size", "sha256", "compression": "zstd", "encryption", "keyId", "keyFingerprint",
     "start", "end", "duration", "wal": {"timeline": 1, "startLsn": "0/4000028", "endLsn": "0/4000100",
     "startSegment": "000000010000000000000004"}, "owner": {"kind", "namespace", "name", "uid"} | null}

`owner` is the DatabaseBackup whose run took it (`run --base-backup`), as in a dump's manifest: retention of base
backups (`baseretention`) only ever touches its own owner's.

`start` and `end` come from the server's clock (a point in time is compared with its commit times): `end` is read
after pg_basebackup returned, so the copy is consistent from `end` on, and a restore refuses any earlier point.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from runner import engines
from runner.compression import Compression, compressor
from runner.crypto import Encryptor, Key
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.manifest import Owner
from runner.naming import ENCRYPTED_SUFFIX, MANIFEST_SUFFIX, TIMESTAMP_FORMAT
from runner.objectstore import MultipartUpload, S3Location, error_code, storage_error
from runner.process import Deadline, Tool, run_capture
from runner.s3backup import OWNER_METADATA
from runner.stream import OutputFile, write_atomically
from runner.walarchive import lsn, segment_name

__all__ = [
    "BASE_SUFFIX",
    "BaseManifest",
    "BaseOptions",
    "read_base_manifest",
    "read_s3_base_manifest",
    "take_base_backup",
    "take_base_backup_s3",
]

log = structlog.get_logger("dbb-backup")

BASE_SUFFIX: Final = ".base.tar.zst"
READ_SIZE: Final = 1 << 20
# pg_basebackup's own manifest ends the tar (`backup_manifest`); its WAL range is near its end, after the file list.
_RANGE = re.compile(rb'"Timeline": (\d+), "Start-LSN": "([0-9A-F]+/[0-9A-F]+)", "End-LSN": "([0-9A-F]+/[0-9A-F]+)"')
TAIL: Final = 256 << 10


@dataclass(frozen=True)
class BaseOptions:
    connection: Connection
    name: str
    key: Key | None = None
    user_is_secret: bool = False  # the user name came from a Secret: not written into the manifest
    owner: Owner | None = None  # the DatabaseBackup whose run takes it (`run --base-backup`)


@dataclass(frozen=True)
class BaseManifest:
    file: str
    server_version: str
    tool: str
    host: str
    port: int
    user: str
    size: int
    sha256: str
    encryption: str
    key_id: str | None
    key_fingerprint: str | None
    start: str  # RFC 3339, the server's clock, microseconds
    end: str
    duration: float
    timeline: int
    start_lsn: str
    end_lsn: str
    segment_size: int
    owner: Owner | None = None

    @property
    def start_segment(self) -> str:
        return segment_name(self.timeline, lsn(self.start_lsn), self.segment_size)

    def to_json(self) -> str:
        data = {
            "formatVersion": 1,
            "kind": "basebackup",
            "file": self.file,
            "engine": Engine.POSTGRESQL.value,
            "serverVersion": self.server_version,
            "tool": self.tool,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "size": self.size,
            "sha256": self.sha256,
            "compression": Compression.ZSTD.value,
            "encryption": self.encryption,
            "keyId": self.key_id,
            "keyFingerprint": self.key_fingerprint,
            "start": self.start,
            "end": self.end,
            "duration": self.duration,
            "wal": {
                "timeline": self.timeline,
                "startLsn": self.start_lsn,
                "endLsn": self.end_lsn,
                "startSegment": self.start_segment,
                "segmentSize": self.segment_size,
            },
            "owner": _owner_json(self.owner),
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BaseManifest:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") != "basebackup" or data.get("formatVersion") != 1:
            raise ValueError("not a base backup manifest")
        wal = data["wal"]
        return cls(
            str(data["file"]),
            str(data["serverVersion"]),
            str(data["tool"]),
            str(data["host"]),
            int(data["port"]),
            str(data["user"]),
            int(data["size"]),
            str(data["sha256"]),
            str(data["encryption"]),
            data.get("keyId"),
            data.get("keyFingerprint"),
            str(data["start"]),
            str(data["end"]),
            float(data["duration"]),
            int(wal["timeline"]),
            str(wal["startLsn"]),
            str(wal["endLsn"]),
            int(wal["segmentSize"]),
            Owner.from_json(data.get("owner")),
        )


def _owner_json(owner: Owner | None) -> dict[str, str] | None:
    if owner is None:
        return None
    return {"kind": owner.kind, "namespace": owner.namespace, "name": owner.name, "uid": owner.uid}


def read_base_manifest(backup: Path) -> BaseManifest:
    path = backup.with_name(backup.name + ".json")
    try:
        return BaseManifest.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"no manifest {path.name} beside the base backup") from None
    except (ValueError, KeyError, TypeError) as error:
        raise RunnerError(Reason.VERIFY_FAILED, f"{path.name} is not a base backup manifest: {error}") from None


def read_s3_base_manifest(client: Any, bucket: str, key: str) -> BaseManifest:
    """The manifest of the base backup at `key` in `bucket`, as `read_base_manifest` reads a file's."""
    where = f"s3://{bucket}/{key}{MANIFEST_SUFFIX}"
    try:
        body = client.get_object(Bucket=bucket, Key=key + MANIFEST_SUFFIX)["Body"]
    except Exception as error:
        if error_code(error) in ("NoSuchKey", "404"):
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"no manifest {where} beside the base backup") from None
        raise storage_error(error, where) from None
    try:
        return BaseManifest.from_json(body.read().decode("utf-8"))
    except (ValueError, KeyError, TypeError) as error:
        raise RunnerError(Reason.VERIFY_FAILED, f"{where} is not a base backup manifest: {error}") from None


def _server_now(connection: Connection, scrub: Scrubber) -> tuple[str, str, int]:
    """(the server's clock, its version, its WAL segment size)."""
    now, version, size = (
        run_capture(
            [
                *engines.psql_argv(connection, "postgres"),
                "-c",
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
                " current_setting('server_version'),"
                " (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')",
            ],
            engines.child_env(Engine.POSTGRESQL, connection),
            scrub,
        )
        .strip()
        .split("|")
    )
    return now, version, int(size)


class _Output(Protocol):
    """Where the base backup streams: a file (`OutputFile`) or an upload (`MultipartUpload`), counted and hashed."""

    size: int
    sha256: Any  # hashlib's

    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class _Begun:
    name: str
    start: str
    server_version: str
    segment_size: int
    tool: str
    clock: float


def _begin(options: BaseOptions, scrub: Scrubber) -> _Begun:
    """The server's clock and settings, and the new base backup's name, before pg_basebackup starts."""
    start, version, segment_size = _server_now(options.connection, scrub)
    clock = time.monotonic()
    stamp = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
    name = f"{options.name}-{stamp}{BASE_SUFFIX}" + (ENCRYPTED_SUFFIX if options.key is not None else "")
    env = engines.child_env(Engine.POSTGRESQL, options.connection)
    tool = run_capture(["pg_basebackup", "--version"], env, scrub).strip()
    return _Begun(name, start, version, segment_size, tool, clock)


def _copy(options: BaseOptions, begun: _Begun, out: _Output, scrub: Scrubber, deadline: Deadline) -> BaseManifest:
    """pg_basebackup's tar, compressed (and encrypted) into `out`; its manifest, once the copy is whole."""
    connection = options.connection
    env = engines.child_env(Engine.POSTGRESQL, connection)
    target = ["-h", connection.host, "-p", str(connection.port), "-U", connection.user, "-w"]
    argv = ["pg_basebackup", "-D", "-", "-Ft", "-X", "none", "-c", "fast", *target]
    key = options.key
    encryptor = Encryptor(key.secret, out) if key is not None else None
    stage = compressor(Compression.ZSTD, encryptor if encryptor is not None else out)
    tail = bytearray()
    with Tool(argv, env, scrub, deadline=deadline) as tool:
        while data := tool.read(READ_SIZE):
            stage.write(data)
            tail += data
            del tail[:-TAIL]
            deadline.check()
        tool.finish()
    stage.close()
    if encryptor is not None:
        encryptor.close()
    ranges = _RANGE.findall(tail)
    if len(ranges) != 1:
        raise RunnerError(Reason.DUMP_FAILED, "pg_basebackup's manifest does not say where the WAL it needs lies")
    timeline, began, ended = (part.decode() for part in ranges[0])
    end, _, _ = _server_now(connection, scrub)
    return BaseManifest(
        begun.name,
        begun.server_version,
        begun.tool,
        connection.host,
        connection.port,
        "" if options.user_is_secret else connection.user,
        out.size,
        out.sha256.hexdigest(),
        "aes-256-gcm-chunked-v1" if key is not None else "none",
        key.id if key is not None else None,
        key.fingerprint if key is not None else None,
        begun.start,
        end,
        round(time.monotonic() - begun.clock, 3),
        int(timeline),
        began,
        ended,
        begun.segment_size,
        options.owner,
    )


def take_base_backup(
    options: BaseOptions, folder: Path, scrub: Scrubber, deadline: Deadline
) -> tuple[Path, BaseManifest]:
    """Into `folder`, written like a dump (see above)."""
    begun = _begin(options, scrub)
    with OutputFile(folder, begun.name) as out:
        manifest = _copy(options, begun, out, scrub, deadline)
        out.seal()
        # The manifest first: a base backup with its final name always has one (as a dump's, see manifest.py).
        write_atomically(folder, begun.name + MANIFEST_SUFFIX, manifest.to_json().encode())
        out.publish()
    log.info("base backup taken", file=begun.name, startLsn=manifest.start_lsn, endLsn=manifest.end_lsn, size=out.size)
    return folder / begun.name, manifest


def take_base_backup_s3(
    options: BaseOptions,
    client: Any,
    location: S3Location,
    object_arguments: dict[str, str],
    scrub: Scrubber,
    deadline: Deadline,
) -> tuple[str, BaseManifest]:
    """Into a bucket, as `run` writes a dump there (s3backup): the object exists only once its upload completed,
    and its manifest is written after it, so that a reader never counts a base backup that is not whole.
    `object_arguments`: the server-side encryption every object carries."""
    begun = _begin(options, scrub)
    key = location.key(begun.name)
    extra: dict[str, Any] = dict(object_arguments)
    if options.owner is not None:
        extra["Metadata"] = {OWNER_METADATA: options.owner.uid}
    with MultipartUpload(client, location.bucket, key, extra=extra) as out:
        manifest = _copy(options, begun, out, scrub, deadline)
        deadline.check()
        out.close()
    try:
        client.put_object(
            Bucket=location.bucket, Key=key + MANIFEST_SUFFIX, Body=manifest.to_json().encode(), **object_arguments
        )
    except Exception as error:
        raise storage_error(error, location.url(begun.name + MANIFEST_SUFFIX)) from None
    url = location.url(begun.name)
    log.info("base backup taken", object=url, startLsn=manifest.start_lsn, endLsn=manifest.end_lsn, size=out.size)
    return url, manifest


def result(path: Path | str, manifest: BaseManifest) -> dict[str, Any]:
    return {
        "status": "Succeeded",
        "file": str(path),
        "size": manifest.size,
        "sha256": manifest.sha256,
        "start": manifest.start,
        "end": manifest.end,
        "wal": {"timeline": manifest.timeline, "startLsn": manifest.start_lsn, "endLsn": manifest.end_lsn},
    }
