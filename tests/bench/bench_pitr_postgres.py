"""Point-in-time recovery on PostgreSQL 15 (issue 24): the recovery point under a steady write load, the time of a
restore to a point in time, and the WAL archiver's memory, each against a baseline measured in the same run. The
same load as `bench_pitr` (MariaDB; pitr_common's RATE, RPO_SECONDS, BACKUP_EVERY, HOUR_ROWS), adapted to WAL; its
figures go into the `pitr` section beside MariaDB's.

1. RPO. A writer inserts a row RATE times a second (on a schedule, through one psql session), stamped with
   clock_timestamp() and with pg_current_wal_insert_lsn() as the row began, while `dbb-backup archive --engine
   postgresql --max-lag 10` archives the WAL into a folder and, the baseline, `dbb-backup run --verify` dumps the
   same database every BACKUP_EVERY seconds (as bench_pitr's; --verify counts the dump's rows into its manifest).
   At SAMPLES instants drawn at random (seeded) over RPO_SECONDS, the benchmark reads the archive's index and the
   newest finished dump's manifest. The ages:
   - recoverable (the headline): sample instant minus the `at` of the newest row whose commit precedes the newest
     entry's `until`, the latest point a restore accepts (walarchive: every commit before `until` is archived). One
     session writes the rows in order, so row k committed before row k+1's clock_timestamp(): row k counts when
     at(k+1) ≤ until. That overstates the age by less than one writer interval (1/RATE s) and never understates it.
   - held: the same with what the archive holds byte for byte (the greatest endLsn of its entries) in place of
     `until`: row k counts when row k+1's starting LSN (after row k's commit record) ≤ endLsn. What a restore
     could reach were `until` checked continuously.
   - the dump: its manifest's row count of ticks, counted in the dump itself; one writer and no rollback make the
     ids 1..n, so the dump holds rows 1..n exactly (checked after the run: the ids have no gap).
   Beside them, `now − until` as the status reports it (recoverableUntil) and the archiver's /status lagSeconds.
   Target: p99 ≤ max-lag + 5 s.
2. Restore time. A database of DBB_BENCH_PITR_PG_MB (the issue's 1 GB is 1024; the default, 256, keeps this part
   near 6 minutes on 2 CPUs) is base-backed-up (`dbb-backup basebackup`, zstd) and dumped (`dbb-backup run`);
   then HOUR_ROWS transactions (each updating an account and inserting a ledger row) are written by one psql as
   fast as the server takes them, and a marker row follows a second after the point. Three restores, best of
   ROUNDS each, the sides' order reversed every other round:
   - the baseline: `dbb-backup restore BASEBACKUP --point-in-time END`, END the base backup's own end: the plain
     restore of that base backup through the same path (unpack, replay the WAL the copy needs, pg_dump, restore);
   - `dbb-backup restore BASEBACKUP --point-in-time POINT`: the same, and the hour's WAL replayed;
   - for context, `dbb-backup restore DUMP` of the dump (pg_restore): what a restore costs without the detour
     through a scratch server.
   Each restore is checked: the point-in-time one holds every ledger row and not the marker, the others none, and
   every restore's accounts match the source's (an md5 over every account's balance). Target (as bench_pitr's):
   the replay (point-in-time best minus baseline best) takes no longer than the same transactions took to write.
3. Memory. The archiver's process tree (the runner, its pg_receivewal, and any client it runs for a moment) is read
   from /proc every 100 ms during the RPO run and while the hour's transactions are archived (pitr_common.TreeRss),
   against the same baselines as bench_pitr's: `python -c pass` and `dbb-backup --help`. Target: under 100 MB.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hack.harness.databases import PG_BIN, PostgresServer, free_port
from runner.archivestore import FolderArchive
from runner.walarchive import WalEntry, lsn, read_wal_index
from tests.backup.cli import backup, command, connection_args, dbb, password_env, wait_for
from tests.bench.bench_runner import FILLER, run_pipeline
from tests.bench.pitr_common import (
    AGES_HEADER,
    BACKUP_EVERY,
    HOUR_ROWS,
    MAX_LAG,
    MB,
    RATE,
    ROUNDS,
    RPO_SECONDS,
    RPO_TARGET,
    SAMPLES,
    SEED,
    LagPeak,
    TreeRss,
    ages_row,
    baseline_rss,
    memory_section,
    nearest_rank,
    status_lag,
    utc,
)
from tests.bench.results import table

PART_OF = "pitr"  # results.write_section: a part of bench_pitr's section
BASE_MB = int(os.environ.get("DBB_BENCH_PITR_PG_MB", "256"))
ROWS_PER_MB = 6100  # bench_runner's rows: 1,715,200 were 280 MB of table and primary key on PostgreSQL 15
# Room for the fill and the hour without a checkpoint forced in between (fsync is off: the harness's server).
SETTINGS = {"shared_buffers": "256MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min"}


INSERT_TICK = "INSERT INTO ticks (at, began) VALUES (clock_timestamp(), pg_current_wal_insert_lsn());\n"
INSERT_MARKER = "INSERT INTO ledger (aid, delta, at) VALUES (0, 0, clock_timestamp()) RETURNING extract(epoch FROM at)"


def _psql(server: PostgresServer, database: str) -> list[str]:
    where = ["-h", server.host, "-p", str(server.port), "-U", server.user, "-d", database]
    return ["psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", *where]


# --- the archiver and what it holds ---------------------------------------------------------------------------


@dataclass
class Archiver:
    process: subprocess.Popen[bytes]
    folder: Path  # <output-dir>/<name>-wal
    port: int
    memory: TreeRss
    log: Path

    def index(self) -> dict[str, WalEntry]:
        return read_wal_index(FolderArchive(self.folder))

    def lag(self) -> float | None:
        return status_lag(self.port)


def until(index: dict[str, WalEntry]) -> float | None:
    """The newest instant the archive is known complete to (Unix seconds): what a restore may target at most."""
    untils = [utc(e.until) for e in index.values() if e.until]
    return max(untils, default=None)


def held(index: dict[str, WalEntry]) -> int:
    """The greatest LSN the archive surely holds."""
    return max((lsn(e.end_lsn) for e in index.values() if e.end_lsn), default=0)


@contextmanager
def archiving(server: PostgresServer, output: Path, name: str) -> Iterator[Archiver]:
    """`dbb-backup archive --engine postgresql --max-lag MAX_LAG` in the background, its tree's memory watched;
    SIGTERM at the end, and it must end well."""
    port = free_port()
    argv = [command(), "archive", "--engine", "postgresql", *connection_args(server), "--output-dir", str(output)]
    argv += ["--name", name, "--max-lag", str(MAX_LAG), "--status-port", str(port)]
    log = output / f"{name}-archiver.log"
    with log.open("wb") as errors:
        process = subprocess.Popen(argv, env=password_env(server), stdout=errors, stderr=errors)
    memory = TreeRss(process.pid)
    memory.start()
    archiver = Archiver(process, output / f"{name}-wal", port, memory, log)
    try:
        wait_for(lambda: until(archiver.index()) is not None, "the archiver's first entry", timeout=120)
        yield archiver
    finally:
        memory.stop.set()
        memory.join()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    if process.returncode != 0:
        raise RuntimeError(f"the archiver ended with {process.returncode}: {log.read_text()[-3000:]}")
    if not memory.samples:
        raise RuntimeError("no RSS sample of the archiver was taken: its peak is unknown, not 0")


def _reaches(archiver: Archiver, moment: float) -> bool:
    reached = until(archiver.index())
    return reached is not None and reached >= moment


# --- 1. RPO ------------------------------------------------------------------------------------------------------


class Writer(threading.Thread):
    """One psql session inserting a row RATE times a second, on a schedule: a slow insert does not push the ones
    after it back."""

    def __init__(self, server: PostgresServer) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.client = subprocess.Popen(
            _psql(server, "rpo"), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=server.env, text=True
        )

    def run(self) -> None:
        assert self.client.stdin is not None
        started, written = time.monotonic(), 0
        while not self.stop.wait(max(0.0, started + written / RATE - time.monotonic())):
            self.client.stdin.write(INSERT_TICK)
            self.client.stdin.flush()
            written += 1

    def close(self) -> None:
        self.stop.set()
        self.join()
        assert self.client.stdin is not None
        self.client.stdin.close()
        if self.client.wait(timeout=60) != 0:
            raise RuntimeError(f"the writer's client ended with {self.client.returncode}")


class Backups:
    """`dbb-backup run --verify` of the writer's database every BACKUP_EVERY seconds from `schedule()`; each
    finished one's row count of ticks (its manifest's, counted in the dump), with the instant it finished."""

    def __init__(self, server: PostgresServer, folder: Path) -> None:
        self.server, self.folder = server, folder
        self.done: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.begin = 0.0

    def take(self) -> None:
        # --verify: the run counts each table's rows in the dump, into its manifest.
        made = backup(self.server, self.folder, "rpo", compression="zstd", verify=None)
        rows = json.loads(made.with_name(made.name + ".json").read_text())["rows"]["rpo"]["public.ticks"]
        self.done.append((time.time(), int(rows)))

    def schedule(self) -> None:
        self.begin = time.time()
        self.thread.start()

    def _run(self) -> None:
        taken = 0
        try:
            while not self.stop.wait(max(0.0, self.begin + (taken + 1) * BACKUP_EVERY - time.time())):
                self.take()
                taken += 1
        except BaseException as error:  # re-raised by close(): a missed backup would flatter nobody, silently
            self.failed = error

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        if self.failed is not None:
            raise self.failed

    def newest(self, now: float) -> int:
        return [rows for finished, rows in self.done if finished <= now][-1]


@dataclass
class Sample:
    at: float  # Unix seconds
    until: float
    held: int  # LSN
    dumped: int  # rows in the newest finished dump
    lag: float | None


def _sample(archiver: Archiver, backups: Backups) -> Sample:
    index = archiver.index()
    reached = until(index)
    assert reached is not None
    lag = archiver.lag()
    now = time.time()  # after the reads: what they found was there by now
    return Sample(now, reached, held(index), backups.newest(now), lag)


@dataclass
class Rpo:
    recoverable: list[float]
    held: list[float]
    status: list[float]  # now − until
    lag: list[float]
    baseline: list[float]
    rows: int
    memory: TreeRss


def measure_rpo(work: Path) -> Rpo:
    with PostgresServer.start() as server:
        server.sql("CREATE DATABASE rpo")
        server.sql("CREATE TABLE ticks (id serial PRIMARY KEY, at timestamptz NOT NULL, began pg_lsn NOT NULL)", "rpo")
        (work / "backups").mkdir()
        with archiving(server, work, "rpo") as archiver:
            writer = Writer(server)
            writer.start()
            backups = Backups(server, work / "backups")
            try:
                first = time.time()
                wait_for(lambda: _reaches(archiver, first + 1), "the archive to pass the writer's start", timeout=120)
                backups.take()
                backups.schedule()
                rng = random.Random(SEED)
                instants = sorted(backups.begin + rng.uniform(0, RPO_SECONDS) for _ in range(SAMPLES))
                samples = []
                for instant in instants:
                    time.sleep(max(0.0, instant - time.time()))
                    samples.append(_sample(archiver, backups))
            finally:
                backups.close()
                writer.close()
        rows = [
            line.split("|")
            for line in server.sql(
                "SELECT id, extract(epoch FROM at), began - '0/0'::pg_lsn FROM ticks ORDER BY id", "rpo"
            ).splitlines()
        ]
    ids = [int(r[0]) for r in rows]
    assert ids == list(range(1, len(ids) + 1)), "the ticks' ids have a gap: a dump's row count is not its newest id"
    stamped = [float(r[1]) for r in rows]
    began = [int(r[2]) for r in rows]

    def age(sample: Sample, newest: int) -> float:
        """`newest`: how many rows are surely held (rows 1..newest)."""
        if newest < 1:
            raise RuntimeError(f"nothing the writer wrote is held (sampled at {sample.at})")
        return sample.at - stamped[newest - 1]

    # Rows 1..c began at or before the bound; row c-1 committed before row c began (see the docstring).
    return Rpo(
        recoverable=[age(s, bisect.bisect_right(stamped, s.until) - 1) for s in samples],
        held=[age(s, bisect.bisect_right(began, s.held) - 1) for s in samples],
        status=[s.at - s.until for s in samples],
        lag=[s.lag for s in samples if s.lag is not None],
        baseline=[age(s, s.dumped) for s in samples],
        rows=len(rows),
        memory=archiver.memory,
    )


# --- 2. restore to a point in time ------------------------------------------------------------------------------


def _fill(server: PostgresServer, rows: int) -> int:
    """bench_runner's accounts (`rows` of them) and an empty ledger; the database's size in bytes."""
    server.sql("CREATE DATABASE bench")
    server.sql(
        "CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler text);"
        "CREATE TABLE ledger (id serial PRIMARY KEY, aid int NOT NULL, delta int NOT NULL, at timestamptz NOT NULL);"
        "INSERT INTO accounts SELECT i, 1 + i / 100000, i % 1000, "
        + FILLER.format(i="i")
        + f" FROM generate_series(1, {rows}) i;"
        "VACUUM ANALYZE accounts;",
        "bench",
    )
    return int(server.sql("SELECT pg_database_size('bench')"))


def _hour(accounts: int) -> str:
    """HOUR_ROWS transactions as one client sends them: each moves a random amount on a random account and
    records it in the ledger."""
    rng = random.Random(SEED)
    lines = []
    for _ in range(HOUR_ROWS):
        aid, delta = rng.randint(1, accounts), rng.randint(-500, 500)
        lines.append(
            f"BEGIN; UPDATE accounts SET abalance = abalance + {delta} WHERE aid = {aid}; "
            f"INSERT INTO ledger (aid, delta, at) VALUES ({aid}, {delta}, clock_timestamp()); COMMIT;"
        )
    return "\n".join(lines) + "\n"


def _fingerprint(server: PostgresServer, database: str) -> str:
    return server.sql("SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM accounts", database)


def _restore(server: PostgresServer, file: Path, work: Path, *flags: str) -> float:
    argv = [command(), "restore", str(file), *connection_args(server), *flags]
    return run_pipeline([argv], password_env(server), work / "restored.json", errors=work / "errors.log").wall


SIDES = ("base", "pitr", "dump")


@dataclass
class Restores:
    rows: int
    database: int  # bytes
    base_file: int  # bytes of the base backup
    dump_file: int  # bytes of the dump
    written: float  # seconds the hour's transactions took to write
    times: dict[str, list[float]]
    wal: int  # bytes of WAL the hour's transactions wrote
    replayed: str  # the point-in-time restore's own account: "target" (stopped at the point) or "whole archive"
    memory: TreeRss
    lag_peak: float
    marker_delay: float


def measure_restores(work: Path) -> Restores:
    rows = BASE_MB * ROWS_PER_MB
    with PostgresServer.start(settings=SETTINGS) as server:
        size = _fill(server, rows)
        with archiving(server, work, "bench") as archiver:
            outcome = dbb(
                "basebackup", *connection_args(server), "--output-dir", str(work), "--name", "bench",
                env=password_env(server), timeout=1800,
            )  # fmt: skip
            assert outcome.code == 0, outcome.stderr
            base = Path(outcome.result["file"])
            dump = backup(server, work, "bench", name="dump", compression="zstd")
            before = _fingerprint(server, "bench")
            script = _hour(rows)
            lags = LagPeak(archiver.lag)
            lags.start()
            # Not the base backup's endLsn: its end switches to a new segment, whose skipped rest no replay reads.
            at_start = lsn(server.sql("SELECT pg_current_wal_insert_lsn()"))
            started = time.monotonic()
            subprocess.run(_psql(server, "bench"), input=script, text=True, env=server.env, check=True)
            written = time.monotonic() - started
            # The point: a whole second after the last transaction's commit; the marker's commit comes after it.
            point = math.floor(time.time()) + 2
            wait_for(lambda: time.time() >= point + 0.2, "the clock to pass the point", timeout=5)
            at_point = lsn(server.sql("SELECT pg_current_wal_insert_lsn()"))
            marked_at = float(server.sql(INSERT_MARKER, "bench"))
            marked = time.monotonic()
            wait_for(lambda: _reaches(archiver, marked_at), "the archive to hold the marker", timeout=300)
            marker_delay = time.monotonic() - marked
            lags.stop.set()
            lags.join()
        after = _fingerprint(server, "bench")
        manifest = json.loads(base.with_name(base.name + ".json").read_text())
        instant = datetime.fromtimestamp(point, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pg_bin = ["--pg-bin", str(PG_BIN)]
        times: dict[str, list[float]] = {side: [] for side in SIDES}
        replayed = ""
        for round_ in range(ROUNDS):
            for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                target = f"{side}_{round_}"
                if side == "dump":
                    times[side].append(_restore(server, dump, work, "--database", target))
                else:
                    when = instant if side == "pitr" else manifest["end"]
                    flags = ["--point-in-time", when, "--database", f"bench={target}", *pg_bin]
                    times[side].append(_restore(server, base, work, *flags))
                    result = json.loads((work / "restored.json").read_text())
                    if side == "pitr":
                        replayed = result["replayed"]
                _check(server, target, HOUR_ROWS if side == "pitr" else 0, after if side == "pitr" else before)
                server.drop_database(target)
        wal = at_point - at_start
        return Restores(
            rows, size, base.stat().st_size, dump.stat().st_size, written, times, wal, replayed, archiver.memory,
            lags.peak, marker_delay,
        )  # fmt: skip


def _check(server: PostgresServer, target: str, ledger: int, fingerprint: str) -> None:
    found = server.sql("SELECT count(*), count(*) FILTER (WHERE aid = 0) FROM ledger", target)
    assert found == f"{ledger}|0", f"{target} holds (ledger rows | markers) {found}, not {ledger}|0"
    assert _fingerprint(server, target) == fingerprint, f"{target}'s accounts differ from the source's at its point"


# --- the report -------------------------------------------------------------------------------------------------


def _rpo_section(rpo: Rpo) -> str:
    base = nearest_rank(rpo.baseline, 0.99)
    rows = [
        ages_row(f"scheduled dumps alone, every {BACKUP_EVERY:.0f} s: newest dumped write", rpo.baseline, None),
        ages_row(
            f"`dbb-backup archive --max-lag {MAX_LAG:.0f}`: newest write before `until` (recoverable)",
            rpo.recoverable,
            base,
        ),
        ages_row("the same archive: newest write within its endLsn (held)", rpo.held, base),
        ages_row("the same archive, as now − until (recoverableUntil)", rpo.status, base),
        ages_row("the archiver's own /status lagSeconds", rpo.lag, base),
    ]
    p99 = nearest_rank(rpo.recoverable, 0.99)
    verdict = f"archive RPO p99 {p99:.2f} s (target ≤ {RPO_TARGET:.0f} s): {'met' if p99 <= RPO_TARGET else 'MISSED'}"
    title = (
        f"### PostgreSQL 15, RPO: a writer at {RATE} rows/s ({rpo.rows:,} rows) for {RPO_SECONDS:.0f} s, "
        f"{SAMPLES} random instants (seed {SEED})"
    )
    return f"{title}\n\n{table(AGES_HEADER, rows)}\n\n- {verdict}"


def _restore_section(restores: Restores) -> str:
    best = {side: min(times) for side, times in restores.times.items()}

    def row(label: str, side: str, ratio: str) -> list[str]:
        return [label, f"{best[side]:.1f}", " / ".join(f"{t:.1f}" for t in restores.times[side]), ratio]

    rows = [
        row("`restore BASEBACKUP --point-in-time` its own end (plain restore of it)", "base", "1.000 (baseline)"),
        row("`restore BASEBACKUP --point-in-time` the point", "pitr", f"{best['pitr'] / best['base']:.3f}"),
        row("`restore DUMP` (pg_restore of a dump, for context)", "dump", f"{best['dump'] / best['base']:.3f}"),
    ]
    replay = best["pitr"] - best["base"]
    title = (
        f"### PostgreSQL 15, restore to a point in time: {restores.rows:,} rows, database {restores.database / MB:.0f}"
        f" MB (base backup {restores.base_file / MB:.0f} MB, dump {restores.dump_file / MB:.0f} MB, zstd), then "
        f"{HOUR_ROWS:,} transactions"
    )
    facts = (
        f"replayed: the hour's {restores.wal / MB:.1f} MB of WAL, {HOUR_ROWS:,} transactions "
        f"(the restore's account: {restores.replayed!r}), in about {replay:.1f} s (point-in-time best minus "
        f"baseline best); the same transactions took {restores.written:.1f} s to write"
    )
    archived = (
        f"while the transactions arrived, the archiver's lagSeconds peaked at {restores.lag_peak:.1f} s (max-lag "
        f"{MAX_LAG:.0f}); the archive's `until` passed the marker {restores.marker_delay:.1f} s after its write"
    )
    ok = replay <= restores.written
    verdict = (
        f"replay {replay:.1f} s against {restores.written:.1f} s of writes (target ≤): {'met' if ok else 'MISSED'}"
    )
    header = ["restore", "best s", "rounds s", "× baseline"]
    return f"{title}\n\n{table(header, rows)}\n\n- {facts}\n- {archived}\n- {verdict}"


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="dbb-bench-pitr-pg-"))
    try:
        python = baseline_rss([sys.executable, "-c", "pass"])
        helped = baseline_rss([command(), "--help"])
        (work / "rpo").mkdir()
        rpo = measure_rpo(work / "rpo")
        (work / "restore").mkdir()
        restores = measure_restores(work / "restore")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = (
        f"The archiver ran with `--max-lag {MAX_LAG:.0f}` into a folder, the scheduled dumps beside it on the same "
        f"server and load, all on the same machine ({os.cpu_count()} CPUs); the server is the test harness's "
        "(fsync and synchronous_commit off). The RPO's instants start once the first dump has finished; its ages "
        "are a row's clock_timestamp() against the archive's `until` or endLsn, exact to one writer interval (see "
        "the module's docstring). The archiver records `until` in whole seconds (the server's clock, truncated), so "
        "now − until runs about half a second above lagSeconds, which counts from its check's start. A PostgreSQL "
        "point-in-time restore unpacks the base backup on a scratch server, replays the archived WAL there, then "
        "moves the database into the target with pg_dump and the ordinary restore: the baseline goes the same way "
        "and replays only the WAL the base backup needs. The restore's transactions are written as fast as one "
        "client sends them, so their WAL spans seconds, not an hour: a replay's cost is in its records, not in the "
        "time they span. The archiver was stopped before the restores, which write into the same server."
    )
    sections = [
        _rpo_section(rpo),
        _restore_section(restores),
        memory_section(
            "### PostgreSQL 15, archiver memory",
            [("RPO run", rpo.memory), ("while the transactions arrive", restores.memory)],
            python,
            helped,
        ),
    ]
    return "\n\n".join([*sections, notes])
