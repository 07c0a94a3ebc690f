"""verify.queries can only read: whatever SQL the author of a DatabaseBackup writes, it runs as one statement, in a
read-only transaction that is rolled back, as a role that can only read, through libpq (no psql meta-command), and
a failure tells the query's name and SQLSTATE, never data. Real PostgreSQL 15 throughout."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.harness.databases import PostgresServer
from runner.engines import Connection
from runner.errors import Scrubber
from runner.process import Deadline
from runner.queries import Query, record
from runner.querysession import Session, scratch_role
from tests.backup.cli import Outcome, connection_args, dbb, password_env, queries, run_args, wait_for
from tests.backup.conftest import READER


def run(
    pg: PostgresServer, folder: Path, env: dict[str, str], sql: str, *flags: str, database: str = "ledger"
) -> Outcome:
    args = run_args(pg, folder, database, queries=queries(("q", database, sql)))
    return dbb(*args, *flags, env=password_env(pg) | env)


def table_exists(pg: PostgresServer, name: str) -> bool:
    return pg.sql(f"SELECT to_regclass('public.{name}') IS NOT NULL", "ledger") == "t"


@pytest.fixture
def writable(pg: PostgresServer, ledger: str, reader: dict[str, str]) -> str:
    """The reader may create tables in `public` (PostgreSQL 15 grants that to nobody by default): what stops a
    write below is the read-only transaction, not a missing privilege."""
    pg.sql(f"GRANT CREATE ON SCHEMA public TO {READER}", ledger)
    return ledger


@pytest.mark.parametrize(
    "sql", ["select 1; create table x ()", "select 1; commit; create table x ()", "create table x (); select 1"]
)
def test_more_than_one_statement_is_refused_by_the_server_and_writes_nothing(
    pg: PostgresServer, backups: Path, writable: str, reader: dict[str, str], sql: str
) -> None:
    outcome = run(pg, backups, reader, sql)
    assert (outcome.code, outcome.result["reason"]) == (1, "QueryFailed")
    assert outcome.result["message"] == "query 'q' failed: 42601 syntax_error"
    assert not table_exists(pg, "x")
    assert list(backups.iterdir()) == []


@pytest.mark.parametrize("command", ["\\! touch {marker}", "\\set x `touch {marker}`", "\\getenv x DB_PASSWORD"])
def test_a_psql_meta_command_is_no_command(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str], tmp_path: Path, command: str
) -> None:
    marker = tmp_path / "shell-ran"
    outcome = run(pg, backups, reader, command.format(marker=marker))
    assert (outcome.code, outcome.result["reason"]) == (1, "QueryFailed")
    assert outcome.result["message"] == "query 'q' failed: 42601 syntax_error"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("sql", "condition"),
    [
        ("select set_config('transaction_read_only', 'off', true)", "25001 active_sql_transaction"),
        ("SET transaction_read_only = off", "25001 active_sql_transaction"),
        ("DO $$BEGIN SET LOCAL transaction_read_only = off; CREATE TABLE public.x (); END$$", "25001"),
        ("CREATE TABLE public.x ()", "25006 read_only_sql_transaction"),
        ("SET ROLE postgres", "42501 insufficient_privilege"),
        ("SET SESSION AUTHORIZATION postgres", "42501 insufficient_privilege"),
        ("select set_config('role', 'postgres', false)", "42501 insufficient_privilege"),
        ("COPY (select 1) TO PROGRAM 'touch {marker}'", "42501 insufficient_privilege"),
        ("select pg_catalog.pg_read_file('postmaster.pid')", "42501 insufficient_privilege"),
    ],
)
def test_a_way_out_of_reading_fails_and_writes_nothing(
    pg: PostgresServer,
    backups: Path,
    writable: str,
    reader: dict[str, str],
    tmp_path: Path,
    sql: str,
    condition: str,
) -> None:
    marker = tmp_path / "program-ran"
    outcome = run(pg, backups, reader, sql.format(marker=marker))
    assert (outcome.code, outcome.result["reason"]) == (1, "QueryFailed")
    assert outcome.result["message"].startswith(f"query 'q' failed: {condition}")
    assert not table_exists(pg, "x")
    assert not marker.exists()


def test_nothing_a_query_did_to_its_session_outlives_it(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str]
) -> None:
    """Queries share a session: a lock or a setting one of them takes is gone before the next runs."""
    first = "SELECT pg_advisory_lock(42), set_config('dbb.left', 'behind', false)"
    after = "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'), current_setting('dbb.left', true)"
    items = queries(("first", ledger, first), ("after", ledger, after))
    outcome = dbb(*run_args(pg, backups, ledger, queries=items), env=password_env(pg) | reader)
    assert outcome.code == 0, outcome.stderr
    file = Path(outcome.result["file"])
    recorded = json.loads(file.with_name(file.name + ".json").read_text())["queries"]
    assert [q["result"] for q in recorded] == ["|behind\n", "0|\n"]


def test_a_failing_query_tells_its_sqlstate_and_no_data(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    outcome = run(pg, backups, reader, "select 'secretvalue'::int", "--termination-log", str(log))
    assert (outcome.code, outcome.result["reason"]) == (1, "QueryFailed")
    assert outcome.result["message"] == "query 'q' failed: 22P02 invalid_text_representation"
    for text in (outcome.stdout, outcome.stderr, log.read_text()):
        assert "secretvalue" not in text


@pytest.fixture
def risky_role(pg: PostgresServer) -> Iterator[tuple[str, dict[str, str]]]:
    """A login role the test gives more than reading; its name and login."""
    name = "risky_reader"
    pg.sql(f"CREATE ROLE {name} LOGIN PASSWORD 'risky-Pw-1'; GRANT pg_read_all_data TO {name}")
    try:
        yield name, {"QUERY_USER": name, "QUERY_PASSWORD": "risky-Pw-1"}
    finally:
        pg.sql(f"DROP ROLE {name}")


@pytest.mark.parametrize(
    ("grant", "problem"),
    [
        ("ALTER ROLE {role} SUPERUSER", "it is a superuser"),
        ("GRANT postgres TO {role}", "it can become the superuser postgres"),
        ("ALTER ROLE {role} CREATEROLE", "it has CREATEROLE"),
        ("ALTER ROLE {role} REPLICATION", "it has REPLICATION"),
        ("ALTER ROLE {role} BYPASSRLS", "it has BYPASSRLS"),
        ("GRANT pg_monitor TO {role}", "it is a member of pg_monitor; it is a member of pg_read_all_stats"),
        ("GRANT pg_execute_server_program TO {role}", "it is a member of pg_execute_server_program"),
        ("GRANT pg_write_all_data TO {role}", "it is a member of pg_write_all_data"),
        ("GRANT pg_signal_backend TO {role}", "it is a member of pg_signal_backend"),
    ],
)
def test_a_role_that_can_do_more_than_read_is_refused_before_anything_is_dumped(
    pg: PostgresServer, backups: Path, ledger: str, risky_role: tuple[str, dict[str, str]], grant: str, problem: str
) -> None:
    role, login = risky_role
    pg.sql(grant.format(role=role))
    outcome = run(pg, backups, login, "select count(*) from entries")
    assert (outcome.code, outcome.result["reason"]) == (1, "UnsafeQueryRole")
    assert outcome.result["message"].startswith("the queries' role ([REDACTED]) must only read, and ")
    assert problem in outcome.result["message"]
    assert list(backups.iterdir()) == []
    assert "pg_dump" not in outcome.stderr


def test_the_backups_own_superuser_is_refused_as_the_queries_role(
    pg: PostgresServer, backups: Path, ledger: str
) -> None:
    outcome = run(pg, backups, {"QUERY_USER": pg.user, "QUERY_PASSWORD": pg.password}, "select 1")
    assert (outcome.code, outcome.result["reason"]) == (1, "UnsafeQueryRole")
    assert outcome.result["message"].endswith("must only read, and it is a superuser")
    assert list(backups.iterdir()) == []


def test_a_role_that_can_reach_other_hosts_through_dblink_is_refused(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str]
) -> None:
    pg.sql("CREATE EXTENSION dblink", ledger)
    outcome = run(pg, backups, reader, "select count(*) from entries")
    assert (outcome.code, outcome.result["reason"]) == (1, "UnsafeQueryRole")
    assert (
        "it can execute functions of dblink in database 'ledger', which reach other hosts"
        in (outcome.result["message"])
    )
    # Once the admin takes EXECUTE away from everyone, the extension is no way out.
    pg.sql("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC", ledger)
    assert run(pg, backups, reader, "select count(*) from entries").code == 0


def test_queries_without_their_own_role_are_refused_before_anything_is_contacted(
    pg: PostgresServer, backups: Path, ledger: str
) -> None:
    outcome = run(pg, backups, {}, "select 1")
    assert (outcome.code, outcome.result["reason"]) == (1, "InvalidArguments")
    assert outcome.result["message"] == (
        "--queries need a read-only role of their own: give QUERY_USER and QUERY_PASSWORD"
    )


def test_a_restore_test_on_the_own_server_needs_the_queries_role(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str]
) -> None:
    made = run(pg, backups, reader, "select count(*) from entries")
    assert made.code == 0, made.stderr
    outcome = dbb("verify", made.result["file"], "--restore-test", *connection_args(pg), env=password_env(pg))
    assert (outcome.code, outcome.result["reason"]) == (1, "InvalidArguments")
    assert "QUERY_USER and QUERY_PASSWORD" in outcome.result["message"]
    assert not [d for d in pg.databases() if d.startswith("dbb_verify_")]


# Not a superuser, a reader through pg_read_all_data, and no one else: the same at backup time (QUERY_USER) and on
# the scratch server (its throwaway role), so the restore test passes only when the scratch superuser is not used.
WHO = (
    "SELECT r.rolsuper, pg_has_role(current_user, 'pg_read_all_data', 'MEMBER'), current_user = session_user, "
    "(SELECT count(*) FROM entries) FROM pg_roles r WHERE r.rolname = current_user"
)


def test_on_a_scratch_server_the_queries_run_as_a_throwaway_reader(
    pg: PostgresServer, pg_empty: PostgresServer, backups: Path, ledger: str, reader: dict[str, str]
) -> None:
    scratch = ["--verify", "--restore-test", "--scratch-port", str(pg_empty.port), "--scratch-user", pg_empty.user]
    outcome = run(pg, backups, reader | {"SCRATCH_PASSWORD": pg_empty.password}, WHO, *scratch)
    assert outcome.code == 0, outcome.stderr
    file = Path(outcome.result["file"])
    [recorded] = json.loads(file.with_name(file.name + ".json").read_text())["queries"]
    assert recorded["result"] == "f|t|t|500\n"
    assert outcome.result["verified"] is True
    assert pg_empty.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'dbb\\_query\\_%'") == "0"


def test_before_postgresql_14_the_throwaway_reader_is_granted_each_schema(pg: PostgresServer, ledger: str) -> None:
    """pg_read_all_data is PostgreSQL 14's: for an older scratch server the role gets USAGE and SELECT grants.
    Shown on this 15 server by asking for the older way."""
    pg.sql("CREATE SCHEMA other; CREATE TABLE other.t AS SELECT 1 AS one", ledger)
    superuser = Connection(pg.host, pg.port, pg.user, pg.password)
    scrub, deadline = Scrubber([pg.password]), Deadline(60)
    with scratch_role(superuser, ledger, 130000, scrub, deadline) as role:
        sql = (
            "SELECT pg_has_role(current_user, 'pg_read_all_data', 'MEMBER'), "
            "(SELECT count(*) FROM entries), (SELECT one FROM other.t)"
        )
        with Session(role.on(superuser), ledger, scrub, deadline) as session:
            session.check_role()
            assert session.query(Query("grants", ledger, sql)) == "f|500|1\n"
    assert pg.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'dbb\\_query\\_%'") == "0"


# What the runner of before sent to psql (`psql -X -q -At -v ON_ERROR_STOP=1`), around each query.
OLD_SETTINGS = (
    "SET LOCAL TimeZone = 'UTC';\n"
    "SET LOCAL DateStyle = 'ISO, YMD';\n"
    "SET LOCAL IntervalStyle = 'postgres';\n"
    "SET LOCAL extra_float_digits = 1;\n"
    "SET LOCAL bytea_output = 'hex';\n"
)
PRINTED = [
    "SELECT 1",
    "SELECT NULL, 1, 'a|b', E'two\\nlines', 1.5::float8, 0.1::float4, 1e100::float8, '\\xdeadbeef'::bytea",
    "SELECT timestamptz '2026-01-01 12:00+02', interval '1 day 2 hours', date '2026-03-01', time '01:02:03.5'",
    "SELECT true, false, 12345678901234567890.125::numeric, '{1,NULL,3}'::int[], '{\"a\": [1, 2]}'::jsonb",
    "SELECT 'ünïcödé 🙂', E'tab\\there', '', NULL::text, ' spaced '",
    "SELECT g, md5(g::text) FROM generate_series(1, 40) g",
    "SELECT FROM generate_series(1, 3)",
    "SELECT 1 WHERE false",
    "SELECT count(*), sum(amount), max(at) FROM entries",
    "SHOW TimeZone",
]


def test_results_print_as_psql_printed_them_so_older_manifests_still_compare(
    pg: PostgresServer, ledger: str, reader: dict[str, str]
) -> None:
    connection = Connection(pg.host, pg.port, reader["QUERY_USER"], reader["QUERY_PASSWORD"])
    with Session(connection, ledger, Scrubber(), Deadline(60)) as session:
        for sql in PRINTED:
            script = f"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n{OLD_SETTINGS}{sql}\n;\nCOMMIT;\n"
            old = subprocess.run(
                ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", *connection_args(pg), "-d", ledger],
                input=script.encode(),
                capture_output=True,
                env=pg.env,
                check=True,
            ).stdout.decode()
            new = session.query(Query("q", ledger, sql))
            assert new == old, sql
            assert record(Query("q", ledger, sql), new).sha256 == record(Query("q", ledger, sql), old).sha256


def test_the_queries_role_is_scrubbed_from_a_failed_login(pg: PostgresServer, backups: Path, ledger: str) -> None:
    login = {"QUERY_USER": READER, "QUERY_PASSWORD": "not-the-Readers-password"}
    outcome = run(pg, backups, login, "select 1")
    assert (outcome.code, outcome.result["reason"]) == (1, "AuthenticationFailed")
    for secret in (READER, "not-the-Readers-password"):
        assert secret not in outcome.stdout + outcome.stderr


def test_the_runs_timeout_stops_a_query_on_the_server_too(
    pg: PostgresServer, backups: Path, ledger: str, reader: dict[str, str]
) -> None:
    started = time.monotonic()
    outcome = run(pg, backups, reader, "select pg_sleep(60)", "--timeout", "3")
    assert (outcome.code, outcome.result["reason"]) == (1, "Timeout")
    assert time.monotonic() - started < 30
    sleeping = f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{READER}' AND query LIKE '%pg_sleep%'"
    wait_for(lambda: pg.sql(sleeping) == "0", "the query to end on the server")
    assert list(backups.iterdir()) == []
