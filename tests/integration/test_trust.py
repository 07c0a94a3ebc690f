"""The trust boundary at apply time (docs/security.md), attacked as the people it is drawn against: an application
team member who may create DatabaseBackups and DatabaseRestores in their namespace and read its StatefulSets, but
not its Secrets. A real RBAC Role on the real API server, every apply made as that user (`kubectl --as`), judged by
the real webhook. Each attack is refused naming the field and the value, and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hack.harness.controlplane import ControlPlane
from tests.fixtures import backup_author_rbac, backup_store, databasebackup, governing_service, statefulset
from tests.integration.conftest import Webhook
from tests.integration.test_webhook import create_database

AUTHOR = "app-developer"
DENIED = 'admission webhook "vdatabasebackup.databases.test.io" denied the request: '
DENIED_RESTORE = 'admission webhook "vdatabaserestore.databases.test.io" denied the request: '


@pytest.fixture
def team(control_plane: ControlPlane, webhook_namespace: str) -> str:
    """The namespace, its database, and a Role for the author: DatabaseBackups and DatabaseRestores, reading
    StatefulSets and Services; no Secrets."""
    namespace = webhook_namespace
    create_database(control_plane, namespace)
    for obj in backup_author_rbac(namespace, AUTHOR):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(obj))
    return namespace


def as_author(control_plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> Any:
    return control_plane.kubectl(
        "apply", f"--as={AUTHOR}", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False
    )


def refused(control_plane: ControlPlane, namespace: str, obj: dict[str, Any], message: str) -> None:
    result = as_author(control_plane, namespace, obj)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr
    kind = "dbr" if obj["kind"] == "DatabaseRestore" else "dbb"
    assert control_plane.kubectl("get", kind, "-n", namespace, "-o", "name").stdout == ""


def test_the_author_can_read_no_secret_and_change_no_store_or_namespace_label(
    control_plane: ControlPlane, team: str
) -> None:
    for verb, what in (
        ("get", ["secrets"]),
        ("create", ["backupstores"]),
        ("update", [f"namespaces/{team}"]),
    ):
        result = control_plane.kubectl("auth", "can-i", verb, *what, f"--as={AUTHOR}", "-n", team, check=False)
        assert result.stdout.strip() == "no", (verb, what)
    assert (
        control_plane.kubectl("auth", "can-i", "create", "databasebackups", f"--as={AUTHOR}", "-n", team).stdout.strip()
        == "yes"
    )


@pytest.mark.parametrize(
    "host",
    [
        "collector.attacker.example",
        "example-db.{ns}.svc.attacker.example",  # a look-alike: the labels after the namespace's must be cluster DNS
        "2130706433",  # 127.0.0.1 to a resolver
        "10.0.0.1",
    ],
)
def test_a_host_that_is_not_a_service_of_the_namespace_gets_no_password(
    control_plane: ControlPlane, team: str, host: str
) -> None:
    host = host.format(ns=team)
    obj = databasebackup(namespace=team, connection={"host": host})
    obj["metadata"]["annotations"] = {"databases.test.io/skip-database-check": "true"}  # skips no host rule
    refused(control_plane, team, obj, DENIED + f'spec.connection.host: "{host}" is not a Service of namespace "{team}"')


def test_a_bucket_is_only_one_the_administrators_opened_to_the_namespace(
    control_plane: ControlPlane, team: str
) -> None:
    # An endpoint of the author's choosing is no field at all: the API server refuses it before the webhook.
    attack = databasebackup(namespace=team, storage={"s3": {"store": "shared", "endpoint": "https://x.example"}})
    refused(control_plane, team, attack, 'unknown field "spec.storage.s3.endpoint"')
    unknown = databasebackup(namespace=team, storage={"s3": {"store": f"no-such-{team}"}})
    refused(control_plane, team, unknown, DENIED + f'spec.storage.s3.store: BackupStore "no-such-{team}" not found')
    closed = backup_store(f"closed-{team}", selector={"matchLabels": {"backups": "on"}})
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(closed))
    try:
        obj = databasebackup(namespace=team, storage={"s3": {"store": f"closed-{team}"}})
        refused(
            control_plane,
            team,
            obj,
            DENIED + f'spec.storage.s3.store: BackupStore "closed-{team}" is not open to namespace "{team}"',
        )
        climbing = databasebackup(namespace=team, storage={"s3": {"store": f"closed-{team}", "prefix": "../other"}})
        refused(control_plane, team, climbing, 'spec.storage.s3.prefix: "../other" must be segments')
        # The administrators open it to the namespace (a label namespace users cannot set): now it is accepted.
        control_plane.kubectl("label", "namespace", team, "backups=on")
        assert as_author(control_plane, team, obj).returncode == 0
    finally:
        control_plane.kubectl("delete", "dbb", "--all", "-n", team)
        control_plane.kubectl("delete", "backupstore", f"closed-{team}")


def test_a_backupstore_that_cannot_work_is_refused_when_the_administrators_apply_it(
    control_plane: ControlPlane, webhook: Webhook
) -> None:
    store = backup_store("plain-http", endpoint="http://s3.storage.svc:8333")
    result = control_plane.kubectl("apply", "-f", "-", input=json.dumps(store), check=False)
    assert result.returncode != 0
    assert (
        'admission webhook "vbackupstore.databases.test.io" denied the request: spec.s3.endpoint: '
        '"http://s3.storage.svc:8333" is plain http'
    ) in result.stderr


def test_the_scratch_server_image_is_the_databases_own_or_one_the_administrators_approved(
    control_plane: ControlPlane, team: str
) -> None:
    verify = {"restoreTest": True, "image": "attacker.example/exfiltrate:1"}
    obj = databasebackup(namespace=team, verify=verify)
    refused(
        control_plane,
        team,
        obj,
        DENIED + 'spec.verify.image: "attacker.example/exfiltrate:1" is neither an image of the database StatefulSet',
    )
    own = databasebackup(namespace=team, verify={"restoreTest": True, "image": "postgres:16"})
    assert as_author(control_plane, team, own).returncode == 0
    control_plane.kubectl("delete", "dbb", "--all", "-n", team)
    control_plane.kubectl(
        "annotate", "namespace", team, "databases.test.io/verify-images=registry.example/postgres:16-debug"
    )
    approved = databasebackup(
        namespace=team, verify={"restoreTest": True, "image": "registry.example/postgres:16-debug"}
    )
    assert as_author(control_plane, team, approved).returncode == 0
    control_plane.kubectl("delete", "dbb", "--all", "-n", team)


def test_queries_never_run_with_the_backups_own_credentials(control_plane: ControlPlane, team: str) -> None:
    verify = {"queries": [{"name": "totals", "sql": "select 1; commit; create table x()", "database": "shop"}]}
    obj = databasebackup(namespace=team, connection={"databases": ["shop"]}, verify=verify)
    refused(control_plane, team, obj, DENIED + "spec.verify.queryCredentialsSecret: is required with queries")


def test_the_data_of_any_statefulset_of_the_namespace_is_no_backup_volume(
    control_plane: ControlPlane, team: str
) -> None:
    ledger = statefulset("ledger-db", team)
    del ledger["status"]
    ledger["spec"]["volumeClaimTemplates"] = [
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
    ]
    control_plane.kubectl("apply", "-n", team, "-f", "-", input=json.dumps(ledger))
    control_plane.kubectl("apply", "-n", team, "-f", "-", input=json.dumps(governing_service(ledger)))
    # A backup of example-db whose volume would be ledger-db's data: refused too, not only the backed-up database's.
    obj = databasebackup(namespace=team, storage={"persistentVolumeClaim": {"claimName": "data-ledger-db-0"}})
    refused(
        control_plane,
        team,
        obj,
        DENIED + 'spec.storage.persistentVolumeClaim.claimName: "data-ledger-db-0" is a data volume of StatefulSet '
        '"ledger-db"',
    )


def restore_of(namespace: str, **target: Any) -> dict[str, Any]:
    return {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseRestore",
        "metadata": {"name": "attack", "namespace": namespace},
        "spec": {"source": {"databaseBackup": "nightly", "file": "/backups/example-db/x.dump"}, "target": target},
    }


def test_a_restore_sends_no_password_or_data_to_a_host_of_the_authors_choosing(
    control_plane: ControlPlane, team: str
) -> None:
    control_plane.kubectl("apply", "-n", team, "-f", "-", input=json.dumps(databasebackup(namespace=team)))
    target = {
        "external": {"host": "collector.attacker.example"},
        "credentialsSecret": {"name": "example-db-credentials"},
    }
    refused(
        control_plane,
        team,
        restore_of(team, **target),
        DENIED_RESTORE
        + f'spec.target.external.host: "collector.attacker.example" is not a Service of namespace "{team}"',
    )


def test_a_database_name_is_never_a_client_option(control_plane: ControlPlane, team: str) -> None:
    control_plane.kubectl("apply", "-n", team, "-f", "-", input=json.dumps(databasebackup(namespace=team)))
    mapping = {"databases": [{"from": "shop", "to": "--init-command=CREATE DATABASE pwned"}]}
    refused(control_plane, team, restore_of(team, **mapping), "spec.target.databases[0].to: Invalid value")
    obj = databasebackup(name="options", namespace=team, connection={"databases": ["--init-command=SELECT 1"]})
    result = as_author(control_plane, team, obj)
    assert result.returncode != 0
    assert "spec.connection.databases[0]: Invalid value" in result.stderr
