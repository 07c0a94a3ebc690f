"""The replication slot of a PostgreSQL archiver, decided (reconciler.slot, through the plan): held by a finalizer
while the DatabaseBackup archives WAL, let go by a Job once it is deleted or stops archiving, and never held for
ever by a Job that failed or a spec that can no longer connect."""

from __future__ import annotations

from typing import Any

from common.constants import GROUP
from reconciler.backup_plan import World, decide_deleting
from reconciler.slot import FINALIZER, SlotPlan
from tests.fixtures import namespace_facts, statefulset
from tests.unit.test_plan import NS, RUNNER, backup, decide_at, just_after_ten

POSTGRES = statefulset(namespace=NS)
MARIADB = statefulset(
    namespace=NS,
    image="mariadb:11.8",
    env=[{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "root"}}}],
    ports=[{"name": "mysql", "containerPort": 3306}],
)


def archiving(*, held: bool = False, deleting: bool = False, **spec: Any) -> dict[str, Any]:
    obj = backup(engine="PostgreSQL", schedule="0 0 1 1 *", continuous={}, **spec)
    if held:
        obj["metadata"]["finalizers"] = ["example.com/theirs", FINALIZER]
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-11-27T10:00:00Z"
        obj["metadata"]["generation"] = 2
    return obj


def slot_of(obj: dict[str, Any], jobs: list[dict[str, Any]] | None = None, sts: Any = POSTGRES) -> SlotPlan:
    return decide_at(obj, just_after_ten(), jobs, statefulset=sts, facts=namespace_facts(NS, (sts,))).slot


def deleting_slot(obj: dict[str, Any], jobs: list[dict[str, Any]] | None = None, sts: Any = POSTGRES) -> SlotPlan:
    facts = namespace_facts(NS, (sts,) if sts is not None else ())
    world = World(obj=obj, jobs=jobs or [], now=just_after_ten(), statefulset=sts, facts=facts)
    return decide_deleting(world, RUNNER)


def ended(job: dict[str, Any], condition: str) -> dict[str, Any]:
    return {**job, "status": {"conditions": [{"type": condition, "status": "True"}]}}


def test_postgresql_archiving_holds_the_slot_and_nothing_else_does() -> None:
    assert slot_of(archiving()) == SlotPlan(hold=True)
    assert slot_of(archiving(held=True)) == SlotPlan()
    assert slot_of(archiving(held=True, suspend=True)) == SlotPlan()  # resumes where it stopped: the slot stays
    mysql = backup(schedule="0 0 1 1 *", continuous={})
    assert slot_of(mysql, sts=MARIADB) == SlotPlan()
    assert slot_of(backup(engine="PostgreSQL", schedule="0 0 1 1 *")) == SlotPlan()


def test_a_deleted_backup_lets_its_slot_go_through_a_job_and_then_its_finalizer() -> None:
    obj = archiving(held=True, deleting=True)
    first = deleting_slot(obj)
    assert first.hold is None
    assert first.create is not None
    assert [e.reason for e in first.events] == ["ReleasingSlot"]
    job = first.create
    assert job["metadata"]["labels"][f"{GROUP}/run"] == "release-slot"
    assert len(job["metadata"]["name"]) <= 63
    assert deleting_slot(obj, [job]) == SlotPlan()  # running: wait for it
    done = deleting_slot(obj, [ended(job, "Complete")])
    assert (done.hold, [e.reason for e in done.events]) == (False, ["SlotReleased"])
    failed = deleting_slot(obj, [ended(job, "Failed")])
    assert (failed.hold, [e.type for e in failed.events]) == (False, ["Warning"])
    assert "dropped by hand" in failed.events[0].message


def test_a_slot_let_go_again_later_gets_a_job_of_its_own() -> None:
    off = archiving(held=True)
    del off["spec"]["continuous"]
    earlier = slot_of(off).create
    assert earlier is not None
    off["metadata"]["generation"] = 5  # archiving turned on and off again since
    later = slot_of(off, [ended(earlier, "Complete")])
    assert later.create is not None
    assert later.create["metadata"]["name"] != earlier["metadata"]["name"]  # the old Job's success is not this one's


def test_a_deleted_backup_whose_database_is_gone_is_not_held_for_ever() -> None:
    plan = deleting_slot(archiving(held=True, deleting=True), sts=None)
    assert plan.hold is False
    assert plan.create is None
    assert [e.reason for e in plan.events] == ["SlotNotReleased"]


def test_a_living_backup_that_cannot_run_now_keeps_its_slot() -> None:
    off = archiving(held=True)
    del off["spec"]["continuous"]
    assert decide_at(off, just_after_ten(), statefulset=None).slot == SlotPlan()  # its database may come back
