"""Point-in-time recovery on a binlogged MariaDB (issue 24): the recovery point under a steady write load, the time
of a restore to a point in time, and the archiver's memory, each against a baseline measured in the same run.

1. RPO. A writer inserts a row stamped with NOW(6) RATE times a second (on a schedule, through one client
   session) while `dbb-backup archive --max-lag 10` archives the binlog into a folder and, the baseline, `dbb-backup
   run` backs the same database up every BACKUP_EVERY seconds: what a user has without continuous archiving, on the
   shortest schedule cron allows (an hourly schedule's ages are sixty times as long). At SAMPLES instants drawn at
   random (seeded) over RPO_SECONDS, the benchmark reads what each side holds: the newest entry of the archive's
   index (binlog file and binlogSize, whole events only), and the binlog coordinates in the newest finished
   backup's manifest. The age is then minus the time of the newest row whose transaction ends within that.
   This is exact: after the run the server's binlogs (the archive's bytes) are decoded and each transaction's end
   (its Xid event's end_log_pos) tied to the row it inserted, whose NOW(6) is in microseconds, on the clock the
   samples read. The index's own lastEvent (and /status recoverableUntil) is the second the newest event started,
   truncated: `now - recoverableUntil` overstates the age by up to a second. It is reported beside the exact age,
   with the archiver's own /status lagSeconds. Target: p99 ≤ max-lag + 5 s.
2. Restore time. A database of DBB_BENCH_PITR_MB (the issue's 1 GB is 1024) is backed up (zstd, its binlog
   coordinates in its manifest); then DBB_BENCH_PITR_HOUR_ROWS transactions (the default is an hour of the RPO
   writer's rate), each updating an account and inserting a ledger row, are written by one client as fast as the
   server takes them, and a marker row follows a second after the point. `dbb-backup restore --point-in-time` to
   the point against `dbb-backup restore` of the same backup, best of 3 rounds each, the sides' order reversed every
   other round; every point-in-time restore is checked (every ledger row and not the marker, the accounts' CHECKSUM
   TABLE the source's). Target: the replay (point-in-time best minus plain best) takes no longer than the same
   transactions took to write; a restore slower than its workload would never catch up with an hour of it.
3. Publishing the open binlog. From the archiver's log, each publish of the open binlog during both runs: the binlog
   bytes it compressed and stored (a new piece), against the binlog's whole size then, which publishing it whole
   each time would have stored (the baseline, the same publishes).
4. Memory. The archiver's process tree (the runner, its mariadb-binlog, and a client it runs for a moment) is read
   from /proc every 100 ms, during the RPO run and while the hour's transactions are archived: the peak of the
   tree's summed PSS (see TreeRss), and each process's VmHWM. Baselines: the peak RSS of `python -c pass` and of
   `dbb-backup --help` (wait4's ru_maxrss), against the runner's own VmHWM. Target: the tree and the runner each
   under 100 MB.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hack.harness.databases import MariaDBServer, free_port
from runner.archivestore import Entry, binlog_key, read_index
from tests.backup.cli import backup, command, connection_args, password_env, wait_for
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

BINLOG = {"log-bin": "mysql-bin", "server-id": "1", "binlog-format": "ROW"}
BASE_MB = int(os.environ.get("DBB_BENCH_PITR_MB", "256"))
ROWS_PER_MB = 7150  # bench_runner's rows: 7,000,000 are 979 MB of data and index on MariaDB


def _client(server: MariaDBServer, database: str) -> list[str]:
    where = ["-h", server.host, "-P", str(server.port), "-u", server.user]
    return ["mariadb", "--no-defaults", *where, "--batch", "--skip-column-names", database]


# --- the archiver and what it holds ---------------------------------------------------------------------------


@dataclass
class Archiver:
    process: subprocess.Popen[bytes]
    folder: Path  # <output-dir>/<name>-binlog
    port: int
    memory: TreeRss
    log: Path

    def index(self) -> dict[str, Entry]:
        return read_index(self.folder)

    def newest(self) -> Entry | None:
        index = self.index()
        return index[max(index, key=binlog_key)] if index else None

    def lag(self) -> float | None:
        return status_lag(self.port)


@contextmanager
def archiving(server: MariaDBServer, output: Path, name: str) -> Iterator[Archiver]:
    """`dbb-backup archive --max-lag MAX_LAG` in the background, its tree's memory watched; SIGTERM at the end, and
    it must end well."""
    port = free_port()
    argv = [command(), "archive", "--engine", "mysql", *connection_args(server), "--output-dir", str(output)]
    argv += ["--name", name, "--max-lag", str(MAX_LAG), "--status-port", str(port)]
    log = output / f"{name}-archiver.log"
    with log.open("wb") as errors:
        process = subprocess.Popen(argv, env=password_env(server), stdout=errors, stderr=errors)
    memory = TreeRss(process.pid)
    memory.start()
    archiver = Archiver(process, output / f"{name}-binlog", port, memory, log)
    try:
        wait_for(lambda: archiver.newest() is not None, "the archiver's first entry", timeout=120)
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


@dataclass(frozen=True)
class Publishes:
    """What an archiver's log says it stored of open binlogs: each publish of a `.partial`, the binlog bytes it
    compressed and stored (the new piece, from its `fromByte`), against the whole binlog at that moment (its
    `binlogSize`), which is what publishing the open binlog whole each time stores."""

    count: int
    stored: int
    whole: int
    most_pieces: int

    @classmethod
    def of(cls, log: Path) -> Publishes:
        count = stored = whole = most = 0
        for line in log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("event") != "binlog archived" or event.get("closed"):
                continue
            count += 1
            stored += event["binlogSize"] - event["fromByte"]
            whole += event["binlogSize"]
            most = max(most, event["pieces"])
        return cls(count, stored, whole, most)


# --- 1. RPO ------------------------------------------------------------------------------------------------------


class Writer(threading.Thread):
    """One client session inserting a row stamped with NOW(6) RATE times a second, on a schedule: a slow insert
    does not push the ones after it back."""

    def __init__(self, server: MariaDBServer) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.client = subprocess.Popen(
            _client(server, "rpo"), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=server.env, text=True
        )

    def run(self) -> None:
        assert self.client.stdin is not None
        self.client.stdin.write("SET time_zone = '+00:00';\n")
        started, written = time.monotonic(), 0
        while not self.stop.wait(max(0.0, started + written / RATE - time.monotonic())):
            self.client.stdin.write("INSERT INTO ticks (at) VALUES (NOW(6));\n")
            self.client.stdin.flush()
            written += 1

    def close(self) -> None:
        self.stop.set()
        self.join()
        assert self.client.stdin is not None
        self.client.stdin.close()
        if self.client.wait(timeout=60) != 0:
            raise RuntimeError(f"the writer's client ended with {self.client.returncode}")


Position = tuple[int, int]  # (binlog number, byte offset): the server's order


@dataclass
class Commits:
    """Each transaction's end in the binlog and the newest ticks row written up to it, in the server's order."""

    ends: list[Position] = field(default_factory=list)
    newest: list[int] = field(default_factory=list)

    def newest_row(self, held: Position) -> int | None:
        """The newest row whose transaction ends at or before `held`."""
        at = bisect.bisect_right(self.ends, held)
        return self.newest[at - 1] if at else None


def commits(server: MariaDBServer, database: str, table_: str) -> Commits:
    """From the server's binlogs, byte for byte what the archive holds, decoded by the binlog tool."""
    insert = f"### INSERT INTO `{database}`.`{table_}`"
    found, newest = Commits(), 0
    for name in sorted(server.sql("SHOW BINARY LOGS").split("\n"), key=lambda n: binlog_key(n.split("\t")[0])):
        file = name.split("\t")[0]
        argv = [
            "mariadb-binlog",
            "--no-defaults",
            "--base64-output=DECODE-ROWS",
            "-v",
            str(server.folder / "data" / file),
        ]
        decoded = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        pending = False
        lines = iter(decoded.splitlines())
        for line in lines:
            if line.startswith(insert):
                next(lines)  # ### SET
                newest = max(newest, int(next(lines).split("=", 1)[1]))
                pending = True
            elif pending and "\tXid = " in line:
                end = re.search(r"end_log_pos (\d+)", line)
                assert end is not None, line
                found.ends.append((binlog_key(file)[1], int(end.group(1))))
                found.newest.append(newest)
                pending = False
    return found


@dataclass
class Sample:
    at: float  # Unix seconds
    archived: Position
    recoverable_until: str | None
    backup: Position
    lag: float | None


class Backups:
    """`dbb-backup run` of the writer's database every BACKUP_EVERY seconds from `scheduled()`; each finished one's
    coordinates, with the instant it finished."""

    def __init__(self, server: MariaDBServer, folder: Path) -> None:
        self.server, self.folder = server, folder
        self.done: list[tuple[float, Position]] = []
        self.stop = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.begin = 0.0

    def take(self) -> None:
        made = backup(self.server, self.folder, "rpo", compression="zstd")
        coordinates = json.loads(made.with_name(made.name + ".json").read_text())["binlog"]
        self.done.append((time.time(), (binlog_key(coordinates["file"])[1], int(coordinates["position"]))))

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

    def newest(self, now: float) -> Position:
        return [position for finished, position in self.done if finished <= now][-1]


def _sample(archiver: Archiver, backups: Backups) -> Sample:
    newest = archiver.newest()
    assert newest is not None
    archived = (binlog_key(newest.file)[1], newest.binlog_size)
    now = time.time()  # after the reads: what they found was there by now
    return Sample(now, archived, newest.last_event, backups.newest(now), archiver.lag())


@dataclass
class Rpo:
    archive: list[float]
    truncated: list[float]
    lag: list[float]
    baseline: list[float]
    rows: int
    memory: TreeRss
    publishes: Publishes


def measure_rpo(work: Path) -> Rpo:
    with MariaDBServer.start(settings=BINLOG) as server:
        server.sql("CREATE DATABASE rpo; CREATE TABLE rpo.ticks (id int AUTO_INCREMENT PRIMARY KEY, at datetime(6))")
        (work / "backups").mkdir()
        with archiving(server, work, "rpo") as archiver:
            writer = Writer(server)
            writer.start()
            backups = Backups(server, work / "backups")
            try:
                first = time.time()
                wait_for(lambda: _reaches(archiver, first + 1), "the archive to hold the writer's rows", timeout=120)
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
        written = {
            int(i): utc(at)
            for i, at in (r.split("\t") for r in server.sql("SELECT id, at FROM rpo.ticks").splitlines())
        }
        ends = commits(server, "rpo", "ticks")

    def age(sample: Sample, held: Position) -> float:
        row = ends.newest_row(held)
        if row is None:
            raise RuntimeError(f"nothing the writer wrote is held at {held} (sampled at {sample.at})")
        return sample.at - written[row]

    return Rpo(
        archive=[age(s, s.archived) for s in samples],
        truncated=[s.at - utc(s.recoverable_until) for s in samples if s.recoverable_until],
        lag=[s.lag for s in samples if s.lag is not None],
        baseline=[age(s, s.backup) for s in samples],
        rows=len(written),
        memory=archiver.memory,
        publishes=Publishes.of(archiver.log),
    )


def _reaches(archiver: Archiver, moment: float) -> bool:
    newest = archiver.newest()
    return newest is not None and newest.last_event is not None and utc(newest.last_event) >= moment


# --- 2. restore to a point in time ------------------------------------------------------------------------------


def _fill(server: MariaDBServer, rows: int) -> int:
    """bench_runner's accounts (`rows` of them) and an empty ledger; data + index bytes."""
    server.sql(
        "CREATE DATABASE bench; USE bench;"
        "CREATE TABLE accounts (aid INT PRIMARY KEY, bid INT NOT NULL, abalance INT NOT NULL, filler TEXT)"
        " ENGINE=InnoDB;"
        "CREATE TABLE ledger (id INT AUTO_INCREMENT PRIMARY KEY, aid INT NOT NULL, delta INT NOT NULL,"
        " at DATETIME(6) NOT NULL) ENGINE=InnoDB"
    )
    filler = FILLER.replace("::text", "").format(i="seq")
    step = min(1_000_000, rows)
    for start in range(0, rows, step):
        # Kept out of the binlog: the replay starts at the backup's coordinates, after it, and the archiver would
        # only spend its first minutes archiving the fill.
        server.sql(
            f"SET sql_log_bin = 0; INSERT INTO accounts SELECT seq, 1 + seq DIV 100000, seq % 1000, {filler} "
            f"FROM seq_{start + 1}_to_{min(rows, start + step)}",
            "bench",
        )
    server.sql("ANALYZE TABLE accounts", "bench")
    sizes = server.sql(
        "SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = 'bench'"
    ).split()
    return sum(int(s) for s in sizes)


def _hour(accounts: int) -> str:
    """HOUR_ROWS transactions as one client sends them: each moves a random amount on a random account and
    records it in the ledger."""
    rng = random.Random(SEED)
    lines = ["SET time_zone = '+00:00';"]
    for _ in range(HOUR_ROWS):
        aid, delta = rng.randint(1, accounts), rng.randint(-500, 500)
        lines.append(
            f"BEGIN; UPDATE accounts SET abalance = abalance + {delta} WHERE aid = {aid}; "
            f"INSERT INTO ledger (aid, delta, at) VALUES ({aid}, {delta}, NOW(6)); COMMIT;"
        )
    return "\n".join(lines) + "\n"


def _restore(server: MariaDBServer, file: Path, target: str, work: Path, *flags: str) -> float:
    argv = [command(), "restore", str(file), *connection_args(server), "--database", target, *flags]
    return run_pipeline([argv], password_env(server), work / "restored.json", errors=work / "errors.log").wall


def _checksum(server: MariaDBServer, database: str) -> str:
    return server.sql(f"CHECKSUM TABLE {database}.accounts").split("\t")[1]


@dataclass
class Restores:
    rows: int
    database: int  # bytes of data and index
    file: int  # bytes of the backup
    written: float  # seconds the hour's transactions took to write
    times: dict[str, list[float]]
    binlogs: list[str]
    replayed_bytes: int
    events: int
    transactions: int
    memory: TreeRss
    lag_peak: float  # the archiver's largest lagSeconds while the transactions arrived
    marker_delay: float  # seconds from the marker's write until the archive held it
    publishes: Publishes


def measure_restores(work: Path) -> Restores:
    rows = BASE_MB * ROWS_PER_MB
    settings = {**BINLOG, "innodb-buffer-pool-size": "1G", "innodb-log-file-size": "512M"}
    with MariaDBServer.start(settings=settings) as server:
        size = _fill(server, rows)
        with archiving(server, work, "bench") as archiver:
            base = backup(server, work, "bench", name="bench", compression="zstd")
            script = _hour(rows)
            lags = LagPeak(archiver.lag)
            lags.start()
            started = time.monotonic()
            subprocess.run(_client(server, "bench"), input=script, text=True, env=server.env, check=True)
            written = time.monotonic() - started
            # The point: a whole second after the last transaction's; the marker's event comes after it.
            point = math.floor(time.time()) + 2
            wait_for(lambda: time.time() >= point + 0.2, "the clock to pass the point", timeout=5)
            server.sql("INSERT INTO ledger (aid, delta, at) VALUES (0, 0, NOW(6))", "bench")
            marked = time.monotonic()
            wait_for(lambda: _reaches(archiver, point), "the archive to hold the marker", timeout=300)
            marker_delay = time.monotonic() - marked
            lags.stop.set()
            lags.join()
        index = read_index(archiver.folder)
        reference = _checksum(server, "bench")
        instant = datetime.fromtimestamp(point, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        times: dict[str, list[float]] = {"plain": [], "pitr": []}
        for round_ in range(ROUNDS):
            for side in ("plain", "pitr") if round_ % 2 == 0 else ("pitr", "plain"):
                target = f"{side}_{round_}"
                flags = ["--point-in-time", instant] if side == "pitr" else []
                times[side].append(_restore(server, base, target, work, *flags))
                if side == "pitr":
                    result = json.loads((work / "restored.json").read_text())
                    _check(server, target, reference)
                server.drop_database(target)
        coordinates = json.loads(base.with_name(base.name + ".json").read_text())["binlog"]
        files = [str(server.folder / "data" / name) for name in result["binlogs"]]
        events, transactions = _replayed(files, int(coordinates["position"]), instant)
        replayed = sum(index[name].binlog_size for name in result["binlogs"]) - int(coordinates["position"])
        return Restores(
            rows, size, base.stat().st_size, written, times, result["binlogs"], replayed, events, transactions,
            archiver.memory, lags.peak, marker_delay, Publishes.of(archiver.log),
        )  # fmt: skip


def _check(server: MariaDBServer, target: str, reference: str) -> None:
    ledger = int(server.sql(f"SELECT COUNT(*) FROM {target}.ledger"))
    assert ledger == HOUR_ROWS, f"the point-in-time restore holds {ledger:,} ledger rows of {HOUR_ROWS:,}"
    assert _checksum(server, target) == reference, "the restored accounts differ from the source's at the point"


def _replayed(files: list[str], start: int, instant: str) -> tuple[int, int]:
    """The events and transactions the binlog tool reads from the backup's coordinates to the point, as the
    restore runs it (every database's: the restore's --database filter drops none here)."""
    stop = instant.replace("T", " ").removesuffix("Z")
    argv = ["mariadb-binlog", "--no-defaults", f"--start-position={start}", f"--stop-datetime={stop}", *files]
    decoded = subprocess.run(argv, capture_output=True, text=True, check=True, env={**os.environ, "TZ": "UTC"}).stdout
    return decoded.count("\n# at "), decoded.count("\tXid = ")


# --- 3. memory, and the report -------------------------------------------------------------------------------


def _rpo_section(rpo: Rpo) -> str:
    base = nearest_rank(rpo.baseline, 0.99)
    rows = [
        ages_row(f"scheduled backups alone, every {BACKUP_EVERY:.0f} s: newest backed-up write", rpo.baseline, None),
        ages_row(f"`dbb-backup archive --max-lag {MAX_LAG:.0f}`: newest archived write (exact)", rpo.archive, base),
        ages_row("the same archive, as now − recoverableUntil (whole seconds)", rpo.truncated, base),
        ages_row("the archiver's own /status lagSeconds", rpo.lag, base),
    ]
    p99 = nearest_rank(rpo.archive, 0.99)
    verdict = f"archive RPO p99 {p99:.2f} s (target ≤ {RPO_TARGET:.0f} s): {'met' if p99 <= RPO_TARGET else 'MISSED'}"
    title = (
        f"### RPO: a writer at {RATE} rows/s ({rpo.rows:,} rows) for {RPO_SECONDS:.0f} s, "
        f"{SAMPLES} random instants (seed {SEED})"
    )
    return f"{title}\n\n{table(AGES_HEADER, rows)}\n\n- {verdict}"


def _publish_section(runs: list[tuple[str, Publishes]]) -> str:
    rows = [
        [
            what,
            f"{p.count:,}",
            f"{p.stored / MB:.1f}",
            f"{p.whole / MB:.1f}",
            f"{p.stored / p.whole:.3f}" if p.whole else "n/a",
            f"{p.most_pieces}",
        ]
        for what, p in runs
    ]
    header = ["run", "publishes", "stored MB (pieces)", "whole each time MB (baseline)", "ratio", "most pieces"]
    title = "### Publishing the open binlog: binlog bytes compressed and stored, in pieces against whole each time"
    return f"{title}\n\n{table(header, rows)}"


def _restore_section(restores: Restores) -> str:
    plain, pitr = min(restores.times["plain"]), min(restores.times["pitr"])
    rows = [
        ["`dbb-backup restore` of the base backup", f"{plain:.1f}",
         " / ".join(f"{t:.1f}" for t in restores.times["plain"]), "1.000 (baseline)"],
        ["`dbb-backup restore --point-in-time` (the backup, then the binlog)", f"{pitr:.1f}",
         " / ".join(f"{t:.1f}" for t in restores.times["pitr"]), f"{pitr / plain:.3f}"],
    ]  # fmt: skip
    replay = pitr - plain
    title = (
        f"### Restore to a point in time: {restores.rows:,} rows, data + index {restores.database / MB:.0f} MB "
        f"(backup {restores.file / MB:.0f} MB, zstd), then {HOUR_ROWS:,} transactions"
    )
    facts = (
        f"replayed: {restores.replayed_bytes / MB:.1f} MB of binlog ({', '.join(restores.binlogs)}), "
        f"{restores.events:,} events, {restores.transactions:,} transactions, in about {replay:.1f} s "
        f"(point-in-time best minus plain best); the same transactions took {restores.written:.1f} s to write"
    )
    archived = (
        f"while the transactions arrived, the archiver's lagSeconds peaked at {restores.lag_peak:.1f} s (max-lag "
        f"{MAX_LAG:.0f}); the marker was archived {restores.marker_delay:.1f} s after its write"
    )
    ok = replay <= restores.written
    verdict = (
        f"replay {replay:.1f} s against {restores.written:.1f} s of writes (target ≤): {'met' if ok else 'MISSED'}"
    )
    header = ["restore", "best s", "rounds s", "× plain"]
    return f"{title}\n\n{table(header, rows)}\n\n- {facts}\n- {archived}\n- {verdict}"


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="dbb-bench-pitr-"))
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
        f"The archiver ran with `--max-lag {MAX_LAG:.0f}` into a folder, the scheduled backups beside it on the same "
        f"server and load, all on the same machine ({os.cpu_count()} CPUs). The RPO's instants start once the first "
        "backup has finished. Its ages are exact (see the module's docstring): a binlog position mapped to the NOW(6) "
        "of the newest row committed up to it. The restore's transactions are written as fast as one client sends "
        "them, so their events span seconds, not an hour: a replay's cost is in its events, not in the time they "
        "span. The binlog bytes replayed run from the backup's coordinates to the end of the archive (the marker's "
        "transaction, a few hundred bytes, included). The archiver was stopped before the restores, which write into "
        "the same server."
    )
    sections = [
        _rpo_section(rpo),
        _restore_section(restores),
        _publish_section([("RPO run", rpo.publishes), ("while the transactions arrive", restores.publishes)]),
        memory_section(
            "### Archiver memory",
            [("RPO run", rpo.memory), ("while the transactions arrive", restores.memory)],
            python,
            helped,
        ),
    ]
    return "\n\n".join([*sections, notes])
