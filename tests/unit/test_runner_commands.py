"""Command lines, environments, error classes and the result line: the contract with the tools and the reconciler."""

from __future__ import annotations

import json

import pytest

from runner.backup import check_client_version
from runner.compression import Compression
from runner.engines import (
    Connection,
    Engine,
    Tls,
    TlsMode,
    check_client_support,
    child_env,
    classify_failure,
    mysql_client_argv,
    mysql_dump_argv,
    mysql_session_encrypted,
    password_from_env,
    pg_conninfo,
    pg_dump_argv,
    pg_globals_argv,
    pg_restore_script_argv,
    psql_argv,
    psql_restore_argv,
)
from runner.errors import REDACTED, Reason, RunnerError, Scrubber, one_line
from runner.report import MAX_BYTES, failure_result, render

PASSWORD = "p@ss w'rd/€"
CONNECTION = Connection("db.default.svc", 5432, "backup", PASSWORD)


@pytest.mark.parametrize(
    "argv",
    [
        pg_dump_argv(CONNECTION, "shop", Compression.GZIP),
        pg_dump_argv(CONNECTION, "shop", Compression.ZSTD),
        pg_globals_argv(CONNECTION),
        pg_restore_script_argv(no_owner=True),
        psql_argv(CONNECTION, "shop"),
        psql_restore_argv(CONNECTION, "shop"),
        mysql_dump_argv(CONNECTION, ["shop", "crm"], several=True),
    ],
)
def test_no_command_line_carries_the_password(argv: list[str]) -> None:
    assert not any(PASSWORD in arg for arg in argv)


def test_pg_dump_compresses_itself_only_for_gzip() -> None:
    assert "-Z0" not in pg_dump_argv(CONNECTION, "shop", Compression.GZIP)
    assert "-Z0" in pg_dump_argv(CONNECTION, "shop", Compression.ZSTD)
    assert "-Z0" in pg_dump_argv(CONNECTION, "shop", Compression.NONE)


def test_a_restore_is_one_transaction_that_psql_stops_at_the_first_error() -> None:
    script = pg_restore_script_argv(no_owner=True)
    assert "--single-transaction" in script
    assert {"--no-owner", "--no-acl"} <= set(script)
    assert script[-2:] == ["-f", "-"]
    assert not {"-h", "-d", "-U"} & set(script), "pg_restore only writes the script; it connects nowhere"
    psql = psql_restore_argv(CONNECTION, "shop")
    assert psql[psql.index("-v") + 1] == "ON_ERROR_STOP=1"
    assert "-X" in psql
    # The transaction is pg_restore's BEGIN ... COMMIT: psql's own would commit at the end of any input.
    assert not {"--single-transaction", "-1"} & set(psql)
    assert psql[psql.index("-d") + 1] == "dbname='shop'"


def test_a_database_name_cannot_smuggle_connection_parameters() -> None:
    assert pg_conninfo("x' host=evil") == "dbname='x\\' host=evil'"
    assert pg_conninfo("a\\b") == "dbname='a\\\\b'"


def test_mysql_dumps_are_consistent_and_complete() -> None:
    argv = mysql_dump_argv(CONNECTION, ["-odd"], several=False)
    assert argv[1] == "--no-defaults"
    for flag in ("--single-transaction", "--routines", "--triggers", "--events", "--hex-blob", "--quick"):
        assert flag in argv
    assert argv[-2:] == ["--", "-odd"]
    assert "--databases" not in argv
    assert "--databases" in mysql_dump_argv(CONNECTION, ["a", "b"], several=True)


@pytest.mark.parametrize(("engine", "variable"), [(Engine.POSTGRESQL, "PGPASSWORD"), (Engine.MYSQL, "MYSQL_PWD")])
def test_each_tool_gets_the_password_in_its_own_variable_only(engine: Engine, variable: str) -> None:
    env = child_env(engine, CONNECTION, {"DB_PASSWORD": PASSWORD, "PGPASSWORD": "x", "MYSQL_PWD": "y", "PATH": "/bin"})
    assert env[variable] == PASSWORD
    others = {"DB_PASSWORD", "PGPASSWORD", "MYSQL_PWD"} - {variable}
    assert not others & set(env)
    assert env["PATH"] == "/bin"


@pytest.mark.parametrize(
    ("environ", "engine", "expected"),
    [
        ({"DB_PASSWORD": "a", "PGPASSWORD": "b"}, Engine.POSTGRESQL, "a"),
        ({"PGPASSWORD": "b"}, Engine.POSTGRESQL, "b"),
        ({"PGPASSWORD": "b"}, Engine.MYSQL, ""),
        ({"MYSQL_PWD": "c"}, Engine.MYSQL, "c"),
    ],
)
def test_the_password_comes_from_db_password_then_the_engines_variable(
    environ: dict[str, str], engine: Engine, expected: str
) -> None:
    assert password_from_env(environ, engine) == expected


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        ('FATAL:  password authentication failed for user "backup"', "AuthenticationFailed"),
        ("Got error: 1045: \"Access denied for user 'x'@'127.0.0.1' (using password: YES)\"", "AuthenticationFailed"),
        ("failed: Connection refused\n\tIs the server running", "Unreachable"),
        ('could not translate host name "nope" to address', "Unreachable"),
        ("Got error: 2002: \"Can't connect to server on '127.0.0.1' (115)\"", "Unreachable"),
        ('FATAL:  database "nope" does not exist', "DatabaseNotFound"),
        ("Got error: 1049: \"Unknown database 'nope'\"", "DatabaseNotFound"),
        ("pg_dump: error: query failed: out of memory", "DumpFailed"),
        (
            'psql: error: connection to server at "db" (10.0.0.5), port 5432 failed: server certificate for '
            '"other.svc" does not match host name "db"',
            "TlsFailed",
        ),
        ("pg_dump: error: connection to server failed: SSL error: certificate verify failed", "TlsFailed"),
        ("failed: server does not support SSL, but SSL was required", "TlsFailed"),
        (
            'FATAL:  no pg_hba.conf entry for host "10.0.0.7", user "backup", database "shop", no encryption',
            "TlsFailed",
        ),
        ('Got error: 2026: "TLS/SSL error: self-signed certificate in certificate chain"', "TlsFailed"),
        ("ERROR 2026 (HY000): TLS/SSL error: SSL is required, but the server does not support it", "TlsFailed"),
        (
            'failed: authentication method requirement "scram-sha-256" failed: server requested a cleartext password',
            "ScramRequired",
        ),
        (
            "pg_dump: error: aborting because of server version mismatch\n"
            "pg_dump: detail: server version: 17.7 (Debian 17.7-3); pg_dump version: 15.15 (Debian 15.15-0+deb12u1)",
            "ClientTooOld",
        ),
    ],
)
def test_tool_messages_map_to_reasons(stderr: str, reason: str) -> None:
    assert classify_failure(stderr) == reason


def test_the_scrubber_removes_the_password_and_its_url_form() -> None:
    scrub = Scrubber([PASSWORD, ""])
    text = f"failed for {PASSWORD} in postgres://u:p%40ss%20w%27rd%2F%E2%82%AC@h"
    assert PASSWORD not in scrub(text)
    assert "p%40ss" not in scrub(text)
    assert scrub(text).count(REDACTED) == 2
    assert Scrubber([])("unchanged") == "unchanged"


def test_tool_stderr_becomes_one_line_that_keeps_its_end() -> None:
    assert one_line("pg_dump: error: a\n\tdetail  here\n\n") == "pg_dump: error: a | detail here"
    long = one_line("x" * 5000 + " the reason", limit=100)
    assert len(long) == 100
    assert long.endswith("the reason")


def test_the_result_line_fits_the_termination_message_whatever_the_lists_and_messages() -> None:
    result = {
        "status": "Succeeded",
        "file": "/backups/db/x.dump",
        "databases": [f"database_{i:05d}" for i in range(3000)],
    }
    line = render(result)
    assert len(line.encode()) <= MAX_BYTES
    parsed = json.loads(line)
    assert parsed["databasesOmitted"] == 3000 - len(parsed["databases"])
    failure = failure_result(RunnerError(Reason.DUMP_FAILED, "start " + "é" * 6000 + " end"), "s", "e", 1.0)
    line = render(failure)
    assert len(line.encode()) <= MAX_BYTES
    message = json.loads(line)["message"]
    assert message.startswith("start ")
    assert message.endswith(" end")


def test_a_long_list_of_stored_backups_keeps_its_newest_and_counts_the_rest() -> None:
    stored = [[f"nightly-2026{i:04d}T020000Z.dump.zst.enc", 10**9 + i, "2026-12", ["daily"]] for i in range(500)]
    line = render({"status": "Succeeded", "file": "/backups/db/x.dump", "backups": stored})
    assert len(line.encode()) <= MAX_BYTES
    parsed = json.loads(line)
    kept = parsed["backups"]
    assert len(kept) > 20
    assert kept == stored[: len(kept)]
    assert parsed["backupsOmitted"] == 500 - len(kept)


CA = "/var/run/secrets/databases.test.io/tls-ca/ca.crt"


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (Tls(), {}),  # libpq's own default (prefer)
        (Tls(TlsMode.DISABLE), {"PGSSLMODE": "disable"}),
        (Tls(TlsMode.REQUIRE), {"PGSSLMODE": "require"}),
        (
            Tls(TlsMode.VERIFY_FULL, CA, require_scram=True),
            {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": CA, "PGREQUIREAUTH": "scram-sha-256"},
        ),
    ],
)
def test_postgresql_tools_get_the_tls_demands_in_their_environment(tls: Tls, expected: dict[str, str]) -> None:
    env = child_env(Engine.POSTGRESQL, Connection("db", 5432, "backup", PASSWORD, tls), {"PATH": "/bin"})
    assert {k: v for k, v in env.items() if k in ("PGSSLMODE", "PGSSLROOTCERT", "PGREQUIREAUTH")} == expected


@pytest.mark.parametrize(
    ("tls", "flags"),
    [
        (Tls(), []),
        (Tls(TlsMode.DISABLE), ["--skip-ssl"]),
        # Said explicitly: 11.4+ clients verify by default, 10.x do not.
        (Tls(TlsMode.REQUIRE), ["--ssl", "--skip-ssl-verify-server-cert"]),
        (Tls(TlsMode.VERIFY_FULL, CA), ["--ssl-verify-server-cert", f"--ssl-ca={CA}"]),
    ],
)
def test_mysql_clients_and_dumps_get_the_same_tls_flags(tls: Tls, flags: list[str]) -> None:
    connection = Connection("db", 3306, "backup", PASSWORD, tls)
    for argv in (mysql_client_argv(connection), mysql_dump_argv(connection, ["shop"], several=False)):
        found = [a for a in argv if a.startswith(("--ssl", "--skip-ssl"))]
        assert found == flags


def test_an_encrypted_mysql_session_is_told_by_its_cipher() -> None:
    assert mysql_session_encrypted("Ssl_cipher\tTLS_AES_256_GCM_SHA384\n")
    assert not mysql_session_encrypted("Ssl_cipher\t\n")
    assert not mysql_session_encrypted("")


@pytest.mark.parametrize("version", [150018, None])
def test_require_scram_with_a_libpq_that_would_ignore_it_is_refused(version: int | None) -> None:
    with pytest.raises(RunnerError) as raised:
        check_client_support(Engine.POSTGRESQL, Tls(require_scram=True), version)
    assert raised.value.reason == "ClientTooOld"
    check_client_support(Engine.POSTGRESQL, Tls(require_scram=True), 170004)
    check_client_support(Engine.POSTGRESQL, Tls(), 150018)


@pytest.mark.parametrize(
    ("server", "tool", "message"),
    [
        (
            "18.1 (Debian 18.1-1.pgdg13+2)",
            "pg_dump (PostgreSQL) 17.7 (Debian 17.7-3)",
            "server 18 is newer than pg_dump 17; use an image with PostgreSQL 18+ clients (server version: 18.1 "
            "(Debian 18.1-1.pgdg13+2); pg_dump version: 17.7 (Debian 17.7-3))",
        ),
        ("17.2", "pg_dump (PostgreSQL) 17.7", None),
        ("16.4", "pg_dump (PostgreSQL) 17.7", None),
        ("9.6.24", "pg_dump (PostgreSQL) 15.10", None),
    ],
)
def test_a_server_newer_than_pg_dump_is_refused_before_the_dump(server: str, tool: str, message: str | None) -> None:
    if message is None:
        check_client_version(server, tool)
        return
    with pytest.raises(RunnerError) as raised:
        check_client_version(server, tool)
    assert raised.value.reason == "ClientTooOld"
    assert raised.value.message == message
