"""A gap in a PostgreSQL WAL archive, for real, against PostgreSQL 15: WAL the archive needs is removed from the
server while its archiver is down (its slot dropped by hand, or invalidated past max_slot_wal_keep_size), and the
restarted archiver records the gap once, reports it, and archives on after it; a restore replays up to the gap from
a base backup before it, from a base backup after it past it, and never across it. A server whose WAL is behind the
archive's (a reset one) still ends the archiver with ArchiveGap. Retention that keeps only base backups after the
gap prunes its record."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hack.harness.databases import PostgresServer
from tests.backup.cli import command, dbb, password_env, run_args, wait_for
from tests.backup.test_pitr_postgres import (
    archive_args,
    base_backup,
    closed_segments,
    newest_until,
    pitr_restore,
    server_now,
    written_rows,
)
from tests.unit.test_runner_archive_status import free_port, get

NAME = "orders"


@contextmanager
def archiving(server: PostgresServer, folder: Path) -> Iterator[int]:
    """`dbb-backup archive` in the background with its status endpoint (yields its port), until SIGTERM; TMPDIR
    in the test's folder, as in its Pod's emptyDir."""
    port = free_port()
    args = [*archive_args(server, folder, NAME, 1), "--status-port", str(port)]
    process = subprocess.Popen(
        [command(), *args],
        env=password_env(server) | {"TMPDIR": str(folder)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: get(port, "/healthz")[0] == 200 or process.poll() is not None, "the status endpoint", timeout=60
        )
        assert process.poll() is None, process.communicate()[1]
        yield port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
        with (folder / "archiver.log").open("a") as log:  # its JSON log, beside the archive, for a failure's reader
            log.write(err)
    assert process.returncode == 0, err


def status(port: int) -> dict[str, Any]:
    code, body = get(port, "/status")
    return json.loads(body) if code == 200 else {}


def gap_records(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((folder / f"{NAME}-wal").glob("*.gap.json"))}


def write(server: PostgresServer, *ids: int) -> None:
    server.sql(";".join(f"INSERT INTO rows (id) VALUES ({i})" for i in ids), "shop")


def wal_files(server: PostgresServer) -> set[str]:
    return set(server.sql("SELECT name FROM pg_ls_waldir()").splitlines())


def slot_of(server: PostgresServer) -> str:
    return server.sql(f"SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'dbb_{NAME}_%'")


def caught_up(server: PostgresServer, folder: Path) -> None:
    """Waits until the archive is known complete up to now (a point before now is then restorable)."""
    now = server_now(server)
    wait_for(lambda: newest_until(folder, NAME) >= now, "the archive to reach the server's now", timeout=120)


def next_segment(name: str) -> str:
    return f"{name[:16]}{int(name[16:], 16) + 1:08X}"


@pytest.mark.parametrize("lost", ["slot dropped", "slot invalidated"])
def test_wal_removed_while_the_archiver_was_down_is_recorded_once_and_archiving_goes_on_after_it(
    tmp_path: Path, lost: str
) -> None:
    # A server of its own: no other archiver's slot may keep the WAL this test needs removed.
    with PostgresServer.start() as server:
        server.sql("CREATE DATABASE shop")
        server.sql("CREATE TABLE rows (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())", "shop")

        # 1. Archiving, a base backup, rows, and a point before the gap.
        with archiving(server, tmp_path) as port:
            write(server, 1, 2)
            before = base_backup(server, tmp_path, NAME)
            write(server, 3, 4)
            server.sql("SELECT pg_switch_wal()")
            write(server, 5)
            point_before = server_now(server)
            write(server, 6)
            caught_up(server, tmp_path)
            needed = server.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
            assert status(port)["gapAt"] is None
        archived_before = closed_segments(tmp_path, NAME)
        assert needed not in archived_before, "the segment the server writes is not closed in the archive yet"

        # 2. While it is down, the server stops keeping WAL for it and removes what the archive needs next.
        if lost == "slot dropped":
            server.sql(f"SELECT pg_drop_replication_slot('{slot_of(server)}')")
        else:
            server.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '16MB'; SELECT pg_reload_conf()")
        server.sql("CREATE TABLE churn (id int)", "shop")

        def removed() -> bool:
            server.sql("INSERT INTO churn VALUES (1); SELECT pg_switch_wal(); CHECKPOINT", "shop")
            return needed not in wal_files(server)

        wait_for(removed, f"the server to remove {needed}", timeout=120)
        if lost == "slot invalidated":
            assert server.sql(f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot_of(server)}'") == (
                "lost"
            )
            server.sql("ALTER SYSTEM RESET max_slot_wal_keep_size; SELECT pg_reload_conf()")
        write(server, 7)  # after the gap: only a base backup taken after it restores this row
        restarted = datetime.now(UTC).replace(microsecond=0)

        # 3. The restarted archiver records the gap, reports it, is ready again, and archives on.
        with archiving(server, tmp_path) as port:
            wait_for(
                lambda: None not in (status(port).get("gapAt"), status(port).get("recoverableFrom")),
                "the gap reported, and a segment archived after it",
                timeout=60,
            )
            reported = status(port)
            records = gap_records(tmp_path)
            assert (
                server.sql(
                    f"SELECT wal_status IN ('reserved', 'extended') FROM pg_replication_slots WHERE slot_name ="
                    f" '{slot_of(server)}'"
                )
                == "t"
            ), "the slot keeps WAL again"
            write(server, 8, 9)
            after = base_backup(server, tmp_path, NAME)
            write(server, 10)
            server.sql("SELECT pg_switch_wal()")
            write(server, 11)
            point_after = server_now(server)
            write(server, 12)
            caught_up(server, tmp_path)
        found = datetime.now(UTC)

        assert len(records) == 1, records
        ((record_name, record),) = records.items()
        resumed = record["resumedAt"]
        assert record["firstMissing"] == needed
        assert record["after"] == archived_before[-1]
        assert int(resumed[8:], 16) > int(needed[8:], 16)
        assert next_segment(record["lastMissing"]) == resumed
        assert record_name == f"{resumed}.gap.json"
        assert restarted <= datetime.fromisoformat(record["foundAt"]) <= found
        assert needed not in closed_segments(tmp_path, NAME), "nothing was archived under a missing segment's name"
        assert record["lastMissing"] not in closed_segments(tmp_path, NAME), "nor the placeholder before the resume"
        assert resumed in closed_segments(tmp_path, NAME), "the segment it resumed at was archived"
        assert reported["gapAt"] == record["foundAt"]
        assert (reported["reason"], reported["message"]) == (None, None)
        assert reported["recoverableFrom"] >= record["foundAt"], "the range starts after the gap"

        # 4. Restores: before the gap from the old base backup, after it from the new one, never across it.
        early = pitr_restore(server, before, point_before, "shop=shop_before")
        late = pitr_restore(server, after, point_after, "shop=shop_after")
        across = pitr_restore(server, before, point_after, "shop=shop_across")

        assert early.code == 0, early.stderr
        assert sorted(written_rows(server, "shop_before")) == [1, 2, 3, 4, 5]
        assert late.code == 0, late.stderr
        assert sorted(written_rows(server, "shop_after")) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        assert across.code == 1
        assert across.reason_line == (
            f"dbb-backup: ArchiveGap: the WAL archive has a gap: segments {needed} to {record['lastMissing']} were"
            f" removed from the server before they were archived (found at {record['foundAt']}); no point-in-time"
            " restore replays across it: choose a point before it, or a base backup taken after it"
        ), across.stderr
        assert "shop_across" not in server.databases()

        # 5. Restarted again, with nothing new missing (the spool lost too): no second gap, the same one reported.
        newest = max(closed_segments(tmp_path, NAME))
        (tmp_path / f"{NAME}-wal" / ".receive").rename(tmp_path / "lost-spool")
        with archiving(server, tmp_path) as port:
            switched = server.sql("SELECT pg_walfile_name(pg_switch_wal())")
            wait_for(lambda: switched in closed_segments(tmp_path, NAME), "streaming after a restart", timeout=60)
            again = status(port)
        assert switched > newest
        assert gap_records(tmp_path) == records
        assert again["gapAt"] == record["foundAt"]
        assert again["reason"] is None

        listed = dbb("list", str(tmp_path), env=password_env(server))
        assert listed.code == 0, listed.stderr
        assert {Path(e["file"]).name for e in listed.result["backups"]} == {before.name, after.name}

        # 6. Retention keeps only base backups after the gap: its record goes, and the archiver stops reporting it.
        with archiving(server, tmp_path) as port:
            wait_for(lambda: status(port).get("gapAt") == record["foundAt"], "the gap reported again", timeout=60)
            args = [*run_args(server, tmp_path, "shop"), "--name", NAME, "--base-backup", "--prune-wal"]
            pruned = dbb(*args, "--keep-last", "1", env=password_env(server), timeout=180)
            assert pruned.code == 0, pruned.stderr
            wait_for(lambda: status(port).get("gapAt", "?") is None, "the pruned gap no longer reported", timeout=60)
        assert gap_records(tmp_path) == {}
        assert pruned.result["walRetention"]["keptFrom"] > resumed


def test_a_server_whose_wal_is_behind_the_archive_s_ends_the_archiver_with_archive_gap(tmp_path: Path) -> None:
    with PostgresServer.start() as old, archiving(old, tmp_path):
        old.sql("CREATE TABLE churn (id int)")
        for _ in range(3):
            done = old.sql("INSERT INTO churn VALUES (1); SELECT pg_walfile_name(pg_switch_wal())")
        wait_for(lambda: done in closed_segments(tmp_path, NAME), "the old server's segments archived", timeout=60)
    archived = {name: path.read_bytes() for name, path in _files(tmp_path)}

    # The same archive, and a server that starts its WAL anew (as a reset one, or a copy restored from long ago).
    with PostgresServer.start() as reset:
        outcome = dbb(*archive_args(reset, tmp_path, NAME, 1), env=password_env(reset), timeout=60)
        written = reset.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")

    assert int(written[8:], 16) < int(done[8:], 16), "the new server writes a segment the archive has"
    assert outcome.code == 1
    assert outcome.reason_line.startswith(
        f"dbb-backup: ArchiveGap: the server's WAL is behind the archive's newest segment ({done}), or"
        " of another history: "
    ), outcome.stderr
    assert "Archive it under a new --name and take a new base backup" in outcome.reason_line
    assert {name: path.read_bytes() for name, path in _files(tmp_path)} == archived, "the archive is untouched"
    assert gap_records(tmp_path) == {}


def _files(folder: Path) -> list[tuple[str, Path]]:
    wal = folder / f"{NAME}-wal"
    return sorted((p.name, p) for p in wal.iterdir() if p.is_file() and not p.name.startswith("."))
