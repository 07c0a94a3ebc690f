"""The reconcile decision, as a pure function: (the DatabaseBackup, its Jobs, its database, now) -> a Plan.

The plan says which Jobs to create and delete, the whole status to write (None when nothing changed), the Events
to record, and when to look again. The controller applies it; nothing here does I/O or reads a clock.

Scheduling follows the CronJob controller v2 (kubernetes `pkg/controller/cronjob/utils.go`):
1. The earliest slot still owed is the one after `status.lastScheduleTime` (else after the object's creation),
   no earlier than `now - startingDeadlineSeconds`.
2. Only the most recent slot that is due runs; older ones are reported missed (one Event), never run late in bulk.
3. `concurrencyPolicy` decides about a slot due while a run is active: Forbid waits (the slot runs when the active
   Job ends, if still within the deadline), Replace stops the active Job and starts the new run only once that Job
   is gone (its Pods stopped), so two runs never overlap; Allow runs both.
4. The Job name is derived from the slot, so a slot can never run twice.
Status is rebuilt from the world: the owned Jobs and their results, with the previous status only as memory of what
the Jobs no longer show (Jobs pruned by the history limits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from common.backups.defaults import default_spec
from common.backups.model import (
    ConcurrencyPolicy,
    Condition,
    ContinuousStatus,
    DatabaseBackupSpec,
    DatabaseBackupStatus,
    LastBackup,
    LastFailure,
    Phase,
    StoredBackup,
    parse_spec,
)
from common.backups.validation import validate
from common.constants import ANNOTATION_BACKUP_NOW, DEFAULT_TIME_ZONE
from common.fields import FieldError, join_errors
from common.schedule import Schedule, parse_schedule, within_window
from common.values import Engine
from reconciler.archiver import archiver_deployment
from reconciler.jobs import RunnerSettings, backup_job
from reconciler.outcomes import JobOutcome, is_verification, outcome
from reconciler.slot import SlotPlan, decide_slot, held, is_release
from reconciler.trust import backup_refusals
from reconciler.verification import decide_verification, remembered, scratch_server
from reconciler.world import Event, World, due_request, over_limit, parse_time, rfc3339

__all__ = ["Event", "Plan", "World", "decide", "decide_deleting", "runnable_spec"]

# Requeue a moment after the slot: a clock a little behind the API server's must not see the slot as not yet due.
PADDING: Final = timedelta(milliseconds=100)
# Look again this often while the database is missing (its creation also triggers a reconcile), or while a trust
# rule refuses (a Service, a namespace label or a BackupStore put right is seen within this time).
MISSING_DATABASE_RETRY: Final = timedelta(minutes=1)
TOO_MANY_MISSED: Final = 100


@dataclass(frozen=True)
class Plan:
    status: dict[str, Any] | None = None
    create: tuple[dict[str, Any], ...] = ()
    delete: tuple[str, ...] = ()  # finished Jobs beyond the history limits
    stop: tuple[str, ...] = ()  # active Jobs that concurrencyPolicy Replace ends: deleted once their Pods stopped
    events: tuple[Event, ...] = ()
    requeue_after: timedelta | None = None
    # With spec.continuous, the archiver's Deployment as it must be (reconciler.archiver); None: no archiver runs.
    archiver: dict[str, Any] | None = None
    # With PostgreSQL archiving, its replication slot held or let go (reconciler.slot).
    slot: SlotPlan = field(default_factory=SlotPlan)


def decide(world: World, runner: RunnerSettings) -> Plan:
    obj = world.obj
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    previous = DatabaseBackupStatus.from_dict(obj.get("status"))
    every = [(job, outcome(dict(job), world.termination_messages.get(_name(job)))) for job in world.jobs]
    outcomes = [o for job, o in every if not is_verification(job) and not is_release(job)]  # backup runs
    checks = [o for job, o in every if is_verification(job)]  # scheduled verifications
    events: list[Event] = []

    # 1. The admission guard: the webhook may have been bypassed or down. Same defaults, same rules.
    raw_spec = obj.get("spec")
    defaulted = (
        default_spec(raw_spec, namespace=namespace, statefulset=world.statefulset)
        if isinstance(raw_spec, Mapping)
        else raw_spec
    )
    spec, errors = parse_spec(defaulted)
    if spec is not None:
        errors.extend(validate(str(metadata.get("name") or ""), spec))
    history = _history(outcomes, previous, events)
    if spec is None or errors:
        return _blocked(world, previous, history, events, Phase.INVALID, "InvalidSpec", errors, checks)

    # 2. The database must exist; its creation triggers a reconcile, and we look again now and then anyway.
    if world.statefulset is None:
        message = f'StatefulSet "{spec.database_name}" not found in namespace "{namespace}"'
        return _blocked(world, previous, history, events, Phase.PENDING, "DatabaseNotFound", message, checks)

    # What a Job cannot do without, and neither the spec nor the StatefulSet said.
    missing = _unrunnable(spec)
    if missing:
        return _blocked(world, previous, history, events, Phase.INVALID, "InvalidSpec", missing, checks)

    # The trust rules, as they stand now (reconciler.trust): where the password goes, which claim is written to,
    # which image runs beside the decrypted data, which store the backups go to (resolved here for the Jobs).
    spec, refusals = backup_refusals(spec, world.statefulset, world.facts)
    if refusals:
        return _blocked(world, previous, history, events, Phase.INVALID, "Refused", refusals, checks)

    # 3. What is due: the most recent scheduled slot, and an on-demand request.
    # With a window, every slot moved by this object's own offset in it (docs/api.md#windows).
    schedule = within_window(
        parse_schedule(spec.schedule, spec.time_zone or DEFAULT_TIME_ZONE), spec.window, str(metadata.get("uid") or "")
    )
    slot = None if spec.suspend else _due_slot(world, spec, schedule, previous, events)
    request = due_request(obj, ANNOTATION_BACKUP_NOW, previous.last_backup_now_request)

    # 4. Concurrency, then the Jobs to create. A Job that already exists means the run was already started.
    active = [o for o in outcomes if o.state == "Active"]
    existing = {o.name for o in outcomes}
    create: list[dict[str, Any]] = []
    delete: list[str] = []
    stop: list[str] = []
    last_schedule = previous.last_schedule_time
    handled_request = previous.last_backup_now_request
    runs: list[tuple[datetime, str | None]] = []
    if request is not None:
        runs.append((world.now, request))
    if slot is not None:
        runs.append((slot, None))
    # After a gap in the binlog archive, restores reach only from a backup taken since: one starts at once.
    gap = _archive_gap(obj, spec, history)
    if gap is not None and not any(demand == gap for _, demand in runs):
        runs.append((world.now, gap))
    scratch = scratch_server(world, spec)
    for scheduled, demand in runs:
        job = backup_job(dict(obj), spec, scheduled=scheduled, runner=runner, request=demand, scratch=scratch)
        name = job["metadata"]["name"]
        if name not in existing:
            if active and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
                break  # the run starts when the active Job ends; the Job's event brings us back
            if active and spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                # The new run starts on a later pass, when the deletion of the old Jobs is complete (that watch
                # event brings us back); the slot stays owed meanwhile, like Forbid's.
                running_on = [o.name for o in active if not o.deleting]
                if running_on:
                    stop += running_on
                    events.append(
                        Event("Normal", "Replaced", f"Stopping {', '.join(running_on)}; {name} starts once it is gone")
                    )
                break
            create.append(job)
            what = f'on request "{demand}"' if demand is not None else f"for {rfc3339(scheduled)}"
            if demand == gap:
                log = "WAL" if spec.engine is Engine.POSTGRESQL else "binlog"
                what = f"after a gap in the {log} archive: restores reach only from a backup taken since"
            events.append(Event("Normal", "Scheduled", f"Started backup Job {name} {what}"))
            active.append(outcome(job, None))
        # Created now or before (the name is the lock): this run is handled.
        if demand is None:
            last_schedule = rfc3339(scheduled)
        elif demand != gap:  # a gap's run is its own: the backup-now annotation's memory is not touched
            handled_request = demand

    # 5. History limits: the newest finished Jobs stay, by outcome.
    delete += over_limit(outcomes, "Succeeded", spec.successful_jobs_history_limit)
    delete += over_limit(outcomes, "Failed", spec.failed_jobs_history_limit)

    # 6. Scheduled verification of what is stored: its own Jobs, its own part of the status.
    verifying = decide_verification(world, spec, previous, checks, runner)
    create += verifying.create
    delete += verifying.delete
    events += verifying.events

    # 7. Status, rebuilt from the Jobs (and memory of pruned ones).
    running = [o.name for o in active if o.name not in delete]
    next_time = None if spec.suspend else schedule.next_after(world.now)
    status = replace(
        history,
        phase=_phase(spec, running, history),
        in_progress=bool(running),
        active=tuple(running),
        last_schedule_time=last_schedule,
        next_backup_time=rfc3339(next_time) if next_time else None,
        last_backup_now_request=handled_request,
        observed_generation=_int(metadata.get("generation")),
        last_verification=verifying.last_verification,
        last_verification_schedule_time=verifying.schedule_time,
        restore_drills=verifying.drills,
        last_verify_now_request=verifying.request,
    )
    ready = (
        Condition("Ready", "True", "Suspended", "suspended: no new backups start", "")
        if spec.suspend
        else Condition("Ready", "True", "Scheduled", f"next backup at {status.next_backup_time}", "")
    )
    status = _with_conditions(status, previous, world, ready, verifying.condition)
    due = [t for t in (next_time, verifying.next_time) if t is not None]
    requeue = min(due) - world.now + PADDING if due else None
    # 8. Continuous archiving: an archiver while the spec asks for one and the trust rules allow its run's access.
    archiver = archiver_deployment(obj, spec, runner) if spec.continuous is not None and not spec.suspend else None
    return Plan(
        status=_if_changed(status, previous),
        create=tuple(create),
        delete=tuple(dict.fromkeys(delete)),
        stop=tuple(stop),
        events=tuple(events),
        requeue_after=requeue,
        archiver=archiver,
        slot=decide_slot(obj, spec, world.jobs, world.termination_messages, runner),
    )


def decide_deleting(world: World, runner: RunnerSettings) -> SlotPlan:
    """A DatabaseBackup on its way out (a finalizer holds it): no run starts; its replication slot is let go."""
    if not held(world.obj):
        return SlotPlan()  # another's finalizer (or a foreground deletion): nothing of ours to let go
    return decide_slot(world.obj, runnable_spec(world), world.jobs, world.termination_messages, runner)


def runnable_spec(world: World) -> DatabaseBackupSpec | None:
    """The spec as a run would use it (steps 1 and 2 of `decide`, and the trust rules), or None when no run may
    start with it."""
    metadata = world.obj.get("metadata") or {}
    raw_spec = world.obj.get("spec")
    if not isinstance(raw_spec, Mapping) or world.statefulset is None:
        return None
    namespace = str(metadata.get("namespace") or "")
    spec, errors = parse_spec(default_spec(raw_spec, namespace=namespace, statefulset=world.statefulset))
    if spec is None or errors or validate(str(metadata.get("name") or ""), spec) or _unrunnable(spec):
        return None
    spec, refusals = backup_refusals(spec, world.statefulset, world.facts)
    return None if refusals else spec


# --- scheduling ---------------------------------------------------------------------------------------------


def _due_slot(
    world: World, spec: DatabaseBackupSpec, schedule: Schedule, previous: DatabaseBackupStatus, events: list[Event]
) -> datetime | None:
    """The slot to run now, if any. Older unrun slots are reported, not run."""
    created = parse_time(world.obj.get("metadata", {}).get("creationTimestamp")) or world.now
    earliest = parse_time(previous.last_schedule_time) or created
    latest = schedule.latest_at_or_before(world.now)
    if latest <= earliest:
        return None
    if spec.starting_deadline_seconds is not None:
        deadline = world.now - timedelta(seconds=spec.starting_deadline_seconds)
        if latest < deadline:
            # Too late to start: CronJob's "missed" case. The next slot runs as usual.
            events.append(
                Event(
                    "Warning",
                    "Missed",
                    f"Missed the backup at {rfc3339(latest)}: not started within "
                    f"startingDeadlineSeconds ({spec.starting_deadline_seconds})",
                )
            )
            return None
        earliest = max(earliest, deadline)
    skipped = sum(1 for _ in _limited(schedule.firings(earliest, latest - timedelta(microseconds=1))))
    if skipped:
        many = "more than 100" if skipped > TOO_MANY_MISSED else str(skipped)
        events.append(
            Event(
                "Warning",
                "Missed",
                f"Missed {many} earlier backup slot(s); running only the most recent, {rfc3339(latest)}",
            )
        )
    return latest


def _archive_gap(obj: Mapping[str, Any], spec: DatabaseBackupSpec, history: DatabaseBackupStatus) -> str | None:
    """The request of a backup owed to a gap in the binlog or WAL archive (`status.continuous.gapAt`, the first
    event archived after it) that no successful backup has followed yet; None when none is owed. Named after the gap, so
    that its Job's name (the lock) starts one backup per gap."""
    if spec.continuous is None or spec.suspend:
        return None
    continuous = ContinuousStatus.from_dict((obj.get("status") or {}).get("continuous"))
    gap = parse_time(continuous.gap_at) if continuous is not None else None
    last = parse_time(history.last_backup_time)
    if gap is None or (last is not None and last >= gap):
        return None
    return f"archive-gap-{rfc3339(gap)}"


def _unrunnable(spec: DatabaseBackupSpec) -> list[FieldError]:
    errors = []
    if spec.engine is None:
        errors.append(FieldError("spec.engine", "not set, and the StatefulSet's image does not say; set it"))
    if spec.connection.host is None:
        errors.append(FieldError("spec.connection.host", "not set, and the StatefulSet has no serviceName; set it"))
    return errors


def _limited(items: Any) -> Any:
    for count, item in enumerate(items):
        if count > TOO_MANY_MISSED:
            return
        yield item


# --- status -------------------------------------------------------------------------------------------------


def _history(
    outcomes: Sequence[JobOutcome], previous: DatabaseBackupStatus, events: list[Event]
) -> DatabaseBackupStatus:
    """Last success, last failure and the failure streak, from the Jobs and what the previous status remembers.
    Runs that finished since the previous status also become Events."""
    last_time, last_backup = previous.last_backup_time, previous.last_backup
    last_failure = previous.last_failure
    streak = previous.consecutive_failures
    finished = sorted((o for o in outcomes if o.finished), key=lambda o: o.finished or "")
    seen_success = last_time or ""
    seen_failure = last_failure.time if last_failure else ""
    for run in finished:
        assert run.finished is not None
        if run.state == "Succeeded" and run.finished > seen_success:
            last_time, last_backup, streak, seen_success = run.finished, _last_backup(run), 0, run.finished
            events.append(Event("Normal", "BackupSucceeded", _success_message(run, last_backup)))
        elif run.state == "Failed" and run.finished > seen_failure:
            last_failure = LastFailure(run.finished, run.reason or "JobFailed", run.message or "")
            seen_failure = run.finished
            streak += 1
            events.append(Event("Warning", "BackupFailed", f"{run.name}: {run.reason}: {run.message}"))
    return DatabaseBackupStatus(
        last_backup_time=last_time, last_backup=last_backup, last_failure=last_failure, consecutive_failures=streak
    )


def _last_backup(run: JobOutcome) -> LastBackup:
    result = run.result or {}
    size = result.get("size")
    found = result.get("retention")
    retention: dict[str, Any] = found if isinstance(found, dict) else {}
    kept, kept_bytes = retention.get("kept"), retention.get("keptBytes")
    by_rule = retention.get("byRule")
    return LastBackup(
        file=str(result.get("file") or ""),
        size=size if isinstance(size, int) else 0,
        sha256=str(result.get("sha256") or ""),
        duration=_duration(result.get("duration"), run),
        completion_time=run.finished or "",
        kept=kept if isinstance(kept, int) and not isinstance(kept, bool) else None,
        kept_bytes=kept_bytes if isinstance(kept_bytes, int) and not isinstance(kept_bytes, bool) else None,
        kept_by={str(k): v for k, v in by_rule.items() if isinstance(v, int)} if isinstance(by_rule, dict) else {},
        stored=_stored(result),
        stored_omitted=omitted if isinstance(omitted := result.get("backupsOmitted"), int) else None,
        **_base_backup(result),
    )


def _base_backup(result: Mapping[str, Any]) -> dict[str, str]:
    """The run's base backup (PostgreSQL, `baseBackup`: {file, time}), as LastBackup keeps it, and the end of the
    oldest one retention kept (`walRetention.oldestBaseBackup.time`). Ends are rounded up to the second: a restore
    to any earlier second would be refused."""
    base = result.get("baseBackup")
    file = base.get("file") if isinstance(base, Mapping) else None
    end = _end(base)
    if not isinstance(file, str) or not file or len(file) > 1024 or end is None:
        return {}
    found = {"base_backup": file, "base_backup_time": end}
    retention = result.get("walRetention")
    oldest = _end(retention.get("oldestBaseBackup")) if isinstance(retention, Mapping) else None
    if oldest is not None and oldest <= end:
        found["oldest_base_backup_time"] = oldest
    return found


def _end(base: object) -> str | None:
    """A base backup's `time` (untrusted: a string that must parse), rounded up to the second."""
    end = parse_time(base.get("time")) if isinstance(base, Mapping) else None
    if end is None:
        return None
    if end.microsecond:
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    return rfc3339(end)


def _stored(result: Mapping[str, Any]) -> tuple[StoredBackup, ...]:
    """The run's list of stored backups (`[name, size, key id or "", rules]` each), as full paths or URLs: each
    lives where the run's own file does."""
    file = str(result.get("file") or "")
    where = file.rsplit("/", 1)[0] + "/" if "/" in file else ""
    found = []
    for item in result.get("backups") or ():
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str) and "/" not in item[0]):
            continue
        name, size, key, rules = item
        found.append(
            StoredBackup(
                file=where + name,
                size=size if isinstance(size, int) and not isinstance(size, bool) else 0,
                key_id=key if isinstance(key, str) and key else None,
                kept_by=tuple(str(r) for r in rules) if isinstance(rules, list) else (),
            )
        )
    return tuple(found)


def _success_message(run: JobOutcome, backup: LastBackup) -> str:
    if not backup.file:
        return f"{run.name} finished"
    return f"{run.name} wrote {backup.file} ({backup.size:,} bytes) in {backup.duration}"


def _duration(value: object, run: JobOutcome) -> str:
    seconds: float | None = float(value) if isinstance(value, int | float) else None
    if seconds is None:
        start, end = parse_time(run.started), parse_time(run.finished)
        seconds = (end - start).total_seconds() if start and end else None
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{rest}s"


def _phase(spec: DatabaseBackupSpec, running: Sequence[str], history: DatabaseBackupStatus) -> Phase:
    if spec.suspend:
        return Phase.SUSPENDED
    if running:
        return Phase.RUNNING
    success = history.last_backup_time or ""
    failure = history.last_failure.time if history.last_failure else ""
    if not success and not failure:
        return Phase.SCHEDULED
    return Phase.SUCCEEDED if success >= failure else Phase.FAILED


def _blocked(
    world: World,
    previous: DatabaseBackupStatus,
    history: DatabaseBackupStatus,
    events: list[Event],
    phase: Phase,
    reason: str,
    problem: str | Sequence[FieldError],
    checks: Sequence[JobOutcome],
) -> Plan:
    """Invalid spec or missing database: no new runs (backups or verifications); say why in the status and once as
    an Event. Verifications that finished meanwhile are still reported."""
    message = problem if isinstance(problem, str) else join_errors(problem)
    backups = (outcome(dict(j), None) for j in world.jobs if not is_verification(j))
    active = tuple(o.name for o in backups if o.state == "Active")
    verifying = remembered(previous, checks)
    events.extend(verifying.events)
    status = replace(
        history,
        phase=phase,
        in_progress=bool(active),
        active=active,
        last_schedule_time=previous.last_schedule_time,
        last_backup_now_request=previous.last_backup_now_request,
        observed_generation=_int((world.obj.get("metadata") or {}).get("generation")),
        last_verification=verifying.last_verification,
        last_verification_schedule_time=verifying.schedule_time,
        restore_drills=verifying.drills,
        last_verify_now_request=verifying.request,
    )
    ready = Condition("Ready", "False", reason, message, "")
    status = _with_conditions(status, previous, world, ready, verifying.condition)
    old_ready = next((c for c in previous.conditions if c.type == "Ready"), None)
    if old_ready is None or (old_ready.reason, old_ready.message) != (reason, message):
        events.append(Event("Warning", reason, message))
    retry = MISSING_DATABASE_RETRY if phase is Phase.PENDING or reason == "Refused" else None
    return Plan(status=_if_changed(status, previous), events=tuple(events), requeue_after=retry)


def _with_conditions(
    status: DatabaseBackupStatus,
    previous: DatabaseBackupStatus,
    world: World,
    ready: Condition,
    verified: Condition | None,
) -> DatabaseBackupStatus:
    generation = status.observed_generation
    if status.last_backup_time is None and status.last_failure is None:
        succeeded = Condition("BackupSucceeded", "Unknown", "NoBackupYet", "no backup has finished yet", "")
    elif status.last_failure is None or (status.last_backup_time or "") >= status.last_failure.time:
        succeeded = Condition("BackupSucceeded", "True", "Succeeded", f"last backup at {status.last_backup_time}", "")
    else:
        failure = status.last_failure
        succeeded = Condition("BackupSucceeded", "False", failure.reason, failure.message[:1000], "")
    conditions = []
    for fresh in (ready, succeeded, *((verified,) if verified is not None else ())):
        old = next((c for c in previous.conditions if c.type == fresh.type), None)
        # lastTransitionTime moves only when the status (True/False/Unknown) does.
        since = old.last_transition_time if old is not None and old.status == fresh.status else rfc3339(world.now)
        conditions.append(replace(fresh, last_transition_time=since, observed_generation=generation))
    return replace(status, conditions=tuple(conditions))


def _if_changed(status: DatabaseBackupStatus, previous: DatabaseBackupStatus) -> dict[str, Any] | None:
    return None if status == previous else status.to_dict()


# --- small helpers ------------------------------------------------------------------------------------------


def _name(job: Mapping[str, Any]) -> str:
    return str((job.get("metadata") or {}).get("name") or "")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
