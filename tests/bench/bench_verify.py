"""What proving a stored backup costs, against taking it, on the 1.1 GB PostgreSQL database of `bench_s3`.

Compared, each the best of three rounds whose order is reversed every other round:
- baseline: the backup itself, `dbb-backup run --output-dir … --compression gzip --verify` as the Job runs it
  (dump, compress, checksum, the run's own structural check, publish);
- `dbb-backup check FOLDER --owner-uid … --backups 1` as a scheduled verification runs it: the stored backup read
  again, size and sha256 against its manifest, and its archive read to the end by `pg_restore`;
- the same with `--restore-test`: also restored, in one transaction, into a scratch PostgreSQL server (a second
  server on this machine here; in a cluster, the sidecar in the check's own Pod) and its tables counted.

Everything shares the machine's 2 CPUs: the source server, the scratch server and the runner. Each check's JSON
line must report the one backup as passed (a check that finds no backup exits 0 too), once untimed before the
rounds and after every timed run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from hack.harness.databases import PostgresServer
from tests.backup.cli import command, password_env
from tests.bench.bench_runner import MB, Measure, best, run_pipeline
from tests.bench.bench_s3 import ROWS, fill
from tests.bench.results import table

ROUNDS = 3
OWNER_UID = str(uuid.uuid4())


def main() -> str:
    work = Path(tempfile.mkdtemp(prefix="dbb-bench-verify-"))
    measures: dict[str, list[Measure]] = {k: [] for k in ("backup", "check", "restore")}
    loads: list[float] = []
    errors = work / "stderr.log"
    answer = work / "check.json"
    folder = work / "backups"
    settings = {"shared_buffers": "256MB", "max_wal_size": "4GB"}
    try:
        with (
            PostgresServer.start(settings=settings) as pg,
            PostgresServer.start(password="scratch-password", settings={"fsync": "off", **settings}) as scratch,
        ):
            db_size = fill(pg)

            def backup() -> None:
                argv = [command(), "run", "--engine=postgresql", f"--host={pg.host}", f"--port={pg.port}"]
                argv += [f"--user={pg.user}", "--database=bench", f"--output-dir={folder}", "--name=bench"]
                argv += ["--owner=bench/bench", f"--owner-uid={OWNER_UID}", "--compression=gzip", "--keep-last=1"]
                measure = run_pipeline([[*argv, "--verify"]], password_env(pg), None, watch_first=True, errors=errors)
                measure.size = stored_size(folder)
                measures["backup"].append(measure)

            def check(restore: bool) -> Callable[[], None]:
                def step() -> None:
                    argv = [command(), "check", str(folder), f"--owner-uid={OWNER_UID}", "--backups=1"]
                    env = dict(os.environ)
                    if restore:
                        argv += ["--restore-test", f"--scratch-port={scratch.port}", f"--scratch-user={scratch.user}"]
                        env |= password_env(scratch)
                    measure = run_pipeline([argv], env, answer, watch_first=True, errors=errors)
                    checked(answer, restore=restore)
                    measure.size = stored_size(folder)
                    measures["restore" if restore else "check"].append(measure)

                return step

            steps: list[Callable[[], None]] = [backup, check(False), check(True)]
            backup()  # the first check needs a backup to find
            measures["backup"].clear()
            for step in steps[1:]:  # once untimed: a check that finds nothing also exits 0
                step()
            measures["check"].clear()
            measures["restore"].clear()
            for round_ in range(ROUNDS):
                loads.append(os.getloadavg()[0])
                for step in steps if round_ % 2 == 0 else reversed(steps):
                    step()
            loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(db_size, {k: best(v) for k, v in measures.items()}, loads)


def checked(answer: Path, *, restore: bool) -> None:
    """A check's JSON line must report the one backup, passed: `check` exits 0 when it finds no backup at all."""
    result = json.loads(answer.read_text().strip().splitlines()[-1])
    found = result.get("checked") or []
    if result.get("status") != "Verified" or len(found) != 1 or found[0].get("result") != "Passed":
        what = "check --restore-test" if restore else "check"
        raise RuntimeError(f"{what} did not verify the one backup: {json.dumps(result)[:600]}")


def stored_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if not p.name.endswith(".json") and p.is_file())


def report(db_size: int, m: dict[str, Measure], loads: list[float]) -> str:
    base = m["backup"]

    def row(name: str, measure: Measure, ratio: bool = True) -> list[str]:
        return [
            name,
            f"{measure.wall:.1f}",
            f"{measure.wall / base.wall:.3f}" if ratio else "1.000 (baseline)",
            f"{db_size / MB / measure.wall:.1f}",
            f"{measure.size / MB:.1f}",
            f"{measure.tree_rss / MB:.0f}",
        ]

    header = ["run", "wall s", "× the backup", "database MB/s", "backup MB", "largest process RSS MB"]
    rows = [
        row("the backup: `dbb-backup run --output-dir … --verify` (as the Job)", base, ratio=False),
        row("a scheduled check: `dbb-backup check … --backups 1`", m["check"]),
        row("with the restore test: `dbb-backup check … --restore-test` into a scratch server", m["restore"]),
    ]
    notes = (
        f"Best of {ROUNDS} rounds, the order reversed every other round. The restore test restores the whole "
        "database into the scratch server in one transaction (`pg_restore -f - | psql`, without owners), compares "
        "its tables with the dump's and each table's rows with the manifest's, and drops it. Every run also counts "
        "each table's rows in the dump as it verifies it. "
        "1-minute load average at the start of each round and at the end: "
        + ", ".join(f"{load:.2f}" for load in loads)
        + "."
    )
    return "\n\n".join(
        [
            f"### PostgreSQL 15: {ROWS:,} event rows, pg_database_size {db_size / MB:.0f} MB; backups in a folder",
            table(header, rows),
            f"- a check takes {m['check'].wall / base.wall:.2f} × the backup's time; with the restore test "
            f"{m['restore'].wall / base.wall:.2f} ×.",
            notes,
        ]
    )
