"""The backup runner against the raw dump tools, on about 1 GB of data per engine, in the same run.

PostgreSQL: `pgbench -i` at scale 70 (about 1.05 GB, 7 million rows; its filler column is blank, so the dump
compresses about 40:1). MariaDB: a table shaped like pgbench_accounts (7 million rows, about 1 GB) whose filler is
hex text (compresses about 2:1), filled with INSERT ... SELECT from the sequence engine.

Compared, each the best of two alternating rounds (so neither side always runs with a colder cache):
- PostgreSQL: `dbb-backup run --compression gzip` (pg_dump's own zlib, as below) vs `pg_dump -Fc -f file`.
- MariaDB: `dbb-backup run --compression gzip` vs `mariadb-dump <same flags> | gzip > file`.
- zstd: `dbb-backup run --compression zstd` on both, for time and size.

Peak RSS: our runner's own (VmHWM of the Python process, sampled) and the largest of the whole process tree
(`wait4`'s ru_maxrss: the dump tool, gzip or us). Targets: runner wall time at most 1.05 × the raw tool's with
the same compression, runner RSS under 100 MB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.backup.cli import command, password_env
from tests.backup.servers import MariaDBServer, PostgresServer
from tests.bench.results import table

PG_SCALE = 70
MARIADB_ROWS = 7_000_000
ROUNDS = 2
MB = 1 << 20


@dataclass
class Measure:
    wall: float
    tree_rss: int  # bytes
    runner_rss: int  # bytes, 0 for raw tools
    size: int


def _peak_hwm(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return
        stop.wait(0.1)


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
            if index and processes[-2].stdout is not None:
                processes[-2].stdout.close()  # only the next stage holds the pipe
    stop, peak = threading.Event(), [0]
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


def raw_pg(server: PostgresServer, file: Path) -> Measure:
    argv = ["pg_dump", "-Fc", "-f", str(file), "-h", server.host, "-p", str(server.port), "-U", server.user, "bench"]
    measure = run_pipeline([argv], server.env, None)
    measure.size = file.stat().st_size
    return measure


def raw_mariadb(server: MariaDBServer, file: Path) -> Measure:
    from reconciler.runner.engines import Connection, mysql_dump_argv

    dump = mysql_dump_argv(Connection(server.host, server.port, server.user), ["bench"], several=False)
    measure = run_pipeline([dump, ["gzip", "-6"]], server.env, file)
    measure.size = file.stat().st_size
    return measure


def best(measures: list[Measure]) -> Measure:
    return min(measures, key=lambda m: m.wall)


def fill_postgres(server: PostgresServer) -> int:
    server.sql("CREATE DATABASE bench")
    env = server.env
    subprocess.run(
        [
            "pgbench",
            "-i",
            "-q",
            "-s",
            str(PG_SCALE),
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-U",
            server.user,
            "bench",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    server.sql("VACUUM ANALYZE", "bench")
    return int(server.sql("SELECT pg_database_size('bench')"))


def fill_mariadb(server: MariaDBServer) -> int:
    server.sql(
        "CREATE DATABASE bench; USE bench;"
        "CREATE TABLE accounts (aid INT PRIMARY KEY, bid INT NOT NULL, abalance INT NOT NULL, filler VARCHAR(84))"
        " ENGINE=InnoDB;"
    )
    step = min(1_000_000, MARIADB_ROWS)
    for start in range(0, MARIADB_ROWS, step):
        server.sql(
            # Hex text, not pgbench's blank filler (which MariaDB would dump as ''): data that compresses about 2:1,
            # so that compression, not just the dump tool, is measured.
            "INSERT INTO accounts SELECT seq, 1 + seq DIV 100000, seq % 1000, "
            f"LEFT(CONCAT(MD5(seq), MD5(seq * 7), MD5(seq * 13)), 84) FROM seq_{start + 1}_to_{start + step}",
            "bench",
        )
    server.sql("ANALYZE TABLE accounts", "bench")
    sizes = server.sql(
        "SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = 'bench'"
    ).split()
    return sum(int(s) for s in sizes)


def _row(name: str, m: Measure, base: Measure | None) -> list[str]:
    ratio = f"{m.wall / base.wall:.3f}" if base else "1.000 (baseline)"
    runner_rss = f"{m.runner_rss / MB:.0f}" if m.runner_rss else "—"
    return [name, f"{m.wall:.1f}", ratio, f"{m.size / MB:.1f}", runner_rss, f"{m.tree_rss / MB:.0f}"]


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="dbb-bench-"))
    header = ["run", "wall s", "× raw (gzip)", "size MB", "runner peak RSS MB", "largest process RSS MB"]
    sections = []
    try:
        with PostgresServer.start(settings={"shared_buffers": "256MB", "max_wal_size": "4GB"}) as pg:
            pg_size = fill_postgres(pg)
            raws, ours, zstds = [], [], []
            for _ in range(ROUNDS):
                raws.append(raw_pg(pg, work / "raw.dump"))
                ours.append(runner(pg, work / "pg-gzip", "gzip"))
                zstds.append(runner(pg, work / "pg-zstd", "zstd"))
            raw = best(raws)
            rows = [
                _row("`pg_dump -Fc -f file`", raw, None),
                _row("`dbb-backup run --compression gzip`", best(ours), raw),
                _row("`dbb-backup run --compression zstd`", best(zstds), raw),
            ]
            sections.append(
                f"### PostgreSQL 15: pgbench scale {PG_SCALE}, pg_database_size {pg_size / MB:.0f} MB\n\n"
                + table(header, rows)
            )
        with MariaDBServer.start(settings={"innodb-buffer-pool-size": "1G", "innodb-log-file-size": "512M"}) as mariadb:
            my_size = fill_mariadb(mariadb)
            raws, ours, zstds = [], [], []
            for _ in range(ROUNDS):
                raws.append(raw_mariadb(mariadb, work / "raw.sql.gz"))
                ours.append(runner(mariadb, work / "my-gzip", "gzip"))
                zstds.append(runner(mariadb, work / "my-zstd", "zstd"))
            raw = best(raws)
            rows = [
                _row("`mariadb-dump … \\| gzip > file`", raw, None),
                _row("`dbb-backup run --compression gzip`", best(ours), raw),
                _row("`dbb-backup run --compression zstd`", best(zstds), raw),
            ]
            sections.append(
                f"### MariaDB 10.11: {MARIADB_ROWS:,} rows shaped like pgbench_accounts, "
                f"data + index {my_size / MB:.0f} MB\n\n" + table(header, rows)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = (
        f"Best of {ROUNDS} alternating rounds each. Targets: runner ≤ 1.05 × the raw tool's wall time with the same "
        "compression (gzip level 6 in both; pg_dump compresses its custom format itself in both), runner RSS "
        "< 100 MB. The runner also fsyncs its file and the folder, and writes a manifest; `mariadb-dump | gzip` "
        "does neither (pg_dump -f fsyncs too)."
    )
    return "\n\n".join([*sections, notes])
