"""Point-in-time recovery for PostgreSQL, at the runner, against a real PostgreSQL 15: `dbb-backup archive --engine
postgresql` (WAL through pg_receivewal and a slot of its own; a killed archiver resumed; the preconditions),
`dbb-backup basebackup`, and `dbb-backup restore BASEBACKUP --point-in-time`."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zstandard

from hack.harness.databases import PG_BIN, PostgresServer
from tests.backup.cli import Outcome, children, connection_args, dbb, gone, password_env, spawn, wait_for
from tests.unit.test_runner_archive_status import free_port, get

T = TypeVar("T")


@pytest.fixture(scope="module")
def primary() -> Iterator[PostgresServer]:
    """A PostgreSQL as initdb makes it: wal_level replica, and pg_hba.conf's `host replication all 127.0.0.1/32`."""
    with PostgresServer.start() as server:
        server.sql("CREATE DATABASE shop")
        yield server


def archive_args(server: PostgresServer, folder: Path, name: str, max_lag: float, *flags: str) -> list[str]:
    where = ["--output-dir", str(folder), "--name", name, "--max-lag", str(max_lag)]
    return ["archive", "--engine", "postgresql", *connection_args(server), *where, *flags]


@contextmanager
def archiving(
    server: PostgresServer, folder: Path, name: str, max_lag: float = 2, *flags: str
) -> Iterator[subprocess.Popen[str]]:
    """`dbb-backup archive` in the background; stopped with SIGTERM at the end (unless the test killed it)."""
    process = spawn(archive_args(server, folder, name, max_lag, *flags), server)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
        assert process.returncode in (0, -signal.SIGKILL), err


def entries(folder: Path, name: str) -> dict[str, dict[str, Any]]:
    """The WAL archive's index: {entry file name: entry} (gap records, `*.gap.json`, are no entries)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / f"{name}-wal").glob("*.json")):
        if path.name.endswith(".gap.json"):
            continue
        with contextlib.suppress(FileNotFoundError):  # a partial entry goes when its segment completes
            found[path.name] = json.loads(path.read_text())
    return found


def closed_segments(folder: Path, name: str) -> list[str]:
    return sorted(e["segment"] for e in entries(folder, name).values() if e["closed"] and len(e["segment"]) == 24)


def unpacked(folder: Path, name: str, into: Path) -> list[str]:
    """Every completed segment of the archive, decompressed into `into` (each held to its sha256 first)."""
    into.mkdir(exist_ok=True)
    names = closed_segments(folder, name)
    for segment in names:
        entry = json.loads((folder / f"{name}-wal" / f"{segment}.json").read_text())
        stored = (folder / f"{name}-wal" / entry["object"]).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == entry["sha256"], segment
        (into / segment).write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(stored))
    return names


def inserts_in(wal: Path, first: str, last: str, relation: str) -> int:
    """Heap INSERT records for `relation` (tablespace/database/relfilenode) in the segments first..last: pg_waldump
    fails on a missing segment, so this also proves there is no gap."""
    result = subprocess.run(
        [str(PG_BIN / "pg_waldump"), "-p", str(wal), "-r", "Heap", f"--relation={relation}", first, last],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return sum(1 for line in result.stdout.splitlines() if "desc: INSERT" in line)


def relation_of(server: PostgresServer, database: str, table: str) -> str:
    return server.sql(
        "SELECT coalesce(nullif(reltablespace, 0), (SELECT dattablespace FROM pg_database WHERE datname ="
        f" current_database())) || '/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/' ||"
        f" pg_relation_filenode('{table}') FROM pg_class WHERE oid = '{table}'::regclass",
        database,
    )


def test_the_archiver_publishes_completed_segments_and_the_partial_one_within_max_lag(
    primary: PostgresServer, tmp_path: Path
) -> None:
    with archiving(primary, tmp_path, "orders", max_lag=2):
        primary.sql("CREATE TABLE IF NOT EXISTS orders (id int)", "shop")
        switched = primary.sql("SELECT pg_walfile_name(pg_switch_wal())")
        wait_for(lambda: switched in closed_segments(tmp_path, "orders"), "the switched segment archived as closed")
        primary.sql("INSERT INTO orders VALUES (1)", "shop")
        position = primary.sql("SELECT pg_current_wal_insert_lsn()")
        current = primary.sql(f"SELECT pg_walfile_name('{position}')")

        def partial_holds_the_insert() -> bool:
            entry = entries(tmp_path, "orders").get(f"{current}.partial.json", {})
            held = entry.get("endLsn")
            return held is not None and lsn(held) >= lsn(position)

        wait_for(partial_holds_the_insert, "the partial segment archived past the insert", timeout=10)

    index = entries(tmp_path, "orders")
    entry = index[f"{switched}.json"]
    assert (entry["closed"], entry["timeline"], entry["walSize"]) == (True, 1, 16 << 20)
    assert f"{switched}.partial.json" not in index, "a completed segment's partial entry is removed"
    assert index[f"{current}.partial.json"]["until"] is not None


def lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@pytest.mark.parametrize("spool", ["kept", "lost"])
def test_an_archiver_killed_mid_stream_resumes_with_no_gap_and_no_duplicate(
    primary: PostgresServer, tmp_path: Path, spool: str
) -> None:
    """`lost`: pg_receivewal's spool is gone too (a Pod on another node): streaming resumes after the archive's
    newest completed segment, which the slot kept on the server."""
    table = f"ticks_{spool}"
    primary.sql(f"CREATE TABLE {table} (id int)", "shop")
    relation = relation_of(primary, "shop", table)
    written = iter(range(1, 10_000))

    def write(count: int) -> None:
        primary.sql(";".join(f"INSERT INTO {table} VALUES ({next(written)})" for _ in range(count)), "shop")

    def switch() -> str:
        return primary.sql("SELECT pg_walfile_name(pg_switch_wal())")

    with archiving(primary, tmp_path, "ticks", max_lag=2) as first:
        write(20)
        done = switch()
        write(20)
        wait_for(lambda: done in closed_segments(tmp_path, "ticks"), "a completed segment archived")
        wait_for(
            lambda: any(not e["closed"] for e in entries(tmp_path, "ticks").values()), "the partial segment archived"
        )
        tool = children(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait()
        wait_for(lambda: all(gone(pid) for pid in tool), "the killed archiver's pg_receivewal to die with it")
    if spool == "lost":
        shutil.rmtree(tmp_path / "ticks-wal" / ".receive")
    # Written while no archiver ran, into the segment it was on and into the next: the slot kept them.
    write(20)
    switch()
    write(20)
    with archiving(primary, tmp_path, "ticks", max_lag=2):
        write(20)
        last = switch()
        wait_for(lambda: last in closed_segments(tmp_path, "ticks"), "every completed segment archived")

    names = unpacked(tmp_path, "ticks", tmp_path / "wal")
    numbers = [int(n[8:], 16) for n in names]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"a gap in {names}"
    assert inserts_in(tmp_path / "wal", names[0], last, relation) == 100


def test_the_status_endpoint_reports_the_archive_s_bounds(primary: PostgresServer, tmp_path: Path) -> None:
    port = free_port()
    with archiving(primary, tmp_path, "status", 2, "--status-port", str(port)):
        primary.sql("SELECT pg_switch_wal()")

        def reported() -> bool:
            body = json.loads(get(port, "/status")[1] or "{}")
            return body.get("lagSeconds") is not None and body.get("archived", 0) >= 1

        wait_for(reported, "the status to show an archived segment and a lag")
        body = json.loads(get(port, "/status")[1])
        assert body["recoverableUntil"] is not None
        assert body["recoverableFrom"] <= body["recoverableUntil"]
        assert body["lagSeconds"] < 30
        assert (body["reason"], body["message"]) == (None, None)
        assert get(port, "/healthz") == (200, "ok\n")


def test_archiving_a_server_with_wal_level_minimal_says_what_to_set(tmp_path: Path) -> None:
    with PostgresServer.start(settings={"wal_level": "minimal", "max_wal_senders": "0"}) as minimal:
        outcome = dbb(*archive_args(minimal, tmp_path, "app", 2), env=password_env(minimal), timeout=60)

    assert outcome.code == 1
    assert outcome.reason_line == (
        "dbb-backup: WalLevelMinimal: the server's wal_level is minimal: set wal_level = replica (and "
        "max_wal_senders > 0) and restart it"
    )


def test_archiving_as_a_user_without_replication_says_what_to_set(primary: PostgresServer, tmp_path: Path) -> None:
    primary.sql("CREATE ROLE clerk LOGIN PASSWORD 'clerk-pw'")
    try:
        args = archive_args(primary, tmp_path, "app", 2)
        args[args.index(primary.user)] = "clerk"
        outcome = dbb(*args, env=password_env(primary, "clerk-pw"), timeout=60)
    finally:
        primary.sql("DROP ROLE clerk")

    assert outcome.code == 1
    assert outcome.reason_line == (
        "dbb-backup: ReplicationNotAllowed: the user clerk may not stream WAL: ALTER ROLE clerk WITH REPLICATION"
    )


def test_archiving_without_a_replication_line_in_pg_hba_says_what_to_set(tmp_path: Path) -> None:
    hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    with PostgresServer.start(hba=hba) as server:
        outcome = dbb(*archive_args(server, tmp_path, "app", 2), env=password_env(server), timeout=60)

    assert outcome.code == 1
    assert outcome.reason_line.startswith(
        "dbb-backup: ReplicationNotAllowed: pg_hba.conf has no replication entry for this user and host: add a line"
    ), outcome.stderr


# --- base backups and restoring to a point in time -----------------------------------------------------------------


def base_backup(server: PostgresServer, folder: Path, name: str, *flags: str) -> Path:
    args = ["basebackup", *connection_args(server), "--output-dir", str(folder), "--name", name, *flags]
    outcome = dbb(*args, env=password_env(server), timeout=120)
    assert outcome.code == 0, outcome.stderr
    return Path(outcome.result["file"])


def written_rows(server: PostgresServer, database: str) -> dict[int, datetime]:
    """{row id: when it was written (clock_timestamp() in its own transaction, just before its commit)}."""
    rows = server.sql("SELECT id, at FROM rows ORDER BY id", database).splitlines()
    return {int(i): datetime.fromisoformat(at) for i, at in (r.split("|") for r in rows)}


def server_now(server: PostgresServer) -> datetime:
    return datetime.fromisoformat(server.sql("SELECT clock_timestamp()"))


def newest_until(folder: Path, name: str) -> datetime:
    untils = [e["until"] for e in entries(folder, name).values() if e["until"]]
    return max((datetime.fromisoformat(u) for u in untils), default=datetime.min.replace(tzinfo=UTC))


def pitr_restore(server: PostgresServer, file: Path, point: datetime, database: str, *flags: str) -> Outcome:
    args = ["restore", str(file), *connection_args(server), "--point-in-time", point.isoformat()]
    args += ["--database", database, *flags]
    return dbb(*args, "--pg-bin", str(PG_BIN), env=password_env(server), timeout=300)


def test_a_base_backup_records_where_its_wal_starts_and_ends(primary: PostgresServer, tmp_path: Path) -> None:
    before = primary.sql("SELECT pg_current_wal_insert_lsn()")
    made = base_backup(primary, tmp_path, "cluster")
    after = primary.sql("SELECT pg_current_wal_insert_lsn()")

    manifest = json.loads(made.with_name(made.name + ".json").read_text())
    assert made.name.startswith("cluster-")
    assert made.name.endswith(".base.tar.zst")
    assert manifest["kind"] == "basebackup"
    assert manifest["sha256"] == hashlib.sha256(made.read_bytes()).hexdigest()
    assert lsn(before) <= lsn(manifest["wal"]["startLsn"]) <= lsn(manifest["wal"]["endLsn"]) <= lsn(after)
    assert manifest["start"] < manifest["end"]
    with tarfile.open(
        fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(made.read_bytes()))
    ) as tar:
        assert "PG_VERSION" in tar.getnames()
        assert "backup_label" in tar.getnames()


class Workload:
    """Numbered rows written one transaction each, continuously, in a thread; `paused()` holds it between two
    writes (after a commit returned, before the next began), so that an instant between two known writes exists."""

    def __init__(self, server: PostgresServer, database: str) -> None:
        self.server, self.database = server, database
        self.written: list[int] = []
        self.stop, self.hold, self.held = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self.run, name="workload")

    def run(self) -> None:
        for number in itertools.count(1):
            if self.stop.is_set():
                return
            if self.hold.is_set():
                self.held.set()
                while self.hold.is_set() and not self.stop.is_set():
                    time.sleep(0.01)
                self.held.clear()
            self.server.sql(f"INSERT INTO rows (id) VALUES ({number})", self.database)
            self.written.append(number)

    @contextmanager
    def paused(self) -> Iterator[int]:
        """Yields the last row written before the pause."""
        self.hold.set()
        wait_for(self.held.is_set, "the workload to pause between two writes")
        try:
            yield self.written[-1]
        finally:
            self.hold.clear()

    def wait_beyond(self, rows: int) -> None:
        target = len(self.written) + rows
        wait_for(lambda: len(self.written) >= target, f"{rows} more rows written")

    def around(self, take: Callable[[], T]) -> tuple[T, int, datetime]:
        """Writes rows while `take` runs (a base backup), then more across a segment switch, and picks a point
        between two writes after it: (what `take` returned, the last row written before the point, the point)."""
        self.thread.start()
        try:
            self.wait_beyond(5)
            taken = take()
            self.wait_beyond(10)
            self.server.sql("SELECT pg_switch_wal()")  # the recovery crosses from one archived segment into the next
            self.wait_beyond(10)
            with self.paused() as last:
                point = server_now(self.server)  # after row `last` committed, before the next began
            self.wait_beyond(20)
        finally:
            self.stop.set()
            self.thread.join()
        return taken, last, point


def test_a_point_in_time_restore_has_every_row_up_to_it_and_none_after(primary: PostgresServer, tmp_path: Path) -> None:
    primary.sql("CREATE DATABASE ledger")
    primary.sql("CREATE TABLE rows (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())", "ledger")
    workload = Workload(primary, "ledger")
    with archiving(primary, tmp_path, "ledger", max_lag=1):

        def take() -> tuple[Path, int]:
            made = base_backup(primary, tmp_path, "ledger")  # while rows are being written
            return made, len(workload.written)

        (made, during), last, point = workload.around(take)
        end = server_now(primary)
        wait_for(lambda: newest_until(tmp_path, "ledger") >= end, "the archive to reach the last write")

        outcome = pitr_restore(primary, made, point, "ledger=ledger_pitr")

    assert outcome.code == 0, outcome.stderr
    assert sorted(written_rows(primary, "ledger_pitr")) == list(range(1, last + 1))
    assert len(written_rows(primary, "ledger")) >= last + 20, "rows were written after the point"
    assert during > 5, "rows were written while the base backup ran"
    assert outcome.result["databases"] == {"ledger": "ledger_pitr"}
    assert outcome.result["replayed"] == "target"
    assert outcome.result["replayedUntil"] == point.isoformat().replace("+00:00", "Z")


def test_a_point_in_time_outside_what_the_base_backup_and_archive_cover_is_refused_untouched(
    primary: PostgresServer, tmp_path: Path
) -> None:
    primary.sql("CREATE DATABASE bounds")
    with archiving(primary, tmp_path, "bounds", max_lag=1):
        made = base_backup(primary, tmp_path, "bounds")
        manifest = json.loads(made.with_name(made.name + ".json").read_text())
        wait_for(lambda: newest_until(tmp_path, "bounds") > datetime.fromisoformat(manifest["end"]), "the archive")
    newest = newest_until(tmp_path, "bounds")

    early = pitr_restore(primary, made, datetime.fromisoformat(manifest["start"]), "bounds=bounds_early")
    late = pitr_restore(primary, made, newest + timedelta(hours=1), "bounds=bounds_late")

    assert early.code == 1
    assert early.reason_line.startswith("dbb-backup: InvalidArguments: --point-in-time ")
    assert f"is before the base backup ended ({manifest['end']})" in early.reason_line
    assert late.code == 1
    assert "is after the newest archived WAL" in late.reason_line, late.stderr
    assert not {"bounds_early", "bounds_late"} & set(primary.databases())


def test_a_point_after_the_last_commit_restores_everything_archived(primary: PostgresServer, tmp_path: Path) -> None:
    primary.sql("CREATE DATABASE quiet")
    primary.sql("CREATE TABLE rows (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())", "quiet")
    with archiving(primary, tmp_path, "quiet", max_lag=1):
        made = base_backup(primary, tmp_path, "quiet")
        primary.sql("INSERT INTO rows (id) VALUES (1); INSERT INTO rows (id) VALUES (2)", "quiet")
        last = max(written_rows(primary, "quiet").values())
        # No commit follows in this database; the archive's `until` moves on all the same (the server is idle).
        wait_for(lambda: newest_until(tmp_path, "quiet") >= last + timedelta(seconds=2), "the archive to move on")

        outcome = pitr_restore(primary, made, last + timedelta(seconds=1), "quiet=quiet_pitr")

    assert outcome.code == 0, outcome.stderr
    assert sorted(written_rows(primary, "quiet_pitr")) == [1, 2]
    assert outcome.result["replayed"] == "whole archive", "no commit after the point: recovery ran to the end"


def test_an_encrypted_base_backup_restores_with_its_key_and_is_refused_untouched_without_it(
    primary: PostgresServer, tmp_path: Path, key_file: Path
) -> None:
    primary.sql("CREATE DATABASE vault")
    primary.sql("CREATE TABLE rows (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())", "vault")
    with archiving(primary, tmp_path, "vault", max_lag=1):
        made = base_backup(primary, tmp_path, "vault", "--encryption-key-file", str(key_file))
        primary.sql("INSERT INTO rows (id) VALUES (1)", "vault")
        time.sleep(0.3)  # the point lies between the two writes
        point = datetime.now(UTC)
        time.sleep(0.3)
        primary.sql("INSERT INTO rows (id) VALUES (2)", "vault")
        wait_for(
            lambda: newest_until(tmp_path, "vault") > point + timedelta(seconds=1), "the archive to pass the point"
        )

        refused = pitr_restore(primary, made, point, "vault=vault_nokey")
        outcome = pitr_restore(primary, made, point, "vault=vault_pitr", "--key-file", str(key_file))

    assert made.name.endswith(".base.tar.zst.enc")
    assert refused.code == 1
    assert "is encrypted: give key" in refused.reason_line, refused.stderr
    assert "vault_nokey" not in primary.databases()
    assert outcome.code == 0, outcome.stderr
    assert sorted(written_rows(primary, "vault_pitr")) == [1]
