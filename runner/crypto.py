"""AES-256-GCM in authenticated chunks: the encryption layer of a backup file (format version 1).

Why chunks: one GCM message over a whole backup would have to be held in memory (or released unauthenticated) before
its tag could be checked. Here every chunk carries its own tag, so a reader streams and never hands out a byte it
has not authenticated, and memory stays at one chunk. The chunking is the STREAM construction (Hoang, Reyhanitabar,
Rogaway, Vizár 2015), as age and Tink's streaming AEAD use it: each chunk's nonce holds its index and a "last chunk"
flag, so chunks cannot be reordered, dropped, duplicated, and the file cannot be cut short at a chunk boundary or
extended, without a tag failing.

File layout (all integers big-endian):

    offset  size  field
    0       6     magic "DBBENC"
    6       1     format version, 1
    7       1     algorithm, 1 = HKDF-SHA256 + AES-256-GCM
    8       4     chunk size C: plaintext bytes in every chunk but the last (1 KiB .. 16 MiB; we write 1 MiB)
    12      32    salt: random, new for every file
    44      16    key check: HKDF-SHA256(key, salt, info "dbb-backup v1 key check"), first 16 bytes
    60      ...   chunks: AES-256-GCM(chunk key, nonce, plaintext, associated data = the 60 header bytes)
                  each is ciphertext (C bytes, the last 0..C) followed by its 16-byte tag

    chunk key = HKDF-SHA256(key, salt, info "dbb-backup v1 chunk key"), 32 bytes
    nonce     = chunk index (11 bytes) || 0x01 for the last chunk, else 0x00

The key in the key file is 32 bytes (raw, 64 hex digits, or base64); it is never used directly. A fresh salt gives
every file its own chunk key, which is why a counter nonce is safe: no (key, nonce) pair ever repeats. The key
check lets a reader tell "wrong key" from "damaged file" before touching a chunk; it reveals nothing about the key
(it is an HKDF output). The header is the associated data of every chunk, so changing a header byte fails every tag.

Keys have ids, so that they can rotate: a reader holds every key it may need (`Keyring`, from `--key-dir`: one file
per key, named by its id, as a Secret volume lays out the Secret's entries) and picks the one whose key check
matches the file's header, so a file names its key without naming it; a writer encrypts with the one current key.
A manifest records the id and the fingerprint of the key (`fingerprint`, an HKDF output of the key, safe to
show) so that verification can tell which stored backup needs which key without reading it.

A file whose plaintext is empty still has one (empty, last) chunk. A reader knows a chunk is the last when the file
ends right after it; a writer holds back a full chunk until it knows more follows, so the last chunk may be full.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runner.errors import Reason, RunnerError

_log = structlog.get_logger("dbb-backup")

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "Decryptor",
    "Encryptor",
    "Key",
    "Keyring",
    "fingerprint",
    "is_encrypted",
    "load_key",
    "load_keyring",
]

MAGIC: Final = b"DBBENC"
VERSION: Final = 1
ALGORITHM: Final = 1
KEY_SIZE: Final = 32
SALT_SIZE: Final = 32
CHECK_SIZE: Final = 16
TAG_SIZE: Final = 16
DEFAULT_CHUNK_SIZE: Final = 1 << 20
MIN_CHUNK_SIZE: Final = 1 << 10
MAX_CHUNK_SIZE: Final = 16 << 20
_HEADER: Final = struct.Struct(f">6sBBI{SALT_SIZE}s{CHECK_SIZE}s")
HEADER_SIZE: Final = _HEADER.size  # 60


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Key:
    """A key and its id (the name of its file: the Secret's entry). `fingerprint` names it publicly."""

    id: str
    secret: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.secret)

    def __repr__(self) -> str:
        return f"Key(id={self.id!r}, fingerprint={self.fingerprint!r})"


@dataclass(frozen=True)
class Keyring:
    """The keys a reader may decrypt with. Which one a file needs is found by its header's key check."""

    keys: tuple[Key, ...]

    @classmethod
    def of(cls, *keys: Key | None) -> Keyring:
        unique: dict[bytes, Key] = {}
        for key in keys:
            if key is not None:
                unique.setdefault(key.secret, key)
        return cls(tuple(unique.values()))

    @property
    def ids(self) -> list[str]:
        return sorted(k.id for k in self.keys)

    def by_fingerprint(self, wanted: str) -> Key | None:
        return next((k for k in self.keys if hmac.compare_digest(k.fingerprint, wanted)), None)

    def for_header(self, header: bytes) -> Key | None:
        """The key whose check matches this encrypted file's header (its first HEADER_SIZE bytes)."""
        if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
            return None
        *_, salt, check = _HEADER.unpack(header[:HEADER_SIZE])
        return next((k for k in self.keys if hmac.compare_digest(check, _key_check(k.secret, salt))), None)


def fingerprint(key: bytes) -> str:
    """A name for a key that reveals nothing of it: 8 bytes of HKDF-SHA256 (no salt), in hex."""
    return _derive(key, b"", b"dbb-backup key fingerprint")[:8].hex()


def load_keyring(files: Iterable[Path] = (), folder: Path | None = None) -> Keyring:
    """Every key of `files` and of `folder` (each file in it a key named by the file's name; names starting with a
    two dots are a Secret volume's own bookkeeping). A file in `folder` that holds no key is left out with a warning:
    a Secret may hold other entries, and a backup that needed it is reported by verification as needing a key that
    is not there."""
    keys = [load_key(path) for path in files]
    if folder is not None:
        try:
            entries = sorted(p for p in folder.iterdir() if not p.name.startswith(".."))
        except OSError as error:
            raise RunnerError(
                Reason.INVALID_ARGUMENTS, f"cannot read the key folder {folder}: {error.strerror}"
            ) from None
        for path in entries:
            if path.is_dir():
                continue
            try:
                keys.append(load_key(path))
            except RunnerError as error:
                _log.warning("not a key, left out", key_id=path.name, problem=error.message)
    return Keyring.of(*keys)


def load_key(path: Path) -> Key:
    """The 32-byte key from a key file: raw bytes, 64 hex digits or base64 (surrounding whitespace ignored, as a
    Secret written with `echo` ends in a newline), with the file's name as its id. The message never quotes the
    file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS, f"there is no key {path.name!r} (no key file {path}): is it in the Secret?"
        ) from None
    except OSError as error:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"cannot read the key file {path}: {error.strerror}") from None
    return Key(path.name, _parse_key(path, data))


def _parse_key(path: Path, data: bytes) -> bytes:
    if len(data) == KEY_SIZE:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == KEY_SIZE:
        return decoded
    raise RunnerError(
        Reason.INVALID_ARGUMENTS,
        f"the key file {path} must hold a 32-byte key: 32 raw bytes, 64 hex digits or base64 "
        f"(it holds {len(data)} bytes)",
    )


def is_encrypted(head: bytes) -> bool:
    return head.startswith(MAGIC)


def _derive(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(key)


def _key_check(key: bytes, salt: bytes) -> bytes:
    return _derive(key, salt, b"dbb-backup v1 key check")[:CHECK_SIZE]


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class Encryptor:
    """A sink stage: plaintext in through `write`, the encrypted file out to `sink`. `close` writes the last chunk
    (it does not close `sink`)."""

    def __init__(self, key: bytes, sink: Sink, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("the key must be 32 bytes")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} out of range")
        salt = os.urandom(SALT_SIZE)
        self._header = _HEADER.pack(MAGIC, VERSION, ALGORITHM, chunk_size, salt, _key_check(key, salt))
        self._aead = AESGCM(_derive(key, salt, b"dbb-backup v1 chunk key"))
        self._sink = sink
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._closed = False
        sink.write(self._header)

    def write(self, data: bytes) -> int:
        self._buffer += data
        # Strictly more than a chunk: the chunk we emit is then known not to be the last.
        while len(self._buffer) > self._chunk_size:
            self._emit(bytes(self._buffer[: self._chunk_size]), last=False)
            del self._buffer[: self._chunk_size]
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._emit(bytes(self._buffer), last=True)
            self._buffer.clear()

    def _emit(self, plaintext: bytes, *, last: bool) -> None:
        self._sink.write(self._aead.encrypt(_nonce(self._index, last), plaintext, self._header))
        self._index += 1


class Decryptor:
    """A source stage: reads an encrypted file from `source`, hands out only authenticated plaintext."""

    def __init__(self, keys: Keyring | bytes, source: Source) -> None:
        self._source = source
        header = _read_exactly(source, HEADER_SIZE)
        if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
            raise RunnerError(Reason.DECRYPT_FAILED, "not an encrypted backup (no DBBENC header)")
        _magic, version, algorithm, chunk_size, salt, _check = _HEADER.unpack(header)
        if version != VERSION or algorithm != ALGORITHM:
            raise RunnerError(
                Reason.DECRYPT_FAILED, f"unsupported encryption format {version}.{algorithm} (this is 1.1)"
            )
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise RunnerError(Reason.DECRYPT_FAILED, f"corrupt encryption header (chunk size {chunk_size})")
        ring = keys if isinstance(keys, Keyring) else Keyring((Key("key", keys),))
        found = ring.for_header(header)
        if found is None:
            held = ", ".join(repr(i) for i in ring.ids) or "none"
            raise RunnerError(
                Reason.DECRYPT_FAILED,
                f"wrong key: this backup was encrypted with a key that is not among those given (ids: {held})",
            )
        key = found.secret
        self._header = header
        self._aead = AESGCM(_derive(key, salt, b"dbb-backup v1 chunk key"))
        self._record = chunk_size + TAG_SIZE
        self._ahead = b""
        self._plain = b""
        self._offset = 0
        self._index = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        while self._offset >= len(self._plain) and not self._done:
            self._plain, self._offset = self._next_chunk(), 0
        piece = self._plain[self._offset : self._offset + size]
        self._offset += len(piece)
        return piece

    def _next_chunk(self) -> bytes:
        # One byte of lookahead tells whether this record is the last one.
        data = self._ahead + _read_exactly(self._source, self._record + 1 - len(self._ahead))
        last = len(data) <= self._record
        record, self._ahead = (data, b"") if last else (data[: self._record], data[self._record :])
        if len(record) < TAG_SIZE:
            raise RunnerError(Reason.DECRYPT_FAILED, "the encrypted file is cut short")
        try:
            plain = self._aead.decrypt(_nonce(self._index, last), record, self._header)
        except InvalidTag:
            problem = "is cut short or was altered" if last else "was altered"
            raise RunnerError(
                Reason.DECRYPT_FAILED, f"chunk {self._index} failed authentication: the file {problem}"
            ) from None
        self._index += 1
        self._done = last
        return plain


def _read_exactly(source: Source, size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end of the file (a pipe or a decompressor may return short reads)."""
    parts: list[bytes] = []
    missing = size
    while missing > 0:
        piece = source.read(missing)
        if not piece:
            break
        parts.append(piece)
        missing -= len(piece)
    return b"".join(parts)
