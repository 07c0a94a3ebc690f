"""`dbb-backup restore BASEBACKUP --point-in-time T` for PostgreSQL: the base backup, the archived WAL up to T on a
scratch server, then each wanted database moved into the target by the ordinary all-or-nothing restore.

1. Decide, before anything is touched (`plan_recovery`, pure): T must not be before the base backup's end (the copy
   is consistent only from there on) nor after the newest instant the WAL archive is known complete to (`until`,
   see walarchive); the archive must hold every segment from the one the base backup starts in to the first whose
   `until` reaches T, with no segment missing in between: one in a gap the archiver recorded (WAL the server removed
   before it was archived, see walarchive) is refused with `ArchiveGap` naming the gap's segments, as any other
   missing one is. (`--pick-base-backup`: which base backup, see basepick.)
2. Unpack the base backup (a file, or an object in a bucket, `locate`; held to its manifest's sha256 as it streams;
   decrypted, decompressed) into a scratch data directory,
   and the planned segments (each held to its entry's sha256) into a folder beside it, which `restore_command`
   copies from (`cp`: every segment was checked before the server starts).
3. Start a scratch postgres of the same major version on a unix socket in the scratch folder only, with
   `recovery.signal`, `recovery_target_time = T`, `recovery_target_action = promote`; wait for it to leave
   recovery. PostgreSQL stops before the first commit after T. When no commit in the archive is after T (an idle
   stretch), PostgreSQL ends recovery without reaching the target and refuses to promote; everything archived is
   then at or before T, so the server is started once more without a target and replays it all.
4. pg_dump each wanted database from it, and restore each dump into the target with `restore.restore_backup`
   (a new database, or `--replace`; all or nothing per database). The scratch server is stopped and what the
   restore put in the scratch folder removed in every case.

Where the scratch server runs (`place`, through the seam of pgserver):
- By default, as a child of the runner, from `--pg-bin` (default `/usr/lib/postgresql/<major>/bin`), in a temporary
  folder. PostgreSQL refuses to run as root: a runner that is root (not in a Pod, where the image's user runs it)
  starts it as `--scratch-os-user` (default postgres) through setpriv.
- With `--replay-dir DIR`, in the replay server beside the runner in a restore Job's Pod: the source's own image,
  since the runner's has PostgreSQL's client tools only. DIR is the folder both mount at the same path; the
  scratch folder's files go there, the server is started and stopped through the files of pgserver's protocol, and
  psql and pg_dump come from PATH (no older than the server: the image's newest). Both containers run as the same
  user, so no owner changes; a runner that is root (the tests) hands the files to `--scratch-os-user`, whom the
  replay server must then run as. Afterwards DIR keeps only `done`, the replay server's sign to exit.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import structlog

from runner.archiveobject import Hashed
from runner.archivestore import ArchiveStore, FolderArchive, Gap, S3Archive
from runner.basebackup import BaseManifest, read_base_manifest, read_s3_base_manifest
from runner.compression import Compression, Source, decompressor
from runner.crypto import Decryptor, Keyring
from runner.engines import Connection, Engine, child_env, pg_conninfo
from runner.errors import Reason, RunnerError, Scrubber, one_line
from runner.layout import stored
from runner.naming import ENCRYPTED_SUFFIX
from runner.objectstore import S3Location
from runner.pgserver import LOG, LocalServer, ServerProcess, SidecarServer
from runner.process import Deadline, Tool, run_capture
from runner.restore import RestoreOptions, restore_backup
from runner.s3backup import S3Object, S3Settings, s3_client
from runner.walarchive import (
    WalEntry,
    check_keys,
    in_gap,
    lsn,
    next_segment,
    read_wal_index,
    segment_name,
    unpack,
    wal_archive_name,
)

__all__ = [
    "LsnTarget",
    "Place",
    "Recovery",
    "ScratchOptions",
    "ScratchServer",
    "TargetNotReached",
    "as_user",
    "clear",
    "locate",
    "place",
    "plan_recovery",
    "plan_to_lsn",
    "restore_point_in_time",
    "stage",
    "wal_beside",
]

log = structlog.get_logger("dbb-backup")

READ_SIZE: Final = 1 << 20
START_WAIT: Final = 3600.0  # seconds a recovery may take, unless --timeout says otherwise
_NOT_REACHED: Final = "recovery ended before configured recovery target was reached"
_CLIENTS: Final = ("psql", "pg_dump")
# What a restore puts in --replay-dir, besides the protocol's files (pgserver): all removed afterwards.
_PUT: Final = ("data", "wal", "pg_hba.conf", "dumps")
_HANDED: Final = ("data", "wal", "pg_hba.conf")  # what the server reads (and writes)
_PREFIX = re.compile(r"(?P<prefix>.+)-[0-9]{8}T[0-9]{6}Z\.")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _rfc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Recovery:
    entries: list[WalEntry]  # the segments to stage, in order
    point: datetime


def plan_recovery(
    manifest: BaseManifest, index: Mapping[str, WalEntry], point: datetime, gaps: Sequence[Gap] = ()
) -> Recovery:
    """What to recover for `point`, or a refusal that says why (nothing has been touched yet); `gaps`: the archive's
    gap records, which name a missing segment's cause."""
    if point < _time(manifest.end):
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"--point-in-time {_rfc(point)} is before the base backup ended ({manifest.end}): use an older one",
        )
    first = manifest.start_segment
    if first not in index:
        raise RunnerError(Reason.ARCHIVE_GAP, f"the WAL archive has no {first}, where the base backup starts")
    timeline = [name for name in index if name[:8] == first[:8] and len(name) == 24 and name >= first]
    untils = [until for n in timeline if (until := index[n].until)]
    newest = max(untils) if untils else None
    if newest is None or point > _time(newest):
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"--point-in-time {_rfc(point)} is after the newest archived WAL ({newest or 'none after the base backup'})"
            ": choose an earlier time",
        )
    end_segment = segment_name(manifest.timeline, lsn(manifest.end_lsn), manifest.segment_size)
    needed: list[WalEntry] = []
    for entry in _consecutive(index, first, manifest.segment_size, gaps):
        needed.append(entry)
        until = entry.until
        if until is not None and _time(until) >= point and entry.segment >= end_segment:
            break
    return Recovery(needed, point)


def plan_to_lsn(manifest: BaseManifest, index: Mapping[str, WalEntry], target: BaseManifest) -> list[WalEntry]:
    """The segments that recover `manifest`'s base backup up to `target`'s end LSN (a base backup of the same
    cluster, perhaps itself): every one from its start segment to the one holding that LSN, consecutive, and that
    last one archived past it (recovery_target_inclusive stops after the first record at or after the target, so
    that record must be there too); or a refusal that says why."""
    if manifest.timeline != target.timeline:
        raise RunnerError(
            Reason.ARCHIVE_GAP,
            f"{manifest.file} is on timeline {manifest.timeline}, {target.file} on {target.timeline}",
        )
    first = manifest.start_segment
    if first not in index:
        raise RunnerError(Reason.ARCHIVE_GAP, f"the WAL archive has no {first}, where {manifest.file} starts")
    end = lsn(target.end_lsn)
    end_segment = segment_name(target.timeline, end, target.segment_size)
    needed: list[WalEntry] = []
    for entry in _consecutive(index, first, manifest.segment_size):
        needed.append(entry)
        if entry.segment != end_segment:
            continue
        if not entry.closed and (entry.end_lsn is None or lsn(entry.end_lsn) <= end):
            raise RunnerError(
                Reason.ARCHIVE_GAP,
                f"the WAL archive holds {end_segment} only up to {entry.end_lsn}, not yet past {target.file}'s end "
                f"({target.end_lsn})",
            )
        return needed
    raise RunnerError(
        Reason.ARCHIVE_GAP,
        f"the WAL archive ends at {needed[-1].segment}, before {end_segment}, where {target.file} ends",
    )


def _consecutive(
    index: Mapping[str, WalEntry], first: str, segment_size: int, gaps: Sequence[Gap] = ()
) -> Iterator[WalEntry]:
    """The archive's segments from `first` on, in order (one timeline), each the one right after the one before;
    an ArchiveGap where one is missing, or where one held only in part (the server removed the rest, see
    walarchive: a replay would stop there) is followed by another (raised only once the caller reads that far).
    `gaps`: the archive's gap records, which name a missing segment's cause."""
    expected, before = first, None
    for name in [n for n in index if n[:8] == first[:8] and len(n) == 24 and n >= first]:
        if before is not None and not before.closed:
            part = before.segment
            raise RunnerError(Reason.ARCHIVE_GAP, _missing(part, f"the archive holds only part of {part}", gaps))
        if name != expected:
            missing = f"the WAL archive is missing segment {expected}, before {name}"
            raise RunnerError(Reason.ARCHIVE_GAP, _missing(expected, missing, gaps))
        yield index[name]
        before, expected = index[name], next_segment(name, segment_size)


def _missing(expected: str, otherwise: str, gaps: Sequence[Gap]) -> str:
    """Why `expected` is not in the archive whole: the gap record naming it, else `otherwise`."""
    gap = next((gap for gap in gaps if in_gap(gap, expected)), None)
    if gap is None:
        return otherwise
    return (
        f"the WAL archive has a gap: segments {gap.first_missing} to {gap.last_missing} were removed from the server"
        f" before they were archived (found at {gap.found_at}); no point-in-time restore replays across it: choose"
        " a point before it, or a base backup taken after it"
    )


def wal_beside(name: str) -> str:
    """The WAL archive's folder (or key prefix) beside the base backup `name`: `<its name prefix>-wal`, where
    `archive --name <prefix>` writes."""
    found = _PREFIX.match(name)
    return wal_archive_name(found.group("prefix") if found else name)


def locate(file: str, wal_archive: str | None, path_style: bool) -> tuple[Path | S3Object, BaseManifest, ArchiveStore]:
    """The base backup `file` (a path, or s3://BUCKET/KEY), its manifest beside it, and its WAL archive:
    `wal_archive` (a folder, or s3://BUCKET/PREFIX, the archive's own), else the one beside the base backup."""
    in_s3 = any(where.startswith("s3://") for where in (file, wal_archive or ""))
    client = s3_client(S3Settings(path_style=path_style)) if in_s3 else None
    source: Path | S3Object
    if file.startswith("s3://"):
        location = S3Location.parse(file)
        source = S3Object(client, location.bucket, location.prefix)
        manifest = read_s3_base_manifest(client, location.bucket, location.prefix)
        folder = S3Location(location.bucket, location.prefix.rpartition("/")[0])
        beside: ArchiveStore = S3Archive(client, S3Location(location.bucket, folder.key(wal_beside(source.name))))
    else:
        source = Path(file)
        manifest = read_base_manifest(source)
        beside = FolderArchive(source.parent / wal_beside(source.name))
    if manifest.file != source.name:
        raise RunnerError(Reason.VERIFY_FAILED, f"the manifest describes {manifest.file}, not {source.name}")
    if wal_archive is None:
        return source, manifest, beside
    if wal_archive.startswith("s3://"):
        return source, manifest, S3Archive(client, S3Location.parse(wal_archive))
    return source, manifest, FolderArchive(Path(wal_archive))


@dataclass(frozen=True)
class ScratchOptions:
    pg_bin: Path | None = None  # default: /usr/lib/postgresql/<the backup's major>/bin
    os_user: str = "postgres"  # when the runner is root: whom the scratch server runs as
    no_owner: bool = False
    replace: bool = False
    replay_dir: Path | None = None  # the replay server's folder: it runs postgres there (pgserver.SidecarServer)


def parse_databases(items: tuple[str, ...]) -> dict[str, str]:
    """`--database NAME` (restored under its own name) or `SOURCE=TARGET`, repeatable: {source: target}."""
    if not items:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS, "a base backup holds the whole cluster: name the databases (--database NAME)"
        )
    pairs: dict[str, str] = {}
    for item in items:
        source, _, target = item.partition("=")
        if not source or (_ and not target):
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"--database {item!r}: give NAME or SOURCE=TARGET")
        pairs[source] = target or source
    return pairs


# --- the scratch server -------------------------------------------------------------------------------------------


def _unpack_base(backup: Path | S3Object, manifest: BaseManifest, keys: Keyring | None, data: Path) -> None:
    """The base backup's tar into `data`, its file held to the manifest's sha256."""
    with stored(backup).open() as source:
        hashed = Hashed(source)
        plain: Source = hashed
        if backup.name.endswith(ENCRYPTED_SUFFIX):
            if keys is None:
                named = f"key {manifest.key_id!r}" if manifest.key_id else "its key"
                raise RunnerError(Reason.INVALID_ARGUMENTS, f"{backup.name} is encrypted: give {named} (--key-file)")
            plain = Decryptor(keys, hashed)
        payload = decompressor(Compression.ZSTD, plain)
        with tarfile.open(fileobj=payload, mode="r|") as tar:  # type: ignore[call-overload]
            tar.extractall(data, filter="data")
        while hashed.read(READ_SIZE):
            pass
    if hashed.digest.hexdigest() != manifest.sha256:
        raise RunnerError(Reason.VERIFY_FAILED, f"{backup.name} is not what its manifest says (sha256 differs)")


def as_user(os_user: str) -> tuple[list[str], int | None]:
    """(the argv prefix that runs a command as `os_user`, its uid) when we are root; ([], None) otherwise."""
    if os.geteuid() != 0:
        return [], None
    try:
        entry = pwd.getpwnam(os_user)
    except KeyError:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS, f"PostgreSQL will not run as root, and there is no user {os_user!r}"
        ) from None
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"], entry.pw_uid


def _chown_tree(root: Path, uid: int | None) -> None:
    if uid is None:
        return
    gid = pwd.getpwuid(uid).pw_gid
    os.lchown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(Path(folder) / name, uid, gid)


@dataclass
class ScratchServer:
    folder: Path
    server: ServerProcess
    tools: Mapping[str, str]  # psql and pg_dump: where each is
    users: list[str]  # roles to ask as (see _ask)
    log_offset: int = 0  # where this start's lines begin in the log

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / LOG

    def settings(self, target: datetime | LsnTarget | None) -> dict[str, str]:
        wal = shlex.quote(str(self.folder / "wal"))
        settings = {
            # Nothing from the source's configuration may open a port, load a library or archive elsewhere.
            "listen_addresses": "",
            "port": "5432",
            "unix_socket_directories": str(self.folder),
            "hba_file": str(self.folder / "pg_hba.conf"),
            "ssl": "off",
            "archive_mode": "off",
            "hot_standby": "off",
            "shared_preload_libraries": "",
            "fsync": "off",  # a scratch copy: nothing survives it
            "restore_command": f"cp {wal}/%f %p",
            "recovery_target_action": "promote",
            "logging_collector": "off",
        }
        if isinstance(target, datetime):
            settings["recovery_target_time"] = target.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        elif target is not None:
            settings["recovery_target_lsn"] = target.lsn
            settings["recovery_target_inclusive"] = "on"
        return settings

    @contextlib.contextmanager
    def running(self, target: datetime | LsnTarget | None, deadline: Deadline) -> Iterator[str]:
        """Starts the server, waits until it has left recovery; yields the bootstrap superuser's name."""
        (self.data / "recovery.signal").touch()
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        flags = [item for key, value in self.settings(target).items() for item in ("-c", f"{key}={value}")]
        self.server.start(["-D", str(self.data), *flags])
        try:
            yield self._wait(deadline)
        finally:
            self.server.stop()

    def _wait(self, deadline: Deadline) -> str:
        waited = time.monotonic() + START_WAIT
        while time.monotonic() < waited:
            role = self._ask(deadline)
            if role is not None:
                return role
            time.sleep(0.2)
        raise RunnerError(Reason.TIMEOUT, f"the scratch server did not finish its recovery within {START_WAIT:g}s")

    def _ask(self, deadline: Deadline) -> str | None:
        """Whether the server has left recovery: then the bootstrap superuser's name (trust on the socket lets any
        existing role in; which ones exist is the source's business, so a few likely ones are tried). A server that
        has left recovery and knows none of them never will: refused, rather than asked until START_WAIT."""
        for user in self.users:
            deadline.check()
            if self.server.poll() is not None:
                tail = self._tail()
                if _NOT_REACHED in tail:
                    raise TargetNotReached
                raise RunnerError(Reason.RESTORE_FAILED, f"the scratch server stopped: {one_line(tail[-1500:])}")
            psql = [self.tools["psql"], "-X", "-At", "-h", str(self.folder), "-U", user, "-d", "template1"]
            answer = subprocess.run(
                [*psql, "-c", "SELECT pg_is_in_recovery(), (SELECT rolname FROM pg_roles WHERE oid = 10)"],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
            )
            recovering, _, role = answer.stdout.strip().partition("|")
            if recovering == "f" and role:
                return role
            if "does not exist" not in answer.stderr:
                return None  # starting up, or still recovering: every user gets the same answer
        raise RunnerError(
            Reason.RESTORE_FAILED,
            f"the base backup's cluster has none of the roles {', '.join(self.users)}: the scratch server cannot be "
            "asked",
        )

    def _tail(self) -> str:
        """What this start wrote to the log."""
        try:
            with self.log.open("rb") as written:
                written.seek(self.log_offset)
                return written.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


class TargetNotReached(Exception):
    """Recovery replayed all the archive holds without reaching a commit after the target (see step 3)."""


@dataclass(frozen=True)
class LsnTarget:
    """Recover up to and including the first record at or after `lsn` (`0/4000100`), rather than to a time."""

    lsn: str


def _pg_bin(options: ScratchOptions, manifest: BaseManifest) -> Path:
    if options.pg_bin is not None:
        return options.pg_bin
    major = manifest.server_version.split(".")[0].split()[0]
    return Path(f"/usr/lib/postgresql/{major}/bin")


@dataclass(frozen=True)
class Place:
    folder: Path
    server: ServerProcess
    tools: dict[str, str]  # psql and pg_dump: where each is
    ours: tuple[Path, ...]  # what a root runner hands to --scratch-os-user


@contextlib.contextmanager
def place(options: ScratchOptions, manifest: BaseManifest, run_as: list[str]) -> Iterator[Place]:
    """Where the scratch server's files go and what runs it: a temporary folder and a child of ours, or
    --replay-dir and the replay server there (see pgserver). Refuses before anything is touched; afterwards the
    server is stopped and what the restore put there removed, whatever happened."""
    if options.replay_dir is None:
        pg_bin = _pg_bin(options, manifest)
        if not (pg_bin / "postgres").exists():
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"no postgres in {pg_bin}: give --pg-bin")
        folder = Path(tempfile.mkdtemp(prefix="dbb-pitr-"))
        local = LocalServer(pg_bin / "postgres", run_as, folder / LOG)
        try:
            yield Place(folder, local, {tool: str(pg_bin / tool) for tool in _CLIENTS}, (folder,))
        finally:
            local.close()
            shutil.rmtree(folder, ignore_errors=True)
        return
    folder = options.replay_dir
    # The client tools of the runner's image: no older than the server they dump (see engines' ClientTooOld).
    tools = {tool: shutil.which(tool) for tool in _CLIENTS}
    missing = [tool for tool, path in tools.items() if path is None]
    if missing:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--replay-dir: no {' or '.join(missing)} on PATH")
    if not folder.is_dir():
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--replay-dir {folder}: no such folder")
    sidecar = SidecarServer(folder)
    used = sorted({*sidecar.leftovers(), *(name for name in _PUT if (folder / name).exists())})
    if used:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS, f"--replay-dir {folder} already holds {', '.join(used)}: one restore each"
        )
    try:
        yield Place(folder, sidecar, {t: p for t, p in tools.items() if p}, tuple(folder / n for n in _HANDED))
    finally:
        sidecar.close()
        for name in _PUT:
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def stage(
    where: Place,
    uid: int | None,
    backup: Path | S3Object,
    manifest: BaseManifest,
    keys: Keyring | None,
    store: ArchiveStore,
    entries: list[WalEntry],
) -> None:
    """Step 2: the base backup into `data`, the `entries` into `wal`, in the place's folder; handed to `uid` (the
    user a root runner starts postgres as)."""
    folder = where.folder
    data = folder / "data"
    data.mkdir(mode=0o700)
    _unpack_base(backup, manifest, keys, data)
    (folder / "wal").mkdir()
    for entry in entries:
        unpack(store, entry, folder / "wal" / entry.segment, keys)
    (folder / "pg_hba.conf").write_text("local all all trust\n")
    if not (data / "postgresql.conf").exists():
        (data / "postgresql.conf").touch()
    for leftover in ("standby.signal", "postmaster.pid"):
        (data / leftover).unlink(missing_ok=True)
    # postgres starts only on a data directory of mode 0700 or 0750; a shared folder's setgid bit (fsGroup) must
    # not reach it either.
    data.chmod(0o700)
    for path in where.ours:
        _chown_tree(path, uid)


def clear(where: Place) -> None:
    """What `stage` put in the place's folder, removed (its server stopped), so that another base backup can be
    staged there."""
    for name in _HANDED:
        path = where.folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def restore_point_in_time(
    backup: Path | S3Object,
    manifest: BaseManifest,
    store: ArchiveStore,
    point: datetime,
    databases: dict[str, str],
    connection: Connection,
    keys: Keyring | None,
    options: ScratchOptions,
    scrub: Scrubber,
    deadline: Deadline,
) -> dict[str, object]:
    plan = plan_recovery(manifest, read_wal_index(store), point, store.gaps())  # step 1: refuse before anything
    check_keys(plan.entries, keys)
    run_as, uid = as_user(options.os_user)
    with place(options, manifest, run_as) as where:
        users = list(dict.fromkeys(u for u in (manifest.user, connection.user, "postgres") if u))
        scratch = ScratchServer(where.folder, where.server, where.tools, users)
        stage(where, uid, backup, manifest, keys, store, plan.entries)  # step 2
        # Step 3.
        replayed = "target"
        try:
            with scratch.running(point, deadline) as role:
                restored = _move(scratch, role, databases, connection, options, scrub, deadline)
        except TargetNotReached:
            log.info("no commit after the point in the archive: replaying all of it", point=_rfc(point))
            replayed = "whole archive"
            with scratch.running(None, deadline) as role:
                restored = _move(scratch, role, databases, connection, options, scrub, deadline)
    return {
        "databases": restored,
        "pointInTime": _rfc(point),
        # Stopped before the first commit after the point, or (the whole archive) with none after it: the state at it.
        "replayedUntil": _rfc(point),
        "replayed": replayed,
        "walSegments": [e.segment for e in plan.entries],
        "baseBackup": manifest.file,
    }


def _move(
    scratch: ScratchServer,
    role: str,
    databases: dict[str, str],
    connection: Connection,
    options: ScratchOptions,
    scrub: Scrubber,
    deadline: Deadline,
) -> dict[str, str]:
    """Step 4: each database dumped from the scratch server, then restored into the target."""
    local = Connection(str(scratch.folder), 5432, role)
    env = child_env(Engine.POSTGRESQL, local)
    restored: dict[str, str] = {}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dumps = scratch.folder / "dumps"
    dumps.mkdir(exist_ok=True)
    for source, target in databases.items():
        quoted = source.replace("'", "''")
        query = f"SELECT count(*) FROM pg_database WHERE datname = '{quoted}'"  # noqa: S608 - quoted as a literal
        psql = [scratch.tools["psql"], "-X", "-At", "-h", local.host, "-U", role, "-d", "template1"]
        exists = run_capture([*psql, "-c", query], env, scrub).strip()
        if exists != "1":
            raise RunnerError(Reason.DATABASE_NOT_FOUND, f"the base backup has no database {source!r}")
        dump = dumps / f"pitr-{stamp}.dump"
        argv = [scratch.tools["pg_dump"], "-Fc", "-h", local.host, "-U", role, "-w", "-d", pg_conninfo(source)]
        with dump.open("wb") as out, Tool(argv, env, scrub, stdout=out, deadline=deadline) as tool:
            tool.finish()
        # A dump of our own, made a moment ago: no manifest, the file proves its own compression and structure.
        restore = RestoreOptions(
            connection, (target,), no_owner=options.no_owner, replace=options.replace, without_manifest=True
        )
        restore_backup(dump, None, restore, scrub, deadline)
        restored[source] = target
        dump.unlink()
    return restored
