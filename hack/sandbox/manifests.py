"""The objects the sandbox creates, as pure functions: the sample database's record, the original sample
DatabaseBackup, and the webhook configurations of `deploy/webhook/webhooks.yaml` pointed at a loopback URL; and a
MariaDB with binary logging whose DatabaseBackup archives continuously to the object store, for point-in-time
restores (`MARIADB`, `PITR_BACKUP`, `MARIADB_HOST`).

No kubelet runs in the sandbox, so the StatefulSet and its Service are records only: the database behind them is
the local PostgreSQL. The sample DatabaseBackup names no connection: the webhook defaults it from the StatefulSet
(`example-db.demo.svc`, port 5432), exactly as for a DatabaseBackup a user applies. No cluster DNS resolves that
name here, so the supervisor gives the reconciler `--local-host-alias example-db.demo.svc=127.0.0.1:<port>`
(`SERVICE_HOST`), and the local executor runs each backup against the local PostgreSQL instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from common.constants import ANNOTATION_BACKUP_NOW, API_VERSION, KIND, STORE_KIND
from hack.harness.controlplane import webhook_registration

__all__ = [
    "BACKUP",
    "BACKUP_NOW",
    "DATABASE",
    "MARIADB",
    "MARIADB_HOST",
    "NAMESPACE",
    "PITR_BACKUP",
    "S3_BACKUP",
    "SERVICE_HOST",
    "as_list",
    "database_objects",
    "mariadb_objects",
    "pitr_backup",
    "ready_status",
    "s3_backup",
    "sample_backup",
    "webhook_registration",
]

NAMESPACE: Final = "demo"
DATABASE: Final = "example-db"
BACKUP: Final = "databasebackup-sample"
SECRET: Final = f"{DATABASE}-credentials"
# The name the webhook gives `spec.connection.host`: `<serviceName>.<namespace>.svc`.
SERVICE_HOST: Final = f"{DATABASE}.{NAMESPACE}.svc"
# The value of the backup-now annotation set at start: the first backup runs within seconds, not at the next
# */5 minute; the schedule then goes on as in the original sample.
BACKUP_NOW: Final = "sandbox-start"
S3_BACKUP: Final = "databasebackup-s3"
S3_CREDENTIALS: Final = "s3-credentials"
S3_STORE: Final = "sandbox-store"
NOTE: Final = "sandbox.databases.test.io/note"
MARIADB: Final = "example-mariadb"
MARIADB_HOST: Final = f"{MARIADB}.{NAMESPACE}.svc"
PITR_BACKUP: Final = "databasebackup-pitr"


def database_objects(password: str, port: int) -> list[dict[str, Any]]:
    """Namespace, credentials Secret, Service and StatefulSet, as `deploy/samples/` has them for a cluster."""
    labels = {"app": DATABASE}
    note = f"a record only: no kubelet runs in the sandbox; the database is the local PostgreSQL at 127.0.0.1:{port}"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {"password": password},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": DATABASE, "namespace": NAMESPACE, "annotations": {NOTE: note}},
            "spec": {"clusterIP": "None", "selector": labels, "ports": [{"name": "postgres", "port": 5432}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": DATABASE, "namespace": NAMESPACE, "annotations": {NOTE: note}},
            "spec": {
                "serviceName": DATABASE,
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "postgres",
                                "image": "postgres:15",
                                "ports": [{"name": "postgres", "containerPort": 5432}],
                                "env": [
                                    {
                                        "name": "POSTGRES_PASSWORD",
                                        "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "password"}},
                                    }
                                ],
                            }
                        ]
                    },
                },
            },
        },
    ]


def ready_status() -> dict[str, Any]:
    """The status a StatefulSet controller would write for the running database (the webhook warns without it)."""
    counts = ("replicas", "readyReplicas", "availableReplicas", "currentReplicas", "updatedReplicas")
    return {"status": dict.fromkeys(counts, 1)}


def sample_backup() -> dict[str, Any]:
    """The original sample (`databaseName`, `schedule`, `backupPath` as the operator-sdk project had them), plus
    the backup-now annotation and a scheduled verification. The connection is the webhook's to default, as for any
    user's DatabaseBackup."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": BACKUP,
            "namespace": NAMESPACE,
            "annotations": {ANNOTATION_BACKUP_NOW: BACKUP_NOW},
        },
        "spec": {
            "databaseName": DATABASE,
            "schedule": "*/5 * * * *",
            "backupPath": f"/backups/{DATABASE}",
            # The three newest backups checked again, as stored, at 30 past every hour (verify-now: at once).
            "verify": {"schedule": "30 * * * *", "backups": 3},
        },
    }


def s3_backup(endpoint: str, bucket: str, keys: dict[str, str]) -> list[dict[str, Any]]:
    """The same database to the sandbox's object store: a BackupStore for it (what a cluster administrator
    approves), the S3 keys in a Secret of the namespace (the store names it), and a DatabaseBackup whose storage is
    that store (every database, `all`, so one object per database), backed up at start too."""
    store = {
        "apiVersion": API_VERSION,
        "kind": STORE_KIND,
        "metadata": {"name": S3_STORE},
        "spec": {
            "s3": {
                "bucket": bucket,
                "endpoint": endpoint,
                "allowInsecure": True,  # plain HTTP on loopback; a real store is https://
                "forcePathStyle": True,
                "region": "us-east-1",
                "credentialsSecret": {"name": S3_CREDENTIALS},
            }
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_CREDENTIALS, "namespace": NAMESPACE},
        "stringData": keys,
    }
    backup = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": S3_BACKUP, "namespace": NAMESPACE, "annotations": {ANNOTATION_BACKUP_NOW: BACKUP_NOW}},
        "spec": {
            "databaseName": DATABASE,
            "schedule": "0 * * * *",
            "connection": {"databases": ["all"]},
            "storage": {"s3": {"store": S3_STORE}},
            "retention": {"keepLast": 24},
        },
    }
    return [store, secret, backup]


def mariadb_objects(user: str, password: str, port: int) -> list[dict[str, Any]]:
    """Credentials Secret, Service and StatefulSet of the sample MariaDB, records as for PostgreSQL: the server is
    the local MariaDB (binary logging on), whose admin user the Secret holds."""
    labels = {"app": MARIADB}
    note = f"a record only: no kubelet runs in the sandbox; the database is the local MariaDB at 127.0.0.1:{port}"
    secret = f"{MARIADB}-credentials"
    password_ref = {"secretKeyRef": {"name": secret, "key": "password"}}
    container = {
        "name": "mariadb",
        "image": "mariadb:11.8",
        "args": ["--log-bin=mysql-bin", "--server-id=1", "--binlog-format=ROW"],
        "ports": [{"name": "mysql", "containerPort": 3306}],
        "env": [{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": password_ref}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {"username": user, "password": password},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": MARIADB, "namespace": NAMESPACE, "annotations": {NOTE: note}},
            "spec": {"clusterIP": "None", "selector": labels, "ports": [{"name": "mysql", "port": 3306}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": MARIADB, "namespace": NAMESPACE, "annotations": {NOTE: note}},
            "spec": {
                "serviceName": MARIADB,
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    ]


def pitr_backup() -> dict[str, Any]:
    """MariaDB's `shop` to the object store, hourly, with continuous archiving: a DatabaseRestore with
    `pointInTime` reaches any second since its first backup (docs/point-in-time.md)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": PITR_BACKUP, "namespace": NAMESPACE, "annotations": {ANNOTATION_BACKUP_NOW: BACKUP_NOW}},
        "spec": {
            "databaseName": MARIADB,
            "schedule": "0 * * * *",
            "connection": {
                "databases": ["shop"],
                "credentialsSecret": {"name": f"{MARIADB}-credentials", "usernameKey": "username"},
            },
            "storage": {"s3": {"store": S3_STORE}},
            "continuous": {"maxLagSeconds": 10},
        },
    }


def as_list(items: Iterable[dict[str, Any]]) -> str:
    """One `kubectl apply -f -` input for several objects."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})
