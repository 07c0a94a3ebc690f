"""The DatabaseBackup API, served by a real kube-apiserver: what kubectl shows and what the schema refuses."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import CRD_NAME, GROUP, PLURAL, VERSION
from common.kube import MERGE_PATCH
from hack.harness.controlplane import ControlPlane
from tests.fixtures import backup_store


def manifest(name: str = "nightly", **spec: Any) -> str:
    body = {
        "databaseName": "example-db",
        "schedule": "*/5 * * * *",
        "backupPath": "/backups/example-db",
        **spec,
    }
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DatabaseBackup",
            "metadata": {"name": name},
            "spec": body,
        }
    )


def test_the_crd_is_established_with_its_names(control_plane: ControlPlane) -> None:
    crd = json.loads(control_plane.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["dbb"]
    assert crd["spec"]["scope"] == "Namespaced"


def test_the_server_reports_the_version_it_was_built_as(control_plane: ControlPlane) -> None:
    status, body = control_plane.get("/version")
    assert status == 200
    assert json.loads(body)["gitVersion"].startswith("v1.34.")


def test_kubectl_get_dbb_shows_the_printer_columns(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest())
    output = control_plane.kubectl("get", "dbb", "-n", namespace).stdout
    header, row = output.splitlines()
    assert header.split() == [
        "NAME",
        "DATABASE",
        "SCHEDULE",
        "LAST",
        "BACKUP",
        "PHASE",
        "NEXT",
        "BACKUP",
        "LAST",
        "VERIFIED",
        "AGE",
    ]
    assert header.index("DATABASE") < header.index("SCHEDULE") < header.index("LAST BACKUP") < header.index("PHASE")
    assert row.split()[:3] == ["nightly", "example-db", "*/5"]


def test_a_databasebackup_round_trips_unchanged(control_plane: ControlPlane, namespace: str) -> None:
    spec: dict[str, Any] = {
        "timeZone": "Europe/Berlin",
        "suspend": True,
        "engine": "PostgreSQL",
        "connection": {
            "host": "example-db.x.svc",
            "port": 5432,
            "databases": ["app", "audit"],
            "credentialsSecret": {"name": "creds", "usernameKey": "u", "passwordKey": "p"},
            "tls": {
                "mode": "VerifyFull",
                "ca": {"configMapKeyRef": {"name": "db-ca", "key": "ca.crt"}},
                "requireScram": True,
            },
        },
        "storage": {"persistentVolumeClaim": {"claimName": "example-db-backups"}},
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 300,
        "backoffLimit": 1,
        "activeDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1,
        "retention": {"keepLast": 7},
        "compression": "Zstd",
        "encryption": {"keySecret": {"name": "backup-key", "key": "key"}},
        "verify": {"restoreTest": True, "schedule": "30 3 * * 0", "backups": 3},
        "resources": {"requests": {"cpu": "250m", "memory": 256}, "limits": {"memory": "2Gi"}},
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(**spec))
    stored = json.loads(control_plane.kubectl("get", "dbb", "nightly", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"] == json.loads(manifest(**spec))["spec"]
    assert stored["metadata"]["generation"] == 1


async def test_status_is_a_separate_subresource(
    control_plane: ControlPlane, namespace: str, api_client: client.ApiClient
) -> None:
    api = client.CustomObjectsApi(api_client)
    body = json.loads(manifest())
    body["status"] = {"phase": "Succeeded"}
    created = await api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    # Status sent with the main resource is dropped...
    assert "status" not in created
    # ...and spec sent to /status is ignored, while status is stored without bumping the generation.
    patch = {
        "spec": {"schedule": "@daily"},
        "status": {"phase": "Scheduled", "inProgress": False, "lastBackupTime": "2026-11-27T10:00:00Z"},
    }
    updated = await api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "nightly", patch, **MERGE_PATCH
    )
    assert updated["spec"]["schedule"] == "*/5 * * * *"
    assert updated["status"]["phase"] == "Scheduled"
    assert updated["metadata"]["generation"] == 1
    respec = await api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "nightly",
        {"spec": {"schedule": "@daily"}},
        **MERGE_PATCH,
    )
    assert respec["metadata"]["generation"] == 2
    assert respec["status"]["phase"] == "Scheduled"
    row = control_plane.kubectl("get", "dbb", "nightly", "-n", namespace, "--no-headers").stdout.split()
    assert row[3:5] == ["<unknown>", "Scheduled"] or "Scheduled" in row


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"schedule": 5},
            'spec.schedule: Invalid value: "integer": spec.schedule in body must be of type string',
        ),
        (
            {"suspend": "yes"},
            'spec.suspend: Invalid value: "string": spec.suspend in body must be of type boolean',
        ),
        (
            {"engine": "Oracle"},
            'spec.engine: Unsupported value: "Oracle": supported values: "PostgreSQL", "MySQL"',
        ),
        ({"compression": "lz4"}, 'spec.compression: Unsupported value: "lz4"'),
        ({"window": "4 hours"}, 'spec.window: Invalid value: "4 hours"'),
        ({"connection": {"port": 70000}}, "spec.connection.port: Invalid value: 70000"),
        ({"retention": {"keepLast": 0}}, "spec.retention.keepLast: Invalid value: 0"),
        ({"databaseName": ""}, 'spec.databaseName: Invalid value: ""'),
        ({"connection": {"tls": {"mode": "Prefer"}}}, 'spec.connection.tls.mode: Unsupported value: "Prefer"'),
        ({"connection": {"tls": {"ca": {}}}}, "spec.connection.tls.ca: Invalid value: 0"),
        (
            {
                "connection": {
                    "tls": {
                        "ca": {"secretKeyRef": {"name": "a", "key": "k"}, "configMapKeyRef": {"name": "b", "key": "k"}}
                    }
                }
            },
            "spec.connection.tls.ca: Too many: 2: must have at most 1 item",
        ),
        (
            {"storage": {"persistentVolumeClaim": {"claimName": "c"}, "s3": {"store": "b"}}},
            "spec.storage: Too many: 2: must have at most 1 item",
        ),
        ({"storage": {"s3": {"prefix": "b"}}}, "spec.storage.s3.store: Required value"),
        ({"connection": {"databases": ["--init-command=x"]}}, "spec.connection.databases[0]: Invalid value"),
    ],
)
def test_the_schema_refuses_wrong_types_naming_the_field(
    control_plane: ControlPlane, namespace: str, spec: dict[str, Any], message: str
) -> None:
    result = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(**spec), check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_missing_required_field_is_named(control_plane: ControlPlane, namespace: str) -> None:
    body = textwrap.dedent(f"""\
        apiVersion: {GROUP}/{VERSION}
        kind: DatabaseBackup
        metadata: {{name: nameless}}
        spec: {{schedule: "@daily"}}
    """)
    result = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=body, check=False)
    assert result.returncode != 0
    assert "spec.databaseName: Required value" in result.stderr


def test_an_unknown_field_is_refused_not_silently_dropped(control_plane: ControlPlane, namespace: str) -> None:
    result = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(scheduel="@daily"), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.scheduel"' in result.stderr


def test_kubectl_explain_teaches_the_api(control_plane: ControlPlane) -> None:
    output = control_plane.kubectl("explain", "databasebackup.spec").stdout
    for field in ("databaseName", "schedule", "backupPath", "timeZone", "retention", "compression"):
        assert field in output
    assert "Kubernetes CronJob syntax" in output
    tls = control_plane.kubectl("explain", "databasebackup.spec.connection.tls").stdout
    for field in ("mode", "ca", "requireScram", "VerifyFull"):
        assert field in tls


def test_a_tls_object_without_a_mode_is_stored_as_verify_full(control_plane: ControlPlane, namespace: str) -> None:
    tls = {"ca": {"secretKeyRef": {"name": "db-tls", "key": "ca.crt"}}}
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(connection={"tls": tls}))
    stored = json.loads(control_plane.kubectl("get", "dbb", "nightly", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["connection"]["tls"] == {**tls, "mode": "VerifyFull", "requireScram": False}


async def test_kubernetes_asyncio_lists_databasebackups(
    control_plane: ControlPlane, namespace: str, api_client: client.ApiClient
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("a"))
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("b"))
    api = client.CustomObjectsApi(api_client)
    listed = await api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == ["a", "b"]
    with pytest.raises(ApiException) as caught:
        await api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "c")
    assert caught.value.status == 404


def test_a_backup_to_s3_names_a_store_and_only_a_store(control_plane: ControlPlane, namespace: str) -> None:
    s3 = {"store": "shared", "prefix": "ledger"}
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(storage={"s3": s3}))
    stored = json.loads(control_plane.kubectl("get", "dbb", "nightly", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["storage"] == {"s3": s3}
    explained = control_plane.kubectl("explain", "databasebackups.spec.storage.s3").stdout
    assert "BackupStore" in explained
    # The endpoint, bucket and keys are the store's: a DatabaseBackup cannot name them at all.
    attack = {"store": "shared", "endpoint": "https://collector.attacker.example"}
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest(storage={"s3": attack}), check=False
    )
    assert result.returncode != 0
    assert 'unknown field "spec.storage.s3.endpoint"' in result.stderr


def test_a_backup_store_is_cluster_scoped_and_kubectl_explain_describes_it(control_plane: ControlPlane) -> None:
    store = backup_store("crd-round-trip", caBundle="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(store))
    try:
        stored = json.loads(control_plane.kubectl("get", "backupstore", "crd-round-trip", "-o", "json").stdout)
        assert stored["spec"] == store["spec"]
        assert "namespace" not in stored["metadata"]
        explained = control_plane.kubectl("explain", "backupstores.spec").stdout
        for field in ("s3", "prefix", "namespaceSelector"):
            assert field in explained
    finally:
        control_plane.kubectl("delete", "backupstore", "crd-round-trip")
