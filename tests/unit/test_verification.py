"""Scheduled verification (spec.verify.schedule) in the reconcile decision: its own Jobs (read-only, without the
database's credentials), its own slot, and what a finished check says in status, the Verified condition and Events.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from common.backups.model import parse_spec
from common.backups.validation import validate
from reconciler.backup_plan import Plan
from reconciler.verification import MAX_MESSAGE
from tests.fixtures import namespace_facts, statefulset
from tests.unit.test_plan import at, backup, decide_at, job, reasons, with_status

VERIFY = {"schedule": "30 10 * * *", "backups": 3}
FILE = "/backups/example-db/nightly-20261127T100000Z.dump.gz"
OLDER = "/backups/example-db/nightly-20261126T100000Z.dump.gz"


def verifying(**spec: Any) -> dict[str, Any]:
    spec.setdefault("schedule", "0 11 * * *")  # no backup due around 10:30: only the verification
    spec.setdefault("verify", VERIFY)
    return backup(**spec)


def conditions(plan: Plan) -> dict[str, dict[str, Any]]:
    assert plan.status is not None
    return {c["type"]: c for c in plan.status["conditions"]}


def finished(check: dict[str, Any], state: str, when: str) -> dict[str, Any]:
    """The verification Job `check` as the Job controller leaves it."""
    status = job(verifying(), "2026-11-27T10:30:00", state, finished=when)["status"]  # as for any run
    return {**check, "status": status}


def started(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    plan = decide_at(obj, at("2026-11-27T10:30:04"))
    [check] = [j for j in plan.create if j["metadata"]["labels"]["databases.test.io/run"] == "verify"]
    # The status comes on the pass after the one that creates Jobs, which finds them by name.
    again = decide_at(obj, at("2026-11-27T10:30:04"), [check, *(j for j in plan.create if j is not check)])
    assert again.create == ()
    return with_status(obj, again), check


def test_a_verification_job_checks_the_storage_read_only_and_never_sees_the_database() -> None:
    obj = verifying(encryption={"keySecret": {"name": "backup-key"}})
    before = decide_at(obj, at("2026-11-27T10:29:00"))
    assert before.create == ()
    assert conditions(before)["Verified"]["reason"] == "NotVerifiedYet"
    assert "2026-11-27T10:30:00Z" in conditions(before)["Verified"]["message"]
    assert before.requeue_after == timedelta(minutes=1, milliseconds=100)  # the verification comes first

    plan = decide_at(obj, at("2026-11-27T10:30:04"))
    [check] = plan.create
    assert check["metadata"]["name"] == f"nightly-v{int(at('2026-11-27T10:30:00').timestamp()) // 60}"
    assert check["metadata"]["labels"]["databases.test.io/run"] == "verify"
    assert check["spec"]["backoffLimit"] == 0
    pod = check["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["name"] == "verify"
    assert container["args"] == [
        "dbb-backup",
        "check",
        "/backups/example-db",
        "--owner-uid=uid-1",
        "--backups=3",
        "--termination-log=/dev/termination-log",
        "--key-dir=/var/run/secrets/databases.test.io/encryption",
    ]
    assert {"name": "backups", "mountPath": "/backups", "readOnly": True} in container["volumeMounts"]
    assert container["env"] == []  # no DB_PASSWORD, no DB_USER: a check never connects to the database
    assert "VerificationStarted" in reasons(plan)
    assert plan.status is not None
    assert plan.status["lastVerificationScheduleTime"] == "2026-11-27T10:30:00Z"
    assert plan.status["phase"] == "Scheduled"  # a verification is not a backup run
    assert plan.status["inProgress"] is False


def test_a_running_verification_is_not_started_twice_and_a_backup_still_runs() -> None:
    obj, check = started(verifying(schedule="* * * * *"))
    plan = decide_at(obj, at("2026-11-27T10:31:02"), [check])
    assert [j["metadata"]["labels"]["databases.test.io/run"] for j in plan.create] == ["backup"]
    assert plan.status is not None
    assert plan.status["lastVerificationScheduleTime"] == "2026-11-27T10:30:00Z"  # the 10:31 slot is not run


def test_a_failed_verification_names_each_bad_backup_and_deletes_nothing() -> None:
    obj, check = started(verifying())
    failed = finished(check, "Failed", "2026-11-27T10:31:00Z")
    result = {
        "status": "VerifyFailed",
        "checked": [
            {"file": FILE, "result": "Failed", "reason": "VerifyFailed", "message": f"{FILE}: sha256 differs"},
            {"file": OLDER, "result": "Failed", "reason": "BackupMissing", "message": f"{OLDER} is gone"},
        ],
    }
    messages = {check["metadata"]["name"]: json.dumps(result)}
    plan = decide_at(obj, at("2026-11-27T10:31:01"), [failed], termination_messages=messages)
    assert plan.delete == ()
    assert plan.status is not None
    last = plan.status["lastVerification"]
    assert (last["result"], last["backupsChecked"], last["time"]) == ("Failed", 2, "2026-11-27T10:31:00Z")
    assert [b["reason"] for b in last["backups"]] == ["VerifyFailed", "BackupMissing"]
    verified = conditions(plan)["Verified"]
    assert (verified["status"], verified["reason"]) == ("False", "VerifyFailed")
    assert FILE in verified["message"]
    assert OLDER in verified["message"]
    [warning] = [e for e in plan.events if e.reason == "VerificationFailed"]
    assert warning.type == "Warning"
    assert FILE in warning.message
    # The next pass reports nothing new: one Event per run.
    again = decide_at(with_status(obj, plan), at("2026-11-27T10:31:30"), [failed], termination_messages=messages)
    assert "VerificationFailed" not in reasons(again)
    assert again.status is None


def test_a_passed_verification_sets_verified_true() -> None:
    obj, check = started(verifying())
    done = finished(check, "Succeeded", "2026-11-27T10:30:40Z")
    result = {"status": "Verified", "checked": [{"file": FILE, "result": "Passed", "sha256": "ab" * 32}]}
    plan = decide_at(obj, at("2026-11-27T10:30:41"), [done], termination_messages={_name(check): json.dumps(result)})
    verified = conditions(plan)["Verified"]
    assert (verified["status"], verified["reason"]) == ("True", "Passed")
    assert FILE in verified["message"]
    assert "Verified" in reasons(plan)
    assert plan.status is not None
    assert plan.status["lastVerification"]["backups"] == [{"file": FILE, "result": "Passed"}]


def test_each_restore_drill_is_kept_as_evidence_newest_first_at_most_five() -> None:
    obj, check = started(verifying(verify={**VERIFY, "restoreTest": True}))
    previous = [
        {"time": f"2026-11-2{d}T10:30:40Z", "file": OLDER, "result": "Passed", "seconds": 50.0, "tables": 3}
        for d in range(6, 1, -1)
    ]
    obj["status"]["restoreDrills"] = previous
    done = finished(check, "Succeeded", "2026-11-27T10:30:40Z")
    drill = {"restoreTested": True, "restoreSeconds": 42.5, "tables": 3, "rows": 3000, "queries": 2}
    checked = [{"file": FILE, "result": "Passed", **drill}, {"file": OLDER, "result": "Passed"}]
    result = {"status": "Verified", "checked": checked}
    plan = decide_at(obj, at("2026-11-27T10:30:41"), [done], termination_messages={_name(check): json.dumps(result)})
    assert plan.status is not None
    drills = plan.status["restoreDrills"]
    assert len(drills) == 5
    assert drills[0] == {
        "time": "2026-11-27T10:30:40Z",
        "file": FILE,
        "result": "Passed",
        "seconds": 42.5,
        "tables": 3,
        "rows": 3000,
        "queries": 2,
        "job": _name(check),
    }
    assert [d["time"][:10] for d in drills[1:]] == ["2026-11-26", "2026-11-25", "2026-11-24", "2026-11-23"]
    assert plan.status["lastVerification"]["backups"][0]["restoreSeconds"] == 42.5
    # The same Job read again on the next pass adds nothing.
    again = decide_at(
        with_status(obj, plan),
        at("2026-11-27T10:30:50"),
        [done],
        termination_messages={_name(check): json.dumps(result)},
    )
    assert again.status is None or again.status["restoreDrills"] == drills


def test_a_check_with_nothing_to_check_or_without_a_verdict() -> None:
    obj, check = started(verifying())
    empty = {"status": "Verified", "checked": []}
    done = finished(check, "Succeeded", "2026-11-27T10:30:40Z")
    plan = decide_at(obj, at("2026-11-27T10:30:41"), [done], termination_messages={_name(check): json.dumps(empty)})
    assert (conditions(plan)["Verified"]["status"], conditions(plan)["Verified"]["reason"]) == ("Unknown", "NoBackups")

    unreachable = {"status": "Failed", "reason": "StorageError", "message": "cannot reach https://s3.example"}
    failed = finished(check, "Failed", "2026-11-27T10:30:40Z")
    messages = {_name(check): json.dumps(unreachable)}
    plan = decide_at(obj, at("2026-11-27T10:30:41"), [failed], termination_messages=messages)
    verified = conditions(plan)["Verified"]
    assert (verified["status"], verified["reason"]) == ("False", "StorageError")
    assert "s3.example" in verified["message"]


def test_suspend_stops_verifications_and_an_invalid_verify_schedule_names_its_field() -> None:
    assert decide_at(verifying(suspend=True), at("2026-11-27T10:30:04")).create == ()
    spec, errors = parse_spec({**verifying()["spec"], "verify": {"schedule": "61 * * * *", "backups": 11}})
    assert [e.path for e in errors] == ["spec.verify.backups"]
    assert spec is not None
    assert [e.path for e in validate("nightly", spec)] == ["spec.verify.schedule"]


def _name(check: dict[str, Any]) -> str:
    return str(check["metadata"]["name"])


def test_verify_now_checks_at_once_even_without_a_schedule_and_once_per_value() -> None:
    obj = backup(schedule="0 11 * * *")
    obj["metadata"]["annotations"] = {"databases.test.io/verify-now": "before-the-upgrade"}
    plan = decide_at(obj, at("2026-11-27T10:30:04"))
    [check] = plan.create
    assert check["metadata"]["name"].startswith("nightly-vnow-")
    assert len(check["metadata"]["name"]) == len("nightly-vnow-") + 5
    assert check["metadata"]["annotations"]["databases.test.io/verify-now"] == "before-the-upgrade"
    assert any('on request "before-the-upgrade"' in e.message for e in plan.events)
    # The next pass finds the Job by name and records the value; the same value never starts a second check.
    again = decide_at(obj, at("2026-11-27T10:30:05"), [check])
    assert again.create == ()
    assert again.status is not None
    assert again.status["lastVerifyNowRequest"] == "before-the-upgrade"
    done = finished(check, "Succeeded", "2026-11-27T10:30:40Z")
    later = decide_at(with_status(obj, again), at("2026-11-27T10:45:00"), [done])
    assert later.create == ()
    assert "Verified" not in conditions(again)  # no schedule and no verdict yet: no condition to show


def test_a_restore_test_gets_a_scratch_server_beside_it_on_loopback_as_the_databases_user() -> None:
    obj = verifying(verify={**VERIFY, "restoreTest": True})
    database = statefulset(namespace="shop", image="registry.example/postgres:17")
    database["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 999, "runAsGroup": 999}
    plan = decide_at(obj, at("2026-11-27T10:30:04"), statefulset=database)
    [check] = plan.create
    pod = check["spec"]["template"]["spec"]
    [scratch] = pod["initContainers"]
    assert scratch["image"] == "registry.example/postgres:17"
    assert scratch["restartPolicy"] == "Always"  # a native sidecar: stopped when the check ends
    assert "listen_addresses=127.0.0.1" in scratch["args"]
    assert (scratch["securityContext"]["runAsUser"], scratch["securityContext"]["runAsGroup"]) == (999, 999)
    assert scratch["securityContext"]["readOnlyRootFilesystem"] is True
    [container] = pod["containers"]
    assert container["args"][-3:] == ["--restore-test", "--scratch-port=5432", "--scratch-user=postgres"]
    # The volume is writable for the drill records; the scratch server does not mount it at all.
    assert {"name": "backups", "mountPath": "/backups"} in container["volumeMounts"]
    assert "backups" not in [m["name"] for m in scratch["volumeMounts"]]
    # One throwaway password, the same on both sides; nothing of the database's own Secret.
    password = next(e["value"] for e in scratch["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert container["env"] == [{"name": "DB_PASSWORD", "value": password}]
    assert "secretKeyRef" not in json.dumps(pod)
    assert {v["name"] for v in pod["volumes"]} >= {"scratch-data", "scratch-run", "scratch-tmp"}

    mariadb = verifying(verify={**VERIFY, "restoreTest": True, "image": "registry.example/mariadb:11.8"})
    plan = decide_at(mariadb, at("2026-11-27T10:30:04"))
    assert plan.create == ()  # not an image of the StatefulSet, and not one the administrators approved
    assert plan.status is not None
    assert plan.status["conditions"][0]["message"].startswith(
        'spec.verify.image: "registry.example/mariadb:11.8" is neither an image of the database StatefulSet nor one'
    )
    approved = namespace_facts("shop", annotations={"databases.test.io/verify-images": "registry.example/mariadb:11.8"})
    plan = decide_at(mariadb, at("2026-11-27T10:30:04"), facts=approved)
    [check] = plan.create
    [scratch] = check["spec"]["template"]["spec"]["initContainers"]
    assert scratch["image"] == "registry.example/mariadb:11.8"

    unknown = statefulset(namespace="shop", image="registry.example/in-house-db:1")
    plan = decide_at(
        verifying(engine="PostgreSQL", verify={**VERIFY, "restoreTest": True}),
        at("2026-11-27T10:30:04"),
        statefulset=unknown,
    )
    assert plan.create == ()
    assert conditions(plan)["Verified"]["reason"] == "NoScratchImage"


def test_a_runs_restore_test_gets_the_same_scratch_server_and_keeps_the_databases_password_apart() -> None:
    obj = backup(schedule="30 10 * * *", verify={"restoreTest": True})
    database = statefulset(namespace="shop", image="registry.example/postgres:17")
    [run] = decide_at(obj, at("2026-11-27T10:30:04"), statefulset=database).create
    pod = run["spec"]["template"]["spec"]
    [scratch] = pod["initContainers"]
    assert (scratch["image"], scratch["restartPolicy"]) == ("registry.example/postgres:17", "Always")
    [container] = pod["containers"]
    assert container["args"].count("--restore-test") == 1
    assert container["args"][-2:] == ["--scratch-port=5432", "--scratch-user=postgres"]
    env = {e["name"]: e for e in container["env"]}
    # The database's password from its Secret, for the dump; the scratch server's throwaway one beside it.
    assert "secretKeyRef" in env["DB_PASSWORD"]["valueFrom"]
    password = next(e["value"] for e in scratch["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert env["SCRATCH_PASSWORD"] == {"name": "SCRATCH_PASSWORD", "value": password}

    # No image to run a scratch server from: the run's restore test uses a scratch database on the source, as before.
    unknown = statefulset(namespace="shop", image="registry.example/in-house-db:1")
    [run] = decide_at(
        backup(schedule="30 10 * * *", engine="PostgreSQL", verify={"restoreTest": True}),
        at("2026-11-27T10:30:04"),
        statefulset=unknown,
    ).create
    assert "initContainers" not in run["spec"]["template"]["spec"]
    assert "--restore-test" in run["spec"]["template"]["spec"]["containers"][0]["args"]


def archiving_mariadb(**verify: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    obj = verifying(engine="MySQL", continuous={"maxLagSeconds": 30}, verify={**VERIFY, **verify})
    mariadb = statefulset(namespace="shop", image="mariadb:11.8", ports=[{"name": "mysql", "containerPort": 3306}])
    return obj, mariadb


def test_a_check_with_a_scratch_server_of_a_continuous_backup_proves_the_archive_too() -> None:
    obj, mariadb = archiving_mariadb(restoreTest=True)
    [check] = decide_at(obj, at("2026-11-27T10:30:04"), statefulset=mariadb).create
    assert check["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--prove-archive"
    obj, mariadb = archiving_mariadb()  # no scratch server: nothing to replay on
    [check] = decide_at(obj, at("2026-11-27T10:30:04"), statefulset=mariadb).create
    assert "--prove-archive" not in check["spec"]["template"]["spec"]["containers"][0]["args"]


def test_a_postgresql_check_proves_the_wal_archive_on_a_replay_server_beside_its_scratch_server() -> None:
    obj = verifying(engine="PostgreSQL", continuous={"maxLagSeconds": 30}, verify={**VERIFY, "restoreTest": True})
    postgres = statefulset(namespace="shop", image="postgres:17")
    [check] = decide_at(obj, at("2026-11-27T10:30:04"), statefulset=postgres).create
    pod = check["spec"]["template"]["spec"]
    assert [(c["name"], c["image"]) for c in pod["initContainers"]] == [
        ("scratch-db", "postgres:17"),  # the restore test's
        ("replay-db", "postgres:17"),  # the archive's proof
    ]
    args = pod["containers"][0]["args"]
    assert "--prove-archive" in args
    assert "--replay-dir=/replay" in args
    assert len({v["name"] for v in pod["volumes"]}) == len(pod["volumes"])  # no volume named twice
    # The backup user's name (a role the recovered copy has), never its password.
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["DB_USER"] == {"name": "DB_USER", "value": "postgres"}  # the StatefulSet's POSTGRES_USER
    secret = {"credentialsSecret": {"name": "db-credentials", "usernameKey": "user"}}
    obj = verifying(engine="PostgreSQL", continuous={}, verify={**VERIFY, "restoreTest": True}, connection=secret)
    [check] = decide_at(obj, at("2026-11-27T10:30:04"), statefulset=postgres).create
    env = {e["name"]: e for e in check["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DB_USER"]["valueFrom"]["secretKeyRef"] == {"name": "db-credentials", "key": "user"}
    assert all("secretKeyRef" not in (e.get("valueFrom") or {}) for n, e in env.items() if n != "DB_USER"), env


def test_what_a_check_proved_of_the_archive_is_recorded_and_its_untrusted_fields_are_held_to_their_types() -> None:
    obj, check = started(verifying(verify={**VERIFY, "restoreTest": True}))
    done = finished(check, "Succeeded", "2026-11-27T10:30:40Z")
    archive = {"proven": True, "from": OLDER, "to": FILE, "until": "2026-11-27T10:00:07+00:00", "tables": 4}
    result = {"status": "Verified", "checked": [{"file": FILE, "result": "Passed"}], "archive": archive}
    messages = {_name(check): json.dumps(result)}
    plan = decide_at(obj, at("2026-11-27T10:30:41"), [done], termination_messages=messages)
    assert plan.status is not None
    assert plan.status["lastVerification"]["archive"] == {**archive, "until": "2026-11-27T10:00:07Z"}
    assert f"the archive reproduced {FILE} from {OLDER}" in " ".join(e.message for e in plan.events)

    result["archive"] = {"proven": False, "why": "x" * 2000, "until": "yesterday", "tables": True, "from": 7}
    messages = {_name(check): json.dumps(result)}
    plan = decide_at(obj, at("2026-11-27T10:30:41"), [done], termination_messages=messages)
    assert plan.status is not None
    recorded = plan.status["lastVerification"]["archive"]
    assert recorded["proven"] is False
    assert set(recorded) == {"proven", "why"}
    assert len(recorded["why"]) == MAX_MESSAGE  # cut short
