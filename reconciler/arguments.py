"""The runner's command lines (`dbb-backup run`, `check`, `restore`, `archive`), as the reconciler writes them into
Jobs and the archiver's Deployment: the one side of the contract whose other side is the runner's own parser
(runner/main.py), and which tests/unit/test_runner_contract.py holds together.

No value from a Secret is ever an argument: Secrets reach the container as env and volumes (reconciler.jobs). Every
argument is escaped for the kubelet's `$(VAR)` expansion (`$` is written `$$`), so that no spec value can pull an env
value, such as the password, into argv or into a message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from common.backups.model import ConcurrencyPolicy, DatabaseBackupSpec
from common.backups.validation import default_backup_path
from common.constants import DEFAULT_TIME_ZONE
from common.values import Engine, S3Storage, Tls, TlsMode

__all__ = [
    "ARCHIVER_PORT",
    "KEY_MOUNT",
    "TERMINATION_LOG",
    "TLS_CA_MOUNT",
    "archive_arguments",
    "check_arguments",
    "escape_expansion",
    "release_slot_arguments",
    "restore_arguments",
    "runner_arguments",
]

KEY_MOUNT: Final = "/var/run/secrets/databases.test.io/encryption"
TLS_CA_MOUNT: Final = "/var/run/secrets/databases.test.io/tls-ca"
TLS_MODE_ARGUMENT: Final = {TlsMode.DISABLE: "disable", TlsMode.REQUIRE: "require", TlsMode.VERIFY_FULL: "verify-full"}
TERMINATION_LOG: Final = "/dev/termination-log"
ARCHIVER_PORT: Final = 8080  # the archiver's /status and /healthz (plain HTTP: times and binlog names only)


def check_arguments(spec: DatabaseBackupSpec, owner: dict[str, Any]) -> list[str]:
    """`dbb-backup check <where the runs write> ...` for this spec, escaped like `runner_arguments`."""
    namespace, uid = owner["metadata"]["namespace"], owner["metadata"]["uid"]
    arguments = [
        "dbb-backup",
        "check",
        _location(spec, namespace),
        f"--owner-uid={uid}",
        f"--backups={spec.verify_backups}",
        f"--termination-log={TERMINATION_LOG}",
    ]
    if spec.s3 is not None:
        arguments += _s3_object_arguments(spec.s3)
    if spec.encryption_key is not None:
        arguments.append(f"--key-dir={KEY_MOUNT}")
    return [escape_expansion(a) for a in arguments]


def runner_arguments(spec: DatabaseBackupSpec, owner: dict[str, Any]) -> list[str]:
    """`dbb-backup run ...` for this spec, escaped for the kubelet's `$(VAR)` expansion. Without
    `connection.username` the runner reads the user name from its env (`DB_USER`, from the Secret)."""
    assert spec.engine is not None
    connection = spec.connection
    name, namespace, uid = (owner["metadata"][k] for k in ("name", "namespace", "uid"))
    arguments = [
        "dbb-backup",
        "run",
        f"--engine={_engine(spec)}",
        f"--host={connection.host}",
        *_output_arguments(spec, namespace),
        f"--name={name}",
        f"--owner={namespace}/{name}",
        f"--owner-uid={uid}",
        f"--compression={spec.compression.value.lower()}",
        f"--keep-last={spec.keep_last}",
        "--verify",
        f"--termination-log={TERMINATION_LOG}",
    ]
    arguments += _retention_arguments(spec)
    if connection.username is not None:
        arguments.append(f"--user={connection.username}")
    if connection.port is not None:
        arguments.append(f"--port={connection.port}")
    arguments += [f"--database={d}" for d in connection.databases or ("all",)]
    if spec.encryption_key is not None:
        arguments.append(f"--encryption-key-file={KEY_MOUNT}/{spec.encryption_key.key}")
    if spec.continuous is not None and spec.engine is Engine.POSTGRESQL:
        # Each run also takes the base backup a point-in-time restore starts from; base backups retention no
        # longer keeps go, then the WAL no kept one needs (with a window, those its oldest second needs stay).
        arguments += ["--base-backup", "--prune-wal"]
        if spec.continuous.window is not None:
            arguments.append(f"--wal-window={spec.continuous.window}")
    elif spec.continuous is not None:
        # Binlogs no kept backup can replay from go; with a window, the backups its oldest second needs stay.
        arguments.append("--prune-binlogs")
        if spec.continuous.window is not None:
            arguments.append(f"--binlog-window={spec.continuous.window}")
    if spec.restore_test:
        arguments.append("--restore-test")
    if spec.verify_queries:
        arguments.append(f"--queries={_queries_json(spec)}")
    if connection.tls is not None:
        arguments += _tls_arguments(connection.tls)
    return [escape_expansion(a) for a in arguments]


def archive_arguments(spec: DatabaseBackupSpec, owner: dict[str, Any]) -> list[str]:
    """`dbb-backup archive ...`: the server's binlogs (PostgreSQL: its WAL) streamed to where the runs write, under
    the runs' name, for as long as the archiver runs; escaped like `runner_arguments`."""
    assert spec.continuous is not None
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    s3 = spec.s3
    output = (
        [f"--output-dir={_location(spec, namespace)}"]
        if s3 is None
        else [f"--output-url={_location(spec, namespace)}", *_s3_object_arguments(s3)]
    )
    arguments = [
        "dbb-backup",
        "archive",
        f"--engine={_engine(spec)}",
        f"--host={spec.connection.host}",
        *output,
        f"--name={name}",
        f"--max-lag={spec.continuous.max_lag_seconds}",
        f"--status-port={ARCHIVER_PORT}",
        # Why it stopped (ArchiveGap, BinaryLoggingOff, ...) outlives the process as the Pod's last termination message.
        f"--termination-log={TERMINATION_LOG}",
        *_connection_arguments(spec),
    ]
    if spec.encryption_key is not None:
        arguments.append(f"--encryption-key-file={KEY_MOUNT}/{spec.encryption_key.key}")
    return [escape_expansion(a) for a in arguments]


def release_slot_arguments(spec: DatabaseBackupSpec, owner: dict[str, Any]) -> list[str]:
    """`dbb-backup archive --drop-slot ...`: the PostgreSQL archiver's replication slot dropped (reconciler.slot),
    with the archiver's connection and name; escaped like `runner_arguments`."""
    arguments = [
        "dbb-backup",
        "archive",
        "--engine=postgresql",
        "--drop-slot",
        f"--host={spec.connection.host}",
        f"--name={owner['metadata']['name']}",
        f"--termination-log={TERMINATION_LOG}",
        *_connection_arguments(spec),
    ]
    return [escape_expansion(a) for a in arguments]


def _connection_arguments(spec: DatabaseBackupSpec) -> list[str]:
    """The user (without one the runner reads `DB_USER`), port and TLS flags of `spec.connection`."""
    connection = spec.connection
    arguments = [f"--user={connection.username}"] if connection.username is not None else []
    if connection.port is not None:
        arguments.append(f"--port={connection.port}")
    if connection.tls is not None:
        arguments += _tls_arguments(connection.tls)
    return arguments


def _engine(spec: DatabaseBackupSpec) -> str:
    return "postgresql" if spec.engine is Engine.POSTGRESQL else "mysql"


def _queries_json(spec: DatabaseBackupSpec) -> str:
    """verify.queries for the runner, each with its database (the one backed up, when the spec leaves it out)."""
    default = spec.connection.databases[0] if spec.connection.databases else ""
    items = [{"name": q.name, "database": q.database or default, "sql": q.sql} for q in spec.verify_queries]
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False)


def _location(spec: DatabaseBackupSpec, namespace: str) -> str:
    """Where the runs write: the folder in the backup volume, or s3://bucket/prefix."""
    s3 = spec.s3
    if s3 is None:
        return spec.backup_path or default_backup_path(spec.database_name)
    prefix = s3.prefix if s3.prefix is not None else f"{namespace}/{spec.database_name}"
    return f"s3://{s3.bucket}/{prefix.strip('/')}"


def _s3_object_arguments(s3: S3Storage) -> list[str]:
    """How the runner reaches the store, and what every object it writes carries (server-side encryption)."""
    arguments = ["--s3-path-style"] if s3.force_path_style else []
    if s3.server_side_encryption is not None:
        arguments.append(f"--s3-sse={s3.server_side_encryption.value}")
    if s3.kms_key_id:
        arguments.append(f"--s3-sse-kms-key-id={s3.kms_key_id}")
    return arguments


def _output_arguments(spec: DatabaseBackupSpec, namespace: str) -> list[str]:
    s3 = spec.s3
    if s3 is None:
        return [f"--output-dir={_location(spec, namespace)}"]
    arguments = [f"--output-url={_location(spec, namespace)}", *_s3_object_arguments(s3)]
    if spec.concurrency_policy is not ConcurrencyPolicy.ALLOW:
        # Runs never overlap: any incomplete upload under this name is a killed run's, whatever its age.
        arguments.append("--stale-upload-age=0")
    return arguments


def restore_arguments(
    spec: DatabaseBackupSpec,
    *,
    file: str,
    targets: Mapping[str, str],
    replace: bool,
    no_owner: bool = False,
    owner: str | None = None,
    point_in_time: str | None = None,
    pick_base_backup: bool = False,
) -> list[str]:
    """`dbb-backup restore FILE ...` into the connection `spec.connection` holds (the target's), from the source's
    storage and key, escaped like `runner_arguments`. `owner`: NAMESPACE/NAME of the DatabaseBackup the backup must
    belong to. `pick_base_backup`: FILE is the newest base backup, and the runner replays from the one beside it
    that ended last at or before `point_in_time`."""
    connection = spec.connection
    arguments = [
        "dbb-backup",
        "restore",
        file,
        f"--host={connection.host}",
        *(f"--database={name}={target}" for name, target in targets.items()),
        f"--termination-log={TERMINATION_LOG}",
    ]
    if owner is not None:
        arguments.append(f"--owner={owner}")
    if connection.username is not None:
        arguments.append(f"--user={connection.username}")
    if connection.port is not None:
        arguments.append(f"--port={connection.port}")
    if replace:
        arguments.append("--replace")
    if no_owner:
        arguments.append("--no-owner")
    if point_in_time is not None:
        arguments.append(f"--point-in-time={point_in_time}")
    if pick_base_backup:
        arguments.append("--pick-base-backup")
    if spec.s3 is not None and spec.s3.force_path_style:
        arguments.append("--s3-path-style")
    if spec.encryption_key is not None:
        arguments.append(f"--key-dir={KEY_MOUNT}")
    if connection.tls is not None:
        arguments += _tls_arguments(connection.tls)
    return [escape_expansion(a) for a in arguments]


def _tls_arguments(tls: Tls) -> list[str]:
    arguments = [f"--tls-mode={TLS_MODE_ARGUMENT[tls.mode]}"]
    if tls.ca is not None:
        arguments.append(f"--tls-ca-file={TLS_CA_MOUNT}/ca.crt")
    if tls.require_scram:
        arguments.append("--require-scram")
    return arguments


def escape_expansion(argument: str) -> str:
    """`argument` as the kubelet must pass it on: it turns `$$` into `$` and `$(NAME)` into NAME's env value."""
    return argument.replace("$", "$$")


def _retention_arguments(spec: DatabaseBackupSpec) -> list[str]:
    """Retention by calendar, bucketed in the schedule's own time zone (the runner's default is UTC)."""
    counts = {"daily": spec.keep_daily, "weekly": spec.keep_weekly, "monthly": spec.keep_monthly}
    counts["yearly"] = spec.keep_yearly
    arguments = [f"--keep-{period}={count}" for period, count in counts.items() if count]
    if spec.max_age is not None:
        arguments.append(f"--max-age={spec.max_age}")
    if arguments:
        arguments.append(f"--time-zone={spec.time_zone or DEFAULT_TIME_ZONE}")
    return arguments
