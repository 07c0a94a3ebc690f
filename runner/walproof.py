"""`dbb-backup check --prove-archive` for PostgreSQL: proof that the WAL archive turns an older base backup into the
newest one, exactly. The PostgreSQL half of `archiveproof` (MySQL/MariaDB's binlog archive), the same way adapted:
1. N is the newest base backup of the check's owner (its manifest's owner uid); M the newest older one from whose
   start segment the archive holds every segment, consecutive and on N's timeline, up to the one holding N's end
   LSN (`pgpitr.plan_to_lsn`; a missing segment refuses that M, as it refuses a point-in-time restore).
2. On a scratch server (pgpitr's: a child of ours from `--pg-bin`, or the replay server of `--replay-dir`), M is
   unpacked with those segments and recovered to N's end LSN (`recovery_target_lsn`, inclusive, then promoted);
   every table of every database it has is read (`contents`). It is stopped and its data removed; N is unpacked
   alone with only its own segments (from its start to its end segment) and recovered to the same LSN, its own
   consistency point; read the same way, stopped, removed.
3. The two must hold the same databases and tables, each with the same rows: equal row counts and equal checksums,
   the sum of `hashtext` of each row's text, which depends neither on the rows' order nor on how the pages are laid
   out; both are read by the same server binary. A recovery that stops short of N's end LSN (a segment that is not
   the one it is named for, a damaged one) or any difference is an `ArchiveMismatch` naming the backup or the
   `database.table`.

Result (the check's `archive`): {"proven": true, "from": M's file, "to": N's file, "until": N's end (RFC 3339 UTC),
"walSegments": [the segments M was recovered with], "tables": tables compared}; {"proven": false, "why": ...} when
there is nothing to prove yet (fewer than two base backups, or no older one the archive reaches N from). A proof
that fails (a segment damaged or gone, a recovery that fails, a difference) raises its RunnerError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import structlog

from runner import pgpitr
from runner.archivestore import ArchiveStore
from runner.basebackup import BaseManifest
from runner.crypto import Keyring
from runner.engines import Connection, Engine, child_env, pg_conninfo
from runner.errors import Reason, RunnerError, Scrubber
from runner.manifest import ENCRYPTION_NONE
from runner.process import Deadline, run_capture
from runner.s3backup import S3Object
from runner.walarchive import WalEntry, check_keys, read_wal_index

__all__ = ["Base", "WalProof", "choose", "contents", "first_difference", "prove_wal_archive"]

log = structlog.get_logger("dbb-backup")

READ_WAIT: Final = 3600.0  # seconds reading one database's tables may take
# Every table but the catalogs', each named as the server quotes it (`schema.table`, quoted where needed).
_TABLES: Final = (
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' ORDER BY 1"
)
_DATABASES: Final = "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1"

# {database: {table: (rows, checksum)}}
Contents = dict[str, dict[str, tuple[int, str]]]


@dataclass(frozen=True)
class Base:
    """A base backup of the check's owner: its manifest, and where it is (a path, or an s3:// URL)."""

    manifest: BaseManifest
    where: str


@dataclass(frozen=True)
class WalProof:
    older: Base  # M
    newer: Base  # N
    replay: list[WalEntry]  # M's start segment to N's end segment
    own: list[WalEntry]  # N's start segment to its end segment
    store: ArchiveStore


def choose(bases: Sequence[Base], store: Callable[[Base], ArchiveStore]) -> WalProof | str:
    """N and M among `bases` (this owner's, newest first) and the segments between them in N's archive
    (`store(N)`); or why there is none."""
    if not bases:
        return "there is no base backup of this owner to prove the WAL archive against yet"
    newer, older = bases[0], bases[1:]
    if not older:
        return f"{newer.manifest.file} is the only base backup yet: a proof needs an older one too"
    archive = store(newer)
    index = read_wal_index(archive)
    refusals = []
    for candidate in older:
        try:
            replay = pgpitr.plan_to_lsn(candidate.manifest, index, newer.manifest)
        except RunnerError as refused:
            refusals.append(refused.message)
            continue
        own = pgpitr.plan_to_lsn(newer.manifest, index, newer.manifest)  # within replay's: it cannot be refused
        return WalProof(candidate, newer, replay, own, archive)
    return (
        f"the WAL archive at {archive.where} does not reach {newer.manifest.file} from any older base backup "
        f"(from {older[0].manifest.file}: {refusals[0]})"
    )


def prove_wal_archive(
    proof: WalProof,
    source: Callable[[Base], Path | S3Object],
    keys: Keyring | None,
    options: pgpitr.ScratchOptions,
    scrub: Scrubber,
    deadline: Deadline,
    roles: Sequence[str] = (),
) -> dict[str, Any]:
    """Steps 2 and 3; the proven result, or the RunnerError that says what failed. `roles`: more roles to ask the
    scratch server as, besides the base backups' users and postgres (pgpitr.ScratchServer._ask)."""
    older, newer = proof.older.manifest, proof.newer.manifest
    # Before anything is unpacked: the keys of both base backups and of every segment.
    for manifest in (older, newer):
        _check_key(manifest, keys)
    check_keys([*proof.replay, *proof.own], keys)
    target = pgpitr.LsnTarget(newer.end_lsn)
    run_as, uid = pgpitr.as_user(options.os_user)
    with pgpitr.place(options, newer, run_as) as where:
        recovered = []
        for base, entries in ((proof.older, proof.replay), (proof.newer, proof.own)):
            manifest = base.manifest
            pgpitr.stage(where, uid, source(base), manifest, keys, proof.store, entries)
            users = list(dict.fromkeys(u for u in (manifest.user, newer.user, *roles, "postgres") if u))
            scratch = pgpitr.ScratchServer(where.folder, where.server, where.tools, users)
            try:
                with scratch.running(target, deadline) as role:
                    recovered.append(contents(scratch, role, scrub, deadline))
            except pgpitr.TargetNotReached:
                raise RunnerError(
                    Reason.ARCHIVE_MISMATCH,
                    f"recovering {manifest.file} with the archived WAL ended before {newer.file}'s end LSN "
                    f"({newer.end_lsn}): a segment between does not continue the one before it",
                ) from None
            deadline.check()
            pgpitr.clear(where)
    replayed, restored = recovered
    if (difference := first_difference(replayed, restored)) is not None:
        raise RunnerError(
            Reason.ARCHIVE_MISMATCH,
            f"the WAL archive recovered from {older.file} does not reproduce {newer.file}: {difference}",
        )
    until = datetime.fromisoformat(newer.end).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    segments = [entry.segment for entry in proof.replay]
    tables = sum(len(tables) for tables in restored.values())
    log.info("WAL archive proven", older=older.file, newer=newer.file, walSegments=len(segments), tables=tables)
    return {
        "proven": True,
        "from": older.file,
        "to": newer.file,
        "until": until,
        "walSegments": segments,
        "tables": tables,
    }


def _check_key(manifest: BaseManifest, keys: Keyring | None) -> None:
    if manifest.encryption == ENCRYPTION_NONE:
        return
    named = f"key {manifest.key_id!r}" if manifest.key_id else "its key"
    if keys is None:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS, f"{manifest.file} is encrypted: give {named} (--key-file, --key-dir)"
        )
    fingerprint = manifest.key_fingerprint
    if fingerprint is not None and keys.by_fingerprint(fingerprint) is None:
        held = ", ".join(repr(i) for i in keys.ids) or "none"
        raise RunnerError(
            Reason.DECRYPT_FAILED, f"{manifest.file} needs {named}, which is not among those given (ids: {held})"
        )


def contents(scratch: pgpitr.ScratchServer, role: str, scrub: Scrubber, deadline: Deadline) -> Contents:
    """Each table's rows and checksum, in every database of the scratch server but the templates."""
    local = Connection(str(scratch.folder), 5432, role)
    env = child_env(Engine.POSTGRESQL, local)

    def ask(database: str, sql: str, *flags: str) -> str:
        psql = [scratch.tools["psql"], "-X", "-At", "-v", "ON_ERROR_STOP=1", *flags, "-h", local.host, "-U", role]
        argv = [*psql, "-d", pg_conninfo(database), "-c", sql]
        return run_capture(argv, env, scrub, timeout=READ_WAIT, failure=Reason.RESTORE_FAILED)

    found: Contents = {}
    # Names one a record, each ended by a NUL: a quoted name may hold a newline.
    for database in _records(ask("template1", _DATABASES, "-0")):
        deadline.check()
        tables = _records(ask(database, _TABLES, "-0"))
        sums = {}
        if tables:
            # Quoted by the server (format's %I): each name is safe to put in the statement as it came.
            each = (
                f"SELECT {number}, count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM {name} t"  # noqa: S608
                for number, name in enumerate(tables)
            )
            for line in ask(database, " UNION ALL ".join(each)).splitlines():
                number, rows, checksum = line.split("|")
                sums[tables[int(number)]] = (int(rows), checksum)
        found[database] = sums
    return found


def _records(output: str) -> list[str]:
    return [record for record in output.split("\0") if record.strip("\n")]


def first_difference(replayed: Contents, restored: Contents) -> str | None:
    """What differs first (in name order) between the recovered M and N; None: nothing."""
    for database in sorted(replayed.keys() | restored.keys()):
        if database not in restored:
            return f"database {database!r} is in the recovered copy, not in the base backup"
        if database not in replayed:
            return f"database {database!r} of the base backup is missing from the recovered copy"
        difference = _table_difference(database, replayed[database], restored[database])
        if difference is not None:
            return difference
    return None


def _table_difference(
    database: str, replayed: Mapping[str, tuple[int, str]], restored: Mapping[str, tuple[int, str]]
) -> str | None:
    for table in sorted(replayed.keys() | restored.keys()):
        name = f"{database}.{table}"
        if table not in restored:
            return f"table {name} is in the recovered copy, not in the base backup"
        if table not in replayed:
            return f"table {name} of the base backup is missing from the recovered copy"
        (rows, checksum), (expected_rows, expected) = replayed[table], restored[table]
        if rows != expected_rows:
            return f"table {name} has {rows} rows recovered, {expected_rows} in the base backup"
        if checksum != expected:
            return f"table {name} has the same {rows} rows, but other contents (checksum {checksum}, not {expected})"
    return None
