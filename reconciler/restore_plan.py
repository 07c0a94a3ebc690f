"""What to do for one DatabaseRestore (pure): start its one Job, or read what the Job did into status.

A DatabaseRestore runs once. Its Job's name is fixed by the object's uid (`jobs.restore_job_name`), so a second
create (a restart, a second replica) is AlreadyExists; once its phase is Succeeded or Failed nothing is done again,
whatever resyncs or restarts come. Phases: Pending (accepted, no Job yet, or its Pod not started), Running,
Succeeded, Failed.

Before the Job, the admission rules are applied again (`common.restores.validation.judge`; a webhook may have
been bypassed),
with the trust rules (reconciler.trust): the source's BackupStore is still open to the namespace, and the host the Job
would send the password to (an external target, the target StatefulSet's Service, or the source's own connection)
passes the host rule. Then what only the reconciler can tell: the target's engine is the source's, and the target's
credentials are known. A refusal is phase Failed with its reason, and a Warning Event; nothing was started.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from common.backups.defaults import default_spec
from common.backups.model import Connection, DatabaseBackupSpec, parse_spec
from common.fields import FieldError, join_errors
from common.images import image_refusal
from common.restores.model import (
    DatabaseRestoreSpec,
    ReplayStart,
    newest_backup,
    parse_restore_spec,
    replay_start,
    targets,
)
from common.restores.validation import judge
from common.statefulset import DatabaseFacts, facts
from common.values import CredentialsSecret, Engine
from reconciler.jobs import RunnerSettings, ScratchServer, restore_job
from reconciler.outcomes import outcome
from reconciler.trust import NamespaceFacts, host_refusals, storage_refusals
from reconciler.world import Event, rfc3339

__all__ = ["FINAL", "RestorePlan", "RestoreWorld", "decide_restore", "lookups"]

FINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class RestoreWorld:
    obj: Mapping[str, Any]
    now: datetime
    job: Mapping[str, Any] | None = None  # its Job, from the cache
    termination_message: str | None = None
    # Read only while there is no Job yet (None: not found):
    source: Mapping[str, Any] | None = None
    source_statefulset: Mapping[str, Any] | None = None
    target_statefulset: Mapping[str, Any] | None = None
    # The namespace as the trust rules read it: its labels, the Service the target host names, the source's store.
    facts: NamespaceFacts = field(default_factory=lambda: NamespaceFacts(""))


@dataclass(frozen=True)
class RestorePlan:
    create: dict[str, Any] | None = None
    status: dict[str, Any] | None = None  # the whole new status, when it changed
    events: tuple[Event, ...] = ()


def needs_lookups(obj: Mapping[str, Any], job: Mapping[str, Any] | None) -> bool:
    """Whether deciding needs the source and the StatefulSets: only before the Job exists."""
    status = obj.get("status") or {}
    return job is None and status.get("phase") not in FINAL and not status.get("job")


def decide_restore(world: RestoreWorld, runner: RunnerSettings) -> RestorePlan:
    obj = world.obj
    previous: dict[str, Any] = dict(obj.get("status") or {})
    if previous.get("phase") in FINAL:
        return RestorePlan()  # run once: never again
    generation = (obj.get("metadata") or {}).get("generation")
    if world.job is not None:
        return _from_job(world, previous, generation)
    if previous.get("job"):
        # Its Job is gone before it finished (deleted by hand): the restore did not run to its end.
        return _finish(
            previous,
            "Failed",
            world.now,
            "JobDeleted",
            f"the restore Job {previous['job']} was deleted before it finished",
        )
    return _start(world, runner, previous, generation)


def _start(world: RestoreWorld, runner: RunnerSettings, previous: dict[str, Any], generation: Any) -> RestorePlan:
    obj = world.obj
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    spec, errors = parse_restore_spec(obj.get("spec"))
    if spec is None or errors:
        return _finish(previous, "Failed", world.now, "InvalidSpec", join_errors(errors))
    if world.source is None:
        refusals = judge(spec, namespace, None, world.target_statefulset is not None)
        return _finish(previous, "Failed", world.now, "SourceNotFound", join_errors(refusals))
    source, problems = _source_spec(world.source, world.source_statefulset, namespace)
    if source is None:
        message = f"DatabaseBackup {spec.database_backup!r} is invalid: {problems}"
        return _finish(previous, "Failed", world.now, "InvalidSource", message)
    s3, refusals = storage_refusals(source.s3_store, source.database_name, world.facts, SOURCE_FIELD)
    refusals = [FieldError(e.path, f"its storage: {e.message}") for e in refusals]
    refusals += judge(spec, namespace, world.source, world.target_statefulset is not None, s3)
    if refusals:
        return _finish(previous, "Failed", world.now, "Refused", join_errors(refusals))
    connection, problem = _target_connection(spec, source, world.target_statefulset, namespace)
    if connection is None:
        return _finish(previous, "Failed", world.now, "TargetUnusable", problem or "")
    refusals = host_refusals(connection.host, _host_field(spec, source), world.facts)
    if refusals:
        return _finish(previous, "Failed", world.now, "Refused", join_errors(refusals))
    scratch = replay_server(world, source, namespace) if spec.point_in_time else None
    wal = spec.point_in_time is not None and source.engine is Engine.POSTGRESQL
    if wal and scratch is None:
        return _finish(previous, "Failed", world.now, "Refused", NO_REPLAY_SERVER)
    if spec.point_in_time and spec.replace and scratch is None:
        return _finish(previous, "Failed", world.now, "Refused", NO_SCRATCH_TO_REPLACE)
    start = (
        replay_start(spec, world.source, wal=wal)
        if spec.point_in_time
        else ReplayStart(spec.file or newest_backup(world.source))
    )
    file = start.file
    assert file is not None  # judged above
    named = tuple(d for d in source.connection.databases if d != "all")
    job = restore_job(
        dict(obj),
        replace(source, connection=connection, s3=s3),
        file=file,
        targets=targets(spec, named) if spec.databases or wal else {},
        replace=spec.replace,
        runner=runner,
        no_owner=spec.no_owner,
        source=spec.database_backup,
        point_in_time=spec.point_in_time,
        scratch=scratch,
        pick_base_backup=start.pick,
    )
    status = {
        **previous,
        "phase": "Pending",
        "job": job["metadata"]["name"],
        "file": file,
        "observedGeneration": generation,
    }
    status["target"] = target = _target_of(spec, source.database_name)
    event = Event("Normal", "RestoreStarted", f"Job {job['metadata']['name']} restores {file} into {target}")
    return RestorePlan(create=job, status=status, events=(event,))


SOURCE_FIELD = "spec.source.databaseBackup"
NO_SCRATCH_TO_REPLACE = (
    "spec.replace: true with spec.pointInTime replays on a scratch server first, and there is no image to run it: "
    "neither the source's nor the target's StatefulSet runs a database image, and the source has no verify.image; "
    "restore beside the database with spec.target.databases instead"
)


NO_REPLAY_SERVER = (
    "spec.pointInTime on PostgreSQL replays the WAL on a server started from a base backup, and there is no image "
    "to run it: neither the source's nor the target's StatefulSet runs a PostgreSQL image, and the source has no "
    "verify.image"
)


def replay_server(world: RestoreWorld, source: DatabaseBackupSpec, namespace: str) -> ScratchServer | None:
    """Where a point-in-time restore replays before the target is touched: a scratch server in its Pod, running the
    source's `verify.image` (if the namespace's rules allow it), else the source StatefulSet's database image,
    else the target StatefulSet's, as the user that StatefulSet runs it as. None: no image to run."""
    if source.engine is None:
        return None
    if (
        source.verify_image
        and image_refusal(source.verify_image, world.source_statefulset, world.facts.annotations) is None
    ):
        return ScratchServer(source.engine, source.verify_image)
    for statefulset in (world.source_statefulset, world.target_statefulset):
        found = facts(statefulset, namespace) if statefulset is not None else None
        if found is not None and found.image is not None and found.engine in (None, source.engine):
            return ScratchServer(source.engine, found.image, *found.run_as)
    return None


def _beside(used: object, named: object) -> bool:
    """Whether the Job's result names a file (untrusted) in the folder or prefix of the one status names."""
    if not isinstance(used, str) or not isinstance(named, str) or len(used) > 1024 or "/" not in named:
        return False
    folder = named.rsplit("/", 1)[0] + "/"
    name = used.removeprefix(folder)
    return used.startswith(folder) and name not in ("", ".", "..") and "/" not in name


def _host_field(spec: DatabaseRestoreSpec, source: DatabaseBackupSpec) -> str:
    """Which field put the host there: the external target, the target StatefulSet, or the source's own connection."""
    if spec.external is not None:
        return "spec.target.external.host"
    if (spec.target_database_name or source.database_name) != source.database_name:
        return "spec.target.databaseName"
    return f"{SOURCE_FIELD} (its spec.connection.host)"


def lookups(world: RestoreWorld) -> tuple[str | None, str | None]:
    """(the host the restore Job would connect to, the BackupStore its source names): what the controller reads for
    the trust rules, decided the way `decide_restore` decides them."""
    namespace = str((world.obj.get("metadata") or {}).get("namespace") or "")
    spec, errors = parse_restore_spec(world.obj.get("spec"))
    if spec is None or errors or world.source is None:
        return None, None
    source, _ = _source_spec(world.source, world.source_statefulset, namespace)
    if source is None:
        return None, None
    connection, _ = _target_connection(spec, source, world.target_statefulset, namespace)
    store = source.s3_store.store if source.s3_store is not None else None
    return (connection.host if connection is not None else None), store


def _target_of(spec: DatabaseRestoreSpec, source_database: str) -> str:
    """What status.target (the TARGET column) shows: the StatefulSet, or the external server as host[:port]."""
    return str(spec.external) if spec.external is not None else spec.target_database_name or source_database


def _source_spec(
    source: Mapping[str, Any], statefulset: Mapping[str, Any] | None, namespace: str
) -> tuple[DatabaseBackupSpec | None, str]:
    raw = source.get("spec")
    if not isinstance(raw, Mapping):
        return None, "it has no spec"
    spec, errors = parse_spec(default_spec(raw, namespace=namespace, statefulset=statefulset))
    return (spec if spec is not None and not errors else None), join_errors(errors)


def _target_connection(
    spec: DatabaseRestoreSpec,
    source: DatabaseBackupSpec,
    statefulset: Mapping[str, Any] | None,
    namespace: str,
) -> tuple[Connection | None, str | None]:
    """The target's connection: the source's own for its own StatefulSet (with the credentials it backs up with),
    else what the target StatefulSet tells (its Service, port, engine and the Secret its container reads)."""
    if spec.external is not None:
        assert spec.credentials_secret is not None  # parse_restore_spec requires it
        external = spec.external
        connection = Connection(
            host=external.host, port=external.port, credentials_secret=spec.credentials_secret, tls=external.tls
        )
        return connection, None
    target = spec.target_database_name or source.database_name
    found = facts(statefulset, namespace) if statefulset is not None else None
    if target == source.database_name:
        connection = source.connection
        if spec.credentials_secret is not None:
            secret, username = _named_credentials(spec, spec.credentials_secret, found)
            connection = replace(connection, credentials_secret=secret, username=username)
        return connection, None
    if found is None:
        return None, f"StatefulSet {target!r} not found in namespace {namespace!r}"
    if found.engine is not None and source.engine is not None and found.engine is not source.engine:
        return None, (
            f"StatefulSet {target!r} runs {found.engine}, the backup is {source.engine}: a restore needs the same "
            "engine"
        )
    credentials: CredentialsSecret | None = spec.credentials_secret
    username = None
    if credentials is not None:
        credentials, username = _named_credentials(spec, credentials, found)
    elif found.credentials is not None:
        credentials = CredentialsSecret(
            found.credentials.secret, found.credentials.username_key or "username", found.credentials.password_key
        )
        username = found.credentials.username
    if credentials is None:
        note = f" ({found.credentials_note})" if found.credentials_note else ""
        return None, (
            f"the credentials of StatefulSet {target!r} cannot be read from it{note}: name their Secret in "
            "spec.target.credentialsSecret"
        )
    if found.host is None:
        return None, f"StatefulSet {target!r} has no Service to reach it by (spec.serviceName)"
    return Connection(host=found.host, port=found.port, username=username, credentials_secret=credentials), None


def _named_credentials(
    spec: DatabaseRestoreSpec, named: CredentialsSecret, found: DatabaseFacts | None
) -> tuple[CredentialsSecret, str | None]:
    """The target's Secret as the user named it, and the user to connect as: their `usernameKey`; else, when the
    target StatefulSet's database container reads its password from that same Secret, the user that container runs
    with, as a DatabaseBackup's defaults read it (its user key, or its plain user: `root` for MariaDB's root
    password, `POSTGRES_USER` or `postgres`); else the key `username`. Another Secret's user is not guessed: the
    StatefulSet's user belongs to the password it reads."""
    known = found.credentials if found is not None else None
    if spec.username_key_given or known is None or known.secret != named.name:
        return named, None
    if known.username_key is not None:
        return replace(named, username_key=known.username_key), None
    return named, known.username


def _from_job(world: RestoreWorld, previous: dict[str, Any], generation: Any) -> RestorePlan:
    job = dict(world.job or {})
    seen = outcome(job, world.termination_message)
    result = seen.result or {}
    status = {**previous, "job": seen.name, "observedGeneration": generation}
    if seen.started:
        status["startTime"] = seen.started
    if seen.state == "Active":
        status["phase"] = "Running" if seen.started else "Pending"
        return RestorePlan(status=status if status != previous else None)
    if seen.state == "Succeeded" and result.get("status") == "Restored":
        status |= {
            "phase": "Succeeded",
            "completionTime": seen.finished or rfc3339(world.now),
            "databases": [
                {"source": source, "target": target, "result": "Restored"}
                for source, target in sorted((result.get("databases") or {}).items())
            ],
        }
        if result.get("sha256"):
            status["sha256"] = result["sha256"]
        if _beside(result.get("file"), status.get("file")):
            status["file"] = result["file"]  # the base backup a PostgreSQL replay picked
        if isinstance(replayed := result.get("replayedUntil"), str) and len(replayed) <= 40:
            status["replayedUntil"] = replayed
        if isinstance(result.get("restoreSeconds"), int | float) and not isinstance(result["restoreSeconds"], bool):
            status["restoreSeconds"] = result["restoreSeconds"]
        status.pop("reason", None)
        status.pop("message", None)
        restored = ", ".join(f"{s} -> {t}" for s, t in sorted((result.get("databases") or {}).items()))
        event = Event("Normal", "Restored", f"{status.get('file')} restored: {restored}")
        return RestorePlan(status=status, events=(event,))
    reason = seen.reason or str(result.get("reason") or "RestoreFailed")
    message = seen.message or str(result.get("message") or "the restore Job failed")
    if seen.state == "Succeeded":  # exit 0 without our result line: not a restore we can vouch for
        reason, message = "NoResult", "the restore Job ended without reporting what it restored"
    elif _MISSING_ROLE.search(message) and (world.obj.get("spec") or {}).get("noOwner") is not True:
        message += (
            " (the target server lacks a role that the backup names as an owner or in a grant, and the restore, one "
            "transaction, changed nothing: create the role, or set spec.noOwner: true to restore without ownership "
            "and grants)"
        )
    return _finish(status, "Failed", world.now, reason, message, finished=seen.finished)


_MISSING_ROLE = re.compile(r'role "[^"]*" does not exist')


def _finish(
    status: dict[str, Any],
    phase: str,
    now: datetime,
    reason: str,
    message: str,
    *,
    finished: str | None = None,
) -> RestorePlan:
    new = {**status, "phase": phase, "completionTime": finished or rfc3339(now), "reason": reason, "message": message}
    event = Event("Warning", "RestoreFailed", f"{reason}: {message}")
    return RestorePlan(status=new, events=(event,))
