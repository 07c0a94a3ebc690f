"""Database servers for the e2e suite: StatefulSets of the locally built Debian images (PostgreSQL 15 and 17,
MariaDB 10.11 and 11.8), seeded with data, and a fingerprint of their content to compare a restore against.

Each server runs as the samples in deploy/samples do: its image's own non-root user, under the restricted Pod
Security Standard, a headless Service, a credentials Secret and a backup PVC named `<name>-backups`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from common.constants import ANNOTATION_BACKUP_NOW, API_VERSION, KIND
from tests.e2e.kube import Kube, wait_for

IMAGE_REGISTRY = os.environ.get("E2E_IMAGE_PREFIX", "dbb.local")


@dataclass(frozen=True)
class Database:
    engine: str  # "postgresql" | "mariadb"
    version: str
    name: str
    namespace: str
    password: str

    @property
    def image(self) -> str:
        repository = "postgres" if self.engine == "postgresql" else "mariadb"
        return f"{IMAGE_REGISTRY}/{repository}:{self.version}"

    @property
    def port(self) -> int:
        return 5432 if self.engine == "postgresql" else 3306

    @property
    def user(self) -> str:
        return "postgres" if self.engine == "postgresql" else "root"

    @property
    def pod(self) -> str:
        return f"{self.name}-0"

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc"


def manifests(
    db: Database, *, database: str | None = "app", server_args: Sequence[str] = (), replication: bool = False
) -> list[dict[str, Any]]:
    """The Secret, Service, StatefulSet and backup PVC of `db`; `server_args` go to the server after ours (for
    MariaDB, mariadbd's options such as `--log-bin=mysql-bin`). `replication` (PostgreSQL): a `replication` line in
    pg_hba.conf, as a WAL archiver needs, from an init script in a ConfigMap (the image's entrypoint runs it)."""
    labels = {"app.kubernetes.io/name": db.name}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{db.name}-credentials", "namespace": db.namespace, "labels": labels},
        "stringData": {"username": db.user, "password": db.password},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": db.name, "namespace": db.namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            "ports": [{"name": "db", "port": db.port, "targetPort": db.port}],
        },
    }
    secret_ref = {"secretKeyRef": {"name": f"{db.name}-credentials", "key": "password"}}
    if db.engine == "postgresql":
        env: list[dict[str, Any]] = [
            {
                "name": "POSTGRES_USER",
                "valueFrom": {"secretKeyRef": {"name": f"{db.name}-credentials", "key": "username"}},
            },
            {"name": "POSTGRES_PASSWORD", "valueFrom": secret_ref},
            {"name": "POSTGRES_DB", "value": database or "postgres"},
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ]
        mount, args = "/var/lib/postgresql/data", []
        probe = ["pg_isready", "-h", "127.0.0.1", "-p", "5432"]
        port_name = "postgres"
    else:
        env = [{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": secret_ref}]
        if database:
            env.append({"name": "MARIADB_DATABASE", "value": database})
        mount, args = "/var/lib/mysql", ["--datadir=/var/lib/mysql/data"]
        probe = ["mariadb-admin", "ping", "-h", "127.0.0.1"]
        port_name = "mysql"
    args = [*args, *server_args]
    container: dict[str, Any] = {
        "name": "db",
        "image": db.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "ports": [{"name": port_name, "containerPort": db.port}],
        "readinessProbe": {"exec": {"command": probe}, "periodSeconds": 2, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": mount}],
    }
    if args:
        container["args"] = args
    volumes: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    if replication:
        init = f"{db.name}-replication"
        extra.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": init, "namespace": db.namespace, "labels": labels},
                "data": {"replication.sh": REPLICATION_INIT},
            }
        )
        volumes.append({"name": "init", "configMap": {"name": init}})
        container["volumeMounts"].append({"name": "init", "mountPath": "/docker-entrypoint-initdb.d"})
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": db.name, "namespace": db.namespace, "labels": labels},
        "spec": {
            "serviceName": db.name,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 999,
                        "runAsGroup": 999,
                        "fsGroup": 999,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    **({"volumes": volumes} if volumes else {}),
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }
    backups = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{db.name}-backups", "namespace": db.namespace, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
    }
    return [secret, *extra, service, statefulset, backups]


# Sourced by the entrypoint after initdb, before the server's real start: replication connections with a password.
REPLICATION_INIT = "printf 'host replication all all scram-sha-256\\n' >> \"$PGDATA/pg_hba.conf\"\n"


def deploy(
    kube: Kube,
    db: Database,
    *,
    database: str | None = "app",
    server_args: Sequence[str] = (),
    replication: bool = False,
) -> None:
    kube.apply(*manifests(db, database=database, server_args=server_args, replication=replication))


@contextlib.contextmanager
def namespace(kube: Kube, name: str, *, restricted: bool = True) -> Iterator[str]:
    """A namespace for one test module, enforcing the restricted Pod Security Standard as a careful admin does."""
    kube.run("create", "namespace", name, check=False)
    if restricted:
        kube("label", "--overwrite", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    try:
        yield name
    finally:
        kube.run("delete", "namespace", name, "--wait=false", check=False)


def running(kube: Kube, db: Database, *, rows: int = 2000, orders: int = 5000) -> Database:
    """Deployed, ready and seeded."""
    deploy(kube, db)
    wait_ready(kube, db)
    seed(kube, db, rows=rows, orders=orders)
    return db


def databasebackup(
    name: str,
    db: Database,
    schedule: str,
    *,
    annotations: dict[str, str] | None = None,
    backup_now: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A DatabaseBackup of `db` (`spec` may name another databaseName); `backup_now` sets the backup-now value."""
    annotations = {**(annotations or {}), **({ANNOTATION_BACKUP_NOW: backup_now} if backup_now else {})}
    metadata: dict[str, Any] = {"name": name, "namespace": db.namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"databaseName": db.name, "schedule": schedule, **spec},
    }


def wait_ready(kube: Kube, db: Database, timeout: float = 300) -> None:
    def ready() -> bool:
        status = kube.get("statefulset", db.name, db.namespace).get("status", {})
        return bool(status.get("readyReplicas") == 1)

    wait_for(f"{db.engine} {db.version} ({db.namespace}/{db.name}) ready", ready, timeout)


def sql(kube: Kube, db: Database, statement: str, database: str = "app") -> str:
    """Run SQL inside the database's own Pod, over TCP with the password the container itself holds (never on
    any command line)."""
    if db.engine == "postgresql":
        script = (
            'PGPASSWORD="$POSTGRES_PASSWORD" exec psql -X -q -v ON_ERROR_STOP=1 -At -h 127.0.0.1 -U "$POSTGRES_USER"'
            ' -d "$0"'
        )
    else:
        script = 'MYSQL_PWD="$MARIADB_ROOT_PASSWORD" exec mariadb -h 127.0.0.1 -u root -N -B "$0"'
    return kube(
        "exec", "-i", "-n", db.namespace, db.pod, "-c", "db", "--", "sh", "-c", script, database, input_text=statement
    )


POSTGRES_SEED = """
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text, joined date NOT NULL);
INSERT INTO customers (name, email, joined)
  SELECT 'customer ' || g || ' — ünïcode ✓', 'c' || g || '@example.test', date '2020-01-01' + g
  FROM generate_series(1, {rows}) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers (id), amount numeric(12, 2),
  payload bytea);
INSERT INTO orders (customer_id, amount, payload)
  SELECT 1 + g % {rows}, g * 1.25, decode(md5(g::text), 'hex') FROM generate_series(1, {orders}) g;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
"""

MARIADB_SEED = """
CREATE TABLE customers (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL, email VARCHAR(200),
  joined DATE NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO customers (name, email, joined)
  SELECT CONCAT('customer ', seq, ' — ünïcode ✓'), CONCAT('c', seq, '@example.test'),
    DATE '2020-01-01' + INTERVAL seq DAY
  FROM seq_1_to_{rows};
CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT, amount DECIMAL(12, 2),
  payload VARBINARY(16), FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=InnoDB;
INSERT INTO orders (customer_id, amount, payload)
  SELECT 1 + seq % {rows}, seq * 1.25, UNHEX(MD5(seq)) FROM seq_1_to_{orders};
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
"""


def seed(kube: Kube, db: Database, rows: int = 2000, orders: int = 5000) -> None:
    template = POSTGRES_SEED if db.engine == "postgresql" else MARIADB_SEED
    sql(kube, db, template.format(rows=rows, orders=orders))


def fingerprint(kube: Kube, db: Database, database: str = "app") -> dict[str, tuple[int, str]]:
    """Every base table's row count and a checksum of all its rows in key order."""
    if db.engine == "postgresql":
        tables = sql(kube, db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1;", database)
        query = (
            "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM public.{t} t;"
        )
    else:
        tables = sql(
            kube,
            db,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_type = 'BASE TABLE' ORDER BY 1;",
            database,
        )
        query = (
            "SET SESSION group_concat_max_len = 1073741824; SELECT CONCAT(COUNT(*), ' ', MD5(COALESCE("
            "GROUP_CONCAT(HEX(CONCAT_WS(',', t.id, t.{cols})) ORDER BY t.id SEPARATOR '|'), ''))) FROM {t} t;"
        )
    result = {}
    for table in tables.split():
        if db.engine == "postgresql":
            line = sql(kube, db, query.format(t=table), database).strip()
        else:
            columns = sql(
                kube,
                db,
                f"SELECT GROUP_CONCAT(column_name ORDER BY ordinal_position) FROM "
                f"information_schema.columns WHERE table_schema = DATABASE() AND table_name = '{table}' "
                "AND column_name <> 'id';",
                database,
            ).strip()
            line = sql(kube, db, query.format(t=table, cols=", t.".join(columns.split(","))), database).strip()
        count, checksum = line.split()
        result[table] = (int(count), checksum)
    return result
