"""Encryption keys rotate, on a real cluster: the kubelet projects the whole key Secret (its `..data` links and all)
into each Job. A backup with key 2026-11, a rotation to 2026-12 by editing keySecret.key, a second backup; status
lists both with the key each needs; the old one restores through a DatabaseRestore; then 2026-11 leaves the Secret
and the next check fails the old backup with KeyMissing while the new one passes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from common.constants import ANNOTATION_BACKUP_NOW, ANNOTATION_VERIFY_NOW, LABEL_BACKUP_NAME, LABEL_RUN, RUN_BACKUP
from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for

NAMESPACE = "e2e-keys"
OWNER = "rotated"
KEYS = {"2026-11": os.urandom(32).hex(), "2026-12": os.urandom(32).hex()}


@pytest.fixture(scope="module")
def server(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, NAMESPACE):
        db = databases.Database("postgresql", "17", "keys-db", NAMESPACE, "keys-db-password")
        databases.running(kube, db, rows=100, orders=300)
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "backup-keys", "namespace": NAMESPACE},
                "stringData": KEYS,
            }
        )
        yield db


def backed_up(kube: Kube, after: str | None) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        status: dict[str, Any] = kube.get("dbb", OWNER, NAMESPACE).get("status", {})
        assert status.get("phase") != "Failed", status.get("lastFailure")
        last = status.get("lastBackup")
        return status if last and last.get("sha256") and last["file"] != after else None

    return wait_for("a backup", found, 300)


def test_a_rotated_key_keeps_old_backups_restorable_and_a_removed_one_is_flagged(
    kube: Kube, server: databases.Database
) -> None:
    spec: dict[str, Any] = {"connection": {"databases": ["app"]}, "verify": {"schedule": "0 0 1 1 *", "backups": 1}}
    encryption = {"keySecret": {"name": "backup-keys", "key": "2026-11"}}
    kube.apply(databases.databasebackup(OWNER, server, "0 0 1 1 *", backup_now="1", encryption=encryption, **spec))
    first = backed_up(kube, None)["lastBackup"]["file"]
    rotate = {
        "metadata": {"annotations": {ANNOTATION_BACKUP_NOW: "2"}},
        "spec": {"encryption": {"keySecret": {"name": "backup-keys", "key": "2026-12"}}},
    }
    kube("patch", "dbb", OWNER, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(rotate))
    status = backed_up(kube, first)
    second = status["lastBackup"]["file"]
    assert [(b["file"], b["keyId"], b["encrypted"]) for b in status["backups"]] == [
        (second, "2026-12", True),
        (first, "2026-11", True),
    ]
    job = kube.items("jobs", NAMESPACE, f"{LABEL_BACKUP_NAME}={OWNER},{LABEL_RUN}={RUN_BACKUP}")[-1]
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "encryption-key")
    assert "items" not in volume["secret"]  # the whole Secret: every key, for the reads
    assert not any(key in json.dumps(kube.items("jobs", NAMESPACE)) for key in KEYS.values())

    # The old backup, written with the key that is no longer current, restores with identical content.
    restore = "old-key-restore"
    kube.apply(
        {
            "apiVersion": "databases.test.io/v1",
            "kind": "DatabaseRestore",
            "metadata": {"name": restore, "namespace": NAMESPACE},
            "spec": {
                "source": {"databaseBackup": OWNER, "file": first},
                "target": {"databaseName": server.name, "databases": [{"from": "app", "to": "app_old_key"}]},
            },
        }
    )

    def finished() -> dict[str, Any] | None:
        found: dict[str, Any] = kube.get("dbr", restore, NAMESPACE).get("status", {})
        return found if found.get("phase") in ("Succeeded", "Failed") else None

    restored = wait_for("the restore of the old backup", finished, 300)
    assert restored["phase"] == "Succeeded", restored
    assert databases.fingerprint(kube, server, "app_old_key") == databases.fingerprint(kube, server)

    # 2026-11 leaves the Secret: the next check names the old backup and the key it needs.
    kube(
        "patch",
        "secret",
        "backup-keys",
        "-n",
        NAMESPACE,
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/data/2026-11"}]',
    )
    kube(
        "patch",
        "dbb",
        OWNER,
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"annotations": {ANNOTATION_VERIFY_NOW: "after-removal"}}}),
    )

    def checked() -> dict[str, Any] | None:
        last: dict[str, Any] | None = kube.get("dbb", OWNER, NAMESPACE).get("status", {}).get("lastVerification")
        return last if last and last.get("result") == "Failed" else None

    verification = wait_for("a check that fails", checked, 300)
    verdicts = {b["file"]: b for b in verification["backups"]}
    assert verdicts[second]["result"] == "Passed", verification
    assert (verdicts[first]["result"], verdicts[first]["reason"]) == ("Failed", "KeyMissing"), verification
    assert "key '2026-11'" in verdicts[first]["message"]
    assert "ids: '2026-12'" in verdicts[first]["message"]
    kube("delete", "dbb", OWNER, "-n", NAMESPACE)
