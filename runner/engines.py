"""What each database engine's own tools are asked to do, and why with these flags. Command lines only; the
processes are run by `runner.process`.

The password never appears on a command line (any user on the node can read argv in /proc): it goes to the tools
through their environment, `PGPASSWORD` or `MYSQL_PWD`, which only the same user (and root) can read. Our own
`DB_PASSWORD`/`PGPASSWORD`/`MYSQL_PWD` are removed from the children's environment first, so each tool sees exactly
one password variable.

PostgreSQL
- `pg_dump -Fc` per database: the custom format is what `pg_restore` reads, selectively (`-L`, `-n`, `-t`) and,
  from a file, in parallel (`-j`); its table of contents lets `pg_restore --list` and `pg_restore -f /dev/null`
  check a backup's structure without a server. With `--compression gzip` pg_dump compresses each table's data
  itself (zlib, its default level), which is exactly what `pg_dump -Fc -f file` does, so the runner adds no second
  compression; with zstd or none it is told `-Z0` and zstd (or nothing) is applied to its output stream.
- `-w`: never prompt for a password (a Job has no terminal; a missing password must fail at once).
- `--lock-wait-timeout`: pg_dump takes ACCESS SHARE locks on every table; behind a pending ACCESS EXCLUSIVE lock
  (a long ALTER TABLE) it would otherwise wait without limit. Failing after 5 minutes reports the problem.
- The database name goes in as a conninfo string `dbname='...'` (quoted), the value of `-d`: a bare name containing
  `=` or starting with `postgresql://` would otherwise be read as connection parameters, and a name that looks like
  an option (`--command=...`) is never a word of its own on a command line (for MySQL likewise: `--database=NAME`,
  or after `--` for the dump tool). Database names are at most 64 bytes and hold no NUL (`naming.database_problem`).
- `all` = every database that accepts connections except template0 (what pg_dumpall covers), plus
  `pg_dumpall --globals-only`: roles (with their password hashes: encrypt backups that hold them) and tablespaces,
  which no single database's dump contains. pg_dump is not consistent *across* databases (no tool is: each database
  has its own snapshot); each database's dump is consistent in itself.
- Restores do not let pg_restore connect: `pg_restore --single-transaction -f -` writes the archive as one
  BEGIN ... COMMIT script and `psql -v ON_ERROR_STOP=1` runs it, so that a restore applies all or nothing and the
  session settings of a newer pg_restore can be fitted to an older server (see `pgscript`).

TLS (`--tls-mode`, `--tls-ca-file`, `--require-scram`; without them each client keeps its own default)
- PostgreSQL, through the environment of every tool that connects (pg_dump, pg_dumpall, psql): `PGSSLMODE`
  disable, require or verify-full, `PGSSLROOTCERT` the CA file. verify-full checks the chain and the host name
  during the handshake, before the startup packet: a server without a certificate for the host never learns even
  the user name. `PGREQUIREAUTH=scram-sha-256` (libpq 16+) makes libpq refuse a server that asks for the password
  in clear or as MD5 instead of sending it; an older libpq ignores the variable without a word, so the runner
  checks the version of the libpq the tools load and refuses to run with one that would (`ClientTooOld`).
- MariaDB/MySQL clients: disable `--skip-ssl`; require `--ssl --skip-ssl-verify-server-cert`; verify-full
  `--ssl-verify-server-cert --ssl-ca=FILE`. Each is said explicitly because the defaults differ by version
  (11.4+ clients verify by default, 10.x do not). The 10.x clients fall back to a plain connection when the server
  offers no TLS even with `--ssl`, so for require the runner first asks the server over the same flags whether
  the session is encrypted (`Ssl_cipher`), and fails (`TlsFailed`) before any dump if it is not. What crossed the
  wire unencrypted then is the login exchange, which carries a challenge response, never the password itself (the
  clients do not send clear-text passwords without `--enable-cleartext-plugin`). verify-full is enforced by the
  clients themselves: no TLS, or a certificate that does not verify, and they do not log in.

MySQL / MariaDB (`mariadb-dump`, else `mysqldump`)
- `--single-transaction`: one REPEATABLE READ snapshot for the whole dump, without locking tables, so the
  application keeps writing. It is consistent for InnoDB tables only (MyISAM and other non-transactional tables
  are read as they change), and concurrent DDL (ALTER/DROP/RENAME/TRUNCATE TABLE) during the dump breaks it: the
  dump can miss or mangle a table. Schedule backups away from migrations. All databases of one backup are dumped
  by one process in that one transaction, so a multi-database backup is consistent across databases too.
- `--routines --triggers --events`: stored procedures and functions, triggers and events are part of a database
  (triggers are on by default; named anyway, explicitly).
- `--hex-blob`: binary columns as hex literals, immune to character-set conversion on restore.
- `--quick`: rows are streamed, never buffered whole in the client (memory stays flat for any table size).
- `--default-character-set=utf8mb4`: no text is narrowed to 3-byte utf8.
- `--no-tablespaces`: tablespace statements need the PROCESS privilege on MySQL 8 and are rarely used.
- `--max-allowed-packet=1G`: a row with large BLOBs must fit one packet.
- `--no-defaults` (first, as the tools require): no option file (`/etc/mysql/*.cnf`, `~/.my.cnf`) changes what
  is dumped or supplies another password.
- One database: the dump has no `CREATE DATABASE`/`USE`, so it restores into any database name. Several, or `all`
  (every database but the system schemas `mysql`, `information_schema`, `performance_schema`, `sys`), use
  `--databases`, whose dump creates and selects each database by name. Users and grants live in the `mysql` schema
  and are not part of `all`.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from runner.compression import Compression
from runner.errors import Reason, RunnerError

__all__ = [
    "MYSQL_SYSTEM_SCHEMAS",
    "Connection",
    "Engine",
    "Tls",
    "TlsMode",
    "check_client_support",
    "child_env",
    "classify_failure",
    "mysql_client",
    "mysql_client_argv",
    "mysql_dump_argv",
    "mysql_dump_tool",
    "mysql_script_argv",
    "password_from_env",
    "pg_conninfo",
    "pg_dump_argv",
    "pg_globals_argv",
    "pg_restore_script_argv",
    "pg_tls_params",
    "psql_argv",
    "psql_restore_argv",
]

PASSWORD_VARIABLES: Final = ("DB_PASSWORD", "PGPASSWORD", "MYSQL_PWD")
CONNECT_TIMEOUT_SECONDS: Final = 15
PG_LOCK_WAIT_TIMEOUT: Final = "5min"
MYSQL_SYSTEM_SCHEMAS: Final = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


class Engine(StrEnum):
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"


class TlsMode(StrEnum):
    DISABLE = "disable"
    REQUIRE = "require"
    VERIFY_FULL = "verify-full"


@dataclass(frozen=True)
class Tls:
    """What the connection demands of TLS. `mode` None: the clients' own defaults (libpq's prefer)."""

    mode: TlsMode | None = None
    ca_file: str | None = None
    require_scram: bool = False  # PostgreSQL only


@dataclass(frozen=True)
class Connection:
    host: str
    port: int
    user: str
    password: str = field(default="", repr=False)
    tls: Tls = field(default_factory=Tls)


def password_from_env(environ: Mapping[str, str], engine: Engine) -> str:
    """DB_PASSWORD first; then the engine's own variable, as its tools would read it."""
    own = "PGPASSWORD" if engine is Engine.POSTGRESQL else "MYSQL_PWD"
    return environ.get("DB_PASSWORD") or environ.get(own) or ""


def child_env(engine: Engine, connection: Connection, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in PASSWORD_VARIABLES}
    if engine is Engine.POSTGRESQL:
        env["PGCONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT_SECONDS)
        # No ~/.pgpass or service file may supply another password or change the target.
        env["PGPASSFILE"] = os.devnull
        env.pop("PGSERVICE", None)
        env.update(_pg_tls_env(connection.tls))
        if connection.password:
            env["PGPASSWORD"] = connection.password
    elif connection.password:
        env["MYSQL_PWD"] = connection.password
    return env


def pg_tls_params(tls: Tls) -> dict[str, str]:
    """The TLS demands as libpq's connection parameters (for the runner's own sessions, see `querysession`)."""
    params: dict[str, str] = {}
    if tls.mode is not None:
        params["sslmode"] = tls.mode.value
    if tls.ca_file is not None:
        params["sslrootcert"] = tls.ca_file
    if tls.require_scram:
        params["require_auth"] = "scram-sha-256"
    return params


_PG_TLS_VARIABLES: Final = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "require_auth": "PGREQUIREAUTH"}


def _pg_tls_env(tls: Tls) -> dict[str, str]:
    """The same, as the environment variables libpq reads them from in the tools."""
    return {_PG_TLS_VARIABLES[name]: value for name, value in pg_tls_params(tls).items()}


LIBPQ_REQUIRE_AUTH: Final = 160000  # PQlibVersion() of the first libpq that knows require_auth


def libpq_version() -> int | None:
    """The version of the libpq the PostgreSQL tools load (150018 for 15.18), found as the dynamic loader finds
    theirs; None when there is none."""
    try:
        version: int = ctypes.CDLL("libpq.so.5").PQlibVersion()
    except (OSError, AttributeError):
        return None
    return version


def check_client_support(engine: Engine, tls: Tls, version: int | None = None) -> None:
    """Refuses a run whose TLS demands the clients would silently not meet: require_auth needs libpq 16+."""
    if engine is not Engine.POSTGRESQL or not tls.require_scram:
        return
    version = libpq_version() if version is None else version
    if version is None or version < LIBPQ_REQUIRE_AUTH:
        found = "none found" if version is None else f"this one is {version // 10000}.{version % 10000}"
        raise RunnerError(
            Reason.CLIENT_TOO_OLD,
            f"--require-scram needs libpq 16 or newer, the first to know require_auth; {found}",
        )


# --- PostgreSQL --------------------------------------------------------------------------------------------------


def pg_conninfo(database: str) -> str:
    """A conninfo string naming only the database, quoted as libpq wants (backslash and single quote escaped)."""
    escaped = database.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def _pg_target(connection: Connection) -> list[str]:
    return ["-h", connection.host, "-p", str(connection.port), "-U", connection.user, "-w"]


def pg_dump_argv(
    connection: Connection, database: str, compression: Compression, *, snapshot: str | None = None
) -> list[str]:
    """`snapshot`: an exported snapshot to dump in (verify.queries were recorded in it; see queries.py)."""
    # gzip: pg_dump's own per-table zlib at its default level, as a plain `pg_dump -Fc` does.
    level = [] if compression is Compression.GZIP else ["-Z0"]
    return [
        "pg_dump",
        "-Fc",
        *level,
        *([f"--snapshot={snapshot}"] if snapshot is not None else []),
        f"--lock-wait-timeout={PG_LOCK_WAIT_TIMEOUT}",
        *_pg_target(connection),
        "-d",
        pg_conninfo(database),
    ]


def pg_globals_argv(connection: Connection) -> list[str]:
    # pg_dumpall picks its own database to read the catalogs from (postgres, else template1).
    return ["pg_dumpall", "--globals-only", *_pg_target(connection)]


def psql_argv(connection: Connection, database: str, *, script: bool = False) -> list[str]:
    """psql for our own queries (unaligned, tuples only, stop at the first error) or, with `script`, to run a plain
    SQL file from stdin that may contain expected errors (a restored role that already exists)."""
    base = ["psql", "-X", "-q", *_pg_target(connection), "-d", pg_conninfo(database)]
    return base if script else [*base, "-At", "-v", "ON_ERROR_STOP=1"]


def pg_restore_script_argv(*, no_owner: bool = False) -> list[str]:
    """pg_restore turning the archive on its stdin into an SQL script on its stdout, for `psql_restore_argv`.

    `--single-transaction`: the script is one BEGIN ... COMMIT with no transaction control inside it. Without it,
    the script commits each large object's data in a BEGIN/COMMIT block of its own, which would commit a restore
    half way. It connects to no server: the script is the same for every target."""
    owner = ["--no-owner", "--no-acl"] if no_owner else []
    return ["pg_restore", "--single-transaction", *owner, "-f", "-"]


def psql_restore_argv(connection: Connection, database: str) -> list[str]:
    """psql running a restore script from stdin: ON_ERROR_STOP stops at the first error (psql exits 3, and the
    server rolls the script's transaction back); `-f -` makes every message name the script line it came from."""
    target = [*_pg_target(connection), "-d", pg_conninfo(database)]
    return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *target, "-f", "-"]


# --- MySQL / MariaDB ---------------------------------------------------------------------------------------------


def _first_available(*names: str) -> str:
    for name in names:
        if shutil.which(name):
            return name
    return names[0]  # running it fails with a clear "not found", naming the tool we prefer


def mysql_dump_tool() -> str:
    return _first_available("mariadb-dump", "mysqldump")


def mysql_client() -> str:
    return _first_available("mariadb", "mysql")


def _mysql_target(connection: Connection) -> list[str]:
    return [
        "--no-defaults",
        "-h",
        connection.host,
        "-P",
        str(connection.port),
        "-u",
        connection.user,
        "--protocol=TCP",
        "--default-character-set=utf8mb4",
        *_mysql_tls(connection.tls),
    ]


def _mysql_tls(tls: Tls) -> list[str]:
    if tls.mode is TlsMode.DISABLE:
        return ["--skip-ssl"]
    if tls.mode is TlsMode.REQUIRE:
        return ["--ssl", "--skip-ssl-verify-server-cert"]
    if tls.mode is TlsMode.VERIFY_FULL:
        return ["--ssl-verify-server-cert", *([f"--ssl-ca={tls.ca_file}"] if tls.ca_file else [])]
    return []


MYSQL_TLS_QUERY: Final = "SHOW SESSION STATUS LIKE 'Ssl_cipher'"


def mysql_session_encrypted(status: str) -> bool:
    """Reads the client's answer to MYSQL_TLS_QUERY (`Ssl_cipher<TAB>TLS_AES_256_GCM_SHA384`, empty value when the
    session is not encrypted)."""
    name, _, cipher = status.strip().partition("\t")
    return name == "Ssl_cipher" and bool(cipher.strip())


def mysql_dump_argv(
    connection: Connection, databases: Sequence[str], *, several: bool, coordinates: bool = False
) -> list[str]:
    """`coordinates`: also write the snapshot's binlog coordinates, as comments (see `binlog`)."""
    argv = [
        mysql_dump_tool(),
        *_mysql_target(connection),
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--quick",
        "--no-tablespaces",
        "--max-allowed-packet=1G",
        *(["--master-data=2"] if coordinates else []),
    ]
    # `--` ends the options: a database named `-x` is a name, not a flag.
    return [*argv, "--databases", "--", *databases] if several else [*argv, "--", *databases]


def mysql_binlog_tool() -> str:
    return _first_available("mariadb-binlog", "mysqlbinlog")


def mysql_binlog_stream_argv(connection: Connection, first: str, result_prefix: str, replica_id: int) -> list[str]:
    """The binlog tool as a replica that never stops: every binlog from `first` on, as the server has it (`--raw`),
    each into `<result_prefix><its name>`, following the server into each new binlog. It connects as replica
    `replica_id`: the server drops a replica when another connects with the same id."""
    # The binlog tool has no --default-character-set: it writes bytes, not text.
    target = [a for a in _mysql_target(connection) if not a.startswith("--default-character-set")]
    stream = ["--read-from-remote-server", "--raw", "--stop-never", f"--stop-never-slave-server-id={replica_id}"]
    return [mysql_binlog_tool(), *target, *stream, f"--result-file={result_prefix}", first]


def mysql_binlog_replay_argv(
    files: Sequence[str],
    start: int,
    stop: str,
    database: str | None,
    target: str | None = None,
    *,
    stop_position: int | None = None,
    statements_only: bool = False,
) -> list[str]:
    """The binlog tool turning archived binlog files into SQL for the client: events of `database` only (renamed to
    `target`; every event with None), from `start` in the first file to the first event at or after `stop`
    ("YYYY-MM-DD hh:mm:ss", in the tool's local time: run it with TZ=UTC), or with `stop_position` to the first
    event at or after that position in the last file (the tool applies it to the last file named).
    `statements_only`: row events as comment lines rather than their base64, for reading the statements (never for
    a replay): a tenth of the output to read."""
    only = [f"--database={database}"] if database is not None else []
    rename = [f"--rewrite-db={database}->{target}"] if target is not None and target != database else []
    until = f"--stop-position={stop_position}" if stop_position is not None else f"--stop-datetime={stop}"
    return [
        mysql_binlog_tool(),
        "--no-defaults",
        *(["--base64-output=decode-rows"] if statements_only else []),
        *only,
        *rename,
        f"--start-position={start}",
        until,
        "--",
        *files,
    ]


def mysql_client_argv(connection: Connection, database: str | None = None) -> list[str]:
    # The client has a connect timeout (the dump tools have none; our preflight query runs first, with it).
    timeout = f"--connect-timeout={CONNECT_TIMEOUT_SECONDS}"
    argv = [mysql_client(), *_mysql_target(connection), timeout, "--batch", "--skip-column-names", "--raw"]
    # The database as the value of its own option, never a word of its own: a positional `--init-command=...` would
    # be read as that option, and run its SQL.
    return [*argv, f"--database={database}"] if database else argv


def mysql_script_argv(connection: Connection, database: str | None = None) -> list[str]:
    """The client running a backup's script: `--sandbox` refuses the client's own commands that reach a file or a
    shell (`\\!`, `\\.`, `tee`; MariaDB 10.5.25, 10.6.18, 10.11.8 and later), so a script holds SQL for the server
    and nothing the runner's container would run. mariadb-dump of those versions asks for the same in its first
    line, which a script altered in storage need not keep. A row must fit one packet."""
    return [*mysql_client_argv(connection, database), "--sandbox", "--max-allowed-packet=1G"]


# --- what a failure means ----------------------------------------------------------------------------------------

_AUTH = re.compile(
    r"password authentication failed|no password supplied|role \".*\" does not exist|"
    r"Access denied for user|\b1045\b|\b1698\b",
    re.IGNORECASE,
)
_UNREACHABLE = re.compile(
    r"Connection refused|could not translate host name|timeout expired|No route to host|Network is unreachable|"
    r"could not connect to server|Can't connect to|Unknown (?:MySQL|MariaDB) server host|\b200[2-6]\b|"
    r"Lost connection to server at 'handshake",
    re.IGNORECASE,
)
_NO_DATABASE = re.compile(r"database \".*\" does not exist|Unknown database|\b1049\b", re.IGNORECASE)
# pg_dump refuses a server of a newer major version than its own ("aborting because of server version mismatch",
# then "server version: 17.2; pg_dump version: 15.10"): the image's client tools are too old for this server.
_CLIENT_TOO_OLD = re.compile(r"server version mismatch", re.IGNORECASE)


# libpq 16+ with require_auth: 'authentication method requirement "scram-sha-256" failed: server requested a
# cleartext password' (or "... an md5 password"): the password was not sent.
_SCRAM_REQUIRED = re.compile(r"authentication method requirement", re.IGNORECASE)
# libpq: "SSL error: certificate verify failed", 'server certificate for "x" does not match host name "y"',
# "server does not support SSL, but SSL was required", '... no pg_hba.conf entry for host ..., no encryption' (a
# server that takes only TLS, to a client told not to), a CA file it cannot read. MariaDB/MySQL clients: error 2026
# "TLS/SSL error: ...", "SSL connection error: ...". Before Unreachable, whose 200x codes would take 2026.
_TLS = re.compile(
    r"SSL error|certificate verify failed|server certificate for .* does not match|does not support SSL|"
    r"no encryption|root certificate file|TLS/SSL error|SSL connection error|\b2026\b",
    re.IGNORECASE,
)


def classify_failure(stderr: str) -> Reason:
    """The reason for a tool's failure, read from its stderr (both engines' client messages are stable)."""
    if _SCRAM_REQUIRED.search(stderr):
        return Reason.SCRAM_REQUIRED
    if _TLS.search(stderr):
        return Reason.TLS_FAILED
    if _AUTH.search(stderr):
        return Reason.AUTHENTICATION_FAILED
    if _UNREACHABLE.search(stderr):
        return Reason.UNREACHABLE
    if _NO_DATABASE.search(stderr):
        return Reason.DATABASE_NOT_FOUND
    if _CLIENT_TOO_OLD.search(stderr):
        return Reason.CLIENT_TOO_OLD
    return Reason.DUMP_FAILED


def unknown_engine(value: str) -> RunnerError:
    return RunnerError(
        Reason.INVALID_ARGUMENTS, f"unknown engine {value!r}: use postgresql or mysql (MariaDB is mysql)"
    )
