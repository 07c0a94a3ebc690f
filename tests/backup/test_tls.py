"""TLS to real servers with a CA the test makes: the password goes only to the server whose certificate the CA
signed for the host (`--tls-mode verify-full`), `require` encrypts without checking, `disable` never encrypts, and
`--require-scram` keeps the password from a PostgreSQL server that asks for it in clear.

Both servers here take TLS connections only (PostgreSQL: `hostssl` lines alone; MariaDB:
require_secure_transport), so a run that succeeds went over TLS, and the `disable` tests show that the refusal is
real. PostgreSQL also logs each connection with whether it was encrypted (log_connections).

The host's PostgreSQL clients are 15, whose libpq ignores require_auth; the image's are 17. The requireScram tests
run the same 15 tools over a libpq 17+ (the one psycopg-binary's wheel carries), as the image runs its tools, and
show that with the host's own libpq the runner refuses to run at all rather than ignore the demand.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certs.pki import KeyPair, issue, new_ca
from hack.harness.databases import MariaDBServer, PostgresServer
from runner.engines import Connection, Tls, TlsMode
from runner.errors import RunnerError, Scrubber
from runner.process import Deadline
from runner.querysession import Session
from tests.backup.cli import Outcome, Server, dbb, password_env, queries, run_args

CLEARTEXT_USER = "cleartext_login"
CLEARTEXT_PASSWORD = "a-password-only-for-clear-text"


@dataclass(frozen=True)
class Pki:
    ca: Path  # signed the servers' certificate, which names 127.0.0.1 only
    other_ca: Path
    server: KeyPair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = new_ca("dbb-test-database-ca"), new_ca("someone-elses-ca")
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    (folder / "other-ca.crt").write_bytes(other.cert_pem)
    return Pki(folder / "ca.crt", folder / "other-ca.crt", issue(ca, "database", hosts=["127.0.0.1"]))


@pytest.fixture(scope="module")
def pg_tls(pki: Pki) -> Iterator[PostgresServer]:
    hba = (
        f"hostssl all {CLEARTEXT_USER} 127.0.0.1/32 password\n"  # asks for the password in clear (over TLS)
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
    )
    with PostgresServer.start(tls=(pki.server.cert_pem, pki.server.key_pem), hba=hba) as server:
        server.sql(f"CREATE ROLE {CLEARTEXT_USER} LOGIN SUPERUSER PASSWORD '{CLEARTEXT_PASSWORD}'")
        server.sql("CREATE DATABASE tlsdb")
        server.sql("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1), (2)", "tlsdb")
        yield server


@pytest.fixture(scope="module")
def mariadb_tls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    folder = tmp_path_factory.mktemp("mariadb-tls")
    (folder / "server.crt").write_bytes(pki.server.cert_pem)
    (folder / "server.key").write_bytes(pki.server.key_pem)
    settings = {
        "ssl-cert": str(folder / "server.crt"),
        "ssl-key": str(folder / "server.key"),
        "ssl-ca": str(pki.ca),
        "require-secure-transport": "ON",
    }
    with MariaDBServer.start(settings=settings) as server:
        server.sql(
            "CREATE DATABASE tlsdb; CREATE TABLE tlsdb.items (id INT PRIMARY KEY); INSERT INTO tlsdb.items VALUES (1)"
        )
        yield server


@pytest.fixture(scope="module")
def libpq17(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An LD_LIBRARY_PATH under which the PostgreSQL tools load psycopg-binary's libpq (17 or newer)."""
    spec = importlib.util.find_spec("psycopg_binary")
    assert spec is not None, "psycopg-binary is a test dependency"
    assert spec.submodule_search_locations
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "psycopg_binary.libs"
    found = sorted(libs.glob("libpq-*.so.5*"))
    assert found, f"no libpq in {libs}"
    folder = tmp_path_factory.mktemp("libpq17")
    (folder / "libpq.so.5").symlink_to(found[-1])
    return f"{folder}:{libs}"  # its own dependencies (libssl, ...) are beside it, under hashed names


def tls_run(
    server: Server, folder: Path, *flags: str, host: str | None = None, env: dict[str, str] | None = None
) -> Outcome:
    args = run_args(server, folder, "tlsdb", verify=None)
    if host is not None:
        args[args.index("--host") + 1] = host
    return dbb(*args, *flags, env=env or password_env(server))


def failed(outcome: Outcome, reason: str, folder: Path) -> str:
    """The run failed for `reason` and left nothing in the backup folder; returns its message."""
    assert outcome.code == 1, outcome.stderr
    assert outcome.result["reason"] == reason, outcome.result
    assert list(folder.iterdir()) == []
    message: str = outcome.result["message"]
    return message


def authorized(server: PostgresServer, user: str) -> list[str]:
    return re.findall(rf"connection authorized: user={user} database=tlsdb.*", server.log)


def verify_full(ca: Path) -> tuple[str, ...]:
    return ("--tls-mode", "verify-full", "--tls-ca-file", str(ca))


# --- PostgreSQL --------------------------------------------------------------------------------------------------


def test_postgresql_verify_full_with_the_servers_ca_backs_up_over_tls(
    pg_tls: PostgresServer, pki: Pki, backups: Path
) -> None:
    outcome = tls_run(pg_tls, backups, *verify_full(pki.ca), "--restore-test")
    assert outcome.code == 0, outcome.stderr
    assert outcome.result["status"] == "Succeeded"
    dumps = [line for line in authorized(pg_tls, "postgres") if "application_name=pg_dump" in line]
    assert dumps, "pg_dump never connected"
    assert all("SSL enabled" in line for line in dumps), dumps


@pytest.mark.parametrize(
    ("which", "host", "says"),
    [
        ("other", None, "certificate verify failed"),
        ("ca", "localhost", 'does not match host name "localhost"'),
    ],
)
def test_postgresql_verify_full_refuses_a_certificate_not_from_the_ca_or_not_for_the_host(
    pg_tls: PostgresServer, pki: Pki, backups: Path, which: str, host: str | None, says: str
) -> None:
    before = len(authorized(pg_tls, "postgres"))
    outcome = tls_run(pg_tls, backups, *verify_full(pki.other_ca if which == "other" else pki.ca), host=host)
    assert says in failed(outcome, "TlsFailed", backups)
    # The client stops in the handshake: the server never got as far as authenticating anyone.
    assert len(authorized(pg_tls, "postgres")) == before


def test_postgresql_queries_take_the_same_tls_demands(pg_tls: PostgresServer, pki: Pki, backups: Path) -> None:
    """verify.queries run in the runner through libpq, not through a tool: the same flags bind them."""
    pg_tls.sql("CREATE ROLE tls_reader LOGIN PASSWORD 'tls-Reader-1'; GRANT pg_read_all_data TO tls_reader")
    env = password_env(pg_tls) | {"QUERY_USER": "tls_reader", "QUERY_PASSWORD": "tls-Reader-1"}
    flags = ["--queries", queries(("count", "tlsdb", "SELECT count(*) FROM items"))]
    try:
        outcome = tls_run(pg_tls, backups, *verify_full(pki.ca), *flags, env=env)
        assert outcome.code == 0, outcome.stderr
        sessions = [line for line in authorized(pg_tls, "tls_reader") if "dbb-backup queries" in line]
        assert sessions, "the queries never connected"
        assert all("SSL enabled" in line for line in sessions), sessions
        # A CA that did not sign the server's certificate: the queries' session refuses it in the handshake.
        other = Connection(
            pg_tls.host, pg_tls.port, "tls_reader", "tls-Reader-1", Tls(TlsMode.VERIFY_FULL, str(pki.other_ca))
        )
        with pytest.raises(RunnerError) as raised, Session(other, "tlsdb", Scrubber(), Deadline(30)):
            pass
        assert raised.value.reason == "TlsFailed"
        assert "certificate verify failed" in raised.value.message
    finally:
        pg_tls.sql("DROP ROLE tls_reader")


def test_postgresql_disable_never_encrypts(pg_tls: PostgresServer, backups: Path) -> None:
    outcome = tls_run(pg_tls, backups, "--tls-mode", "disable")
    assert "no encryption" in failed(outcome, "TlsFailed", backups)


def test_require_scram_keeps_the_password_from_a_server_that_asks_for_it_in_clear(
    pg_tls: PostgresServer, pki: Pki, backups: Path, libpq17: str
) -> None:
    args = [*run_args(pg_tls, backups, "tlsdb"), *verify_full(pki.ca)]
    args[args.index("--user") + 1] = CLEARTEXT_USER
    env = password_env(pg_tls, CLEARTEXT_PASSWORD)
    # The same run without --require-scram logs in: the server takes the password in clear.
    plain = dbb(*args, "--name", "plain", env=env)
    assert plain.code == 0, plain.stderr
    for path in backups.iterdir():
        path.unlink()
    before = len(authorized(pg_tls, CLEARTEXT_USER))
    refused = dbb(*args, "--require-scram", env={**env, "LD_LIBRARY_PATH": libpq17})
    assert "server requested a cleartext password" in failed(refused, "ScramRequired", backups)
    assert len(authorized(pg_tls, CLEARTEXT_USER)) == before


def test_require_scram_logs_in_to_a_scram_server(pg_tls: PostgresServer, pki: Pki, backups: Path, libpq17: str) -> None:
    # pg_dump 15 crashes over libpq 17+ (psql and pg_restore do not): the backup is made with the host's libpq,
    # and the restore, whose every connection is psql's, runs over libpq 17+ with --require-scram.
    made = tls_run(pg_tls, backups, *verify_full(pki.ca))
    assert made.code == 0, made.stderr
    env = {**password_env(pg_tls), "LD_LIBRARY_PATH": libpq17}
    target = ["--host", pg_tls.host, "--port", str(pg_tls.port), "--user", pg_tls.user]
    try:
        restored = dbb(
            "restore", made.result["file"], *target, "--database", "tlsdb_scram", *verify_full(pki.ca),
            "--require-scram", env=env,
        )  # fmt: skip
        assert restored.code == 0, restored.stderr
        assert pg_tls.sql("SELECT count(*) FROM items", "tlsdb_scram") == "2"
    finally:
        pg_tls.drop_database("tlsdb_scram")


def test_require_scram_with_a_libpq_that_would_ignore_it_runs_nothing(
    pg_tls: PostgresServer, pki: Pki, backups: Path
) -> None:
    before = len(authorized(pg_tls, "postgres"))
    outcome = tls_run(pg_tls, backups, *verify_full(pki.ca), "--require-scram")  # the host's libpq 15
    assert "--require-scram needs libpq 16 or newer" in failed(outcome, "ClientTooOld", backups)
    assert len(authorized(pg_tls, "postgres")) == before


def test_restore_and_verify_take_the_same_tls_flags(pg_tls: PostgresServer, pki: Pki, backups: Path) -> None:
    outcome = tls_run(pg_tls, backups, *verify_full(pki.ca))
    assert outcome.code == 0, outcome.stderr
    file = outcome.result["file"]
    target = ["--host", pg_tls.host, "--port", str(pg_tls.port), "--user", pg_tls.user]
    try:
        restored = dbb(
            "restore", file, *target, "--database", "tlsdb_copy", *verify_full(pki.ca), env=password_env(pg_tls)
        )
        assert restored.code == 0, restored.stderr
        assert pg_tls.sql("SELECT count(*) FROM items", "tlsdb_copy") == "2"
        checked = dbb("verify", file, "--restore-test", *verify_full(pki.ca), env=password_env(pg_tls))
        assert checked.code == 0, checked.stderr
        refused = dbb("verify", file, "--restore-test", *verify_full(pki.other_ca), env=password_env(pg_tls))
        assert refused.result["reason"] == "TlsFailed"
    finally:
        pg_tls.drop_database("tlsdb_copy")


# --- both ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["pg_tls", "mariadb_tls"])
def test_require_encrypts_with_a_certificate_nobody_checks(
    request: pytest.FixtureRequest, server: str, backups: Path
) -> None:
    # localhost is not a name on the certificate, whose CA the client does not know either.
    outcome = tls_run(request.getfixturevalue(server), backups, "--tls-mode", "require", host="localhost")
    assert outcome.code == 0, outcome.stderr


@pytest.mark.parametrize(
    ("server", "database", "says"),
    [("pg", "postgres", "server does not support SSL"), ("mariadb", "shop", "offers no TLS")],
)
def test_require_refuses_a_server_without_tls(
    request: pytest.FixtureRequest, server: str, database: str, says: str, backups: Path
) -> None:
    plain: Server = request.getfixturevalue(server)
    outcome = dbb(*run_args(plain, backups, database), "--tls-mode", "require", env=password_env(plain))
    assert says in failed(outcome, "TlsFailed", backups)


# --- MariaDB -----------------------------------------------------------------------------------------------------


def test_mariadb_verify_full_with_the_servers_ca_backs_up_over_tls(
    mariadb_tls: MariaDBServer, pki: Pki, backups: Path
) -> None:
    outcome = tls_run(mariadb_tls, backups, *verify_full(pki.ca), "--restore-test")
    assert outcome.code == 0, outcome.stderr
    assert outcome.result["status"] == "Succeeded"


@pytest.mark.parametrize(("which", "host"), [("other", None), ("ca", "localhost")])
def test_mariadb_verify_full_refuses_a_certificate_not_from_the_ca_or_not_for_the_host(
    mariadb_tls: MariaDBServer, pki: Pki, backups: Path, which: str, host: str | None
) -> None:
    outcome = tls_run(mariadb_tls, backups, *verify_full(pki.other_ca if which == "other" else pki.ca), host=host)
    assert "TLS/SSL error" in failed(outcome, "TlsFailed", backups)


def test_mariadb_disable_never_encrypts(mariadb_tls: MariaDBServer, backups: Path) -> None:
    outcome = tls_run(mariadb_tls, backups, "--tls-mode", "disable")
    # MariaDB answers a plain login on a TLS-only server as it answers a wrong password.
    failed(outcome, "AuthenticationFailed", backups)
