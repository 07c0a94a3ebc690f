"""A backup streamed into S3 against dumping to a file and uploading it, on about 1.1 GB of PostgreSQL data, in the
same run. The store is a real SeaweedFS on loopback (tests/objectstore.py), on the same 2 CPUs as everything else.

Data: one table of 6.1 million event rows, each 12 words drawn at random from a 1,000-word vocabulary and 16 random
bytes (bytea), filled server-side with generate_series in two sessions at once. pg_database_size is about 1.1 GB
and the gzip dump about a third of it (pgbench's blank filler would compress 40:1 and measure nothing).

Compared, each the best of three rounds whose order is reversed every other round (so neither side always runs
with a colder cache or under the same background load):
- baseline: `pg_dump -Fc -f file` (pg_dump's own zlib at its default level, as the runner's `--compression gzip`
  has it), then boto3's `upload_file` of that file in a fresh Python process (TransferConfig: 8 MiB parts, 2
  threads, per-part SHA-256 checksums: the runner's part size, parts in flight and checksum). Wall = both.
- `dbb-backup run --output-url s3://backups/<prefix> --compression gzip --verify` as the Job runs it (with
  `--keep-last` and `--stale-upload-age=0`): wall of the whole command, which includes reading the object back to
  verify it before its manifest is written.
- For the breakdown, in the same rounds: each half of the baseline alone, the runner without `--verify`, and
  `dbb-backup verify s3://…` of that object (the read-back alone).

Peak RSS: the runner's own (VmHWM of its Python process, sampled) and the largest of the whole process tree
(`wait4`'s ru_maxrss: pg_dump, pg_restore, the uploader or us). Targets: runner wall time at most 1.0 × the
baseline's, runner RSS under 150 MB.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hack.harness.databases import PostgresServer
from hack.harness.objectstore import SeaweedFS
from runner.objectstore import IN_FLIGHT, PART_SIZE
from tests.backup.cli import command, password_env
from tests.bench.bench_runner import MB, Measure, best, raw_pg, run_pipeline
from tests.bench.results import table

ROWS = 6_100_000
FILL_STEP = 762_500
ROUNDS = 3

# Vocabulary: 1,000 made-up words of 4 to 12 letters; each row picks 12 at random.
_WORDS = (
    "(SELECT array_agg(substr(md5(i::text), 1, 3 + i % 7) || substr('aeiouy', 1 + i % 6, 1 + i % 3)) AS w"
    " FROM generate_series(1, 1000) i) v"
)
_BODY = " || ' ' || ".join(["w[1 + (random() * 999)::int]"] * 12)

# The baseline's upload, in its own process as the runner is: boto3's managed transfer of a finished file.
UPLOAD = """
import sys
import boto3
from boto3.s3.transfer import TransferConfig
file, bucket, key, part, threads = sys.argv[1:]
config = TransferConfig(multipart_threshold=int(part), multipart_chunksize=int(part), max_concurrency=int(threads))
boto3.client("s3").upload_file(file, bucket, key, Config=config, ExtraArgs={"ChecksumAlgorithm": "SHA256"})
"""


def fill(server: PostgresServer) -> int:
    server.sql("CREATE DATABASE bench")
    server.sql(
        "CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL, kind text NOT NULL, body text NOT NULL,"
        " blob bytea NOT NULL)",
        "bench",
    )

    def insert(start: int) -> None:
        server.sql(
            "INSERT INTO events SELECT g, timestamptz '2026-01-01' + g * interval '1 second',"
            f" (ARRAY['order', 'refund', 'login', 'logout', 'view'])[1 + g % 5], {_BODY},"
            f" decode(md5(random()::text), 'hex') FROM generate_series({start + 1}, {start + FILL_STEP}) g, {_WORDS}",
            "bench",
        )

    # Two sessions: one CPU each.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(insert, range(0, ROWS, FILL_STEP)))
    server.sql("VACUUM ANALYZE", "bench")
    return int(server.sql("SELECT pg_database_size('bench')"))


class Bench:
    def __init__(self, pg: PostgresServer, store: SeaweedFS, work: Path) -> None:
        self.pg, self.store, self.work = pg, store, work
        self.client = store.client()
        self.errors = work / "stderr.log"  # the last command's, shown if it fails

    def baseline(self) -> tuple[Measure, Measure]:
        """The dump to a file, then its upload: each measured."""
        file = self.work / "bench.dump"
        dump = raw_pg(self.pg, file, "gzip")
        key = f"baseline-{uuid.uuid4().hex[:8]}/bench.dump"
        argv = [sys.executable, "-c", UPLOAD, str(file), self.store.bucket, key, str(PART_SIZE), str(IN_FLIGHT)]
        upload = run_pipeline([argv], os.environ | self.store.env, None, errors=self.errors)
        upload.size = self.size(key)
        assert upload.size == dump.size, f"uploaded {upload.size} bytes of {dump.size}"
        file.unlink()
        self.delete(key)
        return dump, upload

    def runner(self, *, verify: bool) -> tuple[Measure, str]:
        """`dbb-backup run` into a prefix of its own; returns the measure and the object's key (kept)."""
        prefix = f"runner-{uuid.uuid4().hex[:8]}"
        argv = [command(), "run", "--engine=postgresql", f"--host={self.pg.host}", f"--port={self.pg.port}"]
        argv += [f"--user={self.pg.user}", "--database=bench", f"--output-url=s3://{self.store.bucket}/{prefix}"]
        argv += ["--compression=gzip", "--keep-last=7", "--stale-upload-age=0", *(["--verify"] if verify else [])]
        env = password_env(self.pg) | self.store.env
        measure = run_pipeline([argv], env, None, watch_first=True, errors=self.errors)
        (key,) = [k for k in self.store.keys(prefix + "/") if not k.endswith(".json")]
        measure.size = self.size(key)
        return measure, key

    def verify(self, key: str) -> Measure:
        argv = [command(), "verify", f"s3://{self.store.bucket}/{key}"]
        measure = run_pipeline([argv], os.environ | self.store.env, None, watch_first=True, errors=self.errors)
        measure.size = self.size(key)
        return measure

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.store.bucket, Key=key)["ContentLength"])

    def delete(self, key: str) -> None:
        """The object and everything beside it under its prefix (its manifest)."""
        for found in self.store.keys(key.split("/")[0] + "/"):
            self.client.delete_object(Bucket=self.store.bucket, Key=found)


def _total(dump: Measure, upload: Measure) -> Measure:
    return Measure(dump.wall + upload.wall, max(dump.tree_rss, upload.tree_rss), 0, upload.size)


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="dbb-bench-s3-"))
    measures: dict[str, list[Measure]] = {k: [] for k in ("base", "dump", "upload", "run", "stream", "verify")}
    loads: list[float] = []
    try:
        with (
            PostgresServer.start(settings={"shared_buffers": "256MB", "max_wal_size": "4GB"}) as pg,
            SeaweedFS.start(work / "seaweedfs") as store,
        ):
            db_size = fill(pg)
            bench = Bench(pg, store, work)

            def baseline() -> None:
                dump, upload = bench.baseline()
                measures["dump"].append(dump)
                measures["upload"].append(upload)
                measures["base"].append(_total(dump, upload))

            def runner() -> None:
                measure, key = bench.runner(verify=True)
                measures["run"].append(measure)
                bench.delete(key)

            def breakdown() -> None:
                measure, key = bench.runner(verify=False)
                measures["stream"].append(measure)
                measures["verify"].append(bench.verify(key))
                bench.delete(key)

            steps: list[Callable[[], None]] = [baseline, runner, breakdown]
            for round_ in range(ROUNDS):
                loads.append(os.getloadavg()[0])
                for step in steps if round_ % 2 == 0 else reversed(steps):
                    step()
            loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(db_size, {k: best(v) for k, v in measures.items()}, loads)


def report(db_size: int, m: dict[str, Measure], loads: list[float]) -> str:
    base, run = m["base"], m["run"]

    def row(name: str, measure: Measure, ratio: bool = True) -> list[str]:
        rss = f"{measure.runner_rss / MB:.0f}" if measure.runner_rss else "—"
        return [
            name,
            f"{measure.wall:.1f}",
            f"{measure.wall / base.wall:.3f}" if ratio else "1.000 (baseline)",
            f"{db_size / MB / measure.wall:.1f}",
            f"{measure.size / MB / measure.wall:.1f}",
            f"{measure.size / MB:.1f}",
            rss,
            f"{measure.tree_rss / MB:.0f}",
        ]

    header = ["run", "wall s", "× baseline", "database MB/s", "object MB/s", "object MB", "runner peak RSS MB"]
    header.append("largest process RSS MB")
    main_rows = [
        row("baseline: `pg_dump -Fc -f file`, then boto3 `upload_file`", base, ratio=False),
        row("`dbb-backup run --output-url s3://… --verify` (as the Job)", run),
    ]
    parts = [
        row("baseline, first half: `pg_dump -Fc -f file`", m["dump"]),
        row("baseline, second half: `upload_file` (8 MiB parts, 2 threads, SHA-256)", m["upload"]),
        row("`dbb-backup run --output-url s3://…` without `--verify`", m["stream"]),
        row("`dbb-backup verify s3://…` (the read-back alone)", m["verify"]),
    ]
    ratio = run.wall / base.wall
    targets = [
        f"- runner wall: {ratio:.3f} × the baseline's (target ≤ 1.0): {'met' if ratio <= 1.0 else 'MISSED'}",
        f"- runner peak RSS: {run.runner_rss / MB:.0f} MB (target < 150 MB): "
        f"{'met' if run.runner_rss < 150 * MB else 'MISSED'}",
        f"- the same runner without `--verify`: {m['stream'].wall / base.wall:.3f} × the baseline's; the read-back "
        f"alone (`dbb-backup verify s3://…`) takes {m['verify'].wall:.1f} s",
    ]
    notes = (
        f"Best of {ROUNDS} rounds, the order reversed every other round; each row's best is its own (the baseline's "
        "halves need not come from the same round as its total). MB/s: database bytes (pg_database_size) and "
        "object bytes over the wall time. The runner's wall includes its read-back verification (the object "
        "downloaded and checksummed, then its archive read to the end by `pg_restore`): it is part of what the "
        "runner guarantees and the baseline does not. SeaweedFS, PostgreSQL and both sides share the machine's "
        "CPUs. 1-minute load average at the start of each round and at the end: "
        + ", ".join(f"{load:.2f}" for load in loads)
        + "."
    )
    return "\n\n".join(
        [
            f"### PostgreSQL 15: {ROWS:,} event rows (words and random bytes), pg_database_size "
            f"{db_size / MB:.0f} MB; SeaweedFS on loopback",
            table(header, main_rows),
            "\n".join(targets),
            "Where the time goes (same rounds):",
            table(header, parts),
            notes,
        ]
    )
