"""One set of rules for the webhook and the reconciler's admission guard: each problem names its field and value."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from common.backups.model import Connection, DatabaseBackupSpec, Resources
from common.backups.validation import default_backup_path, normalize_backup_path, validate
from common.names import MAX_NAME_LENGTH, job_name
from common.values import ConfigMapKeyRef, CredentialsSecret, Engine, SecretKeyRef, StoreReference, Tls, TlsMode

GOOD = DatabaseBackupSpec(database_name="example-db", schedule="*/5 * * * *", backup_path="/backups/example-db")


def messages(name: str, spec: DatabaseBackupSpec) -> list[str]:
    return [str(e) for e in validate(name, spec)]


def test_the_original_sample_is_valid() -> None:
    assert messages("databasebackup-sample", GOOD) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"schedule": "*/5 * * *"},
            'spec.schedule: "*/5 * * *" has 4 fields, a schedule needs 5 (minute hour day-of-month month day-of-week)',
        ),
        ({"time_zone": "Mars/Olympus"}, "spec.timeZone: 'Mars/Olympus' is not an IANA time zone name"),
        ({"window": "4 hours"}, 'spec.window: "4 hours" is not a window: give hours and minutes, such as 4h'),
        ({"window": "10m"}, 'spec.window: "10m" is longer than the 5m between two firings of "*/5 * * * *"'),
        ({"database_name": "Example_DB"}, 'spec.databaseName: "Example_DB" is not a StatefulSet name'),
        ({"database_name": "a" * 64}, "spec.databaseName:"),
        ({"backup_path": "backups/db"}, 'spec.backupPath: "backups/db" must be an absolute path inside /backups'),
        ({"backup_path": "/backups/../etc"}, 'spec.backupPath: "/backups/../etc" must not contain ".."'),
        ({"backup_path": "/var/lib/db"}, 'spec.backupPath: "/var/lib/db" is outside /backups'),
        ({"backup_path": "/backupsx/db"}, 'spec.backupPath: "/backupsx/db" is outside /backups'),
        ({"backup_path": "/backups/a\nb"}, "spec.backupPath: '/backups/a\\nb' must not contain control characters"),
        ({"connection": Connection(host="bad host")}, 'spec.connection.host: "bad host" is not a DNS name'),
        (
            {"connection": Connection(credentials_secret=CredentialsSecret("Creds!"))},
            'spec.connection.credentialsSecret.name: "Creds!" is not a valid object name',
        ),
        (
            {"connection": Connection(credentials_secret=CredentialsSecret("c", password_key="pass word"))},
            'spec.connection.credentialsSecret.passwordKey: "pass word" is not a valid Secret key',
        ),
        (
            {"connection": Connection(username="$(DB_PASSWORD)")},
            'spec.connection.username: "$(DB_PASSWORD)" must not contain "$("',
        ),
        (
            {"connection": Connection(username="app\nx")},
            "spec.connection.username: 'app\\nx' must not contain control characters",
        ),
        ({"connection": Connection(username="")}, 'spec.connection.username: "" is empty'),
        (
            {"resources": Resources(requests=(("gpu", "1"),))},
            'spec.resources.requests.gpu: "gpu" is not one of cpu, memory, ephemeral-storage',
        ),
        (
            {"resources": Resources(limits=(("memory", "lots"),))},
            'spec.resources.limits.memory: "lots" is not a positive quantity',
        ),
        (
            {"resources": Resources(requests=(("memory", "2Gi"),), limits=(("memory", "1Gi"),))},
            "spec.resources.requests.memory: is above its limit 1Gi",
        ),
        ({"claim_name": "PVC"}, 'spec.storage.persistentVolumeClaim.claimName: "PVC" is not a valid object name'),
        ({"encryption_key": SecretKeyRef("k", "a/b")}, 'spec.encryption.keySecret.key: "a/b" is not a valid Secret'),
        (
            {"connection": Connection(tls=Tls(TlsMode.VERIFY_FULL))},
            "spec.connection.tls.ca: is required with mode VerifyFull",
        ),
        (
            {"connection": Connection(tls=Tls(TlsMode.REQUIRE, SecretKeyRef("db-tls", "ca.crt")))},
            "spec.connection.tls.ca: is used only with mode VerifyFull, not Require",
        ),
        (
            {"connection": Connection(tls=Tls(ca=ConfigMapKeyRef("DB CA", "ca.crt")))},
            'spec.connection.tls.ca.configMapKeyRef.name: "DB CA" is not a valid object name',
        ),
        (
            {"connection": Connection(tls=Tls(ca=SecretKeyRef("db-tls", "ca/crt")))},
            'spec.connection.tls.ca.secretKeyRef.key: "ca/crt" is not a valid',
        ),
        (
            {"engine": Engine.MYSQL, "connection": Connection(tls=Tls(TlsMode.REQUIRE, require_scram=True))},
            "spec.connection.tls.requireScram: true is for PostgreSQL only; the engine is MySQL",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_field_and_value(change: dict[str, Any], message: str) -> None:
    found = messages("nightly", replace(GOOD, **change))
    assert any(m.startswith(message) for m in found), found


def test_the_schedule_is_checked_in_its_own_time_zone_even_when_the_zone_is_bad() -> None:
    found = messages("nightly", replace(GOOD, time_zone="Nowhere", schedule="0 0 31 2 *"))
    assert [m.split(":")[0] for m in found] == ["spec.timeZone", "spec.schedule"]


@pytest.mark.parametrize("path", ["/backups", "/backups/db", "/backups//db/", "/backups/./db", "/backups/a/b"])
def test_paths_inside_the_backup_volume_are_accepted(path: str) -> None:
    assert messages("nightly", replace(GOOD, backup_path=path)) == []


@pytest.mark.parametrize(
    ("path", "normal"),
    [("/backups//db/", "/backups/db"), ("/backups/./db/./x", "/backups/db/x"), ("/backups", "/backups")],
)
def test_backup_paths_are_normalised(path: str, normal: str) -> None:
    assert normalize_backup_path(path) == normal


def test_the_default_backup_path_is_per_database() -> None:
    assert default_backup_path("example-db") == "/backups/example-db"


def test_a_name_too_long_for_job_names_is_refused() -> None:
    name = "n" * (MAX_NAME_LENGTH + 1)
    assert messages(name, GOOD) == [
        f'metadata.name: "{name}" is 53 characters; at most 52 leave room for the backup Job names '
        "(<name>-<scheduled minute>)"
    ]


def test_the_longest_name_allowed_gives_a_job_name_that_fits_a_label() -> None:
    longest = job_name("n" * MAX_NAME_LENGTH, datetime(2150, 12, 31, 23, 59, tzinfo=UTC))
    assert len(longest) <= 63
    assert (
        job_name("db", datetime(2026, 11, 27, 10, 5, tzinfo=UTC)) == "db-29929565"
    )  # date -d 2026-11-27T10:05:00Z +%s, divided by 60


@pytest.mark.parametrize(
    "tls",
    [
        Tls(TlsMode.VERIFY_FULL, SecretKeyRef("db-tls", "ca.crt"), require_scram=True),
        Tls(TlsMode.VERIFY_FULL, ConfigMapKeyRef("db-ca", "ca.crt")),
        Tls(TlsMode.REQUIRE),
        Tls(TlsMode.DISABLE, require_scram=True),  # SCRAM never sends the password, encrypted or not
    ],
)
def test_tls_settings_that_can_work_are_valid(tls: Tls) -> None:
    spec = replace(GOOD, engine=Engine.POSTGRESQL, connection=Connection(tls=tls))
    assert messages("nightly", spec) == []


def stored(store: str = "shared", prefix: str | None = None) -> DatabaseBackupSpec:
    return replace(GOOD, s3_store=StoreReference(store, prefix))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (stored("Shared Store"), 'spec.storage.s3.store: "Shared Store" is not a valid object name'),
        (stored(prefix="shop/../other"), 'spec.storage.s3.prefix: "shop/../other" must be segments separated by'),
        (stored(prefix="a//b"), 'spec.storage.s3.prefix: "a//b" must be segments separated by single "/"'),
        (stored(prefix="db\n"), "spec.storage.s3.prefix: 'db\\n' must not contain control characters"),
    ],
)
def test_a_bad_store_reference_is_refused_naming_field_and_value(spec: DatabaseBackupSpec, message: str) -> None:
    found = messages("nightly", spec)
    assert any(m.startswith(message) for m in found), found


def test_a_good_store_reference_passes() -> None:
    assert messages("nightly", stored(prefix="ledger/2026")) == []


@pytest.mark.parametrize(
    "name",
    ["--init-command=CREATE DATABASE x", "$(DB_PASSWORD)", "shop db", "dbname=x host=attacker", "-x", "a" * 64, ""],
)
def test_a_database_name_that_a_client_could_read_as_anything_else_is_refused(name: str) -> None:
    spec = replace(GOOD, connection=Connection(databases=(name,)))
    assert [m.split(":")[0] for m in messages("nightly", spec)] == ["spec.connection.databases[0]"]


@pytest.mark.parametrize("name", ["shop", "all", "Ledger_2026", "a$b", "app-db", "_x"])
def test_database_names_as_identifiers_pass(name: str) -> None:
    assert messages("nightly", replace(GOOD, connection=Connection(databases=(name,)))) == []
