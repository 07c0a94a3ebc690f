"""Where a binlog archive lives (`archive.py` writes it, `pitr.py` reads it): a folder, or a prefix in a bucket,
behind one seam, `ArchiveStore`. Both hold the same names (`mysql-bin.000003.zst`, `mysql-bin.000003.json`, the
`.partial` pair of the open binlog) and the same index entries (`Entry`).

- `FolderArchive`: `<output-dir>/<name>-binlog/`. Each file goes through a temporary name, fsync and a rename over
  the old one (`stream.publish_over`). One archiver per folder: it holds `.lock` (flock), and starts by removing what
  a killed run left (its temporary files, its spool, which lives in the folder).
- `S3Archive`: `s3://bucket/<prefix>/<name>-binlog/`. An object is one multipart upload, which exists for no reader
  until it completes, and a PUT replaces an object whole (a reader gets the old one or the new one): the `.partial`
  entry is replaced in place as the open binlog grows (its pieces, `Piece`, are named by where they start). A
  bucket has no lock: one archiver per archive is the operator's to ensure (one Deployment per DatabaseBackup, one
  replica, strategy Recreate, so the old Pod is gone before the new one starts). A run starts by aborting the
  archive's incomplete uploads (a killed run's) and its own stale spools (local, under TMPDIR: the Pod's emptyDir
  survives a container restart).

Beside the entries, a gap record (`Gap`, `<binlog>.gap.json`) marks binlogs the server purged before the archiver
read them: the archiver resumed at `<binlog>` (see `archive.start_binlog`); no replay crosses it (`pitr`). A WAL archive
records its gaps the same way, with segment names (`walarchive`, `pgpitr`). And
`complete.json` (`Checkpoint`) says until when the archive held everything the server had written: a quiet server
writes no event, and without it the newest second a restore could name would stay that of the last write.

In both, the data object is complete before the entry that names it is written: an entry always describes a whole
object. A store that fails a write fails the run (`StorageError`); the next run resumes where the archive stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Final, Protocol

import structlog

from runner.errors import Reason, RunnerError
from runner.naming import ENCRYPTED_SUFFIX
from runner.objectstore import MultipartUpload, S3Location, abort_stale_uploads, check_bucket, error_code, list_keys
from runner.objectstore import storage_error as object_error
from runner.stream import OutputFile, publish_over, storage_error

__all__ = [
    "ArchiveStore",
    "Checkpoint",
    "Entry",
    "FolderArchive",
    "Gap",
    "Piece",
    "S3Archive",
    "Written",
    "archive_name",
    "binlog_key",
    "forget_pruned",
    "is_piece",
    "merge_gaps",
    "merge_index",
    "optional_string",
    "piece_stem",
    "read_checkpoint",
    "read_index",
    "recoverable_until",
    "stored",
]

log = structlog.get_logger("dbb-backup")

ENTRY: Final = ".json"
PARTIAL: Final = ".partial"
GAP: Final = ".gap.json"
PIECE: Final = re.compile(r"\.\d{12}\.zst(\.enc)?")  # after `<binlog>.partial`: a piece's object (`piece_stem`)
READ_SIZE: Final = 1 << 20


def archive_name(prefix: str) -> str:
    """The archive of the backups named `<prefix>-<UTC>…`: the folder or key prefix beside them."""
    return f"{prefix}-binlog"


def binlog_key(name: str) -> tuple[str, int]:
    """Binlogs in the server's order: `mysql-bin.000010` after `mysql-bin.000009`."""
    base, _, number = name.rpartition(".")
    return (base, int(number)) if number.isdigit() else (name, -1)


@dataclass(frozen=True)
class Piece:
    """A later piece of an open binlog's archive (`Entry.pieces`): its bytes from `start` on, up to the next piece's
    start (the last: up to the entry's `binlog_size`), stored as `object` (`piece_stem`), `size` and `sha256` as
    stored, with the entry's key."""

    object: str
    start: int
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.object, "start": self.start, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Any) -> Piece:
        if not isinstance(data, dict):
            raise TypeError("a piece is not an object")
        return cls(str(data["object"]), int(data["start"]), int(data["size"]), str(data["sha256"]))


def piece_stem(file: str, start: int) -> str:
    """The name (before `.zst[.enc]`) of the open binlog `file`'s piece from byte `start` on."""
    return f"{file}{PARTIAL}.{start:012d}"


def is_piece(file: str, name: str) -> bool:
    """Whether `name` is the object of a piece of `file`'s open binlog (`piece_stem`), of any run."""
    stem = file + PARTIAL
    return name.startswith(stem) and PIECE.fullmatch(name[len(stem) :]) is not None


@dataclass(frozen=True)
class Entry:
    file: str  # the server's binlog name
    object: str  # the archived file beside the entry (an open binlog's: its first piece, up to pieces[0].start)
    closed: bool
    first_event: str | None  # RFC 3339, UTC, whole seconds (the binlog's own resolution)
    last_event: str | None
    binlog_size: int  # bytes of the binlog it holds
    size: int  # of the object as stored
    sha256: str
    # An encrypted object's key (`.zst.enc`), as a manifest names it: its id and its fingerprint. None: not encrypted.
    key_id: str | None = None
    key_fingerprint: str | None = None
    # An open binlog's later pieces, in order (`Piece`): a run publishes what its binlog grew by, not the whole again.
    pieces: tuple[Piece, ...] = ()

    @property
    def encrypted(self) -> bool:
        return self.object.endswith(ENCRYPTED_SUFFIX)

    @property
    def object_size(self) -> int:
        """The binlog bytes `object` holds (the rest are in `pieces`)."""
        return self.pieces[0].start if self.pieces else self.binlog_size

    def piece_entries(self) -> Iterator[tuple[Entry, int]]:
        """(an entry of each stored object in turn, as one whole object's, and the binlog bytes it holds): the
        object, then each piece, for a reader that unseals them one after another."""
        ends = [piece.start for piece in self.pieces] + [self.binlog_size]
        yield replace(self, pieces=()), ends[0]
        for piece, end in zip(self.pieces, ends[1:], strict=True):
            yield replace(self, object=piece.object, size=piece.size, sha256=piece.sha256, pieces=()), end - piece.start

    @property
    def stored_size(self) -> int:
        """The bytes of all its stored objects together."""
        return self.size + sum(piece.size for piece in self.pieces)

    def to_json(self) -> str:
        data: dict[str, object] = {
            "file": self.file,
            "object": self.object,
            "closed": self.closed,
            "firstEvent": self.first_event,
            "lastEvent": self.last_event,
            "binlogSize": self.binlog_size,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.key_id is not None or self.key_fingerprint is not None:
            data |= {"keyId": self.key_id, "keyFingerprint": self.key_fingerprint}
        if self.pieces:
            data["pieces"] = [piece.to_dict() for piece in self.pieces]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Entry:
        data = _object(text)
        try:
            return cls(
                str(data["file"]),
                str(data["object"]),
                data["closed"] is True,
                data.get("firstEvent"),
                data.get("lastEvent"),
                int(data["binlogSize"]),
                int(data["size"]),
                str(data["sha256"]),
                optional_string(data, "keyId"),
                optional_string(data, "keyFingerprint"),
                tuple(Piece.from_dict(piece) for piece in data.get("pieces") or ()),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not an archive entry: {error}") from None


@dataclass(frozen=True)
class Gap:
    """Binlogs `first_missing`..`last_missing` the server purged before the archiver read them, found at `found_at`
    (RFC 3339); the archive holds `after` (None: nothing closed) and resumed at `resumed_at`, the server's oldest
    binlog then. Stored as `<resumed_at>.gap.json`."""

    after: str | None
    first_missing: str
    last_missing: str
    resumed_at: str
    found_at: str

    @property
    def name(self) -> str:
        return self.resumed_at + GAP

    def to_json(self) -> str:
        data = {
            "after": self.after,
            "firstMissing": self.first_missing,
            "lastMissing": self.last_missing,
            "resumedAt": self.resumed_at,
            "foundAt": self.found_at,
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Gap:
        data = _object(text)
        try:
            return cls(
                optional_string(data, "after"),
                str(data["firstMissing"]),
                str(data["lastMissing"]),
                str(data["resumedAt"]),
                str(data["foundAt"]),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a gap record: {error}") from None

    def covers(self, binlog: str) -> bool:
        """Whether `binlog` is one of the missing ones."""
        return binlog_key(self.first_missing) <= binlog_key(binlog) <= binlog_key(self.last_missing)


CHECKPOINT: Final = "complete.json"


@dataclass(frozen=True)
class Checkpoint:
    """At `at` (RFC 3339, whole seconds, taken before asking) the server wrote its binlog at `position` of `binlog`,
    and the archive then held that binlog up to there: every event the server had written was archived."""

    binlog: str
    position: int
    at: str

    def to_json(self) -> str:
        return json.dumps({"binlog": self.binlog, "position": self.position, "at": self.at}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        data = _object(text)
        try:
            return cls(str(data["binlog"]), int(data["position"]), str(data["at"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a checkpoint: {error}") from None


def read_checkpoint(store: ArchiveStore) -> Checkpoint | None:
    """The archive's checkpoint; None when there is none (or it is unreadable: it only ever extends the reach)."""
    try:
        with store.open(CHECKPOINT) as source:
            return Checkpoint.from_json(source.read(64 << 10).decode("utf-8", errors="replace"))
    except (FileNotFoundError, ValueError):
        return None


def stored(store: ArchiveStore, name: str) -> bool:
    """Whether the archive holds `name` (a file that is gone: pruned by a run's retention)."""
    try:
        with store.open(name):
            return True
    except FileNotFoundError:
        return False


def forget_pruned(
    store: ArchiveStore, index: dict[str, Any], gaps: list[Gap], *, closed: Callable[[str], bool]
) -> None:
    """Drops from a running archiver's view (in place) the oldest entries and gap records a run's retention deleted
    from `store`, so that /status's bounds and `gapAt` follow the archive: one read per check while nothing was
    pruned. `index`: {file: its entry}, oldest first; `closed(file)`: whether its entry is a closed one's."""
    while len(index) > 1:
        oldest = next(iter(index))
        if stored(store, oldest + ("" if closed(oldest) else PARTIAL) + ENTRY):
            break
        del index[oldest]
    while gaps and not stored(store, gaps[0].name):
        del gaps[0]


def recoverable_until(index: dict[str, Entry], checkpoint: Checkpoint | None) -> str | None:
    """The newest second the archive reaches: its newest event, or a later checkpoint's time when the checkpoint is
    on the newest binlog and the archive holds that binlog up to the checkpoint's position (nothing was written
    after the newest event until then)."""
    newest = next(reversed(index.values()), None)
    lasts = [e.last_event for e in index.values() if e.last_event]
    until = lasts[-1] if lasts else None
    if (
        checkpoint is not None
        and newest is not None
        and until is not None
        and checkpoint.binlog == newest.file
        and newest.binlog_size >= checkpoint.position
        and checkpoint.at > until  # RFC 3339 in UTC to the second: text order is time order
    ):
        return checkpoint.at
    return until


def merge_gaps(texts: Iterable[str]) -> list[Gap]:
    """The gap records, oldest first (by the binlog each resumed at); unreadable ones left out."""
    gaps = []
    for text in texts:
        with contextlib.suppress(ValueError):
            gaps.append(Gap.from_json(text))
    return sorted(gaps, key=lambda gap: binlog_key(gap.resumed_at))


def _object(text: str) -> dict[str, Any]:
    """A JSON object's members; ValueError for any other JSON (or none)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def optional_string(data: dict[str, object], name: str) -> str | None:
    """An entry's optional text member (a key id, a fingerprint): None when absent."""
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value


def merge_index(texts: Iterable[str]) -> dict[str, Entry]:
    """{binlog: its entry}, in the server's order, from the entries' JSON texts: a closed binlog's entry, else its
    partial one. Unreadable entries (none are written so) are left out."""
    entries: dict[str, Entry] = {}
    for text in texts:
        try:
            entry = Entry.from_json(text)
        except ValueError:
            continue
        if entry.file not in entries or entry.closed:
            entries[entry.file] = entry
    return dict(sorted(entries.items(), key=lambda item: binlog_key(item[0])))


def read_index(folder: Path) -> dict[str, Entry]:
    """The index of an archive folder (`merge_index`)."""
    return FolderArchive(folder).index()


class Written(Protocol):
    """An object being written: what went in, counted and hashed."""

    size: int
    sha256: Any  # hashlib's

    def write(self, data: bytes, /) -> object: ...


class ArchiveStore(Protocol):
    @property
    def where(self) -> str: ...

    def index(self) -> dict[str, Entry]: ...

    def gaps(self) -> list[Gap]: ...

    def claim(self) -> contextlib.AbstractContextManager[Path]:
        """This run's hold on the archive: what killed runs left is removed; yields a fresh local spool folder."""
        ...

    def writing(self, name: str) -> contextlib.AbstractContextManager[Written]:
        """`name`, replaced whole by what the block writes once the block ends without an error."""
        ...

    def put(self, name: str, data: bytes) -> None: ...

    def remove(self, name: str) -> None: ...

    def names(self, prefix: str) -> list[str]:
        """The names in the archive that start with `prefix`."""
        ...

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """Reads `name`; FileNotFoundError if there is none."""
        ...


@dataclass(frozen=True)
class FolderArchive:
    folder: Path

    @property
    def where(self) -> str:
        return str(self.folder)

    def index(self) -> dict[str, Entry]:
        if not self.folder.is_dir():
            return {}
        return merge_index(self._texts(lambda name: not name.endswith(GAP)))

    def gaps(self) -> list[Gap]:
        return merge_gaps(self._texts(lambda name: name.endswith(GAP)))

    def _texts(self, wanted: Callable[[str], bool]) -> list[str]:
        if not self.folder.is_dir():
            return []
        texts = []
        for path in self.folder.glob(f"*{ENTRY}"):
            if not path.name.startswith(".") and wanted(path.name):
                with contextlib.suppress(OSError):
                    texts.append(path.read_text(encoding="utf-8"))
        return texts

    @contextlib.contextmanager
    def claim(self) -> Iterator[Path]:
        try:
            self.folder.mkdir(mode=0o750, parents=True, exist_ok=True)
            lock = (self.folder / ".lock").open("ab")
        except OSError as error:
            raise storage_error(error, self.folder) from None
        with lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunnerError(Reason.STORAGE_ERROR, f"another archiver is writing {self.folder}") from None
            self._remove_leftovers()
            spool = Path(tempfile.mkdtemp(prefix=".spool-", dir=self.folder))
            try:
                yield spool
            finally:
                shutil.rmtree(spool, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """What a killed run left: its temporary files and its spool (no other run writes here: we hold the lock)."""
        for path in self.folder.iterdir():
            if path.name.startswith(".spool-") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(".") and path.name.endswith(PARTIAL):
                path.unlink(missing_ok=True)
                log.info("removed the temporary file of an interrupted archiver", file=path.name)

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Written]:
        with OutputFile(self.folder, name) as out:
            yield out
            publish_over(out)

    def put(self, name: str, data: bytes) -> None:
        with self.writing(name) as out:
            out.write(data)

    def remove(self, name: str) -> None:
        try:
            (self.folder / name).unlink(missing_ok=True)
        except OSError as error:
            raise storage_error(error, self.folder / name) from None

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return (self.folder / name).open("rb")

    def names(self, prefix: str) -> list[str]:
        return sorted(path.name for path in self.folder.glob(f"{glob.escape(prefix)}*")) if self.folder.is_dir() else []


@dataclass(frozen=True)
class S3Archive:
    client: Any
    location: S3Location  # the archive's own prefix: `<prefix>/<name>-binlog`
    object_arguments: dict[str, str] = field(default_factory=dict)  # server-side encryption of what it writes

    @property
    def where(self) -> str:
        return f"s3://{self.location.bucket}/{self.location.prefix}"

    def _key(self, name: str) -> str:
        return self.location.key(name)

    def index(self) -> dict[str, Entry]:
        return merge_index(self._texts(lambda name: not name.endswith(GAP)))

    def gaps(self) -> list[Gap]:
        return merge_gaps(self._texts(lambda name: name.endswith(GAP)))

    def _texts(self, wanted: Callable[[str], bool]) -> list[str]:
        base = self._key("")
        texts = []
        for key in list_keys(self.client, self.location.bucket, base):
            name = key.removeprefix(base)
            if "/" in name or name.startswith(".") or not name.endswith(ENTRY) or not wanted(name):
                continue
            try:
                body = self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"]
            except Exception as error:
                if error_code(error) in ("NoSuchKey", "404"):
                    continue  # a partial entry removed as its binlog closed, between the listing and this read
                raise object_error(error, f"s3://{self.location.bucket}/{key}") from None
            with contextlib.closing(body):
                texts.append(body.read().decode("utf-8", errors="replace"))
        return texts

    @contextlib.contextmanager
    def claim(self) -> Iterator[Path]:
        check_bucket(self.client, self.location.bucket)
        abort_stale_uploads(
            self.client, self.location.bucket, self._key(""), lambda _key: True, older_than=timedelta(0)
        )
        prefix = f".dbb-spool-{hashlib.sha256(self.where.encode()).hexdigest()[:12]}-"
        for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
            shutil.rmtree(stale, ignore_errors=True)
        spool = Path(tempfile.mkdtemp(prefix=prefix))
        try:
            yield spool
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Written]:
        with MultipartUpload(self.client, self.location.bucket, self._key(name), extra=self.object_arguments) as out:
            yield out
            out.close()

    def put(self, name: str, data: bytes) -> None:
        key = self._key(name)
        try:
            self.client.put_object(Bucket=self.location.bucket, Key=key, Body=data, **self.object_arguments)
        except Exception as error:
            raise object_error(error, f"s3://{self.location.bucket}/{key}") from None

    def remove(self, name: str) -> None:
        key = self._key(name)
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=key)
        except Exception as error:
            raise object_error(error, f"s3://{self.location.bucket}/{key}") from None

    def names(self, prefix: str) -> list[str]:
        base = self._key("")
        found = (key.removeprefix(base) for key in list_keys(self.client, self.location.bucket, base + prefix))
        return sorted(name for name in found if "/" not in name)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        key = self._key(name)
        try:
            body = self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"]
        except Exception as error:
            if error_code(error) in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            raise object_error(error, f"s3://{self.location.bucket}/{key}") from None
        with contextlib.closing(body):
            yield body
