"""`dbb-backup restore FILE`: decrypt and decompress on the fly into the database's own restore tool.

Which database goes where (`--database`, repeatable):
- no `--database`: every database in the backup is restored under its own name; for a PostgreSQL `all` backup the
  globals (roles, tablespaces) first, with psql, where an existing role's CREATE fails harmlessly (logged).
- `--database TARGET` on a one-database backup: restore it into TARGET.
- `--database SOURCE=TARGET`: restore the backup's database SOURCE into TARGET. PostgreSQL restores only the
  databases named this way; a MySQL script of several databases is one stream, so it restores all of them, the
  named ones renamed (the `CREATE DATABASE`/`USE` lines are rewritten, see `feeds.SqlRenamer`).

With `--owner NAMESPACE/NAME` (a DatabaseRestore's source DatabaseBackup) a backup whose manifest names another
owner, or none, is refused (`ForeignBackup`) before anything else is read or touched.

Nothing is committed before the bytes the restore read were found to be those its manifest describes (size and
sha256, every chunk's GCM tag if it is encrypted, the compression's own checksum; see `checked`). A restore that any
failure undoes (`undone_by_any_failure`: one PostgreSQL database, or one MySQL database it creates) reads the file
once; any other is first checked whole, structure included (as `dbb-backup verify` checks it), before the server
is touched. A file without its manifest is refused, unless `--without-manifest` is given; then only what the file
itself can prove is checked (decryption and the compression's own end and checksum) before the restore.

A target database that exists and holds anything (a table, view, sequence, function or schema of its own) is refused
unless `--replace` is given: a restore goes into a new database, or an empty one (a fresh server's `postgres`). A
missing target database is created, and dropped again if the restore fails. Each PostgreSQL database is restored all or
nothing: pg_restore writes the
archive as one BEGIN ... COMMIT script and psql runs it with ON_ERROR_STOP (see `pgscript`), so a restore that fails
anywhere (an object that already exists, a damaged file, `--timeout`, SIGTERM) leaves the target database exactly
as it was, and a database the restore created is dropped again (best effort). Before, `pg_restore --exit-on-error`
stopped at the first error but kept what it had applied. In a tar (or a set) of several databases each database is
its own transaction: the databases restored before a failure stay restored. The script is fitted to the target server:
session settings it does not know are left out (pg_restore 17's `SET transaction_timeout` on PostgreSQL 12-16).
PostgreSQL does not promise that a newer pg_dump's output loads into an older server (pg_dump documentation,
Notes): anything else an older server rejects fails the restore, whole. `--no-owner` restores without ownership and
grants, for a server that lacks the original roles. With `--replace`, an existing PostgreSQL database is restored
into a new database first, which then takes its name in one transaction (the old one's sessions are ended and it is
dropped): the target is at every moment either the old database or the whole backup, never a mix, and objects the
backup does not have do not survive. A MySQL restore cannot be one transaction (DDL commits): with
`--replace` the script replaces each table it holds (`DROP TABLE IF EXISTS`, then the table), and a failure half way
leaves the tables before it replaced; without `--replace` a failure drops the database the restore created.
"""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Final

import structlog

from runner import admin, engines, progress
from runner.checked import Checked, Digest, Hashing, Measured, expect
from runner.compression import Source
from runner.crypto import Keyring
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.feeds import SqlRenamer, ToolFeed, feed_all
from runner.layout import CUSTOM, SET, SQL, TAR, Layout, Part, Stored, members, open_payload, parse_layout, stored
from runner.manifest import Manifest, manifest_path, read_manifest
from runner.naming import MANIFEST_SUFFIX, database_problem
from runner.pgscript import ScriptRestore
from runner.process import Deadline, Tool
from runner.verify import check_checksum, check_decoding, verify_backup

__all__ = ["RestoreOptions", "refuse_existing", "restore_backup"]

log = structlog.get_logger("dbb-backup")

SNIFF_SIZE: Final = 64 << 10
# globals.sql holds roles and tablespaces: kilobytes, even for thousands of roles. Read whole, with a ceiling.
GLOBALS_LIMIT: Final = 64 << 20
_SECTION: Final = b"\n-- Current Database: `"


@dataclass(frozen=True)
class RestoreOptions:
    connection: Connection
    targets: tuple[str, ...] = ()
    no_owner: bool = False
    replace: bool = False  # restore into databases that exist
    without_manifest: bool = False  # restore a file whose manifest is lost, checking only what the file proves
    # (namespace, name) of the DatabaseBackup whose backups alone may be restored (`--owner`): a DatabaseRestore's
    # source. None: any backup.
    owner: tuple[str, str] | None = None


def parse_targets(targets: tuple[str, ...]) -> tuple[str | None, dict[str, str]]:
    """(a plain TARGET or None, the SOURCE=TARGET pairs)."""
    plain = [t for t in targets if "=" not in t]
    pairs = dict(t.split("=", 1) for t in targets if "=" in t)
    if len(plain) > 1 or (plain and pairs):
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--database: give one TARGET, or SOURCE=TARGET pairs")
    if any(not s or not t for s, t in pairs.items()):
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--database SOURCE=TARGET: both names are needed")
    for name in [*plain, *pairs, *pairs.values()]:
        if problem := database_problem(name):
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"--database: the name {name!r} {problem}")
    return (plain[0] if plain else None), pairs


def refuse_existing(
    engine: Engine, connection: Connection, targets: list[str], scrub: Scrubber, *, replace: bool
) -> tuple[set[str], set[str]]:
    """(the targets that exist, those of them that hold anything). A target that holds something is refused with
    TargetExists unless `replace`; an empty one (a fresh server's `postgres`) is restored into as it is, as a
    restore of a whole server needs."""
    existing = {t for t in targets if admin.database_exists(engine, connection, t, scrub)}
    full = {t for t in existing if not admin.database_is_empty(engine, connection, t, scrub)}
    if full and not replace:
        names = ", ".join(repr(t) for t in sorted(full))
        raise RunnerError(
            Reason.TARGET_EXISTS,
            f"database {names} exists on the server and is not empty: restore into a new database "
            "(--database SOURCE=NEW), or give --replace",
        )
    return existing, full


def restore_backup(
    path: Path | Stored,
    key: Keyring | None,
    options: RestoreOptions,
    scrub: Scrubber,
    deadline: Deadline,
    *,
    stored_manifest: Manifest | None = None,
) -> dict[str, str]:
    """Restores; returns {source database: target database} for every database restored. `path` is a file, or an
    object in a bucket (s3backup.S3Object) whose manifest `stored_manifest` the caller read (None: it has none)."""
    layout = parse_layout(Path(stored(path).name))
    plain, pairs = parse_targets(options.targets)
    manifest = stored_manifest
    if manifest is None and isinstance(path, Path) and manifest_path(path).exists():
        manifest = read_manifest(path)
    in_one_read = manifest is not None and undone_by_any_failure(layout, manifest, plain, pairs, options, scrub)
    if in_one_read:
        assert manifest is not None
        _refuse_mismatch(stored(path).name, manifest, options.owner)
        # Its own read is held to the manifest before anything is committed: a second read first would only make
        # the outage longer.
        checked = Checked.of(manifest, against_manifest=True)
        log.info("restoring in one read, held to the manifest before its commit", file=stored(path).name)
    else:
        manifest, checked = check_whole(path, layout, key, options, scrub, deadline, stored_manifest=manifest)
    # Read (again) to restore: every part held to what the check found before it is committed (see `checked`).
    source = Measured(stored(path))
    run = _Restore(layout, manifest, checked, source, options, scrub, deadline, fresh_only=in_one_read)
    guard = _explained_by_the_file(path, manifest) if in_one_read and manifest else nullcontext()
    with guard, progress.phase("restore", total=manifest.size if manifest else None, file=source.name):
        restored = run.everything(key, plain, pairs)
    log.info("restore finished", file=stored(path).name, databases=restored)
    return restored


@contextmanager
def _explained_by_the_file(path: Path | Stored, manifest: Manifest) -> Iterator[None]:
    """A restore in one read that failed (and undid itself) on a file that is not the one its manifest describes
    fails as VerifyFailed, naming the difference: a cut-short file is a cut-short file, not pg_restore's `end of
    file`. The file is measured again only then."""
    try:
        yield
    except RunnerError as error:
        if error.reason not in (Reason.RESTORE_FAILED, Reason.DECRYPT_FAILED):
            raise
        check_checksum(path, manifest)  # VerifyFailed, naming size or sha256, if the file differs
        raise


def check_whole(
    path: Path | Stored,
    layout: Layout,
    key: Keyring | None,
    options: RestoreOptions,
    scrub: Scrubber,
    deadline: Deadline,
    *,
    stored_manifest: Manifest | None = None,
) -> tuple[Manifest | None, Checked]:
    """The whole file, checked before anything on the server changes: its manifest, if it has one, and what the
    check read, which the restore's own read must find again."""
    manifest = stored_manifest
    if manifest is None and isinstance(path, Path) and manifest_path(path).exists():
        manifest = read_manifest(path)
    name = stored(path).name
    refuse_foreign(name, manifest, options.owner)
    if manifest is not None:
        if manifest.file != name:
            raise RunnerError(Reason.VERIFY_FAILED, f"the manifest describes {manifest.file}, not {name}")
        report = verify_backup(path, key, scrub, deadline, manifest=manifest)
        assert report.checked is not None, "a verified backup has its digests"
        return manifest, report.checked
    if layout.kind == SET:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"no manifest {name}{MANIFEST_SUFFIX}: a set is read through it, it lists the members",
        )
    if not options.without_manifest:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"no manifest {name}{MANIFEST_SUFFIX} beside {name}, so the backup cannot be checked whole before the "
            "restore: put it back, or give --without-manifest to restore after checking only its decryption and "
            "compression",
        )
    checked = check_decoding(path, layout, key, deadline)
    log.warning("restoring without a manifest: only decryption and compression were checked", file=name)
    return None, checked


def undone_by_any_failure(
    layout: Layout,
    manifest: Manifest,
    plain: str | None,
    pairs: dict[str, str],
    options: RestoreOptions,
    scrub: Scrubber,
) -> bool:
    """Whether a failure anywhere in the restore, a changed or damaged file included, leaves the server as it was,
    so that the restore's own read (held to the manifest before its commit) is check enough:
    - one PostgreSQL database: one transaction, or with `--replace` a new database that takes the name at the end;
    - one MySQL database that does not exist yet: the restore creates it and drops it again on any failure.
    A backup of several databases (each committed in turn), or a MySQL script into a database that exists (MySQL
    commits as it goes), is checked whole by a read of its own first."""
    if len(manifest.databases) != 1 or layout.kind not in (CUSTOM, SQL):
        return False
    if layout.kind == CUSTOM:
        return True
    source = manifest.databases[0]
    target = plain or pairs.get(source) or source
    if database_problem(target):
        return False  # refused with the name's problem by the restore itself
    return not admin.database_exists(Engine.MYSQL, options.connection, target, scrub)


def _refuse_mismatch(name: str, manifest: Manifest, owner: tuple[str, str] | None) -> None:
    refuse_foreign(name, manifest, owner)
    if manifest.file != name:
        raise RunnerError(Reason.VERIFY_FAILED, f"the manifest describes {manifest.file}, not {name}")


def refuse_foreign(name: str, manifest: Manifest | None, owner: tuple[str, str] | None) -> None:
    """`--owner`: a backup whose manifest names another owner (or none, or that has no manifest at all) is not the
    source's to restore: a DatabaseRestore restores its own DatabaseBackup's backups, whatever file it names."""
    if owner is None:
        return
    wanted = "/".join(owner)
    if manifest is None:
        raise RunnerError(Reason.FOREIGN_BACKUP, f"{name} has no manifest: nothing shows it is a backup of {wanted}")
    found = manifest.owner
    if found is None:
        raise RunnerError(
            Reason.FOREIGN_BACKUP, f"{name} names no owner in its manifest; the restore is for {wanted}'s"
        )
    if (found.namespace, found.name) != owner:
        raise RunnerError(
            Reason.FOREIGN_BACKUP,
            f"{name} is a backup of {found.namespace}/{found.name}, not of {wanted}: not restored",
        )


class _Restore:
    def __init__(
        self,
        layout: Layout,
        manifest: Manifest | None,
        checked: Checked,
        source: Measured,
        options: RestoreOptions,
        scrub: Scrubber,
        deadline: Deadline,
        *,
        fresh_only: bool = False,
    ) -> None:
        self.layout = layout
        # Planned as a restore into a MySQL database that does not exist (`undone_by_any_failure`): one that
        # appeared since is not written into unchecked.
        self.fresh_only = fresh_only
        self.manifest = manifest
        self.checked = checked
        self.source = source  # what this restore reads, hashed on the way
        self.options = options
        self.connection = options.connection
        self.scrub = scrub
        self.deadline = deadline

    def everything(self, key: Keyring | None, plain: str | None, pairs: dict[str, str]) -> dict[str, str]:
        source = self.source
        if self.layout.kind in (TAR, SET):
            if plain is not None:
                raise RunnerError(Reason.INVALID_ARGUMENTS, "this backup holds several databases: use SOURCE=TARGET")
            listed = self.manifest.members if self.manifest is not None else None
            with closing(members(source, self.layout, key, listed, Reason.RESTORE_FAILED)) as parts:
                restored = self.several(parts, pairs)
            if self.checked.whole is not None:  # a tar, whose members were each held to their own digest on the way
                expect(source.name, source.digest(), self.checked.whole)
            return restored
        with open_payload(source, self.layout, key) as payload:
            if self.layout.kind == CUSTOM:
                return self.custom(payload, plain, pairs)
            return self.sql(payload, plain, pairs)

    def source_name(self) -> str | None:
        return self.manifest.databases[0] if self.manifest and len(self.manifest.databases) == 1 else None

    def custom(self, payload: Source, plain: str | None, pairs: dict[str, str]) -> dict[str, str]:
        source = self.source_name()
        target = plain or (pairs.get(source) if source else None) or source
        if target is None:
            raise RunnerError(Reason.INVALID_ARGUMENTS, "no manifest names the database: give --database TARGET")
        self.pg_archive(payload, target, self.check_whole_read)
        return {source or "?": target}

    def check_whole_read(self) -> None:
        """The file's bytes as this restore read them (to their end) are those the check read."""
        self.checked.expect(self.source.name, self.source.digest(), self.checked.whole)

    def held(self, part: Part) -> tuple[Source, Callable[[], None]]:
        """A member's stream, and the check it must pass before what it holds is committed: a set's member's stored
        bytes against the manifest's, a tar's member's decoded bytes against those the check read."""
        what = f"{self.source.name}/{part.name}"
        checked = self.checked.members.get(part.name)
        if self.layout.kind == SET:
            return part.stream, partial(_expect_member, what, self.source, part.name, checked)
        stream = Hashing(part.stream)
        return stream, partial(_expect_read, what, stream, checked)

    def several(self, parts: Iterator[Part], pairs: dict[str, str]) -> dict[str, str]:
        """A tar's or a set's databases (and globals), in the order stored."""
        restored: dict[str, str] = {}
        if self.manifest is not None:  # every target checked before the first database is restored
            chosen = [d for d in self.manifest.databases if not pairs or d in pairs]
            self.refuse_existing(Engine.POSTGRESQL, [pairs.get(d, d) for d in chosen])
        for part in parts:
            stream, check = self.held(part)
            if part.database is None:
                if not pairs:
                    self.pg_globals(stream, check)
                continue
            if pairs and part.database not in pairs:
                continue
            target = pairs.get(part.database, part.database)
            self.pg_archive(stream, target, check)
            restored[part.database] = target
        unknown = sorted(set(pairs) - set(restored))
        if unknown:
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"the backup has no database {unknown}")
        return restored

    @cached_property
    def pg_server_version(self) -> int:
        return admin.pg_server_version(self.connection, self.scrub)

    def refuse_existing(self, engine: Engine, targets: list[str]) -> tuple[set[str], set[str]]:
        return refuse_existing(engine, self.connection, targets, self.scrub, replace=self.options.replace)

    def pg_archive(self, stream: Source, target: str, check: Callable[[], None]) -> None:
        """One database, all or nothing; `check` decides last whether its COMMIT is sent."""
        server_version = self.pg_server_version  # asked once, before anything is created
        existing, full = self.refuse_existing(Engine.POSTGRESQL, [target])
        replacing = bool(full)
        # Replacing: into a new database first, which then takes the target's name (admin.pg_replace_database).
        into = f"{target[:40]}_dbb_new_{secrets.token_hex(4)}" if replacing else target
        created = replacing or not existing
        if created:
            admin.create_database(Engine.POSTGRESQL, self.connection, into, self.scrub)
        done = False
        try:
            with ScriptRestore(
                self.connection,
                into,
                server_version,
                self.scrub,
                self.deadline,
                no_owner=self.options.no_owner,
                before_commit=check,
            ) as script:
                feed_all(stream, [script], self.deadline)
            if replacing:
                admin.pg_replace_database(self.connection, into, target, self.scrub)
            done = True
        finally:
            if created and not done:
                # The restore was rolled back, or the swap not made: the server is left as it was.
                admin.drop_database(Engine.POSTGRESQL, self.connection, into, self.scrub)
        log.info("database restored", database=target, replaced=replacing)

    def pg_globals(self, stream: Source, check: Callable[[], None]) -> None:
        # No ON_ERROR_STOP: on a server that has some of the roles, their CREATE ROLE fails and the ALTER ROLE
        # that follows still applies the backed-up attributes. Not one transaction either: so the script is read
        # whole, and checked, before psql gets a byte of it.
        argv = engines.psql_argv(self.connection, "postgres", script=True)
        env = engines.child_env(Engine.POSTGRESQL, self.connection)
        whole = _read_small(stream, GLOBALS_LIMIT)
        check()
        script, kept = keep_own_role(whole, self.connection.user)
        if kept:
            log.info("kept the restoring role (the user this restore connects as) as it is")
        with Tool(argv, env, self.scrub, stdin="pipe", stdout=None, failure=Reason.RESTORE_FAILED) as tool:
            feed_all(io.BytesIO(script), [ToolFeed(tool, needs_all=True)], self.deadline)
            if tool.stderr():
                log.warning("globals restored with messages", messages=tool.stderr())
        log.info("globals restored")

    def sql(self, payload: Source, plain: str | None, pairs: dict[str, str]) -> dict[str, str]:
        peeked = _Peek(payload)
        several = len(self.manifest.databases) > 1 if self.manifest else _SECTION in peeked.head
        if several:
            if plain is not None:
                raise RunnerError(Reason.INVALID_ARGUMENTS, "this backup holds several databases: use SOURCE=TARGET")
            names = self.manifest.databases if self.manifest else sorted(pairs)
            mapping = {name: pairs.get(name, name) for name in names}
            existing, _ = self.refuse_existing(Engine.MYSQL, list(mapping.values()))
            # The script creates its databases itself (CREATE DATABASE IF NOT EXISTS).
            with self._dropped_on_failure(set(mapping.values()) - existing):
                self._mysql(engines.mysql_script_argv(self.connection), peeked, SqlRenamer(pairs))
                self._mysql_checked(existing)
            return mapping
        source = self.source_name()
        target = plain or (pairs.get(source) if source else None) or source
        if target is None:
            raise RunnerError(Reason.INVALID_ARGUMENTS, "no manifest names the database: give --database TARGET")
        existing = self.refuse_existing(Engine.MYSQL, [target])[0]
        if existing and self.fresh_only:
            raise RunnerError(
                Reason.RESTORE_FAILED,
                f"database {target!r} was created by someone else as the restore began: nothing "
                "was restored; run the restore again",
            )
        created = set() if existing else {target}
        with self._dropped_on_failure(created):
            if created:
                admin.create_database(Engine.MYSQL, self.connection, target, self.scrub)
            self._mysql(engines.mysql_script_argv(self.connection, target), peeked)
            self._mysql_checked(existing)
        return {source or "?": target}

    def _mysql_checked(self, existed: set[str]) -> None:
        """After the script ran (MySQL commits as it goes): were its bytes those checked? If not, the databases the
        restore created are dropped by the caller; those that existed keep what it wrote, which the failure says."""
        try:
            self.check_whole_read()
        except RunnerError as error:
            if not existed:
                raise
            names = ", ".join(repr(n) for n in sorted(existed))
            raise RunnerError(
                error.reason,
                f"{error.message}; a MySQL restore cannot be undone: what it wrote into {names}, which existed "
                "before, stays (restore a good backup there again)",
            ) from None

    @contextmanager
    def _dropped_on_failure(self, created: set[str]) -> Iterator[None]:
        """The databases this restore creates are dropped again if it fails: the server is left as it was."""
        try:
            yield
        except BaseException:
            for name in sorted(created):
                admin.drop_database(Engine.MYSQL, self.connection, name, self.scrub)
            raise

    def _mysql(self, argv: list[str], stream: Source, renamer: SqlRenamer | None = None) -> None:
        env = engines.child_env(Engine.MYSQL, self.connection)
        with Tool(argv, env, self.scrub, stdin="pipe", stdout=None, failure=Reason.RESTORE_FAILED) as tool:
            feed_all(stream, [ToolFeed(tool, needs_all=True, renamer=renamer)], self.deadline)


def _expect_member(what: str, source: Measured, name: str, checked: Digest | None) -> None:
    expect(what, source.member_digest(name), checked)


def _expect_read(what: str, stream: Hashing, checked: Digest | None) -> None:
    expect(what, stream.finish(), checked)


class _Peek:
    """A source whose first SNIFF_SIZE bytes can be looked at before they are read."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self.head = b""
        while len(self.head) < SNIFF_SIZE and (piece := source.read(SNIFF_SIZE - len(self.head))):
            self.head += piece
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        if self._offset < len(self.head):
            end = len(self.head) if size < 0 else self._offset + size
            piece = self.head[self._offset : end]
            self._offset += len(piece)
            return piece
        return self._source.read(size)


def _read_small(stream: Source, limit: int) -> bytes:
    data = bytearray()
    while chunk := stream.read(1 << 20):
        data += chunk
        if len(data) > limit:
            raise RunnerError(
                Reason.RESTORE_FAILED, f"globals.sql is larger than {limit >> 20} MiB: not a globals script"
            )
    return bytes(data)


def keep_own_role(script: bytes, user: str) -> tuple[bytes, bool]:
    """Drops the `ALTER ROLE <user> WITH ...` line of the role the restore connects as.

    pg_dumpall writes each role as `CREATE ROLE x;` then `ALTER ROLE x WITH ... PASSWORD '...';`. On another server
    (a disaster recovery, a restore test) the restoring role's ALTER would set its password to the source
    server's: the restore's own next connection then fails and leaves the server half restored. That one role keeps
    the password and attributes it has; every other role is restored as backed up."""
    quoted = '"' + user.replace('"', '""') + '"'
    names = {re.escape(user), re.escape(quoted)}
    pattern = re.compile(rb"^ALTER ROLE (?:" + "|".join(sorted(names)).encode() + rb") WITH [^\n]*\n?", re.MULTILINE)
    result, count = pattern.subn(b"", script)
    return result, count > 0
