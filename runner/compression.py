"""Compression stages: gzip, zstd or none, as streaming sinks (for writing) and sources (for reading).

gzip is level 6, what `gzip` and `mysqldump | gzip` use, so the benchmark compares like with like; it is one
standard gzip member, readable by `gunzip`. zstd is level 3 (zstd's default) with a content checksum, and uses
every CPU the Job has: on a database server the dump tool mostly waits for the server, and zstd's worker threads
keep compression off the critical path. Output is one standard zstd frame, readable by `zstd -d`.

Readers refuse a stream that ends before its end marker: gzip checks its trailer (CRC and length) and zstd its
frame end and checksum, so a cut-short file is an error, never a short restore. The zstd reader feeds the
decompressor small input pieces to keep memory bounded (its output for one call is not otherwise limited).
"""

from __future__ import annotations

import gzip
import os
import zlib
from enum import StrEnum
from typing import Final, Protocol

import zstandard

from runner.errors import Reason, RunnerError

__all__ = ["Compression", "compressor", "decompressor"]

GZIP_LEVEL: Final = 6
ZSTD_LEVEL: Final = 3
_ZSTD_INPUT: Final = 16 << 10


class Compression(StrEnum):
    GZIP = "gzip"
    ZSTD = "zstd"
    NONE = "none"

    @property
    def suffix(self) -> str:
        return {"gzip": ".gz", "zstd": ".zst", "none": ""}[self.value]


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Stage(Protocol):
    def write(self, data: bytes, /) -> object: ...
    def close(self) -> None: ...


class _Passthrough:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        return len(data)

    def close(self) -> None:
        pass


class _Compress:
    """zlib (gzip framing) or zstd compressobj behind one interface; `close` flushes the end marker."""

    def __init__(self, engine: zlib._Compress | zstandard.ZstdCompressionObj, sink: Sink) -> None:
        self._engine = engine
        self._sink = sink
        self._closed = False

    def write(self, data: bytes) -> int:
        out = self._engine.compress(data)
        if out:
            self._sink.write(out)
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sink.write(self._engine.flush())


def zstd_threads() -> int:
    # 0 keeps zstd in the calling thread; with one CPU, workers would only add handoffs.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus if cpus > 1 else 0


def compressor(compression: Compression, sink: Sink, *, threads: int | None = None) -> Stage:
    """`threads`: zstd's workers (default `zstd_threads()`, every CPU; 0 compresses in the calling thread)."""
    if compression is Compression.GZIP:
        return _Compress(zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS), sink)
    if compression is Compression.ZSTD:
        workers = zstd_threads() if threads is None else threads
        engine = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=workers, write_checksum=True)
        return _Compress(engine.compressobj(), sink)
    return _Passthrough(sink)


class _ZstdReader:
    def __init__(self, source: Source) -> None:
        self._source = source
        self._engine = zstandard.ZstdDecompressor().decompressobj()
        self._out = b""
        self._offset = 0
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._out) and not self._eof:
            self._out, self._offset = self._fill(), 0
        end = len(self._out) if size is None or size < 0 else self._offset + size
        piece = self._out[self._offset : end]
        self._offset += len(piece)
        return piece

    def _fill(self) -> bytes:
        data = self._source.read(_ZSTD_INPUT)
        if not data:
            self._eof = True
            if not self._engine.eof:
                raise RunnerError(Reason.VERIFY_FAILED, "the zstd stream is cut short (no end of frame)")
            return b""
        if self._engine.eof:
            raise RunnerError(Reason.VERIFY_FAILED, "unexpected data after the end of the zstd stream")
        try:
            out = bytes(self._engine.decompress(data))
        except zstandard.ZstdError as error:
            raise RunnerError(Reason.VERIFY_FAILED, f"the zstd stream is corrupt: {error}") from None
        if self._engine.eof and self._engine.unused_data:
            raise RunnerError(Reason.VERIFY_FAILED, "unexpected data after the end of the zstd stream")
        return out


class _GzipReader:
    def __init__(self, source: Source) -> None:
        self._file = gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[call-overload]

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self._file.read(size)
            return data
        except EOFError:
            raise RunnerError(Reason.VERIFY_FAILED, "the gzip stream is cut short (no trailer)") from None
        except (OSError, zlib.error) as error:
            raise RunnerError(Reason.VERIFY_FAILED, f"the gzip stream is corrupt: {error}") from None


def decompressor(compression: Compression, source: Source) -> Source:
    if compression is Compression.GZIP:
        return _GzipReader(source)
    if compression is Compression.ZSTD:
        return _ZstdReader(source)
    return source
