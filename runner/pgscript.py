"""Restoring a pg_dump archive as one transaction that any server from PostgreSQL 12 to the tools' own version takes:

    archive ─▶ pg_restore --single-transaction -f - ─▶ PreambleFilter ─▶ psql -v ON_ERROR_STOP=1 ─▶ database
               (stdin: `ScriptRestore.feed`)          (a thread pumps pg_restore's script into psql)

Why a script, not `pg_restore -d`: pg_restore opens every restore with SET statements for the settings of its own
version, whatever the server. The runner carries the newest client tools (pg_dump must be at least as new as every
server it dumps), and pg_restore 17 writes `SET transaction_timeout = 0;`, which PostgreSQL 12-16 reject.
PostgreSQL does not promise that a newer pg_dump's output loads into an older server (pg_dump documentation,
Notes: not even a dump taken from a server of that version; the script may need editing). As a script, the
restore can be edited: `PreambleFilter` leaves out exactly the settings the target server does not know
(`NEW_SETTINGS`, decided from its `server_version_num`), and nothing else.

All or nothing:
- pg_restore writes the script as one BEGIN ... COMMIT (see `engines.pg_restore_script_argv`); psql stops at the
  first error and the server rolls the transaction back.
- The script's last HELD_BACK bytes, which hold its COMMIT, reach psql only in `finish`: after the whole archive was
  read, decrypted and decompressed without an error, pg_restore succeeded, and the bytes read were found to be the
  bytes that were checked (`before_commit`, see `checked`).
  Whatever stops a restore earlier (a damaged file, `--timeout`, SIGTERM, even a killed runner, whose psql then
  reads the end of its input without a COMMIT) leaves the transaction uncommitted, and the server rolls it back.
- Not psql's own `--single-transaction`: psql commits when its input ends, whatever the input was.

Both tools are `process.Tool`s on the run's deadline and scrubber, so `--timeout`, SIGTERM (leaving the `with` block
kills both) and the failure reasons work as for any tool; the message is that of the tool that stopped first.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from typing import Final, Self

import structlog

from runner import engines
from runner.engines import Connection, Engine
from runner.errors import Reason, Scrubber
from runner.process import Deadline, Tool

__all__ = ["NEW_SETTINGS", "PreambleFilter", "ScriptRestore", "unknown_settings"]

log = structlog.get_logger("dbb-backup")

# Settings that pg_restore sets in every script's preamble and that older servers do not know, with the first
# server_version_num that knows each. Only settings whose SET may be left out belong here: each of these only
# switches off something (a timeout) that an older server does not have.
NEW_SETTINGS: Final = {
    b"transaction_timeout": 170000,  # PostgreSQL 17; pg_restore 17 writes `SET transaction_timeout = 0;`
}

READ_SIZE: Final = 1 << 20
# pg_restore writes its COMMIT within the script's last few hundred bytes (only the "dump complete" comment and
# `\unrestrict` follow it); holding back 64 KiB keeps it back with room to spare.
HELD_BACK: Final = 64 << 10
# Preamble lines are short (the longest, `\restrict <key>`, has under 100 bytes): a longer line is none.
LINE_LIMIT: Final = 64 << 10


def unknown_settings(server_version: int) -> frozenset[bytes]:
    return frozenset(name for name, since in NEW_SETTINGS.items() if server_version < since)


class PreambleFilter:
    """Drops the `SET <name> = <value>;` lines of `unknown` settings from the preamble of a pg_restore script.

    The preamble is the run of lines before the script's first object, where pg_restore sets up the session:
    blank lines, comments, `\\restrict`, `BEGIN;`, `SET ...;` and `SELECT pg_catalog.set_config(...);`. The first
    line of any other kind ends it, and from there every byte passes through untouched and unbuffered: no object,
    function body, string or COPY data (which comes only after the first object) is ever looked at. Only a whole
    line that is exactly a SET of an unknown setting is dropped. A line is held back only until its end arrives,
    and never beyond LINE_LIMIT."""

    _SET = re.compile(rb"SET ([a-z_][a-z0-9_]*) = [^;\n]+;")
    _PREAMBLE = re.compile(rb"|--[^\n]*|\\restrict [^\n]*|BEGIN;|SET [^\n]*;|SELECT pg_catalog\.set_config\([^\n]*\);")

    def __init__(self, unknown: frozenset[bytes]) -> None:
        self.unknown = unknown
        self.dropped: list[str] = []
        self._line = bytearray()
        self._passing = not unknown

    def feed(self, data: bytes) -> bytes:
        if self._passing:
            return data
        out: list[bytes] = []
        position = 0
        while position < len(data) and not self._passing:
            newline = data.find(b"\n", position)
            end = len(data) if newline < 0 else newline + 1
            self._line += data[position:end]
            position = end
            if newline >= 0:
                out.append(self._keep(bytes(self._line)))
                self._line.clear()
            elif len(self._line) > LINE_LIMIT:
                out.append(bytes(self._line))
                self._line.clear()
                self._passing = True
        out.append(data[position:])
        return b"".join(out)

    def flush(self) -> bytes:
        rest = self._keep(bytes(self._line)) if self._line else b""
        self._line.clear()
        return rest

    def _keep(self, line: bytes) -> bytes:
        text = line.removesuffix(b"\n")
        if (match := self._SET.fullmatch(text)) and match[1] in self.unknown:
            self.dropped.append(match[1].decode())
            return b""
        if not self._PREAMBLE.fullmatch(text):
            self._passing = True
        return line


class ScriptRestore:
    """Restores the archive fed through `feed` (a `feeds.Consumer`, for `feed_all`) into `database`.

    Use as a context manager: leaving the block kills both tools, so nothing is committed unless `finish` (called
    by `feed_all` once the whole archive was fed) got to the end."""

    def __init__(
        self,
        connection: Connection,
        database: str,
        server_version: int,
        scrub: Scrubber,
        deadline: Deadline,
        *,
        no_owner: bool = False,
        failure: Reason = Reason.RESTORE_FAILED,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """`before_commit`: the last word on the COMMIT, asked after the whole archive went through; if it raises,
        the COMMIT is never sent and the transaction rolls back (`checked`: the bytes read were those checked)."""
        self.filter = PreambleFilter(unknown_settings(server_version))
        self._before_commit = before_commit
        self._connection = connection
        self._database = database
        self._server_version = server_version
        self._scrub = scrub
        self._deadline = deadline
        self._no_owner = no_owner
        self._failure = failure
        self._open = True
        self._held = b""
        self._psql_stopped = False
        self._error: Exception | None = None
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        psql_env = engines.child_env(Engine.POSTGRESQL, self._connection)
        # pg_restore connects to nothing: it gets no password.
        script_env = engines.child_env(Engine.POSTGRESQL, replace(self._connection, password=""))
        with ExitStack() as stack:
            self._psql = stack.enter_context(
                Tool(
                    engines.psql_restore_argv(self._connection, self._database),
                    psql_env,
                    self._scrub,
                    stdin="pipe",
                    stdout=None,
                    deadline=self._deadline,
                    failure=self._failure,
                )
            )
            self._pg_restore = stack.enter_context(
                Tool(
                    engines.pg_restore_script_argv(no_owner=self._no_owner),
                    script_env,
                    self._scrub,
                    stdin="pipe",
                    stdout="pipe",
                    deadline=self._deadline,
                    failure=self._failure,
                )
            )
            self._pump_thread = threading.Thread(target=self._pump, name="pg_restore-psql", daemon=True)
            self._pump_thread.start()
            # Last in, so first out: both tools are killed and the pump has stopped before their pipes are closed.
            stack.callback(self._stop)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def needs_all(self) -> bool:
        return True

    @property
    def open(self) -> bool:
        return self._open

    def feed(self, data: bytes) -> None:
        if self._open:
            self._open = self._pg_restore.write(data)

    def finish(self) -> None:
        """The whole archive was fed: commit if pg_restore and psql got through it, else say why not."""
        self._pg_restore.close_stdin()
        self._pump_thread.join()
        if self._error is not None:
            raise self._error
        # The tool that stopped first says why. psql names the statement that failed (pg_restore then only met a
        # closed pipe); pg_restore says what is wrong with the archive (psql then only met the end of its input).
        if self._psql_stopped:
            self._psql.finish()
        self._pg_restore.finish()
        if self._before_commit is not None:
            self._before_commit()
        self._psql.write(self._held)  # the COMMIT: the archive was whole, and pg_restore got through it
        self._psql.finish()
        if self.filter.dropped:
            log.info(
                "left out settings the server does not know",
                settings=self.filter.dropped,
                server_version=self._server_version,
            )

    def _pump(self) -> None:
        """pg_restore's script, filtered, into psql; the last HELD_BACK bytes are kept for `finish`."""
        held = b""
        try:
            while data := self._pg_restore.read(READ_SIZE):
                script = held + self.filter.feed(data)
                send, held = script[:-HELD_BACK], script[-HELD_BACK:]
                if send and not self._psql.write(send):
                    self._psql_stopped = True
                    return
            self._held = held + self.filter.flush()
        except Exception as error:  # raised again by `finish`, in the main thread
            self._error = error
        finally:
            if self._psql_stopped or self._error is not None:
                # Nobody reads its script any more: it must end, not block (and the feed behind it).
                self._pg_restore.close_stdout()
                self._pg_restore.kill()

    def _stop(self) -> None:
        self._psql.kill()
        self._pg_restore.kill()
        self._pg_restore.close_stdin()  # the end of the archive, for whatever still reads it
        self._pump_thread.join()
