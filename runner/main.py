"""dbb-backup: the backup runner inside each backup Job. `run`, `verify`, `check`, `restore`, `list`, `decrypt`, and
`archive` (binlogs, for point-in-time restores; runs until stopped).

The password comes only from the environment (`DB_PASSWORD`, else `PGPASSWORD` or `MYSQL_PWD`), never from argv.
The user name comes from `--user`, else from `DB_USER` in the environment, which is where the Job puts a user name
that is stored in a Secret. Such a user name is scrubbed like the password from every message, because the servers
repeat it ("password authentication failed for user …", "Access denied for user …") and anyone who may create a
DatabaseBackup could otherwise read any Secret key by naming it as the user name key. `--queries` run as a role of
their own that can only read, `QUERY_USER` and `QUERY_PASSWORD` (see `queries.py`), both scrubbed the same way.
Every command prints one JSON line on stdout; on failure it exits 1 and its last stderr line is
`dbb-backup: <Reason>: <message>` (see `errors.py` for the reasons), with every secret scrubbed. `run`, `check`,
`restore` and `archive` also write their JSON line to `--termination-log` for the reconciler. Usage errors exit 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from runner import admin, archiveprune, basebackup, baseretention, pgpitr, pitr, progress, scratchrestore, walarchive
from runner.archive import ArchiveOptions, archive
from runner.archivestatus import ArchiveStatus, serving
from runner.archivestore import ArchiveStore, FolderArchive, S3Archive, archive_name
from runner.backup import ALL, RunOptions, run_backup, utc_iso
from runner.basebackup import BASE_SUFFIX, BaseOptions, take_base_backup
from runner.basepick import pick_base_backup
from runner.check import MAX_BACKUPS, CheckOptions, check_stored
from runner.compression import Compression
from runner.crypto import Decryptor, Key, Keyring, load_key, load_keyring
from runner.engines import Connection, Engine, Tls, TlsMode, check_client_support, password_from_env
from runner.errors import Reason, RunnerError, Scrubber, one_line
from runner.layout import parse_layout
from runner.listing import entry, everything_in_folder, everything_in_s3, kept_by
from runner.logs import configure_logging
from runner.manifest import Manifest, Owner, manifest_path, read_manifest
from runner.naming import ENCRYPTED_SUFFIX, MANIFEST_SUFFIX, database_problem, validate_prefix
from runner.objectstore import S3Location
from runner.pgserver import letting_go
from runner.process import Deadline
from runner.queries import (
    QUERY_PASSWORD_VARIABLE,
    QUERY_USER_VARIABLE,
    credential_from_env,
    parse_queries,
    require_credential,
)
from runner.report import failure_result, render, success_result, write_termination_log
from runner.restore import RestoreOptions, parse_targets, restore_backup
from runner.retention import Policy, parse_age
from runner.s3backup import S3Object, S3Settings, run_backup_s3, s3_client
from runner.stream import OutputFile
from runner.verify import verify_backup

__all__ = ["main", "parser"]

log = structlog.get_logger("dbb-backup")

DEFAULT_PORTS = {Engine.POSTGRESQL: 5432, Engine.MYSQL: 3306}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ValueError, ZoneInfoNotFoundError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an IANA time zone (such as Europe/Berlin)") from None


def _retention_arguments(command: argparse.ArgumentParser) -> None:
    """Retention by calendar, beside --keep-last (runner.retention): any backup one of them keeps stays."""
    for period in ("daily", "weekly", "monthly", "yearly"):
        command.add_argument(
            f"--keep-{period}",
            type=_positive,
            default=0,
            help=f"keep the newest backup of each of the last N {period} periods",
        )
    command.add_argument(
        "--max-age", type=_age, help="delete backups older than this (36h, 90d, 52w) whatever keeps them"
    )
    command.add_argument(
        "--time-zone", type=_zone, default=ZoneInfo("Etc/UTC"), help="the zone days, weeks and months are counted in"
    )


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(
        keep_last=args.keep_last,
        keep_daily=args.keep_daily,
        keep_weekly=args.keep_weekly,
        keep_monthly=args.keep_monthly,
        keep_yearly=args.keep_yearly,
        max_age=args.max_age,
        time_zone=args.time_zone,
        binlog_window=getattr(args, "binlog_window", None),  # `run` only
    )


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0 to 65535)")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


# Everything here came from a Secret; the access key id too (it names an account, and the Job takes it from one).
SECRET_VARIABLES = (
    "DB_PASSWORD",
    "SCRATCH_PASSWORD",
    "PGPASSWORD",
    "MYSQL_PWD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    QUERY_PASSWORD_VARIABLE,
)
USER_VARIABLE = "DB_USER"
# User names that came from a Secret, scrubbed like the passwords from every failure (see above).
SECRET_USER_VARIABLES = (USER_VARIABLE, QUERY_USER_VARIABLE)


def _connection_flags(command: argparse.ArgumentParser, *, required: bool) -> None:
    command.add_argument("--host", required=required, help="database server host (a Service name in the cluster)")
    command.add_argument("--port", type=int, help="server port (default 5432 for postgresql, 3306 for mysql)")
    command.add_argument("--user", help="database user (default: $DB_USER); the password comes from DB_PASSWORD")
    command.add_argument(
        "--tls-mode",
        choices=[m.value for m in TlsMode],
        help="disable, require (encrypted, the certificate not checked) or verify-full (with --tls-ca-file); "
        "default: the clients' own (libpq's prefer)",
    )
    command.add_argument("--tls-ca-file", type=Path, help="with verify-full: the CA certificate (PEM)")
    command.add_argument(
        "--require-scram",
        action="store_true",
        help="postgresql: send the password only to a server that asks for SCRAM-SHA-256 (libpq 16+)",
    )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbb-backup",
        description="Back up, verify, restore or decrypt. The password comes from the environment only: "
        "DB_PASSWORD, else PGPASSWORD (postgresql) or MYSQL_PWD (mysql).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="dump, compress, checksum, publish atomically, prune and verify")
    run.add_argument("--engine", required=True, choices=[e.value for e in Engine], help="mysql includes MariaDB")
    _connection_flags(run, required=True)
    run.add_argument(
        "--database", action="append", required=True, help="database to back up (repeatable); 'all' = every one"
    )
    output = run.add_mutually_exclusive_group(required=True)
    output.add_argument("--output-dir", type=Path, help="folder for backups and manifests")
    output.add_argument(
        "--output-url",
        metavar="s3://BUCKET/PREFIX",
        help="bucket and prefix for backups and manifests, streamed; credentials and endpoint from the AWS_* variables",
    )
    run.add_argument("--name", help="file name prefix (default: the first --database)")
    run.add_argument(
        "--owner",
        metavar="NAMESPACE/NAME",
        help="the DatabaseBackup this run belongs to, recorded in the manifest (with --owner-uid)",
    )
    _s3_write_flags(run)
    run.add_argument(
        "--stale-upload-age",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="s3: abort incomplete uploads of --name older than this (default a day; 0 when runs never overlap)",
    )
    run.add_argument("--owner-uid", help="its uid: --keep-last deletes only backups whose manifest has this uid")
    run.add_argument("--compression", choices=[c.value for c in Compression], default="gzip")
    run.add_argument("--keep-last", type=_positive, help="keep this many newest backups of --name, delete older")
    _retention_arguments(run)
    run.add_argument(
        "--binlog-window",
        type=_age,
        help="point-in-time: keep the newest backup at or before now minus this (7d) and all after it, over "
        "--max-age and every other rule",
    )
    run.add_argument(
        "--prune-binlogs",
        action="store_true",
        help="then delete archived binlogs (<name>-binlog) older than the oldest kept backup's coordinates",
    )
    run.add_argument(
        "--base-backup",
        action="store_true",
        help="postgresql: after the dumps verified, also a base backup (<name>-<UTC>.base.tar.zst) beside them",
    )
    run.add_argument(
        "--prune-wal",
        action="store_true",
        help="postgresql: then delete this owner's base backups retention drops, and the archived WAL (<name>-wal) "
        "before the oldest kept one",
    )
    run.add_argument(
        "--wal-window",
        type=_age,
        help="with --prune-wal: keep the newest base backup that ended at or before now minus this (7d) and all "
        "after it, over --max-age and every other rule",
    )
    run.add_argument("--encryption-key-file", type=Path, help="32-byte key (raw, hex or base64): AES-256-GCM")
    run.add_argument("--verify", action="store_true", help="check the new backup (checksum and structure)")
    run.add_argument("--restore-test", action="store_true", help="with --verify: restore into a scratch database")
    run.add_argument("--scratch-host", default="127.0.0.1", help="with --scratch-port: the scratch server's host")
    run.add_argument(
        "--scratch-port",
        type=int,
        help="restore-test in this scratch server (user --scratch-user, password SCRATCH_PASSWORD), not the source",
    )
    run.add_argument("--scratch-user", help="the scratch server's user")
    run.add_argument("--scratch-wait", type=_seconds, default=180.0, help="wait this long for it to answer")
    run.add_argument(
        "--queries",
        metavar="JSON",
        help='[{"name", "database", "sql"}]: record what each prints, in the dump\'s snapshot (PostgreSQL)',
    )
    run.add_argument("--termination-log", type=Path, help="also write the result JSON here (/dev/termination-log)")
    run.add_argument("--timeout", type=_seconds, help="give up after this many seconds")

    verify = commands.add_parser("verify", help="check a backup file against its manifest")
    verify.add_argument("file", help="a backup file, or an object: s3://BUCKET/KEY (credentials from AWS_*)")
    verify.add_argument("--s3-path-style", action="store_true", help="s3: path-style URLs (most non-AWS stores)")
    _key_flags(verify)
    verify.add_argument("--restore-test", action="store_true", help="restore into a scratch database and compare")
    _connection_flags(verify, required=False)
    verify.add_argument("--timeout", type=_seconds)

    check = commands.add_parser("check", help="check the newest stored backups of one owner again, as stored now")
    check.add_argument("location", help="a folder, or s3://BUCKET/PREFIX (credentials from AWS_*)")
    check.add_argument("--owner-uid", required=True, help="the owning DatabaseBackup's uid: only its backups")
    check.add_argument(
        "--backups", type=_positive, default=1, help=f"how many of the newest (default 1, at most {MAX_BACKUPS})"
    )
    check.add_argument("--s3-path-style", action="store_true", help="s3: path-style URLs (most non-AWS stores)")
    check.add_argument("--s3-sse", choices=["AES256", "aws:kms"], help="s3: server-side encryption of drill records")
    check.add_argument("--s3-sse-kms-key-id", help="s3: the KMS key for --s3-sse aws:kms")
    _key_flags(check)
    check.add_argument("--termination-log", type=Path, help="also write the result JSON here (/dev/termination-log)")
    check.add_argument("--timeout", type=_seconds)
    check.add_argument("--restore-test", action="store_true", help="restore each into the scratch server, and count")
    check.add_argument("--scratch-host", default="127.0.0.1", help="the scratch server (default 127.0.0.1)")
    check.add_argument("--scratch-port", type=int, help="its port (required with --restore-test)")
    check.add_argument("--scratch-user", help="its user (password: DB_PASSWORD)")
    check.add_argument("--scratch-wait", type=_seconds, default=180.0, help="wait this long for it to answer")
    check.add_argument(
        "--prove-archive",
        action="store_true",
        help="prove that the archive turns an older backup into the newest one: mysql, the binlog archive in the "
        "--restore-test scratch server; postgresql, the WAL archive from the owner's two newest base backups it "
        "joins, on a scratch postgres (--pg-bin or --replay-dir)",
    )
    check.add_argument(
        "--binlog-archive",
        help="--prove-archive: the archive (DIR or s3://BUCKET/PREFIX; for postgresql the WAL archive), default "
        "beside the backups",
    )
    check.add_argument(
        "--pg-bin", type=Path, help="postgresql, --prove-archive: the scratch server's binaries (default by version)"
    )
    check.add_argument(
        "--replay-dir",
        type=Path,
        metavar="DIR",
        help="postgresql, --prove-archive: the replay server beside us (the database's image) runs the scratch "
        "server in this shared folder; psql from PATH",
    )
    check.add_argument(
        "--scratch-os-user",
        default="postgres",
        help="postgresql, --prove-archive, as root: run the scratch server as (with --replay-dir: whom its files "
        "are handed to)",
    )

    restore = commands.add_parser("restore", help="restore a backup file into a database")
    restore.add_argument("file", help="a backup file, or an object: s3://BUCKET/KEY (credentials from AWS_*)")
    _connection_flags(restore, required=True)
    restore.add_argument("--s3-path-style", action="store_true", help="s3: path-style URLs (most non-AWS stores)")
    restore.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="TARGET | SOURCE=TARGET",
        help="where to restore (repeatable SOURCE=TARGET for a backup of several databases); default: same names",
    )
    _key_flags(restore)
    restore.add_argument("--no-owner", action="store_true", help="postgresql: skip ownership and grants")
    restore.add_argument(
        "--owner",
        metavar="NAMESPACE/NAME",
        help="restore only a backup whose manifest names this DatabaseBackup as its owner (else ForeignBackup)",
    )
    restore.add_argument(
        "--replace", action="store_true", help="restore into databases that exist (default: refuse them)"
    )
    restore.add_argument("--termination-log", type=Path, help="also write the result JSON here (/dev/termination-log)")
    restore.add_argument(
        "--without-manifest",
        action="store_true",
        help="restore a file whose manifest is lost, checking only its decryption and compression first",
    )
    restore.add_argument("--timeout", type=_seconds)
    restore.add_argument(
        "--point-in-time",
        metavar="RFC3339",
        help="mysql: then replay the archived binlog up to this time (2026-12-07T10:00:00Z); see `archive`",
    )
    restore.add_argument(
        "--wal-archive",
        metavar="DIR | s3://BUCKET/PREFIX",
        help="postgresql: the WAL archive (default: <the base backup's folder or prefix>/<its name prefix>-wal)",
    )
    restore.add_argument(
        "--pick-base-backup",
        action="store_true",
        help="postgresql, with --point-in-time: start from the newest base backup beside BASEBACKUP (same folder or "
        "prefix, same name prefix, --owner's) that ended at or before the point",
    )
    restore.add_argument("--pg-bin", type=Path, help="postgresql: the scratch server's binaries (default by version)")
    restore.add_argument(
        "--scratch-os-user",
        default="postgres",
        help="postgresql, as root: run the scratch server as (with --replay-dir: whom its files are handed to)",
    )
    restore.add_argument(
        "--replay-dir",
        type=Path,
        metavar="DIR",
        help="postgresql, with --point-in-time: the replay server beside us (the source's image) runs the scratch "
        "server in this shared folder; psql and pg_dump from PATH",
    )
    restore.add_argument(
        "--scratch-port",
        type=int,
        help="mysql, with --point-in-time: replay on this scratch server (password SCRATCH_PASSWORD), then copy",
    )
    restore.add_argument("--scratch-host", default="127.0.0.1", help="with --scratch-port: its host")
    restore.add_argument("--scratch-user", help="with --scratch-port: its user")
    restore.add_argument("--scratch-wait", type=_seconds, default=180.0, help="wait this long for it to answer")
    restore.add_argument(
        "--binlog-archive",
        metavar="DIR | s3://BUCKET/PREFIX",
        help="with --point-in-time: the archive (default: <the backup's folder or prefix>/<its name prefix>-binlog)",
    )

    listing = commands.add_parser("list", help="the backups in a folder or under an s3:// prefix")
    listing.add_argument("location", help="a folder, or s3://BUCKET/PREFIX (credentials from AWS_*)")
    listing.add_argument("--s3-path-style", action="store_true", help="s3: path-style URLs (most non-AWS stores)")
    listing.add_argument("--owner-uid", help="with --keep-*: mark which rule keeps each backup of this owner")
    listing.add_argument("--keep-last", type=_positive, help="as for run: which backups a run would keep")
    _retention_arguments(listing)

    archive = commands.add_parser(
        "archive", help="stream the server's binlogs into a folder or bucket until stopped, for point-in-time restores"
    )
    archive.add_argument(
        "--engine",
        required=True,
        choices=[e.value for e in Engine],
        help="mysql: binlogs; postgresql: WAL (walarchive)",
    )
    _connection_flags(archive, required=True)
    # Required unless --drop-slot (checked in _archive).
    into = archive.add_mutually_exclusive_group()
    into.add_argument("--output-dir", type=Path, help="into <output-dir>/<name>-binlog")
    into.add_argument(
        "--output-url",
        metavar="s3://BUCKET/PREFIX",
        help="into s3://BUCKET/PREFIX/<name>-binlog; credentials and endpoint from the AWS_* variables",
    )
    _s3_write_flags(archive)
    archive.add_argument("--name", required=True, help="the backups' file name prefix (as `run --name`)")
    archive.add_argument(
        "--max-lag", type=_seconds, default=60.0, help="publish the open binlog at least this often (default 60)"
    )
    archive.add_argument(
        "--status-port",
        type=_port,
        default=0,
        help="serve GET /status (JSON) and /healthz over HTTP on 0.0.0.0:PORT (default 0: none); see archivestatus",
    )
    archive.add_argument(
        "--encryption-key-file",
        type=Path,
        help="32-byte key (raw, hex or base64): each archived binlog or WAL file encrypted, as `run`",
    )
    archive.add_argument("--termination-log", type=Path, help="also write the result JSON here (/dev/termination-log)")
    archive.add_argument(
        "--drop-slot",
        action="store_true",
        help="postgresql: drop the replication slot of --name's archiver instead (once archiving has ended for good)",
    )
    # Not `timeout`: main() would make it the run's deadline, and an archive run has none.
    archive.add_argument(
        "--timeout",
        dest="slot_timeout",
        type=_seconds,
        help="with --drop-slot: wait this long for an active slot's archiver to stop (default 60)",
    )

    base = commands.add_parser("basebackup", help="postgresql: a base backup, for point-in-time restores with WAL")
    base.add_argument("--engine", choices=[Engine.POSTGRESQL.value], default=Engine.POSTGRESQL.value)
    _connection_flags(base, required=True)
    base.add_argument("--output-dir", type=Path, required=True, help="folder for <name>-<UTC>.base.tar.zst[.enc]")
    base.add_argument("--name", required=True, help="file name prefix (as `run --name`; `archive --name` the same)")
    base.add_argument("--encryption-key-file", type=Path, help="32-byte key (raw, hex or base64): AES-256-GCM")
    base.add_argument("--termination-log", type=Path, help="also write the result JSON here (/dev/termination-log)")
    base.add_argument("--timeout", type=_seconds)

    decrypt = commands.add_parser("decrypt", help="decrypt an encrypted backup file")
    decrypt.add_argument("file", type=Path)
    _key_flags(decrypt)
    decrypt.add_argument("-o", "--output", type=Path, required=True, help="the decrypted (still compressed) file")
    return parser


def _s3_write_flags(command: argparse.ArgumentParser) -> None:
    """How objects are written into a bucket (`S3Settings`), for the commands that write them."""
    command.add_argument("--s3-path-style", action="store_true", help="s3: path-style URLs (most non-AWS stores)")
    command.add_argument("--s3-sse", choices=["AES256", "aws:kms"], help="s3: server-side encryption of the objects")
    command.add_argument("--s3-sse-kms-key-id", help="s3: the KMS key for --s3-sse aws:kms")


def _key_flags(command: argparse.ArgumentParser) -> None:
    """The keys a reader may need: one file, and a folder of them (a Secret volume: one file per key, named by its
    id), so that backups written before a key rotation stay readable. Each file's header says which key it needs."""
    command.add_argument("--key-file", type=Path, help="a key, for encrypted backups (the file's name is its id)")
    command.add_argument("--key-dir", type=Path, help="a folder of keys, one file each, named by its id")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    passwords = [os.environ.get(v, "") for v in SECRET_VARIABLES]
    # Everything from a Secret: the tools' messages and every failure are scrubbed of it. Our own log lines and the
    # success line never name the user; they are scrubbed of the passwords only, so that a user name from a Secret
    # that is also a database or folder name ("app") does not blank out the paths they report.
    scrub = Scrubber([*passwords, *(os.environ.get(v, "") for v in SECRET_USER_VARIABLES)])
    configure_logging(Scrubber(passwords))
    handler: Callable[[argparse.Namespace, Scrubber, Deadline], dict[str, Any]] = COMMANDS[args.command]
    started, clock = datetime.now(UTC), time.monotonic()
    deadline = Deadline(getattr(args, "timeout", None))
    previous = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = handler(args, scrub, deadline)
    except RunnerError as error:
        return _fail(error, args, scrub, started, clock)
    except Exception as error:  # a bug: still one scrubbed line and a failure the reconciler can show
        log.exception("unexpected error")
        return _fail(
            RunnerError(Reason.INTERNAL_ERROR, f"{type(error).__name__}: {error}"), args, scrub, started, clock
        )
    finally:
        deadline.cancel()
        for sig, old in previous.items():
            signal.signal(sig, old)
    # Only the lines of `run`, `check`, `restore` and `archive` go to the termination message, which keeps 4096
    # bytes; a listing is whole.
    reported = args.command in ("run", "check", "restore", "archive", "basebackup")
    line = Scrubber(passwords)(render(result) if reported else render(result, limit=1 << 30))
    sys.stdout.write(line)
    sys.stdout.flush()
    write_termination_log(getattr(args, "termination_log", None), line)
    if result.get("status") == Reason.VERIFY_FAILED:  # a check that found damage: the line above says where
        print(f"dbb-backup: VerifyFailed: {_failed_files(result)}", file=sys.stderr)
        return 1
    if args.command == "check" and result.get("status") == "Failed":  # the archive's proof failed: the line says why
        print(f"dbb-backup: {result['reason']}: {result['message']}", file=sys.stderr)
        return 1
    return 0


def _failed_files(result: dict[str, Any]) -> str:
    failed = [c for c in result.get("checked", []) if c.get("result") == "Failed"]
    return "; ".join(f"{c['file']}: {c['reason']}: {c['message']}" for c in failed)


def _interrupted(signum: int, _frame: FrameType | None) -> NoReturn:
    # Raised in the main thread wherever it is; every `with` on the way out kills our tools and removes the
    # temporary file, so a Job stopped by its deadline (SIGTERM) leaves nothing half-written.
    raise RunnerError(Reason.INTERRUPTED, f"stopped by {signal.Signals(signum).name}")


def _fail(error: RunnerError, args: argparse.Namespace, scrub: Scrubber, started: datetime, clock: float) -> int:
    message = RunnerError(error.reason, one_line(scrub(error.message)))
    result = failure_result(message, utc_iso(started), utc_iso(datetime.now(UTC)), time.monotonic() - clock)
    line = scrub(render(result))
    write_termination_log(getattr(args, "termination_log", None), line)
    sys.stdout.write(line)
    sys.stdout.flush()
    print(f"dbb-backup: {message.reason}: {message.message}", file=sys.stderr)
    return 1


def _connection(
    args: argparse.Namespace, engine: Engine, scrub: Scrubber, defaults: dict[str, Any] | None = None
) -> Connection:
    defaults = defaults or {}
    host = args.host or defaults.get("host")
    user = args.user or os.environ.get(USER_VARIABLE) or defaults.get("user")
    if not host or not user:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--host and --user (or {USER_VARIABLE}) are needed")
    port = args.port or defaults.get("port") or DEFAULT_PORTS[engine]
    tls = _tls(args, engine)
    connection = Connection(host, int(port), user, password_from_env(os.environ, engine), tls)
    admin.ensure_encrypted(engine, connection, scrub)
    return connection


def _tls(args: argparse.Namespace, engine: Engine) -> Tls:
    """The TLS flags, checked before anything is contacted: a CA belongs to verify-full, and verify-full needs one
    (the runner trusts no system CA for a database)."""
    mode = TlsMode(args.tls_mode) if args.tls_mode else None
    ca: Path | None = args.tls_ca_file
    if (mode is TlsMode.VERIFY_FULL) != (ca is not None):
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--tls-mode verify-full and --tls-ca-file go together")
    if ca is not None and not os.access(ca, os.R_OK):
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--tls-ca-file {ca} cannot be read")
    if args.require_scram and engine is not Engine.POSTGRESQL:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--require-scram is for postgresql only")
    tls = Tls(mode, str(ca) if ca is not None else None, args.require_scram)
    check_client_support(engine, tls)
    return tls


def _owner(owner: str | None, uid: str | None) -> Owner | None:
    if owner is None and uid is None:
        return None
    namespace, _, name = (owner or "").partition("/")
    if not namespace or not name or not uid:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--owner NAMESPACE/NAME and --owner-uid go together")
    return Owner(namespace, name, uid)


def _key(path: Path | None) -> Key | None:
    return load_key(path) if path is not None else None


def _keys(args: argparse.Namespace) -> Keyring | None:
    """The keys of --key-file and --key-dir; None when neither is given (an encrypted backup then fails, naming
    both flags)."""
    if args.key_file is None and args.key_dir is None:
        return None
    return load_keyring([args.key_file] if args.key_file else [], args.key_dir)


def _ensure_folder(folder: Path) -> None:
    """backupPath is a folder inside the backup volume that nobody else creates: a fresh PVC mounted at /backups is
    empty, so the first run makes it (and its parents)."""
    try:
        folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    except FileExistsError:
        raise RunnerError(Reason.STORAGE_ERROR, f"--output-dir {folder} exists and is not a folder") from None
    except OSError as error:
        raise RunnerError(Reason.STORAGE_ERROR, f"--output-dir {folder} cannot be created: {error.strerror}") from None


def _run(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    engine = Engine(args.engine)
    name = args.name or args.database[0]
    if name == ALL and not args.name:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--database all needs --name for the file prefix")
    if problem := validate_prefix(name):
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--name {name!r} {problem}")
    if args.restore_test and not args.verify:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--restore-test is part of --verify: give both")
    for database in args.database:
        if problem := database_problem(database):
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"--database: the name {database!r} {problem}")
    _check_base_flags(args, engine)
    owner = _owner(args.owner, args.owner_uid)
    queries = parse_queries(args.queries) if args.queries else []
    query_role = credential_from_env(os.environ)
    if queries and engine is Engine.POSTGRESQL:
        require_credential(query_role, "--queries")  # before anything is contacted
    location = S3Location.parse(args.output_url) if args.output_url else None
    if location is None:
        _ensure_folder(args.output_dir)
    options = RunOptions(
        engine=engine,
        connection=_connection(args, engine, scrub),
        databases=args.database,
        output_dir=args.output_dir,
        compression=Compression(args.compression),
        name=name,
        retention=_policy(args),
        key=_key(args.encryption_key_file),
        verify=args.verify,
        restore_test=args.restore_test,
        user_is_secret=not args.user,
        owner=owner,
        stale_upload_age=args.stale_upload_age,
        queries=queries,
        query_role=query_role,
        scratch=_run_scratch(args),
        scratch_wait=args.scratch_wait,
    )
    if location is not None:
        settings = S3Settings(args.s3_path_style, args.s3_sse, args.s3_sse_kms_key_id)
        url, manifest, kept = run_backup_s3(options, location, scrub, deadline, settings=settings)
        result = success_result(
            url, manifest, verified=args.verify, retention=kept if options.retention.any else None, catalog=kept.catalog
        )
        if args.prune_binlogs and options.retention.any:
            client = s3_client(settings)
            bucket = S3Archive(client, S3Location(location.bucket, location.key(archive_name(name))))
            # Without a retention rule a bucket's run reads only its newest manifests (s3backup.CATALOG_READS): the
            # kept backups are then not all known, and no binlog is pruned (none of the backups is deleted either).
            stored = (S3Object(client, location.bucket, location.key(file)).manifest() for file in kept.kept)
            result[archiveprune.RESULT_KEY] = archiveprune.prune_binlogs(bucket, filter(None, stored)).result()
        shelf = baseretention.S3Shelf(s3_client(settings), location, settings.object_arguments())
        return result | _base_step(args, options, shelf, scrub, deadline)
    path, manifest, kept = run_backup(options, scrub, deadline)
    result = success_result(
        path, manifest, verified=args.verify, retention=kept if options.retention.any else None, catalog=kept.catalog
    )
    if args.prune_binlogs and options.retention.any:
        store = FolderArchive(args.output_dir / archive_name(name))
        manifests = archiveprune.folder_manifests(args.output_dir, name, kept.kept)
        result[archiveprune.RESULT_KEY] = archiveprune.prune_binlogs(store, manifests).result()
    return result | _base_step(args, options, baseretention.FolderShelf(args.output_dir), scrub, deadline)


def _check_base_flags(args: argparse.Namespace, engine: Engine) -> None:
    """`run`'s base backup flags, refused before anything is contacted where they cannot apply."""
    given = [flag for flag, on in (("--base-backup", args.base_backup), ("--prune-wal", args.prune_wal)) if on]
    if args.wal_window is not None:
        if not args.prune_wal:
            raise RunnerError(Reason.INVALID_ARGUMENTS, "--wal-window goes with --prune-wal")
        given.append("--wal-window")
    if given and engine is not Engine.POSTGRESQL:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"{' and '.join(given)}: PostgreSQL only; a MySQL/MariaDB point-in-time restore starts from a dump "
            "(see --prune-binlogs and --binlog-window)",
        )


def _base_step(
    args: argparse.Namespace, options: RunOptions, shelf: baseretention.BaseShelf, scrub: Scrubber, deadline: Deadline
) -> dict[str, Any]:
    """--base-backup and --prune-wal, once the dumps are written and verified (baseretention)."""
    if not args.base_backup and not args.prune_wal:
        return {}
    base = BaseOptions(options.connection, options.name, options.key, options.user_is_secret, options.owner)
    policy = replace(options.retention, binlog_window=args.wal_window)
    step = baseretention.BaseStep(base, take=args.base_backup, prune=args.prune_wal, policy=policy)
    return baseretention.base_step(step, shelf, datetime.now(UTC), scrub, deadline)


def _stored(file: str, path_style: bool) -> tuple[Path | S3Object, Manifest | None]:
    """A file, or an object and its manifest (None if it has none)."""
    if not file.startswith("s3://"):
        return Path(file), None
    location = S3Location.parse(file)
    source = S3Object(s3_client(S3Settings(path_style=path_style)), location.bucket, location.prefix)
    return source, source.manifest()


def _verify(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    source, manifest = _stored(args.file, args.s3_path_style)
    if isinstance(source, Path):
        manifest = read_manifest(source)
        if manifest.file != source.name:
            raise RunnerError(Reason.VERIFY_FAILED, f"the manifest describes {manifest.file}, not {source.name}")
    elif manifest is None:
        raise RunnerError(Reason.VERIFY_FAILED, f"no manifest {args.file}{MANIFEST_SUFFIX} beside the backup")
    connection = None
    if args.restore_test:
        engine = Engine(manifest.engine)
        defaults = {"host": manifest.host, "port": manifest.port, "user": manifest.user}
        connection = _connection(args, engine, scrub, defaults)
    report = verify_backup(
        source,
        _keys(args),
        scrub,
        deadline,
        restore_connection=connection,
        manifest=manifest,
        query_role=credential_from_env(os.environ),
    )
    return {
        "status": "Verified",
        "file": args.file,
        "size": report.size,
        "sha256": report.sha256,
        "tables": report.tables,
        "restoreTested": report.restore_tested,
        "queries": report.queries,
    }


def _run_scratch(args: argparse.Namespace) -> Connection | None:
    """A run's scratch server (beside it in its Pod) for the restore test, instead of a scratch database on the
    database's own server."""
    if args.scratch_port is None:
        return None
    if not args.restore_test or not args.scratch_user:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--scratch-port is for --restore-test, and needs --scratch-user")
    password = os.environ.get("SCRATCH_PASSWORD", "")
    return Connection(args.scratch_host, args.scratch_port, args.scratch_user, password, Tls(TlsMode.DISABLE))


def _check(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    # `done` in --replay-dir however the check ends, so that the replay server exits and the Pod completes.
    with letting_go(args.replay_dir):
        return _check_stored(args, scrub, deadline)


def _check_stored(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    if args.backups > MAX_BACKUPS:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--backups {args.backups}: at most {MAX_BACKUPS}")
    postgres = args.pg_bin is not None or args.replay_dir is not None
    if args.prove_archive and not (args.restore_test or postgres):
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            "--prove-archive needs --restore-test (and its scratch server) for MySQL/MariaDB, or --pg-bin or "
            "--replay-dir for PostgreSQL",
        )
    if args.binlog_archive is not None and not args.prove_archive:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--binlog-archive goes with --prove-archive")
    if postgres and not args.prove_archive:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--pg-bin and --replay-dir go with --prove-archive")
    if args.pg_bin is not None and args.replay_dir is not None:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS, "--pg-bin and --replay-dir: the replay server brings its own postgres"
        )
    in_s3 = any(w.startswith("s3://") for w in (args.location, args.binlog_archive or ""))
    client = s3_client(S3Settings(path_style=args.s3_path_style)) if in_s3 else None
    scratch = None
    if args.restore_test:
        if not args.scratch_port or not args.scratch_user:
            raise RunnerError(Reason.INVALID_ARGUMENTS, "--restore-test needs --scratch-port and --scratch-user")
        password = os.environ.get("DB_PASSWORD", "")  # the scratch server's own, set by the Job
        scratch = Connection(args.scratch_host, args.scratch_port, args.scratch_user, password, Tls(TlsMode.DISABLE))
    settings = S3Settings(args.s3_path_style, args.s3_sse, args.s3_sse_kms_key_id)
    options = CheckOptions(
        args.location,
        args.owner_uid,
        args.backups,
        _keys(args),
        scratch,
        args.scratch_wait,
        object_arguments=settings.object_arguments(),
        prove_archive=args.prove_archive,
        binlog_archive=args.binlog_archive,
        wal_scratch=pgpitr.ScratchOptions(args.pg_bin, args.scratch_os_user, replay_dir=args.replay_dir)
        if postgres
        else None,
        wal_roles=tuple(r for r in (os.environ.get(USER_VARIABLE),) if r),
    )
    return check_stored(options, client, scrub, deadline)


def _restore(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    base = args.file.endswith((BASE_SUFFIX, BASE_SUFFIX + ENCRYPTED_SUFFIX))
    _check_replay_flags(args, base)
    if base:
        return _restore_base(args, scrub, deadline)
    source, manifest = _stored(args.file, args.s3_path_style)
    engine = parse_layout(Path(source.name)).engine
    options = RestoreOptions(
        _connection(args, engine, scrub),
        tuple(args.database),
        no_owner=args.no_owner,
        replace=args.replace,
        without_manifest=args.without_manifest,
        owner=_restore_owner(args),
    )
    keys = _keys(args)
    point = _point_in_time(args, source, manifest, engine)
    scratch = _restore_scratch(args)
    done: dict[str, object]
    if point is not None and scratch is not None:
        clock = time.monotonic()
        done = scratchrestore.restore_through_scratch(source, manifest, keys, options, point, scratch, scrub, deadline)
    else:
        if point is not None:
            scratchrestore.refuse_replace_in_place(args.replace)
            pitr.check_keys(point[0], keys)
            plan, store, target, database = point
            pitr.check_statements(plan, store, database, target, scrub, deadline, keys)
        created = point is not None and not admin.database_exists(engine, options.connection, point[2], scrub)
        clock = time.monotonic()
        restored = restore_backup(source, keys, options, scrub, deadline, stored_manifest=manifest)
        done = {"databases": restored}
        if point is not None:
            plan, store, _, _ = point
            done |= pitr.apply(plan, store, options.connection, restored, scrub, deadline, created=created, keys=keys)
    if point is not None:
        done["pointInTime"] = args.point_in_time
    took = round(time.monotonic() - clock, 1)  # the restore itself: what a team plans an outage around
    if isinstance(source, Path) and manifest_path(source).exists():
        manifest = read_manifest(source)
    # The sha256 the restore checked the whole file against before it changed anything (none without a manifest).
    checked = {"sha256": manifest.sha256} if manifest is not None else {}
    return {
        "status": "Restored",
        "file": args.file,
        **checked,
        **done,
        "restoreSeconds": took,
    }


def _restore_owner(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.owner is None:
        return None
    namespace, _, name = args.owner.partition("/")
    if not namespace or not name:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--owner {args.owner!r}: give NAMESPACE/NAME")
    return namespace, name


def _check_replay_flags(args: argparse.Namespace, base: bool) -> None:
    """--replay-dir and --pick-base-backup, refused before anything is read where they cannot apply."""
    flags = (("--replay-dir", args.replay_dir is not None), ("--pick-base-backup", args.pick_base_backup))
    given = " and ".join(flag for flag, on in flags if on)
    if not given:
        return
    if not base:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"{given}: PostgreSQL point-in-time restores only (a base backup, *.base.tar.zst, with --point-in-time)",
        )
    if args.point_in_time is None:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"{given}: for a restore to a point in time (--point-in-time)")
    if args.replay_dir is not None and args.pg_bin is not None:
        raise RunnerError(
            Reason.INVALID_ARGUMENTS, "--pg-bin and --replay-dir: the replay server brings its own postgres"
        )


def _restore_scratch(args: argparse.Namespace) -> scratchrestore.Scratch | None:
    """A point-in-time restore's scratch server (`--scratch-port`), where the binlog is replayed before the target
    is touched (scratchrestore); None without one."""
    if args.scratch_port is None:
        return None
    if args.point_in_time is None or not args.scratch_user:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--scratch-port is for --point-in-time, and needs --scratch-user")
    password = os.environ.get("SCRATCH_PASSWORD", "")
    connection = Connection(args.scratch_host, args.scratch_port, args.scratch_user, password, Tls(TlsMode.DISABLE))
    return scratchrestore.Scratch(connection, args.scratch_wait)


def _restore_base(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    """A PostgreSQL base backup, from a folder or a bucket: only to a point in time (pgpitr)."""
    with letting_go(args.replay_dir):
        if args.point_in_time is None:
            raise RunnerError(Reason.INVALID_ARGUMENTS, "a base backup is restored with --point-in-time")
        point = pitr.parse_instant(args.point_in_time)
        file = args.file
        if args.pick_base_backup:
            file = pick_base_backup(args.file, point, _restore_owner(args), args.s3_path_style)
            log.info("base backup picked", file=file, named=args.file, point=args.point_in_time)
        backup, manifest, wal = pgpitr.locate(file, args.wal_archive, args.s3_path_style)
        scratch = pgpitr.ScratchOptions(args.pg_bin, args.scratch_os_user, args.no_owner, args.replace, args.replay_dir)
        databases = pgpitr.parse_databases(tuple(args.database))
        connection = _connection(args, Engine.POSTGRESQL, scrub)
        clock = time.monotonic()
        done = pgpitr.restore_point_in_time(
            backup, manifest, wal, point, databases, connection, _keys(args), scratch, scrub, deadline
        )
    # `file`: the base backup restored from (with --pick-base-backup, perhaps an older one than named).
    return {"status": "Restored", "file": file, **done, "restoreSeconds": round(time.monotonic() - clock, 1)}


def _point_in_time(
    args: argparse.Namespace, source: Path | S3Object, stored: Manifest | None, engine: Engine
) -> tuple[pitr.Replay, ArchiveStore, str, str] | None:
    """`--point-in-time`: the replay's plan, its archive, the target database and the backup's, decided before
    anything is touched (see pitr.py); None without it. `stored`: an object's manifest, as read beside it."""
    if args.point_in_time is None:
        if args.binlog_archive is not None:
            raise RunnerError(Reason.INVALID_ARGUMENTS, "--binlog-archive goes with --point-in-time")
        return None
    point = pitr.parse_instant(args.point_in_time)
    if engine is not Engine.MYSQL:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--point-in-time: MySQL/MariaDB backups only, for now")
    manifest = read_manifest(source) if isinstance(source, Path) else stored
    if manifest is None:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--point-in-time needs the manifest {args.file}{MANIFEST_SUFFIX}")
    plan, store = pitr.prepare(manifest, source, _binlog_archive(args, source), point)
    plain, pairs = parse_targets(tuple(args.database))
    database = manifest.databases[0]
    return plan, store, plain or pairs.get(database, database), database


def _binlog_archive(args: argparse.Namespace, source: Path | S3Object) -> ArchiveStore | None:
    """--binlog-archive: a folder, or s3://BUCKET/PREFIX (the archive's own prefix, `…/<name>-binlog`)."""
    where: str | None = args.binlog_archive
    if where is None:
        return None
    if not where.startswith("s3://"):
        return FolderArchive(Path(where))
    client = source.client if isinstance(source, S3Object) else s3_client(S3Settings(path_style=args.s3_path_style))
    return S3Archive(client, S3Location.parse(where))


def _decrypt(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    keys = _keys(args)
    if keys is None:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "give the key: --key-file or --key-dir")
    try:
        source = args.file.open("rb")
    except OSError as error:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"cannot open {args.file}: {error.strerror}") from None
    with source:
        decryptor = Decryptor(keys, source)
        target = args.output.resolve()
        # Written like a backup: a decrypted file with its final name is complete and authenticated.
        with OutputFile(target.parent, target.name) as out:
            with progress.phase("decrypt", file=args.file.name):
                while data := decryptor.read(1 << 20):
                    out.write(data)
                    deadline.check()
            out.publish()
    return {"status": "Decrypted", "file": str(args.file), "output": str(target), "size": out.size}


def _list(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    if args.location.startswith("s3://"):
        client = s3_client(S3Settings(path_style=args.s3_path_style))
        found, bases = everything_in_s3(client, S3Location.parse(args.location))
    else:
        found, bases = everything_in_folder(Path(args.location))
    policy = _policy(args)
    if policy.any and not args.owner_uid:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--keep-* and --max-age mark one owner's backups: give --owner-uid")
    marks = kept_by(found, policy, args.owner_uid, datetime.now(UTC)) if policy.any else {}
    backups = [entry(f.manifest, f.where, f.present, marks.get(f.where)) for f in found]
    backups += [entry(*base) for base in bases]
    return {"status": "Listed", "location": args.location, "backups": backups}


def _archive(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    if problem := validate_prefix(args.name):
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--name {args.name!r} {problem}")
    if args.drop_slot or args.slot_timeout is not None:
        return _drop_slot(args, scrub)
    if args.output_dir is None and args.output_url is None:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "give --output-dir or --output-url (or --drop-slot)")
    if args.engine == Engine.POSTGRESQL:
        return walarchive.run(args, _connection(args, Engine.POSTGRESQL, scrub), _archive_store(args, "-wal"), scrub)
    key = _key(args.encryption_key_file)
    options = ArchiveOptions(_connection(args, Engine.MYSQL, scrub), _archive_store(args), args.max_lag, key)
    # SIGTERM and SIGINT end the archiving, not the run: the binlog it is on is published first (see archive.py).
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    status = ArchiveStatus()
    with serving(status, args.status_port):
        try:
            return archive(options, scrub, stop, status)
        except RunnerError as error:  # served (healthz 503) until the process exits with it, moments later
            status.failed(error.reason, one_line(scrub(error.message)))
            raise


def _drop_slot(args: argparse.Namespace, scrub: Scrubber) -> dict[str, Any]:
    if not args.drop_slot:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--timeout goes with --drop-slot")
    if args.engine != Engine.POSTGRESQL:
        raise RunnerError(Reason.INVALID_ARGUMENTS, "--drop-slot: a PostgreSQL archiver's slot only")
    timeout = 60.0 if args.slot_timeout is None else args.slot_timeout
    return walarchive.drop_slot(_connection(args, Engine.POSTGRESQL, scrub), args.name, timeout, scrub)


def _archive_store(args: argparse.Namespace, suffix: str = "") -> ArchiveStore:
    """`archive`'s --output-dir or --output-url, as the archive's own folder or prefix: `<name>-binlog` in it (or
    `<name><suffix>`: `<name>-wal` for PostgreSQL)."""
    folder = f"{args.name}{suffix}" if suffix else archive_name(args.name)
    if args.output_url is None:
        _ensure_folder(args.output_dir)
        return FolderArchive(args.output_dir / folder)
    location = S3Location.parse(args.output_url)
    settings = S3Settings(args.s3_path_style, args.s3_sse, args.s3_sse_kms_key_id)
    inside = S3Location(location.bucket, location.key(folder))
    return S3Archive(s3_client(settings), inside, settings.object_arguments())


def _basebackup(args: argparse.Namespace, scrub: Scrubber, deadline: Deadline) -> dict[str, Any]:
    if problem := validate_prefix(args.name):
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--name {args.name!r} {problem}")
    _ensure_folder(args.output_dir)
    connection = _connection(args, Engine.POSTGRESQL, scrub)
    options = BaseOptions(connection, args.name, _key(args.encryption_key_file), not args.user)
    return basebackup.result(*take_base_backup(options, args.output_dir, scrub, deadline))


COMMANDS: dict[str, Callable[[argparse.Namespace, Scrubber, Deadline], dict[str, Any]]] = {
    "run": _run,
    "verify": _verify,
    "check": _check,
    "restore": _restore,
    "list": _list,
    "decrypt": _decrypt,
    "archive": _archive,
    "basebackup": _basebackup,
}


if __name__ == "__main__":
    sys.exit(main())
