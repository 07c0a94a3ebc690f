"""`dbb-backup restore FILE --point-in-time T --scratch-port P`: the replay on a scratch server, then the target.

With a scratch server to replay on (a restore Job's Pod runs one beside the runner, on 127.0.0.1, as a restore
test's does), the archived binlog is never replayed into the target:

1. Plan (`pitr.prepare`, pure), check the keys and the statements the replay would leave out (`pitr.check_statements`);
   refuse a target that holds anything unless `--replace`. Nothing has been touched yet.
2. Restore the backup into the scratch server under its own name and replay the archived binlog there, under that
   name too: no renaming, so a statement that names the database in its text (`ALTER TABLE shop.t ...`) changes the
   scratch copy, as it changed the source. A renamed replay into the target would have run it against the source
   database, if the target is its server (see replaysafety); here the target is not reached until step 3.
3. Dump the scratch copy (as a backup dumps: one database, no CREATE DATABASE) into the target's client. A target
   database the restore created is dropped again if this fails; with `--replace`, each table the copy holds
   replaces the target's, as a plain MySQL restore with `--replace` does.

A failure in steps 1 and 2 (a damaged binlog, a replay the server rejects, the deadline) leaves the target as it was,
which is what makes `--replace` safe with a point in time. The scratch copy is dropped at the end, whatever happened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from runner import admin, engines, pitr
from runner.archivestore import ArchiveStore
from runner.crypto import Keyring
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.manifest import Manifest
from runner.process import Deadline, pipe
from runner.restore import RestoreOptions, refuse_existing, restore_backup
from runner.s3backup import S3Object

__all__ = ["Scratch", "refuse_replace_in_place", "restore_through_scratch"]

log = structlog.get_logger("dbb-backup")


@dataclass(frozen=True)
class Scratch:
    connection: Connection
    wait: float = 180.0  # a server started with the Pod may still be initialising


def restore_through_scratch(
    source: Path | S3Object,
    manifest: Manifest | None,
    keys: Keyring | None,
    options: RestoreOptions,
    point: tuple[pitr.Replay, ArchiveStore, str, str],
    scratch: Scratch,
    scrub: Scrubber,
    deadline: Deadline,
) -> dict[str, object]:
    """Steps 1-3 above; returns what the restore's result adds: the databases, `replayedUntil` and `binlogs`."""
    plan, store, target, database = point
    pitr.check_keys(plan, keys)
    pitr.check_statements(plan, store, database, database, scrub, deadline, keys)
    existing, _ = refuse_existing(Engine.MYSQL, options.connection, [target], scrub, replace=options.replace)
    admin.await_server(Engine.MYSQL, scratch.connection, scrub, scratch.wait)
    if admin.database_exists(Engine.MYSQL, scratch.connection, database, scrub):
        raise RunnerError(
            Reason.TARGET_EXISTS,
            f"the scratch server already has a database {database!r}: replay on a scratch server without it",
        )
    on_scratch = replace(options, connection=scratch.connection, targets=(database,), replace=False)
    try:
        restore_backup(source, keys, on_scratch, scrub, deadline, stored_manifest=manifest)
        clock = time.monotonic()
        replayed = pitr.apply(
            plan, store, scratch.connection, {database: database}, scrub, deadline, created=False, keys=keys
        )
        log.info("replayed on the scratch server", seconds=round(time.monotonic() - clock, 1))
        _copy(scratch.connection, database, options.connection, target, scrub, deadline, created=not existing)
    finally:
        admin.drop_database(Engine.MYSQL, scratch.connection, database, scrub)
    return {"databases": {database: target}, **replayed, "scratchServer": True}


def _copy(
    scratch: Connection,
    database: str,
    connection: Connection,
    target: str,
    scrub: Scrubber,
    deadline: Deadline,
    *,
    created: bool,
) -> None:
    """Step 3: the scratch copy, dumped straight into the target's client; a database created here is dropped again
    if the copy fails."""
    dump = engines.mysql_dump_argv(scratch, [database], several=False)
    client = engines.mysql_script_argv(connection, target)
    if created:
        admin.create_database(Engine.MYSQL, connection, target, scrub)
    try:
        reader = (dump, engines.child_env(Engine.MYSQL, scratch))
        writer = (client, engines.child_env(Engine.MYSQL, connection))
        pipe(reader, writer, scrub, deadline, Reason.RESTORE_FAILED)
    except BaseException:
        if created:
            admin.drop_database(Engine.MYSQL, connection, target, scrub)
        raise
    log.info("copied from the scratch server", database=target)


def refuse_replace_in_place(replace_target: bool) -> None:
    """Without a scratch server, `--replace` with a point in time is refused: a replay that fails after the dump
    replaced the target's tables could not be undone."""
    if replace_target:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            "--replace with --point-in-time needs a scratch server to replay on (--scratch-port, --scratch-user): "
            "a replay into the target that fails after its tables were replaced could not be undone",
        )
