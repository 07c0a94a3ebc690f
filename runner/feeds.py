"""Consumers of a decoded backup stream, fed in one pass: tools' stdin, an SQL line scanner, a database renamer.

`feed_all` reads the stream once and hands every piece to each consumer, so a check and a restore (or two checks)
cost one read and one decryption of the file.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from runner.compression import Source
from runner.process import Deadline, Tool

__all__ = ["Consumer", "LineScanner", "RowCounter", "SqlRenamer", "ToolFeed", "feed_all"]

READ_SIZE: Final = 1 << 20
_LINE_HEAD: Final = 512  # of each line only its start is kept, so a 10 MB INSERT line costs no memory
_RENAME_LINE_LIMIT: Final = 64 << 10


class Consumer(Protocol):
    @property
    def needs_all(self) -> bool: ...
    @property
    def open(self) -> bool: ...
    def feed(self, data: bytes, /) -> None: ...
    def finish(self) -> None: ...


class SqlRenamer:
    """Rewrites the database names in the two statements by which a `mysqldump --databases` script creates and
    selects each database, at the start of a line as mysqldump writes them:

        CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` ...;     USE `shop`;

    Names not in `mapping` are left alone. Every other line passes through untouched and unbuffered: a line is held
    back only while its first bytes could still begin one of those statements (and never beyond 64 KiB)."""

    _PREFIXES: Final = (b"CREATE DATABASE ", b"USE `")
    _CREATE = re.compile(rb"(CREATE DATABASE (?:/\*!32312 IF NOT EXISTS\*/ )?)`((?:[^`]|``)+)`")
    _USE = re.compile(rb"USE `((?:[^`]|``)+)`")

    def __init__(self, mapping: dict[str, str]) -> None:
        self._mapping = {_quote(k): _quote(v) for k, v in mapping.items()}
        self._pending = bytearray()
        self._passing = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        position, size = 0, len(data)
        while position < size:
            if self._passing:
                newline = data.find(b"\n", position)
                end = size if newline < 0 else newline + 1
                out.append(data[position:end])
                position = end
                self._passing = newline < 0
                continue
            head = bytes(self._pending) + data[position : position + 16]
            if not self._could_rename(head):
                out.append(bytes(self._pending))
                self._pending.clear()
                self._passing = True
                continue
            newline = data.find(b"\n", position)
            end = size if newline < 0 else newline + 1
            self._pending += data[position:end]
            position = end
            if newline >= 0:
                out.append(self._rewrite(bytes(self._pending)))
                self._pending.clear()
            elif len(self._pending) > _RENAME_LINE_LIMIT:
                out.append(bytes(self._pending))
                self._pending.clear()
                self._passing = True
        return b"".join(out)

    def flush(self) -> bytes:
        rest = self._rewrite(bytes(self._pending))
        self._pending.clear()
        return rest

    def _could_rename(self, head: bytes) -> bool:
        return any(head[: len(p)] == p[: len(head)] for p in self._PREFIXES)

    def _rewrite(self, line: bytes) -> bytes:
        if match := self._CREATE.match(line):
            return match[1] + self._name(match[2]) + line[match.end() :]
        if match := self._USE.match(line):
            return b"USE " + self._name(match[1]) + line[match.end() :]
        return line

    def _name(self, quoted: bytes) -> bytes:
        return b"`" + self._mapping.get(quoted, quoted) + b"`"


def _quote(name: str) -> bytes:
    return name.encode("utf-8", errors="surrogateescape").replace(b"`", b"``")


class ToolFeed:
    """Feeds a tool's stdin, optionally through a renamer. `needs_all`: the tool must read the whole stream (a
    restore); else it may stop early (`pg_restore --list` stops after the table of contents)."""

    def __init__(self, tool: Tool, *, needs_all: bool, renamer: SqlRenamer | None = None) -> None:
        self.tool = tool
        self.renamer = renamer
        self._needs_all = needs_all
        self._open = True

    @property
    def needs_all(self) -> bool:
        return self._needs_all

    @property
    def open(self) -> bool:
        return self._open

    def feed(self, data: bytes) -> None:
        if self._open:
            out = self.renamer.feed(data) if self.renamer else data
            self._open = self.tool.write(out) if out else True

    def finish(self) -> None:
        if self._open and self.renamer is not None:
            self.tool.write(self.renamer.flush())
        self.tool.finish()


class LineScanner:
    """Looks at the start of every line of an SQL script: counts `CREATE TABLE` per `-- Current Database:` section
    (key None before the first section, which is all there is in a single-database dump) and remembers the last
    non-empty line, for the completion marker."""

    _CURRENT = re.compile(rb"-- Current Database: `((?:[^`]|``)*)`")

    def __init__(self) -> None:
        self.tables: dict[str | None, int] = {}
        self.last_line = b""
        self._head = bytearray()
        self._database: str | None = None

    @property
    def needs_all(self) -> bool:
        return False

    @property
    def open(self) -> bool:
        return True

    def feed(self, data: bytes) -> None:
        position = 0
        while position < len(data):
            newline = data.find(b"\n", position)
            end = len(data) if newline < 0 else newline
            room = _LINE_HEAD - len(self._head)
            if room > 0:
                self._head += data[position : min(end, position + room)]
            if newline < 0:
                return
            self._line(bytes(self._head))
            self._head.clear()
            position = newline + 1

    def finish(self) -> None:
        if self._head:
            self._line(bytes(self._head))
            self._head.clear()

    def _line(self, head: bytes) -> None:
        if head.strip() in (b"", b"--"):  # pg_dumpall frames its last comment in `--` lines
            return
        self.last_line = head
        if head.startswith(b"CREATE TABLE `"):
            self.tables[self._database] = self.tables.get(self._database, 0) + 1
        elif match := self._CURRENT.match(head):
            self._database = match[1].replace(b"``", b"`").decode("utf-8", errors="surrogateescape")
            self.tables.setdefault(self._database, 0)


class RowCounter:
    """Counts each table's rows in an SQL script as it streams by, per `-- Current Database:` section (key None
    before the first, which is all there is in a single-database script):
    - pg_restore's script: the lines of each `COPY <table> (...) FROM stdin;` block up to its `\\.` line (COPY's text
      format escapes newlines in values, so a line is a row);
    - mysqldump's: the tuples of each INSERT INTO `table` VALUES (...),(...); statement, counted after its quoted
      strings are taken out (the dump tools escape newlines and quotes in them, so a statement is one line, or with
      mariadb-dump 11 one line per tuple).
    Inside a COPY block only the end marker is looked for, so a long table costs a C-speed list search per chunk."""

    _INSERT = re.compile(rb"INSERT INTO `((?:[^`]|``)+)` VALUES ?")
    _QUOTED = re.compile(rb"'(?:[^'\\]|\\.)*'")

    def __init__(self) -> None:
        self.rows: dict[str | None, dict[str, int]] = {}
        self._rest = b""
        self._database: str | None = None
        self._copy: str | None = None
        self._insert: str | None = None  # the table of an INSERT that goes on over the next lines

    @property
    def needs_all(self) -> bool:
        return False

    @property
    def open(self) -> bool:
        return True

    def feed(self, data: bytes) -> None:
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        index, count = 0, len(lines)
        while index < count:
            if self._copy is not None:
                try:
                    end = lines.index(b"\\.", index)
                except ValueError:
                    end = count
                self._table(self._copy, end - index)
                if end < count:
                    self._copy = None
                index = end + 1
                continue
            self._line(lines[index])
            index += 1

    def finish(self) -> None:
        if self._rest:
            self.feed(b"\n")

    def _tuples(self, name: str, values: bytes) -> None:
        """The tuples of one line of an INSERT: all of them (mysqldump), or one per line after a bare `VALUES`
        (mariadb-dump 11). The statement ends with the line that ends with `;`."""
        values = self._QUOTED.sub(b"''", values).rstrip()
        if values.startswith(b"("):
            self._table(name, values.count(b"),(") + 1)
        if values.endswith(b";"):
            self._insert = None

    def _table(self, name: str, rows: int) -> None:
        tables = self.rows.setdefault(self._database, {})
        tables[name] = tables.get(name, 0) + rows

    def _line(self, line: bytes) -> None:
        if line.startswith(b"COPY ") and line.endswith(b" FROM stdin;"):
            head = line[5 : -len(b" FROM stdin;")]
            columns = head.find(b" (")
            self._copy = (head if columns < 0 else head[:columns]).decode("utf-8", errors="surrogateescape")
            self._table(self._copy, 0)
        elif self._insert is not None:
            self._tuples(self._insert, line)
        elif match := self._INSERT.match(line):
            name = match[1].replace(b"``", b"`").decode("utf-8", errors="surrogateescape")
            self._table(name, 0)
            self._insert = name
            self._tuples(name, line[match.end() :])
        elif line.startswith(b"-- Current Database: `"):
            self._database = line[22:].rstrip(b"`").replace(b"``", b"`").decode("utf-8", errors="surrogateescape")
            self.rows.setdefault(self._database, {})


def feed_all(source: Source, consumers: list[Consumer], deadline: Deadline) -> None:
    """Reads `source` to its end (or until every consumer that needs all of it has stopped: its `finish` then says
    why) and finishes every consumer."""
    required = [c for c in consumers if c.needs_all]
    while data := source.read(READ_SIZE):
        for consumer in consumers:
            consumer.feed(data)
        deadline.check()
        if required and not any(c.open for c in required):
            break
    for consumer in consumers:
        consumer.finish()
