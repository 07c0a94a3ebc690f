"""How a backup file is laid out, read from its extension, and the reading side's stage chain.

    file ─▶ Decryptor (if `.enc`) ─▶ decompressor (the outer `.gz`/`.zst`, if any) ─▶ payload

The payload is a pg_dump custom archive (`.dump`), a tar of them (`.tar`), or an SQL script (`.sql`). A set (`.set`,
only in a bucket) holds a tar's members as objects of their own, each one encrypted (`.enc`) on its own, and is
read member by member (`members`), in the order its manifest lists them. See `docs/backup-format.md` for the whole
format.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol
from urllib.parse import quote, unquote

from runner.compression import Compression, Source, decompressor
from runner.crypto import Decryptor, Keyring
from runner.engines import Engine
from runner.errors import Reason, RunnerError
from runner.manifest import Member
from runner.naming import ENCRYPTED_SUFFIX

__all__ = [
    "Layout",
    "LocalFile",
    "Part",
    "Stored",
    "member_name",
    "members",
    "open_payload",
    "parse_layout",
    "parse_member",
    "stored",
]

CUSTOM: Final = "custom"
TAR: Final = "tar"
SET: Final = "set"
SQL: Final = "sql"
GLOBALS_MEMBER: Final = "globals.sql"
DATABASES_FOLDER: Final = "databases/"
READ_SIZE: Final = 1 << 20


@dataclass(frozen=True)
class Layout:
    engine: Engine
    kind: str  # custom | tar | sql
    outer: Compression  # what we applied to the whole payload
    encrypted: bool


_BY_EXTENSION: Final = {
    ".dump": Layout(Engine.POSTGRESQL, CUSTOM, Compression.NONE, encrypted=False),
    ".dump.zst": Layout(Engine.POSTGRESQL, CUSTOM, Compression.ZSTD, encrypted=False),
    ".tar": Layout(Engine.POSTGRESQL, TAR, Compression.NONE, encrypted=False),
    ".set": Layout(Engine.POSTGRESQL, SET, Compression.NONE, encrypted=False),
    ".sql": Layout(Engine.MYSQL, SQL, Compression.NONE, encrypted=False),
    ".sql.gz": Layout(Engine.MYSQL, SQL, Compression.GZIP, encrypted=False),
    ".sql.zst": Layout(Engine.MYSQL, SQL, Compression.ZSTD, encrypted=False),
}


def extension(engine: Engine, kind: str, compression: Compression, *, encrypted: bool) -> str:
    if kind in (TAR, SET):
        ext = "." + kind
    elif kind == CUSTOM:
        ext = ".dump.zst" if compression is Compression.ZSTD else ".dump"
    else:
        ext = ".sql" + compression.suffix
    return ext + (ENCRYPTED_SUFFIX if encrypted else "")


def parse_layout(path: Path) -> Layout:
    name = path.name
    encrypted = name.endswith(ENCRYPTED_SUFFIX)
    base = name.removesuffix(ENCRYPTED_SUFFIX) if encrypted else name
    for ext in sorted(_BY_EXTENSION, key=len, reverse=True):
        if base.endswith(ext):
            found = _BY_EXTENSION[ext]
            return Layout(found.engine, found.kind, found.outer, encrypted)
    known = ", ".join(_BY_EXTENSION)
    raise RunnerError(Reason.INVALID_ARGUMENTS, f"{name}: not a backup file name (expected one of {known}, then .enc)")


def member_name(database: str | None, compression: Compression, *, sql: bool = False) -> str:
    """A tar member's name: `globals.sql[.gz|.zst]`, or `databases/<database>.dump[.zst]` with the database name
    percent-encoded (any byte that is not a letter, digit or `_.-`), so that every name is a plain file name."""
    if database is None:
        return GLOBALS_MEMBER + compression.suffix
    suffix = ".zst" if compression is Compression.ZSTD else ""
    return f"{DATABASES_FOLDER}{quote(database, safe='')}.dump{suffix}"


def parse_member(name: str) -> tuple[str | None, Compression]:
    """(database or None for globals, compression) of a tar member; RunnerError for a name we never write."""
    if name.startswith(GLOBALS_MEMBER):
        rest = name.removeprefix(GLOBALS_MEMBER)
        for compression in Compression:
            if rest == compression.suffix:
                return None, compression
    if name.startswith(DATABASES_FOLDER):
        base = name.removeprefix(DATABASES_FOLDER)
        if base.endswith(".dump.zst"):
            return unquote(base.removesuffix(".dump.zst")), Compression.ZSTD
        if base.endswith(".dump"):
            return unquote(base.removesuffix(".dump")), Compression.NONE
    raise RunnerError(Reason.VERIFY_FAILED, f"unexpected member {name!r} in the tar")


class Stored(Protocol):
    """A stored backup to read: a file, or an object in a bucket (objectstore.S3Object)."""

    @property
    def name(self) -> str:
        """The backup's file name, whose extension says its layout."""
        ...

    def open(self) -> AbstractContextManager[Source]:
        """Its bytes as stored, from the start."""
        ...

    def member(self, name: str) -> Stored:
        """A member of a set (`<set>/<name>`)."""
        ...


class _FileSource:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)


@dataclass(frozen=True)
class LocalFile:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @contextlib.contextmanager
    def open(self) -> Iterator[Source]:
        try:
            file = self.path.open("rb")
        except OSError as error:
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"cannot open {self.path}: {error.strerror}") from None
        with file:
            yield _FileSource(file)

    def member(self, name: str) -> LocalFile:
        return LocalFile(self.path / name)


def stored(where: Path | Stored) -> Stored:
    return LocalFile(where) if isinstance(where, Path) else where


@contextlib.contextmanager
def open_payload(where: Path | Stored, layout: Layout, key: Keyring | None) -> Iterator[Source]:
    """The decoded payload of a backup as a stream: decrypted and decompressed on the fly."""
    backup = stored(where)
    if layout.encrypted and key is None:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"{backup.name} is encrypted: give its key (--key-file, --key-dir)")
    with backup.open() as source:
        if layout.encrypted:
            assert key is not None
            source = Decryptor(key, source)
        yield decompressor(layout.outer, source)


@dataclass(frozen=True)
class Part:
    """One member of a tar or a set, as read."""

    name: str  # as the manifest lists it
    database: str | None  # None: globals.sql
    stream: Source  # decoded: decrypted and decompressed


def members(
    where: Path | Stored, layout: Layout, key: Keyring | None, listed: list[Member] | None, failure: Reason
) -> Generator[Part]:
    """Each member of a tar or a set, decoded, in the order stored: a tar as one stream, a set member by member in
    the order its manifest lists them (`listed`; a set without its manifest has no members anyone can name). A
    damaged tar raises RunnerError(`failure`). Read each part before taking the next; close the iterator
    (contextlib.closing) to release what is open when stopping early."""
    if layout.kind == TAR:
        yield from _tar_members(where, layout, key, failure)
        return
    backup = stored(where)
    if listed is None:
        raise RunnerError(failure, f"{backup.name}: a set is read through its manifest, which lists its members")
    for member in listed:
        database, compression = parse_member(member.name.removesuffix(ENCRYPTED_SUFFIX))
        inner = Layout(layout.engine, SQL if database is None else CUSTOM, compression, layout.encrypted)
        with open_payload(backup.member(member.name), inner, key) as stream:
            yield Part(member.name, database, stream)


def _tar_members(where: Path | Stored, layout: Layout, key: Keyring | None, failure: Reason) -> Generator[Part]:
    with open_payload(where, layout, key) as payload:
        try:
            with tarfile.open(fileobj=payload, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    database, compression = parse_member(member.name)
                    stream = tar.extractfile(member)
                    if stream is None:
                        raise RunnerError(failure, f"tar member {member.name} is not a file")
                    yield Part(member.name, database, decompressor(compression, _TarGuard(stream, failure)))
        except tarfile.TarError as error:
            raise RunnerError(failure, f"the tar is damaged: {error}") from None


class _TarGuard:
    """A tar member's stream whose damage (a tar cut short) reads as RunnerError, like the tar's own."""

    def __init__(self, stream: BinaryIO, failure: Reason) -> None:
        self._stream, self._failure = stream, failure

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except tarfile.TarError as error:
            raise RunnerError(self._failure, f"the tar is damaged: {error}") from None
