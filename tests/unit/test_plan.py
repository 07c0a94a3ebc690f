"""The reconcile decision as a pure function of (object, Jobs, database, now): CronJob v2 scheduling, concurrency,
suspend, on-demand runs, history limits, and status rebuilt from the Jobs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.names import job_name
from common.schedule import window_offset
from reconciler.backup_plan import Plan, World, decide
from reconciler.jobs import RunnerSettings, backup_job, on_demand_job_name
from tests.fixtures import backup_store, databasebackup, namespace_facts, statefulset

RUNNER = RunnerSettings(image="registry.example/dbb:1.0")
NS = "shop"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def created_before_ten() -> datetime:
    return at("2026-11-27T09:58:00")


def just_after_ten() -> datetime:
    return at("2026-11-27T10:00:05")


def half_a_minute_before_ten() -> datetime:
    return at("2026-11-27T09:59:30")


def backup(**spec: Any) -> dict[str, Any]:
    obj = databasebackup(namespace=NS, **spec)
    obj["metadata"].update(uid="uid-1", generation=1, creationTimestamp="2026-11-27T09:58:00Z")
    return obj


def with_status(obj: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The object as the next reconcile sees it: the status the plan wrote."""
    assert plan.status is not None
    return {**obj, "status": plan.status}


def job(obj: dict[str, Any], slot: str, state: str = "Active", *, finished: str | None = None) -> dict[str, Any]:
    manifest = backup_job(obj, _spec(obj), scheduled=at(slot), runner=RUNNER)
    status: dict[str, Any] = {"startTime": slot + "Z"}
    if state == "Succeeded":
        status |= {
            "completionTime": finished,
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": finished},
                {"type": "Complete", "status": "True", "lastTransitionTime": finished},
            ],
        }
    elif state == "Failed":
        status |= {
            "failed": 2,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "lastTransitionTime": finished},
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": finished,
                },
            ],
        }
    else:
        status |= {"active": 1}
    manifest["status"] = status
    return manifest


def _spec(obj: dict[str, Any]) -> Any:
    from common.backups.defaults import default_spec
    from common.backups.model import parse_spec

    spec, _ = parse_spec(default_spec(obj["spec"], namespace=NS, statefulset=statefulset(namespace=NS)))
    return spec


def decide_at(obj: dict[str, Any], now: datetime, jobs: list[dict[str, Any]] | None = None, **world: Any) -> Plan:
    world.setdefault("statefulset", statefulset(namespace=NS))
    world.setdefault("facts", namespace_facts(NS))
    return decide(World(obj=obj, jobs=jobs or [], now=now, **world), RUNNER)


def reasons(plan: Plan) -> list[str]:
    return [e.reason for e in plan.events]


# --- scheduling -------------------------------------------------------------------------------------------------


def test_nothing_is_due_before_the_first_slot() -> None:
    plan = decide_at(backup(), half_a_minute_before_ten())
    assert plan.create == ()
    assert plan.status is not None
    assert plan.status["phase"] == "Scheduled"
    assert plan.status["nextBackupTime"] == "2026-11-27T10:00:00Z"
    assert plan.requeue_after == timedelta(seconds=30, milliseconds=100)
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["BackupSucceeded"]["status"] == "Unknown"
    assert conditions["Ready"]["observedGeneration"] == 1


def test_a_due_slot_gets_one_job_named_after_the_slot() -> None:
    plan = decide_at(backup(), just_after_ten())
    assert [j["metadata"]["name"] for j in plan.create] == [job_name("nightly", at("2026-11-27T10:00:00"))]
    assert plan.status is not None
    assert plan.status["lastScheduleTime"] == "2026-11-27T10:00:00Z"
    assert plan.status["phase"] == "Running"
    assert plan.status["inProgress"] is True
    assert plan.status["active"] == [{"name": plan.create[0]["metadata"]["name"]}]
    assert reasons(plan) == ["Scheduled"]


def test_a_window_moves_the_slot_by_the_objects_own_offset_and_runs_it_once() -> None:
    obj = backup(schedule="0 10 * * *", window="2h")
    offset = window_offset("uid-1", timedelta(hours=2))
    assert offset > timedelta(0)
    slot = at("2026-11-27T10:00:00") + offset
    early = decide_at(obj, slot - timedelta(seconds=30))
    assert early.create == ()
    assert early.status is not None
    assert early.status["nextBackupTime"] == slot.strftime("%Y-%m-%dT%H:%M:%SZ")
    plan = decide_at(obj, slot + timedelta(seconds=5))
    assert [j["metadata"]["name"] for j in plan.create] == [job_name("nightly", slot)]
    assert plan.status is not None
    assert plan.status["nextBackupTime"] == (slot + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    running = job(obj, slot.strftime("%Y-%m-%dT%H:%M:%S"))
    assert decide_at(with_status(obj, plan), slot + timedelta(minutes=1), [running]).create == ()


def test_a_job_that_already_exists_is_not_created_again() -> None:
    """After a crash between creating the Job and writing status: the name is the lock."""
    obj = backup()
    plan = decide_at(obj, just_after_ten(), [job(obj, "2026-11-27T10:00:00")])
    assert plan.create == ()
    assert plan.status is not None
    assert plan.status["lastScheduleTime"] == "2026-11-27T10:00:00Z"


def test_a_slot_already_run_is_not_run_again() -> None:
    obj = backup()
    first = decide_at(obj, just_after_ten())
    again = decide_at(with_status(obj, first), just_after_ten() + timedelta(seconds=20), list(first.create))
    assert again.create == ()


def test_only_the_most_recent_of_many_missed_slots_runs() -> None:
    obj = backup()
    obj["status"] = {"lastScheduleTime": "2026-11-27T09:00:00Z"}
    plan = decide_at(obj, just_after_ten())
    assert [j["metadata"]["annotations"]["databases.test.io/scheduled-time"] for j in plan.create] == [
        "2026-11-27T10:00:00Z"
    ]
    missed = [e for e in plan.events if e.reason == "Missed"]
    assert missed[0].message.startswith("Missed 11 earlier backup slot(s)")


def test_a_slot_past_the_starting_deadline_is_missed_not_run() -> None:
    obj = backup(startingDeadlineSeconds=60)
    obj["status"] = {"lastScheduleTime": "2026-11-27T09:55:00Z"}
    plan = decide_at(obj, at("2026-11-27T10:03:00"))
    assert plan.create == ()
    assert reasons(plan) == ["Missed"]
    assert "not started within startingDeadlineSeconds (60)" in plan.events[0].message


def test_a_suspended_backup_starts_nothing_and_says_so() -> None:
    plan = decide_at(backup(suspend=True), just_after_ten())
    assert plan.create == ()
    assert plan.status is not None
    assert plan.status["phase"] == "Suspended"
    assert plan.status["nextBackupTime"] is None
    assert plan.requeue_after is None


@pytest.mark.parametrize(
    ("zone", "now", "slot"),
    [
        # 02:30 does not exist in New York on 2026-03-08: it fires when the clocks jump (07:00 UTC).
        ("America/New_York", "2026-03-08T07:00:02", "2026-03-08T07:00:00"),
        ("Europe/Berlin", "2026-11-27T01:30:02", "2026-11-27T01:30:00"),
    ],
)
def test_slots_follow_the_time_zone(zone: str, now: str, slot: str) -> None:
    obj = backup(schedule="30 2 * * *", timeZone=zone)
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    obj["status"] = {"lastScheduleTime": rfc(at(now) - timedelta(hours=20))}
    plan = decide_at(obj, at(now))
    assert [j["metadata"]["name"] for j in plan.create] == [job_name("nightly", at(slot))]


def rfc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- concurrency ------------------------------------------------------------------------------------------------


def running_since_9_55(**spec: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    obj = backup(**spec)
    obj["status"] = {"lastScheduleTime": "2026-11-27T09:55:00Z"}
    return obj, [job(obj, "2026-11-27T09:55:00")]


def test_forbid_waits_for_the_active_run() -> None:
    obj, jobs = running_since_9_55()
    plan = decide_at(obj, just_after_ten(), jobs)
    assert plan.create == ()
    assert plan.delete == ()
    assert plan.status is not None
    assert plan.status["lastScheduleTime"] == "2026-11-27T09:55:00Z"  # still owed: runs when the active one ends


def test_forbid_runs_the_owed_slot_when_the_active_run_ends() -> None:
    obj, _ = running_since_9_55()
    done = [job(obj, "2026-11-27T09:55:00", "Succeeded", finished="2026-11-27T10:01:00Z")]
    plan = decide_at(obj, at("2026-11-27T10:01:01"), done)
    assert [j["metadata"]["name"] for j in plan.create] == [job_name("nightly", at("2026-11-27T10:00:00"))]


def test_replace_stops_the_active_run_and_starts_nothing_until_it_is_gone() -> None:
    obj, jobs = running_since_9_55(concurrencyPolicy="Replace")
    old = jobs[0]["metadata"]["name"]
    plan = decide_at(obj, just_after_ten(), jobs)
    assert plan.stop == (old,)
    assert plan.delete == ()
    assert plan.create == ()  # two runs never overlap
    assert [e.reason for e in plan.events] == ["Replaced"]
    assert plan.status is not None
    assert plan.status["lastScheduleTime"] == "2026-11-27T09:55:00Z"  # 10:00 is still owed

    # Next pass: the old Job is being deleted (its Pods are stopping). Nothing to do, nothing said again.
    jobs[0]["metadata"]["deletionTimestamp"] = "2026-11-27T10:00:06Z"
    plan = decide_at(with_status(obj, plan), at("2026-11-27T10:00:07"), jobs)
    assert (plan.stop, plan.create, plan.events) == ((), (), ())

    # The old Job is gone: the owed slot runs now.
    plan = decide_at(obj, at("2026-11-27T10:00:20"), [])
    assert [j["metadata"]["name"] for j in plan.create] == [job_name("nightly", at("2026-11-27T10:00:00"))]


def test_allow_runs_both() -> None:
    obj, jobs = running_since_9_55(concurrencyPolicy="Allow")
    plan = decide_at(obj, just_after_ten(), jobs)
    assert len(plan.create) == 1
    assert plan.status is not None
    assert len(plan.status["active"]) == 2


# --- on demand --------------------------------------------------------------------------------------------------


def test_a_new_backup_now_value_starts_one_run_now() -> None:
    obj = backup()
    obj["metadata"]["annotations"] = {"databases.test.io/backup-now": "2026-11-27T09:59:00Z"}
    plan = decide_at(obj, half_a_minute_before_ten())
    assert [j["metadata"]["name"] for j in plan.create] == [on_demand_job_name("nightly", "2026-11-27T09:59:00Z")]
    assert plan.create[0]["metadata"]["annotations"]["databases.test.io/backup-now"] == "2026-11-27T09:59:00Z"
    assert plan.status is not None
    assert plan.status["lastBackupNowRequest"] == "2026-11-27T09:59:00Z"
    assert plan.status["lastScheduleTime"] is None  # an on-demand run does not move the schedule


def test_the_same_backup_now_value_never_runs_twice() -> None:
    obj = backup()
    obj["metadata"]["annotations"] = {"databases.test.io/backup-now": "x"}
    first = decide_at(obj, half_a_minute_before_ten())
    # Even after its Job was pruned by the history limit, the status remembers the request.
    assert decide_at(with_status(obj, first), half_a_minute_before_ten()).create == ()


def test_a_request_whose_job_exists_is_recorded_without_a_second_job() -> None:
    obj = backup()
    obj["metadata"]["annotations"] = {"databases.test.io/backup-now": "x"}
    first = decide_at(obj, half_a_minute_before_ten())
    # The pass that created the Job wrote no status; the next one finds the Job and records the request.
    again = decide_at(obj, half_a_minute_before_ten(), list(first.create))
    assert again.create == ()
    assert again.status is not None
    assert again.status["lastBackupNowRequest"] == "x"
    assert again.status["phase"] == "Running"


def test_on_demand_and_forbid_wait_for_the_active_run() -> None:
    obj, jobs = running_since_9_55()
    obj["metadata"]["annotations"] = {"databases.test.io/backup-now": "x"}
    assert decide_at(obj, half_a_minute_before_ten(), jobs).create == ()


# --- outcomes and status ----------------------------------------------------------------------------------------

RESULT = {
    "status": "Succeeded",
    "file": "/backups/example-db/example-db-20261127T100000Z.dump.gz",
    "size": 12345,
    "sha256": "ab" * 32,
    "duration": 72.4,
}


def test_a_successful_run_fills_the_last_backup_from_the_runner_result() -> None:
    obj = backup()
    obj["status"] = {"lastScheduleTime": "2026-11-27T10:00:00Z"}
    done = job(obj, "2026-11-27T10:00:00", "Succeeded", finished="2026-11-27T10:01:13Z")
    messages = {done["metadata"]["name"]: json.dumps(RESULT)}
    plan = decide_at(obj, at("2026-11-27T10:01:14"), [done], termination_messages=messages)
    assert plan.status is not None
    assert plan.status["lastBackupTime"] == "2026-11-27T10:01:13Z"
    assert plan.status["lastBackup"] == {
        "file": RESULT["file"],
        "size": 12345,
        "sha256": "ab" * 32,
        "duration": "1m12s",
        "completionTime": "2026-11-27T10:01:13Z",
    }
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["inProgress"] is False
    assert plan.status["consecutiveFailures"] == 0
    assert {c["type"]: c["status"] for c in plan.status["conditions"]}["BackupSucceeded"] == "True"
    assert plan.events[0].reason == "BackupSucceeded"
    assert "wrote /backups/example-db/example-db-20261127T100000Z.dump.gz (12,345 bytes) in 1m12s" in (
        plan.events[0].message
    )


def test_what_retention_kept_and_why_goes_into_the_last_backup() -> None:
    obj = backup(retention={"keepLast": 3, "keepDaily": 7})
    obj["status"] = {"lastScheduleTime": "2026-11-27T10:00:00Z"}
    done = job(obj, "2026-11-27T10:00:00", "Succeeded", finished="2026-11-27T10:01:13Z")
    retention = {"kept": 8, "keptBytes": 98760, "deleted": 1, "byRule": {"last": 3, "daily": 7, "newest": 1}}
    result = {**RESULT, "retention": retention}
    plan = decide_at(
        obj, at("2026-11-27T10:01:14"), [done], termination_messages={done["metadata"]["name"]: json.dumps(result)}
    )
    assert plan.status is not None
    assert plan.status["lastBackup"]["kept"] == 8
    assert plan.status["lastBackup"]["keptBytes"] == 98760
    assert plan.status["lastBackup"]["keptBy"] == {"last": 3, "daily": 7, "newest": 1}


def test_the_stored_backups_the_run_listed_go_into_status_and_stay_there() -> None:
    obj = backup(retention={"keepLast": 3})
    obj["status"] = {"lastScheduleTime": "2026-11-27T10:00:00Z"}
    done = job(obj, "2026-11-27T10:00:00", "Succeeded", finished="2026-11-27T10:01:13Z")
    stored = [
        ["example-db-20261127T100000Z.dump.gz.enc", 12345, "2026-11", ["last", "newest"]],
        ["example-db-20261126T100000Z.dump.gz", 12000, "", ["last"]],
        ["../../elsewhere-20261126T100000Z.dump.gz", 1, "", ["last"]],  # never a path out of the folder
    ]
    result = {**RESULT, "backups": stored, "backupsOmitted": 4}
    messages = {done["metadata"]["name"]: json.dumps(result)}
    plan = decide_at(obj, at("2026-11-27T10:01:14"), [done], termination_messages=messages)
    assert plan.status is not None
    assert plan.status["backups"] == [
        {
            "time": "2026-11-27T10:00:00Z",
            "file": "/backups/example-db/example-db-20261127T100000Z.dump.gz.enc",
            "size": 12345,
            "encrypted": True,
            "keyId": "2026-11",
            "keptBy": ["last", "newest"],
        },
        {
            "time": "2026-11-26T10:00:00Z",
            "file": "/backups/example-db/example-db-20261126T100000Z.dump.gz",
            "size": 12000,
            "encrypted": False,
            "keptBy": ["last"],
        },
    ]
    assert plan.status["backupsOmitted"] == 4
    # The Job is gone (history limits): the list stays as recorded.
    obj["status"] = plan.status
    later = decide_at(obj, at("2026-11-27T10:05:00"), [])
    assert later.status is None or later.status["backups"] == plan.status["backups"]


def test_failures_count_up_and_a_success_resets_them() -> None:
    obj = backup()
    obj["status"] = {"lastScheduleTime": "2026-11-27T10:10:00Z"}
    failed = job(obj, "2026-11-27T10:00:00", "Failed", finished="2026-11-27T10:00:40Z")
    failure = {"status": "Failed", "reason": "DumpFailed", "message": "pg_dump: connection refused"}
    messages = {failed["metadata"]["name"]: json.dumps(failure)}
    first = decide_at(obj, at("2026-11-27T10:01:00"), [failed], termination_messages=messages)
    assert first.status is not None
    assert first.status["lastFailure"] == {
        "time": "2026-11-27T10:00:40Z",
        "reason": "DumpFailed",
        "message": "pg_dump: connection refused",
    }
    assert first.status["consecutiveFailures"] == 1
    assert first.status["phase"] == "Failed"
    assert reasons(first) == ["BackupFailed"]
    # A second failure; the first Job is gone (failedJobsHistoryLimit 1): the count goes on from the status.
    obj2 = with_status(obj, first)
    failed2 = job(obj, "2026-11-27T10:05:00", "Failed", finished="2026-11-27T10:05:40Z")
    second = decide_at(obj2, at("2026-11-27T10:06:00"), [failed2])
    assert second.status is not None
    assert second.status["consecutiveFailures"] == 2
    assert second.status["lastFailure"]["reason"] == "BackoffLimitExceeded"  # no termination message: the Job's
    conditions = {c["type"]: c for c in second.status["conditions"]}
    assert conditions["BackupSucceeded"]["status"] == "False"
    assert conditions["BackupSucceeded"]["reason"] == "BackoffLimitExceeded"
    ok = job(obj, "2026-11-27T10:10:00", "Succeeded", finished="2026-11-27T10:10:30Z")
    third = decide_at(with_status(obj2, second), at("2026-11-27T10:11:00"), [failed2, ok])
    assert third.status is not None
    assert third.status["consecutiveFailures"] == 0
    assert third.status["phase"] == "Succeeded"


def test_a_termination_message_that_is_log_text_becomes_the_failure_message() -> None:
    obj = backup()
    failed = job(obj, "2026-11-27T10:00:00", "Failed", finished="2026-11-27T10:00:40Z")
    messages = {failed["metadata"]["name"]: "Traceback ...\nMemoryError\n"}
    plan = decide_at(obj, at("2026-11-27T10:01:00"), [failed], termination_messages=messages)
    assert plan.status is not None
    assert plan.status["lastFailure"]["message"] == "Traceback ...\nMemoryError"


def test_history_limits_keep_the_newest_finished_jobs() -> None:
    obj = backup(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1)
    obj["status"] = {"lastScheduleTime": "2026-11-27T09:55:00Z"}
    jobs = [
        job(obj, f"2026-11-27T09:{m:02d}:00", "Succeeded", finished=f"2026-11-27T09:{m:02d}:30Z")
        for m in (30, 35, 40, 45)
    ]
    jobs += [job(obj, f"2026-11-27T09:{m:02d}:00", "Failed", finished=f"2026-11-27T09:{m:02d}:30Z") for m in (50, 55)]
    plan = decide_at(obj, at("2026-11-27T09:58:00"), jobs)
    assert sorted(plan.delete) == sorted(job_name("nightly", at(f"2026-11-27T09:{m}:00")) for m in ("30", "35", "50"))


def test_nothing_due_and_nothing_new_writes_no_status() -> None:
    obj = backup()
    first = decide_at(obj, half_a_minute_before_ten())
    obj = with_status(obj, first)
    for seconds in (1, 5, 20):
        plan = decide_at(obj, half_a_minute_before_ten() + timedelta(seconds=seconds))
        assert plan.status is None
        assert plan.events == ()


def test_an_hour_of_hourly_schedule_between_slots_writes_nothing() -> None:
    obj = backup(schedule="@hourly")
    start = at("2026-11-27T10:00:30")
    obj["status"] = {"lastScheduleTime": "2026-11-27T10:00:00Z"}
    obj = with_status(obj, decide_at(obj, start))
    writes = sum(decide_at(obj, start + timedelta(minutes=m)).status is not None for m in range(1, 59))
    assert writes == 0


# --- the admission guard ----------------------------------------------------------------------------------------


def test_an_invalid_spec_is_reported_once_and_runs_nothing() -> None:
    obj = backup(schedule="0 0 31 2 *")
    plan = decide_at(obj, just_after_ten())
    assert plan.create == ()
    assert plan.status is not None
    assert plan.status["phase"] == "Invalid"
    ready = {c["type"]: c for c in plan.status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith('spec.schedule: "0 0 31 2 *" never fires')
    assert reasons(plan) == ["InvalidSpec"]
    again = decide_at(with_status(obj, plan), just_after_ten() + timedelta(minutes=1))
    assert again.status is None
    assert again.events == ()
    assert again.requeue_after is None  # not a retry loop: a spec change brings us back


def test_a_missing_database_is_pending_and_looked_at_again() -> None:
    plan = decide_at(backup(), just_after_ten(), statefulset=None)
    assert plan.create == ()
    assert plan.status is not None
    assert plan.status["phase"] == "Pending"
    assert reasons(plan) == ["DatabaseNotFound"]
    assert plan.requeue_after == timedelta(minutes=1)


def test_what_no_one_could_default_blocks_with_a_reason() -> None:
    sts = statefulset(namespace=NS, image="registry.example/custom-db:1")
    plan = decide_at(backup(), just_after_ten(), statefulset=sts)
    assert plan.status is not None
    assert "spec.engine: not set, and the StatefulSet's image does not say" in plan.status["conditions"][0]["message"]


# --- the Job ----------------------------------------------------------------------------------------------------


def test_the_job_carries_owner_labels_volume_and_no_secret() -> None:
    obj = backup(compression="Zstd", encryption={"keySecret": {"name": "backup-key"}})
    created = decide_at(obj, just_after_ten()).create[0]
    metadata = created["metadata"]
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "databases.test.io/v1",
            "kind": "DatabaseBackup",
            "name": "nightly",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert metadata["labels"]["databases.test.io/databasebackup"] == "nightly"
    assert metadata["annotations"]["databases.test.io/scheduled-time"] == "2026-11-27T10:00:00Z"
    pod = created["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/dbb:1.0"
    assert container["args"][:2] == ["dbb-backup", "run"]
    assert "--compression=zstd" in container["args"]
    assert "--encryption-key-file=/var/run/secrets/databases.test.io/encryption/key" in container["args"]
    assert {
        "name": "DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "example-db-credentials", "key": "password"}},
    } in container["env"]
    assert all("value" not in e for e in container["env"])  # every env var comes from a reference
    assert {"name": "backups", "mountPath": "/backups"} in container["volumeMounts"]
    assert {"name": "backups", "persistentVolumeClaim": {"claimName": "example-db-backups"}} in pod["volumes"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert created["spec"]["backoffLimit"] == 1
    assert created["spec"]["activeDeadlineSeconds"] == 3600


def test_no_secret_value_can_reach_the_jobs_arguments() -> None:
    # The user name from the Secret travels as env only; a `$(VAR)` anywhere in the spec is escaped, so that the
    # kubelet cannot expand the password (or anything else from the env) into argv, and so into a message.
    credentials = {"name": "app-secrets", "usernameKey": "api-token", "passwordKey": "password"}
    obj = backup(backupPath="/backups/$(DB_PASSWORD)", connection={"credentialsSecret": credentials})
    container = decide_at(obj, just_after_ten()).create[0]["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--user") for a in container["args"])
    assert "--output-dir=/backups/$$(DB_PASSWORD)" in container["args"]
    assert not any("$(" in a.replace("$$(", "") for a in container["args"])
    assert {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "app-secrets", "key": "api-token"}}} in container[
        "env"
    ]


def test_a_user_name_in_the_spec_is_an_argument_and_nothing_is_read_from_the_secret_for_it() -> None:
    obj = backup(connection={"username": "backup"})
    container = decide_at(obj, just_after_ten()).create[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--user=backup" in container["args"]
    assert [e["name"] for e in container["env"]] == ["DB_PASSWORD"]


def test_the_users_resources_reach_the_backup_container() -> None:
    obj = backup(resources={"limits": {"memory": "4Gi"}, "requests": {"cpu": "1"}})
    container = decide_at(obj, just_after_ten()).create[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"memory": "4Gi"}}


@pytest.mark.parametrize(
    ("ca", "volume"),
    [
        (
            {"secretKeyRef": {"name": "db-tls", "key": "ca.crt"}},
            {"secret": {"secretName": "db-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}], "defaultMode": 0o444}},
        ),
        (
            {"configMapKeyRef": {"name": "db-ca", "key": "root.pem"}},
            {"configMap": {"name": "db-ca", "items": [{"key": "root.pem", "path": "ca.crt"}], "defaultMode": 0o444}},
        ),
    ],
)
def test_the_tls_mode_is_an_argument_and_the_ca_a_read_only_volume(ca: dict[str, Any], volume: dict[str, Any]) -> None:
    obj = backup(connection={"tls": {"mode": "VerifyFull", "ca": ca, "requireScram": True}})
    pod = decide_at(obj, just_after_ten()).create[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--tls-mode=verify-full" in container["args"]
    assert "--tls-ca-file=/var/run/secrets/databases.test.io/tls-ca/ca.crt" in container["args"]
    assert "--require-scram" in container["args"]
    assert {"name": "tls-ca", **volume} in pod["volumes"]
    assert {"name": "tls-ca", "mountPath": "/var/run/secrets/databases.test.io/tls-ca", "readOnly": True} in container[
        "volumeMounts"
    ]


@pytest.mark.parametrize(("mode", "argument"), [("Disable", "--tls-mode=disable"), ("Require", "--tls-mode=require")])
def test_a_mode_without_a_ca_mounts_nothing(mode: str, argument: str) -> None:
    obj = backup(connection={"tls": {"mode": mode}})
    pod = decide_at(obj, just_after_ten()).create[0]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert argument in args
    assert not any(a.startswith(("--tls-ca-file", "--require-scram")) for a in args)
    assert "tls-ca" not in [v["name"] for v in pod["volumes"]]


def test_without_tls_the_runner_gets_no_tls_flags() -> None:
    args = decide_at(backup(), just_after_ten()).create[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith(("--tls", "--require-scram")) for a in args)


CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
STORE = backup_store(
    endpoint="https://s3.example.com",
    region="eu-west-1",
    forcePathStyle=True,
    caBundle=CA,
    serverSideEncryption="AES256",
    prefix="prod",
)


def decide_with_store(obj: dict[str, Any], store: dict[str, Any] = STORE, **facts: Any) -> Plan:
    return decide_at(obj, just_after_ten(), facts=namespace_facts(NS, stores={"shared": store}, **facts))


def test_a_backup_to_s3_streams_to_its_store_with_the_keys_from_the_secret_and_no_volume() -> None:
    obj = backup(storage={"s3": {"store": "shared"}})
    pod = decide_with_store(obj).create[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    # Below the store's prefix, the namespace's own part, then the DatabaseBackup's (its database by default).
    assert "--output-url=s3://backups/prod/shop/example-db" in args
    assert not any(a.startswith("--output-dir") for a in args)
    assert {"--s3-path-style", "--s3-sse=AES256", "--stale-upload-age=0"} <= set(args)
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-keys", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://s3.example.com"
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    assert env["S3_CA_BUNDLE_PEM"]["value"] == CA
    assert "backups" not in {v["name"] for v in pod["volumes"]}


def test_a_prefix_of_the_backups_own_stays_below_its_namespaces_part() -> None:
    obj = backup(storage={"s3": {"store": "shared", "prefix": "ledger/2026"}})
    args = decide_with_store(obj).create[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--output-url=s3://backups/prod/shop/ledger/2026" in args


@pytest.mark.parametrize(
    ("store", "facts", "message"),
    [
        (None, {}, 'spec.storage.s3.store: BackupStore "shared" not found'),
        (
            backup_store(selector={"matchLabels": {"backups": "allowed"}}),
            {},
            'spec.storage.s3.store: BackupStore "shared" is not open to namespace "shop" (its namespaceSelector)',
        ),
        (
            backup_store(endpoint="http://s3.storage.svc"),
            {},
            'spec.storage.s3.store: BackupStore "shared" is invalid (spec.s3.endpoint: "http://s3.storage.svc" is '
            "plain http",
        ),
    ],
)
def test_a_store_that_is_missing_closed_or_invalid_starts_no_job_and_says_why(
    store: dict[str, Any] | None, facts: dict[str, Any], message: str
) -> None:
    obj = backup(storage={"s3": {"store": "shared"}})
    plan = decide_at(
        obj, just_after_ten(), facts=namespace_facts(NS, stores={"shared": store} if store else {}, **facts)
    )
    assert plan.create == ()
    assert plan.status is not None
    assert plan.status["phase"] == "Invalid"
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Refused"
    assert ready["message"].startswith(message)
    assert plan.requeue_after == timedelta(minutes=1)


def test_a_store_opened_to_the_namespace_by_its_labels_is_used() -> None:
    store = backup_store(selector={"matchExpressions": [{"key": "team", "operator": "In", "values": ["shop"]}]})
    plan = decide_with_store(backup(storage={"s3": {"store": "shared"}}), store, labels={"team": "shop"})
    assert len(plan.create) == 1


def test_env_values_from_a_store_are_escaped_for_the_kubelet() -> None:
    store = backup_store(region="$(DB_PASSWORD)")
    container = decide_with_store(backup(storage={"s3": {"store": "shared"}}), store).create[0]["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert {"name": "AWS_REGION", "value": "$$(DB_PASSWORD)"} in container["env"]


def test_runs_that_may_overlap_leave_each_others_uploads_alone() -> None:
    obj = backup(storage={"s3": {"store": "shared"}}, concurrencyPolicy="Allow")
    args = decide_with_store(obj).create[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--stale-upload-age") for a in args)


# --- the trust rules, again before every Job (reconciler.trust) ----------------------------------------------------


def refusal(plan: Plan) -> str:
    assert plan.create == ()
    assert plan.status is not None
    assert plan.status["phase"] == "Invalid"
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Refused"
    assert plan.requeue_after == timedelta(minutes=1)  # a Service, label or store put right is seen within a minute
    return str(ready["message"])


def test_a_host_service_that_became_an_external_name_starts_no_job() -> None:
    external = {"example-db": {"spec": {"type": "ExternalName", "externalName": "collector.attacker.example"}}}
    plan = decide_at(backup(), just_after_ten(), facts=namespace_facts(NS, services=external))
    assert refusal(plan) == (
        'spec.connection.host: "example-db.shop.svc": Service "example-db" is an ExternalName (to '
        '"collector.attacker.example"): label the namespace databases.test.io/allow-external-hosts="true" (cluster '
        "administrators can) to allow it"
    )
    assert [e.reason for e in plan.events] == ["Refused"]


def test_an_outside_host_runs_only_while_the_namespace_carries_the_label() -> None:
    obj = backup(connection={"host": "db.example.net"})
    allowed = namespace_facts(NS, labels={"databases.test.io/allow-external-hosts": "true"})
    assert len(decide_at(obj, just_after_ten(), facts=allowed).create) == 1
    assert refusal(decide_at(obj, just_after_ten(), facts=namespace_facts(NS))).startswith(
        'spec.connection.host: "db.example.net" is not a Service of namespace "shop"'
    )


def test_a_statefulset_created_later_whose_data_is_the_backup_claim_starts_no_job() -> None:
    ledger = statefulset("ledger-db", NS)
    ledger["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]
    obj = backup(storage={"persistentVolumeClaim": {"claimName": "data-ledger-db-3"}})
    facts = namespace_facts(NS, (statefulset(namespace=NS), ledger))
    assert refusal(decide_at(obj, just_after_ten(), facts=facts)) == (
        'spec.storage.persistentVolumeClaim.claimName: "data-ledger-db-3" is a data volume of StatefulSet "ledger-db" '
        '(its volumeClaimTemplate "data"); backups need a claim of their own'
    )


def test_a_verify_image_the_database_no_longer_runs_starts_no_job() -> None:
    obj = backup(verify={"restoreTest": True, "image": "postgres:16"})
    assert len(decide_at(obj, just_after_ten()).create) == 1
    upgraded = statefulset(namespace=NS, image="postgres:17")
    facts = namespace_facts(NS, (upgraded,))
    assert refusal(decide_at(obj, just_after_ten(), statefulset=upgraded, facts=facts)).startswith(
        'spec.verify.image: "postgres:16" is neither an image of the database StatefulSet'
    )
