"""The archiver of a DatabaseBackup with `spec.continuous` (pure): its Deployment, and what its answers mean for
`status.continuous`.

One Deployment per DatabaseBackup, `<name>-archiver`: one replica, strategy Recreate (never two archivers on one
archive: the old Pod is gone before the new one starts), owned by the DatabaseBackup, so deleted with it. Its Pod is
a backup run's (`reconciler.jobs.pod_spec`): the trust rules decided its host, storage and image as they decide a
run's, with the same restricted security context, and Secrets reach it only as env and volumes. It runs
`dbb-backup archive` (`reconciler.arguments.archive_arguments`), which resumes where the archive stops, and answers
`GET /status` on ARCHIVER_PORT. The template's digest (an annotation) says whether the Deployment in the cluster is
the one the spec asks for; a changed spec replaces the template.

`status.continuous` comes from that answer. The Pod runs in the user's namespace, so its answer is untrusted input:
only known fields of the right type are kept, strings cut short. Its bounds are the archive's, narrowed to what a
restore can reach: a point-in-time restore loads a backup and replays the archive from that backup's binlog
position, so `recoverableFrom` is the time of the oldest kept backup taken after the archive's first event, not the
first event itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from common.backups.model import ContinuousStatus, DatabaseBackupSpec, LastBackup
from common.constants import API_VERSION, KIND, LABEL_BACKUP_NAME, LABEL_MANAGED_BY, LABEL_RUN, MANAGED_BY
from common.schedule import parse_time, rfc3339
from reconciler.arguments import ARCHIVER_PORT, archive_arguments
from reconciler.jobs import RunnerSettings, pod_spec

__all__ = [
    "ANNOTATION_TEMPLATE",
    "RUN_ARCHIVE",
    "archiver_deployment",
    "archiver_name",
    "continuous_status",
    "is_current",
    "replay_starts",
]

RUN_ARCHIVE: Final = "archive"
ANNOTATION_TEMPLATE: Final = "databases.test.io/archiver-template"  # the digest of the Pod template applied
MAX_MESSAGE: Final = 500  # an archiver's message as status keeps it
# The runner's reasons an archiver can end with (runner.errors.Reason); anything else shows as Failed.
REASONS: Final = frozenset(
    {
        "ArchiveGap",
        "BinaryLoggingOff",
        "AuthenticationFailed",
        "TlsFailed",
        "Unreachable",
        "StorageError",
        "DiskFull",
        "InvalidArguments",
        "KeyMissing",
        "Timeout",
        "InternalError",
    }
)


def archiver_name(name: str) -> str:
    return f"{name}-archiver"


def archiver_deployment(owner: Mapping[str, Any], spec: DatabaseBackupSpec, runner: RunnerSettings) -> dict[str, Any]:
    """The archiver's Deployment for `spec` (defaulted, and resolved by the trust rules as a run's is)."""
    metadata = owner["metadata"]
    name = str(metadata["name"])
    pod = pod_spec(dict(owner), spec, runner, archive_arguments(spec, dict(owner)), archive=True)
    container = pod["containers"][0]
    container["ports"] = [{"name": "status", "containerPort": ARCHIVER_PORT, "protocol": "TCP"}]
    # Ready while the stream runs: a Pod that lost its server, or found a gap, says so in /status and is not ready.
    container["readinessProbe"] = {
        "httpGet": {"path": "/healthz", "port": "status"},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    # SIGTERM publishes the binlog the archiver is on before it stops (runner.archive).
    pod["terminationGracePeriodSeconds"] = 60
    labels = {
        LABEL_BACKUP_NAME: name,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN: RUN_ARCHIVE,
        "app.kubernetes.io/name": "databasebackup",
    }
    template = {"metadata": {"labels": labels}, "spec": pod}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": archiver_name(name),
            "namespace": metadata["namespace"],
            "labels": labels,
            "annotations": {ANNOTATION_TEMPLATE: _digest(template)},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": name,
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": {LABEL_BACKUP_NAME: name, LABEL_RUN: RUN_ARCHIVE}},
            "template": template,
        },
    }


def is_current(found: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether the Deployment in the cluster runs the template `wanted` asks for (and is owned as it says)."""
    if found is None:
        return False
    metadata = found.get("metadata") or {}
    owners = [r.get("uid") for r in metadata.get("ownerReferences") or [] if r.get("controller")]
    wanted_owner = wanted["metadata"]["ownerReferences"][0]["uid"]
    digest = (metadata.get("annotations") or {}).get(ANNOTATION_TEMPLATE)
    return owners == [wanted_owner] and digest == wanted["metadata"]["annotations"][ANNOTATION_TEMPLATE]


def replay_starts(last: LastBackup | None, *, wal: bool) -> tuple[str, ...]:
    """The times a point-in-time restore can start replaying from. MySQL (not `wal`): every kept backup (each dump
    records its binlog position), as status.backups lists them. PostgreSQL (`wal`): the end of the oldest base
    backup retention kept, and the newest's (a restore picks the one that ended last before its point)."""
    if last is None:
        return ()
    if wal:
        return tuple(t for t in (last.oldest_base_backup_time, last.base_backup_time) if t)
    return tuple(backup.time for backup in last.stored)


def continuous_status(
    archiver: str,
    answer: Mapping[str, Any] | None,
    starts: Sequence[str],
    previous: ContinuousStatus | None,
    failure: Mapping[str, Any] | None = None,
    *,
    wal: bool = False,
) -> ContinuousStatus:
    """status.continuous from the archiver's last answer (None: it did not answer; the archive's bounds are then
    those last reported, and `ready` false). `starts`: the times a restore can start replaying from
    (`replay_starts`). `failure`: the result its Pod last ended with, which says why it does not answer
    (ArchiveGap, BinaryLoggingOff, ...). `wal` (PostgreSQL): the archive's first time is when its first segment
    was known complete, not where that segment starts, so a base backup that ended before it may well be covered
    (its WAL in that first segment): it counts from the archive's start, and the restore holds the segments to it."""
    if answer is None:
        why, said = _failure(failure)
        if previous is None or previous.archiver != archiver:
            return ContinuousStatus(archiver=archiver, reason=why, message=said or "the archiver has not answered yet")
        return ContinuousStatus(
            archiver=archiver,
            ready=False,
            recoverable_from=previous.recoverable_from,
            recoverable_until=previous.recoverable_until,
            lag_seconds=previous.lag_seconds,
            reason=why or previous.reason,
            message=said or previous.message or "the archiver does not answer",
            updated=previous.updated,
            gap_at=previous.gap_at,
        )
    first = _time(answer.get("recoverableFrom"))
    until = _time(answer.get("recoverableUntil"))
    gap = _time(answer.get("gapAt"))
    if wal and first is not None:
        first = datetime.min.replace(tzinfo=first.tzinfo)
    if gap is not None and first is not None and first < gap:
        first = gap  # nothing replays across a gap: only what follows it counts
    reason = answer.get("reason")
    message = answer.get("message")
    lag = answer.get("lagSeconds")
    return ContinuousStatus(
        archiver=archiver,
        ready=reason is None,
        recoverable_from=_start_after(first, starts, until),
        recoverable_until=rfc3339(until) if until is not None else None,
        lag_seconds=round(float(lag), 1) if isinstance(lag, int | float) and not isinstance(lag, bool) else None,
        reason=str(reason) if reason in REASONS else ("Failed" if reason is not None else ""),
        message=str(message)[:MAX_MESSAGE] if isinstance(message, str) else "",
        updated=rfc3339(updated) if (updated := _time(answer.get("updated"))) is not None else None,
        gap_at=rfc3339(gap) if gap is not None else None,
    )


def _failure(result: Mapping[str, Any] | None) -> tuple[str, str]:
    """(reason, message) of a failed run's result line, as status may show them (untrusted: checked and cut)."""
    if result is None:
        return "", ""
    reason, message = result.get("reason"), result.get("message")
    shown = str(reason) if reason in REASONS else "Failed"
    return shown, str(message)[:MAX_MESSAGE] if isinstance(message, str) else ""


def _start_after(first: datetime | None, starts: Sequence[str], until: datetime | None) -> str | None:
    """The oldest start at or after the archive's first event and not after its last: the earliest point a restore
    can start replaying from."""
    if first is None or until is None:
        return None
    times = sorted(t for start in starts if (t := _time(start)) is not None and first <= t <= until)
    return rfc3339(times[0]) if times else None


def _time(value: object) -> datetime | None:
    return parse_time(value) if isinstance(value, str) and len(value) <= 40 else None


def _digest(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
