"""Compression, the output file, the feeds: what the runner does with bytes, without a database."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
from pathlib import Path

import pytest

from runner.compression import Compression, compressor, decompressor
from runner.errors import RunnerError
from runner.feeds import LineScanner, RowCounter, SqlRenamer
from runner.stream import OutputFile, remove_stale_temporaries

DATA = b"".join(b"INSERT INTO t VALUES (%d, 'row %d');\n" % (i, i) for i in range(20000)) + os.urandom(50000)


def compress(compression: Compression, data: bytes) -> bytes:
    out = io.BytesIO()
    stage = compressor(compression, out)
    for start in range(0, len(data), 65536):
        stage.write(data[start : start + 65536])
    stage.close()
    return out.getvalue()


def read_all(compression: Compression, blob: bytes) -> bytes:
    source = decompressor(compression, io.BytesIO(blob))
    parts = []
    while piece := source.read(10000):
        parts.append(piece)
    return b"".join(parts)


@pytest.mark.parametrize("compression", list(Compression))
def test_compression_round_trips(compression: Compression) -> None:
    assert read_all(compression, compress(compression, DATA)) == DATA


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_a_compressed_stream_cut_short_is_an_error_not_a_short_read(compression: Compression) -> None:
    blob = compress(compression, DATA)
    with pytest.raises(RunnerError, match="cut short"):
        read_all(compression, blob[: len(blob) - 20])


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_data_after_the_end_of_a_compressed_stream_is_an_error(compression: Compression) -> None:
    with pytest.raises(RunnerError):
        read_all(compression, compress(compression, DATA) + b"junk")


def test_the_gzip_output_is_what_gunzip_reads() -> None:
    import gzip

    assert gzip.decompress(compress(Compression.GZIP, DATA)) == DATA


def test_a_published_file_has_its_final_name_and_hash(tmp_path: Path) -> None:
    with OutputFile(tmp_path, "db-20250101T000000Z.sql") as out:
        assert out.temporary.name == ".db-20250101T000000Z.sql.partial"
        out.write(b"hello ")
        out.write(b"world")
        out.publish()
    assert [p.name for p in tmp_path.iterdir()] == ["db-20250101T000000Z.sql"]
    assert out.size == 11
    assert out.sha256.hexdigest() == hashlib.sha256(b"hello world").hexdigest()


def test_a_file_that_is_not_published_leaves_nothing(tmp_path: Path) -> None:
    def fail_half_way() -> None:
        with OutputFile(tmp_path, "db-20250101T000000Z.sql") as out:
            out.write(b"half")
            raise RuntimeError("the dump failed")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    # Our write seam, for machines where a small tmpfs cannot be mounted (tests/backup mounts a real one).
    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with OutputFile(tmp_path, "db-20250101T000000Z.sql", writer=full) as out, pytest.raises(RunnerError) as caught:
        out.write(b"data")
    assert caught.value.reason == "DiskFull"
    assert list(tmp_path.iterdir()) == []


def test_an_existing_backup_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "db-20250101T000000Z.sql").write_text("the first run's")
    with pytest.raises(RunnerError, match="already exists"), OutputFile(tmp_path, "db-20250101T000000Z.sql") as out:
        out.publish()
    assert (tmp_path / "db-20250101T000000Z.sql").read_text() == "the first run's"


def test_cleanup_removes_only_temporary_files_nobody_holds(tmp_path: Path) -> None:
    stale = tmp_path / ".db-20250101T000000Z.sql.partial"
    live = tmp_path / ".db-20250102T000000Z.sql.partial"
    foreign = tmp_path / ".other-20250101T000000Z.sql.partial"
    for path in (stale, live, foreign):
        path.write_text("x")
    with live.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert remove_stale_temporaries(tmp_path, "db") == [stale.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, foreign.name])


def rename(mapping: dict[str, str], script: bytes, piece: int) -> bytes:
    renamer = SqlRenamer(mapping)
    out = [renamer.feed(script[i : i + piece]) for i in range(0, len(script), piece)]
    return b"".join(out) + renamer.flush()


SCRIPT = (
    b"-- Current Database: `shop`\n"
    b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n"
    b"USE `shop`;\n"
    b"INSERT INTO `t` VALUES (1,'USE `shop`;');\n"
    b"CREATE TABLE `USE` (id int);\n"
    b"-- Current Database: `we``ird`\n"
    b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `we``ird`;\n"
    b"USE `we``ird`;\n"
    b"USE `other`;"
)


@pytest.mark.parametrize("piece", [1, 2, 7, 64, 1 << 20])
def test_the_renamer_rewrites_only_create_database_and_use_lines(piece: int) -> None:
    out = rename({"shop": "copy_1", "we`ird": "copy_2"}, SCRIPT, piece)
    assert out == (
        b"-- Current Database: `shop`\n"
        b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `copy_1` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n"
        b"USE `copy_1`;\n"
        b"INSERT INTO `t` VALUES (1,'USE `shop`;');\n"
        b"CREATE TABLE `USE` (id int);\n"
        b"-- Current Database: `we``ird`\n"
        b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `copy_2`;\n"
        b"USE `copy_2`;\n"
        b"USE `other`;"
    )


def test_the_renamer_passes_long_lines_through_without_holding_them() -> None:
    renamer = SqlRenamer({"a": "b"})
    assert renamer.feed(b"INSERT " + b"x" * 100) == b"INSERT " + b"x" * 100
    assert renamer.feed(b"y" * 10 + b"\nUSE `a`;\n") == b"y" * 10 + b"\nUSE `b`;\n"


def test_the_line_scanner_counts_tables_per_database_and_sees_the_last_line() -> None:
    scanner = LineScanner()
    script = SCRIPT + b"\nCREATE TABLE `x` (\n" + b"INSERT " + b"v" * 5000 + b"\n-- Dump completed on 2025-01-01\n\n"
    for i in range(0, len(script), 3):
        scanner.feed(script[i : i + 3])
    scanner.finish()
    assert scanner.tables == {"shop": 1, "we`ird": 1}  # `USE` in shop, `x` in we`ird
    assert scanner.last_line.startswith(b"-- Dump completed")


def test_a_backup_published_by_another_run_at_the_last_moment_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another run publishes the same name after any check this one could make: as if every `exists()` said no.
    monkeypatch.setattr(Path, "exists", lambda self: False)
    with OutputFile(tmp_path, "db-20250101T000000Z.sql") as out:
        out.write(b"ours")
        out.seal()
        (tmp_path / "db-20250101T000000Z.sql").write_text("the other run's")
        with pytest.raises(RunnerError, match="already exists"):
            out.publish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db-20250101T000000Z.sql"]
    assert (tmp_path / "db-20250101T000000Z.sql").read_text() == "the other run's"


PG_SCRIPT = (
    b"SET statement_timeout = 0;\n"
    b"COPY public.customers (id, note) FROM stdin;\n"
    b"1\ttab\\there\\nnew line\n"
    b"2\t\\\\.\n"  # a value that is a backslash and a dot: escaped, so not the end marker
    b"\\.\n"
    b'COPY "Sch\xc3\xa9ma"."T\xc3\xa5ble" (k) FROM stdin;\n'
    b"\\.\n"
    b"CREATE INDEX i ON public.customers (id);\n"
)
MYSQL_SCRIPT = (
    b"-- Current Database: `shop`\n"
    b"INSERT INTO `orders` VALUES (1,'a),(b'),(2,'it\\'s;'),(3,NULL);\n"
    b"INSERT INTO `orders` VALUES (4,'x');\n"
    b"-- Current Database: `crm`\n"
    b"INSERT INTO `contacts` VALUES\n(1,'a;'),\n(2,'b\\\\'),\n(3,'),(');\n"
    b"UNLOCK TABLES;\n"
)


@pytest.mark.parametrize("piece", [1, 3, 7, 1 << 20])
def test_rows_are_counted_per_table_whatever_the_chunks(piece: int) -> None:
    for script, expected in (
        (PG_SCRIPT, {None: {"public.customers": 2, '"Schéma"."Tåble"': 0}}),
        (MYSQL_SCRIPT, {"shop": {"orders": 4}, "crm": {"contacts": 3}}),
    ):
        counter = RowCounter()
        for start in range(0, len(script), piece):
            counter.feed(script[start : start + piece])
        counter.finish()
        assert counter.rows == expected
