"""A PostgreSQL restore applies all or nothing: whatever stops it (a statement that fails half way, a damaged file,
--timeout, SIGTERM) leaves the target database exactly as it was, and a database it created is gone again. The
script is fitted to the server: a session setting the server does not know is left out, and only such a setting."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup.cli import (
    Outcome,
    backup,
    children,
    connection_args,
    dbb,
    gone,
    password_env,
    restore,
    spawn,
    wait_for,
)
from tests.backup.content import pg_fingerprint
from tests.backup.servers import PostgresServer


@pytest.fixture
def target(pg: PostgresServer) -> Iterator[str]:
    name = f"restored_{uuid.uuid4().hex[:8]}"
    yield name
    pg.drop_database(name)


@pytest.fixture(scope="module")
def shop_backup(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return backup(pg, tmp_path_factory.mktemp("backups"), "shop", compression="none")


def snapshot(server: PostgresServer, database: str) -> dict[str, str]:
    """Every schema and relation by name and kind, and the fingerprint (rows, functions, large objects, ...)."""
    objects = server.sql(
        "SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname !~ '^(pg_|information_schema)' UNION ALL "
        "SELECT 'relation ' || c.oid::regclass::text || ' ' || c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname !~ '^(pg_|information_schema)' ORDER BY 1",
        database,
    )
    return {"objects": objects, **pg_fingerprint(server, database)}


def existing_target(pg: PostgresServer, name: str) -> dict[str, str]:
    """A target database with a table of its own, which the restore's primary key `customers_pkey` runs into."""
    pg.sql(f"CREATE DATABASE {name}")
    pg.sql("CREATE TABLE public.customers_pkey (note text); INSERT INTO customers_pkey VALUES ('mine')", name)
    return snapshot(pg, name)


def assert_failed(outcome: Outcome, reason: str, *phrases: str) -> None:
    assert outcome.code == 1, outcome.stderr
    assert outcome.reason_line.startswith(f"dbb-backup: {reason}: "), outcome.stderr
    assert outcome.result["reason"] == reason
    for phrase in phrases:
        assert phrase in outcome.reason_line


def test_a_restore_that_fails_half_way_leaves_the_target_as_it_was(
    pg: PostgresServer, shop_backup: Path, target: str
) -> None:
    # The primary keys come after every table, row and large object of the script: all of them were applied
    # when the conflict stops it (the large object's data, without one transaction, would have been committed).
    before = existing_target(pg, target)
    outcome = restore(pg, shop_backup, target)
    assert_failed(outcome, "RestoreFailed", "psql exited with 3", 'relation "customers_pkey" already exists')
    assert pg.password not in outcome.stdout + outcome.stderr
    assert snapshot(pg, target) == before


def test_a_damaged_backup_restores_nothing_and_leaves_no_new_database(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    damaged = tmp_path / shop_backup.name
    data = shop_backup.read_bytes()
    damaged.write_bytes(data[: len(data) * 2 // 3])  # cut short in the middle of the table data
    outcome = restore(pg, damaged, target)
    assert_failed(outcome, "RestoreFailed", "pg_restore exited with 1")
    assert target not in pg.databases()


def test_the_restored_copy_is_whole_after_a_failed_attempt(pg: PostgresServer, shop_backup: Path, target: str) -> None:
    existing_target(pg, target)
    assert restore(pg, shop_backup, target).code == 1
    pg.sql("DROP TABLE customers_pkey", target)
    outcome = restore(pg, shop_backup, target)
    assert outcome.code == 0, outcome.stderr
    assert pg_fingerprint(pg, target) == pg_fingerprint(pg, "shop")


# --- stopped while it waits -----------------------------------------------------------------------------------


@contextlib.contextmanager
def schema_held(pg: PostgresServer, database: str) -> Iterator[None]:
    """Another session creates schema `sales` and does not commit: the restore's CREATE SCHEMA sales waits for it."""
    argv = ["psql", "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-d", database]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, env=pg.env, stdout=subprocess.DEVNULL) as holder:
        assert holder.stdin is not None
        holder.stdin.write(b"BEGIN; CREATE SCHEMA sales;\n")
        holder.stdin.flush()
        try:
            yield
        finally:
            holder.stdin.close()  # the session ends, and its schema with it


def restore_is_waiting(pg: PostgresServer, database: str) -> bool:
    sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND wait_event_type = 'Lock'"
    return pg.sql(sql) != "0"


def sessions(pg: PostgresServer, database: str) -> int:
    return int(pg.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"))


def test_a_restore_past_its_timeout_is_stopped_and_applies_nothing(
    pg: PostgresServer, shop_backup: Path, target: str
) -> None:
    before = existing_target(pg, target)
    args = ["restore", str(shop_backup), *connection_args(pg), "--database", target, "--timeout", "3"]
    with schema_held(pg, target):
        started = time.monotonic()
        outcome = dbb(*args, env=password_env(pg), timeout=60)
        assert time.monotonic() - started < 20
        assert_failed(outcome, "Timeout")
    wait_for(lambda: sessions(pg, target) == 0, "every session on the target to end")
    assert snapshot(pg, target) == before


def test_sigterm_stops_both_tools_of_a_restore_and_applies_nothing(
    pg: PostgresServer, shop_backup: Path, target: str
) -> None:
    before = existing_target(pg, target)
    args = ["restore", str(shop_backup), *connection_args(pg), "--database", target]
    with schema_held(pg, target), spawn(args, pg) as runner:
        wait_for(lambda: restore_is_waiting(pg, target), "the restore to wait for the held schema")
        tools = children(runner.pid)
        assert len(tools) == 2, "pg_restore and psql run as children of the runner"
        runner.send_signal(signal.SIGTERM)  # what Kubernetes sends at activeDeadlineSeconds
        stdout, stderr = runner.communicate(timeout=60)
    assert_failed(Outcome(runner.returncode, stdout, stderr), "Interrupted")
    for pid in tools:
        assert gone(pid)
    wait_for(lambda: sessions(pg, target) == 0, "every session on the target to end")
    assert snapshot(pg, target) == before


# --- a newer pg_restore's session settings ---------------------------------------------------------------------


def newer_pg_restore(server: PostgresServer, folder: Path, setting: str, archive: Path) -> dict[str, str]:
    """The runner's environment with a `pg_restore` that writes scripts as pg_restore 17 does: one more
    `SET <setting> = 0;` among its session settings. (The host has only PostgreSQL 15 tools; the end-to-end suite
    restores with real 17 tools into older servers.)"""
    real = shutil.which("pg_restore")
    assert real is not None
    folder.mkdir()
    shim = folder / "pg_restore"
    shim.write_text(
        "#!/bin/bash\nset -o pipefail\n"
        f'"{real}" "$@" | sed "s/^SET idle_in_transaction_session_timeout = 0;$/&\\nSET {setting} = 0;/"\n'
    )
    shim.chmod(0o755)
    with archive.open("rb") as stdin:
        script = subprocess.run([shim, "-f", "-"], stdin=stdin, capture_output=True, check=True).stdout
    assert f"\nSET {setting} = 0;\n".encode() in script
    env = password_env(server)
    env["PATH"] = f"{folder}:{env['PATH']}"
    return env


def test_a_setting_the_server_does_not_know_is_left_out(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    env = newer_pg_restore(pg, tmp_path / "bin", "transaction_timeout", shop_backup)
    outcome = dbb("restore", str(shop_backup), *connection_args(pg), "--database", target, env=env)
    assert outcome.code == 0, outcome.stderr
    assert pg_fingerprint(pg, target) == pg_fingerprint(pg, "shop")
    assert "left out settings the server does not know" in outcome.stderr
    assert "transaction_timeout" in outcome.stderr


def test_any_other_setting_the_server_rejects_fails_the_restore_whole(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    env = newer_pg_restore(pg, tmp_path / "bin", "no_such_setting", shop_backup)
    outcome = dbb("restore", str(shop_backup), *connection_args(pg), "--database", target, env=env)
    assert_failed(outcome, "RestoreFailed", 'unrecognized configuration parameter "no_such_setting"')
    assert target not in pg.databases()


def test_a_restore_test_fits_the_script_to_the_server_as_well(
    pg: PostgresServer, shop_backup: Path, tmp_path: Path
) -> None:
    env = newer_pg_restore(pg, tmp_path / "bin", "transaction_timeout", shop_backup)
    before = pg.databases()
    outcome = dbb("verify", str(shop_backup), "--restore-test", *connection_args(pg), env=env)
    assert outcome.code == 0, outcome.stderr
    assert outcome.result["restoreTested"] is True
    assert "left out settings the server does not know" in outcome.stderr
    assert pg.databases() == before
