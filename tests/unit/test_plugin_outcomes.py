"""Where a request of `kubectl dbb --wait` stands, judged from the DatabaseBackup (or DatabaseRestore) and its Jobs as
the operator writes them; and the loop that follows it, saying each wait once."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from kubernetes_asyncio import client

from common.constants import ANNOTATION_BACKUP_NOW, ANNOTATION_VERIFY_NOW, LABEL_RUN, RUN_VERIFY
from plugin.follow import follow
from plugin.outcomes import Before, Step, backup_step, before, restore_step, verify_step
from plugin.progress import ProgressLine

REQUEST = "2026-12-07T09:13:43.123456Z"
FILE = "/backups/example-db/nightly-20261207T091344Z.dump"
BEFORE = Before(success="2026-12-06T03:00:41Z", failure=None, verification=None)


def obj(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "nightly"}, "status": {"lastBackupTime": "2026-12-06T03:00:41Z", **status}}


def job(name: str, *, done: str | None = None, failed: str | None = None, verify: bool = False) -> dict[str, Any]:
    annotation = ANNOTATION_VERIFY_NOW if verify else ANNOTATION_BACKUP_NOW
    status: dict[str, Any] = {}
    if done is not None:
        status = {"completionTime": done, "conditions": [{"type": "Complete", "status": "True"}]}
    if failed is not None:
        status = {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": failed}]}
    labels = {LABEL_RUN: RUN_VERIFY} if verify else {}
    return {"metadata": {"name": name, "labels": labels, "annotations": {annotation: REQUEST}}, "status": status}


SUCCESS = {
    "lastBackupTime": "2026-12-07T09:13:46Z",
    "lastBackupNowRequest": REQUEST,
    "lastBackup": {"file": FILE, "size": 3_726_654, "sha256": "ab" * 32, "duration": "0.6s"},
}


def test_an_unanswered_request_waits_for_the_operator_or_says_what_holds_it() -> None:
    assert backup_step(obj(), REQUEST, [], BEFORE) == Step(False, note="waiting for the operator to start the backup")
    held = obj(phase="Waiting", waiting={"cap": "2 of 2 backups on server db"})
    assert backup_step(held, REQUEST, [], BEFORE).note == "waiting: 2 of 2 backups on server db"
    busy = obj(active=[{"name": "nightly-29412345"}])
    assert backup_step(busy, REQUEST, [], BEFORE).note == "waiting for nightly-29412345 to finish first"


def test_a_backup_that_cannot_start_ends_the_wait_with_the_reason() -> None:
    conditions = [
        {"type": "Ready", "status": "False", "reason": "DatabaseNotFound", "message": 'StatefulSet "x" not found'}
    ]
    step = backup_step(obj(phase="Pending", conditions=conditions), REQUEST, [], BEFORE)
    assert step == Step(
        True,
        False,
        (
            'the backup cannot start: DatabaseNotFound: StatefulSet "x" not found',
            "the request stands: the backup runs once that is fixed",
        ),
    )


def test_the_requests_job_is_followed_and_its_end_waits_for_status_to_record_it() -> None:
    answered = obj(lastBackupNowRequest=REQUEST)
    running = backup_step(answered, REQUEST, [job("nightly-now-1")], BEFORE)
    assert running == Step(False, note="backup Job nightly-now-1 is running", job="nightly-now-1")
    ended = backup_step(answered, REQUEST, [job("nightly-now-1", done="2026-12-07T09:13:46Z")], BEFORE)
    assert (ended.done, ended.note) == (
        False,
        "backup Job nightly-now-1 has ended; waiting for the operator to record it",
    )
    recorded = backup_step(obj(**SUCCESS), REQUEST, [job("nightly-now-1", done="2026-12-07T09:13:46Z")], BEFORE)
    assert recorded == Step(
        True,
        True,
        (f"backup written: {FILE} (3.55 MiB, 3,726,654 bytes) in 0.6s", f"sha256 {'ab' * 32}"),
        job="nightly-now-1",
    )


def test_another_runs_job_is_not_taken_for_the_requests() -> None:
    other = job("nightly-now-0", done="2026-12-07T09:00:00Z")
    other["metadata"]["annotations"][ANNOTATION_BACKUP_NOW] = "an earlier request"
    verification = job("nightly-vnow-1", verify=True)
    verification["metadata"]["annotations"][ANNOTATION_BACKUP_NOW] = REQUEST
    step = backup_step(obj(lastBackupNowRequest=REQUEST), REQUEST, [other, verification], BEFORE)
    assert step == Step(False, note="the backup is running")


def test_a_failed_run_ends_with_the_reason_and_message_of_status() -> None:
    failure = {
        "time": "2026-12-07T09:13:50Z",
        "reason": "DumpFailed",
        "message": "pg_dump: error:\n connection refused",
    }
    answered = obj(lastBackupNowRequest=REQUEST, lastFailure=failure)
    step = backup_step(answered, REQUEST, [job("nightly-now-1", failed="2026-12-07T09:13:50Z")], BEFORE)
    assert step == Step(
        True, False, ("backup failed: DumpFailed: pg_dump: error: connection refused",), job="nightly-now-1"
    )


def test_without_jobs_an_outcome_newer_than_the_one_before_the_request_ends_it() -> None:
    assert backup_step(obj(lastBackupNowRequest=REQUEST), REQUEST, None, BEFORE).done is False
    assert backup_step(obj(**SUCCESS), REQUEST, None, BEFORE).ok
    failure = {"time": "2026-12-07T09:13:50Z", "reason": "DumpFailed", "message": "x"}
    assert backup_step(obj(lastBackupNowRequest=REQUEST, lastFailure=failure), REQUEST, None, BEFORE) == Step(
        True, False, ("backup failed: DumpFailed: x",)
    )


def test_before_remembers_the_outcomes_status_held() -> None:
    held = obj(lastFailure={"time": "2026-12-01T00:00:00Z"}, lastVerification={"time": "2026-12-02T00:00:00Z"})
    assert before(held) == Before("2026-12-06T03:00:41Z", "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z")


def verification(result: str, *backups: dict[str, Any], job_name: str = "nightly-vnow-1") -> dict[str, Any]:
    found = {"time": "2026-12-07T09:14:00Z", "result": result, "job": job_name, "backups": list(backups)}
    return obj(lastVerifyNowRequest=REQUEST, lastVerification=found)


def test_a_check_is_done_when_status_names_its_job() -> None:
    jobs = [job("nightly-vnow-1", verify=True)]
    earlier = verification("Passed", job_name="nightly-v29412345")
    assert verify_step(earlier, REQUEST, jobs, BEFORE).note == "verification Job nightly-vnow-1 is running"
    passed = verify_step(verification("Passed", {"file": FILE, "result": "Passed"}), REQUEST, jobs, BEFORE)
    assert passed == Step(
        True, True, ("verification passed: 1 backup(s) checked", f"Passed  {FILE}"), job="nightly-vnow-1"
    )


def test_a_failed_check_names_each_damaged_backup() -> None:
    damaged = {"file": FILE, "result": "Failed", "reason": "VerifyFailed", "message": "sha256 differs"}
    step = verify_step(verification("Failed", damaged), REQUEST, [job("nightly-vnow-1", verify=True)], BEFORE)
    assert step == Step(
        True, False, ("verification failed", f"Failed  {FILE}  VerifyFailed: sha256 differs"), job="nightly-vnow-1"
    )


def test_a_check_with_nothing_to_check_succeeds_and_says_so() -> None:
    step = verify_step(verification("NoBackups"), REQUEST, None, BEFORE)
    assert step == Step(True, True, ("nothing to check: no stored backup yet",))


def restore(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "nightly-x7k2p"}, "status": status}


def test_a_restore_is_followed_through_its_phases() -> None:
    assert restore_step(restore()) == Step(False, note="waiting for the operator to start the restore")
    job_name = "nightly-x7k2p-restore-2dacc472f9"
    running = restore_step(restore(phase="Pending", job=job_name))
    assert running == Step(False, note=f"restore Job {job_name} is running", job=job_name)
    done = restore_step(
        restore(
            phase="Succeeded",
            job=job_name,
            file=FILE,
            target="example-db",
            sha256="ab" * 32,
            restoreSeconds=0.61,
            databases=[{"source": "shop", "target": "shop_copy", "result": "Restored"}],
        )
    )
    assert done == Step(
        True,
        True,
        (
            f"restored {FILE} into example-db in 0.6s",
            "databases: shop -> shop_copy",
            f"sha256 {'ab' * 32} (checked before commit)",
        ),
        job=job_name,
    )
    replayed = restore_step(
        restore(phase="Succeeded", file=FILE, target="example-db", replayedUntil="2026-12-07T10:41:00Z")
    )
    assert "replayed the archived binlog up to 2026-12-07T10:41:00Z (the database as it was then)" in replayed.lines
    base = "/backups/example-db/nightly-20261207T020000Z.base.tar.zst"
    wal = restore_step(restore(phase="Succeeded", file=base, target="example-db", replayedUntil="2026-12-07T10:41:00Z"))
    assert "replayed the archived WAL up to 2026-12-07T10:41:00Z (the database as it was then)" in wal.lines
    failed = restore_step(restore(phase="Failed", reason="TargetExists", message="database shop exists"))
    assert failed == Step(True, False, ("restore failed: TargetExists: database shop exists",))


async def test_following_says_each_wait_once_and_returns_the_end() -> None:
    steps: Iterator[Step] = iter(
        [
            Step(False, note="waiting for the operator to start the backup"),
            Step(False, note="waiting for the operator to start the backup"),
            Step(False, note="the backup is running"),
            Step(True, True, ("backup written: x",)),
        ]
    )

    async def step() -> Step:
        return next(steps)

    out = io.StringIO()
    api = client.ApiClient()  # never used: no step names a Job
    async with api:
        end = await follow(api, "shop", step, ProgressLine(out, terminal=False), poll=0)
    assert end == Step(True, True, ("backup written: x",))
    assert out.getvalue() == "waiting for the operator to start the backup\nthe backup is running\n"
