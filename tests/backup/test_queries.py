"""verify.queries: SQL recorded in the very snapshot pg_dump dumps, and compared by every restore test."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from hack.harness.databases import MariaDBServer, PostgresServer
from tests.backup.cli import command, connection_args, dbb, password_env, queries, run_args, wait_for


def run_with_queries(pg: PostgresServer, env: dict[str, str], folder: Path, *args: str, **flags: str | None) -> Path:
    outcome = dbb(*run_args(pg, folder, *args, **flags), env=password_env(pg) | env)
    assert outcome.code == 0, outcome.stderr
    return Path(outcome.result["file"])


def test_a_query_is_recorded_and_a_restore_test_runs_it_again(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str]
) -> None:
    recorded = queries(
        ("totals", ledger, "SELECT count(*), sum(amount), max(at) FROM entries"),
        ("newest", ledger, "SELECT id, amount FROM entries ORDER BY id DESC LIMIT 3;"),
    )
    file = run_with_queries(pg, reader, backups, ledger, name="ledger", queries=recorded, verify=None)
    manifest_file = file.with_name(file.name + ".json")
    manifest = json.loads(manifest_file.read_text())
    assert [(q["name"], q["database"], q.get("result")) for q in manifest["queries"]] == [
        ("totals", ledger, "500|156562.50|2026-01-21 20:00:00+00\n"),
        ("newest", ledger, "500|625.00\n499|623.75\n498|622.50\n"),
    ]

    args = ["verify", str(file), "--restore-test", *connection_args(pg)]
    passed = dbb(*args, env=password_env(pg) | reader)
    assert passed.code == 0, passed.stderr
    assert passed.result["queries"] == 2

    # What the backup recorded differs from what its restore gives: the restore test names the query, and both
    # results by their line counts and digests, never by a value (a status shows the message).
    manifest["queries"][0]["result"] = "501|156563.75|2026-01-21 21:00:00+00\n"
    manifest["queries"][0]["sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    failed = dbb(*args, env=password_env(pg) | reader)
    assert failed.code == 1
    assert failed.result["reason"] == "VerifyFailed"
    gives = hashlib.sha256(b"500|156562.50|2026-01-21 20:00:00+00\n").hexdigest()[:12]
    assert failed.result["message"] == (
        f"restore test of 'ledger': query 'totals' gives 1 line, sha256 {gives}… after the restore; "
        "the backup recorded 1 line, sha256 000000000000…"
    )
    assert "156562" not in failed.stdout + failed.stderr
    assert not [d for d in pg.databases() if d.startswith("dbb_verify_")]


def test_the_queries_and_the_dump_see_one_snapshot(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str]
) -> None:
    """A row committed while the queries run is in neither the recorded result nor the dump: pg_dump dumps the
    snapshot the queries ran in, not one of its own taken later."""
    # The query waits for a lock the test holds; meanwhile a row is committed; then the lock goes.
    locker = subprocess.Popen(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", pg.host, "-p", str(pg.port), "-U", pg.user],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**pg.env, "PGDATABASE": ledger},
    )
    assert locker.stdin is not None
    assert locker.stdout is not None
    locker.stdin.write("BEGIN;\nLOCK TABLE gate IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n")
    locker.stdin.flush()
    assert locker.stdout.readline() == "locked\n"
    sql = "SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM gate)"
    run = subprocess.Popen(
        [
            command(),
            *run_args(pg, backups, ledger, name="ledger", queries=queries(("count", ledger, sql)), verify=None),
        ],
        env=password_env(pg) | reader,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM gate%'"
        wait_for(lambda: pg.sql(waiting) == "1", "the recorded query to wait for the lock", timeout=60)
        pg.sql("INSERT INTO entries VALUES (501, 1.00, now())", ledger)
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        stdout, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
        locker.kill()
        locker.wait()
        locker.stdout.close()
    assert run.returncode == 0, stderr
    file = Path(json.loads(stdout)["file"])
    manifest = json.loads(file.with_name(file.name + ".json").read_text())
    assert manifest["queries"][0]["result"] == "500|0\n"
    assert manifest["rows"][ledger]["public.entries"] == 500  # the dump's own count: the same snapshot
    assert pg.sql("SELECT count(*) FROM entries", ledger) == "501"
    verified = dbb("verify", str(file), "--restore-test", *connection_args(pg), env=password_env(pg) | reader)
    assert verified.code == 0, verified.stderr


def test_queries_are_refused_for_mysql(mariadb: MariaDBServer, backups: Path) -> None:
    outcome = dbb(
        *run_args(mariadb, backups, "shop", queries=queries(("count", "shop", "SELECT count(*) FROM orders"))),
        env=password_env(mariadb),
    )
    assert outcome.code == 1
    assert outcome.result["reason"] == "InvalidArguments"
    assert "mysqldump's snapshot cannot be shared" in outcome.result["message"]
    assert list(backups.iterdir()) == []


def test_a_query_that_fails_fails_the_run_before_anything_is_written(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str]
) -> None:
    outcome = dbb(
        *run_args(pg, backups, ledger, queries=queries(("bad", ledger, "SELECT nope FROM entries"))),
        env=password_env(pg) | reader,
    )
    assert outcome.code == 1
    assert outcome.result["reason"] == "QueryFailed"
    assert outcome.result["message"] == "query 'bad' failed: 42703 undefined_column"
    assert list(backups.iterdir()) == []
