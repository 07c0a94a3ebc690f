"""`dbb-backup run`: dump, compress, encrypt, checksum, publish atomically, write the manifest, verify, prune.

The steps, in order, and why in that order:
1. Remove our stale temporary files (a killed earlier run's), and manifests of ours whose file never got its final
   name, so that a crash never accumulates garbage.
2. Ask the server its version: this is also the connection and password check, so that a wrong password or an
   unreachable host is reported as such, before any file exists. Resolve `all`; check the named databases exist.
3. Stream the dump into `.<final>.partial` (see `stream.py`) and fsync it; it keeps that name for now.
4. With `--verify`, check the file as `dbb-backup verify` would, still under its temporary name: a backup that
   fails never has a final name, and a SIGKILL, an OOM or a lost node during the dump or the check leaves only a
   temporary file, which no reader counts and the next run removes.
5. Publish: the manifest (which says `verified` and names the owner), then the file under its final name. A
   final-named file is complete, verified and described.
6. Retention, last: only a run that produced a good backup may delete older ones, and only backups whose manifest
   names the same owner (the DatabaseBackup's uid), counting only verified ones.

Several PostgreSQL databases (or `all`) go into one tar: tar needs each member's size before its data, and a dump's
size is known only at its end, so each member is first written (compressed, as it will be stored) to an unnamed
temporary file in the output folder (O_TMPFILE: it vanishes with the process, even on SIGKILL), then copied into the
tar stream. The extra disk space is one database's compressed dump at a time.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

import structlog

from runner import admin, binlog, engines, progress
from runner.binlog import Coordinates, CoordinateSniffer
from runner.compression import Compression, Sink, Stage, compressor
from runner.crypto import Encryptor, Key, Keyring
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.layout import CUSTOM, SQL, TAR, Stored, extension, member_name
from runner.manifest import ENCRYPTION_AES, ENCRYPTION_NONE, Manifest, Member, Owner
from runner.naming import BackupName, orphan_manifests, parse_backup_name
from runner.process import Deadline, Tool, run_capture
from runner.queries import Credential, Query, Snapshots, snapshots
from runner.retention import Plan, Policy, plan
from runner.stream import OutputFile, remove_stale_temporaries, storage_error, write_all, write_atomically
from runner.verify import verify_backup

__all__ = ["RunOptions", "run_backup"]

log = structlog.get_logger("dbb-backup")

READ_SIZE: Final = 1 << 20
ALL: Final = "all"


@dataclass(frozen=True)
class RunOptions:
    engine: Engine
    connection: Connection
    databases: Sequence[str]
    output_dir: Path | None  # None: the backup goes to a bucket (s3backup.py)
    compression: Compression
    name: str
    retention: Policy = field(default_factory=Policy)  # none of its rules: every backup stays
    key: Key | None = None  # the current key: what this run encrypts with
    verify: bool = False
    restore_test: bool = False
    user_is_secret: bool = False  # the user name came from a Secret (DB_USER): the manifest does not record it
    owner: Owner | None = None  # the DatabaseBackup that runs us: recorded, and the only one retention serves
    stale_upload_age: float = 86400.0  # s3: abort this name's incomplete uploads older than this (killed runs)
    queries: Sequence[Query] = ()  # verify.queries: recorded in the dump's own snapshot (PostgreSQL)
    query_role: Credential | None = None  # who runs them (QUERY_USER): a role that can only read, checked first
    scratch: Connection | None = None  # restore_test there (a server beside us), not on `connection`'s server
    scratch_wait: float = 180.0

    def restore_target(self) -> Connection | None:
        """Where the restore test restores: the scratch server, else a scratch database on the source's server."""
        return (self.scratch or self.connection) if self.restore_test else None


@dataclass(frozen=True)
class Target:
    """What one run backs up, resolved against the server."""

    databases: list[str]
    globals: bool
    server_version: str
    tool: str
    snapshots: Mapping[str, str] = field(default_factory=dict)  # per database: the exported snapshot to dump in
    binlog: bool = False  # MySQL: the dump records its snapshot's binlog coordinates (runner.binlog)


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_backup(options: RunOptions, scrub: Scrubber, deadline: Deadline) -> tuple[Path, Manifest, Plan]:
    assert options.output_dir is not None
    started, clock = datetime.now(UTC), time.monotonic()
    removed = remove_stale_temporaries(options.output_dir, options.name)
    removed += remove_orphan_manifests(options.output_dir, options.name, options.owner)
    target = resolve_target(options, scrub)
    make_room(options.output_dir, options.name, options.retention, options.owner)
    log.info("backup started", engine=options.engine.value, databases=target.databases, server=target.server_version)
    kind = kind_of(options.engine, target)
    ext = extension(options.engine, kind, options.compression, encrypted=options.key is not None)
    name = BackupName.new(options.name, started, ext)
    members: list[Member] = []
    coordinates: Coordinates | None = None
    with OutputFile(options.output_dir, name.file) as out:
        with progress.phase("dump", file=name.file):
            encryptor = Encryptor(options.key.secret, out) if options.key is not None else None
            head: Sink = encryptor if encryptor is not None else out
            with record_queries(options, target, scrub, deadline) as recorded:
                target = replace(target, snapshots=recorded.ids)
                if kind == TAR:
                    members = dump_tar(options, target, head, scrub, deadline)
                else:
                    coordinates = dump_stream(options, target, kind, head, scrub, deadline)
            if encryptor is not None:
                encryptor.close()
        deadline.check()
        out.seal()
        manifest = describe(options, target, name, kind, members, out.size, out.sha256.hexdigest(), started, clock)
        manifest = replace(manifest, queries=recorded.results, binlog=coordinates)
        if options.verify:
            # The file still has its temporary name: a backup that fails here never had a final name, and its
            # temporary file goes when this block is left.
            manifest = verify_new(out.temporary, manifest, options, scrub, deadline)
        deadline.check()
        # The manifest first, the file last: a final-named backup always has its manifest; a run that dies in
        # between leaves a manifest without a file, which the next run removes (remove_orphan_manifests).
        write_atomically(options.output_dir, name.manifest, manifest.to_json().encode())
        out.publish()
    log.info("backup written", file=name.file, size=out.size, sha256=manifest.sha256, stale_removed=removed)
    kept = prune(options.output_dir, options.name, options.retention, options.owner, protect=name.file)
    return options.output_dir / name.file, manifest, kept


def record_queries(
    options: RunOptions, target: Target, scrub: Scrubber, deadline: Deadline
) -> AbstractContextManager[Snapshots]:
    """`queries.snapshots` for this run: its queries, as its query role, in the databases it dumps."""
    return snapshots(
        options.engine,
        options.connection,
        options.query_role,
        options.queries,
        target.databases,
        scrub,
        deadline,
    )


def describe(
    options: RunOptions,
    target: Target,
    name: BackupName,
    kind: str,
    members: list[Member],
    size: int,
    sha256: str,
    started: datetime,
    clock: float,
) -> Manifest:
    """The manifest of a backup just written (to a folder or a bucket)."""
    return Manifest(
        file=name.file,
        engine=options.engine.value,
        server_version=target.server_version,
        databases=target.databases,
        globals=target.globals,
        layout=kind,
        members=members,
        size=size,
        sha256=sha256,
        compression=options.compression.value,
        encryption=ENCRYPTION_AES if options.key is not None else ENCRYPTION_NONE,
        key_id=options.key.id if options.key is not None else None,
        key_fingerprint=options.key.fingerprint if options.key is not None else None,
        tool=target.tool,
        host=options.connection.host,
        port=options.connection.port,
        user="" if options.user_is_secret else options.connection.user,
        start=utc_iso(started),
        end=utc_iso(datetime.now(UTC)),
        duration=round(time.monotonic() - clock, 3),
        verified=options.verify,
        owner=options.owner,
    )


def kind_of(engine: Engine, target: Target) -> str:
    if engine is Engine.MYSQL:
        return SQL
    return CUSTOM if len(target.databases) == 1 and not target.globals else TAR


# --- step 2: the server ------------------------------------------------------------------------------------------


def resolve_target(options: RunOptions, scrub: Scrubber) -> Target:
    want_all = ALL in options.databases
    if want_all and len(options.databases) > 1:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--database all backs up every database: give it alone")
    env = engines.child_env(options.engine, options.connection)
    # One query round trip per engine (the version and the databases together), the dump tool's --version
    # meanwhile: this is fixed overhead on every run.
    tool = engines.mysql_dump_tool() if options.engine is Engine.MYSQL else "pg_dump"
    with _ToolVersion(tool) as tool_version:
        if options.engine is Engine.POSTGRESQL:
            psql = engines.psql_argv(options.connection, "postgres" if want_all else options.databases[0])
            listing = "SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template0' ORDER BY 1"
            # -0: NUL between records, the one byte no database name can contain.
            out = run_capture([*psql, "-0", "-c", "SHOW server_version", "-c", listing], env, scrub)
            version, *present = [n.strip("\n") for n in out.split("\0") if n.strip("\n")]
        else:
            client = engines.mysql_client_argv(options.connection)
            listing = "SELECT HEX(schema_name) FROM information_schema.schemata"
            query = f"SELECT VERSION(), @@log_bin; {listing}"
            first, *hexed = run_capture([*client, "-e", query], env, scrub).splitlines()
            version, _, log_bin = first.partition("\t")
            names = [bytes.fromhex(h).decode("utf-8", errors="surrogateescape") for h in hexed]
            present = sorted(n for n in names if n not in engines.MYSQL_SYSTEM_SCHEMAS) if want_all else names
    if want_all:
        if not present:
            raise RunnerError(Reason.DATABASE_NOT_FOUND, "--database all: the server has no database to back up")
        databases = present
    else:
        databases = list(dict.fromkeys(options.databases))  # repeated names once, order kept
        missing = [d for d in databases if d not in present]
        if missing:
            raise RunnerError(Reason.DATABASE_NOT_FOUND, f"no database {', '.join(map(repr, missing))} on the server")
    globals_ = want_all and options.engine is Engine.POSTGRESQL
    if options.engine is Engine.POSTGRESQL:
        check_client_version(version.strip(), tool_version.text)
        return Target(databases, globals_, version.strip(), tool_version.text)
    coordinates = binlog.snapshot_coordinates(version, log_bin)
    return Target(databases, globals_, version.strip(), tool_version.text, binlog=coordinates)


def check_client_version(server: str, tool: str) -> None:
    """pg_dump refuses a server of a newer major version than its own; say so before the dump, plainly.

    `server` is `SHOW server_version` ("18.1 (Debian 18.1-1.pgdg13+2)"), `tool` is `pg_dump --version`
    ("pg_dump (PostgreSQL) 17.7 (Debian 17.7-3)"). Majors are the first number from PostgreSQL 10 on; a 9.x
    server is older than any pg_dump this image carries."""
    server_major = re.match(r"\s*(\d+)", server)
    tool_major = re.search(r"\)\s*(\d+)", tool)
    if server_major is None or tool_major is None:
        return  # unknown shapes: pg_dump itself still refuses a mismatch ("server version mismatch")
    ours, theirs = int(tool_major.group(1)), int(server_major.group(1))
    if theirs > ours:
        raise RunnerError(
            Reason.CLIENT_TOO_OLD,
            f"server {theirs} is newer than pg_dump {ours}; use an image with PostgreSQL {theirs}+ clients "
            f"(server version: {server}; pg_dump version: {tool.removeprefix('pg_dump (PostgreSQL) ')})",
        )


class _ToolVersion:
    """`<tool> --version`, run in the background while the server answers our query."""

    def __init__(self, tool: str) -> None:
        self._tool = tool
        self.text = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> _ToolVersion:
        try:
            self._process = subprocess.Popen([self._tool, "--version"], stdout=subprocess.PIPE, text=True)
        except OSError as error:
            raise RunnerError(Reason.DUMP_FAILED, f"cannot run {self._tool}: {error.strerror}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        out, _ = self._process.communicate(timeout=30)
        self.text = out.strip()


# --- step 3: the dump --------------------------------------------------------------------------------------------


def verify_new(
    backup: Path | Stored, manifest: Manifest, options: RunOptions, scrub: Scrubber, deadline: Deadline
) -> Manifest:
    """The run's own check of the backup it wrote (with its restore test, when asked); the manifest to publish,
    with each table's rows as counted, for later restore tests."""
    if options.restore_test and options.scratch is not None:
        # The scratch server beside us started with the Pod; it has had the dump's time to initialise, not always
        # enough (a MariaDB image initialises for seconds).
        admin.await_server(options.engine, options.scratch, scrub, options.scratch_wait)
    report = verify_backup(
        backup,
        Keyring.of(options.key) if options.key is not None else None,
        scrub,
        deadline,
        manifest=manifest,
        restore_connection=options.restore_target(),
        scratch_server=options.scratch is not None,
        query_role=options.query_role,
    )
    return replace(manifest, rows=report.rows)


def pump(tool: Tool, sink: Sink) -> None:
    """Everything the tool writes, into `sink`; then the tool's verdict. Pieces of at most READ_SIZE bytes."""
    while data := tool.read(READ_SIZE):
        sink.write(data)
    tool.finish()


def dump_stream(
    options: RunOptions, target: Target, kind: str, head: Sink, scrub: Scrubber, deadline: Deadline
) -> Coordinates | None:
    """Dumps into `head`; returns the dump's binlog coordinates when it recorded them (`Target.binlog`)."""
    env = engines.child_env(options.engine, options.connection)
    if kind == CUSTOM:
        database = target.databases[0]
        argv = engines.pg_dump_argv(
            options.connection, database, options.compression, snapshot=target.snapshots.get(database)
        )
        # pg_dump compresses gzip itself (see engines); only zstd is ours.
        stage = compressor(Compression.ZSTD if options.compression is Compression.ZSTD else Compression.NONE, head)
    else:
        # One database: no CREATE DATABASE/USE in the dump, so it restores under any name (even when `all` found
        # just one). The manifest's database count tells restore and verify which kind they read.
        several = len(target.databases) > 1
        argv = engines.mysql_dump_argv(options.connection, target.databases, several=several, coordinates=target.binlog)
        stage = compressor(options.compression, head)
    sniffer = CoordinateSniffer(stage) if target.binlog else None
    with Tool(argv, env, scrub, deadline=deadline) as tool:
        pump(tool, sniffer or stage)
    stage.close()
    return sniffer.coordinates() if sniffer is not None else None


class _SpoolSink:
    def __init__(self, spool: IO[bytes], folder: Path) -> None:
        self._fd = spool.fileno()
        self._folder = folder

    def write(self, data: bytes) -> int:
        try:
            write_all(self._fd, data)
        except OSError as error:
            raise storage_error(error, self._folder) from None
        return len(data)


@dataclass(frozen=True)
class MemberDump:
    """One member of a tar or a set: the globals (database None) or one database, and how to dump it."""

    database: str | None
    argv: list[str]
    compression: Compression  # ours, applied to the tool's output

    @property
    def name(self) -> str:
        return member_name(self.database, self.compression)

    def dump(self, options: RunOptions, sink: Sink, scrub: Scrubber, deadline: Deadline) -> None:
        stage: Stage = compressor(self.compression, sink)
        with Tool(self.argv, engines.child_env(options.engine, options.connection), scrub, deadline=deadline) as tool:
            pump(tool, stage)
        stage.close()


def member_dumps(options: RunOptions, target: Target) -> list[MemberDump]:
    """The globals (for `all`) then each database, as pg_dumpall and pg_dump write them (gzip is pg_dump's own)."""
    work = []
    if target.globals:
        work.append(MemberDump(None, engines.pg_globals_argv(options.connection), options.compression))
    ours = Compression.ZSTD if options.compression is Compression.ZSTD else Compression.NONE
    for name in target.databases:
        snapshot = target.snapshots.get(name)
        argv = engines.pg_dump_argv(options.connection, name, options.compression, snapshot=snapshot)
        work.append(MemberDump(name, argv, ours))
    return work


def dump_tar(options: RunOptions, target: Target, head: Sink, scrub: Scrubber, deadline: Deadline) -> list[Member]:
    folder = options.output_dir
    assert folder is not None, "a tar spools its members in the output folder"
    members = []
    with tarfile.open(fileobj=head, mode="w|", format=tarfile.PAX_FORMAT, bufsize=READ_SIZE) as tar:  # type: ignore[call-overload]
        tar.copybufsize = READ_SIZE  # tarfile copies members 16 KiB at a time otherwise
        for work in member_dumps(options, target):
            member, database = work.name, work.database
            with _spool(folder) as spool:
                work.dump(options, _SpoolSink(spool, folder), scrub, deadline)
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.mode = spool.tell(), int(time.time()), 0o640
                spool.seek(0)
                try:
                    tar.addfile(info, spool)
                except OSError as error:
                    raise storage_error(error, folder) from None
            members.append(Member(member, database))
            log.info("database dumped", database=database or "(globals)", member=member, size=info.size)
    return members


def _spool(folder: Path) -> IO[bytes]:
    try:
        return tempfile.TemporaryFile(dir=folder)  # the caller's `with` closes it
    except OSError as error:
        raise storage_error(error, folder) from None


# --- steps 5 and 6 -----------------------------------------------------------------------------------------------


def owned_manifests(folder: Path, prefix: str, owner: Owner | None, names: list[str]) -> dict[str, Manifest]:
    """{backup file: its manifest} for every backup of `prefix` in `names` whose manifest names `owner` (by uid; a
    run without an owner matches manifests without one). A file without a readable manifest is nobody's: retention
    leaves it alone."""
    owned: dict[str, Manifest] = {}
    for name in names:
        backup = parse_backup_name(prefix, name)
        if backup is None:
            continue
        manifest = _manifest_or_none(folder / backup.manifest)
        if manifest is not None and same_owner(manifest.owner, owner):
            owned[backup.file] = manifest
    return owned


def owned_backups(folder: Path, prefix: str, owner: Owner | None, names: list[str]) -> dict[str, bool]:
    """{backup file: its manifest says verified}, of `owned_manifests`."""
    return {file: manifest.verified for file, manifest in owned_manifests(folder, prefix, owner, names).items()}


def prune(folder: Path, prefix: str, policy: Policy, owner: Owner | None, protect: str) -> Plan:
    """Retention after a run (runner.retention): what it deletes, and why each kept backup stays."""
    names = [p.name for p in folder.iterdir()]
    owned = owned_manifests(folder, prefix, owner, names)
    verified = {file: manifest.verified for file, manifest in owned.items()}
    sizes = {file: manifest.size for file, manifest in owned.items()}
    decided = plan(names, prefix, policy, verified, now=datetime.now(UTC), protect=protect, sizes=sizes)
    _delete(folder, list(decided.delete), "old backup deleted")
    return decided.listed(owned)


def _delete(folder: Path, plan: list[str], event: str, **context: object) -> None:
    for name in plan:
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            continue  # another run pruned it first
        except OSError as error:
            raise RunnerError(Reason.STORAGE_ERROR, f"retention could not delete {name}: {error.strerror}") from None
        log.info(event, file=name, **context)


def available_bytes(folder: Path) -> int:
    """What a writer who is not root may still write on the filesystem that holds `folder`."""
    usage = os.statvfs(folder)
    return usage.f_bavail * usage.f_frsize


def make_room(
    folder: Path,
    prefix: str,
    policy: Policy,
    owner: Owner | None,
    *,
    free_bytes: Callable[[Path], int] = available_bytes,
) -> list[str]:
    """Before the dump, on a volume too full for another backup the size of this owner's newest verified one:
    retention one backup early (`keep_last` - 1, every other rule as it is), so that the run can succeed. The
    newest verified backup is never deleted (and `keep_last` is at least 2 here); if the new backup then fails,
    `keep_last` - 1 remain. Without `keep_last` of 2 or more, nothing is made room for: the calendar rules keep the
    backups they name whatever the volume says. `free_bytes` measures the volume: a full one is made only by
    mounting a small filesystem, which needs root."""
    if policy.keep_last is None or policy.keep_last < 2:
        return []
    names = [p.name for p in folder.iterdir()]
    owned = owned_backups(folder, prefix, owner, names)
    verified = sorted(b for n, ok in owned.items() if ok and (b := parse_backup_name(prefix, n)) is not None)
    if not verified:
        return []
    try:
        needed = (folder / verified[-1].file).stat().st_size
        free = free_bytes(folder)
    except OSError:
        return []
    if free >= needed:
        return []
    early = replace(policy, keep_last=policy.keep_last - 1)
    deleted = list(plan(names, prefix, early, owned, now=datetime.now(UTC)).delete)
    _delete(folder, deleted, "old backup deleted to make room before the dump", free=free, needed=needed)
    return deleted


def remove_orphan_manifests(folder: Path, prefix: str, owner: Owner | None) -> list[str]:
    """This owner's manifests whose backup never got its final name (the run died in between)."""
    removed = []
    for name in orphan_manifests((p.name for p in folder.iterdir()), prefix):
        manifest = _manifest_or_none(folder / name)
        if manifest is not None and same_owner(manifest.owner, owner):
            (folder / name).unlink(missing_ok=True)
            removed.append(name)
            log.info("removed the manifest of a backup that was never published", file=name)
    return removed


def _manifest_or_none(path: Path) -> Manifest | None:
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def same_owner(found: Owner | None, owner: Owner | None) -> bool:
    return found is None if owner is None else found is not None and found.uid == owner.uid
