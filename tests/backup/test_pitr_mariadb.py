"""Point-in-time recovery for MariaDB, at the runner, against a real server with binary logging: the binlog
coordinates of a dump's own snapshot in its manifest, `dbb-backup archive` (closed and open binlogs, a killed
archiver resumed, a purged binlog), and `dbb-backup restore --point-in-time`."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard

from hack.harness.databases import MariaDBServer
from tests.backup.cli import (
    Outcome,
    backup,
    children,
    connection_args,
    dbb,
    gone,
    password_env,
    restore,
    run_args,
    spawn,
    wait_for,
)
from tests.unit.test_runner_archive_status import free_port, get

BINLOG = {"log-bin": "mysql-bin", "server-id": "1", "binlog-format": "ROW"}


@pytest.fixture(scope="module")
def binlogged() -> Iterator[MariaDBServer]:
    """A MariaDB with binary logging on, as point-in-time recovery needs it, and a database `shop`."""
    with MariaDBServer.start(settings=BINLOG) as server:
        server.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id int PRIMARY KEY, at datetime(6))")
        yield server


def manifest_of(file: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(file.with_name(file.name + ".json").read_text())
    return loaded


def test_a_backup_records_the_binlog_position_of_its_snapshot(binlogged: MariaDBServer, backups: Path) -> None:
    binlogged.sql("INSERT INTO shop.orders VALUES (1, NOW(6)), (2, NOW(6))")
    file, position, *_ = binlogged.sql("SHOW MASTER STATUS").split("\t")
    gtid = binlogged.sql("SELECT @@gtid_binlog_pos")

    made = backup(binlogged, backups, "shop", verify=None)

    # Nothing was written while the dump ran: its snapshot is the server's newest state.
    assert manifest_of(made)["binlog"] == {"file": file, "position": int(position), "gtid": gtid}


def test_a_backup_user_that_can_only_read_gets_the_coordinates_too(binlogged: MariaDBServer, backups: Path) -> None:
    # No RELOAD (no FLUSH TABLES WITH READ LOCK is taken), no BINLOG MONITOR (the snapshot's own status is read).
    binlogged.sql(
        "CREATE USER reader@'127.0.0.1' IDENTIFIED BY 'reader-pw';"
        "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON shop.* TO reader@'127.0.0.1'"
    )
    try:
        outcome = dbb(*run_args(binlogged, backups, "shop", user="reader"), env=password_env(binlogged, "reader-pw"))
        file, position, *_ = binlogged.sql("SHOW MASTER STATUS").split("\t")
        gtid = binlogged.sql("SELECT @@gtid_binlog_pos")
    finally:
        binlogged.sql("DROP USER reader@'127.0.0.1'")

    assert outcome.code == 0, outcome.stderr
    assert manifest_of(Path(outcome.result["file"]))["binlog"] == {
        "file": file,
        "position": int(position),
        "gtid": gtid,
    }


def test_a_backup_of_a_server_without_binary_logging_has_no_binlog_key(mariadb: MariaDBServer, backups: Path) -> None:
    made = backup(mariadb, backups, "crm", verify=None)

    assert "binlog" not in manifest_of(made)


def test_a_backup_with_coordinates_restores_as_before(binlogged: MariaDBServer, backups: Path) -> None:
    binlogged.sql("INSERT INTO shop.orders VALUES (3, NOW(6))")
    made = backup(binlogged, backups, "shop", verify=None)

    outcome = restore(binlogged, made, "shop_copy")

    assert outcome.code == 0, outcome.stderr
    assert binlogged.sql("SELECT COUNT(*) FROM shop_copy.orders") == binlogged.sql("SELECT COUNT(*) FROM shop.orders")
    binlogged.drop_database("shop_copy")


# --- the archiver --------------------------------------------------------------------------------------------


def archive_args(server: MariaDBServer, folder: Path, max_lag: float, name: str = "shop", *flags: str) -> list[str]:
    where = ["--output-dir", str(folder), "--name", name, "--max-lag", str(max_lag)]
    return ["archive", "--engine", "mysql", *connection_args(server), *where, *flags]


@contextmanager
def archiving(
    server: MariaDBServer, folder: Path, max_lag: float = 4, name: str = "shop", *flags: str
) -> Iterator[subprocess.Popen[str]]:
    """`dbb-backup archive` in the background; stopped with SIGTERM at the end (unless the test ended it)."""
    with running(spawn(archive_args(server, folder, max_lag, name, *flags), server)) as process:
        # Its lock is taken after its SIGTERM handler is set: a stop from then on is a clean one.
        lock = folder / f"{name}-binlog" / ".lock"
        wait_for(lambda: lock.exists() or process.poll() is not None, "the archiver to start")
        yield process


@contextmanager
def running(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """An archiver started in the background, stopped with SIGTERM at the end (unless the test ended it); it must
    end well (or by the SIGKILL the test sent)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
        assert process.returncode in (0, -signal.SIGKILL), err


def entry_paths(archive: Path) -> list[Path]:
    """The index entries of an archive folder: its JSON files but the gap records and the checkpoint."""
    found = archive.glob("*.json")
    return sorted(p for p in found if not p.name.endswith(".gap.json") and p.name != "complete.json")


def entries(folder: Path) -> dict[str, dict[str, Any]]:
    """The archive's index: {entry file name: entry}."""
    found: dict[str, dict[str, Any]] = {}
    for path in entry_paths(folder / "shop-binlog"):
        with contextlib.suppress(FileNotFoundError):  # a partial entry goes when its binlog closes
            found[path.name] = json.loads(path.read_text())
    return found


def newest_event(folder: Path, name: str) -> datetime:
    times = []
    for path in entry_paths(folder / f"{name}-binlog"):
        with contextlib.suppress(FileNotFoundError):
            times.append(json.loads(path.read_text())["lastEvent"])
    return max((datetime.fromisoformat(t) for t in times if t), default=datetime.min.replace(tzinfo=UTC))


def server_binlogs(server: MariaDBServer) -> dict[str, int]:
    """{binlog: size} as the server lists them, the open one last."""
    return {
        name: int(size) for name, size in (line.split("\t")[:2] for line in server.sql("SHOW BINARY LOGS").splitlines())
    }


def archived_bytes(folder: Path, name: str) -> bytes:
    entry = json.loads((folder / "shop-binlog" / f"{name}.json").read_text())
    stored = (folder / "shop-binlog" / entry["object"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == entry["sha256"]
    return zstandard.ZstdDecompressor().decompressobj().decompress(stored)


def server_bytes(server: MariaDBServer, name: str) -> bytes:
    return (server.folder / "data" / name).read_bytes()


def test_the_archiver_publishes_closed_binlogs_and_the_open_one_within_max_lag(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    with archiving(binlogged, tmp_path, max_lag=4):
        binlogged.sql("INSERT INTO shop.orders VALUES (100, NOW(6))")
        open_file, position = binlogged.sql("SHOW MASTER STATUS").split("\t")[:2]
        partial = f"{open_file}.partial.json"

        # The open binlog, up to the insert, is archived within max-lag of it.
        wait_for(
            lambda: entries(tmp_path).get(partial, {}).get("binlogSize", 0) >= int(position),
            "the open binlog archived up to the insert",
            timeout=4,
        )
        binlogged.sql("FLUSH BINARY LOGS")
        wait_for(lambda: f"{open_file}.json" in entries(tmp_path), "the rotated binlog archived as closed")
        binlogged.sql("INSERT INTO shop.orders VALUES (101, NOW(6))")
        now_open, now_at = binlogged.sql("SHOW MASTER STATUS").split("\t")[:2]
    # Stopped by SIGTERM: the binlog it was on is published as far as the server had written it.

    index = entries(tmp_path)
    assert index[f"{open_file}.json"]["closed"] is True
    assert partial not in index, "a closed binlog's partial entry is removed"
    assert index[f"{now_open}.partial.json"]["binlogSize"] == int(now_at)
    # Every closed binlog is the server's file, byte for byte.
    for name in server_binlogs(binlogged):
        if f"{name}.json" in index:
            assert archived_bytes(tmp_path, name) == server_bytes(binlogged, name), name


def test_an_archiver_killed_mid_stream_resumes_with_no_gap_and_no_duplicate(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    binlogged.sql("CREATE TABLE shop.ticks (id int PRIMARY KEY)")
    written = iter(range(1, 10_000))

    def write(count: int) -> None:
        binlogged.sql(";".join(f"INSERT INTO shop.ticks VALUES ({next(written)})" for _ in range(count)))

    with archiving(binlogged, tmp_path, max_lag=2) as first:
        write(20)
        binlogged.sql("FLUSH BINARY LOGS")
        write(20)
        rotated = list(server_binlogs(binlogged))[-2]
        wait_for(lambda: f"{rotated}.json" in entries(tmp_path), "a closed binlog archived")
        wait_for(lambda: any(not e["closed"] for e in entries(tmp_path).values()), "the open binlog archived")
        tool = children(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait()
        wait_for(lambda: all(gone(pid) for pid in tool), "the killed archiver's binlog tool to die with it")
    # Written while no archiver ran, into the open binlog and one more.
    write(20)
    binlogged.sql("FLUSH BINARY LOGS")
    write(20)
    with archiving(binlogged, tmp_path, max_lag=2):
        write(20)
        binlogged.sql("FLUSH BINARY LOGS")
        closed = list(server_binlogs(binlogged))[:-1]
        wait_for(lambda: all(f"{n}.json" in entries(tmp_path) for n in closed), "every closed binlog archived")

    # Every binlog the server closed is archived once, as the server's own file; decoded, they insert each row once.
    files = [tmp_path / f"{name}.bin" for name in closed]
    for name, path in zip(closed, files, strict=True):
        path.write_bytes(archived_bytes(tmp_path, name))
        assert path.read_bytes() == server_bytes(binlogged, name), name
    decoded = subprocess.run(
        ["mariadb-binlog", "--no-defaults", "--base64-output=DECODE-ROWS", "-v", *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    inserted = re.findall(r"### INSERT INTO `shop`.`ticks`\n### SET\n###   @1=(\d+)", decoded)
    assert sorted(map(int, inserted)) == list(range(1, 101))


def numbered_rows(server: MariaDBServer, database: str) -> Callable[..., list[int]]:
    """Creates `database`.rows; returns write(count, pause=0): inserts `count` numbered rows stamped NOW(6), `pause`
    seconds apart (to spread them over seconds), and returns their ids."""
    server.sql(f"CREATE DATABASE {database}; CREATE TABLE {database}.rows (id int PRIMARY KEY, at datetime(6))")
    ids = itertools.count(1)

    def write(count: int, pause: float = 0) -> list[int]:
        done = []
        for _ in range(count):
            done.append(next(ids))
            server.sql(f"INSERT INTO {database}.rows VALUES ({done[-1]}, NOW(6))")
            time.sleep(pause)
        return done

    return write


def rows_around_a_point(
    server: MariaDBServer, database: str, write: Callable[..., list[int]], archived: Callable[[], datetime]
) -> tuple[dict[int, datetime], datetime]:
    """Rows written over several seconds, across a binlog rotation, until the archive holds them all (`archived`:
    its newest event): ({row: when}, a whole second with rows before and after it)."""
    before = write(8, pause=0.25)
    server.sql("FLUSH BINARY LOGS")
    after = write(8, pause=0.25)
    written = written_rows(server, database)
    point = (written[before[3]] + timedelta(seconds=1)).replace(microsecond=0)
    assert written[after[-1]] >= point
    newest = max(written.values()).replace(microsecond=0)
    wait_for(lambda: archived() >= newest, "the archive to reach the last write")
    return written, point


def purge_while_stopped(server: MariaDBServer, folder: Path, name: str) -> list[str]:
    """Archives until a binlog closed, stops, then writes and purges past what the archive holds: a gap. Returns
    the binlogs the archive never got, in order, and the one the server keeps (oldest first) last."""
    with archiving(server, folder, 2, name):
        server.sql("FLUSH BINARY LOGS")
        rotated = list(server_binlogs(server))[-2]
        wait_for(lambda: (folder / f"{name}-binlog" / f"{rotated}.json").exists(), "a closed binlog archived")
    missed = list(server_binlogs(server))[-1]
    server.sql("INSERT INTO shop.orders VALUES (200, NOW(6)); FLUSH BINARY LOGS; FLUSH BINARY LOGS")
    newest = list(server_binlogs(server))[-1]

    def purged() -> bool:
        # The server keeps a binlog a reader still has open (the stopped archiver's session, until it notices).
        server.sql(f"PURGE BINARY LOGS TO '{newest}'")
        return missed not in server_binlogs(server)

    wait_for(purged, f"{missed} purged")
    names = [missed]
    while names[-1] != newest:
        base, _, number = names[-1].rpartition(".")
        names.append(f"{base}.{int(number) + 1:0{len(number)}d}")
    return names


def test_a_binlog_purged_before_it_was_archived_is_recorded_as_a_gap_and_archiving_resumes_after_it(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    write = numbered_rows(binlogged, "gapped")

    write(3)
    with archiving(binlogged, tmp_path, 2, "gapped"):
        before_gap = backup(binlogged, tmp_path, "gapped", name="gapped")
    *missing, resumed = purge_while_stopped(binlogged, tmp_path, "gapped")
    folder = tmp_path / "gapped-binlog"

    port = free_port()
    with archiving(binlogged, tmp_path, 1, "gapped", "--status-port", str(port)) as process:
        wait_for(lambda: any(folder.glob(f"{resumed}*.json")), f"archiving to resume at {resumed}")
        gap = json.loads((folder / f"{resumed}.gap.json").read_text())
        after_gap = backup(binlogged, tmp_path, "gapped", name="gapped")
        written, point = rows_around_a_point(binlogged, "gapped", write, lambda: newest_event(tmp_path, "gapped"))
        first_after = json.loads((folder / f"{resumed}.json").read_text())["firstEvent"]
        wait_for(lambda: json.loads(status_of(port)[1])["gapAt"] == first_after, "/status to date the gap")
        body = json.loads(status_of(port)[1])
        assert process.poll() is None, "the archiver runs on after the gap"

    assert (gap["firstMissing"], gap["lastMissing"], gap["resumedAt"]) == (missing[0], missing[-1], resumed)
    assert datetime.fromisoformat(gap["foundAt"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert body["recoverableFrom"] == body["gapAt"] == first_after
    assert body["reason"] is None
    assert process.returncode == 0
    at = point.strftime("%Y-%m-%dT%H:%M:%SZ")

    refused = pitr_restore(binlogged, before_gap, "gapped_before", at)
    restored = pitr_restore(binlogged, after_gap, "gapped_after", at)

    assert_no_replay_crosses_the_gap(
        binlogged, "gapped", (refused, restored), (missing[0], missing[-1]), (written, point)
    )


def assert_no_replay_crosses_the_gap(
    server: MariaDBServer,
    database: str,
    outcomes: tuple[Outcome, Outcome],
    missing: tuple[str, str],
    rows: tuple[dict[int, datetime], datetime],
) -> None:
    """The restore to the point from the backup before the gap (into `<database>_before`) was refused untouched,
    naming the missing binlogs; the one from the backup after it (into `<database>_after`) has every row written
    before the point (`rows`: {row: when}, the point) and none after."""
    (refused, restored), (written, point) = outcomes, rows
    assert refused.code == 1
    assert refused.reason_line.startswith("dbb-backup: ArchiveGap: --point-in-time"), refused.stderr
    assert f"binlogs {missing[0]} to {missing[1]} were purged" in refused.reason_line
    assert f"{database}_before" not in server.databases()
    assert restored.code == 0, restored.stderr
    found = written_rows(server, f"{database}_after")
    assert sorted(found) == sorted(i for i, t in written.items() if t < point)
    assert len(found) < len(written)


def test_archiving_a_server_without_binary_logging_says_what_to_set(mariadb: MariaDBServer, tmp_path: Path) -> None:
    outcome = dbb(*archive_args(mariadb, tmp_path, 2), env=password_env(mariadb), timeout=30)

    assert outcome.code == 1
    assert outcome.reason_line == (
        "dbb-backup: BinaryLoggingOff: binary logging is off on the server: start it with log-bin, a server-id and "
        "binlog-format=ROW"
    )


def test_archiving_a_server_whose_binlog_format_is_not_row_warns(tmp_path: Path) -> None:
    with MariaDBServer.start(settings={"log-bin": "mysql-bin", "server-id": "1"}) as mixed:  # MariaDB's MIXED
        process = spawn(archive_args(mixed, tmp_path, 2), mixed)
        wait_for(lambda: "mysql-bin.000001.partial.json" in entries(tmp_path), "the open binlog archived")
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    warnings = [line for line in map(json.loads, err.splitlines()) if line["level"] == "warning"]
    assert [(w["event"], w["binlogFormat"]) for w in warnings] == [
        (
            "the server's binlog_format is not ROW: point-in-time restores may miss statements; set binlog-format=ROW",
            "MIXED",
        )
    ]


# --- the status endpoint --------------------------------------------------------------------------------------


def status_of(port: int, path: str = "/status") -> tuple[int, str]:
    return get(port, path)


def bounds_of(folder: Path, name: str = "shop") -> dict[str, Any]:
    """What /status should say about the archive, from its index on disk."""
    index = sorted(entries(folder).values(), key=lambda e: int(e["file"].rsplit(".", 1)[1]))
    firsts = [e["firstEvent"] for e in index if e["firstEvent"]]
    lasts = [e["lastEvent"] for e in index if e["lastEvent"]]
    until = lasts[-1] if lasts else None
    checkpoint = folder / "shop-binlog" / "complete.json"
    if until and index and checkpoint.exists():
        # All the server had written was archived then: the archive reaches that second (a quiet server).
        held = json.loads(checkpoint.read_text())
        if held["binlog"] == index[-1]["file"] and index[-1]["binlogSize"] >= held["position"]:
            until = max(until, held["at"])
    return {
        "recoverableFrom": firsts[0] if firsts else None,
        "recoverableUntil": until,
        "archived": sum(1 for e in index if e["closed"]),
    }


def test_the_status_endpoint_reports_the_archive_s_bounds_and_a_lag_that_grows_when_the_stream_stalls(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    port = free_port()
    with archiving(binlogged, tmp_path, 2, "shop", "--status-port", str(port)) as process:
        binlogged.sql("INSERT INTO shop.orders VALUES (400, NOW(6)); FLUSH BINARY LOGS")
        binlogged.sql("INSERT INTO shop.orders VALUES (401, NOW(6))")
        open_file, position = binlogged.sql("SHOW MASTER STATUS").split("\t")[:2]

        def caught_up() -> bool:
            body = json.loads(status_of(port)[1] or "{}")
            return (
                body.get("binlog") == open_file
                and body.get("lagSeconds") is not None
                and {k: body.get(k) for k in ("recoverableFrom", "recoverableUntil", "archived")} == bounds_of(tmp_path)
                and entries(tmp_path).get(f"{open_file}.partial.json", {}).get("binlogSize", 0) >= int(position)
            )

        wait_for(caught_up, "the status to show the archive's bounds, the open binlog archived up to the insert")
        body = json.loads(status_of(port)[1])
        assert body["archived"] >= 1
        assert body["recoverableFrom"] <= body["recoverableUntil"]
        assert (body["reason"], body["message"]) == (None, None)
        assert datetime.fromisoformat(body["updated"]) > datetime.now(UTC) - timedelta(minutes=5)
        assert status_of(port, "/healthz") == (200, "ok\n")
        assert status_of(port, "/nothing")[0] == 404

        # The tool stops receiving; the server writes on: the archive no longer holds what the server has.
        tool = children(process.pid)
        for pid in tool:
            os.kill(pid, signal.SIGSTOP)
        try:
            binlogged.sql("INSERT INTO shop.orders VALUES (402, NOW(6))")
            wait_for(lambda: json.loads(status_of(port)[1])["lagSeconds"] > 6, "the lag to pass 3 * max-lag")
            assert status_of(port, "/healthz") == (200, "ok\n"), "a stalled stream is a lag, not a failure"
        finally:
            for pid in tool:
                os.kill(pid, signal.SIGCONT)
        wait_for(lambda: json.loads(status_of(port)[1])["lagSeconds"] < 6, "the lag to fall once the stream resumes")

    assert process.returncode == 0
    assert status_of(port) == (0, ""), "the endpoint ends with the archiver"


def test_a_fatal_error_ends_the_archiver_with_its_reason_in_the_termination_log(
    mariadb: MariaDBServer, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "termination-log"
    flags = ["--status-port", str(port), "--termination-log", str(log)]

    outcome = dbb(*archive_args(mariadb, tmp_path, 2, "shop", *flags), env=password_env(mariadb), timeout=30)

    assert outcome.code == 1
    written = json.loads(log.read_text())
    assert (written["status"], written["reason"]) == ("Failed", "BinaryLoggingOff")
    assert mariadb.password not in log.read_text()
    assert status_of(port) == (0, "")


# --- restoring to a point in time --------------------------------------------------------------------------------


def written_rows(server: MariaDBServer, database: str) -> dict[int, datetime]:
    """{row id: the time it was written (the statement's start, as the binlog records it)}."""
    rows = server.sql(f"SELECT id, at FROM {database}.rows ORDER BY id").splitlines()
    return {int(i): datetime.fromisoformat(at).replace(tzinfo=UTC) for i, at in (r.split("\t") for r in rows)}


def pitr_restore(server: MariaDBServer, file: Path, target: str, point: str, *flags: str) -> Outcome:
    args = ["restore", str(file), *connection_args(server), "--database", target, "--point-in-time", point, *flags]
    return dbb(*args, env=password_env(server), timeout=60)


def test_a_point_in_time_restore_has_every_row_up_to_it_and_none_after(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    write = numbered_rows(binlogged, "ledger")

    def during_the_backup(stop: threading.Event, written: list[int]) -> None:
        while not stop.is_set():
            written += write(1)

    write(5)
    with archiving(binlogged, tmp_path, max_lag=1, name="ledger"):
        # Rows written while the dump runs are either in its snapshot or after its coordinates, never both.
        stop, concurrent = threading.Event(), list[int]()
        writer = threading.Thread(target=during_the_backup, args=(stop, concurrent))
        writer.start()
        try:
            made = backup(binlogged, tmp_path, "ledger", name="ledger")
        finally:
            stop.set()
            writer.join()
        before = write(7, pause=0.25)
        binlogged.sql("FLUSH BINARY LOGS")  # the replay crosses from one archived binlog into the next
        after = write(8, pause=0.25)
        written = written_rows(binlogged, "ledger")
        # A whole second between two writes, after the backup: rows before it are restored, none at or after it.
        point = (written[before[4]] + timedelta(seconds=1)).replace(microsecond=0)
        assert written[after[-1]] >= point
        last = max(written.values()).replace(microsecond=0)
        wait_for(lambda: newest_event(tmp_path, "ledger") >= last, "the archive to reach the last write", timeout=10)

        outcome = pitr_restore(binlogged, made, "ledger_pitr", point.strftime("%Y-%m-%dT%H:%M:%SZ"))

    assert outcome.code == 0, outcome.stderr
    expected = sorted(i for i, at in written.items() if at < point)
    assert sorted(written_rows(binlogged, "ledger_pitr")) == expected
    assert concurrent, "rows were written while the dump ran"
    assert set(concurrent) < set(expected)
    assert before[4] in expected
    assert after[-1] not in expected
    assert outcome.result["replayedUntil"] == point.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_open_binlog_published_in_pieces_restores_to_a_point_inside_it(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    write = numbered_rows(binlogged, "pieces")
    write(3)
    binlogged.sql("FLUSH BINARY LOGS")  # the rows below go into a binlog that stays open
    open_file = binlogged.sql("SHOW MASTER STATUS").split("\t")[0]
    binlogged.sql("CREATE TABLE pieces.big (b longtext)")
    with archiving(binlogged, tmp_path, max_lag=1, name="pieces"):
        made = backup(binlogged, tmp_path, "pieces", name="pieces")
        # A first piece larger than all that follows: the later ones, published every 0.5 s, never carry into it.
        binlogged.sql("INSERT INTO pieces.big VALUES (REPEAT('x', 200000))")
        at = int(binlogged.sql("SHOW MASTER STATUS").split("\t")[1])
        partial = tmp_path / "pieces-binlog" / f"{open_file}.partial.json"
        wait_for(
            lambda: partial.exists() and json.loads(partial.read_text())["binlogSize"] >= at, "the big row archived"
        )
        rows = write(12, pause=0.3)
        written = written_rows(binlogged, "pieces")
        point = (written[rows[5]] + timedelta(seconds=1)).replace(microsecond=0)
        assert written[rows[-1]] >= point
        newest = max(written.values()).replace(microsecond=0)
        wait_for(lambda: newest_event(tmp_path, "pieces") >= newest, "the archive to reach the last write", timeout=10)
        # Read before the restore writes (and the archiver publishes) more; nothing else writes meanwhile.
        entry = json.loads(partial.read_text())
        stored = [entry["object"], *(piece["object"] for piece in entry.get("pieces", []))]
        joined = b"".join(
            zstandard.ZstdDecompressor().decompressobj().decompress((tmp_path / "pieces-binlog" / name).read_bytes())
            for name in stored
        )

        outcome = pitr_restore(binlogged, made, "pieces_pitr", point.strftime("%Y-%m-%dT%H:%M:%SZ"))

    assert len(stored) > 1, "the open binlog was published in more than one piece"
    server = server_bytes(binlogged, open_file)[: entry["binlogSize"]]
    # Byte for byte but the first event's flags: the server marks the binlog it writes as in use there.
    assert (len(joined), joined[:21], joined[23:]) == (len(server), server[:21], server[23:])
    assert outcome.code == 0, outcome.stderr
    assert sorted(written_rows(binlogged, "pieces_pitr")) == sorted(i for i, at in written.items() if at < point)
    assert rows[5] in written_rows(binlogged, "pieces_pitr")
    assert rows[-1] not in written_rows(binlogged, "pieces_pitr")


def test_a_point_in_time_outside_what_the_backup_and_archive_cover_is_refused_untouched(
    binlogged: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    with archiving(binlogged, tmp_path, max_lag=1, name="shop"):
        made = backup(binlogged, tmp_path, "shop", name="shop")
        ended = datetime.fromisoformat(str(manifest_of(made)["end"]))
        binlogged.sql("INSERT INTO shop.orders VALUES (300, NOW(6))")  # an event after the backup to archive
        wait_for(lambda: newest_event(tmp_path, "shop") >= ended, "the archive past the backup")
    newest = newest_event(tmp_path, "shop")
    reach = bounds_of(tmp_path)["recoverableUntil"]  # the newest event, or the checkpoint after it
    assert reach >= f"{newest:%Y-%m-%dT%H:%M:%SZ}"
    without = backup(mariadb, tmp_path, "crm")
    early, late = ended - timedelta(hours=1), newest + timedelta(hours=1)

    refusals = {
        "before": pitr_restore(binlogged, made, "shop_pitr", early.strftime("%Y-%m-%dT%H:%M:%SZ")),
        "after": pitr_restore(binlogged, made, "shop_pitr", late.strftime("%Y-%m-%dT%H:%M:%SZ")),
        "no coordinates": pitr_restore(mariadb, without, "crm_pitr", late.strftime("%Y-%m-%dT%H:%M:%SZ")),
    }

    assert {k: o.reason_line for k, o in refusals.items()} == {
        "before": f"dbb-backup: InvalidArguments: --point-in-time {early:%Y-%m-%dT%H:%M:%SZ} is before the backup "
        f"ended ({ended:%Y-%m-%dT%H:%M:%SZ}): restore an older backup",
        "after": f"dbb-backup: InvalidArguments: --point-in-time {late:%Y-%m-%dT%H:%M:%SZ} is after what the "
        f"archive reaches ({reach}): choose an earlier time",
        "no coordinates": f"dbb-backup: InvalidArguments: {without.name} has no binlog coordinates (a server without "
        "binary logging, or a backup made before they were recorded): it cannot be restored to a point in time",
    }
    assert "shop_pitr" not in binlogged.databases()
    assert "crm_pitr" not in mariadb.databases()


def test_an_encrypted_archive_replays_with_its_key_and_is_refused_untouched_without_it(
    binlogged: MariaDBServer, tmp_path: Path, key_file: Path, other_key_file: Path
) -> None:
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    binlogged.sql("CREATE DATABASE vault; CREATE TABLE vault.rows (id int PRIMARY KEY, at datetime(6))")
    ids = itertools.count(1)

    def write(count: int) -> list[int]:
        done = [next(ids) for _ in range(count)]
        for row in done:
            binlogged.sql(f"INSERT INTO vault.rows VALUES ({row}, NOW(6))")
        return done

    with archiving(binlogged, tmp_path, 1, "vault", "--encryption-key-file", str(key_file)):
        made = backup(binlogged, tmp_path, "vault", name="vault")
        before = write(3)
        point = (written_rows(binlogged, "vault")[before[-1]] + timedelta(seconds=1)).replace(microsecond=0)
        wait_for(lambda: datetime.now(UTC) >= point, "the clock to pass the point in time")
        after = write(3)
        last = max(written_rows(binlogged, "vault").values()).replace(microsecond=0)
        wait_for(lambda: newest_event(tmp_path, "vault") >= last, "the archive to reach the last write")

    index = [json.loads(p.read_text()) for p in entry_paths(tmp_path / "vault-binlog")]
    assert index
    assert {(e["object"].endswith(".zst.enc"), e["keyId"]) for e in index} == {(True, "backup.key")}
    assert all((tmp_path / "vault-binlog" / e["object"]).read_bytes().startswith(b"DBBENC") for e in index)
    instant = point.strftime("%Y-%m-%dT%H:%M:%SZ")

    keyless = pitr_restore(binlogged, made, "vault_keyless", instant)
    wrong = pitr_restore(binlogged, made, "vault_wrong", instant, "--key-file", str(other_key_file))
    keyed = pitr_restore(binlogged, made, "vault_pitr", instant, "--key-file", str(key_file))

    assert keyless.reason_line.startswith("dbb-backup: InvalidArguments: archived binlog mysql-bin."), keyless.stderr
    assert keyless.reason_line.endswith(".zst.enc is encrypted: give key 'backup.key' (--key-file, --key-dir)")
    assert wrong.reason_line.startswith("dbb-backup: DecryptFailed: archived binlog mysql-bin."), wrong.stderr
    assert wrong.reason_line.endswith("needs key 'backup.key', which is not among those given (ids: 'other.key')")
    assert "vault_keyless" not in binlogged.databases()
    assert "vault_wrong" not in binlogged.databases()
    assert keyed.code == 0, keyed.stderr
    assert sorted(written_rows(binlogged, "vault_pitr")) == before
    assert after[0] not in written_rows(binlogged, "vault_pitr")


# --- retention for the archive -----------------------------------------------------------------------------------


def aged_name(file: str, hours: int) -> str:
    """`file` (`<prefix>-<UTC>.<ext>`) named as if taken `hours` earlier."""
    prefix, stamp, ext = re.fullmatch(r"(.+)-([0-9]{8}T[0-9]{6}Z)(\..+)", file).groups()  # type: ignore[union-attr]
    moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) - timedelta(hours=hours)
    return f"{prefix}-{moment.strftime('%Y%m%dT%H%M%SZ')}{ext}"


def aged_manifest(text: str, hours: int) -> str:
    """A manifest as if its backup was taken `hours` earlier: its name, start and end (its coordinates stay)."""
    manifest = json.loads(text)
    manifest["file"] = aged_name(manifest["file"], hours)
    for field in ("start", "end"):
        moment = datetime.fromisoformat(manifest[field]) - timedelta(hours=hours)
        manifest[field] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(manifest)


def age(file: Path, hours: int) -> Path:
    """Backups days old cannot be waited for: a backup just made is renamed, and its manifest rewritten, as if it
    had been taken `hours` earlier."""
    older = file.with_name(aged_name(file.name, hours))
    manifest = file.with_name(file.name + ".json")
    older.with_name(older.name + ".json").write_text(aged_manifest(manifest.read_text(), hours))
    manifest.unlink()
    file.rename(older)
    return older


def next_second() -> None:
    """Backups are named by the second they start in: the next one gets a name of its own."""
    now = datetime.now(UTC).replace(microsecond=0)
    wait_for(lambda: datetime.now(UTC).replace(microsecond=0) > now, "the next second")


def test_a_binlog_window_keeps_the_backup_its_oldest_second_needs_and_prunes_older_binlogs(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    write = numbered_rows(binlogged, "windowed")

    folder = tmp_path / "windowed-binlog"
    port = free_port()
    with archiving(binlogged, tmp_path, 1, "windowed", "--status-port", str(port)):
        write(3)
        oldest = age(backup(binlogged, tmp_path, "windowed", name="windowed", verify=None), 7)
        binlogged.sql("FLUSH BINARY LOGS")
        write(3)
        next_second()
        needed = age(backup(binlogged, tmp_path, "windowed", name="windowed", verify=None), 5)
        binlogged.sql("FLUSH BINARY LOGS")
        written, point = rows_around_a_point(binlogged, "windowed", write, lambda: newest_event(tmp_path, "windowed"))
        starts = {f.name: json.loads(f.with_name(f.name + ".json").read_text())["binlog"] for f in (oldest, needed)}
        stored = {p.name: json.loads(p.read_text()) for p in entry_paths(folder)}
        next_second()

        # A window of 4 hours: the backup of 5 hours ago is the newest before its oldest second, the one of 7 hours
        # ago is not needed. --max-age 1h alone would delete both but the one this run writes.
        flags = {"name": "windowed", "keep_last": "1", "max_age": "1h", "verify": None}
        pruned = dbb(
            *run_args(binlogged, tmp_path, "windowed", **flags),
            "--binlog-window",
            "4h",
            "--prune-binlogs",
            env=password_env(binlogged),
        )

        assert pruned.code == 0, pruned.stderr
        # The running archiver's /status follows: recoverable from the first binlog kept.
        needs = starts[needed.name]["file"]
        first_kept = stored[f"{needs}.json"]["firstEvent"]
        wait_for(lambda: json.loads(status_of(port)[1])["recoverableFrom"] == first_kept, "/status after the prune")

    kept = {Path(p).name for p in tmp_path.glob("windowed-*.sql.gz")}
    assert kept == {needed.name, Path(pruned.result["file"]).name}, "the window keeps the backup of 5 hours ago"
    assert pruned.result["retention"]["byRule"]["window"] == 2
    gone = sorted(
        (e for e in stored.values() if e["closed"] and int(e["file"].rsplit(".", 1)[1]) < int(needs.rsplit(".", 1)[1])),
        key=lambda e: e["file"],
    )
    assert starts[oldest.name]["file"] in [e["file"] for e in gone]
    assert pruned.result["binlogRetention"] == {
        "pruned": len(gone),
        "prunedBytes": sum(e["size"] for e in gone),
        "keptFrom": needs,
    }
    after = {p.name for p in folder.iterdir()}
    for e in gone:
        assert not {f"{e['file']}.json", e["object"]} & after, e["file"]
    assert f"{needs}.json" in after
    assert any(n.endswith(".partial.json") for n in after), "the open binlog stays"

    restored = pitr_restore(binlogged, needed, "windowed_pitr", point.strftime("%Y-%m-%dT%H:%M:%SZ"))

    assert restored.code == 0, restored.stderr
    assert sorted(written_rows(binlogged, "windowed_pitr")) == sorted(i for i, t in written.items() if t < point)


def altered_after_a_backup(server: MariaDBServer, folder: Path, name: str) -> tuple[Path, datetime]:
    """`name`.accounts with row 1, a backup, `ALTER TABLE name.accounts ADD COLUMN note` (the database named, and
    the default), then row 2 in a later second, archived (by the running archiver): (the backup, a whole second
    after the ALTER and before row 2)."""
    server.sql("SET GLOBAL time_zone = '+00:00'")
    server.sql(f"CREATE DATABASE {name}; CREATE TABLE {name}.accounts (id int PRIMARY KEY, at datetime(6))")
    server.sql(f"INSERT INTO {name}.accounts VALUES (1, NOW(6))")
    made = backup(server, folder, name, name=name)
    server.sql(f"ALTER TABLE {name}.accounts ADD COLUMN note text", name)
    altered = datetime.fromisoformat(server.sql("SELECT NOW(6)")).replace(tzinfo=UTC)
    point = (altered + timedelta(seconds=1)).replace(microsecond=0)
    while datetime.fromisoformat(server.sql("SELECT NOW(6)")).replace(tzinfo=UTC) < point:
        time.sleep(0.05)
    server.sql(f"INSERT INTO {name}.accounts VALUES (2, NOW(6), 'after')")
    wait_for(lambda: newest_event(folder, name) >= point, "the archive to pass the point", timeout=10)
    return made, point


def test_a_renamed_replay_that_would_change_the_source_database_is_refused_untouched(
    binlogged: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    """`--rewrite-db` renames row events and default databases, not a database named in a statement: replayed as
    `ledger2_copy`, `ALTER TABLE ledger2.accounts ...` would alter `ledger2` itself. Such a replay is refused before the
    dump is restored; under the same name, into another server, the same point is restored."""
    with archiving(binlogged, tmp_path, max_lag=1, name="ledger2"):
        made, point = altered_after_a_backup(binlogged, tmp_path, "ledger2")
        columns = binlogged.sql("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'ledger2'")

        renamed = pitr_restore(binlogged, made, "ledger2=ledger2_copy", point.strftime("%Y-%m-%dT%H:%M:%SZ"))
        elsewhere = dbb(
            "restore", str(made), *connection_args(mariadb), "--database", "ledger2",
            "--point-in-time", point.strftime("%Y-%m-%dT%H:%M:%SZ"), env=password_env(mariadb), timeout=60,
        )  # fmt: skip

    assert renamed.code == 1, renamed.stdout
    assert renamed.result["reason"] == "RestoreFailed"
    assert (
        "names database 'ledger2' in a statement (ALTER TABLE ledger2.accounts ADD COLUMN note"
        in renamed.result["message"]
    )
    assert binlogged.sql("SHOW DATABASES LIKE 'ledger2_copy'") == ""  # nothing was restored
    assert binlogged.sql("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'ledger2'") == columns
    assert elsewhere.code == 0, elsewhere.stderr
    assert mariadb.sql("SELECT id, note FROM ledger2.accounts ORDER BY id") == "1\tNULL"  # altered, the row after not
    mariadb.drop_database("ledger2")


def on_scratch(target: MariaDBServer, scratch: MariaDBServer) -> tuple[list[str], dict[str, str]]:
    """The flags and environment that replay on `scratch`, as a restore Job's scratch server is given."""
    flags = ["--scratch-host", scratch.host, "--scratch-port", str(scratch.port), "--scratch-user", scratch.user]
    return flags, {**password_env(target), "SCRATCH_PASSWORD": scratch.password}


def test_a_renamed_replay_on_a_scratch_server_applies_statements_naming_the_source_to_the_copy_only(
    binlogged: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    """On a scratch server the replay runs under the source's name: `ALTER TABLE ledger3.accounts ...` alters the
    scratch copy, which then goes into `ledger3_copy` on the source's own server; `ledger3` is not touched, and the
    scratch copy is dropped."""
    with archiving(binlogged, tmp_path, max_lag=1, name="ledger3"):
        made, point = altered_after_a_backup(binlogged, tmp_path, "ledger3")
    source_rows = binlogged.sql("SELECT id, note FROM ledger3.accounts ORDER BY id")
    flags, env = on_scratch(binlogged, mariadb)

    outcome = dbb(
        "restore", str(made), *connection_args(binlogged), "--database", "ledger3=ledger3_copy",
        "--point-in-time", point.strftime("%Y-%m-%dT%H:%M:%SZ"), *flags, env=env, timeout=120,
    )  # fmt: skip

    assert outcome.code == 0, outcome.stderr
    assert outcome.result["scratchServer"] is True
    assert outcome.result["databases"] == {"ledger3": "ledger3_copy"}
    assert outcome.result["replayedUntil"] == point.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert binlogged.sql("SELECT id, note FROM ledger3_copy.accounts ORDER BY id") == "1\tNULL"  # altered; not row 2
    assert binlogged.sql("SELECT id, note FROM ledger3.accounts ORDER BY id") == source_rows
    assert source_rows == "1\tNULL\n2\tafter"
    assert mariadb.sql("SHOW DATABASES LIKE 'ledger3'") == ""  # the scratch copy is gone


def test_replace_to_a_point_in_time_replays_on_the_scratch_server_first_so_a_failed_replay_changes_nothing(
    binlogged: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    write = numbered_rows(binlogged, "ledger4")
    write(3)
    with archiving(binlogged, tmp_path, max_lag=1, name="ledger4"):
        made = backup(binlogged, tmp_path, "ledger4", name="ledger4")
        written, point = rows_around_a_point(binlogged, "ledger4", write, lambda: newest_event(tmp_path, "ledger4"))
    binlogged.sql(
        "CREATE DATABASE ledger4_live; CREATE TABLE ledger4_live.rows (id int PRIMARY KEY, at datetime(6)); "
        "INSERT INTO ledger4_live.rows VALUES (100, NOW(6))"
    )
    at = point.strftime("%Y-%m-%dT%H:%M:%SZ")
    flags, env = on_scratch(binlogged, mariadb)

    def replace(*more: str) -> Outcome:
        args = [*connection_args(binlogged), "--database", "ledger4=ledger4_live", "--point-in-time", at, "--replace"]
        return dbb("restore", str(made), *args, *more, env=env, timeout=120)

    in_place = replace()
    assert in_place.code == 1, in_place.stdout
    assert in_place.result["reason"] == "InvalidArguments"
    assert "--replace with --point-in-time needs a scratch server" in in_place.result["message"]

    # The binlog holding the backup's coordinates, damaged in storage: the replay fails on the scratch server.
    first = manifest_of(made)["binlog"]
    assert isinstance(first, dict)
    entry = json.loads((tmp_path / "ledger4-binlog" / f"{first['file']}.json").read_text())
    stored = tmp_path / "ledger4-binlog" / entry["object"]
    good = stored.read_bytes()
    stored.write_bytes(good[: len(good) // 2] + bytes(b ^ 0xFF for b in good[len(good) // 2 :]))
    damaged = replace(*flags)
    assert damaged.code == 1, damaged.stdout
    assert damaged.result["reason"] == "VerifyFailed", damaged.result
    assert binlogged.sql("SELECT id FROM ledger4_live.rows") == "100"  # the target as it was
    assert mariadb.sql("SHOW DATABASES LIKE 'ledger4'") == ""

    stored.write_bytes(good)
    mariadb.sql("CREATE DATABASE ledger4; CREATE TABLE ledger4.kept (id int)")  # someone's, on the scratch server
    occupied = replace(*flags)
    assert occupied.code == 1, occupied.stdout
    assert occupied.result["message"] == (
        "the scratch server already has a database 'ledger4': replay on a scratch server without it"
    )
    assert mariadb.sql("SHOW TABLES FROM ledger4") == "kept"  # not dropped: it was not the restore's
    mariadb.drop_database("ledger4")
    replaced = replace(*flags)
    assert replaced.code == 0, replaced.stderr
    assert sorted(written_rows(binlogged, "ledger4_live")) == sorted(i for i, t in written.items() if t < point)
    assert 100 not in written_rows(binlogged, "ledger4_live")


def test_a_quiet_server_s_archive_reaches_past_its_last_write_and_restores_to_a_second_after_it(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    """No event comes after the last write, yet the archive knows it held everything the server had written at
    each check (`complete.json`): a restore may name a second after the last write, and gets every row."""
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    write = numbered_rows(binlogged, "quiet")
    write(2)
    port = free_port()
    with archiving(binlogged, tmp_path, 1, "quiet", "--status-port", str(port)):
        made = backup(binlogged, tmp_path, "quiet", name="quiet")
        write(3)
        written = written_rows(binlogged, "quiet")
        last = max(written.values()).replace(microsecond=0)
        wait_for(lambda: newest_event(tmp_path, "quiet") >= last, "the archive to reach the last write")

        def reach() -> datetime:
            until = json.loads(status_of(port)[1] or "{}").get("recoverableUntil")
            return datetime.fromisoformat(until) if until else datetime.min.replace(tzinfo=UTC)

        wait_for(lambda: reach() >= last + timedelta(seconds=3), "recoverableUntil 3 s past the last write", 30)
        assert newest_event(tmp_path, "quiet") == last  # no event since: the checkpoint alone moved it
        checkpoint = json.loads((tmp_path / "quiet-binlog" / "complete.json").read_text())

    held = datetime.fromisoformat(checkpoint["at"])
    assert held >= last + timedelta(seconds=3), checkpoint
    then = pitr_restore(binlogged, made, "quiet_then", (last + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert then.code == 0, then.stderr
    assert sorted(written_rows(binlogged, "quiet_then")) == sorted(written)
    beyond = pitr_restore(binlogged, made, "quiet_never", (held + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert beyond.code == 1, beyond.stdout
    assert "is after what the archive reaches" in beyond.result["message"]
    assert binlogged.sql("SHOW DATABASES LIKE 'quiet_never'") == ""


def test_two_archivers_of_one_server_both_archive_without_dropping_each_other(
    binlogged: MariaDBServer, tmp_path: Path
) -> None:
    """One DatabaseBackup per database, so a server with two databases has two archivers: each connects as a replica
    id of its own (the server drops a replica when another connects with the same id)."""
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with archiving(binlogged, first, 1, "twin_a") as one, archiving(binlogged, second, 1, "twin_b") as other:
        for row in range(3):  # written over more than one check of each
            binlogged.sql(f"INSERT INTO shop.orders VALUES ({900 + row}, NOW(6))")
            time.sleep(0.6)
        last = datetime.fromisoformat(binlogged.sql("SELECT MAX(at) FROM shop.orders")).replace(tzinfo=UTC)
        # Generous: two archivers and their checks share a machine that may be busy with other suites.
        wait_for(lambda: newest_event(first, "twin_a") >= last.replace(microsecond=0), "twin_a's rows", timeout=120)
        wait_for(lambda: newest_event(second, "twin_b") >= last.replace(microsecond=0), "twin_b's rows", timeout=120)
        assert one.poll() is None, one.stderr.read() if one.stderr else ""
        assert other.poll() is None, other.stderr.read() if other.stderr else ""


def test_a_statement_on_the_database_under_another_default_is_refused_before_anything_is_touched(
    binlogged: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    """The binlog tool picks statements by their default database: `CREATE TABLE ledger5.visits` issued with none
    would be left out of the replay, and the rows written into that table after it would then have no table. The
    restore is refused before anything is touched, quoting the statement, in place or on a scratch server."""
    binlogged.sql("SET GLOBAL time_zone = '+00:00'")
    binlogged.sql("CREATE DATABASE ledger5; CREATE TABLE ledger5.accounts (id int PRIMARY KEY, at datetime(6))")
    with archiving(binlogged, tmp_path, max_lag=1, name="ledger5"):
        made = backup(binlogged, tmp_path, "ledger5", name="ledger5")
        binlogged.sql("CREATE TABLE ledger5.visits (at datetime(6))")  # no default database
        binlogged.sql("INSERT INTO visits VALUES (NOW(6))", "ledger5")
        written = datetime.fromisoformat(binlogged.sql("SELECT MAX(at) FROM ledger5.visits")).replace(tzinfo=UTC)
        point = (written + timedelta(seconds=1)).replace(microsecond=0)
        while datetime.fromisoformat(binlogged.sql("SELECT NOW(6)")).replace(tzinfo=UTC) < point:
            time.sleep(0.05)
        binlogged.sql("INSERT INTO accounts VALUES (1, NOW(6))", "ledger5")  # after the point
        wait_for(lambda: newest_event(tmp_path, "ledger5") >= point, "the archive to pass the point")
    flags, env = on_scratch(binlogged, mariadb)
    at = point.strftime("%Y-%m-%dT%H:%M:%SZ")
    for scratch in ([], flags):
        outcome = dbb(
            "restore", str(made), *connection_args(binlogged), "--database", "ledger5=ledger5_then",
            "--point-in-time", at, *scratch, env=env, timeout=120,
        )  # fmt: skip

        assert outcome.code == 1, outcome.stdout
        assert outcome.result["reason"] == "RestoreFailed", outcome.result
        assert (
            "ran while another database (or none) was the default (CREATE TABLE ledger5.visits"
            in (outcome.result["message"])
        )
        assert binlogged.sql("SHOW DATABASES LIKE 'ledger5_then'") == ""
        assert mariadb.sql("SHOW DATABASES LIKE 'ledger5'") == ""
