"""The webhook stays part of every apply: its certificate Secret deleted (a rotation) gives a new certificate and an
updated caBundle while admission keeps working, and a rolling restart never makes a `kubectl apply` fail."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import databases
from tests.e2e.conftest import SYSTEM
from tests.e2e.kube import Kube, wait_for

NAMESPACE = "e2e-webhook-availability"
SECRET = "dbb-webhook-tls"


@pytest.fixture(scope="module")
def db(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, NAMESPACE, restricted=False):
        database = databases.Database("postgresql", "15", "app-db", NAMESPACE, "e2e-availability-password")
        databases.deploy(kube, database)
        yield database


def backup(db: databases.Database, name: str, schedule: str, note: str = "") -> dict[str, Any]:
    return databases.databasebackup(name, db, schedule, annotations={"e2e/note": note})


def ca_bundles(kube: Kube) -> set[str]:
    bundles = set()
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        for hook in kube.get(kind, "dbb-webhook")["webhooks"]:
            bundles.add(hook["clientConfig"].get("caBundle", ""))
    return bundles


def secret_ca(kube: Kube) -> str:
    return str(kube.get("secret", SECRET, SYSTEM)["data"]["ca.crt"])


def admission_works(kube: Kube, db: databases.Database, name: str) -> None:
    good = kube.try_apply(backup(db, name, "0 4 * * *"))
    assert good.returncode == 0, good.stderr
    assert kube.get("dbb", name, NAMESPACE)["spec"]["backupPath"] == f"/backups/{db.name}"  # mutated
    bad = kube.try_apply(backup(db, f"{name}-bad", "0 4 * *"))
    assert "denied the request" in bad.stderr  # validated


@contextlib.contextmanager
def applying(kube: Kube, db: databases.Database, name: str) -> Iterator[list[subprocess.CompletedProcess[str]]]:
    """Apply a DatabaseBackup over and over for the block, each through the webhook (failurePolicy Fail: an apply
    whose call to the webhook fails, a TLS handshake with an untrusted certificate included, fails); the results."""
    results: list[subprocess.CompletedProcess[str]] = []
    done = threading.Event()

    def keep_applying() -> None:
        count = 0
        while not done.is_set():
            count += 1
            results.append(kube.try_apply(backup(db, name, "0 5 * * *", note=str(count))))

    worker = threading.Thread(target=keep_applying)
    worker.start()
    try:
        yield results
        # A few more after the change is complete.
        seen = len(results)
        wait_for("applies after the change", lambda: len(results) >= seen + 5, 60)
    finally:
        done.set()
        worker.join()


def assert_none_failed(results: list[subprocess.CompletedProcess[str]], at_least: int) -> None:
    failures = [r.stderr for r in results if r.returncode != 0]
    assert len(results) >= at_least
    assert failures == [], f"{len(failures)} of {len(results)} applies failed: {failures[:3]}"


def test_deleting_the_certificate_secret_rotates_it_and_admission_keeps_working(
    kube: Kube, db: databases.Database
) -> None:
    admission_works(kube, db, "before-rotation")
    old_ca = secret_ca(kube)
    assert all(base64.b64decode(old_ca) in base64.b64decode(b) for b in ca_bundles(kube))
    # Not only before and after: every apply made while the certificate changes is admitted, so every handshake
    # the API server made with a replica found a certificate its caBundle trusted.
    with applying(kube, db, "rotating") as results:
        kube("delete", "secret", SECRET, "-n", SYSTEM)
        deleted = len(results)

        def rotated() -> str | None:
            if not kube.exists("secret", SECRET, SYSTEM):
                return None
            ca = secret_ca(kube)
            return ca if ca != old_ca else None

        new_ca = wait_for("a new certificate Secret", rotated, 120)
        assert base64.b64decode(new_ca).startswith(b"-----BEGIN CERTIFICATE-----")

        def published() -> bool:
            bundles = ca_bundles(kube)
            return all(base64.b64decode(new_ca) in base64.b64decode(b) for b in bundles)

        wait_for("the new CA in both caBundles", published, 120)
        # At least one apply made wholly after the deletion (the one after the one under way), however fast the
        # rotation went.
        wait_for("applies during the rotation", lambda: len(results) >= deleted + 2, 60)
    assert_none_failed(results, at_least=deleted + 2 + 5)
    admission_works(kube, db, "after-rotation")


def test_a_rolling_restart_never_fails_an_apply(kube: Kube, db: databases.Database) -> None:
    with applying(kube, db, "rolling") as results:
        kube("rollout", "restart", "deployment/dbb-webhook", "-n", SYSTEM)
        kube.wait_rollout(SYSTEM, "deployment/dbb-webhook", 300)
    assert_none_failed(results, at_least=10)
