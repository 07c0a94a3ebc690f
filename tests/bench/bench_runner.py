"""The backup runner against the raw dump tools, like with like, on about 1 GB of data per engine, in the same run.

Both engines hold the same shape of data: 7 million rows of (id, branch, balance, filler), the filler text plus
random-looking bytes (three words repeated, then two md5 digests in hex), which compresses about 3:1 as real
tables tend to (pgbench's blank filler compresses 40:1 and measures little but the dump tool).

Each side uses the same compressor implementation at the same level:
- gzip: PostgreSQL's custom format compresses inside pg_dump (zlib, its default level 6) on both sides; for MariaDB
  the raw side pipes `mariadb-dump` into zlib level 6 (a few lines of Python around the zlib library, the very
  library and level the runner uses), not into GNU gzip, whose deflate is another implementation;
- zstd: the raw side pipes `pg_dump -Fc -Z0` / `mariadb-dump` into python-zstandard level 3 with the runner's
  threads, the library and settings the runner uses.
The raw side's pipe and reads are the runner's too (runner/process.py, runner/backup.py): the pipe enlarged to
1 MiB, and each read takes what is there (up to 1 MiB) instead of blocking until a whole MiB has come. A raw side
with the kernel's 64 KiB pipe and blocking reads stalls the dump tool, and the ratio then flatters the runner.
The runner does the raw side's work and more, so it cannot be much faster: a ratio under 0.95 is reported as a
baseline that is not like for like (a FAILED line, and a warning on stderr), never as a result.

Best of 3 rounds each, the order of the two sides reversed every other round (so neither side always runs with a
colder cache). Reported: wall time, the ratio to the raw side with the same compressor, MB/s of database, the
compression ratio, and peak RSS, the largest over all rounds (not the fastest round's): our runner's own (VmHWM of
the Python process, sampled every 20 ms; a run with no sample is an error, never 0) and the largest of the whole
process tree (`wait4`'s ru_maxrss). Targets: runner wall time at most 1.05 × the raw side's with the same
compressor, runner RSS under 100 MB.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from hack.harness.databases import MariaDBServer, PostgresServer
from runner.compression import ZSTD_LEVEL, zstd_threads
from runner.process import PIPE_SIZE
from tests.backup.cli import command, password_env
from tests.bench.results import table

ROWS = int(os.environ.get("BENCH_ROWS", "7000000"))
ROUNDS = 3
MB = 1 << 20
# The raw side's compressors: the runner's libraries and levels (runner/compression.py), stdin to stdout.
# Each reads as the runner's pump does: os.read of what the pipe holds, up to 1 MiB (runner/backup.py READ_SIZE).
_PUMP = (
    "import os, sys\n"
    "w = sys.stdout.buffer\n"
    "while block := os.read(0, 1 << 20):\n"
    "    out = c.compress(block)\n"
    "    if out:\n"
    "        w.write(out)\n"
    "w.write(c.flush())\n"
)
ZLIB6 = "import zlib\nc = zlib.compressobj(6, zlib.DEFLATED, 31)\n" + _PUMP
ZSTD3 = (
    "import zstandard\n"
    f"c = zstandard.ZstdCompressor(level={ZSTD_LEVEL}, threads={zstd_threads()}, write_checksum=True).compressobj()\n"
    + _PUMP
)
# Below this ratio the runner beat the same work done by the raw tools: the baseline is handicapped somewhere.
SUSPECT_RATIO = 0.95
SAMPLE_EVERY = 0.02  # seconds between VmHWM samples of the runner's process


@dataclass
class Measure:
    wall: float
    tree_rss: int  # bytes
    runner_rss: int  # bytes, 0 for raw tools
    size: int


def _peak_hwm(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """VmHWM of `pid` until it exits (or `stop`); peak[1] counts the samples taken (a zombie has no VmHWM)."""
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
                    peak[1] += 1
        except OSError:
            return
        stop.wait(SAMPLE_EVERY)


def run_pipeline(
    stages: list[list[str]],
    env: dict[str, str],
    output: Path | None,
    *,
    watch_first: bool = False,
    errors: Path | None = None,
) -> Measure:
    """Runs `stages` as a pipeline, the last one's stdout into `output` (None: the tool writes its own file), their
    stderr into `errors` (None: discarded), whose end a failure shows."""
    started = time.monotonic()
    processes: list[subprocess.Popen[bytes]] = []
    with Path(output or os.devnull).open("wb") as sink, Path(errors or os.devnull).open("wb") as stderr:
        for index, argv in enumerate(stages):
            last = index == len(stages) - 1
            stdin = processes[-1].stdout if processes else subprocess.DEVNULL
            stdout = sink if last else subprocess.PIPE
            processes.append(subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env))
            if not last and processes[-1].stdout is not None:
                # The pipe size the runner gives its tools' pipes (runner/process.py).
                fcntl.fcntl(processes[-1].stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            if index and processes[-2].stdout is not None:
                processes[-2].stdout.close()  # only the next stage holds the pipe
    stop, peak = threading.Event(), [0, 0]
    watcher = threading.Thread(target=_peak_hwm, args=(processes[0].pid, stop, peak), daemon=True)
    if watch_first:
        watcher.start()
    tree = 0
    for process in processes:
        # wait4, not wait: its rusage is the peak RSS of the process and everything it ran.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        assert process.returncode == 0, f"{process.args!r} failed{_tail(errors)}"
        tree = max(tree, usage.ru_maxrss * 1024)
    wall = time.monotonic() - started
    stop.set()
    if watch_first:
        watcher.join()
        if not peak[1]:
            raise RuntimeError(f"no RSS sample of {stages[0][0]} was taken: its peak is unknown, not 0")
    return Measure(wall, tree, peak[0], 0)


def _tail(errors: Path | None) -> str:
    return f": {errors.read_text(errors='replace')[-3000:]}" if errors else ""


def runner(server: PostgresServer | MariaDBServer, folder: Path, compression: str) -> Measure:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    engine = "postgresql" if isinstance(server, PostgresServer) else "mysql"
    argv = [command(), "run", "--engine", engine, "--host", server.host, "--port", str(server.port)]
    argv += ["--user", server.user, "--database", "bench", "--output-dir", str(folder), "--compression", compression]
    measure = run_pipeline([argv], password_env(server), None, watch_first=True)
    measure.size = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("bench-") and
                       not p.name.endswith(".json"))  # fmt: skip
    return measure


def raw_pg(server: PostgresServer, file: Path, compression: str) -> Measure:
    argv = ["pg_dump", "-Fc", "-h", server.host, "-p", str(server.port), "-U", server.user, "bench"]
    if compression == "gzip":
        measure = run_pipeline([[*argv, "-f", str(file)]], server.env, None)
    else:
        measure = run_pipeline([[*argv, "-Z0"], _python(ZSTD3)], server.env, file)
    measure.size = file.stat().st_size
    return measure


def raw_mariadb(server: MariaDBServer, file: Path, compression: str) -> Measure:
    from runner.engines import Connection, mysql_dump_argv

    dump = mysql_dump_argv(Connection(server.host, server.port, server.user), ["bench"], several=False)
    measure = run_pipeline([dump, _python(ZLIB6 if compression == "gzip" else ZSTD3)], server.env, file)
    measure.size = file.stat().st_size
    return measure


def _python(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def best(measures: list[Measure]) -> Measure:
    """The fastest round's wall time and size, with the largest RSS of any round: memory is judged at its worst."""
    fastest = min(measures, key=lambda m: m.wall)
    return replace(
        fastest,
        tree_rss=max(m.tree_rss for m in measures),
        runner_rss=max(m.runner_rss for m in measures),
    )


# Three words repeated, then two md5 digests in hex: about 3:1 under gzip, as the report shows.
FILLER = "CONCAT(REPEAT('ledger entry ', 3), MD5({i}::text), MD5(({i} * 7)::text))"


def fill_postgres(server: PostgresServer) -> int:
    server.sql("CREATE DATABASE bench")
    server.sql(
        "CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler text);"
        "INSERT INTO accounts SELECT i, 1 + i / 100000, i % 1000, "
        + FILLER.format(i="i")
        + f" FROM generate_series(1, {ROWS}) i;"
        "VACUUM ANALYZE accounts;",
        "bench",
    )
    return int(server.sql("SELECT pg_database_size('bench')"))


def fill_mariadb(server: MariaDBServer) -> int:
    server.sql(
        "CREATE DATABASE bench; USE bench;"
        "CREATE TABLE accounts (aid INT PRIMARY KEY, bid INT NOT NULL, abalance INT NOT NULL, filler TEXT)"
        " ENGINE=InnoDB;"
    )
    step = min(1_000_000, ROWS)
    filler = FILLER.replace("::text", "").format(i="seq")
    for start in range(0, ROWS, step):
        server.sql(
            f"INSERT INTO accounts SELECT seq, 1 + seq DIV 100000, seq % 1000, {filler} "
            f"FROM seq_{start + 1}_to_{start + step}",
            "bench",
        )
    server.sql("ANALYZE TABLE accounts", "bench")
    sizes = server.sql(
        "SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = 'bench'"
    ).split()
    return sum(int(s) for s in sizes)


def dump_size(server: PostgresServer | MariaDBServer) -> int:
    """The uncompressed dump's size, for the compression ratio."""
    if isinstance(server, PostgresServer):
        argv = ["pg_dump", "-Fc", "-Z0", "-h", server.host, "-p", str(server.port), "-U", server.user, "bench"]
    else:
        from runner.engines import Connection, mysql_dump_argv

        argv = mysql_dump_argv(Connection(server.host, server.port, server.user), ["bench"], several=False)
    total = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=server.env) as process:
        assert process.stdout is not None
        while block := process.stdout.read(1 << 20):
            total += len(block)
    assert process.returncode == 0, argv
    return total


def _row(name: str, m: Measure, base: Measure | None, database: int, plain: int) -> list[str]:
    ratio = f"{m.wall / base.wall:.3f}" if base else "1.000 (baseline)"
    runner_rss = f"{m.runner_rss / MB:.0f}" if m.runner_rss else "—"
    return [
        name,
        f"{m.wall:.1f}",
        ratio,
        f"{database / MB / m.wall:.1f}",
        f"{m.size / MB:.1f}",
        f"{plain / m.size:.1f}:1",
        runner_rss,
        f"{m.tree_rss / MB:.0f}",
    ]


def _engine(
    server: PostgresServer | MariaDBServer,
    work: Path,
    raw: Callable[[Path, str], Measure],
    database: int,
) -> tuple[list[list[str]], list[str]]:
    plain = dump_size(server)
    measured: dict[tuple[str, str], list[Measure]] = {}
    sides: dict[str, Callable[[str], Measure]] = {
        "raw": lambda compression: raw(work / f"raw.{compression}", compression),
        "ours": lambda compression: runner(server, work / compression, compression),
    }
    for round_ in range(ROUNDS):
        for compression in ("gzip", "zstd"):
            # Reversed every other round: neither side always comes first (a colder cache, a dirtier page cache).
            for side in ("raw", "ours") if round_ % 2 == 0 else ("ours", "raw"):
                measured.setdefault((side, compression), []).append(sides[side](compression))
    rows, verdicts = [], []
    for compression in ("gzip", "zstd"):
        raw_best, ours_best = best(measured[("raw", compression)]), best(measured[("ours", compression)])
        rows.append(_row(f"raw side, {compression}", raw_best, None, database, plain))
        rows.append(_row(f"`dbb-backup run --compression {compression}`", ours_best, raw_best, database, plain))
        ratio = ours_best.wall / raw_best.wall
        verdicts.append(
            f"{compression}: {ratio:.3f} × the raw side (target ≤ 1.05): {'met' if ratio <= 1.05 else 'MISSED'}; "
            f"runner RSS {ours_best.runner_rss / MB:.0f} MB (target < 100 MB): "
            f"{'met' if ours_best.runner_rss < 100 * MB else 'MISSED'}"
        )
        if ratio < SUSPECT_RATIO:
            warning = (
                f"{compression}: FAILED: the runner took {ratio:.3f} × the raw side's time (under {SUSPECT_RATIO}): "
                "it does the same work and more, so the raw side is not like for like; fix the baseline"
            )
            print(f"WARNING: {warning}", file=sys.stderr, flush=True)
            verdicts.append(warning)
    return rows, verdicts


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="dbb-bench-"))
    header = ["run", "wall s", "× raw, same compressor", "MB/s", "size MB", "compression", "runner RSS MB",
              "largest process RSS MB"]  # fmt: skip
    sections = []
    try:
        with PostgresServer.start(settings={"shared_buffers": "256MB", "max_wal_size": "4GB"}) as pg:
            size = fill_postgres(pg)
            rows, verdicts = _engine(pg, work, lambda f, c: raw_pg(pg, f, c), size)
            sections.append(
                f"### PostgreSQL 15: {ROWS:,} rows, pg_database_size {size / MB:.0f} MB\n\n"
                + table(header, rows)
                + "\n\n"
                + "\n".join(f"- {v}" for v in verdicts)
            )
        with MariaDBServer.start(settings={"innodb-buffer-pool-size": "1G", "innodb-log-file-size": "512M"}) as mariadb:
            size = fill_mariadb(mariadb)
            rows, verdicts = _engine(mariadb, work, lambda f, c: raw_mariadb(mariadb, f, c), size)
            sections.append(
                f"### MariaDB: {ROWS:,} rows, data + index {size / MB:.0f} MB\n\n"
                + table(header, rows)
                + "\n\n"
                + "\n".join(f"- {v}" for v in verdicts)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = (
        f"Best of {ROUNDS} rounds each, the two sides' order reversed every other round; RSS is the largest of any "
        "round. The raw side's pipe and reads are the runner's (1 MiB pipe, reads of what is there). MB/s is of the "
        "database (its size on the server), not of the "
        "file. The compression column is the uncompressed dump's size over the file's. The runner also fsyncs its "
        "file and the folder, and writes a manifest; the raw pipelines do neither (pg_dump -f fsyncs its file)."
    )
    return "\n\n".join([*sections, notes])
