"""The typed model reads the wire format, naming every field of the wrong shape; status round-trips."""

from __future__ import annotations

from typing import Any

import pytest

from common.backups.defaults import default_spec
from common.backups.model import (
    Compression,
    ConcurrencyPolicy,
    Condition,
    DatabaseBackupSpec,
    DatabaseBackupStatus,
    LastBackup,
    LastFailure,
    Phase,
    parse_spec,
)
from common.fields import join_errors
from common.values import ConfigMapKeyRef, CredentialsSecret, Engine, SecretKeyRef, Tls, TlsMode

SEED = {"databaseName": "example-db", "schedule": "*/5 * * * *", "backupPath": "/backups/example-db"}


def test_the_original_sample_parses_with_defaults_for_the_rest() -> None:
    spec, errors = parse_spec(SEED)
    assert errors == []
    assert spec == DatabaseBackupSpec(
        database_name="example-db", schedule="*/5 * * * *", backup_path="/backups/example-db"
    )
    assert spec.concurrency_policy is ConcurrencyPolicy.FORBID
    assert spec.compression is Compression.GZIP
    assert (spec.keep_last, spec.successful_jobs_history_limit, spec.failed_jobs_history_limit) == (7, 3, 1)


def test_every_field_of_the_outline_is_read() -> None:
    raw: dict[str, Any] = {
        **SEED,
        "timeZone": "Europe/Berlin",
        "suspend": True,
        "engine": "MySQL",
        "connection": {
            "host": "db.ns.svc",
            "port": 3306,
            "databases": ["app"],
            "credentialsSecret": {"name": "creds", "usernameKey": "user"},
        },
        "storage": {"persistentVolumeClaim": {"claimName": "pvc"}},
        "concurrencyPolicy": "Replace",
        "startingDeadlineSeconds": 300,
        "backoffLimit": 0,
        "activeDeadlineSeconds": 60,
        "successfulJobsHistoryLimit": 5,
        "failedJobsHistoryLimit": 2,
        "retention": {"keepLast": 3},
        "compression": "Zstd",
        "encryption": {"keySecret": {"name": "k"}},
        "verify": {"restoreTest": True},
    }
    spec, errors = parse_spec(raw)
    assert errors == []
    assert spec is not None
    assert spec.engine is Engine.MYSQL
    assert spec.connection.credentials_secret == CredentialsSecret("creds", "user", "password")
    assert spec.connection.databases == ("app",)
    assert spec.claim_name == "pvc"
    assert spec.encryption_key == SecretKeyRef("k", "key")
    assert (spec.backoff_limit, spec.keep_last, spec.restore_test, spec.suspend) == (0, 3, True, True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"suspend": "yes"}, 'spec.suspend: must be a boolean (true or false), not "yes"'),
        ({"schedule": 5}, "spec.schedule: must be a string, not 5"),
        ({"engine": "Oracle"}, 'spec.engine: "Oracle" is not one of PostgreSQL, MySQL'),
        ({"backoffLimit": 1.5}, "spec.backoffLimit: must be a whole number, not 1.5"),
        ({"backoffLimit": True}, "spec.backoffLimit: must be a whole number, not true"),
        ({"backoffLimit": -1}, "spec.backoffLimit: -1 is below the minimum 0"),
        ({"connection": {"port": 0}}, "spec.connection.port: 0 is below the minimum 1"),
        ({"connection": {"port": 65536}}, "spec.connection.port: 65536 is above the maximum 65535"),
        ({"connection": {"databases": "app"}}, 'spec.connection.databases: must be a list of strings, not "app"'),
        ({"connection": {"databases": ["a", 3]}}, "spec.connection.databases[1]: must be a non-empty string, not 3"),
        ({"connection": []}, "spec.connection: must be an object, not []"),
        ({"connection": {"credentialsSecret": {}}}, "spec.connection.credentialsSecret.name: is required"),
        ({"encryption": {}}, "spec.encryption.keySecret: is required"),
        ({"retention": {"keepLast": 0}}, "spec.retention.keepLast: 0 is below the minimum 1"),
        ({"databaseName": ""}, "spec.databaseName: must not be empty"),
        (
            {"connection": {"tls": {"mode": "Prefer"}}},
            'spec.connection.tls.mode: "Prefer" is not one of Disable, Require, VerifyFull',
        ),
        (
            {"connection": {"tls": {"requireScram": "yes"}}},
            'spec.connection.tls.requireScram: must be a boolean (true or false), not "yes"',
        ),
        (
            {"connection": {"tls": {"ca": {}}}},
            "spec.connection.tls.ca: must name exactly one of secretKeyRef or configMapKeyRef",
        ),
        (
            {
                "connection": {
                    "tls": {
                        "ca": {"secretKeyRef": {"name": "a", "key": "k"}, "configMapKeyRef": {"name": "b", "key": "k"}}
                    }
                }
            },
            "spec.connection.tls.ca: must name exactly one of secretKeyRef or configMapKeyRef",
        ),
        (
            {"connection": {"tls": {"ca": {"configMapKeyRef": {"name": "a"}}}}},
            "spec.connection.tls.ca.configMapKeyRef.key: is required",
        ),
        (
            {"retention": {"maxAge": "3m"}},
            'spec.retention.maxAge: "3m" is not a whole number of hours, days or weeks (36h, 90d, 52w)',
        ),
        ({"retention": {"keepDaily": 0}}, "spec.retention.keepDaily: 0 is below the minimum 1"),
        ({"retention": {"keepWeekly": "4"}}, 'spec.retention.keepWeekly: must be a whole number, not "4"'),
    ],
)
def test_a_field_of_the_wrong_shape_is_named_with_its_value(change: dict[str, Any], message: str) -> None:
    _, errors = parse_spec({**SEED, **change})
    assert message in [str(e) for e in errors]


def test_retention_by_calendar_is_read_beside_keep_last() -> None:
    retention = {"keepDaily": 7, "keepWeekly": 4, "keepMonthly": 12, "keepYearly": 3, "maxAge": "400d"}
    spec, errors = parse_spec({**SEED, "retention": retention})
    assert errors == []
    assert spec is not None
    assert (spec.keep_last, spec.keep_daily, spec.keep_weekly, spec.keep_monthly, spec.keep_yearly) == (7, 7, 4, 12, 3)
    assert spec.max_age == "400d"


def test_all_problems_are_reported_at_once() -> None:
    spec, errors = parse_spec({"schedule": 1, "suspend": "no", "compression": "rar"})
    assert spec is None
    assert join_errors(errors) == (
        "4 problems:\n"
        "- spec.databaseName: is required\n"
        "- spec.schedule: must be a string, not 1\n"
        '- spec.suspend: must be a boolean (true or false), not "no"\n'
        '- spec.compression: "rar" is not one of Gzip, Zstd, None'
    )
    assert join_errors(errors[:1]) == "spec.databaseName: is required"


@pytest.mark.parametrize("raw", [None, "spec", 3, ["databaseName"]])
def test_a_spec_that_is_not_an_object_is_refused(raw: object) -> None:
    spec, errors = parse_spec(raw)
    assert spec is None
    assert str(errors[0]).startswith("spec: must be an object, not ")


def test_status_round_trips_through_its_wire_form() -> None:
    status = DatabaseBackupStatus(
        phase=Phase.SUCCEEDED,
        last_backup_time="2026-11-27T10:00:05Z",
        in_progress=False,
        last_schedule_time="2026-11-27T10:00:00Z",
        next_backup_time="2026-11-27T10:05:00Z",
        last_backup=LastBackup(
            "/backups/db/db-20261127T100000Z.dump.gz",
            1234,
            "ab" * 32,
            "5s",
            "2026-11-27T10:00:05Z",
            kept=9,
            kept_by={"last": 7, "daily": 7, "weekly": 4, "newest": 1},
        ),
        last_failure=LastFailure("2026-11-26T10:00:00Z", "DumpFailed", "pg_dump: connection refused"),
        consecutive_failures=0,
        active=("db-29412345",),
        conditions=(Condition("Ready", "True", "Scheduled", "next at 10:05", "2026-11-27T09:00:00Z", 2),),
        observed_generation=2,
    )
    wire = status.to_dict()
    assert wire["lastBackupTime"] == "2026-11-27T10:00:05Z"
    assert wire["inProgress"] is False
    assert wire["active"] == [{"name": "db-29412345"}]
    assert wire["lastBackup"]["keptBy"] == {"last": 7, "daily": 7, "weekly": 4, "newest": 1}
    assert wire["conditions"][0]["observedGeneration"] == 2
    assert DatabaseBackupStatus.from_dict(wire) == status


def test_absent_status_fields_are_null_so_a_merge_patch_clears_them() -> None:
    wire = DatabaseBackupStatus().to_dict()
    assert wire["lastFailure"] is None
    assert wire["nextBackupTime"] is None


@pytest.mark.parametrize("raw", [None, {}, {"phase": "Exploded", "active": "x", "conditions": [1]}, "garbage"])
def test_a_damaged_status_reads_as_pending_and_never_raises(raw: Any) -> None:
    status = DatabaseBackupStatus.from_dict(raw)
    assert status.phase is Phase.PENDING
    assert status.conditions == ()


@pytest.mark.parametrize(
    ("resources", "effective"),
    [
        ({}, {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}),
        (
            {"limits": {"memory": "2Gi", "cpu": 2}},
            {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "2Gi", "cpu": "2"}},
        ),
        # Only one side given: the default of the other side follows it rather than contradict it.
        ({"requests": {"memory": "1Gi"}}, {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}),
        (
            {"limits": {"memory": "64Mi"}},
            {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
        ),
    ],
)
def test_the_runners_resources_are_the_defaults_with_the_users_values_over_them(
    resources: dict[str, Any], effective: dict[str, Any]
) -> None:
    spec, errors = parse_spec({"databaseName": "db", "schedule": "@daily", "resources": resources})
    assert errors == []
    assert spec is not None
    assert spec.resources.effective() == effective


def test_a_resource_that_is_not_a_quantity_names_its_field() -> None:
    _, errors = parse_spec({"databaseName": "db", "schedule": "@daily", "resources": {"limits": {"memory": [1]}}})
    assert [str(e) for e in errors] == ["spec.resources.limits.memory: must be a quantity such as 500m or 1Gi, not [1]"]


@pytest.mark.parametrize(
    ("raw", "tls"),
    [
        (None, None),  # absent: the clients keep their own defaults
        ({}, Tls(mode=TlsMode.VERIFY_FULL)),  # given: VerifyFull unless said otherwise
        (
            {"mode": "VerifyFull", "ca": {"configMapKeyRef": {"name": "db-ca", "key": "ca.crt"}}},
            Tls(TlsMode.VERIFY_FULL, ConfigMapKeyRef("db-ca", "ca.crt")),
        ),
        (
            {"ca": {"secretKeyRef": {"name": "db-tls", "key": "ca.crt"}}, "requireScram": True},
            Tls(TlsMode.VERIFY_FULL, SecretKeyRef("db-tls", "ca.crt"), require_scram=True),
        ),
        ({"mode": "Disable"}, Tls(TlsMode.DISABLE)),
    ],
)
def test_connection_tls_is_read_with_verify_full_as_its_default_mode(raw: Any, tls: Tls | None) -> None:
    connection = {} if raw is None else {"tls": raw}
    spec, errors = parse_spec({**SEED, "connection": connection})
    assert errors == []
    assert spec is not None
    assert spec.connection.tls == tls


def test_a_backup_to_s3_is_defaulted_to_a_prefix_of_its_database_and_no_volume() -> None:
    spec = {"databaseName": "example-db", "schedule": "@daily", "storage": {"s3": {"store": "shared"}}}
    defaulted = default_spec(spec, namespace="shop", statefulset=None)
    assert defaulted["storage"] == {"s3": {"store": "shared", "prefix": "example-db"}}
    assert "backupPath" not in defaulted


def test_a_bucket_is_named_only_through_a_store() -> None:
    storage = {"s3": {"bucket": "b", "endpoint": "https://attacker.example"}}
    _, errors = parse_spec({"databaseName": "db", "schedule": "@daily", "storage": storage})
    assert [e.path for e in errors] == ["spec.storage.s3.bucket", "spec.storage.s3.endpoint", "spec.storage.s3.store"]
    assert errors[0].message.startswith("is not a field of storage.s3: the endpoint, bucket and keys are the")


def test_storage_is_a_volume_or_a_bucket_not_both() -> None:
    storage = {"persistentVolumeClaim": {"claimName": "c"}, "s3": {"store": "b"}}
    _, errors = parse_spec({"databaseName": "db", "schedule": "@daily", "storage": storage})
    assert [str(e) for e in errors] == ["spec.storage: give one of persistentVolumeClaim or s3, not both"]
