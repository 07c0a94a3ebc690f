"""A run that fails says why in one line, keeps every secret out of what it prints and writes, and never leaves a
file with a final name; a run that is killed leaves at most a temporary file, which the next run removes."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.harness.databases import MariaDBServer, PostgresServer, free_port
from tests.backup.cli import Outcome, children, dbb, gone, password_env, run_args, spawn, wait_for

Server = PostgresServer | MariaDBServer


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Server:
    fixture = "pg" if request.param == "postgresql" else "mariadb"
    found: Server = request.getfixturevalue(fixture)
    return found


def final_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def assert_failed_cleanly(outcome: Outcome, folder: Path, reason: str, log: Path, *secrets: str) -> None:
    assert outcome.code == 1
    assert outcome.reason_line.startswith(f"dbb-backup: {reason}: "), outcome.stderr
    assert final_files(folder) == []
    assert temporary_files(folder) == []
    written = log.read_text()
    assert json.loads(written) == outcome.result
    assert outcome.result["status"] == "Failed"
    assert outcome.result["reason"] == reason
    for secret in secrets:
        for text in (outcome.stdout, outcome.stderr, written):
            assert secret not in text


def test_a_wrong_password_is_reported_as_such_and_never_shown(server: Server, backups: Path, tmp_path: Path) -> None:
    wrong = "Wr0ng-password-that-must-not-leak"
    log = tmp_path / "termination-log"
    args = run_args(server, backups, "shop", termination_log=str(log))
    outcome = dbb(*args, env=password_env(server, wrong))
    assert_failed_cleanly(outcome, backups, "AuthenticationFailed", log, wrong, server.password)
    assert server.user in outcome.reason_line


def test_a_user_name_from_a_secret_is_never_shown(server: Server, backups: Path, tmp_path: Path) -> None:
    # The Job passes a user name kept in a Secret as DB_USER. A DatabaseBackup's author chooses the Secret key, so
    # the value may be any secret of the namespace; the server repeats it in its refusal, and that refusal is the
    # status message and Event the author can read. The value must never come out, whatever the server says.
    sentinel = "sentinel-4f1c0e9b-from-another-secret"
    log = tmp_path / "termination-log"
    args = run_args(server, backups, "shop", termination_log=str(log))
    at = args.index("--user")
    del args[at : at + 2]
    outcome = dbb(*args, env=password_env(server) | {"DB_USER": sentinel})
    assert_failed_cleanly(outcome, backups, "AuthenticationFailed", log, sentinel)
    assert "[REDACTED]" in outcome.reason_line  # the server did name the user: scrubbed, not absent by luck


def test_a_user_name_from_the_environment_backs_up_and_is_not_written_to_the_manifest(
    server: Server, backups: Path
) -> None:
    args = run_args(server, backups, "shop")
    at = args.index("--user")
    del args[at : at + 2]
    outcome = dbb(*args, env=password_env(server) | {"DB_USER": server.user})
    assert outcome.code == 0, outcome.stderr
    manifest = json.loads(Path(outcome.result["file"] + ".json").read_text())
    assert manifest["user"] == ""
    assert manifest["databases"] == ["shop"]


def test_a_closed_port_is_reported_as_unreachable(server: Server, backups: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    args = run_args(server, backups, "shop", termination_log=str(log))
    args[args.index("--port") + 1] = str(free_port())  # nothing listens there: connection refused
    outcome = dbb(*args, env=password_env(server))
    assert_failed_cleanly(outcome, backups, "Unreachable", log, server.password)


def test_the_first_run_creates_the_backup_folder_in_an_empty_volume(server: Server, tmp_path: Path) -> None:
    """A fresh PVC mounted at /backups is empty: backupPath (/backups/<db>) must be made by the first run."""
    folder = tmp_path / "volume" / "example-db"
    outcome = dbb(*run_args(server, folder, "shop"), env=password_env(server))
    assert outcome.code == 0, outcome.stderr
    assert [p.suffix for p in folder.iterdir() if not p.name.endswith(".json")]


def test_an_output_dir_that_is_a_file_is_refused(server: Server, tmp_path: Path) -> None:
    occupied = tmp_path / "not-a-folder"
    occupied.write_text("x")
    outcome = dbb(*run_args(server, occupied, "shop"), env=password_env(server))
    assert outcome.code == 1
    assert "exists and is not a folder" in outcome.stderr


def test_a_database_that_does_not_exist_is_named(server: Server, backups: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    outcome = dbb(*run_args(server, backups, "nope", termination_log=str(log)), env=password_env(server))
    assert_failed_cleanly(outcome, backups, "DatabaseNotFound", log, server.password)
    assert "nope" in outcome.reason_line


# --- a dump that stops half-way ----------------------------------------------------------------------------------


@contextlib.contextmanager
def table_locked(server: Server, database: str, table: str) -> Iterator[None]:
    """Another session holds a lock that makes the dump wait on `table` (after it has dumped the tables before it,
    for MariaDB; before it writes anything, for PostgreSQL, which locks every table first)."""
    if isinstance(server, PostgresServer):
        argv = ["psql", "-X", "-q", "-h", server.host, "-p", str(server.port), "-U", server.user, "-d", database]
        statements = f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n"
        held = f"SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass AND mode = 'AccessExclusiveLock'"
    else:
        argv = ["mariadb", "--no-defaults", "-h", server.host, "-P", str(server.port), "-u", server.user, database]
        statements = f"LOCK TABLES {table} WRITE;\n"
        held = f"SHOW OPEN TABLES FROM {database} WHERE `Table` = '{table}' AND In_use > 0"
    with subprocess.Popen(argv, stdin=subprocess.PIPE, env=server.env, stdout=subprocess.DEVNULL) as holder:
        assert holder.stdin is not None
        holder.stdin.write(statements.encode())
        holder.stdin.flush()
        wait_for(lambda: server.sql(held, database).strip() not in ("", "0"), "the lock")
        try:
            yield
        finally:
            holder.stdin.close()  # the session ends, its lock with it


def dump_is_waiting(server: Server) -> bool:
    if isinstance(server, PostgresServer):
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'"
        return server.sql(sql) != "0"
    sql = "SELECT COUNT(*) FROM information_schema.processlist WHERE state LIKE 'Waiting for table metadata lock'"
    return server.sql(sql) != "0"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


@pytest.fixture(scope="module")
def slow_databases(pg: PostgresServer, mariadb: MariaDBServer) -> None:
    """`slow`: a table of several MB, dumped first, and a table `zz_locked` that the tests lock."""
    pg.sql("CREATE DATABASE slow")
    pg.sql(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 200) AS v FROM generate_series(1, 30000) g;"
        "CREATE TABLE zz_locked (id int);",
        "slow",
    )
    mariadb.sql("CREATE DATABASE slow")
    mariadb.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, v TEXT);"
        "INSERT INTO big SELECT seq, CONCAT(MD5(seq), REPEAT('x', 200)) FROM seq_1_to_30000;"
        "CREATE TABLE zz_locked (id INT);",
        "slow",
    )


@pytest.mark.usefixtures("slow_databases")
def test_a_killed_run_leaves_only_a_temporary_file_which_the_next_run_removes(server: Server, backups: Path) -> None:
    args = run_args(server, backups, "slow", compression="none")
    with table_locked(server, "slow", "zz_locked"), spawn(args, server) as runner:
        wait_for(lambda: dump_is_waiting(server), "the dump to block on the locked table")
        if isinstance(server, MariaDBServer):
            # MariaDB dumps table by table: `big` went through our stream before the dump reached the lock.
            wait_for(lambda: sum(p.stat().st_size for p in backups.iterdir()) > 1 << 20, "dump data")
        tools = children(runner.pid)
        assert tools, "the dump tool runs as a child of the runner"
        for pid in [runner.pid, *tools]:
            assert server.password not in cmdline(pid), "the password must never be on a command line"
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    # The lock is gone: the orphaned dump tool writes on, meets a closed pipe, and dies of it.
    for pid in tools:
        wait_for(functools.partial(gone, pid), f"dump tool {pid} to exit")
    assert final_files(backups) == []
    leftovers = temporary_files(backups)
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".slow-")
    assert leftovers[0].endswith(".partial")

    outcome = dbb(*args, env=password_env(server))
    assert outcome.code == 0, outcome.stderr
    assert temporary_files(backups) == []
    assert len(final_files(backups)) == 2  # the backup and its manifest


@pytest.mark.usefixtures("slow_databases")
def test_a_dump_tool_that_dies_fails_the_run_without_a_final_file(
    pg: PostgresServer, backups: Path, tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    args = run_args(pg, backups, "slow", termination_log=str(log))
    with table_locked(pg, "slow", "zz_locked"), spawn(args, pg) as runner:
        wait_for(lambda: dump_is_waiting(pg), "pg_dump to block on the locked table")
        # The server ends pg_dump's session: the tool fails, as it would when the database restarts.
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pg_dump'")
        stdout, stderr = runner.communicate(timeout=60)
    outcome = Outcome(runner.returncode, stdout, stderr)
    assert_failed_cleanly(outcome, backups, "DumpFailed", log, pg.password)
    assert "pg_dump exited with 1" in outcome.reason_line


@pytest.mark.usefixtures("slow_databases")
def test_a_run_past_its_timeout_is_stopped_without_a_final_file(server: Server, backups: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    args = run_args(server, backups, "slow", timeout="1", termination_log=str(log))
    with table_locked(server, "slow", "zz_locked"):
        started = time.monotonic()
        outcome = dbb(*args, env=password_env(server))
    assert time.monotonic() - started < 20
    assert_failed_cleanly(outcome, backups, "Timeout", log, server.password)


@pytest.mark.usefixtures("slow_databases")
def test_sigterm_stops_the_run_and_removes_its_temporary_file(server: Server, backups: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    args = run_args(server, backups, "slow", termination_log=str(log))
    with table_locked(server, "slow", "zz_locked"), spawn(args, server) as runner:
        wait_for(lambda: dump_is_waiting(server), "the dump to block on the locked table")
        runner.send_signal(signal.SIGTERM)  # what Kubernetes sends at activeDeadlineSeconds
        stdout, stderr = runner.communicate(timeout=60)
    assert_failed_cleanly(Outcome(runner.returncode, stdout, stderr), backups, "Interrupted", log, server.password)


# --- a full disk -------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real ENOSPC. Needs root (CI runs as root); elsewhere the test is skipped and the unit test
    of our write seam (tests/unit/test_runner_streams.py) covers the same path."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_fails_the_run_without_a_final_file(server: Server, small_disk: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    # `shop` has several MB of incompressible values; uncompressed it cannot fit in 1 MiB.
    outcome = dbb(*run_args(server, small_disk, "shop", compression="none", termination_log=str(log)),
                  env=password_env(server))  # fmt: skip
    assert_failed_cleanly(outcome, small_disk, "DiskFull", log, server.password)
