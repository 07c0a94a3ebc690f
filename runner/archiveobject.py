"""The objects of an archive, binlog (`archive`, `pitr`) or WAL (`walarchive`, `pgpitr`) alike: a file as the server
wrote it, zstd-compressed (`….zst`), and with a key encrypted after compression as a backup is (`crypto`,
`….zst.enc`). Its entry records the object's name, its size and sha256 as stored, and the key's id and fingerprint,
so that a reader can name the key it needs without reading the object.

`seal` writes one; `unseal` reads one back into a file, decrypting with the keyring given, and holds the stored
bytes to the entry's sha256 and the file to its recorded size; `read_current` reads an open file's object again when
a running archiver replaced it meanwhile. `keys_for` is the refusal a reader gives before it touches anything when
the keys given do not hold the one an entry names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias, TypeVar

import zstandard

from runner.archivestore import ArchiveStore, Entry, Written
from runner.compression import Compression, Source, compressor
from runner.crypto import Decryptor, Encryptor, Key, Keyring
from runner.errors import Reason, RunnerError
from runner.naming import ENCRYPTED_SUFFIX

if TYPE_CHECKING:
    from runner.walarchive import WalEntry

__all__ = ["ZSTD", "Hashed", "Sealed", "keys_for", "names", "read_current", "seal", "unseal"]

ZSTD: Final = ".zst"
READ_SIZE: Final = 1 << 20
# How often an open file's entry is read again when a running archiver replaced its object while it was read.
REREADS: Final = 5


# An entry of either archive: what it records of its object (name, sha256 as stored, key id and fingerprint).
Sealed: TypeAlias = "Entry | WalEntry"
E = TypeVar("E", bound="Entry | WalEntry")
R = TypeVar("R")


def names(stem: str) -> tuple[str, str]:
    """The two names `stem`'s object may have, plain and encrypted: what replaces or removes it removes both, as a
    run with or without a key may have left either."""
    return stem + ZSTD, stem + ZSTD + ENCRYPTED_SUFFIX


def seal(store: ArchiveStore, stem: str, chunks: Iterable[bytes], key: Key | None) -> tuple[str, Written]:
    """`chunks` stored as `<stem>.zst` (`<stem>.zst.enc` with `key`), replacing it whole: (its name, what was
    written: the size and sha256 of the stored bytes)."""
    plain, sealed = names(stem)
    name = sealed if key is not None else plain
    with store.writing(name) as out:
        encryptor = Encryptor(key.secret, out) if key is not None else None
        # One thread: an archiver runs for ever beside the database; zstd workers each hold buffers.
        stage = compressor(Compression.ZSTD, encryptor if encryptor is not None else out, threads=0)
        for data in chunks:
            stage.write(data)
        stage.close()
        if encryptor is not None:
            encryptor.close()
    return name, out


def keys_for(entry: Sealed, keys: Keyring | None, what: str) -> Keyring:
    """The keys that decrypt `entry`'s object (`what`: "binlog", "WAL"), or a refusal that names the key it needs
    (by id, as its entry records it)."""
    named = f"key {entry.key_id!r}" if entry.key_id else "its key"
    if keys is None:
        message = f"archived {what} {entry.object} is encrypted: give {named} (--key-file, --key-dir)"
        raise RunnerError(Reason.INVALID_ARGUMENTS, message)
    if entry.key_fingerprint is not None and keys.by_fingerprint(entry.key_fingerprint) is None:
        held = ", ".join(repr(i) for i in keys.ids) or "none"
        raise RunnerError(
            Reason.DECRYPT_FAILED,
            f"archived {what} {entry.object} needs {named}, which is not among those given (ids: {held})",
        )
    return keys


class Hashed:
    """A source that hashes what is read through it."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        return data


def unseal(
    store: ArchiveStore,
    entry: Sealed,
    file: str,
    file_size: int,
    path: Path,
    keys: Keyring | None,
    what: str,
    *,
    append: bool = False,
) -> None:
    """`entry`'s object, decrypted and decompressed into `path` (`append`: after what it holds): `file_size` bytes
    of the server's `file`."""
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    before = path.stat().st_size if append else 0
    try:
        with store.open(entry.object) as stored, path.open("ab" if append else "wb") as out:
            hashed = Hashed(stored)
            plain: Source = hashed
            if entry.encrypted:
                plain = Decryptor(keys_for(entry, keys, what), hashed)
            while data := plain.read(READ_SIZE):
                out.write(decompressor.decompress(data))
            while hashed.read(READ_SIZE):  # what follows the end of the encrypted stream, held to the sha256 too
                pass
    except FileNotFoundError:
        raise RunnerError(Reason.ARCHIVE_GAP, f"the archive lists {file}, its {entry.object} is gone") from None
    except zstandard.ZstdError as error:
        raise RunnerError(Reason.VERIFY_FAILED, f"{entry.object} does not decompress: {error}") from None
    if hashed.digest.hexdigest() != entry.sha256:
        raise RunnerError(Reason.VERIFY_FAILED, f"{entry.object} is not what its entry says (sha256 differs)")
    size = path.stat().st_size - before
    if size != file_size:
        raise RunnerError(Reason.VERIFY_FAILED, f"{entry.object} holds {size} bytes, not {file_size}")


def read_current(entry: E, read: Callable[[E], R], reread: Callable[[E], E | None]) -> R:
    """`read(entry)`; an open file's `.partial` object may be replaced (it grew) or removed (it closed) by a running
    archiver between reading its entry and its data: then its current entry (`reread`) is read instead. The file it
    holds starts with the same bytes, so a replay or a recovery stops where it would have."""
    for _ in range(REREADS):
        try:
            return read(entry)
        except RunnerError:
            newer = reread(entry)
            if entry.closed or newer is None or newer == entry:
                raise
            entry = newer
    return read(entry)
