"""Real backups: a scheduled slot and a backup-now, each a Job whose Pod is admitted under the restricted Pod
Security Standard, finds the database through cluster DNS, takes the password from the Secret through env, writes
to the PVC, and reports through its termination message, from which the reconciler builds status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from common.constants import ANNOTATION_BACKUP_NOW, LABEL_BACKUP_NAME
from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pods import read_pvc


@pytest.fixture(scope="module")
def shop(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, "e2e-backup") as namespace:
        yield databases.running(
            kube, databases.Database("postgresql", "15", "shop-db", namespace, "e2e-backup-password")
        )


def succeeded_jobs(kube: Kube, db: databases.Database, owner: str) -> list[dict[str, Any]]:
    jobs = kube.items("jobs", db.namespace, f"{LABEL_BACKUP_NAME}={owner}")
    return [
        j
        for j in jobs
        if any(c["type"] == "Complete" and c["status"] == "True" for c in j.get("status", {}).get("conditions", []))
    ]


def termination_message(kube: Kube, namespace: str, job: str) -> dict[str, Any]:
    pods = kube.items("pods", namespace, f"job-name={job}")
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses", []):
            terminated = status.get("state", {}).get("terminated")
            if terminated and terminated.get("message"):
                message: dict[str, Any] = json.loads(terminated["message"])
                return message
    raise AssertionError(f"no terminated container with a message in the Pods of Job {job}: {pods}")


def check_backup(kube: Kube, db: databases.Database, owner: str, job: str) -> dict[str, Any]:
    """The Job ran as a restricted Pod, status matches its termination message, and the file is on the PVC."""
    status = kube.get("dbb", owner, db.namespace)["status"]
    message = termination_message(kube, db.namespace, job)
    assert message["status"] == "Succeeded", message
    last = status["lastBackup"]
    assert (last["file"], last["size"], last["sha256"]) == (message["file"], message["size"], message["sha256"])
    assert status["phase"] == "Succeeded"
    assert status["lastBackupTime"]
    assert status["inProgress"] is False

    spec = kube.get("job", job, db.namespace)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert f"--host={db.host}" in container["args"] or db.host in container["args"], container["args"]
    password = next(e for e in container["env"] if e["name"] == "DB_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["name"] == f"{db.name}-credentials"
    assert db.password not in json.dumps(spec)
    # Read back from the PVC by another Pod: the file is there, with the sha256 status reports.
    listing = read_pvc(kube, db.namespace, f"{db.name}-backups", f"sha256sum {last['file']}")
    assert listing.split()[0] == last["sha256"], listing
    result: dict[str, Any] = status
    return result


def test_a_scheduled_backup_runs_as_a_real_job(kube: Kube, shop: databases.Database) -> None:
    kube.apply(databases.databasebackup("every-minute", shop, "*/1 * * * *"))
    jobs = wait_for("a scheduled backup Job to complete", lambda: succeeded_jobs(kube, shop, "every-minute"), 240)
    job = jobs[0]["metadata"]["name"]
    assert "-now-" not in job
    wait_for(
        "status to show the backup",
        lambda: kube.get("dbb", "every-minute", shop.namespace).get("status", {}).get("lastBackup", {}).get("sha256"),
        120,
    )
    check_backup(kube, shop, "every-minute", job)
    events = {e["reason"] for e in kube.events(shop.namespace, "every-minute")}
    assert "BackupSucceeded" in events


def test_backup_now_runs_a_job_at_once(kube: Kube, shop: databases.Database) -> None:
    kube.apply(databases.databasebackup("on-demand", shop, "0 0 1 1 *", backup_now="first"))
    jobs = wait_for("the backup-now Job to complete", lambda: succeeded_jobs(kube, shop, "on-demand"), 180)
    job = jobs[0]["metadata"]["name"]
    assert "-now-" in job
    wait_for(
        "status to show the backup",
        lambda: kube.get("dbb", "on-demand", shop.namespace).get("status", {}).get("lastBackup", {}).get("sha256"),
        120,
    )
    status = check_backup(kube, shop, "on-demand", job)
    assert status["lastBackup"]["file"].startswith(f"/backups/{shop.name}/")


def backup_now(kube: Kube, db: databases.Database, owner: str, request: str) -> str:
    """Runs `owner` once more (keepLast 1) and returns the file its run wrote, once status shows it."""
    kube.apply(databases.databasebackup(owner, db, "0 0 1 1 *", backup_now=request, retention={"keepLast": 1}))

    def finished() -> str | None:
        jobs = [
            j
            for j in succeeded_jobs(kube, db, owner)
            if j["metadata"].get("annotations", {}).get(ANNOTATION_BACKUP_NOW) == request
        ]
        if not jobs:
            return None
        file: str = termination_message(kube, db.namespace, jobs[0]["metadata"]["name"])["file"]
        last = kube.get("dbb", owner, db.namespace).get("status", {}).get("lastBackup", {})
        return file if last.get("file") == file else None

    return wait_for(f"{owner}'s backup {request}", finished, 240)


def test_two_databasebackups_of_one_database_each_keep_their_newest(kube: Kube, shop: databases.Database) -> None:
    # Same database, same folder, keepLast 1 each: neither one's retention touches the other's backups.
    newest: dict[str, str] = {}
    for owner, request in (("hourly", "1"), ("daily", "1"), ("hourly", "2"), ("daily", "2"), ("hourly", "3")):
        newest[owner] = backup_now(kube, shop, owner, request)
    listing = read_pvc(kube, shop.namespace, f"{shop.name}-backups", f"ls -A /backups/{shop.name}").split()
    for owner, file in newest.items():
        assert file.startswith(f"/backups/{shop.name}/{owner}-")
        ours = sorted(f for f in listing if f.startswith(f"{owner}-"))
        name = file.rsplit("/", 1)[1]
        assert ours == [name, name + ".json"], listing
