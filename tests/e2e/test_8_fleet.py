"""A fleet on the real cluster, with the operator as deployed (its default cap: one backup per database server at a
time): three DatabaseBackups of one server asked to back up at once run one after the other, each once, and those
held back say so; a DatabaseBackup with a window is scheduled at its uid's own minute in it; a policy over the
namespace makes the database's DatabaseBackup, which backs up, and deleting the policy leaves the backup stored."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from common.constants import LABEL_BACKUP_NAME
from common.schedule import parse_schedule, window_offset
from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pods import read_pvc

NAMESPACE = "e2e-fleet"


@pytest.fixture(scope="module")
def db(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, NAMESPACE):
        yield databases.running(
            kube, databases.Database("postgresql", "17", "fleet-db", NAMESPACE, "fleet-password"), rows=200, orders=500
        )


def _last_backup(kube: Kube, name: str) -> dict[str, object] | None:
    found: dict[str, object] | None = kube.get("dbb", name, NAMESPACE).get("status", {}).get("lastBackup")
    return found


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_backups_of_one_server_run_one_at_a_time_each_once_and_the_held_ones_say_why(
    kube: Kube, db: databases.Database
) -> None:
    names = [f"fleet-{i}" for i in range(3)]
    for name in names:
        kube.apply(databases.databasebackup(name, db, "0 0 1 1 *", backup_now="together"))
    for name in names:
        wait_for(f"{name}'s backup", lambda name=name: _last_backup(kube, name), 300)  # type: ignore[misc]
    jobs = [j for j in kube.items("jobs", NAMESPACE) if j["metadata"]["labels"].get(LABEL_BACKUP_NAME) in names]
    assert sorted(j["metadata"]["labels"][LABEL_BACKUP_NAME] for j in jobs) == names, "each asked-for run once"
    # What the Job records, not what a poll happened to see: from its creation to its completion, no two overlap.
    spans = sorted((_moment(j["metadata"]["creationTimestamp"]), _moment(j["status"]["completionTime"])) for j in jobs)
    for (_, ended), (created, _) in itertools.pairwise(spans):
        assert created >= ended, spans
    waited = [e for name in names for e in kube.events(NAMESPACE, name) if e["reason"] == "Waiting"]
    assert waited, "the runs held back said so"
    assert "the cap of 1 running backup or check per database server" in waited[0]["message"]
    for name in names:
        status = kube.get("dbb", name, NAMESPACE)["status"]
        assert status["phase"] == "Succeeded"
        assert "waiting" not in status or status["waiting"] is None
        kube("delete", "dbb", name, "-n", NAMESPACE)


def test_a_window_schedules_the_backup_at_its_uids_own_minute(kube: Kube, db: databases.Database) -> None:
    kube.apply(databases.databasebackup("fleet-window", db, "0 1 * * *", window="4h"))
    obj = wait_for(
        "the window's next backup time",
        lambda: (found := kube.get("dbb", "fleet-window", NAMESPACE)).get("status", {}).get("nextBackupTime") and found,
        120,
    )
    offset = window_offset(obj["metadata"]["uid"], timedelta(hours=4))
    now = datetime.now(UTC)
    firing = parse_schedule("0 1 * * *").next_after(now - offset)
    assert obj["status"]["nextBackupTime"] == (firing + offset).strftime("%Y-%m-%dT%H:%M:%SZ")
    printed = kube("get", "dbb", "fleet-window", "-n", NAMESPACE, "-o", "wide")
    assert "4h" in printed.splitlines()[1].split()
    kube("delete", "dbb", "fleet-window", "-n", NAMESPACE)


def test_a_policy_protects_the_namespaces_databases_and_its_backups_outlive_it(
    kube: Kube, db: databases.Database
) -> None:
    policy = {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseBackupPolicy",
        "metadata": {"name": "e2e-fleet-nightly"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
            "template": {
                # A first backup at once: the annotation is the template's, as a user's would be.
                "metadata": {"annotations": {"databases.test.io/backup-now": "first"}},
                "spec": {"schedule": "0 1 * * *", "window": "4h", "retention": {"keepLast": 3}},
            },
        },
    }
    kube.apply(policy)
    name = f"{db.name}-e2e-fleet-nightly"
    made = wait_for("the policy's DatabaseBackup", lambda: kube.exists("dbb", name, NAMESPACE) or None, 60)
    assert made
    last = wait_for("its first backup", lambda: _last_backup(kube, name), 300)
    backup = kube.get("dbb", name, NAMESPACE)
    assert backup["metadata"]["labels"]["databases.test.io/policy"] == "e2e-fleet-nightly"
    assert backup["spec"]["engine"] == "PostgreSQL", "defaulted by the webhook from the StatefulSet"
    status = wait_for(
        "the policy's status",
        lambda: (s := kube.get("dbbpolicy", "e2e-fleet-nightly").get("status", {})).get("covered") == 1 and s,
        60,
    )
    assert (status["selected"], status["unprotected"], status["failing"]) == (1, 0, 0)
    row = kube("get", "dbbpolicy", "e2e-fleet-nightly").splitlines()
    assert row[0].split()[:7] == ["NAME", "SELECTED", "COVERED", "BY", "HAND", "FAILING", "UNPROTECTED"]
    assert row[1].split()[1:6] == ["1", "1", "0", "0", "0"]

    # Deleted with the policy (by the garbage collector, or the reconciler): the backup stays on the volume.
    kube("delete", "dbbpolicy", "e2e-fleet-nightly")
    wait_for("the policy's DatabaseBackup deleted", lambda: not kube.exists("dbb", name, NAMESPACE) or None, 120)
    listing = read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"ls {last['file']}")
    assert str(last["file"]) in listing
