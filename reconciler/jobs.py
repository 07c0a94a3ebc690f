"""The Jobs the reconciler runs (pure): a backup run's, a scheduled check's and a restore's, with their Pods, the
runner's env and volumes, and the scratch server a restore test runs beside it. Their command lines are
reconciler.arguments'; what a Job says happened is reconciler.outcomes'.

The Job's name is the lock against running one slot twice: `<name>-<scheduled unix minute>` for a scheduled run,
`<name>-now-<hash of the request>` for an on-demand one. Creating it a second time (after a crash, a restart, or by
a second reconciler) fails with AlreadyExists, which means "already done".

Secrets never pass through the reconciler, and no value from a Secret is ever in the Job's arguments: the password
(and the user name, when it comes from the Secret) reach the container as env `valueFrom.secretKeyRef`, which the
runner reads and scrubs from everything it reports; the encryption key comes as a Secret volume, and
`connection.tls.ca` as a Secret or ConfigMap volume. Every literal env value is escaped for the kubelet's `$(VAR)`
expansion as the arguments are.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from common.backups.defaults import default_claim_name
from common.backups.model import DatabaseBackupSpec
from common.constants import (
    ANNOTATION_BACKUP_NOW,
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_VERIFY_NOW,
    API_VERSION,
    BACKUP_ROOT,
    KIND,
    LABEL_BACKUP_NAME,
    LABEL_MANAGED_BY,
    LABEL_RESTORE_NAME,
    LABEL_RUN,
    MANAGED_BY,
    RESTORE_KIND,
    RUN_BACKUP,
    RUN_RELEASE_SLOT,
    RUN_RESTORE,
    RUN_VERIFY,
)
from common.names import job_name, scheduled_minutes
from common.values import ConfigMapKeyRef, Engine, S3Storage, SecretKeyRef, Tls
from reconciler.arguments import (
    KEY_MOUNT,
    TERMINATION_LOG,
    TLS_CA_MOUNT,
    check_arguments,
    escape_expansion,
    release_slot_arguments,
    restore_arguments,
    runner_arguments,
)
from reconciler.capacity import ANNOTATION_CAPS, keys_of
from reconciler.replayserver import with_replay_server
from reconciler.world import rfc3339

__all__ = [
    "RunnerSettings",
    "ScratchServer",
    "backup_job",
    "on_demand_job_name",
    "pod_spec",
    "release_slot_job",
    "restore_job",
    "restore_job_name",
    "verification_job",
]

SCRATCH_PASSWORD_VARIABLE: Final = "SCRATCH_PASSWORD"  # noqa: S105 - a variable name, which a run reads
S3_CA_VARIABLE: Final = "S3_CA_BUNDLE_PEM"
QUERY_USER_VARIABLE: Final = "QUERY_USER"
QUERY_PASSWORD_VARIABLE: Final = "QUERY_PASSWORD"  # noqa: S105 - a variable name, which a run reads
RELEASE_DEADLINE_SECONDS: Final = 600  # a slot Job given up after this (reconciler.slot says what then)


@dataclass(frozen=True)
class RunnerSettings:
    image: str = "databasebackup-operator:latest"
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None


def on_demand_job_name(name: str, request: str) -> str:
    """`<name>-now-<6 hex>`: at most 52 + 11 = 63 characters, and the same request always maps to the same Job."""
    return f"{name}-now-{hashlib.sha256(request.encode()).hexdigest()[:6]}"


def backup_job(
    owner: dict[str, Any],
    spec: DatabaseBackupSpec,
    *,
    scheduled: datetime,
    runner: RunnerSettings,
    request: str | None = None,
    scratch: ScratchServer | None = None,
) -> dict[str, Any]:
    """The Job for one run. `spec` has its defaults applied; `request` is the backup-now value for on-demand runs.
    `scratch`: with `verify.restoreTest`, the scratch server the run restores its new backup into, beside it in the
    Pod, so that the test never touches the database's own server (without one, the run's restore test uses a
    scratch database there, as before)."""
    name = owner["metadata"]["name"]
    job_name_ = on_demand_job_name(name, request) if request is not None else job_name(name, scheduled)
    pod = pod_spec(owner, spec, runner, runner_arguments(spec, owner))
    if spec.restore_test and scratch is not None:
        seed = f"{owner['metadata']['uid']}/{job_name_}"
        _with_scratch_server(pod, scratch, spec, seed, password_variable=SCRATCH_PASSWORD_VARIABLE)
    return _job(
        owner, job_name_, RUN_BACKUP, scheduled, pod, backoff_limit=spec.backoff_limit, spec=spec, request=request
    )


def verification_job(
    owner: dict[str, Any],
    spec: DatabaseBackupSpec,
    *,
    scheduled: datetime,
    runner: RunnerSettings,
    request: str | None = None,
    scratch: ScratchServer | None = None,
) -> dict[str, Any]:
    """The Job for one scheduled verification: `dbb-backup check` of the newest `spec.verify.backups` backups where
    the runs put them. It gets what reading the storage takes (the backup volume read-only, or the S3 variables and
    CA; with a restore test the volume writable, for the drill records) and the encryption key; no database
    credentials and no database: it never connects to the server. Not retried (`backoffLimit: 0`): a checksum that
    does not match will not match on a second try, and the next slot comes anyway. `request`: the verify-now value,
    for an on-demand check. `scratch`: with `verify.restoreTest`, the scratch server the check restores into, beside
    it in the Pod (`_with_scratch_server`)."""
    owner_name = owner["metadata"]["name"]
    if request is not None:
        name = f"{owner_name}-vnow-{hashlib.sha256(request.encode()).hexdigest()[:5]}"  # 52 + 11 = 63
    else:
        name = verification_job_name(owner_name, scheduled)
    pod = pod_spec(owner, spec, runner, check_arguments(spec, owner), verification=True)
    if spec.restore_test and scratch is not None:
        _with_scratch_server(pod, scratch, spec, f"{owner['metadata']['uid']}/{name}")
        if spec.continuous is not None:
            # The archive too: the newest backup rebuilt from an older one and the archived binlogs (or WAL, on a
            # replay server of the database's own image) between them.
            pod["containers"][0]["args"].append("--prove-archive")
            if scratch.engine is Engine.POSTGRESQL:
                with_replay_server(pod, scratch.image, spec)
                _with_user_name(pod, spec)
        # Its one write: the record of each drill, beside the backup it restored (runner/drills.py).
        for mount in pod["containers"][0]["volumeMounts"]:
            if mount["name"] == "backups":
                mount.pop("readOnly", None)
    job = _job(owner, name, RUN_VERIFY, scheduled, pod, backoff_limit=0, spec=spec)
    if request is not None:
        job["metadata"]["annotations"][ANNOTATION_VERIFY_NOW] = request
    return job


def restore_job_name(name: str, uid: str) -> str:
    """`<name>-restore-<10 hex of its uid>`, at most 63 characters: one Job per DatabaseRestore, ever."""
    return f"{name[:44].rstrip('-.')}-restore-{hashlib.sha256(uid.encode()).hexdigest()[:10]}"


def restore_job(
    restore: dict[str, Any],
    spec: DatabaseBackupSpec,
    *,
    file: str,
    targets: Mapping[str, str],
    replace: bool,
    runner: RunnerSettings,
    no_owner: bool = False,
    source: str | None = None,
    point_in_time: str | None = None,
    scratch: ScratchServer | None = None,
    pick_base_backup: bool = False,
) -> dict[str, Any]:
    """The one Job of a DatabaseRestore: `dbb-backup restore FILE` with the source's storage (the volume read-only,
    or the S3 variables) and key, and the target's connection, which `spec.connection` holds (the source's own
    spec, its connection swapped for the target's). `targets`: SOURCE=TARGET pairs (empty: every database under
    its own name). `source`: the DatabaseBackup whose backup it is (`--owner`: the runner refuses a backup whose
    manifest names another owner). `point_in_time`: then replay the source's archive up to it, on `scratch` (a
    scratch server beside it in the Pod) when given, before the target is touched: for PostgreSQL, the replay
    server of reconciler.replayserver, started on the base backup `file` (or, `pick_base_backup`, the one beside it
    that ended last before the point). Never retried (`backoffLimit: 0`): a restore is run once, and what it did is
    its status."""
    metadata = restore["metadata"]
    owner = f"{metadata['namespace']}/{source}" if source is not None else None
    arguments = restore_arguments(
        spec,
        file=file,
        targets=targets,
        replace=replace,
        no_owner=no_owner,
        owner=owner,
        point_in_time=point_in_time,
        pick_base_backup=pick_base_backup,
    )
    pod = pod_spec(restore, spec, runner, arguments, restore=True)
    if point_in_time is not None and scratch is not None and scratch.engine is Engine.POSTGRESQL:
        with_replay_server(pod, scratch.image, spec)
    elif point_in_time is not None and scratch is not None:
        seed = f"{metadata['uid']}/restore"
        _with_scratch_server(pod, scratch, spec, seed, password_variable=SCRATCH_PASSWORD_VARIABLE, restore_test=False)
    labels = {
        LABEL_RESTORE_NAME: metadata["name"],
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN: RUN_RESTORE,
        "app.kubernetes.io/name": "databaserestore",
    }
    name = restore_job_name(metadata["name"], metadata["uid"])
    return _job_object(restore, RESTORE_KIND, name, labels, {}, pod, backoff_limit=0, spec=spec)


@dataclass(frozen=True)
class ScratchServer:
    """What a restore test's scratch server runs: the database's image (or `verify.image`) as its user."""

    engine: Engine
    image: str
    run_as_user: int | None = None
    run_as_group: int | None = None


# Per engine: port, superuser, how the official images (and ours) take the password, the server's arguments
# (loopback only), and the emptyDirs it writes (data, socket).
_SCRATCH: Final[dict[Engine, tuple[int, str, str, list[str], dict[str, str]]]] = {
    Engine.POSTGRESQL: (
        5432,
        "postgres",
        "POSTGRES_PASSWORD",
        ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        {"scratch-data": "/var/lib/postgresql/data", "scratch-run": "/var/run/postgresql"},
    ),
    Engine.MYSQL: (
        3306,
        "root",
        "MARIADB_ROOT_PASSWORD",
        ["--bind-address=127.0.0.1", "--datadir=/var/lib/mysql/data", "--innodb-flush-log-at-trx-commit=0"],
        {"scratch-data": "/var/lib/mysql", "scratch-run": "/run/mysqld"},
    ),
}


def _with_scratch_server(
    pod: dict[str, Any],
    scratch: ScratchServer,
    spec: DatabaseBackupSpec,
    seed: str,
    *,
    password_variable: str = "DB_PASSWORD",  # noqa: S107 - the name of a variable
    restore_test: bool = True,
) -> None:
    """A throwaway database server beside the check, as a native sidecar (it starts first and is stopped when the
    check ends): the image's own entrypoint initialises it in an emptyDir, it listens on 127.0.0.1 only, so nothing
    outside this Pod reaches it, and the check restores each backup into it (`--restore-test`). Its password is
    derived from the Job (not a secret: it guards a server only this Pod can reach, holding only a restored copy
    for the minutes the check runs); a check's Pod holds no credential of the database's own, and a run's gives the
    scratch password to the runner as `password_variable` (SCRATCH_PASSWORD), beside the database's own. A
    point-in-time restore replays on it (`restore_test` False: no `--restore-test`)."""
    port, user, server_variable, arguments, folders = _SCRATCH[scratch.engine]
    password = hashlib.sha256(f"dbb-scratch/{seed}".encode()).hexdigest()[:24]
    env = [_literal_env(server_variable, password)]
    if scratch.engine is Engine.POSTGRESQL:
        env.append(_literal_env("PGDATA", "/var/lib/postgresql/data/pgdata"))
    security: dict[str, Any] = copy.deepcopy(pod["containers"][0]["securityContext"])  # the runner's restrictions
    if scratch.run_as_user is not None:
        security["runAsUser"] = scratch.run_as_user
    if scratch.run_as_group is not None:
        security["runAsGroup"] = scratch.run_as_group
    mounts = [{"name": name, "mountPath": path} for name, path in folders.items()]
    mounts.append({"name": "scratch-tmp", "mountPath": "/tmp"})  # noqa: S108 - a private emptyDir
    pod["initContainers"] = [
        {
            "name": "scratch-db",
            "image": scratch.image,
            "imagePullPolicy": "IfNotPresent",
            "restartPolicy": "Always",
            "args": arguments,
            "env": env,
            "volumeMounts": mounts,
            "resources": spec.resources.effective(),
            "securityContext": security,
        }
    ]
    pod["volumes"] += [{"name": name, "emptyDir": {}} for name in (*folders, "scratch-tmp")]
    [container] = pod["containers"]
    if restore_test and "--restore-test" not in container["args"]:
        container["args"].append("--restore-test")
    container["args"] += [f"--scratch-port={port}", f"--scratch-user={user}"]
    container["env"].append(_literal_env(password_variable, password))


def _with_user_name(pod: dict[str, Any], spec: DatabaseBackupSpec) -> None:
    """DB_USER, the backup user's name and not its password: a role the recovered copy of the database surely has,
    to ask it (over the replay server's socket, which trusts any role) who its superuser is."""
    connection = spec.connection
    credentials = connection.credentials_secret
    if connection.username is not None:
        variable = _literal_env("DB_USER", connection.username)
    elif credentials is not None:
        variable = _secret_env("DB_USER", credentials.name, credentials.username_key)
    else:
        return
    pod["containers"][0]["env"].append(variable)


def release_slot_job(owner: dict[str, Any], spec: DatabaseBackupSpec, runner: RunnerSettings) -> dict[str, Any]:
    """The Job that drops the PostgreSQL archiver's replication slot (reconciler.slot): the archiver's connection,
    no storage, no key. Named for the generation that let the slot go (deletion, or spec.continuous removed), so
    that a slot taken again and let go later gets a Job of its own. Retried twice: the slot may still be held for
    a moment by the archiver's Pod as it stops; given up after RELEASE_DEADLINE, not held by the caps (it frees
    the server, it never loads it)."""
    metadata = owner["metadata"]
    seed = f"{metadata['uid']}/{metadata.get('generation')}"
    name = f"{metadata['name']}-slot-{hashlib.sha256(seed.encode()).hexdigest()[:5]}"  # 52 + 11 = 63
    pod = pod_spec(owner, spec, runner, release_slot_arguments(spec, owner), release=True)
    labels = {
        LABEL_BACKUP_NAME: metadata["name"],
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN: RUN_RELEASE_SLOT,
        "app.kubernetes.io/name": "databasebackup",
    }
    job = _job_object(owner, KIND, name, labels, {}, pod, backoff_limit=2, spec=spec)
    job["spec"]["activeDeadlineSeconds"] = RELEASE_DEADLINE_SECONDS
    return job


def verification_job_name(name: str, scheduled: datetime) -> str:
    """`<name>-v<unix minute>`: at most 52 + 10 = 62 characters, one Job per verification slot."""
    return f"{name}-v{scheduled_minutes(scheduled)}"


def _job(
    owner: dict[str, Any],
    name: str,
    run: str,
    scheduled: datetime,
    pod: dict[str, Any],
    *,
    backoff_limit: int,
    spec: DatabaseBackupSpec,
    request: str | None = None,
) -> dict[str, Any]:
    metadata = owner["metadata"]
    labels = {
        LABEL_BACKUP_NAME: metadata["name"],
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN: run,
        "app.kubernetes.io/name": "databasebackup",
    }
    annotations = {
        ANNOTATION_SCHEDULED_TIME: rfc3339(scheduled),
        ANNOTATION_CAPS: " ".join(cap_keys(spec, run, metadata)),
    }
    if request is not None:
        annotations[ANNOTATION_BACKUP_NOW] = request
    return _job_object(owner, KIND, name, labels, annotations, pod, backoff_limit=backoff_limit, spec=spec)


def cap_keys(spec: DatabaseBackupSpec, run: str, metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """What a run counts toward under the administrator's caps (reconciler.capacity): a check never connects to the
    database server, so it counts toward all but the server's."""
    namespace = str(metadata["namespace"])
    server = None if run == RUN_VERIFY else (spec.connection.host or spec.database_name)
    if spec.s3_store is not None:
        storage = f"store/{spec.s3_store.store}"
    else:
        storage = f"claim/{namespace}/{spec.claim_name or default_claim_name(spec.database_name)}"
    return keys_of(namespace, server, storage)


def _job_object(
    owner: dict[str, Any],
    kind: str,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    pod: dict[str, Any],
    *,
    backoff_limit: int,
    spec: DatabaseBackupSpec,
) -> dict[str, Any]:
    """A Job in the owner's namespace that the owner (a `kind`) controls, labelled and annotated on the Job and
    on its Pods alike."""
    metadata = owner["metadata"]
    template_metadata: dict[str, Any] = {"labels": labels}
    job_metadata: dict[str, Any] = {"name": name, "namespace": metadata["namespace"], "labels": labels}
    if annotations:
        template_metadata["annotations"] = job_metadata["annotations"] = annotations
    job_metadata["ownerReferences"] = [
        {
            "apiVersion": API_VERSION,
            "kind": kind,
            "name": metadata["name"],
            "uid": metadata["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": job_metadata,
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "template": {"metadata": template_metadata, "spec": pod},
        },
    }


def _s3_env(s3: S3Storage) -> list[dict[str, Any]]:
    """The standard AWS variables: the keys by secretKeyRef (the reconciler reads no Secret), the rest literal, from
    the BackupStore. The store's CA is public PEM text: the runner writes it to a file for AWS_CA_BUNDLE."""
    env: list[dict[str, Any]] = []
    if s3.credentials_secret is not None:
        secret = s3.credentials_secret
        env.append(_secret_env("AWS_ACCESS_KEY_ID", secret.name, secret.access_key_id_key))
        env.append(_secret_env("AWS_SECRET_ACCESS_KEY", secret.name, secret.secret_access_key_key))
    if s3.region:
        env.append(_literal_env("AWS_REGION", s3.region))
    if s3.endpoint:
        env.append(_literal_env("AWS_ENDPOINT_URL", s3.endpoint))
    if s3.ca_bundle is not None:
        env.append(_literal_env(S3_CA_VARIABLE, s3.ca_bundle))
    return env


def _literal_env(name: str, value: str) -> dict[str, Any]:
    """A variable with a literal value, escaped like every argument: the kubelet expands `$(NAME)` in env values
    too, so an unescaped `$(DB_PASSWORD)` in a value would put the password there."""
    return {"name": name, "value": escape_expansion(value)}


def _ca_volume(name: str, ca: SecretKeyRef | ConfigMapKeyRef) -> dict[str, Any]:
    """A CA certificate as a file `ca.crt`, from the Secret or ConfigMap the spec names: the reconciler never reads
    it. A CA certificate is public; it is mounted read-only all the same."""
    items = [{"key": ca.key, "path": "ca.crt"}]
    if isinstance(ca, ConfigMapKeyRef):
        return {"name": name, "configMap": {"name": ca.name, "items": items, "defaultMode": 0o444}}
    return {"name": name, "secret": {"secretName": ca.name, "items": items, "defaultMode": 0o444}}


def _tls_ca_volume(tls: Tls | None) -> dict[str, Any] | None:
    return None if tls is None or tls.ca is None else _ca_volume("tls-ca", tls.ca)


def pod_spec(
    owner: dict[str, Any],
    spec: DatabaseBackupSpec,
    runner: RunnerSettings,
    arguments: list[str],
    *,
    verification: bool = False,
    restore: bool = False,
    archive: bool = False,
    release: bool = False,
) -> dict[str, Any]:
    """A backup run's Pod; with `verification`, a check's: the same storage access (the volume read-only), the
    key, and nothing of the database; with `restore`, a restore's: the volume read-only, the key, and the target's
    connection (`spec.connection`); with `archive`, the archiver's (reconciler.archiver): a run's access, without
    the verification queries' role, restarted whenever it stops; with `release`, the Job that drops the archiver's
    replication slot (reconciler.slot): the connection, and neither storage nor key."""
    env: list[dict[str, Any]] = []
    credentials = None if verification else spec.connection.credentials_secret
    if credentials is not None:
        env.append(_secret_env("DB_PASSWORD", credentials.name, credentials.password_key))
        if spec.connection.username is None:
            env.append(_secret_env("DB_USER", credentials.name, credentials.username_key))
    queries = spec.verify_query_credentials
    if not (verification or restore or archive or release) and spec.verify_queries and queries is not None:
        # verify.queries run as this role, never with the backup's own credentials (docs/security.md).
        env.append(_secret_env(QUERY_USER_VARIABLE, queries.name, queries.username_key))
        env.append(_secret_env(QUERY_PASSWORD_VARIABLE, queries.name, queries.password_key))
    volumes: list[dict[str, Any]] = [
        # The root filesystem is read-only; tools want somewhere to write temporary files.
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir, not a shared /tmp
    ]
    if release:
        pass  # the server only: no backup is read or written
    elif spec.s3 is None:
        claim = spec.claim_name or default_claim_name(spec.database_name)
        volumes.insert(0, {"name": "backups", "persistentVolumeClaim": {"claimName": claim}})
        read_only = {"readOnly": True} if verification or restore else {}
        mounts.insert(0, {"name": "backups", "mountPath": BACKUP_ROOT, **read_only})
    else:
        env += _s3_env(spec.s3)
    if spec.encryption_key is not None and not release:
        # The whole Secret, one file per key named by its id: a run encrypts with the current one (keySecret.key),
        # a check or restore reads each backup with the key its header names, so older keys stay usable.
        volumes.append(
            {
                "name": "encryption-key",
                "secret": {
                    "secretName": spec.encryption_key.name,
                    "defaultMode": 0o400,
                },
            }
        )
        mounts.append({"name": "encryption-key", "mountPath": KEY_MOUNT, "readOnly": True})
    if not verification and (ca_volume := _tls_ca_volume(spec.connection.tls)) is not None:
        volumes.append(ca_volume)
        mounts.append({"name": "tls-ca", "mountPath": TLS_CA_MOUNT, "readOnly": True})
    pod: dict[str, Any] = {
        "restartPolicy": "Always" if archive else "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            # The backup volume is chowned once, not at every run (a volume of many backups takes a while).
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": _container_name(verification=verification, restore=restore, archive=archive, release=release),
                "image": runner.image,
                "imagePullPolicy": runner.image_pull_policy,
                "args": arguments,
                "env": env,
                "volumeMounts": mounts,
                "terminationMessagePath": TERMINATION_LOG,
                # If the runner dies before writing its result, the log's tail says why.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                # One limit covers the runner, the dump tool and the verification's pg_restore (spec.resources).
                "resources": spec.resources.effective(),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": volumes,
    }
    if runner.service_account:
        pod["serviceAccountName"] = runner.service_account
    # The runner needs no API access at all.
    pod["automountServiceAccountToken"] = False
    return pod


def _container_name(*, verification: bool, restore: bool, archive: bool, release: bool) -> str:
    named = {"verify": verification, "restore": restore, "archive": archive, "release-slot": release}
    return next((name for name, chosen in named.items() if chosen), "backup")


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
