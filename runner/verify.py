"""`dbb-backup verify FILE`: is this backup what its manifest says, whole, and (with `--restore-test`) restorable?

1. Checksum: the file's size and sha256 against the manifest (one read of the file as stored).
2. Structure, in one streaming pass over the decoded payload (decrypting authenticates every chunk; decompressing
   checks the gzip trailer or the zstd frame end and checksum):
   - pg_dump archives go to `pg_restore --list` (the table of contents parses; its TABLE entries are counted) and
     to `pg_restore -f -`, which reads every data block (`--list` alone accepts an archive cut short after its table
     of contents) and whose script is read to count each table's rows (`feeds.RowCounter`), which a run records in
     the manifest.
   - SQL scripts must end with mysqldump's completion line (`-- Dump completed`), which it writes only after the
     last table; CREATE TABLE statements are counted per database, and each table's rows.
   - `globals.sql` must end with pg_dumpall's `-- PostgreSQL database cluster dump complete`.
   - a tar must hold exactly the members its manifest lists.
   - a set (in a bucket) is each member's size and sha256 against the manifest, then each member as above.
3. `--restore-test`: instead of `-f /dev/null`, each database is restored into a scratch database on the same server
   (`dbb_verify_<random>_<n>`) as `dbb-backup restore` restores it (one transaction, fitted to the server: see
   `pgscript`), its base tables are counted and compared with the dump's count, each table's rows with the
   manifest's `rows` (recorded when the backup was taken; without them, the restored counts become the report's),
   and the scratch
   database is dropped, also when anything fails. Globals (roles) are never applied by a test: they belong to the
   server, which a test must not change.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from runner import admin, engines, progress
from runner.checked import Checked, Digest, Hashing, Measured, expect
from runner.compression import Source
from runner.crypto import Keyring
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.feeds import Consumer, LineScanner, RowCounter, SqlRenamer, ToolFeed, feed_all
from runner.layout import CUSTOM, SET, TAR, Layout, Stored, members, open_payload, parse_layout, stored
from runner.manifest import Manifest, QueryResult, read_manifest, set_digest
from runner.pgscript import ScriptRestore
from runner.process import Deadline, Tool
from runner.queries import Credential, Query, record, require_credential

__all__ = ["VerifyReport", "check_decoding", "count_toc_tables", "verify_backup"]

if TYPE_CHECKING:
    from runner.querysession import Session

log = structlog.get_logger("dbb-backup")

READ_SIZE: Final = 1 << 20
MYSQL_MARKER: Final = b"-- Dump completed"
PG_GLOBALS_MARKER: Final = b"-- PostgreSQL database cluster dump complete"


@dataclass
class VerifyReport:
    file: str
    sha256: str
    size: int
    tables: dict[str, int] = field(default_factory=dict)  # per database, as the dump has them
    restore_tested: bool = False
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # per database and table, as the dump has them
    queries: int = 0  # the manifest's queries that a restore test ran again and found the same
    # What the structure's read found, in a read whose stored bytes matched the manifest: what a restore's own read
    # must find again (see `checked`).
    checked: Checked | None = None


def verify_backup(
    path: Path | Stored,
    key: Keyring | None,
    scrub: Scrubber,
    deadline: Deadline,
    *,
    restore_connection: Connection | None = None,
    manifest: Manifest | None = None,
    scratch_server: bool = False,
    query_role: Credential | None = None,
) -> VerifyReport:
    """Checks a backup against its manifest: the one beside a file, or `manifest` for a file that is still under its
    temporary name (a run verifies its backup before publishing it) or an object in a bucket. `query_role`: who runs
    the manifest's queries in a scratch database on the database's own server (QUERY_USER)."""
    if manifest is None:
        if not isinstance(path, Path):
            raise ValueError("a stored object is verified against the manifest its caller read")
        manifest = read_manifest(path)
        if manifest.file != path.name:
            raise RunnerError(Reason.VERIFY_FAILED, f"the manifest describes {manifest.file}, not {path.name}")
    if restore_connection is not None and not scratch_server and manifest.queries:
        require_credential(query_role, "the manifest's queries, run again on the restored copy,")
    layout = parse_layout(Path(manifest.file))
    with progress.phase("checksum", total=manifest.size, file=manifest.file):
        report = check_checksum(path, manifest)
    checker = _Checker(
        layout, manifest, scrub, deadline, restore_connection, scratch_server=scratch_server, query_role=query_role
    )
    with progress.phase("verify", total=manifest.size, file=manifest.file):
        report.tables = checker.run(path, key)
    report.restore_tested = restore_connection is not None
    report.rows = checker.rows
    report.queries = checker.queries
    report.checked = checker.checked
    log.info("backup verified", file=manifest.file, tables=report.tables, restore_tested=report.restore_tested)
    return report


def check_decoding(path: Path | Stored, layout: Layout, key: Keyring | None, deadline: Deadline) -> Checked:
    """What a file proves without its manifest: read to the end, every encrypted chunk's tag checks and the
    compression's own end and checksum are there (a `.dump` or `.tar` that is not compressed proves nothing here).
    A set has nothing to read without its manifest, which lists its members. What was read, for a restore to hold
    its own read to: the stored bytes, and each tar member's decoded bytes."""
    if layout.kind == SET:
        raise RunnerError(Reason.VERIFY_FAILED, f"{stored(path).name}: a set cannot be checked without its manifest")
    measured = Measured(stored(path))
    found: dict[str, Digest] = {}
    with progress.phase("verify", file=measured.name):
        return _decode_through(measured, layout, key, deadline, found)


def _decode_through(
    measured: Measured, layout: Layout, key: Keyring | None, deadline: Deadline, found: dict[str, Digest]
) -> Checked:
    if layout.kind == TAR:
        with closing(members(measured, layout, key, None, Reason.VERIFY_FAILED)) as parts:
            for part in parts:
                stream = Hashing(part.stream)
                _read_through(stream, deadline)
                found[part.name] = stream.finish()
    else:
        with open_payload(measured, layout, key) as payload:
            _read_through(payload, deadline)
    return Checked(measured.digest(), found)


def _read_through(source: Source, deadline: Deadline) -> None:
    while source.read(READ_SIZE):
        deadline.check()


def check_checksum(path: Path | Stored, manifest: Manifest) -> VerifyReport:
    if parse_layout(Path(manifest.file)).kind == SET:
        return _check_set_checksums(stored(path), manifest)
    size, sha256 = _measure(stored(path))
    if size != manifest.size:
        raise RunnerError(Reason.VERIFY_FAILED, f"{manifest.file} has {size} bytes, its manifest says {manifest.size}")
    if sha256 != manifest.sha256:
        raise RunnerError(Reason.VERIFY_FAILED, f"{manifest.file}: its sha256 {sha256} is not the manifest's")
    return VerifyReport(manifest.file, manifest.sha256, size)


def _check_set_checksums(backup: Stored, manifest: Manifest) -> VerifyReport:
    """Each member's size and sha256 against the manifest, and the set's own sha256 against its members'."""
    if set_digest(manifest.members) != manifest.sha256 or sum(m.size or 0 for m in manifest.members) != manifest.size:
        raise RunnerError(
            Reason.VERIFY_FAILED, f"{manifest.file}: its manifest's members do not add up to its sha256 and size"
        )
    for member in manifest.members:
        size, sha256 = _measure(backup.member(member.name))
        if size != member.size:
            raise RunnerError(
                Reason.VERIFY_FAILED, f"{manifest.file}/{member.name} has {size} bytes, its manifest says {member.size}"
            )
        if sha256 != member.sha256:
            raise RunnerError(
                Reason.VERIFY_FAILED, f"{manifest.file}/{member.name}: its sha256 {sha256} is not the manifest's"
            )
    return VerifyReport(manifest.file, manifest.sha256, manifest.size)


def _measure(backup: Stored) -> tuple[int, str]:
    """(size, sha256) of a stored backup, read once."""
    try:
        with backup.open() as source:
            digest = Hashing(source, stored=True).finish()
    except OSError as error:
        raise RunnerError(Reason.VERIFY_FAILED, f"cannot read {backup.name}: {error.strerror}") from None
    return digest.size, digest.sha256


def count_toc_tables(listing: str) -> int:
    """TABLE entries in `pg_restore --list` output (`214; 1259 16385 TABLE public t owner`), not TABLE DATA."""
    count = 0
    for line in listing.splitlines():
        fields = line.split()
        if not line.startswith(";") and len(fields) > 4 and fields[3] == "TABLE" and fields[4] != "DATA":
            count += 1
    return count


class _Counting:
    """Reads a tool's stdout (an SQL script) to its end in a thread of its own, counting each table's rows, while
    the stream is fed to its stdin: a tool whose output nobody read would block."""

    def __init__(self, tool: Tool) -> None:
        self.counter = RowCounter()
        self._tool = tool
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name=f"{tool.name}-rows", daemon=True)

    def __enter__(self) -> _Counting:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._tool.kill()  # only if it still runs: leaving early (a failure) must not leave the thread blocked
        self._thread.join()

    def _read(self) -> None:
        try:
            while data := self._tool.read(READ_SIZE):
                self.counter.feed(data)
            self.counter.finish()
        except (OSError, ValueError) as error:
            self._error = error

    def result(self) -> RowCounter:
        self._thread.join()
        if self._error is not None:
            raise RunnerError(Reason.VERIFY_FAILED, f"reading {self._tool.name}'s script failed: {self._error}")
        return self.counter


class _Checker:
    def __init__(
        self,
        layout: Layout,
        manifest: Manifest,
        scrub: Scrubber,
        deadline: Deadline,
        connection: Connection | None,
        *,
        scratch_server: bool = False,
        query_role: Credential | None = None,
    ) -> None:
        """`scratch_server`: `connection` is a throwaway server, not the backup's own: it has none of the roles the
        dump names as owners, so PostgreSQL restores without ownership and grants there, and its queries run as a
        throwaway role made there. Else they run as `query_role`."""
        self.scratch_server = scratch_server
        self.query_role = query_role
        self.layout = layout
        self.manifest = manifest
        self.scrub = scrub
        self.deadline = deadline
        self.connection = connection
        self.token = secrets.token_hex(4)
        self.rows: dict[str, dict[str, int]] = {}  # counted in the stream, or in a restored copy
        self.queries = 0  # compared in a restored copy
        self.tar_members: dict[str, Digest] = {}  # each tar member's decoded bytes, as this read found them
        self.checked: Checked | None = None

    def run(self, path: Path | Stored, key: Keyring | None) -> dict[str, int]:
        """The structure, in a read that is itself held to the manifest: the digests it records for a restore are
        worth only as much as the bytes they were taken from (the checksum's own read came before)."""
        measured = Measured(stored(path))
        if self.layout.kind in (TAR, SET):
            tables = self.check_members(measured, key)
        else:
            with open_payload(measured, self.layout, key) as payload:
                if self.layout.kind == CUSTOM:
                    database = self.manifest.databases[0]
                    tables = {database: self.check_archive(payload, database, 0)}
                else:
                    tables = self.check_sql(payload)
        self.checked = Checked.of(self.manifest, self.tar_members)
        if self.checked.whole is not None:
            expect(self.manifest.file, measured.digest(), self.checked.whole)
        for name, checked in self.checked.members.items() if self.layout.kind == SET else ():
            expect(f"{self.manifest.file}/{name}", measured.member_digest(name), checked)
        return tables

    def check_members(self, path: Measured, key: Keyring | None) -> dict[str, int]:
        tables: dict[str, int] = {}
        seen: list[str] = []
        with closing(members(path, self.layout, key, self.manifest.members, Reason.VERIFY_FAILED)) as parts:
            for index, part in enumerate(parts):
                # A tar's member is committed by a restore before the tar's end is read: its own digest is what
                # that restore is held to. A set's members are held to the manifest's.
                stream = Hashing(part.stream)
                if part.database is None:
                    self.check_globals(stream)
                else:
                    tables[part.database] = self.check_archive(stream, part.database, index)
                if self.layout.kind == TAR:
                    self.tar_members[part.name] = stream.finish()
                seen.append(part.name)
        expected = [m.name for m in self.manifest.members]
        if sorted(seen) != sorted(expected):
            raise RunnerError(
                Reason.VERIFY_FAILED, f"the {self.layout.kind} holds {seen}, its manifest lists {expected}"
            )
        return tables

    def check_archive(self, stream: Source, database: str, index: int) -> int:
        env = engines.child_env(Engine.POSTGRESQL, self.connection or Connection("", 0, ""))
        with ExitStack() as stack:
            # In memory (a table of contents is small): a restore Pod may have no writable /tmp at all.
            listing = stack.enter_context(os.fdopen(os.memfd_create("pg_restore-list", os.MFD_CLOEXEC), "w+b"))
            lister = stack.enter_context(
                Tool(
                    ["pg_restore", "--list"],
                    env,
                    self.scrub,
                    stdin="pipe",
                    stdout=listing,
                    failure=Reason.VERIFY_FAILED,
                )
            )
            scratch = None
            reader: Consumer
            if self.connection is not None:
                scratch = stack.enter_context(self.scratch_database(Engine.POSTGRESQL, index))
                # The same restore as `dbb-backup restore`: one transaction, fitted to the server.
                reader = stack.enter_context(
                    ScriptRestore(
                        self.connection,
                        scratch,
                        self.pg_server_version,
                        self.scrub,
                        self.deadline,
                        failure=Reason.VERIFY_FAILED,
                        no_owner=self.scratch_server,
                    )
                )
            else:
                # The script pg_restore would run, read to the end: every data block, and each table's rows.
                argv = ["pg_restore", "-f", "-"]
                tool = stack.enter_context(Tool(argv, env, self.scrub, stdin="pipe", failure=Reason.VERIFY_FAILED))
                reader = ToolFeed(tool, needs_all=True)
                counting = stack.enter_context(_Counting(tool))
            feed_all(stream, [ToolFeed(lister, needs_all=False), reader], self.deadline)
            listing.seek(0)
            expected = count_toc_tables(listing.read().decode("utf-8", errors="replace"))
            if scratch is not None:
                self.compare_tables(Engine.POSTGRESQL, database, scratch, expected)
                self.compare_rows(Engine.POSTGRESQL, database, scratch, None)
                self.compare_queries(database, scratch)
            else:
                self.rows[database] = counting.result().rows.get(None, {})
        return expected

    @cached_property
    def pg_server_version(self) -> int:
        assert self.connection is not None
        return admin.pg_server_version(self.connection, self.scrub)

    def check_globals(self, stream: Source) -> None:
        scanner = LineScanner()
        feed_all(stream, [scanner], self.deadline)
        if not scanner.last_line.startswith(PG_GLOBALS_MARKER):
            raise RunnerError(
                Reason.VERIFY_FAILED, "globals.sql is cut short (no pg_dumpall completion line at its end)"
            )

    def check_sql(self, payload: Source) -> dict[str, int]:
        databases = self.manifest.databases
        several = len(databases) > 1
        scanner, counter = LineScanner(), RowCounter()
        consumers: list[Consumer] = [scanner, counter]
        with ExitStack() as stack:
            scratches: dict[str, str] = {}
            if self.connection is not None:
                for index, database in enumerate(databases):
                    scratches[database] = stack.enter_context(self.scratch_database(Engine.MYSQL, index))
                argv = engines.mysql_script_argv(self.connection, None if several else scratches[databases[0]])
                env = engines.child_env(Engine.MYSQL, self.connection)
                client = stack.enter_context(
                    Tool(
                        argv,
                        env,
                        self.scrub,
                        stdin="pipe",
                        stdout=None,
                        failure=Reason.VERIFY_FAILED,
                    )
                )
                consumers.append(ToolFeed(client, needs_all=True, renamer=SqlRenamer(scratches) if several else None))
            feed_all(payload, consumers, self.deadline)
            if not scanner.last_line.startswith(MYSQL_MARKER):
                raise RunnerError(
                    Reason.VERIFY_FAILED, "the SQL dump is cut short (no '-- Dump completed' line at its end)"
                )
            tables = {databases[0] if db is None else db: n for db, n in scanner.tables.items() if db or not several}
            for database in databases:
                tables.setdefault(database, 0)
            for database in databases:
                self.rows[database] = counter.rows.get(None if not several else database, {})
            for database, scratch in scratches.items():
                self.compare_tables(Engine.MYSQL, database, scratch, tables[database])
                self.compare_rows(Engine.MYSQL, database, scratch, self.rows[database])
        return tables

    def compare_tables(self, engine: Engine, database: str, scratch: str, expected: int) -> None:
        assert self.connection is not None
        actual = admin.count_tables(engine, self.connection, scratch, self.scrub)
        if actual != expected:
            raise RunnerError(
                Reason.VERIFY_FAILED, f"restore test of {database!r}: {actual} tables restored, the dump has {expected}"
            )
        log.info("restore test passed", database=database, tables=actual)

    def compare_rows(self, engine: Engine, database: str, scratch: str, counted: dict[str, int] | None) -> None:
        """Each table's rows in the restored copy against the manifest's, recorded when the backup was taken, else
        against `counted` in the stream now. With neither (a PostgreSQL restore test of a backup whose manifest
        predates row counts, or the run's own test), the restored copy's counts become the backup's."""
        assert self.connection is not None
        actual = admin.count_rows(engine, self.connection, scratch, self.scrub)
        expected = self.manifest.rows.get(database) or counted
        if not expected:
            self.rows[database] = actual
            return
        for table, rows in sorted(expected.items()):
            if actual.get(table) != rows:
                found = "missing" if table not in actual else f"{actual[table]} rows"
                raise RunnerError(
                    Reason.VERIFY_FAILED,
                    f"restore test of {database!r}: table {table} is {found} after the restore; the backup holds "
                    f"{rows} rows",
                )
        self.rows[database] = expected
        log.info("restore test rows match", database=database, tables=len(expected), rows=sum(expected.values()))

    def compare_queries(self, database: str, scratch: str) -> None:
        """Each of the manifest's queries on `database`, run again on its restored copy, as a role that can only
        read (see `queries`): it must print the same."""
        assert self.connection is not None
        queries = [q for q in self.manifest.queries if q.database == database]
        if not queries:
            return
        from runner.querysession import Session, scratch_role  # psycopg: only for runs with queries

        with ExitStack() as stack:
            if self.scratch_server:
                version = self.pg_server_version
                role = stack.enter_context(scratch_role(self.connection, scratch, version, self.scrub, self.deadline))
            else:
                role = require_credential(self.query_role, "the manifest's queries")
            session = stack.enter_context(Session(role.on(self.connection), scratch, self.scrub, self.deadline))
            session.check_role()
            for recorded in queries:
                self.compare_query(session, database, recorded)

    def compare_query(self, session: Session, database: str, recorded: QueryResult) -> None:
        try:
            printed = session.query(Query(recorded.name, recorded.database, recorded.sql))
        except RunnerError as error:
            if error.reason != Reason.QUERY_FAILED:
                raise
            raise RunnerError(Reason.VERIFY_FAILED, f"restore test of {database!r}: {error.message}") from None
        again = record(Query(recorded.name, recorded.database, recorded.sql), printed)
        if again.sha256 != recorded.sha256:
            raise RunnerError(
                Reason.VERIFY_FAILED,
                f"restore test of {database!r}: query {recorded.name!r} gives {_described(again)} after the "
                f"restore; the backup recorded {_described(recorded)}",
            )
        self.queries += 1
        log.info("restore test query matches", database=database, query=recorded.name)

    @contextmanager
    def scratch_database(self, engine: Engine, index: int) -> Iterator[str]:
        assert self.connection is not None
        name = f"dbb_verify_{self.token}_{index}"
        admin.create_database(engine, self.connection, name, self.scrub)
        try:
            yield name
        finally:
            admin.drop_database(engine, self.connection, name, self.scrub)


def _described(result: QueryResult) -> str:
    """What a query printed, for a failure message, which a status shows: how many lines and its digest, never a
    value (the text the manifest may keep stays in the storage)."""
    lines = result.lines
    if lines is None and result.result is not None:
        lines = result.result.count("\n")  # a manifest from before `lines`
    count = "" if lines is None else f"{lines} line{'' if lines == 1 else 's'}, "
    return f"{count}sha256 {result.sha256[:12]}…"
