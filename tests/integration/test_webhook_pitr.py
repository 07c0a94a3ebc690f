"""Continuous archiving and point-in-time restores at `kubectl apply`, through the real webhook: PostgreSQL replays
from a base backup (a dump is refused, naming it; none is pinned: the runner picks); a DatabaseRestore's `pointInTime`
outside what the source reports is refused naming both bounds, and one inside is pinned to the newest backup taken
before it."""

from __future__ import annotations

import json

from hack.harness.controlplane import ControlPlane
from tests.fixtures import databasebackup
from tests.integration.test_webhook import apply, create_database, restore_of

DENIED = 'admission webhook "vdatabaserestore.databases.test.io" denied the request: '
FOLDER = "/backups/example-db"
OLDER, NEWER = f"{FOLDER}/nightly-20261206T020000Z.sql.gz", f"{FOLDER}/nightly-20261207T020000Z.sql.gz"
BASE = f"{FOLDER}/nightly-20261206T015959Z.base.tar.zst"


def archived(control_plane: ControlPlane, namespace: str, backups: list[str], until: str, base: str = "") -> None:
    """What the reconciler would have written: `backups` kept, the newest last backed up (with the base backup
    `base`, PostgreSQL), and an archive from 2026-12-06T02:00:00Z to `until`."""
    last: dict[str, object] = {"file": backups[0], "sha256": "ab" * 32}
    if base:
        last["baseBackup"] = {"file": base, "time": "2026-12-06T02:00:00Z"}
    status = {
        "lastBackup": last,
        "backups": [{"file": file, "size": 10} for file in backups],
        "continuous": {
            "archiver": "nightly-archiver",
            "ready": True,
            "recoverableFrom": "2026-12-06T02:00:00Z",
            "recoverableUntil": until,
        },
    }
    control_plane.kubectl(
        "patch", "dbb", "nightly", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_postgresql_restores_to_a_point_from_a_base_backup_the_runner_picks(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    create_database(control_plane, webhook_namespace)
    backup = databasebackup(namespace=webhook_namespace, connection={"databases": ["shop"]}, continuous={})
    apply(control_plane, backup, webhook_namespace, check=True)
    stored = json.loads(control_plane.kubectl("get", "dbb", "nightly", "-n", webhook_namespace, "-o", "json").stdout)
    assert stored["spec"]["engine"] == "PostgreSQL"
    assert stored["spec"]["continuous"]["maxLagSeconds"] == 60
    archived(control_plane, webhook_namespace, [NEWER], "2026-12-07T08:00:00Z", base=BASE)
    copy = {"databases": [{"from": "shop", "to": "shop_then"}]}

    dump = restore_of(
        webhook_namespace, pointInTime="2026-12-07T03:00:00Z", target=copy,
        source={"databaseBackup": "nightly", "file": NEWER},
    )  # fmt: skip
    result = apply(control_plane, dump, webhook_namespace)
    assert result.returncode == 1
    assert (
        DENIED + f"spec.source.file: '{NEWER}' is a dump, and a WAL replay starts from a base backup"
    ) in result.stderr

    admitted = restore_of(webhook_namespace, pointInTime="2026-12-07T03:00:00Z", target=copy)
    apply(control_plane, admitted, webhook_namespace, check=True)
    stored = json.loads(
        control_plane.kubectl("get", "dbr", "back-to-tuesday", "-n", webhook_namespace, "-o", "json").stdout
    )
    assert "file" not in stored["spec"]["source"]  # the runner picks the base backup that ended before the point
    assert stored["spec"]["pointInTime"] == "2026-12-07T03:00:00Z"


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
    archived(control_plane, webhook_namespace, [NEWER, OLDER], "2026-12-07T08:15:30Z")
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
