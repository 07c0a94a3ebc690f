"""Failures a real cluster produces: a wrong password, and the database Pod deleted in the middle of a dump. Each
ends in phase Failed with a Warning Event, publishes no file, and leaks no secret; the next slot succeeds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import databases
from tests.e2e.conftest import SYSTEM
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pods import read_pvc

NAMESPACE = "e2e-failures"
SENTINEL = "sentinel-wrong-password-4f1c"


@pytest.fixture(scope="module")
def db(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, NAMESPACE):
        yield databases.running(kube, databases.Database("postgresql", "15", "ledger-db", NAMESPACE, "e2e-failures-pw"))


def status_of(kube: Kube, name: str) -> dict[str, Any]:
    status: dict[str, Any] = kube.get("dbb", name, NAMESPACE).get("status", {})
    return status


def published(kube: Kube, db: databases.Database) -> list[str]:
    """The finished backup files on the PVC (not temporary ones, not manifests)."""
    out = read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"ls -A /backups/{db.name} 2>/dev/null || true")
    return [f for f in out.split() if not f.startswith(".") and not f.endswith(".json")]


def test_a_wrong_password_fails_with_a_warning_and_leaks_nothing(kube: Kube, db: databases.Database) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "wrong-credentials", "namespace": NAMESPACE},
            "stringData": {"username": "postgres", "password": SENTINEL},
        },
        databases.databasebackup(
            "wrong-password",
            db,
            "0 0 1 1 *",
            backup_now="1",
            backupPath="/backups/wrong-password",
            connection={"credentialsSecret": {"name": "wrong-credentials", "passwordKey": "password"}},
        ),
    )
    status = wait_for("phase Failed", lambda: (s := status_of(kube, "wrong-password")).get("phase") == "Failed" and s)
    assert status["lastFailure"]["reason"] == "AuthenticationFailed", status["lastFailure"]
    assert status["consecutiveFailures"] >= 1
    assert "lastBackup" not in status or not status["lastBackup"].get("file")
    warnings = [e for e in kube.events(NAMESPACE, "wrong-password") if e["type"] == "Warning"]
    assert any(e["reason"] == "BackupFailed" for e in warnings), warnings

    assert_nowhere(kube, SENTINEL, db)
    out = read_pvc(kube, NAMESPACE, f"{db.name}-backups", "ls -A /backups/wrong-password 2>/dev/null || true")
    assert out.split() == [], out


def assert_nowhere(kube: Kube, sentinel: str, db: databases.Database) -> None:
    """Nowhere the operator writes: the DatabaseBackups and their status, Events, Jobs and their Pods (specs
    included: argv is where the kubelet would have expanded it), and the logs of every Pod but the database's own.
    The database server logs a refused login with its user name ("password authentication failed for user …"):
    that is the server's log, which docs/security.md names under what is not prevented."""
    assert sentinel not in json.dumps(kube.items("databasebackups", NAMESPACE))
    assert sentinel not in json.dumps(kube.items("events", NAMESPACE))
    assert sentinel not in json.dumps(kube.items("jobs", NAMESPACE))
    for namespace in (NAMESPACE, SYSTEM):
        for pod in kube.items("pods", namespace):
            assert sentinel not in json.dumps(pod["spec"])
            if pod["metadata"]["name"] == db.pod:
                continue
            for container in pod["spec"]["containers"]:
                assert sentinel not in kube.logs(namespace, pod["metadata"]["name"], container=container["name"])


def test_a_secret_key_named_as_the_user_name_key_is_never_revealed(kube: Kube, db: databases.Database) -> None:
    # Anyone who may create a DatabaseBackup names the Secret and its keys. Pointing usernameKey at a key that is
    # not a user name must not turn the server's "authentication failed for user ..." into a way to read it.
    sentinel = "sentinel-api-token-9c2e77"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app-secrets", "namespace": NAMESPACE},
            "stringData": {"api-token": sentinel, "password": "not-the-password"},
        },
        databases.databasebackup(
            "token-as-user",
            db,
            "0 0 1 1 *",
            backup_now="1",
            backupPath="/backups/token-as-user",
            connection={"credentialsSecret": {"name": "app-secrets", "usernameKey": "api-token"}},
        ),
    )
    status = wait_for("phase Failed", lambda: (s := status_of(kube, "token-as-user")).get("phase") == "Failed" and s)
    assert status["lastFailure"]["reason"] == "AuthenticationFailed", status["lastFailure"]
    assert "[REDACTED]" in status["lastFailure"]["message"]  # the server did name the user
    assert_nowhere(kube, sentinel, db)


def dump_running(kube: Kube, db: databases.Database) -> bool:
    out = databases.sql(
        kube, db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND state = 'active';"
    )
    return int(out.strip() or 0) > 0


def test_the_database_pod_deleted_mid_dump_fails_and_the_next_slot_succeeds(kube: Kube, db: databases.Database) -> None:
    # Enough data that a dump takes seconds, so it is still running when the Pod goes.
    databases.sql(
        kube,
        db,
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS filler "
        "FROM generate_series(1, 1500000) g;",
    )
    before = set(published(kube, db))
    # backoffLimit 0: with the default retry the Job's second Pod may find the database back already and succeed,
    # which is right for a user but hides the failure this test is about.
    kube.apply(
        databases.databasebackup("interrupted", db, "*/1 * * * *", backupPath="/backups/interrupted", backoffLimit=0)
    )
    wait_for("pg_dump to be running", lambda: dump_running(kube, db), 180, interval=0.3)
    uid = kube.get("pod", db.pod, NAMESPACE)["metadata"]["uid"]
    kube("delete", "pod", db.pod, "-n", NAMESPACE, "--wait=false")

    status = wait_for("phase Failed", lambda: (s := status_of(kube, "interrupted")).get("phase") == "Failed" and s, 240)
    assert status["lastFailure"]["reason"] in ("DumpFailed", "Unreachable", "Interrupted"), status["lastFailure"]
    assert not status.get("lastBackupTime")
    out = read_pvc(kube, NAMESPACE, f"{db.name}-backups", "ls -A /backups/interrupted 2>/dev/null || true")
    assert [f for f in out.split() if not f.startswith(".")] == [], out
    assert set(published(kube, db)) == before

    # The StatefulSet brings the database back; the next slot backs it up.
    wait_for("a new database Pod", lambda: kube.get("pod", db.pod, NAMESPACE)["metadata"]["uid"] != uid, 120)
    databases.wait_ready(kube, db)
    status = wait_for(
        "a later slot to succeed", lambda: (s := status_of(kube, "interrupted")).get("lastBackupTime") and s, 300
    )
    assert status["phase"] in ("Succeeded", "Running", "Scheduled")
    assert status["lastBackup"]["file"].startswith("/backups/interrupted/")
    kube("delete", "dbb", "interrupted", "-n", NAMESPACE)


def test_a_secret_key_that_does_not_exist_fails_the_run_with_the_kubelets_words(
    kube: Kube, db: databases.Database
) -> None:
    """The kubelet retries a container whose Secret key is missing for as long as the Pod lives; the reconciler
    fails the run once the state has lasted its grace, well before the Job's hour."""
    started = time.monotonic()
    kube.apply(
        databases.databasebackup(
            "no-such-key",
            db,
            "0 0 1 1 *",
            backup_now="1",
            backupPath="/backups/no-such-key",
            connection={"credentialsSecret": {"name": f"{db.name}-credentials", "passwordKey": "no-such-key"}},
        ),
    )
    status = wait_for("phase Failed", lambda: (s := status_of(kube, "no-such-key")).get("phase") == "Failed" and s, 300)
    print(f"backup with a missing Secret key: Failed after {time.monotonic() - started:.0f} s")
    failure = status["lastFailure"]
    assert failure["reason"] == "PodConfigError", failure
    assert "CreateContainerConfigError" in failure["message"], failure
    assert "no-such-key" in failure["message"], failure
    assert status["inProgress"] is False
    warnings = [e for e in kube.events(NAMESPACE, "no-such-key") if e["type"] == "Warning"]
    assert any(e["reason"] == "BackupFailed" and "PodConfigError" in e["message"] for e in warnings), warnings
