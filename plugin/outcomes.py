"""Where a requested backup, check or restore stands, judged from the objects alone (pure; `plugin.follow` reads
them again and again until one of these says done).

How the operator answers a request (reconciler.backup_plan, docs/api.md):
- backup-now: `status.lastBackupNowRequest` takes the annotation's value once the run's Job exists; that Job carries
  the value in the same annotation. Its end reaches status as `lastBackup` (`completionTime` is the Job's) or
  `lastFailure` (`time` is the Job's Failed condition's). While another run holds a Forbid policy, or a cap holds
  the run back (phase Waiting), the request stays unanswered.
- verify-now: `status.lastVerifyNowRequest`, a Job labelled run=verify with the value in the verify-now
  annotation, and `status.lastVerification.job` naming that Job once it has finished.
- A DatabaseRestore: its own `status.phase`, `job`, `reason` and `message`.

Jobs are read when the user may; without that, a request is done when status records an outcome newer than the
one before the request (`Before`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.constants import ANNOTATION_BACKUP_NOW, ANNOTATION_VERIFY_NOW, LABEL_RUN, RUN_VERIFY
from plugin.progress import format_bytes
from plugin.shapes import items, one_line, parse_time, part, text

__all__ = ["Before", "Step", "backup_step", "before", "restore_step", "verify_step"]


@dataclass(frozen=True)
class Step:
    done: bool
    ok: bool = False
    lines: tuple[str, ...] = ()  # the result, when done
    note: str | None = None  # what it waits for now
    job: str | None = None  # the Job doing the work, whose log carries its progress


@dataclass(frozen=True)
class Before:
    """The outcomes status held when the request was made."""

    success: str | None
    failure: str | None
    verification: str | None


def before(obj: Mapping[str, Any]) -> Before:
    status = part(obj, "status")
    return Before(
        success=text(status.get("lastBackupTime")),
        failure=text(part(status, "lastFailure").get("time")),
        verification=text(part(status, "lastVerification").get("time")),
    )


def backup_step(obj: Mapping[str, Any], request: str, jobs: Sequence[Mapping[str, Any]] | None, was: Before) -> Step:
    """`jobs`: the DatabaseBackup's Jobs, or None when the user may not read Jobs."""
    status = part(obj, "status")
    if status.get("lastBackupNowRequest") != request:
        return _unanswered(obj, "backup")
    job = _job_for(jobs, ANNOTATION_BACKUP_NOW, request, verification=False)
    last, failure = part(status, "lastBackup"), part(status, "lastFailure")
    if job is not None:  # else not readable, or gone already (history limits): status alone tells
        state, finished = _job_state(job)
        name = str(part(job, "metadata").get("name") or "")
        if state == "Active":
            return Step(False, note=f"backup Job {name} is running", job=name)
        if state == "Succeeded" and _at_or_after(status.get("lastBackupTime"), finished):
            return Step(True, True, _backup_lines(last), job=name)
        if state == "Failed" and _at_or_after(failure.get("time"), finished):
            return Step(True, False, (_failure_line("backup failed", failure),), job=name)
        return Step(False, note=f"backup Job {name} has ended; waiting for the operator to record it", job=name)
    if _after(status.get("lastBackupTime"), was.success):
        return Step(True, True, _backup_lines(last))
    if _after(failure.get("time"), was.failure):
        return Step(True, False, (_failure_line("backup failed", failure),))
    return Step(False, note="the backup is running")


def verify_step(obj: Mapping[str, Any], request: str, jobs: Sequence[Mapping[str, Any]] | None, was: Before) -> Step:
    status = part(obj, "status")
    if status.get("lastVerifyNowRequest") != request:
        return _unanswered(obj, "check")
    verification = part(status, "lastVerification")
    job = _job_for(jobs, ANNOTATION_VERIFY_NOW, request, verification=True)
    if job is not None:
        name = str(part(job, "metadata").get("name") or "")
        if verification.get("job") == name:
            return _verification_result(verification, name)
        return Step(False, note=f"verification Job {name} is running", job=name)
    if _after(verification.get("time"), was.verification):
        return _verification_result(verification, None)
    return Step(False, note="the check is running")


def restore_step(obj: Mapping[str, Any]) -> Step:
    status = part(obj, "status")
    phase, job = status.get("phase"), text(status.get("job"))
    if phase == "Succeeded":
        restored = [
            f"{d.get('source')} -> {d.get('target')}" for d in items(status.get("databases")) if d.get("source")
        ]
        lines = [f"restored {status.get('file') or 'the backup'} into {status.get('target') or 'the target'}"]
        if restored:
            lines.append("databases: " + ", ".join(restored))
        if status.get("replayedUntil"):
            log = "WAL" if ".base.tar." in str(status.get("file") or "") else "binlog"  # from a PostgreSQL base backup
            lines.append(f"replayed the archived {log} up to {status['replayedUntil']} (the database as it was then)")
        if status.get("sha256"):
            lines.append(f"sha256 {status['sha256']} (checked before commit)")
        seconds = status.get("restoreSeconds")
        if isinstance(seconds, int | float):
            lines[0] += f" in {seconds:.1f}s"
        return Step(True, True, tuple(lines), job=job)
    if phase == "Failed":
        return Step(True, False, (_failure_line("restore failed", status),), job=job)
    if job is not None:
        return Step(False, note=f"restore Job {job} is running", job=job)
    return Step(False, note="waiting for the operator to start the restore")


def _unanswered(obj: Mapping[str, Any], what: str) -> Step:
    """A request the operator has not acted on: why, or that it never will as things stand."""
    status = part(obj, "status")
    ready = next((c for c in items(status.get("conditions")) if c.get("type") == "Ready"), None)
    if status.get("phase") in ("Invalid", "Pending") and ready is not None and ready.get("status") == "False":
        # The operator leaves the request unanswered while the object cannot run; it runs once that is fixed.
        why = f"{ready.get('reason') or 'NotReady'}: {one_line(ready.get('message'))}".rstrip(": ")
        return Step(
            True, False, (f"the {what} cannot start: {why}", f"the request stands: the {what} runs once that is fixed")
        )
    if status.get("phase") == "Waiting":
        return Step(False, note=f"waiting: {part(status, 'waiting').get('cap') or 'a cap holds the run back'}")
    active = [str(a.get("name")) for a in items(status.get("active")) if a.get("name")]
    if active and what == "backup":
        return Step(False, note=f"waiting for {', '.join(active)} to finish first")
    return Step(False, note=f"waiting for the operator to start the {what}")


def _job_for(
    jobs: Sequence[Mapping[str, Any]] | None, annotation: str, request: str, *, verification: bool
) -> Mapping[str, Any] | None:
    for job in jobs or ():
        metadata = part(job, "metadata")
        if (part(metadata, "labels").get(LABEL_RUN) == RUN_VERIFY) != verification:
            continue
        if part(metadata, "annotations").get(annotation) == request:
            return job
    return None


def _job_state(job: Mapping[str, Any]) -> tuple[str, str | None]:
    """Active, Succeeded or Failed, and when it ended, read as the reconciler reads it (reconciler.outcomes)."""
    status = part(job, "status")
    conditions = {c.get("type"): c for c in items(status.get("conditions")) if c.get("status") == "True"}
    if "Complete" in conditions:
        return "Succeeded", text(status.get("completionTime")) or text(conditions["Complete"].get("lastTransitionTime"))
    if "Failed" in conditions:
        return "Failed", text(conditions["Failed"].get("lastTransitionTime"))
    return "Active", None


def _backup_lines(last: Mapping[str, Any]) -> tuple[str, ...]:
    size = last.get("size")
    shown = f" ({format_bytes(size)}, {size:,} bytes)" if isinstance(size, int) and not isinstance(size, bool) else ""
    took = f" in {last['duration']}" if last.get("duration") else ""
    lines = [f"backup written: {last.get('url') or last.get('file') or '(no file recorded)'}{shown}{took}"]
    if last.get("sha256"):
        lines.append(f"sha256 {last['sha256']}")
    return tuple(lines)


def _verification_result(verification: Mapping[str, Any], job: str | None) -> Step:
    result = verification.get("result")
    checked = items(verification.get("backups"))
    if result == "NoBackups":
        return Step(True, True, ("nothing to check: no stored backup yet",), job=job)
    lines = [f"{b.get('result')}  {b.get('file')}" + _reason(b) for b in checked]
    if result == "Passed":
        return Step(True, True, (f"verification passed: {len(checked)} backup(s) checked", *lines), job=job)
    if not checked:
        lines = [_failure_line("the check could not finish", verification)]
    return Step(True, False, ("verification failed", *lines), job=job)


def _reason(backup: Mapping[str, Any]) -> str:
    if backup.get("result") != "Failed":
        return ""
    return f"  {backup.get('reason') or 'Failed'}: {one_line(backup.get('message'))}"


def _failure_line(what: str, failure: Mapping[str, Any]) -> str:
    return f"{what}: {failure.get('reason') or 'Failed'}: {one_line(failure.get('message'))}".rstrip(": ")


def _after(value: object, previous: str | None) -> bool:
    now, then = parse_time(value), parse_time(previous)
    return now is not None and (then is None or now > then)


def _at_or_after(value: object, moment: str | None) -> bool:
    now, then = parse_time(value), parse_time(moment)
    return now is not None and (then is None or now >= then)
