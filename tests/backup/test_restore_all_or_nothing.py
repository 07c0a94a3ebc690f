"""A restore checks the whole file before it touches the server, goes into a new database (an existing one only
with --replace, and then by a swap of names), and applies all or nothing: whatever stops it (a statement that fails
late, a damaged file, --timeout, SIGTERM) leaves the target exactly as it was, and a database it created is gone
again. The script is fitted to the server: a session setting the server does not know is left out, and only that.

A restore that fails or waits late is made with a `pg_restore` shim that adds one statement just before the
script's COMMIT, after every table, row and large object: nothing else makes a fresh database fail that late.
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.harness.content import pg_fingerprint
from hack.harness.databases import PostgresServer
from tests.backup.cli import (
    Outcome,
    backup,
    children,
    command,
    connection_args,
    dbb,
    gone,
    password_env,
    restore,
    wait_for,
)


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


def existing_database(pg: PostgresServer, name: str) -> dict[str, str]:
    """A target database with content of its own: a table the backup does not have, and one it has, in another
    shape."""
    pg.sql(f"CREATE DATABASE {name}")
    pg.sql("CREATE TABLE mine (note text); INSERT INTO mine VALUES ('mine'); CREATE TABLE customers (stale text)", name)
    return snapshot(pg, name)


def pg_restore_shim(server: PostgresServer, folder: Path, sed: str) -> dict[str, str]:
    """The runner's environment with a `pg_restore` whose script goes through `sed` (a real pg_restore's output)."""
    real = shutil.which("pg_restore")
    assert real is not None
    folder.mkdir()
    shim = folder / "pg_restore"
    shim.write_text(f'#!/bin/bash\nset -o pipefail\n"{real}" "$@" | sed "{sed}"\n')
    shim.chmod(0o755)
    env = password_env(server)
    env["PATH"] = f"{folder}:{env['PATH']}"
    return env


def before_commit(server: PostgresServer, folder: Path, statement: str) -> dict[str, str]:
    return pg_restore_shim(server, folder, f"s/^COMMIT;$/{statement}\\nCOMMIT;/")


def leftovers(pg: PostgresServer) -> list[str]:
    """Databases a replacing restore works in: none may stay behind."""
    return [d for d in pg.databases() if "_dbb_new_" in d or "_dbb_old_" in d]


def assert_failed(outcome: Outcome, reason: str, *phrases: str) -> None:
    assert outcome.code == 1, outcome.stderr
    assert outcome.reason_line.startswith(f"dbb-backup: {reason}: "), outcome.stderr
    assert outcome.result["reason"] == reason
    for phrase in phrases:
        assert phrase in outcome.reason_line


def test_a_restore_that_fails_late_creates_nothing(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    env = before_commit(pg, tmp_path / "bin", "SELECT 1 \\/ 0;")
    outcome = dbb("restore", str(shop_backup), *connection_args(pg), "--database", target, env=env)
    assert_failed(outcome, "RestoreFailed", "psql exited with 3", "division by zero")
    assert pg.password not in outcome.stdout + outcome.stderr
    assert target not in pg.databases()


def test_a_replacing_restore_that_fails_late_leaves_the_target_as_it_was(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    before = existing_database(pg, target)
    env = before_commit(pg, tmp_path / "bin", "SELECT 1 \\/ 0;")
    outcome = dbb("restore", str(shop_backup), *connection_args(pg), "--database", target, "--replace", env=env)
    assert_failed(outcome, "RestoreFailed", "division by zero")
    assert snapshot(pg, target) == before
    assert leftovers(pg) == []


def test_a_cut_short_backup_fails_as_such_and_leaves_nothing(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    damaged = tmp_path / shop_backup.name
    data = shop_backup.read_bytes()
    damaged.write_bytes(data[: len(data) * 2 // 3])  # cut short in the middle of the table data
    shutil.copy(str(shop_backup) + ".json", str(damaged) + ".json")
    outcome = restore(pg, damaged, target)
    assert_failed(outcome, "VerifyFailed", f"{shop_backup.name} has {len(data) * 2 // 3} bytes, its manifest says")
    assert target not in pg.databases()


def test_an_existing_target_is_refused_unless_replace_is_given(
    pg: PostgresServer, shop_backup: Path, target: str
) -> None:
    before = existing_database(pg, target)
    outcome = restore(pg, shop_backup, target)
    assert_failed(outcome, "TargetExists", f"database '{target}' exists on the server", "--replace")
    assert snapshot(pg, target) == before
    # --replace: exactly the backup's content; the table the backup does not have is gone, the other one replaced.
    outcome = restore(pg, shop_backup, target, replace=True)
    assert outcome.code == 0, outcome.stderr
    assert pg_fingerprint(pg, target) == pg_fingerprint(pg, "shop")
    assert "mine" not in snapshot(pg, target)["objects"]
    assert leftovers(pg) == []


def test_replace_ends_the_sessions_on_the_target_and_swaps_while_they_reconnect(
    pg: PostgresServer, shop_backup: Path, target: str
) -> None:
    existing_database(pg, target)
    argv = ["psql", "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-d", target]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, env=pg.env, stdout=subprocess.DEVNULL) as session:
        wait_for(lambda: sessions(pg, target) == 1, "an application's session on the target")
        outcome = restore(pg, shop_backup, target, replace=True)
        assert session.stdin is not None
        session.stdin.close()
    assert outcome.code == 0, outcome.stderr
    assert pg_fingerprint(pg, target) == pg_fingerprint(pg, "shop")
    assert leftovers(pg) == []


def test_a_file_without_its_manifest_is_refused_unless_asked_and_then_still_all_or_nothing(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    alone = tmp_path / shop_backup.name
    data = shop_backup.read_bytes()
    alone.write_bytes(data[: len(data) * 2 // 3])
    assert_failed(restore(pg, alone, target), "InvalidArguments", "no manifest", "--without-manifest")
    assert target not in pg.databases()
    # An uncompressed archive proves nothing by itself: the restore finds the cut, and rolls back.
    outcome = restore(pg, alone, target, without_manifest=True)
    assert_failed(outcome, "RestoreFailed", "pg_restore exited with 1")
    assert target not in pg.databases()


def test_the_restored_copy_is_whole_after_a_failed_attempt(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    env = before_commit(pg, tmp_path / "bin", "SELECT 1 \\/ 0;")
    assert dbb("restore", str(shop_backup), *connection_args(pg), "--database", target, env=env).code == 1
    outcome = restore(pg, shop_backup, target)
    assert outcome.code == 0, outcome.stderr
    assert pg_fingerprint(pg, target) == pg_fingerprint(pg, "shop")


# --- stopped while it waits -----------------------------------------------------------------------------------


def restore_is_waiting(pg: PostgresServer) -> bool:
    """The restore's session sleeps in the statement the shim added before COMMIT: everything else is applied."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3600)%' AND pid <> pg_backend_pid()"
    return pg.sql(sql) != "0"


def sessions(pg: PostgresServer, database: str) -> int:
    return int(pg.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"))


def test_a_restore_past_its_timeout_is_stopped_and_applies_nothing(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    before = existing_database(pg, target)
    env = before_commit(pg, tmp_path / "bin", "SELECT pg_sleep(3600);")
    args = ["restore", str(shop_backup), *connection_args(pg), "--database", target, "--replace", "--timeout", "5"]
    started = time.monotonic()
    outcome = dbb(*args, env=env, timeout=60)
    assert time.monotonic() - started < 30
    assert_failed(outcome, "Timeout")
    assert snapshot(pg, target) == before
    assert leftovers(pg) == []


def test_sigterm_stops_both_tools_of_a_restore_and_applies_nothing(
    pg: PostgresServer, shop_backup: Path, target: str, tmp_path: Path
) -> None:
    before = existing_database(pg, target)
    env = before_commit(pg, tmp_path / "bin", "SELECT pg_sleep(3600);")
    args = [command(), "restore", str(shop_backup), *connection_args(pg), "--database", target, "--replace"]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as runner:
        wait_for(lambda: restore_is_waiting(pg), "the restore to have applied everything but its COMMIT")
        tools = children(runner.pid)  # psql (pg_restore may be done writing the script)
        assert tools, "the restore tools run as children of the runner"
        runner.send_signal(signal.SIGTERM)  # what Kubernetes sends at activeDeadlineSeconds
        stdout, stderr = runner.communicate(timeout=60)
    assert_failed(Outcome(runner.returncode, stdout, stderr), "Interrupted")
    for pid in tools:
        wait_for(functools.partial(gone, pid), f"tool {pid} to exit")
    assert snapshot(pg, target) == before
    assert leftovers(pg) == []


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
