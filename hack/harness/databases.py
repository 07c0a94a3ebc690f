"""Real PostgreSQL 15 and MariaDB servers for the backup tests and the runner benchmark.

    with PostgresServer.start() as pg:
        pg.sql("SELECT 1")

Each server lives in a temporary folder of its own, listens on 127.0.0.1 on a free port (never on any other
address) and is stopped, and its folder removed, when the `with` block ends. PostgreSQL refuses to run as root, so
when the tests run as root (as CI does) initdb and postgres run as the `postgres` system user (through setpriv), in
a folder it owns;
mariadbd runs as whoever we are (`--user=root` is allowed). Both use `--no-defaults`-style isolation: no system
configuration file is read, so a packaged server's settings never leak into a test.

The servers run with fsync off: they hold test data only, and the backups (which we do fsync) are what is tested.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 60.0
SUPERUSER_PASSWORD = "s3cret-Pässword-for-tests"


class ServerError(RuntimeError):
    pass


# Ports handed out by this process: two servers started a moment apart never get the same one.
_GIVEN: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, from below the kernel's ephemeral range. A port from inside it
    (what binding port 0 gives) may be taken by an outgoing connection before the server meant to listen on it binds
    it: seen with SeaweedFS, whose parts connect to each other while others are still starting."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for _ in range(200):
        port = random.randint(10000, max(low - 1, 10001))  # noqa: S311 - a port, not a secret
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, env=dict(env) if env else None, check=False
    )
    if result.returncode != 0:
        raise ServerError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def _wait_until(ready: object, deadline: float, process: subprocess.Popen[bytes], log: Path) -> None:
    assert callable(ready)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"server exited with {process.returncode}: {log.read_text(errors='replace')[-3000:]}")
        if ready():
            return
        time.sleep(0.1)
    raise ServerError(f"server not ready within {START_TIMEOUT:.0f}s: {log.read_text(errors='replace')[-3000:]}")


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@dataclass
class PostgresServer:
    port: int
    folder: Path
    host: str = "127.0.0.1"
    user: str = "postgres"
    password: str = SUPERUSER_PASSWORD

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        *,
        settings: Mapping[str, str] | None = None,
        password: str = SUPERUSER_PASSWORD,
        tls: tuple[bytes, bytes] | None = None,
        hba: str | None = None,
    ) -> Iterator[PostgresServer]:
        """`tls` (certificate and key, PEM) turns on ssl with them; `hba` replaces pg_hba.conf. Connections are
        logged (log_connections), with whether they came over TLS, in `log`."""
        folder = Path(tempfile.mkdtemp(prefix="dbb-pg-"))
        as_postgres = os.geteuid() == 0
        # setpriv execs the program itself (runuser would stay in between and not pass our signals on).
        run_as = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] if as_postgres else []
        if as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        server = cls(port=free_port(), folder=folder, password=password)
        data, log = folder / "data", folder / "postgres.log"
        process: subprocess.Popen[bytes] | None = None
        try:
            pwfile = folder / "pwfile"
            pwfile.write_text(server.password + "\n")
            if as_postgres:
                os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
            _run(
                [
                    *run_as,
                    str(PG_BIN / "initdb"),
                    *("-D", str(data), "-U", server.user, f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"),
                    *("--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync"),
                ]
            )
            pwfile.unlink()
            files = {"server.crt": tls[0], "server.key": tls[1]} if tls else {}
            if hba is not None:
                files["pg_hba.conf"] = hba.encode()
            for name, content in files.items():
                # The server refuses a key that others may read: 0600, owned by the user it runs as.
                path = folder / name
                path.write_bytes(content)
                path.chmod(0o600)
                if as_postgres:
                    os.chown(path, pwd.getpwnam("postgres").pw_uid, -1)
            options = {
                "listen_addresses": "127.0.0.1",
                "port": str(server.port),
                "unix_socket_directories": str(folder),
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "50",
                "log_connections": "on",
                **({"ssl": "on", "ssl_cert_file": str(folder / "server.crt")} if tls else {}),
                **({"ssl_key_file": str(folder / "server.key")} if tls else {}),
                **({"hba_file": str(folder / "pg_hba.conf")} if hba is not None else {}),
                **(settings or {}),
            }
            flags = [item for key, value in options.items() for item in ("-c", f"{key}={value}")]
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [*run_as, str(PG_BIN / "postgres"), "-D", str(data), *flags], stdout=out, stderr=out
                )
            _wait_until(server._ready, time.monotonic() + START_TIMEOUT, process, log)
            yield server
        finally:
            if process is not None:
                _stop(process, signal.SIGINT)  # fast shutdown: disconnects clients, no waiting for them
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def log(self) -> str:
        return (self.folder / "postgres.log").read_text(errors="replace")

    def _ready(self) -> bool:
        result = subprocess.run(
            ["pg_isready", "-q", "-h", self.host, "-p", str(self.port)], capture_output=True, check=False
        )
        return result.returncode == 0

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}

    def sql(self, statements: str, database: str = "postgres") -> str:
        """Runs SQL through psql over TCP; returns unaligned, tuples-only output (`|` between columns)."""
        return _run(
            [
                *("psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-At"),
                *("-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database, "-f", "-"),
            ],
            env=self.env,
            stdin=statements,
        ).rstrip("\n")

    def databases(self) -> list[str]:
        return self.sql("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1").splitlines()

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class MariaDBServer:
    port: int
    folder: Path
    host: str = "127.0.0.1"
    user: str = "dbb_admin"
    password: str = SUPERUSER_PASSWORD

    @classmethod
    @contextlib.contextmanager
    def start(cls, *, settings: Mapping[str, str] | None = None) -> Iterator[MariaDBServer]:
        folder = Path(tempfile.mkdtemp(prefix="dbb-mariadb-"))
        server = cls(port=free_port(), folder=folder)
        data, log, sock = folder / "data", folder / "mariadb.log", folder / "mariadb.sock"
        user = ["--user=root"] if os.geteuid() == 0 else []
        process: subprocess.Popen[bytes] | None = None
        try:
            _run(
                [
                    *("mariadb-install-db", "--no-defaults", f"--datadir={data}", *user),
                    *("--auth-root-authentication-method=socket", "--skip-test-db"),
                ]
            )
            options = {
                "bind-address": "127.0.0.1",
                "port": str(server.port),
                "socket": str(sock),
                "skip-networking": "0",
                "skip-name-resolve": "1",
                "pid-file": str(folder / "mariadb.pid"),
                "log-error": str(log),
                "innodb-flush-log-at-trx-commit": "0",
                "innodb-doublewrite": "0",
                "innodb-buffer-pool-size": "256M",
                "max-allowed-packet": "256M",
                "character-set-server": "utf8mb4",
                "collation-server": "utf8mb4_unicode_ci",
                **(settings or {}),
            }
            flags = [f"--{key}={value}" for key, value in options.items()]
            process = subprocess.Popen(
                ["mariadbd", "--no-defaults", f"--datadir={data}", *user, *flags],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait_until(lambda: sock.exists() and server._ping(sock), time.monotonic() + START_TIMEOUT, process, log)
            # Root authenticates by socket only; the tests (and the runner) connect over TCP as an admin with a
            # password, the way a backup Job connects to a database Service.
            _run(
                ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root"],
                stdin=f"CREATE USER '{server.user}'@'127.0.0.1' IDENTIFIED BY '{server.password}';"
                f"GRANT ALL PRIVILEGES ON *.* TO '{server.user}'@'127.0.0.1' WITH GRANT OPTION;",
            )
            yield server
        finally:
            if process is not None:
                _stop(process, signal.SIGTERM)
            shutil.rmtree(folder, ignore_errors=True)

    def _ping(self, sock: Path) -> bool:
        result = subprocess.run(
            ["mariadb-admin", "--no-defaults", f"--socket={sock}", "-u", "root", "ping"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "MYSQL_PWD": self.password}

    def sql(self, statements: str, database: str | None = None) -> str:
        """Runs SQL through the mariadb client over TCP; returns tab-separated rows without column names."""
        return _run(
            ["mariadb", "--no-defaults", "-h", self.host, "-P", str(self.port), "-u", self.user]
            + ["--batch", "--skip-column-names", "--raw", "--default-character-set=utf8mb4"]
            + ([database] if database else []),
            env=self.env,
            stdin=statements,
        ).rstrip("\n")

    def databases(self) -> list[str]:
        return self.sql("SHOW DATABASES").splitlines()

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")
