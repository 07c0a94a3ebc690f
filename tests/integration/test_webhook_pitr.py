"""Continuous archiving and point-in-time restores at `kubectl apply`, through the real webhook: PostgreSQL is
refused `spec.continuous` saying what to do; a DatabaseRestore's `pointInTime` outside what the source reports is
refused naming both bounds, and one inside is pinned to the newest backup taken before it."""

from __future__ import annotations

import json

from hack.harness.controlplane import ControlPlane
from tests.fixtures import databasebackup
from tests.integration.test_webhook import apply, create_database, restore_of

DENIED = 'admission webhook "vdatabaserestore.databases.test.io" denied the request: '
FOLDER = "/backups/example-db"
OLDER, NEWER = f"{FOLDER}/nightly-20261206T020000Z.sql.gz", f"{FOLDER}/nightly-20261207T020000Z.sql.gz"


def test_postgresql_cannot_archive_continuously_yet(control_plane: ControlPlane, webhook_namespace: str) -> None:
    create_database(control_plane, webhook_namespace)
    result = apply(control_plane, databasebackup(namespace=webhook_namespace, continuous={}), webhook_namespace)
    assert result.returncode == 1
    assert "spec.continuous: is for MySQL/MariaDB only in this version" in result.stderr


def test_a_point_in_time_is_judged_against_the_archive_at_apply(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    create_database(
        control_plane,
        webhook_namespace,
        image="mariadb:11.8",
        env=[{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "root"}}}],
        ports=[{"name": "mysql", "containerPort": 3306}],
    )
    backup = databasebackup(namespace=webhook_namespace, connection={"databases": ["shop"]}, continuous={})
    apply(control_plane, backup, webhook_namespace, check=True)
    status = {
        "lastBackup": {"file": NEWER, "sha256": "ab" * 32},
        "backups": [{"file": NEWER, "size": 10}, {"file": OLDER, "size": 10}],
        "continuous": {
            "archiver": "nightly-archiver",
            "ready": True,
            "recoverableFrom": "2026-12-06T02:00:00Z",
            "recoverableUntil": "2026-12-07T08:15:30Z",
        },
    }
    control_plane.kubectl(
        "patch", "dbb", "nightly", "-n", webhook_namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    copy = {"databases": [{"from": "shop", "to": "shop_then"}]}

    late = restore_of(webhook_namespace, pointInTime="2026-12-07T09:00:00Z", target=copy)
    result = apply(control_plane, late, webhook_namespace)
    assert result.returncode == 1
    assert (
        DENIED + "spec.pointInTime: '2026-12-07T09:00:00Z' is outside what DatabaseBackup 'nightly' can restore to: "
        "from 2026-12-06T02:00:00Z to 2026-12-07T08:15:30Z"
    ) in result.stderr

    apply(control_plane, restore_of(webhook_namespace, pointInTime="2026-12-07T01:59:59Z", target=copy),
          webhook_namespace, check=True)  # fmt: skip
    stored = json.loads(
        control_plane.kubectl("get", "dbr", "back-to-tuesday", "-n", webhook_namespace, "-o", "json").stdout
    )
    assert stored["spec"]["source"]["file"] == OLDER  # the newer one was taken after that second
    assert stored["spec"]["pointInTime"] == "2026-12-07T01:59:59Z"
