"""`dbb-backup check LOCATION --owner-uid UID [--backups N]`: prove that what is stored still restores, long after
the run that wrote it.

The run that writes a backup verifies it once. Storage then rots, is pruned by hand, or is overwritten: a check
takes the N newest backups of one owner (by its uid, as retention does) from the manifests in the folder or under
the prefix, and checks each again as it is stored now:
- it is still there (a manifest whose file is gone is a backup that was deleted: `BackupMissing`);
- its size and sha256 match its manifest, it decrypts (every chunk's tag), and it is structurally complete, as
  `dbb-backup verify` checks it (see `verify.py`);
- with `--restore-test`, it restores into a scratch database on a scratch server (`--scratch-host`, in the check's
  own Pod: never the backup's server, whose address the check is not even given), and its tables are counted
  against the dump's. PostgreSQL restores there without ownership and grants: the scratch server has no roles.
Before any of that, every kept backup of the owner, not only the N newest, is checked for its key: an encrypted
backup whose key (the manifest's `keyFingerprint`, or for an older manifest the key check in its file's header) is
not among the keys given fails with `KeyMissing`, naming the key's id. So a key removed from the Secret while a kept
backup still needs it is reported by the next check, long before anyone needs that backup. The N newest are then
checked whole; of the others, at most MAX_KEY_REPORTS are listed, and `keyMissing` counts them all.
It deletes and changes nothing, whatever it finds. With `--restore-test` it writes one thing: the record of each
drill, beside the backup it restored (`<backup>.drills.jsonl`, see `drills.py`); a record it cannot write (a folder
mounted read-only) is logged and changes no verdict.

The result is one JSON line: {"status": "Verified" | Reason.VERIFY_FAILED, "location", "checked": [{"file", "time",
"result": "Passed" | "Failed", "reason", "message", "sha256"}], "start", "end", "duration"}, newest first. A failed
check exits 1 with that same line, so the reconciler reads the reason per backup from the termination message.
No backup of this owner yet is no failure: "checked" is empty.

With `--prove-archive` the check also proves the archive a point-in-time restore replays, under "archive": for
PostgreSQL (the owner has base backups, or --pg-bin or --replay-dir is given) the WAL archive between two of its base
backups on a scratch postgres (`walproof`), else MySQL/MariaDB's binlog archive in the --restore-test scratch server
(`archiveproof`). A proof that fails fails the check ("status": "Failed", with the proof's reason and message), unless
a backup failed its own check, which is then what is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

import structlog

from runner import admin, pgpitr, pitr, walproof
from runner.archiveproof import choose, provable, prove_archive
from runner.archivestore import ArchiveStore, FolderArchive, S3Archive
from runner.backup import utc_iso
from runner.crypto import HEADER_SIZE, Keyring
from runner.drills import record_drill
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber, one_line
from runner.layout import SET, Stored, stored
from runner.listing import Found, everything_in_folder, everything_in_s3
from runner.manifest import ENCRYPTION_NONE
from runner.objectstore import S3Location
from runner.process import Deadline
from runner.s3backup import S3Object
from runner.verify import verify_backup

__all__ = ["MAX_BACKUPS", "CheckOptions", "check_stored"]

log = structlog.get_logger("dbb-backup")

MAX_BACKUPS: Final = 10  # what one termination message (4096 bytes) can report, with a reason for each
MAX_REASON_MESSAGE: Final = 180
MAX_PROOF_MESSAGE: Final = 500  # one proof's, which names two backups and a table
MAX_KEY_REPORTS: Final = 3  # backups beyond the N newest whose key is gone, listed each (all are counted)


@dataclass(frozen=True)
class CheckOptions:
    location: str  # a folder, or s3://bucket/prefix
    owner_uid: str
    backups: int = 1
    keys: Keyring | None = None
    # --restore-test: a throwaway server beside the check (in its Pod), never the backup's own; each backup is
    # restored into a scratch database there and its tables counted against the dump's.
    scratch: Connection | None = None
    scratch_wait: float = 180.0
    # What every object the check writes (a drill record) carries: the store's server-side encryption.
    object_arguments: dict[str, str] = field(default_factory=dict)
    # --prove-archive: prove the binlog archive in the scratch server; `binlog_archive` (a folder or
    # s3://bucket/prefix) is where it is, None: beside the backups (pitr.default_archive).
    prove_archive: bool = False
    binlog_archive: str | None = None
    # --prove-archive for PostgreSQL (walproof): where its scratch server runs (--pg-bin, --replay-dir,
    # --scratch-os-user). None: no such flag was given; the proof is PostgreSQL's all the same when the owner has
    # base backups.
    wal_scratch: pgpitr.ScratchOptions | None = None
    # Roles the scratch postgres may know, besides the base backups' users and postgres: $DB_USER when the Job sets it
    # (a base backup's manifest leaves out a user name that came from a Secret).
    wal_roles: tuple[str, ...] = ()


def check_stored(options: CheckOptions, client: Any, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    """`client`: an S3 client for an s3:// location, else unused."""
    started, clock = datetime.now(UTC), time.monotonic()
    location = S3Location.parse(options.location) if options.location.startswith("s3://") else None
    everything, bases = (
        everything_in_s3(client, location) if location is not None else everything_in_folder(Path(options.location))
    )
    # Only published backups of this owner: a manifest says `verified` once its run verified it; others are not
    # backups for any reader (see docs/backup-format.md).
    ours = [
        f for f in everything if f.manifest.verified and f.manifest.owner and f.manifest.owner.uid == options.owner_uid
    ]
    chosen = list(reversed(ours))[: options.backups]
    if options.scratch is not None:
        engines = {Engine(f.manifest.engine) for f in chosen}
        if options.prove_archive and any(provable(f) for f in ours):
            engines.add(Engine.MYSQL)  # the proof's backups need not be among the N newest
        for engine in sorted(engines):
            admin.await_server(engine, options.scratch, scrub, options.scratch_wait)
    keyless = {f.where: problem for f in ours if (problem := _key_problem(f, options.keys, client, location))}
    checked = [
        _keyless(found, keyless[found.where])
        if found.where in keyless
        else _check_one(found, options, client, location, scrub, deadline)
        for found in chosen
    ]
    older = [f for f in reversed(ours) if f.where in keyless and f not in chosen]
    checked += [_keyless(found, keyless[found.where]) for found in older[:MAX_KEY_REPORTS]]
    failed = [c for c in checked if c["result"] == "Failed"]
    archive = None
    # The owner's base backups, newest first: there, and named as their manifests say (a copy renamed is none).
    our_bases = [
        walproof.Base(manifest, where)
        for manifest, where, present in reversed(bases)
        if present
        and manifest.owner is not None
        and manifest.owner.uid == options.owner_uid
        and where.rpartition("/")[2] == manifest.file
    ]
    if options.prove_archive and (our_bases or options.wal_scratch is not None):
        archive = _prove_wal(options, our_bases, client, location, scrub, deadline)
    elif options.prove_archive and options.scratch is not None:
        bad = {c["file"] for c in failed}
        archive = _prove(options, [f for f in reversed(ours) if f.where not in bad], client, location, scrub, deadline)
    # A backup that failed its own check is reported per backup; else a failed proof is the check's failure.
    proof_failed = {} if failed or archive is None or "reason" not in archive else archive
    ended = datetime.now(UTC)
    log.info("check done", location=options.location, checked=len(checked), failed=len(failed))
    return {
        "status": Reason.VERIFY_FAILED if failed else "Failed" if proof_failed else "Verified",
        **{k: proof_failed[k] for k in ("reason", "message") if k in proof_failed},
        "location": options.location,
        "checked": checked,
        **({"keyMissing": len(keyless)} if keyless else {}),
        **({"archive": archive} if archive is not None else {}),
        "start": utc_iso(started),
        "end": utc_iso(ended),
        "duration": round(time.monotonic() - clock, 3),
    }


def _prove(
    options: CheckOptions,
    newest_first: list[Found],
    client: Any,
    location: S3Location | None,
    scrub: Scrubber,
    deadline: Deadline,
) -> dict[str, Any]:
    """The check's `archive`: the proof (archiveproof), or why there is none, or why it failed."""
    scratch = options.scratch
    assert scratch is not None
    backups = [f for f in newest_first if provable(f)]

    def attempt() -> dict[str, Any] | str:
        chosen = choose(backups, partial(_archive_store, options, client=client, location=location))
        if isinstance(chosen, str):
            return chosen
        source = partial(_readable, client=client, location=location)
        return prove_archive(chosen, source, scratch, options.keys, scrub, deadline)

    return _verdict("binlog", attempt, scrub)


def _prove_wal(
    options: CheckOptions,
    bases: list[walproof.Base],
    client: Any,
    location: S3Location | None,
    scrub: Scrubber,
    deadline: Deadline,
) -> dict[str, Any]:
    """The check's `archive` for PostgreSQL: the proof (walproof), or why there is none, or why it failed."""

    def attempt() -> dict[str, Any] | str:
        chosen = walproof.choose(bases, partial(_wal_store, options, client=client, location=location))
        if isinstance(chosen, str):
            return chosen
        source = partial(_base_source, client=client, location=location)
        scratch = options.wal_scratch or pgpitr.ScratchOptions()
        return walproof.prove_wal_archive(chosen, source, options.keys, scratch, scrub, deadline, options.wal_roles)

    return _verdict("WAL", attempt, scrub)


def _verdict(log_kind: str, attempt: Callable[[], dict[str, Any] | str], scrub: Scrubber) -> dict[str, Any]:
    """The check's `archive` from a proof's `attempt` (binlog or WAL, `log_kind`): its proven result, why there is
    no proof (the text `attempt` returns), or why it failed. A check that did not finish gives no verdict."""
    try:
        found = attempt()
    except RunnerError as error:
        if error.reason in (Reason.INTERRUPTED, Reason.TIMEOUT):
            raise  # the check did not finish: no verdict on the archive
        log.warning(f"{log_kind} archive proof failed", reason=error.reason)
        return {"proven": False, "reason": error.reason, "message": one_line(scrub(error.message), MAX_PROOF_MESSAGE)}
    if isinstance(found, str):
        log.info(f"{log_kind} archive not proven", why=found)
        return {"proven": False, "why": found}
    return found


def _wal_store(
    options: CheckOptions, newest: walproof.Base, *, client: Any, location: S3Location | None
) -> ArchiveStore:
    """--binlog-archive (here, the WAL archive), else the archive beside the newest base backup, as a point-in-time
    restore finds it (`<its name prefix>-wal`)."""
    where = options.binlog_archive
    if where is None:
        beside = pgpitr.wal_beside(newest.manifest.file)
        if location is None:
            return FolderArchive(Path(newest.where).parent / beside)
        folder = newest.where.removeprefix(f"s3://{location.bucket}/").rpartition("/")[0]
        return S3Archive(client, S3Location(location.bucket, S3Location(location.bucket, folder).key(beside)))
    if where.startswith("s3://"):
        return S3Archive(client, S3Location.parse(where))
    return FolderArchive(Path(where))


def _base_source(base: walproof.Base, *, client: Any, location: S3Location | None) -> Path | S3Object:
    if location is None:
        return Path(base.where)
    return S3Object(client, location.bucket, base.where.removeprefix(f"s3://{location.bucket}/"))


def _archive_store(options: CheckOptions, newest: Found, *, client: Any, location: S3Location | None) -> ArchiveStore:
    """--binlog-archive, else the archive beside the newest backup, as a point-in-time restore finds it."""
    where = options.binlog_archive
    if where is None:
        backup = _readable(newest, client=client, location=location)
        assert isinstance(backup, Path | S3Object)
        return pitr.default_archive(backup, newest.manifest)
    if where.startswith("s3://"):
        return S3Archive(client, S3Location.parse(where))
    return FolderArchive(Path(where))


def _readable(found: Found, *, client: Any, location: S3Location | None) -> Path | Stored:
    """A backup as a restore reads it: its path, or its object."""
    return Path(found.where) if location is None else _source(found, client, location)


def _key_problem(found: Found, keys: Keyring | None, client: Any, location: S3Location | None) -> str | None:
    """Why the key this backup needs is not among `keys`; None when it is there (or the backup is not encrypted,
    or is gone, which its own check reports)."""
    manifest = found.manifest
    if manifest.encryption == ENCRYPTION_NONE or not found.present:
        return None
    recorded = manifest.key_fingerprint
    if recorded is not None:
        if keys is not None and keys.by_fingerprint(recorded) is not None:
            return None
        needed = f"key {manifest.key_id!r} (fingerprint {recorded})"
    else:
        try:
            header = _header(found, client, location)
        except RunnerError:
            return None  # unreadable: its own check says why, if it is among the newest
        if keys is not None and keys.for_header(header) is not None:
            return None
        needed = "a key written before keys had ids"
    held = ", ".join(repr(i) for i in keys.ids) if keys is not None else "none"
    return f"needs {needed}, which is not among the keys given (ids: {held}): it cannot be restored"


def _header(found: Found, client: Any, location: S3Location | None) -> bytes:
    """The first bytes of the backup as stored: of its first member, for a set (each member is encrypted alone)."""
    source: Stored = _source(found, client, location)
    if found.manifest.layout == SET:
        if not found.manifest.members:
            return b""
        source = source.member(found.manifest.members[0].name)
    with source.open() as stream:
        return stream.read(HEADER_SIZE)


def _source(found: Found, client: Any, location: S3Location | None) -> Stored:
    if location is not None:
        return S3Object(client, location.bucket, found.where.removeprefix(f"s3://{location.bucket}/"))
    return stored(Path(found.where))


def _keyless(found: Found, problem: str) -> dict[str, Any]:
    log.warning("backup key missing", file=found.where, key_id=found.manifest.key_id)
    message = one_line(f"{Path(found.where).name} {problem}", MAX_REASON_MESSAGE)
    return {
        "file": found.where,
        "time": found.manifest.start,
        "result": "Failed",
        "reason": Reason.KEY_MISSING,
        "message": message,
    }


def _check_one(
    found: Found,
    options: CheckOptions,
    client: Any,
    location: S3Location | None,
    scrub: Scrubber,
    deadline: Deadline,
) -> dict[str, Any]:
    manifest = found.manifest
    report: dict[str, Any] = {"file": found.where, "time": manifest.start}
    if not found.present:
        reason, message = Reason.BACKUP_MISSING, f"{found.where} is gone; its manifest remains"
        log.warning("backup missing", file=found.where)
        return {**report, "result": "Failed", "reason": reason, "message": message}
    drilled = options.scratch is not None
    started = time.monotonic()
    source = _readable(found, client=client, location=location)
    try:
        verified = verify_backup(
            source,
            options.keys,
            scrub,
            deadline,
            manifest=manifest,
            restore_connection=options.scratch,
            scratch_server=True,
        )
    except RunnerError as error:
        if error.reason in (Reason.INTERRUPTED, Reason.TIMEOUT):
            raise  # the check did not finish: no verdict on this backup
        log.warning("backup check failed", file=found.where, reason=error.reason)
        message = one_line(scrub(error.message), MAX_REASON_MESSAGE)
        failed = {**report, "result": "Failed", "reason": error.reason, "message": message}
        if not drilled:
            return failed
        failed["restoreSeconds"] = round(time.monotonic() - started, 1)
        _record(found, failed, {}, options, client)
        return failed
    passed = {**report, "result": "Passed", "sha256": verified.sha256}
    if not verified.restore_tested:
        return passed
    # The evidence of a restore drill: how long restoring and checking took, and what was compared.
    drill = {
        **passed,
        "restoreTested": True,
        "restoreSeconds": round(time.monotonic() - started, 1),
        "tables": sum(len(tables) for tables in verified.rows.values()),
        "rows": sum(sum(tables.values()) for tables in verified.rows.values()),
        **({"queries": verified.queries} if verified.queries else {}),
    }
    _record(found, drill, verified.rows, options, client)
    return drill


def _record(
    found: Found, result: dict[str, Any], rows: dict[str, dict[str, int]], options: CheckOptions, client: Any
) -> None:
    """The drill, in the record beside the backup (runner.drills): its result, with each table's rows."""
    drill = {k: v for k, v in result.items() if k not in ("time", "restoreTested")}
    drill |= {"time": utc_iso(datetime.now(UTC)), "backupTime": result["time"], "by": "dbb-backup check"}
    if rows:
        drill["rows"] = rows
    record_drill(found.where, drill, client, options.object_arguments)
