"""`dbb-backup check --prove-archive`: proof that the binlog archive reproduces a backup exactly. (PostgreSQL's WAL
archive is proven the same way, from base backups: `walproof`.)

A point-in-time restore trusts the archive to hold every change after a backup. The check proves it the one way
that leaves no doubt, with two backups of the same database and the archive between them:
1. N is the newest stored backup (one-database MySQL/MariaDB, with binlog coordinates); M the newest before it from
   whose coordinates the archive reaches exactly N's (`pitr.plan_replay_to`: every binlog in between archived,
   consecutive, closed but the last, which must hold N's position; no gap recorded in between).
2. The replay's statements are checked first (`pitr.check_statements`: none on the database that it would leave
   out). In the scratch server, M is restored under the database's own name and the archive replayed onto it from M's
   coordinates to N's, unrenamed (the scratch server is the check's own: a statement that names the database
   changes the scratch copy, as on the database's server); N is restored beside it as `<database>_dbb_proof`.
3. The two must hold the same tables, each with the same rows: equal row counts, equal `CHECKSUM TABLE`. The
   server sums a checksum of each row's values, so the result depends neither on the rows' order nor on how the
   pages are laid out; both copies are on one server (one version, one row format): equal rows, equal sums.
Both scratch databases are dropped at the end, whatever happened. The proof creates them: if either exists on the
scratch server already, it refuses (`TargetExists`) and drops nothing.

Result (the check's `archive`): {"proven": true, "from": M's file, "to": N's file, "until": N's end (RFC 3339 UTC),
"binlogs": [the binlogs replayed], "tables": tables compared}; {"proven": false, "why": ...} when there is nothing to
prove yet (fewer than two such backups, or no older backup the archive reaches N from). A proof that fails (a
binlog damaged or gone, a replay that fails, a difference: `ArchiveMismatch`) raises its RunnerError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import structlog

from runner import admin, pitr
from runner.archivestore import ArchiveStore
from runner.crypto import Keyring
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.layout import Stored
from runner.listing import Found
from runner.process import Deadline
from runner.restore import RestoreOptions, restore_backup

__all__ = ["PROOF_SUFFIX", "Proof", "choose", "provable", "prove_archive"]

log = structlog.get_logger("dbb-backup")

PROOF_SUFFIX: Final = "_dbb_proof"  # N's copy beside the replayed one, in the scratch server

# {table: (rows, CHECKSUM TABLE)}; the checksum as the server prints it (NULL for a table it cannot read).
Contents = dict[str, tuple[int, str]]


@dataclass(frozen=True)
class Proof:
    older: Found  # M
    newer: Found  # N
    plan: pitr.Replay
    store: ArchiveStore  # the archive it replays


def provable(found: Found) -> bool:
    """A backup a proof can start or end at: there, MySQL, one database, with binlog coordinates."""
    manifest = found.manifest
    coordinates = manifest.binlog
    return (
        found.present
        and manifest.engine == Engine.MYSQL
        and len(manifest.databases) == 1
        and coordinates is not None
        and coordinates.file is not None
        and coordinates.position is not None
    )


def choose(backups: Sequence[Found], archive: Callable[[Found], ArchiveStore]) -> Proof | str:
    """N and M among `backups` (provable ones, newest first) and the replay between them in N's archive
    (`archive(N)`); or why there is none."""
    if not backups:
        return "there is no MySQL backup with binlog coordinates to prove the archive against yet"
    newer = backups[0]
    database = newer.manifest.databases[0]
    older = [b for b in backups[1:] if b.manifest.databases == newer.manifest.databases]
    if not older:
        return f"{newer.manifest.file} is the only backup of {database!r} yet: a proof needs an older one too"
    store = archive(newer)
    index, gaps = store.index(), store.gaps()
    refusals = []
    for candidate in older:
        try:
            plan = pitr.plan_replay_to(candidate.manifest, index, newer.manifest, gaps)
        except RunnerError as refused:
            refusals.append(refused.message)
            continue
        return Proof(candidate, newer, plan, store)
    return (
        f"the archive at {store.where} does not reach {newer.manifest.file} from any older backup "
        f"(from {older[0].manifest.file}: {refusals[0]})"
    )


def prove_archive(
    proof: Proof,
    source: Callable[[Found], Path | Stored],
    scratch: Connection,
    keys: Keyring | None,
    scrub: Scrubber,
    deadline: Deadline,
) -> dict[str, Any]:
    """Steps 2 and 3 in the scratch server; the proven result, or the RunnerError that says what failed."""
    older, newer = proof.older.manifest, proof.newer.manifest
    database = older.databases[0]
    copy = database + PROOF_SUFFIX
    pitr.check_keys(proof.plan, keys)
    # A statement on the database that the replay would leave out (it ran while another database was the default):
    # said as such, before anything is restored, rather than as the difference or the replay error it would cause.
    pitr.check_statements(proof.plan, proof.store, database, database, scrub, deadline, keys)
    for name in (database, copy):
        if admin.database_exists(Engine.MYSQL, scratch, name, scrub):
            raise RunnerError(
                Reason.TARGET_EXISTS,
                f"the scratch server already has a database {name!r}: the archive is proven only in databases the "
                "check creates there",
            )
    try:
        restore_backup(source(proof.older), keys, RestoreOptions(scratch), scrub, deadline, stored_manifest=older)
        pitr.replay(proof.plan, proof.store, scratch, database, database, scrub, deadline, keys)
        restore_backup(
            source(proof.newer),
            keys,
            RestoreOptions(scratch, (f"{database}={copy}",)),
            scrub,
            deadline,
            stored_manifest=newer,
        )
        replayed, restored = contents(scratch, database, scrub), contents(scratch, copy, scrub)
    finally:
        for name in (database, copy):
            admin.drop_database(Engine.MYSQL, scratch, name, scrub)
    if (difference := first_difference(replayed, restored)) is not None:
        raise RunnerError(
            Reason.ARCHIVE_MISMATCH,
            f"the archive replayed from {older.file} does not reproduce {newer.file}: {difference}",
        )
    until = datetime.fromisoformat(newer.end).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    binlogs = [entry.file for entry in proof.plan.entries]
    log.info("binlog archive proven", older=older.file, newer=newer.file, binlogs=binlogs, tables=len(restored))
    return {
        "proven": True,
        "from": older.file,
        "to": newer.file,
        "until": until,
        "binlogs": binlogs,
        "tables": len(restored),
    }


def contents(connection: Connection, database: str, scrub: Scrubber) -> Contents:
    """Each base table's rows and checksum. The statement is built by the server, which quotes every name."""
    rows = admin.count_rows(Engine.MYSQL, connection, database, scrub)
    hexed = database.encode("utf-8", errors="surrogateescape").hex()
    names = "CONCAT('`', REPLACE(table_schema, '`', '``'), '`.`', REPLACE(table_name, '`', '``'), '`')"
    where = f"table_type = 'BASE TABLE' AND table_schema = X'{hexed}'"  # the name hex-encoded, as count_rows has it
    build = f"SELECT GROUP_CONCAT({names} SEPARATOR ', ') FROM information_schema.tables WHERE {where}"  # noqa: S608
    tables = admin.query(Engine.MYSQL, connection, build, scrub).strip()
    if not tables or tables == "NULL":
        return {}
    sums = {}
    # One line per table: `<database>.<table>`, tab, the checksum.
    for line in admin.query(Engine.MYSQL, connection, f"CHECKSUM TABLE {tables}", scrub).splitlines():
        name, _, checksum = line.rpartition("\t")
        sums[name.removeprefix(f"{database}.")] = checksum
    return {table: (count, sums.get(table, "NULL")) for table, count in rows.items()}


def first_difference(replayed: Contents, restored: Contents) -> str | None:
    """What differs first (tables in name order) between the replayed copy and the newer backup; None: nothing."""
    for table in sorted(replayed.keys() | restored.keys()):
        if table not in restored:
            return f"table {table!r} is in the replayed copy, not in the backup"
        if table not in replayed:
            return f"table {table!r} of the backup is missing from the replayed copy"
        (rows, checksum), (expected_rows, expected) = replayed[table], restored[table]
        if rows != expected_rows:
            return f"table {table!r} has {rows} rows replayed, {expected_rows} in the backup"
        if checksum != expected:
            sums = f"CHECKSUM TABLE {checksum} replayed, {expected} in the backup"
            return f"table {table!r} has the same {rows} rows, but other contents: {sums}"
    return None
