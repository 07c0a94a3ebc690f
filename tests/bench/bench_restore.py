"""Restore time, the number a team plans its outage around: `dbb-backup restore` against the fastest raw path.

The database is the runner benchmark's (`bench_runner`: 7 million rows, about 1 GB per engine). The runner's side
restores a backup the runner made (zstd, as the operator stores it) into a new database, with everything a production
restore does: the bytes read held to the manifest before the commit, the target made all or nothing. The raw side
restores the fastest file the raw tools have, in the same run:
- PostgreSQL: `pg_dump -Fc -Z0` (no decompression left to do), then `createdb` and `pg_restore -j 4` into it;
- MariaDB: a plain `mariadb-dump` file, then `CREATE DATABASE` and `mariadb < dump`.
Neither raw side checks anything, and a failure half way leaves half a database.

Best of 3 rounds each, the sides' order reversed every other round; every restored database is dropped after its
round, and the runner's is counted (rows) before that. Target: the runner at most 1.1 × the raw side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hack.harness.databases import MariaDBServer, PostgresServer
from tests.backup.cli import command, connection_args, password_env
from tests.bench.bench_runner import ROWS, fill_mariadb, fill_postgres, run_pipeline
from tests.bench.results import table

ROUNDS = 3
JOBS = 4  # the raw side's pg_restore -j
MB = 1 << 20
TARGET = 1.1

Server = PostgresServer | MariaDBServer


def _backup(server: Server, folder: Path) -> Path:
    engine = "postgresql" if isinstance(server, PostgresServer) else "mysql"
    argv = [command(), "run", "--engine", engine, *connection_args(server), "--database", "bench"]
    argv += ["--output-dir", str(folder), "--compression", "zstd"]
    run_pipeline([argv], password_env(server), None)
    (file,) = [p for p in folder.iterdir() if p.name.startswith("bench-") and not p.name.endswith(".json")]
    return file


def _ours(server: Server, file: Path, target: str, errors: Path) -> float:
    argv = [command(), "restore", str(file), *connection_args(server), "--database", target]
    return run_pipeline([argv], password_env(server), None, errors=errors).wall


def _raw_pg(server: PostgresServer, file: Path, target: str, errors: Path) -> float:
    where = ["-h", server.host, "-p", str(server.port), "-U", server.user]
    started = time.monotonic()
    run_pipeline([["createdb", *where, target]], server.env, None, errors=errors)
    run_pipeline([["pg_restore", *where, "-j", str(JOBS), "--exit-on-error", "-d", target, str(file)]],
                 server.env, None, errors=errors)  # fmt: skip
    return time.monotonic() - started


def _raw_mariadb(server: MariaDBServer, file: Path, target: str, errors: Path) -> float:
    started = time.monotonic()
    server.sql(f"CREATE DATABASE {target}")
    client = ["mariadb", "-h", server.host, "-P", str(server.port), "-u", server.user, target]
    with file.open("rb") as dump:
        subprocess.run(client, stdin=dump, env=server.env, check=True, stderr=subprocess.PIPE)
    return time.monotonic() - started


def _raw_dump(server: Server, work: Path) -> Path:
    if isinstance(server, PostgresServer):
        file = work / "raw.dump"
        argv = ["pg_dump", "-Fc", "-Z0", "-h", server.host, "-p", str(server.port), "-U", server.user, "bench"]
        run_pipeline([[*argv, "-f", str(file)]], server.env, None)
        return file
    from runner.engines import Connection, mysql_dump_argv

    file = work / "raw.sql"
    dump = mysql_dump_argv(Connection(server.host, server.port, server.user), ["bench"], several=False)
    run_pipeline([dump], server.env, file)
    return file


def _rows(server: Server, database: str) -> int:
    return int(server.sql("SELECT count(*) FROM accounts", database))


def _engine(server: Server, work: Path, raw: Callable[[Path, str, Path], float]) -> tuple[list[list[str]], str]:
    ours_file = _backup(server, work / "ours")
    raw_file = _raw_dump(server, work)
    times: dict[str, list[float]] = {"raw": [], "ours": []}
    errors = work / "errors.log"
    for round_ in range(ROUNDS):
        for side in ("raw", "ours") if round_ % 2 == 0 else ("ours", "raw"):
            target = f"{side}_{round_}"
            if side == "raw":
                times[side].append(raw(raw_file, target, errors))
            else:
                times[side].append(_ours(server, ours_file, target, errors))
                restored = _rows(server, target)
                assert restored == ROWS, f"the runner restored {restored:,} rows of {ROWS:,}"
            server.drop_database(target)
    raw_best, ours_best = min(times["raw"]), min(times["ours"])
    ratio = ours_best / raw_best
    rows = [
        ["raw side", f"{raw_file.stat().st_size / MB:.0f}", f"{raw_best:.1f}",
         " / ".join(f"{t:.1f}" for t in times["raw"]), "1.000 (baseline)"],
        ["`dbb-backup restore`", f"{ours_file.stat().st_size / MB:.0f}", f"{ours_best:.1f}",
         " / ".join(f"{t:.1f}" for t in times["ours"]), f"{ratio:.3f}"],
    ]  # fmt: skip
    verdict = f"{ratio:.3f} × the raw side (target ≤ {TARGET}): {'met' if ratio <= TARGET else 'MISSED'}"
    return rows, verdict


def _section(title: str, header: list[str], rows: list[list[str]], verdict: str) -> str:
    return f"### {title}\n\n{table(header, rows)}\n\n- {verdict}"


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="dbb-bench-restore-"))
    header = ["restore", "file MB", "best s", "rounds s", "× raw"]
    sections = []
    try:
        (work / "ours").mkdir()
        with PostgresServer.start(settings={"shared_buffers": "256MB", "max_wal_size": "4GB"}) as pg:
            size = fill_postgres(pg)
            title = f"PostgreSQL 15: {ROWS:,} rows, pg_database_size {size / MB:.0f} MB; raw: `pg_dump -Fc -Z0`, "
            title += f"`createdb`, `pg_restore -j {JOBS}`"
            sections.append(_section(title, header, *_engine(pg, work, lambda f, t, e: _raw_pg(pg, f, t, e))))
        shutil.rmtree(work / "ours")
        (work / "ours").mkdir()
        with MariaDBServer.start(settings={"innodb-buffer-pool-size": "1G", "innodb-log-file-size": "512M"}) as my:
            size = fill_mariadb(my)
            title = f"MariaDB: {ROWS:,} rows, data + index {size / MB:.0f} MB; raw: `mariadb-dump`, "
            title += "`CREATE DATABASE`, `mariadb < dump`"
            sections.append(_section(title, header, *_engine(my, work, lambda f, t, e: _raw_mariadb(my, f, t, e))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = (
        f"Best of {ROUNDS} rounds each, the sides' order reversed every other round. The runner's side restores "
        "its own zstd backup into a new database, in one read held to the manifest (size, sha256) before its "
        "commit, one transaction on PostgreSQL; the raw side's file needs no decompression and nothing is checked. "
        "A restore that a failure would not undo (several databases, or MySQL into a database that exists) first "
        f"checks the whole file in a read of its own, which this does not measure. Machine: {os.cpu_count()} CPUs, "
        "client and server on it."
    )
    return "\n\n".join([*sections, notes])
