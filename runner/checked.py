"""Holding a read to the bytes that were checked: a restore commits only what its own read hashed and found equal
to what the check found.

A restore of several databases checks the whole backup first (its size and sha256 against the manifest, its
structure) and then reads it again to restore it. Whatever changed the stored bytes in between (a file swapped or
altered on the volume, an object replaced in the bucket) would be restored unchecked, so the restore hashes the very
bytes it reads and compares them before it commits each part. A restore that any failure undoes reads once, and
holds that read to the manifest alone (`Checked.manifest_only`):

| the restore reads | it hashes | and compares with | before |
|---|---|---|---|
| one file (`.dump`, `.sql…`) | the stored bytes | the manifest's `size`, `sha256` | the COMMIT (MySQL: see below) |
| a member of a set | its stored bytes | its `size`, `sha256` in the manifest | its COMMIT (globals: applying) |
| a member of a tar | its decoded bytes | the check's own read of it | its COMMIT (globals: applying) |
| a whole tar | the stored bytes | the manifest's `size`, `sha256` | the restore's end |

A MySQL restore cannot be one transaction: its bytes are compared at the end, and the databases it created are
dropped when they differ (with `--replace`, what it replaced stays replaced: the failure says so).

A tar's members are restored (and committed) one by one before the tar's end is read, so each member is held to
the digest the check computed for it, in a read whose own stored bytes matched the manifest (`Checked`). Without a
manifest (`--without-manifest`) the digests come from the check of the file's decoding instead.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from runner import progress
from runner.compression import Source
from runner.errors import Reason, RunnerError
from runner.layout import SET, Stored
from runner.manifest import Manifest

__all__ = ["Checked", "Digest", "Hashing", "Measured", "expect"]

READ_SIZE: Final = 1 << 20


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.size} bytes, sha256 {self.sha256[:12]}…"


class Hashing:
    """A source that counts and hashes every byte read through it."""

    def __init__(self, source: Source, *, stored: bool = False) -> None:
        """`stored`: the bytes as stored, which count as the progress of the read (runner.progress)."""
        self._source = source
        self._stored = stored
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._digest: Digest | None = None

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._sha256.update(data)
        self._size += len(data)
        if self._stored:
            progress.advance(len(data))
        return data

    def finish(self) -> Digest:
        """Reads what the reader above left (a decoder stops at its own end marker; what follows counts too), then
        the digest of everything. Once finished, the same digest again."""
        if self._digest is None:
            while self.read(READ_SIZE):
                pass
            self._digest = Digest(self._size, self._sha256.hexdigest())
        return self._digest


@dataclass
class Measured:
    """A stored backup (layout.Stored) whose bytes are hashed as they are read: the whole, through `open`, and each
    member of a set opened through `member`. A digest is final once its reading ended without an error."""

    backup: Stored
    _reading: Hashing | None = None
    _members: dict[str, Measured] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.backup.name

    @contextlib.contextmanager
    def open(self) -> Iterator[Source]:
        with self.backup.open() as source:
            self._reading = Hashing(source, stored=True)
            yield self._reading
            self._reading.finish()  # before the source closes: a reader that stopped early left the rest

    def member(self, name: str) -> Measured:
        found = self._members[name] = Measured(self.backup.member(name))
        return found

    def digest(self) -> Digest:
        """Of the last opening: what was read, and the rest of it if it is still open."""
        if self._reading is None:
            raise ValueError(f"{self.name} was never opened")
        return self._reading.finish()

    def member_digest(self, name: str) -> Digest:
        return self._members[name].digest()


@dataclass(frozen=True)
class Checked:
    """What the check of a backup found, that a later read must find again: the stored file's digest (None for a
    set, which is no object of its own) and each member's (a set's as stored, a tar's decoded)."""

    whole: Digest | None
    members: dict[str, Digest] = field(default_factory=dict)
    # True: the digests are the manifest's, and no read of this restore checked the bytes before (a restore that
    # any failure undoes reads once, see `restore.undone_by_any_failure`).
    manifest_only: bool = False

    @classmethod
    def of(
        cls, manifest: Manifest, tar_members: dict[str, Digest] | None = None, *, against_manifest: bool = False
    ) -> Checked:
        if manifest.layout == SET:
            members = {m.name: Digest(m.size or 0, m.sha256 or "") for m in manifest.members}
            return cls(None, members, manifest_only=against_manifest)
        return cls(Digest(manifest.size, manifest.sha256), dict(tar_members or {}), manifest_only=against_manifest)

    def expect(self, what: str, found: Digest, checked: Digest | None) -> None:
        expect(what, found, checked, manifest_only=self.manifest_only)


def expect(what: str, found: Digest, checked: Digest | None, *, manifest_only: bool = False) -> None:
    """VerifyFailed, naming `what`, when the bytes read are not the bytes that were checked (`manifest_only`: that
    its manifest describes)."""
    if checked is None:
        raise RunnerError(Reason.VERIFY_FAILED, f"{what} was not part of the backup as it was checked")
    if found == checked:
        return
    if manifest_only:
        raise RunnerError(
            Reason.VERIFY_FAILED, f"{what} is not the backup its manifest describes: read {found}, manifest {checked}"
        )
    raise RunnerError(Reason.VERIFY_FAILED, f"{what} changed after it was checked: read {found}, checked {checked}")
