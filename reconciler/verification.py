"""Scheduled verification of what is stored (`spec.verify.schedule`), as a pure function beside `plan.decide`.

A backup is verified once, by the run that writes it. Weeks later it may be gone, changed, or unreadable with the
key in use now; a verification proves the newest `spec.verify.backups` backups as they are stored now, with
`dbb-backup check` in a Job of its own (`verification_job`: the backup volume read-only, no database credentials).

Scheduling is the backup schedule's, simplified: the slot after `status.lastVerificationScheduleTime` (else after
the object's creation) is owed; only the most recent due slot runs; never two verifications at once (a slot due
while one runs waits for it); the Job's name (`<name>-v<unix minute>`) is the lock. `spec.suspend` stops them too.

What a finished verification says becomes `status.lastVerification` (time, result, each backup's verdict), the
`Verified` condition and one Event. A failed verification deletes nothing: it is a report, and the backups it
doubts are exactly what an operator will want to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from common.backups.model import (
    MAX_RESTORE_DRILLS,
    ArchiveProof,
    CheckedBackup,
    Condition,
    DatabaseBackupSpec,
    DatabaseBackupStatus,
    LastVerification,
    RestoreDrill,
)
from common.constants import ANNOTATION_VERIFY_NOW, DEFAULT_TIME_ZONE
from common.schedule import parse_schedule
from common.statefulset import facts
from reconciler.jobs import RunnerSettings, ScratchServer, verification_job
from reconciler.outcomes import JobOutcome
from reconciler.world import Event, World, due_request, over_limit, parse_time, rfc3339

__all__ = ["VerificationPlan", "decide_verification", "remembered", "scratch_server"]

PASSED: Final = "Passed"
FAILED: Final = "Failed"
NO_BACKUPS: Final = "NoBackups"
MAX_MESSAGE: Final = 1000


@dataclass(frozen=True)
class VerificationPlan:
    last_verification: LastVerification | None
    schedule_time: str | None  # status.lastVerificationScheduleTime
    request: str | None  # status.lastVerifyNowRequest
    condition: Condition | None  # Verified; None while verification was never set up
    create: tuple[dict[str, Any], ...] = ()
    delete: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    next_time: datetime | None = None
    drills: tuple[RestoreDrill, ...] = ()  # status.restoreDrills


def remembered(previous: DatabaseBackupStatus, outcomes: Sequence[JobOutcome]) -> VerificationPlan:
    """No new verification (an invalid spec, a missing database): what the finished Jobs and the status say."""
    events: list[Event] = []
    last, drills = _history(outcomes, previous, events)
    schedule_time, request = previous.last_verification_schedule_time, previous.last_verify_now_request
    return VerificationPlan(last, schedule_time, request, _condition(last, None), events=tuple(events), drills=drills)


def decide_verification(
    world: World,
    spec: DatabaseBackupSpec,
    previous: DatabaseBackupStatus,
    outcomes: Sequence[JobOutcome],
    runner: RunnerSettings,
) -> VerificationPlan:
    """`outcomes`: the verification Jobs this object owns."""
    events: list[Event] = []
    last, drills = _history(outcomes, previous, events)
    finished = [o for o in outcomes if o.state != "Active"]
    delete = over_limit(finished, "Succeeded", spec.successful_jobs_history_limit)
    delete += over_limit(finished, "Failed", spec.failed_jobs_history_limit)
    schedule_time, handled = previous.last_verification_schedule_time, previous.last_verify_now_request
    # What is due: an on-demand request (verify-now), then the most recent scheduled slot.
    runs: list[tuple[datetime, str | None]] = []
    request = due_request(world.obj, ANNOTATION_VERIFY_NOW, previous.last_verify_now_request)
    if request is not None:
        runs.append((world.now, request))
    next_time = None
    if spec.verify_schedule is not None and not spec.suspend:
        schedule = parse_schedule(spec.verify_schedule, spec.time_zone or DEFAULT_TIME_ZONE)
        next_time = schedule.next_after(world.now)
        created = parse_time((world.obj.get("metadata") or {}).get("creationTimestamp")) or world.now
        latest = schedule.latest_at_or_before(world.now)
        if latest > (parse_time(schedule_time) or created):
            runs.append((latest, None))
    create: list[dict[str, Any]] = []
    busy = any(o.state == "Active" for o in outcomes)
    scratch = scratch_server(world, spec)
    condition = _condition(last, next_time)
    if spec.restore_test and scratch is None and runs:
        # No image to restore into: say so instead of checking less than was asked for.
        message = (
            "verify.restoreTest needs a scratch server image: no container of the StatefulSet runs a PostgreSQL or "
            "MySQL/MariaDB image; set spec.verify.image"
        )
        condition = Condition("Verified", "False", "NoScratchImage", message, "")
        runs = []
    for scheduled, demand in runs:
        job = verification_job(
            dict(world.obj), spec, scheduled=scheduled, runner=runner, request=demand, scratch=scratch
        )
        name = job["metadata"]["name"]
        if name not in {o.name for o in outcomes}:
            if busy:
                break  # one at a time: what is owed waits until the running check ends
            create.append(job)
            what = f'on request "{demand}"' if demand is not None else f"for {rfc3339(scheduled)}"
            events.append(Event("Normal", "VerificationStarted", f"Started verification Job {name} {what}"))
            busy = True
        # Created now or before (the name is the lock): handled.
        if demand is None:
            schedule_time = rfc3339(scheduled)
        else:
            handled = demand
    return VerificationPlan(
        last,
        schedule_time,
        handled,
        condition,
        tuple(create),
        tuple(delete),
        tuple(events),
        next_time,
        drills,
    )


def scratch_server(world: World, spec: DatabaseBackupSpec) -> ScratchServer | None:
    """With `verify.restoreTest`: the database's own image (or `verify.image`), as the user it runs as; None
    without a restore test, or with no image to run (no engine image in the StatefulSet, and no `verify.image`)."""
    if not spec.restore_test or spec.engine is None:
        return None
    if spec.verify_image:
        return ScratchServer(spec.engine, spec.verify_image)
    if world.statefulset is None:
        return None
    found = facts(world.statefulset, str((world.obj.get("metadata") or {}).get("namespace") or ""))
    if found.image is None:
        return None
    return ScratchServer(spec.engine, found.image, *found.run_as)


def _history(
    outcomes: Sequence[JobOutcome], previous: DatabaseBackupStatus, events: list[Event]
) -> tuple[LastVerification | None, tuple[RestoreDrill, ...]]:
    """The newest finished verification, an Event for each one that finished since the previous status, and the
    restore drills: theirs before the previous ones, at most MAX_RESTORE_DRILLS."""
    last = previous.last_verification
    drills = list(previous.restore_drills)
    seen = last.time if last else ""
    for run in sorted((o for o in outcomes if o.finished), key=lambda o: o.finished or ""):
        assert run.finished is not None
        if run.finished <= seen:
            continue
        last, seen = _verdict(run), run.finished
        drills = [*_drills(run), *drills]
        events.append(_event(last))
    return last, tuple(drills[:MAX_RESTORE_DRILLS])


def _drills(run: JobOutcome) -> list[RestoreDrill]:
    """The backups a finished verification restored into its scratch server (those with restoreSeconds)."""
    assert run.finished is not None
    found = []
    for c in (run.result or {}).get("checked") or ():
        seconds = c.get("restoreSeconds") if isinstance(c, dict) else None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            continue
        tables, rows, queries = (c.get(k) if isinstance(c.get(k), int) else 0 for k in ("tables", "rows", "queries"))
        result = FAILED if c.get("result") == FAILED else PASSED
        file = str(c.get("file") or "")
        found.append(RestoreDrill(run.finished, file, result, float(seconds), tables, rows, queries, job=run.name))
    return found


def _verdict(run: JobOutcome) -> LastVerification:
    assert run.finished is not None
    result = run.result or {}
    checked = tuple(
        CheckedBackup(
            file=str(c.get("file") or ""),
            result=FAILED if c.get("result") == FAILED else PASSED,
            reason=str(c.get("reason") or ""),
            message=str(c.get("message") or ""),
            restore_seconds=float(c["restoreSeconds"]) if isinstance(c.get("restoreSeconds"), int | float) else None,
        )
        for c in result.get("checked") or ()
        if isinstance(c, dict)
    )
    archive = ArchiveProof.from_dict(result.get("archive"), MAX_MESSAGE)
    if run.state == "Succeeded":
        return LastVerification(
            run.finished, PASSED if checked else NO_BACKUPS, run.name, backups=checked, archive=archive
        )
    if any(c.result == FAILED for c in checked):
        return LastVerification(run.finished, FAILED, run.name, backups=checked)
    # The check could not run to a verdict (the store unreachable, the deadline), or every backup passed and the
    # archive did not reproduce the newest one (ArchiveMismatch): its reason and message say which.
    reason, message = run.reason or "JobFailed", run.message or "the verification Job failed"
    return LastVerification(run.finished, FAILED, run.name, reason=reason, message=message[:MAX_MESSAGE])


def _event(verification: LastVerification) -> Event:
    job, backups = verification.job, verification.backups
    if verification.result == PASSED:
        newest = backups[0].file
        proof = verification.archive
        proven = f"; the archive reproduced {proof.to_file} from {proof.from_file}" if proof and proof.proven else ""
        message = f"{job} checked {len(backups)} backup(s), newest {newest}: all passed{proven}"
        return Event("Normal", "Verified", message[:MAX_MESSAGE])
    if verification.result == NO_BACKUPS:
        return Event("Normal", "NothingToVerify", f"{job} found no backup of this DatabaseBackup to check yet")
    return Event("Warning", "VerificationFailed", f"{job}: {_failures(verification)}"[:MAX_MESSAGE])


def _failures(verification: LastVerification) -> str:
    failed = [b for b in verification.backups if b.result == FAILED]
    if not failed:
        return f"{verification.reason}: {verification.message}"
    return "; ".join(f"{b.file}: {b.reason}: {b.message}" for b in failed)


def _condition(last: LastVerification | None, next_time: datetime | None) -> Condition | None:
    if last is None:
        if next_time is None:
            return None
        message = f"no verification has finished yet; the first is due at {rfc3339(next_time)}"
        return Condition("Verified", "Unknown", "NotVerifiedYet", message, "")
    if last.result == PASSED:
        message = f"{len(last.backups)} backup(s) checked at {last.time}, newest {last.backups[0].file}"
        return Condition("Verified", "True", PASSED, message, "")
    if last.result == NO_BACKUPS:
        return Condition("Verified", "Unknown", NO_BACKUPS, f"no backup to check at {last.time}", "")
    failed = [b for b in last.backups if b.result == FAILED]
    reason = failed[0].reason if failed else last.reason
    return Condition("Verified", "False", reason or FAILED, _failures(last)[:MAX_MESSAGE], "")
