"""The write path of a backup: stages in front of an output file that is published atomically.

    dump tool stdout ─▶ compressor ─▶ encryptor ─▶ OutputFile (sha256, size) ─▶ .<final>.partial
                                             seal(): fsync ─┤  (then the caller verifies and writes the manifest)
                     publish(): link to <final>, unlink the temporary ─┘  (and fsync the folder)

Each stage is a sink (`write(bytes)`, `close()` flushes its tail into the next); data flows in pieces of at most a
few MiB, so memory stays flat for any database size. The sha256 and size are those of the file as stored, which is
what `verify` and anyone with `sha256sum` can check.

Why a file with a final name is always complete: the data is written to `.<final>.partial` (created with O_EXCL),
flushed to disk with fsync, and only then linked to its final name; the link is atomic within a folder and fails if
the name exists, and the fsync of the folder makes it durable. A run that dies at any point leaves at most the
`.partial` file (and, between link and unlink, a complete file under both names). The writer holds
an exclusive flock on it for as long as it lives, so `remove_stale_temporaries` (run at the start of the next run)
deletes only files whose writer is gone, never the file of a run that is still going (concurrencyPolicy Allow).

Write-back runs along the way: every `SYNC_EVERY` bytes a background thread fdatasyncs the file, so the final
fsync has little left to flush and the run does not stall at the end on a large file's dirty pages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Self

import structlog

from runner import progress
from runner.errors import Reason, RunnerError
from runner.naming import stale_temporaries, temporary_name

__all__ = [
    "OutputFile",
    "fsync_folder",
    "publish_over",
    "remove_stale_temporaries",
    "write_all",
    "write_atomically",
]

log = structlog.get_logger("dbb-backup")

SYNC_EVERY: Final = 64 << 20
FILE_MODE: Final = 0o640


def write_all(fd: int, data: bytes | memoryview) -> None:
    """The one place output bytes reach the disk (the seam a test may fake to simulate a full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def storage_error(error: OSError, path: Path) -> RunnerError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunnerError(Reason.DISK_FULL, f"no space left writing {path}: {error.strerror}")
    return RunnerError(Reason.STORAGE_ERROR, f"cannot write {path}: {error.strerror}")


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _BackgroundSync:
    """fdatasync in a thread (it releases the GIL), at most one at a time; a missed round is simply skipped."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._thread: threading.Thread | None = None
        self.error: OSError | None = None

    def kick(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._sync, name="fdatasync", daemon=True)
            self._thread.start()

    def _sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as error:
            self.error = error

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


class OutputFile:
    """`.<final>.partial` in `folder`, hashed and counted as written; `publish` makes it `<final>`.

    Use as a context manager: leaving the block without `publish` removes the temporary file."""

    def __init__(self, folder: Path, final: str, *, writer: Callable[[int, bytes], None] = write_all) -> None:
        self.folder = folder
        self.final = folder / final
        self.temporary = folder / temporary_name(final)
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._writer = writer
        self._fd = -1
        self._unsynced = 0
        self._sync: _BackgroundSync | None = None
        self.sealed = False
        self.published = False

    def __enter__(self) -> Self:
        try:
            self._fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            raise RunnerError(Reason.STORAGE_ERROR, f"{self.temporary} exists: another run is writing it") from None
        except OSError as error:
            raise storage_error(error, self.temporary) from None
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._sync = _BackgroundSync(self._fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sync is not None:
            self._sync.join()
        if not self.published:
            with contextlib.suppress(FileNotFoundError):
                self.temporary.unlink()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def write(self, data: bytes) -> int:
        try:
            self._writer(self._fd, data)
        except OSError as error:
            raise storage_error(error, self.temporary) from None
        self.sha256.update(data)
        self.size += len(data)
        progress.advance(len(data))
        self._unsynced += len(data)
        if self._unsynced >= SYNC_EVERY and self._sync is not None:
            self._unsynced = 0
            self._sync.kick()
        return len(data)

    def close(self) -> None:
        """Nothing to flush: every write went to the file descriptor. (So that the file can end a stage chain.)"""

    def seal(self) -> None:
        """Everything written is on disk (fsync). The file keeps its temporary name, and its writer's lock, until
        `publish`: a backup is verified and its manifest written in between."""
        assert self._sync is not None
        if self.sealed:
            return
        try:
            self._sync.join()
            if self._sync.error is not None:
                raise self._sync.error
            os.fsync(self._fd)
        except OSError as error:
            raise storage_error(error, self.temporary) from None
        self.sealed = True

    def publish(self) -> None:
        """Seal, then give the file its final name and fsync the folder. The final name is taken with a hard link,
        which fails if the name exists (two runs that started in the same second): a published backup is never
        replaced, and there is no moment between a check and a rename for another run to slip into. The lock is
        held until the temporary name is gone."""
        self.seal()
        try:
            os.link(self.temporary, self.final, follow_symlinks=False)
        except FileExistsError:
            raise RunnerError(Reason.STORAGE_ERROR, f"{self.final} already exists") from None
        except OSError as error:
            raise storage_error(error, self.final) from None
        self.published = True
        try:
            self.temporary.unlink()
            fsync_folder(self.folder)
        except OSError as error:
            raise storage_error(error, self.final) from None


def publish_over(out: OutputFile) -> None:
    """Seal, then rename the file over its final name, whatever is there: for a file that is written whole again
    (an archive's open binlog as it grows; a binlog archived again after a run died before its index entry). The
    name holds the old file or the new one at every moment, never neither."""
    out.seal()
    try:
        out.temporary.rename(out.final)
    except OSError as error:
        raise storage_error(error, out.final) from None
    out.published = True
    try:
        fsync_folder(out.folder)
    except OSError as error:
        raise storage_error(error, out.final) from None


def remove_stale_temporaries(folder: Path, prefix: str, names: Iterable[str] | None = None) -> list[str]:
    """Deletes our temporary files for `prefix` whose writer is gone (no lock on them). Returns their names."""
    removed = []
    listing = [p.name for p in folder.iterdir()] if names is None else names
    for name in stale_temporaries(listing, prefix):
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue  # published or removed in the meantime
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.info("temporary file in use by a running backup, kept", file=name)
            continue
        try:
            # Still the same file at that name (not renamed and replaced while we waited for the lock)?
            if os.path.samestat(os.fstat(fd), path.lstat()):
                path.unlink()
                removed.append(name)
                log.info("removed the temporary file of an interrupted backup", file=name)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return removed


def write_atomically(folder: Path, name: str, data: bytes) -> Path:
    """A small file (the manifest) with the same guarantees as a backup: temporary name, fsync, rename."""
    with OutputFile(folder, name) as out:
        out.write(data)
        out.publish()
    return out.final
