"""What a Job (and its Pod's termination message) says happened: read the way the Job controller reports it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from common.constants import ANNOTATION_BACKUP_NOW, ANNOTATION_SCHEDULED_TIME, LABEL_RUN, RUN_VERIFY

__all__ = ["ANNOTATION_CANNOT_START", "ANNOTATION_RESULT", "JobOutcome", "is_verification", "outcome"]

ANNOTATION_RESULT: Final = "databases.test.io/result"  # the local executor records the runner's result here
# Why the reconciler ended a Job whose Pod could not start (reconciler.stuck): {"reason": ..., "message": ...}.
ANNOTATION_CANNOT_START: Final = "databases.test.io/cannot-start"


@dataclass(frozen=True)
class JobOutcome:
    name: str
    state: str  # Active | Succeeded | Failed
    scheduled: str | None  # the slot (RFC 3339), from our annotation
    finished: str | None  # completionTime, or the Failed condition's time
    started: str | None
    reason: str | None = None
    message: str | None = None
    result: dict[str, Any] | None = None  # the runner's JSON result line
    request: str | None = None  # the backup-now value, for on-demand runs
    deleting: bool = False  # deletion requested (a Replace): still running until its Pods have stopped


def is_verification(job: Mapping[str, Any]) -> bool:
    return ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN) == RUN_VERIFY


def outcome(job: dict[str, Any], termination_message: str | None) -> JobOutcome:
    """Read a Job the way the Job controller reports it: a Complete or Failed condition (with SuccessCriteriaMet /
    FailureTarget on recent versions) ends it; until then it is active."""
    metadata = job.get("metadata") or {}
    status = job.get("status") or {}
    annotations = metadata.get("annotations") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    result = _result(termination_message or annotations.get(ANNOTATION_RESULT))
    active = JobOutcome(
        name=str(metadata.get("name", "")),
        state="Active",
        scheduled=annotations.get(ANNOTATION_SCHEDULED_TIME),
        finished=None,
        started=status.get("startTime"),
        result=result,
        request=annotations.get(ANNOTATION_BACKUP_NOW),
        deleting=bool(metadata.get("deletionTimestamp")),
    )
    if "Complete" in conditions:
        finished = status.get("completionTime") or conditions["Complete"].get("lastTransitionTime")
        return replace(active, state="Succeeded", finished=finished)
    if "Failed" in conditions:
        failed = conditions["Failed"]
        # Ended by us (its deadline cut to end it): our reason, not the Job controller's DeadlineExceeded.
        result = result or _result(annotations.get(ANNOTATION_CANNOT_START))
        return replace(
            active,
            state="Failed",
            finished=failed.get("lastTransitionTime"),
            reason=str((result or {}).get("reason") or failed.get("reason") or "JobFailed"),
            message=str((result or {}).get("message") or failed.get("message") or "the backup Job failed"),
        )
    return active


def _result(text: str | None) -> dict[str, Any] | None:
    """The runner's JSON line; a termination message from FallbackToLogsOnError (log text) is kept as a message."""
    if not text:
        return None
    try:
        value = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"message": text.strip()[-500:]}
    return value if isinstance(value, dict) else None
