"""kubectl apply through the real API server and the real webhook: denials, warnings and defaults as users see them."""

from __future__ import annotations

import json
from typing import Any

from hack.harness.controlplane import ControlPlane
from tests.fixtures import databasebackup, governing_service, statefulset
from tests.integration.conftest import Webhook

DENIED = 'admission webhook "vdatabasebackup.databases.test.io" denied the request: '


def apply(control_plane: ControlPlane, obj: dict[str, Any], namespace: str, *, check: bool = False) -> Any:
    return control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=check)


def create_database(control_plane: ControlPlane, namespace: str, **options: Any) -> None:
    sts = statefulset(namespace=namespace, **options)
    del sts["status"]  # status is not accepted on create; no controller runs to set it
    apply(control_plane, sts, namespace, check=True)
    apply(control_plane, governing_service(sts), namespace, check=True)


def get(control_plane: ControlPlane, namespace: str, name: str = "nightly") -> dict[str, Any]:
    result = control_plane.kubectl("get", "dbb", name, "-n", namespace, "-o", "json")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_a_bad_schedule_is_refused_at_apply_with_the_field_and_value(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    create_database(control_plane, webhook_namespace)
    result = apply(control_plane, databasebackup(namespace=webhook_namespace, schedule="*/5 * * *"), webhook_namespace)
    assert result.returncode == 1
    assert (
        DENIED + 'spec.schedule: "*/5 * * *" has 4 fields, a schedule needs 5 (minute hour day-of-month month '
        "day-of-week)"
    ) in result.stderr
    assert control_plane.kubectl("get", "dbb", "-n", webhook_namespace, "-o", "name").stdout == ""


def test_a_window_longer_than_the_schedules_gap_is_refused_at_apply_and_a_fitting_one_kept(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    create_database(control_plane, webhook_namespace)
    hourly = databasebackup(namespace=webhook_namespace, schedule="0 * * * *", window="90m")
    result = apply(control_plane, hourly, webhook_namespace)
    assert result.returncode == 1
    assert (
        DENIED + 'spec.window: "90m" is longer than the 1h between two firings of "0 * * * *": the windows would '
        "overlap"
    ) in result.stderr
    nightly = databasebackup(namespace=webhook_namespace, schedule="0 1 * * *", window="4h")
    assert apply(control_plane, nightly, webhook_namespace).returncode == 0
    assert get(control_plane, webhook_namespace)["spec"]["window"] == "4h"


def test_every_problem_is_listed_in_one_refusal(control_plane: ControlPlane, webhook_namespace: str) -> None:
    create_database(control_plane, webhook_namespace)
    obj = databasebackup(
        namespace=webhook_namespace, schedule="0 0 * * 7", timeZone="Mars/Olympus", backupPath="/etc/backups"
    )
    result = apply(control_plane, obj, webhook_namespace)
    assert result.returncode == 1
    assert DENIED + "3 problems:" in result.stderr
    assert "- spec.timeZone: 'Mars/Olympus' is not an IANA time zone name" in result.stderr
    assert '- spec.schedule: "0 0 * * 7" day-of-week 7 is out of range 0-6 or SUN-SAT' in result.stderr
    assert '- spec.backupPath: "/etc/backups" is outside /backups' in result.stderr


def test_a_missing_database_is_refused(control_plane: ControlPlane, webhook_namespace: str) -> None:
    result = apply(control_plane, databasebackup(namespace=webhook_namespace, databaseName="nope"), webhook_namespace)
    assert result.returncode == 1
    assert DENIED + f'spec.databaseName: StatefulSet "nope" not found in namespace "{webhook_namespace}"' in (
        result.stderr
    )


def test_the_annotation_lets_gitops_apply_the_backup_before_the_database(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    obj = databasebackup(namespace=webhook_namespace, databaseName="later-db")
    obj["metadata"]["annotations"] = {"databases.test.io/skip-database-check": "true"}
    result = apply(control_plane, obj, webhook_namespace, check=True)
    assert f'Warning: spec.databaseName: StatefulSet "later-db" not found in namespace "{webhook_namespace}"' in (
        result.stderr
    )
    assert "databasebackup.databases.test.io/nightly created" in result.stdout


def test_a_database_created_a_moment_ago_is_found(control_plane: ControlPlane, webhook_namespace: str) -> None:
    # No wait between the two: the webhook's watch may not have seen the StatefulSet yet; the live GET has.
    create_database(control_plane, webhook_namespace, name="fresh-db")
    result = apply(
        control_plane,
        databasebackup(namespace=webhook_namespace, databaseName="fresh-db"),
        webhook_namespace,
        check=True,
    )
    assert "created" in result.stdout


def test_defaults_are_written_into_the_stored_object(control_plane: ControlPlane, webhook_namespace: str) -> None:
    create_database(control_plane, webhook_namespace)
    result = apply(control_plane, databasebackup(namespace=webhook_namespace), webhook_namespace, check=True)
    # No controller runs here, so the StatefulSet never has a ready replica: the warning says so.
    assert 'Warning: spec.databaseName: StatefulSet "example-db" has no ready replica' in result.stderr
    spec = get(control_plane, webhook_namespace)["spec"]
    assert spec == {
        "databaseName": "example-db",
        "schedule": "*/5 * * * *",
        # From the webhook: derived from databaseName and the StatefulSet.
        "backupPath": "/backups/example-db",
        "storage": {"persistentVolumeClaim": {"claimName": "example-db-backups"}},
        "engine": "PostgreSQL",
        "connection": {
            "host": f"example-db.{webhook_namespace}.svc",
            "port": 5432,
            "username": "postgres",
            "credentialsSecret": {"name": "example-db-credentials", "passwordKey": "password"},
        },
        # From the CRD schema: the API server applies these even without the webhook.
        "timeZone": "Etc/UTC",
        "suspend": False,
        "concurrencyPolicy": "Forbid",
        "backoffLimit": 1,
        "activeDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1,
        "retention": {"keepLast": 7},
        "compression": "Gzip",
        "verify": {"restoreTest": False},
    }


def test_applying_the_same_object_again_changes_nothing(control_plane: ControlPlane, webhook_namespace: str) -> None:
    create_database(control_plane, webhook_namespace)
    obj = databasebackup(namespace=webhook_namespace, backupPath="/backups//example-db/")
    apply(control_plane, obj, webhook_namespace, check=True)
    first = get(control_plane, webhook_namespace)
    assert first["spec"]["backupPath"] == "/backups/example-db"
    result = apply(control_plane, obj, webhook_namespace, check=True)
    again = get(control_plane, webhook_namespace)
    assert again["metadata"]["generation"] == first["metadata"]["generation"] == 1
    assert "configured" in result.stdout or "unchanged" in result.stdout


def test_a_backup_of_a_deleted_database_can_still_be_suspended(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    create_database(control_plane, webhook_namespace)
    apply(control_plane, databasebackup(namespace=webhook_namespace), webhook_namespace, check=True)
    control_plane.kubectl("delete", "statefulset", "example-db", "-n", webhook_namespace)
    result = apply(control_plane, databasebackup(namespace=webhook_namespace, suspend=True), webhook_namespace)
    assert result.returncode == 0, result.stderr
    assert get(control_plane, webhook_namespace)["spec"]["suspend"] is True


def test_status_writes_never_reach_the_webhook(
    control_plane: ControlPlane, webhook_namespace: str, webhook: Webhook
) -> None:
    create_database(control_plane, webhook_namespace)
    apply(control_plane, databasebackup(namespace=webhook_namespace), webhook_namespace, check=True)
    before = webhook.counter("validate") + webhook.counter("mutate")
    control_plane.kubectl(
        "patch",
        "dbb",
        "nightly",
        "-n",
        webhook_namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Scheduled"}}',
    )
    assert webhook.counter("validate") + webhook.counter("mutate") == before
    assert get(control_plane, webhook_namespace)["status"]["phase"] == "Scheduled"


def test_other_namespaces_are_not_judged(control_plane: ControlPlane, namespace: str, webhook: Webhook) -> None:
    # The test fixture's namespace selector at work: without it every other test's object would be refused.
    before = webhook.counter("validate")
    apply(control_plane, databasebackup(namespace=namespace, databaseName="nope"), namespace, check=True)
    assert webhook.counter("validate") == before


# --- the backup volume is never the database's own data -----------------------------------------------------------

CLAIM = "spec.storage.persistentVolumeClaim.claimName"


def refused_with_claim(control_plane: ControlPlane, namespace: str, claim: str) -> str:
    """Applies a DatabaseBackup whose backup claim is `claim`; it must be refused. What kubectl printed."""
    obj = databasebackup(namespace=namespace, storage={"persistentVolumeClaim": {"claimName": claim}})
    result = apply(control_plane, obj, namespace)
    assert result.returncode == 1, result.stdout
    assert control_plane.kubectl("get", "dbb", "-n", namespace, "-o", "name").stdout == ""
    return str(result.stderr)


def test_a_data_claim_of_the_database_is_refused(control_plane: ControlPlane, webhook_namespace: str) -> None:
    sts = statefulset(namespace=webhook_namespace)
    del sts["status"]
    sts["spec"]["volumeClaimTemplates"] = [
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
    ]
    apply(control_plane, sts, webhook_namespace, check=True)
    apply(control_plane, governing_service(sts), webhook_namespace, check=True)
    assert (
        DENIED + f'{CLAIM}: "data-example-db-0" is a data volume of StatefulSet "example-db" (its volumeClaimTemplate '
        '"data"); backups need a claim of their own'
    ) in refused_with_claim(control_plane, webhook_namespace, "data-example-db-0")


def test_a_claim_a_pod_of_the_database_mounts_is_refused(control_plane: ControlPlane, webhook_namespace: str) -> None:
    create_database(control_plane, webhook_namespace)
    uid = json.loads(
        control_plane.kubectl("get", "statefulset", "example-db", "-n", webhook_namespace, "-o", "json").stdout
    )["metadata"]["uid"]
    # No controller-manager runs here: the Pod the StatefulSet controller would have made, by hand, mounting a claim
    # the current template no longer names (as an older revision's Pod does during a rolling update).
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "example-db-0",
            "labels": {"app": "example-db", "statefulset.kubernetes.io/pod-name": "example-db-0"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "example-db", "uid": uid, "controller": True}
            ],
        },
        "spec": {
            "containers": [{"name": "db", "image": "postgres:16"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "old-data"}}],
        },
    }
    apply(control_plane, pod, webhook_namespace, check=True)
    assert (
        DENIED + f'{CLAIM}: "old-data" is mounted by Pod "example-db-0" of a StatefulSet; backups need a '
        "claim of their own"
    ) in refused_with_claim(control_plane, webhook_namespace, "old-data")
    # The Pod's other claims are not the backup's: a claim of its own passes.
    obj = databasebackup(namespace=webhook_namespace, storage={"persistentVolumeClaim": {"claimName": "backups"}})
    assert apply(control_plane, obj, webhook_namespace).returncode == 0


def test_a_host_outside_the_namespace_needs_the_namespace_label(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    create_database(control_plane, webhook_namespace)
    obj = databasebackup(namespace=webhook_namespace, connection={"host": "collector.attacker.example"})
    result = apply(control_plane, obj, webhook_namespace)
    assert result.returncode == 1
    assert (
        DENIED + 'spec.connection.host: "collector.attacker.example" is not a Service of namespace '
        f'"{webhook_namespace}", and the password is sent there: label the namespace '
        'databases.test.io/allow-external-hosts="true" (cluster administrators can) to allow it'
    ) in result.stderr
    # An ExternalName Service of the namespace is a CNAME to anywhere: no better.
    external = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "alias", "namespace": webhook_namespace},
        "spec": {"type": "ExternalName", "externalName": "collector.attacker.example"},
    }
    apply(control_plane, external, webhook_namespace, check=True)
    obj = databasebackup(namespace=webhook_namespace, connection={"host": f"alias.{webhook_namespace}.svc"})
    assert (
        'Service "alias" is an ExternalName (to "collector.attacker.example")'
        in apply(control_plane, obj, webhook_namespace).stderr
    )
    control_plane.kubectl(
        "label", "namespace", webhook_namespace, "databases.test.io/allow-external-hosts=true", check=True
    )
    apply(control_plane, obj, webhook_namespace, check=True)


def restore_of(namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseRestore",
        "metadata": {"name": "back-to-tuesday", "namespace": namespace},
        "spec": {"source": {"databaseBackup": "nightly"}, **spec},
    }


def test_a_restore_onto_the_protected_database_without_replace_is_refused_at_apply(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    create_database(control_plane, webhook_namespace)
    backup = databasebackup(namespace=webhook_namespace, connection={"databases": ["shop"]})
    apply(control_plane, backup, webhook_namespace, check=True)
    denied = 'admission webhook "vdatabaserestore.databases.test.io" denied the request: '

    # No backup yet: nothing to restore.
    result = apply(control_plane, restore_of(webhook_namespace, replace=True), webhook_namespace)
    assert result.returncode == 1
    assert denied + "spec.source.databaseBackup: DatabaseBackup 'nightly' has no backup yet" in result.stderr

    file = "/backups/example-db/nightly-20261201T020000Z.dump.gz"
    control_plane.kubectl(
        "patch", "dbb", "nightly", "-n", webhook_namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"lastBackup": {"file": file, "sha256": "ab" * 32}}}),
    )  # fmt: skip
    result = apply(control_plane, restore_of(webhook_namespace), webhook_namespace)
    assert result.returncode == 1
    assert (
        denied + "spec.replace: false, and the restore would overwrite 'shop' on StatefulSet 'example-db', which "
        "DatabaseBackup 'nightly' backs up and which exists"
    ) in result.stderr
    assert control_plane.kubectl("get", "dbr", "-n", webhook_namespace, "-o", "name").stdout == ""

    # Under another name it is accepted, pinned to the newest backup, and its spec can no longer change.
    renamed = restore_of(webhook_namespace, target={"databases": [{"from": "shop", "to": "shop_copy"}]})
    apply(control_plane, renamed, webhook_namespace, check=True)
    stored = json.loads(
        control_plane.kubectl("get", "dbr", "back-to-tuesday", "-n", webhook_namespace, "-o", "json").stdout
    )
    assert stored["spec"]["source"]["file"] == file
    assert stored["spec"]["target"]["databaseName"] == "example-db"
    assert stored["spec"]["replace"] is False
    changed = restore_of(webhook_namespace, replace=True, target={"databases": [{"from": "shop", "to": "x"}]})
    result = apply(control_plane, changed, webhook_namespace)
    assert result.returncode == 1
    assert "spec is immutable" in result.stderr
    control_plane.kubectl("delete", "dbr", "--all", "-n", webhook_namespace)

    # Into a server that is no StatefulSet: its Secret is required, the host rule applies as to any host (the
    # password and the decrypted backup go there), and no StatefulSet is pinned.
    external: dict[str, Any] = {"external": {"host": "rebuilt.db.example.net", "port": 6432}}
    result = apply(control_plane, restore_of(webhook_namespace, target=external), webhook_namespace)
    assert result.returncode == 1
    assert "spec.target.credentialsSecret: is required with external" in result.stderr
    external["credentialsSecret"] = {"name": "rebuilt-credentials"}
    result = apply(control_plane, restore_of(webhook_namespace, target=external), webhook_namespace)
    assert result.returncode == 1
    assert (
        denied + 'spec.target.external.host: "rebuilt.db.example.net" is not a Service of namespace '
        f'"{webhook_namespace}", and the password is sent there'
    ) in result.stderr
    control_plane.kubectl(
        "label", "namespace", webhook_namespace, "databases.test.io/allow-external-hosts=true", check=True
    )
    apply(control_plane, restore_of(webhook_namespace, target=external, noOwner=True), webhook_namespace, check=True)
    stored = json.loads(
        control_plane.kubectl("get", "dbr", "back-to-tuesday", "-n", webhook_namespace, "-o", "json").stdout
    )
    assert stored["spec"]["source"]["file"] == file
    assert "databaseName" not in stored["spec"]["target"]
    assert stored["spec"]["noOwner"] is True
    control_plane.kubectl("delete", "dbr", "--all", "-n", webhook_namespace)
