"""The reconciler's two replicas and leader election on a real cluster: a leader Pod force-deleted in the middle of a
backup leads to no second Job for that slot, and a deleted leader hands over within the lease duration."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from common.constants import ANNOTATION_SCHEDULED_TIME, LABEL_BACKUP_NAME
from tests.e2e import databases
from tests.e2e.conftest import SYSTEM
from tests.e2e.kube import Kube, wait_for

NAMESPACE = "e2e-leader"
LEASE_SECONDS = 15  # deploy/reconciler: --lease-duration's default


@pytest.fixture(scope="module")
def db(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, NAMESPACE):
        database = databases.running(
            kube, databases.Database("postgresql", "15", "orders-db", NAMESPACE, "e2e-leader-password")
        )
        kube.apply(databases.databasebackup("every-minute", database, "*/1 * * * *", successfulJobsHistoryLimit=10))
        yield database


def leader_pod(kube: Kube) -> str:
    holder: str = kube.get("lease", "dbb-reconciler", SYSTEM)["spec"].get("holderIdentity") or ""
    return holder.rsplit("_", 1)[0]


def reconciler_pods(kube: Kube) -> list[str]:
    pods = kube.items("pods", SYSTEM, "app.kubernetes.io/name=dbb-reconciler")
    return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]


def jobs(kube: Kube) -> list[dict[str, Any]]:
    return kube.items("jobs", NAMESPACE, f"{LABEL_BACKUP_NAME}=every-minute")


def runs(kube: Kube) -> Counter[tuple[str, str]]:
    """Jobs per run: the owner (the controller ownerReference's uid) and the slot (the scheduled-time annotation).
    Every Job of the namespace counts, whatever its name or labels: two Jobs for one slot of one owner count twice,
    as a Job with neither owner nor slot counts against ("", "")."""
    counts: Counter[tuple[str, str]] = Counter()
    for job in kube.items("jobs", NAMESPACE):
        metadata = job["metadata"]
        owners = [r["uid"] for r in metadata.get("ownerReferences") or [] if r.get("controller")]
        slot = (metadata.get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME, "")
        counts[(owners[0] if owners else "", slot)] += 1
    return counts


def assert_one_job_per_run(counts: Counter[tuple[str, str]]) -> None:
    assert counts, "no Jobs"
    assert all(owner and slot for owner, slot in counts), counts
    assert max(counts.values()) == 1, counts


def resynced(kube: Kube) -> None:
    """Make the leader reconcile the DatabaseBackup again, and wait until it has: a spec change that starts nothing
    (one more backup kept) must show in status.observedGeneration."""
    keep = kube.get("dbb", "every-minute", NAMESPACE)["spec"].get("retention", {}).get("keepLast", 7)
    patch = json.dumps({"spec": {"retention": {"keepLast": keep + 1}}})
    changed = kube.json("patch", "dbb", "every-minute", "-n", NAMESPACE, "--type=merge", "-p", patch)
    generation = changed["metadata"]["generation"]
    wait_for(
        "the leader to reconcile the change",
        lambda: kube.get("dbb", "every-minute", NAMESPACE).get("status", {}).get("observedGeneration") == generation,
        120,
    )


def active_job(kube: Kube) -> str | None:
    for job in jobs(kube):
        if job.get("status", {}).get("active"):
            return str(job["metadata"]["name"])
    return None


def test_a_reconciler_force_deleted_during_a_run_creates_no_second_job(kube: Kube, db: databases.Database) -> None:
    job = wait_for("a backup Job to be running", lambda: active_job(kube), 180, interval=0.5)
    old = leader_pod(kube)
    assert old in reconciler_pods(kube)
    kube("delete", "pod", old, "-n", SYSTEM, "--grace-period=0", "--force")

    # The successor finds the Job by its name (the slot) and records it, rather than starting the slot again.
    def recorded() -> bool:
        status = kube.get("dbb", "every-minute", NAMESPACE).get("status", {})
        return bool(status.get("lastBackup", {}).get("file")) and leader_pod(kube) not in ("", old)

    wait_for("the new leader to record the backup", recorded, 180)
    counts = runs(kube)
    assert_one_job_per_run(counts)
    [running] = [j for j in jobs(kube) if j["metadata"]["name"] == job]
    owner = next(r["uid"] for r in running["metadata"]["ownerReferences"] if r.get("controller"))
    assert counts[(owner, running["metadata"]["annotations"][ANNOTATION_SCHEDULED_TIME])] == 1


def test_deleting_the_leader_hands_over_within_the_lease_duration(kube: Kube, db: databases.Database) -> None:
    wait_for(
        "two ready reconcilers",
        lambda: (
            len(reconciler_pods(kube)) == 2
            and kube.get("deployment", "dbb-reconciler", SYSTEM)["status"].get("readyReplicas") == 2
        ),
        180,
    )
    old = wait_for("a leader", lambda: leader_pod(kube), 60)
    started = time.monotonic()
    kube("delete", "pod", old, "-n", SYSTEM, "--wait=false")
    new = wait_for(
        "another replica to take the Lease", lambda: (p := leader_pod(kube)) not in ("", old) and p, 60, interval=0.2
    )
    handover = time.monotonic() - started
    assert handover <= LEASE_SECONDS, f"handover took {handover:.1f}s"
    assert new in reconciler_pods(kube)

    # The next slot runs once, under the new leader: once still after the leader has looked at the object again
    # with that slot's Job in place.
    before = set(runs(kube))
    wait_for("a slot under the new leader", lambda: set(runs(kube)) - before, 150)
    resynced(kube)
    assert_one_job_per_run(runs(kube))
