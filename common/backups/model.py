"""The DatabaseBackup model: typed spec and status, parsed from and written to the API's JSON.

`parse_spec` reads the wire format (camelCase dicts) into a frozen `DatabaseBackupSpec`, collecting every problem as
a `FieldError` (`spec.suspend: must be a boolean, not "yes"`) instead of stopping at the first, so a user sees all
of them in one `kubectl apply`. It checks shapes and types only; what the values mean is `validation`'s job.
`None` in the spec means "not given": defaulting decides what it becomes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from common.fields import FieldError, Reader, or_default, show
from common.schedule import parse_time, rfc3339
from common.values import (
    CredentialsSecret,
    Engine,
    S3Storage,
    SecretKeyRef,
    StoreReference,
    Tls,
    read_credentials,
    read_tls,
)

__all__ = [
    "MAX_QUERY_LENGTH",
    "MAX_VERIFIED_BACKUPS",
    "MAX_VERIFY_QUERIES",
    "CheckedBackup",
    "Compression",
    "ConcurrencyPolicy",
    "Condition",
    "Connection",
    "Continuous",
    "ContinuousStatus",
    "DatabaseBackupSpec",
    "DatabaseBackupStatus",
    "LastBackup",
    "LastFailure",
    "LastVerification",
    "Phase",
    "backup_time",
    "parse_spec",
]


class Compression(StrEnum):
    GZIP = "Gzip"
    ZSTD = "Zstd"
    NONE = "None"


class ConcurrencyPolicy(StrEnum):
    FORBID = "Forbid"
    REPLACE = "Replace"
    ALLOW = "Allow"


class Phase(StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    INVALID = "Invalid"
    WAITING = "Waiting"  # a due run held back by an administrator's cap (reconciler.capacity)


@dataclass(frozen=True)
class Connection:
    host: str | None = None
    port: int | None = None
    username: str | None = None  # a plain user name, when the Secret holds only the password
    databases: tuple[str, ...] = ()  # empty: all databases
    credentials_secret: CredentialsSecret | None = None
    tls: Tls | None = None


RESOURCE_NAMES: Final = ("cpu", "memory", "ephemeral-storage")
# spec.verify.backups: what one verification Job can report in its Pod's termination message (4096 bytes).
MAX_VERIFIED_BACKUPS: Final = 10
MAX_RESTORE_DRILLS: Final = 5  # status.restoreDrills: the evidence an auditor reads, newest first
_QUANTITY: Final = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_SUFFIXES: Final = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity(text: str) -> float | None:
    """A Kubernetes quantity's value (`500m` is 0.5, `1Gi` is 1073741824), or None if it is not one we accept."""
    match = _QUANTITY.fullmatch(text)
    return float(match["number"]) * _SUFFIXES[match["suffix"] or ""] if match else None


DEFAULT_REQUESTS: Final = {"cpu": "100m", "memory": "128Mi"}
DEFAULT_LIMITS: Final = {"memory": "512Mi"}


@dataclass(frozen=True)
class Resources:
    """The backup container's requests and limits, as (resource, quantity) pairs; unset ones keep the defaults."""

    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()

    def effective(self) -> dict[str, dict[str, str]]:
        """The defaults with the user's values over them. Where the user set only one side and the default of the
        other side would contradict it (a 1Gi request against the 512Mi default limit), that side follows the
        user's value, so that a valid spec always gives a valid Pod."""
        given_requests, given_limits = dict(self.requests), dict(self.limits)
        requests = DEFAULT_REQUESTS | given_requests
        limits = DEFAULT_LIMITS | given_limits
        for name in requests.keys() & limits.keys():
            request, limit = quantity(requests[name]), quantity(limits[name])
            if request is None or limit is None or request <= limit:
                continue
            if name in given_requests and name not in given_limits:
                limits[name] = requests[name]
            elif name in given_limits and name not in given_requests:
                requests[name] = limits[name]
        return {"requests": requests, "limits": limits}


@dataclass(frozen=True)
class VerifyQuery:
    """spec.verify.queries[]: SQL whose result a run records and every restore test compares (PostgreSQL)."""

    name: str
    sql: str
    database: str | None = None  # None: the one database backed up


MAX_VERIFY_QUERIES: Final = 16
MAX_QUERY_LENGTH: Final = 4096


@dataclass(frozen=True)
class Continuous:
    """`spec.continuous`: the server's binlogs archived as it writes them, beside the scheduled backups, so that a
    restore can stop at any second in between (docs/point-in-time.md)."""

    max_lag_seconds: int = 60  # the archive is never further behind the server than this
    window: str | None = None  # how far back point-in-time restores must reach (`7d`): kept whatever retention says


MIN_MAX_LAG_SECONDS: Final = 10
MAX_MAX_LAG_SECONDS: Final = 3600


@dataclass(frozen=True)
class DatabaseBackupSpec:
    database_name: str
    schedule: str
    # Run at a fixed offset within this long after each firing (`common.schedule.within_window`): `4h`, `90m`.
    window: str | None = None
    backup_path: str | None = None
    time_zone: str | None = None
    suspend: bool = False
    engine: Engine | None = None
    connection: Connection = field(default_factory=Connection)
    claim_name: str | None = None
    s3_store: StoreReference | None = None  # storage.s3 as written
    s3: S3Storage | None = None  # storage.s3 resolved through its BackupStore, by the reconciler (never parsed)
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    starting_deadline_seconds: int | None = None
    backoff_limit: int = 1
    active_deadline_seconds: int = 3600
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 1
    keep_last: int = 7
    # Retention by calendar (runner.retention), in time_zone: the newest backup of each of the last N periods.
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    max_age: str | None = None  # a cap over every rule: `36h`, `90d`, `52w`
    compression: Compression = Compression.GZIP
    encryption_key: SecretKeyRef | None = None
    restore_test: bool = False
    resources: Resources = field(default_factory=Resources)
    # Scheduled verification of what is stored (spec.verify.schedule), in the same time zone as the backups.
    verify_schedule: str | None = None
    verify_backups: int = 1
    verify_image: str | None = None  # the scratch server's image for restore tests; default the StatefulSet's
    verify_queries: tuple[VerifyQuery, ...] = ()
    # The role verify.queries run as on the database's own server: one that can only read (docs/security.md).
    verify_query_credentials: CredentialsSecret | None = None
    continuous: Continuous | None = None


# --- status ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "type": self.type,
                "status": self.status,
                "reason": self.reason,
                "message": self.message,
                "lastTransitionTime": self.last_transition_time,
                "observedGeneration": self.observed_generation,
            }
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Condition:
        return cls(
            type=str(raw.get("type", "")),
            status=str(raw.get("status", "Unknown")),
            reason=str(raw.get("reason", "")),
            message=str(raw.get("message", "")),
            last_transition_time=str(raw.get("lastTransitionTime", "")),
            observed_generation=_int_or_none(raw.get("observedGeneration")),
        )


_BACKUP_TIME: Final = re.compile(r"-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z\.")


def backup_time(file: str) -> str:
    """A backup's time (RFC 3339), from its name (`<prefix>-YYYYmmddTHHMMSSZ.<ext>`); "" when it has none."""
    found = _BACKUP_TIME.search(file.rsplit("/", 1)[-1])
    return "{}-{}-{}T{}:{}:{}Z".format(*found.groups()) if found else ""


@dataclass(frozen=True)
class StoredBackup:
    """One stored backup of this DatabaseBackup, as its last run listed it (status.backups)."""

    file: str  # its path on the volume, or its s3:// URL
    size: int
    key_id: str | None  # the key it is encrypted with (None: not encrypted, or written before keys had ids)
    kept_by: tuple[str, ...]  # the retention rules that keep it

    @property
    def time(self) -> str:
        """Its time, from its name (`<prefix>-YYYYmmddTHHMMSSZ.<ext>`)."""
        return backup_time(self.file)

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "time": self.time or None,
                "file": self.file,
                "size": self.size,
                "encrypted": self.file.endswith(".enc"),
                "keyId": self.key_id,
                "keptBy": list(self.kept_by) or None,
            }
        )

    @classmethod
    def from_dict(cls, raw: object) -> StoredBackup | None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("file"), str):
            return None
        rules = raw.get("keptBy")
        return cls(
            file=raw["file"],
            size=_int_or_none(raw.get("size")) or 0,
            key_id=_str_or_none(raw.get("keyId")),
            kept_by=tuple(str(r) for r in rules) if isinstance(rules, list) else (),
        )


@dataclass(frozen=True)
class LastBackup:
    file: str
    size: int
    sha256: str
    duration: str
    completion_time: str
    kept: int | None = None  # backups of this owner retention kept after the run
    kept_bytes: int | None = None  # and their sizes together
    kept_by: Mapping[str, int] = field(default_factory=dict)  # how many each rule keeps (one may be kept by several)
    # Every stored backup after the run, newest first (status.backups), and how many of the oldest did not fit.
    stored: tuple[StoredBackup, ...] = ()
    stored_omitted: int | None = None
    # PostgreSQL with spec.continuous: the base backup the run also took, and its end (a restore to a point in
    # time can start from it for any second from then on).
    base_backup: str | None = None
    base_backup_time: str | None = None
    # And the end of the oldest base backup retention keeps (the earliest a WAL replay can start from).
    oldest_base_backup_time: str | None = None

    @property
    def url(self) -> str | None:
        """The object's URL, for a backup in a bucket (its `file` is then that URL)."""
        return self.file if self.file.startswith("s3://") else None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "file": self.file,
                "url": self.url,
                "size": self.size,
                "sha256": self.sha256,
                "duration": self.duration,
                "completionTime": self.completion_time,
                "kept": self.kept,
                "keptBytes": self.kept_bytes,
                "keptBy": dict(self.kept_by) or None,
                "baseBackup": _drop_none(
                    {
                        "file": self.base_backup,
                        "time": self.base_backup_time,
                        "oldestTime": self.oldest_base_backup_time,
                    }
                )
                if self.base_backup
                else None,
            }
        )


@dataclass(frozen=True)
class LastFailure:
    time: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class RestoreDrill:
    """One backup restored into a scratch server and checked by a scheduled verification: the evidence that it
    restores, and in how long (the restore time a team plans an outage around)."""

    time: str  # when the verification finished
    file: str
    result: str  # Passed | Failed
    seconds: float  # restore and check, for this backup
    tables: int = 0  # tables whose row counts matched the dump's
    rows: int = 0  # rows counted
    queries: int = 0  # the backup's recorded queries run again with the same answers
    job: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "file": self.file,
            "result": self.result,
            "seconds": self.seconds,
            "tables": self.tables,
            "rows": self.rows,
            "queries": self.queries,
            "job": self.job,
        }

    @classmethod
    def from_dict(cls, raw: object) -> RestoreDrill | None:
        if not isinstance(raw, Mapping):
            return None
        seconds = raw.get("seconds")
        return cls(
            time=str(raw.get("time", "")),
            file=str(raw.get("file", "")),
            result=str(raw.get("result", "")),
            seconds=float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else 0.0,
            tables=_int_or_none(raw.get("tables")) or 0,
            rows=_int_or_none(raw.get("rows")) or 0,
            queries=_int_or_none(raw.get("queries")) or 0,
            job=str(raw.get("job", "")),
        )


@dataclass(frozen=True)
class CheckedBackup:
    """One stored backup as a scheduled verification found it."""

    file: str
    result: str  # Passed | Failed
    reason: str = ""
    message: str = ""
    restore_seconds: float | None = None  # with a restore test: how long restoring and checking it took

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "file": self.file,
                "result": self.result,
                "reason": self.reason or None,
                "message": self.message or None,
                "restoreSeconds": self.restore_seconds,
            }
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CheckedBackup:
        seconds = raw.get("restoreSeconds")
        return cls(
            file=str(raw.get("file", "")),
            result=str(raw.get("result", "")),
            reason=str(raw.get("reason") or ""),
            message=str(raw.get("message") or ""),
            restore_seconds=float(seconds)
            if isinstance(seconds, int | float) and not isinstance(seconds, bool)
            else None,
        )


@dataclass(frozen=True)
class ArchiveProof:
    """With `spec.continuous` and a restore test: whether the check reproduced backup `to` exactly by restoring
    backup `from` and replaying the archive up to `to`'s binlog coordinates, on its scratch server (`why`: why there
    was nothing to prove yet)."""

    proven: bool
    from_file: str = ""
    to_file: str = ""
    until: str = ""  # `to`'s end: the archive is proven complete up to this second
    tables: int | None = None
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "proven": self.proven,
                "from": self.from_file or None,
                "to": self.to_file or None,
                "until": self.until or None,
                "tables": self.tables,
                "why": self.why or None,
            }
        )

    @classmethod
    def from_dict(cls, raw: object, limit: int = 500) -> ArchiveProof | None:
        """Also reads a check's own answer, which is untrusted: known fields of the right type, text cut short."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("proven"), bool):
            return None

        def text(key: str) -> str:
            value = raw.get(key)
            return value[:limit] if isinstance(value, str) else ""

        tables = raw.get("tables")
        counted = tables if isinstance(tables, int) and not isinstance(tables, bool) and 0 <= tables < 2**31 else None
        until = parse_time(raw.get("until"))  # a date-time in the schema: anything else would fail the whole write
        return cls(raw["proven"], text("from"), text("to"), rfc3339(until) if until else "", counted, text("why"))


@dataclass(frozen=True)
class LastVerification:
    """The last scheduled verification that finished: when, its verdict, and each backup it checked."""

    time: str
    result: str  # Passed | Failed
    job: str
    reason: str = ""  # why the run itself failed, when it could not check (no verdict per backup)
    message: str = ""
    backups: tuple[CheckedBackup, ...] = ()
    archive: ArchiveProof | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "time": self.time,
                "result": self.result,
                "job": self.job,
                "reason": self.reason or None,
                "message": self.message or None,
                "backupsChecked": len(self.backups),
                "backups": [b.to_dict() for b in self.backups],
                "archive": self.archive.to_dict() if self.archive is not None else None,
            }
        )

    @classmethod
    def from_dict(cls, raw: object) -> LastVerification | None:
        if not isinstance(raw, Mapping):
            return None
        return cls(
            time=str(raw.get("time", "")),
            result=str(raw.get("result", "")),
            job=str(raw.get("job", "")),
            reason=str(raw.get("reason") or ""),
            message=str(raw.get("message") or ""),
            backups=tuple(CheckedBackup.from_dict(b) for b in raw.get("backups") or () if isinstance(b, Mapping)),
            archive=ArchiveProof.from_dict(raw.get("archive")),
        )


_CONTINUOUS_FIELDS: Final = (
    "archiver",
    "ready",
    "recoverableFrom",
    "recoverableUntil",
    "lagSeconds",
    "reason",
    "message",
    "updated",
    "gapAt",
)


@dataclass(frozen=True)
class ContinuousStatus:
    """`status.continuous`: what the archiver last said of the archive. Point-in-time restores reach any second in
    [recoverable_from, recoverable_until]; `lag_seconds` is how far the archive was behind the server then. Not part
    of `DatabaseBackupStatus`: the archivers' side of the reconciler writes it alone (`{"continuous": ...}`), so
    that a status written from an older view never undoes a newer report."""

    archiver: str  # the archiver Deployment's name
    ready: bool = False  # its Pod runs and answered the last look
    recoverable_from: str | None = None
    recoverable_until: str | None = None
    lag_seconds: float | None = None
    reason: str = ""  # why archiving stopped: ArchiveGap, BinaryLoggingOff, ...
    message: str = ""
    updated: str | None = None  # when the archiver last published
    # The first event archived after a gap (binlogs the server purged before the archiver read them): restores reach
    # only from a backup taken since, and one is started at once.
    gap_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "archiver": self.archiver,
                "ready": self.ready,
                "recoverableFrom": self.recoverable_from,
                "recoverableUntil": self.recoverable_until,
                "lagSeconds": self.lag_seconds,
                "reason": self.reason or None,
                "message": self.message or None,
                "updated": self.updated,
                "gapAt": self.gap_at,
            }
        )

    def to_patch(self) -> dict[str, Any]:
        """The merge patch that makes status.continuous this: a field now absent is null, so that it is removed."""
        return dict.fromkeys(_CONTINUOUS_FIELDS) | self.to_dict()

    @classmethod
    def from_dict(cls, raw: object) -> ContinuousStatus | None:
        if not isinstance(raw, Mapping):
            return None
        lag = raw.get("lagSeconds")
        return cls(
            archiver=str(raw.get("archiver", "")),
            ready=raw.get("ready") is True,
            recoverable_from=_str_or_none(raw.get("recoverableFrom")),
            recoverable_until=_str_or_none(raw.get("recoverableUntil")),
            lag_seconds=float(lag) if isinstance(lag, int | float) and not isinstance(lag, bool) else None,
            reason=str(raw.get("reason") or ""),
            message=str(raw.get("message") or ""),
            updated=_str_or_none(raw.get("updated")),
            gap_at=_str_or_none(raw.get("gapAt")),
        )


@dataclass(frozen=True)
class DatabaseBackupStatus:
    """Status as the reconciler writes it. Times are RFC 3339 UTC strings (`2026-11-27T10:00:00Z`), as stored."""

    phase: Phase = Phase.PENDING
    last_backup_time: str | None = None
    in_progress: bool = False
    last_schedule_time: str | None = None
    next_backup_time: str | None = None
    last_backup: LastBackup | None = None
    last_failure: LastFailure | None = None
    consecutive_failures: int = 0
    active: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()
    observed_generation: int | None = None
    # The value of the backup-now annotation last acted on: the Job that served it may be gone (history limits),
    # and the same value must not start a second run.
    last_backup_now_request: str | None = None
    last_verification: LastVerification | None = None
    last_verification_schedule_time: str | None = None  # the slot of the last verification run started
    last_verify_now_request: str | None = None  # the verify-now value last acted on
    restore_drills: tuple[RestoreDrill, ...] = ()  # the newest first, at most MAX_RESTORE_DRILLS

    def to_dict(self) -> dict[str, Any]:
        """The wire form. Absent optional fields are null, so that a merge patch of this dict clears them."""
        return {
            "phase": str(self.phase),
            "lastBackupTime": self.last_backup_time,
            "inProgress": self.in_progress,
            "lastScheduleTime": self.last_schedule_time,
            "nextBackupTime": self.next_backup_time,
            "lastBackup": self.last_backup.to_dict() if self.last_backup else None,
            "lastFailure": self.last_failure.to_dict() if self.last_failure else None,
            "consecutiveFailures": self.consecutive_failures,
            "active": [{"name": name} for name in self.active],
            "conditions": [c.to_dict() for c in self.conditions],
            "observedGeneration": self.observed_generation,
            "lastBackupNowRequest": self.last_backup_now_request,
            "lastVerification": self.last_verification.to_dict() if self.last_verification else None,
            "lastVerificationScheduleTime": self.last_verification_schedule_time,
            "lastVerifyNowRequest": self.last_verify_now_request,
            "restoreDrills": [d.to_dict() for d in self.restore_drills],
            "backups": [b.to_dict() for b in self.last_backup.stored] if self.last_backup else [],
            "backupsOmitted": self.last_backup.stored_omitted if self.last_backup else None,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> DatabaseBackupStatus:
        """Lenient: status is ours, but a hand edit or an older version must never crash the reconciler."""
        raw = raw if isinstance(raw, Mapping) else {}
        last_backup = raw.get("lastBackup")
        last_failure = raw.get("lastFailure")
        try:
            phase = Phase(raw.get("phase", Phase.PENDING))
        except ValueError:
            phase = Phase.PENDING
        return cls(
            phase=phase,
            last_backup_time=_str_or_none(raw.get("lastBackupTime")),
            in_progress=raw.get("inProgress") is True,
            last_schedule_time=_str_or_none(raw.get("lastScheduleTime")),
            next_backup_time=_str_or_none(raw.get("nextBackupTime")),
            last_backup=LastBackup(
                file=str(last_backup.get("file", "")),
                size=_int_or_none(last_backup.get("size")) or 0,
                sha256=str(last_backup.get("sha256", "")),
                duration=str(last_backup.get("duration", "")),
                completion_time=str(last_backup.get("completionTime", "")),
                kept=_int_or_none(last_backup.get("kept")),
                kept_bytes=_int_or_none(last_backup.get("keptBytes")),
                kept_by=_counts(last_backup.get("keptBy")),
                stored=tuple(b for b in map(StoredBackup.from_dict, raw.get("backups") or ()) if b is not None),
                stored_omitted=_int_or_none(raw.get("backupsOmitted")),
                base_backup=_str_or_none(_mapping(last_backup.get("baseBackup")).get("file")),
                base_backup_time=_str_or_none(_mapping(last_backup.get("baseBackup")).get("time")),
                oldest_base_backup_time=_str_or_none(_mapping(last_backup.get("baseBackup")).get("oldestTime")),
            )
            if isinstance(last_backup, Mapping)
            else None,
            last_failure=LastFailure(
                time=str(last_failure.get("time", "")),
                reason=str(last_failure.get("reason", "")),
                message=str(last_failure.get("message", "")),
            )
            if isinstance(last_failure, Mapping)
            else None,
            consecutive_failures=_int_or_none(raw.get("consecutiveFailures")) or 0,
            active=tuple(str(a["name"]) for a in raw.get("active") or () if isinstance(a, Mapping) and "name" in a),
            conditions=tuple(Condition.from_dict(c) for c in raw.get("conditions") or () if isinstance(c, Mapping)),
            observed_generation=_int_or_none(raw.get("observedGeneration")),
            last_backup_now_request=_str_or_none(raw.get("lastBackupNowRequest")),
            last_verification=LastVerification.from_dict(raw.get("lastVerification")),
            last_verification_schedule_time=_str_or_none(raw.get("lastVerificationScheduleTime")),
            last_verify_now_request=_str_or_none(raw.get("lastVerifyNowRequest")),
            restore_drills=tuple(
                drill for item in _list(raw.get("restoreDrills")) if (drill := RestoreDrill.from_dict(item)) is not None
            ),
        )


# --- parsing the spec -------------------------------------------------------------------------------------------


def parse_spec(raw: object, path: str = "spec") -> tuple[DatabaseBackupSpec | None, list[FieldError]]:
    """Read a spec dict. Returns the spec (None if a required field is missing or unusable) and every error."""
    errors: list[FieldError] = []
    if not isinstance(raw, Mapping):
        return None, [FieldError(path, f"must be an object, not {show(raw)}")]
    spec = Reader(raw, path, errors)
    database_name = spec.string("databaseName", required=True)
    schedule = spec.string("schedule", required=True)
    connection = spec.mapping("connection")
    credentials = connection.mapping("credentialsSecret") if connection else None
    storage = spec.mapping("storage")
    claim = storage.mapping("persistentVolumeClaim") if storage else None
    s3 = _store_reference(storage.mapping("s3")) if storage else None
    if storage and claim and s3:
        errors.append(FieldError(storage.path, "give one of persistentVolumeClaim or s3, not both"))
    retention = spec.mapping("retention")
    encryption = spec.mapping("encryption")
    key_secret = encryption.mapping("keySecret", required=True) if encryption else None
    verify = spec.mapping("verify")
    defaults = DatabaseBackupSpec(database_name="", schedule="")

    credentials_secret = read_credentials(credentials)
    encryption_key = None
    if key_secret:
        name = key_secret.string("name", required=True)
        if name is not None:
            encryption_key = SecretKeyRef(name=name, key=key_secret.string("key") or "key")

    result = DatabaseBackupSpec(
        database_name=database_name or "",
        schedule=schedule or "",
        window=spec.string("window"),
        backup_path=spec.string("backupPath"),
        time_zone=spec.string("timeZone"),
        suspend=or_default(spec.boolean("suspend"), defaults.suspend),
        engine=spec.enum("engine", Engine),
        connection=Connection(
            host=connection.string("host") if connection else None,
            port=connection.integer("port", minimum=1, maximum=65535) if connection else None,
            username=connection.string("username") if connection else None,
            databases=or_default(connection.strings("databases"), ()) if connection else (),
            credentials_secret=credentials_secret,
            tls=read_tls(connection.mapping("tls")) if connection else None,
        ),
        claim_name=claim.string("claimName", required=True) if claim else None,
        s3_store=s3,
        concurrency_policy=or_default(spec.enum("concurrencyPolicy", ConcurrencyPolicy), defaults.concurrency_policy),
        starting_deadline_seconds=spec.integer("startingDeadlineSeconds", minimum=0),
        backoff_limit=or_default(spec.integer("backoffLimit", minimum=0), defaults.backoff_limit),
        active_deadline_seconds=or_default(
            spec.integer("activeDeadlineSeconds", minimum=1), defaults.active_deadline_seconds
        ),
        successful_jobs_history_limit=or_default(
            spec.integer("successfulJobsHistoryLimit", minimum=0), defaults.successful_jobs_history_limit
        ),
        failed_jobs_history_limit=or_default(
            spec.integer("failedJobsHistoryLimit", minimum=0), defaults.failed_jobs_history_limit
        ),
        keep_last=or_default(retention.integer("keepLast", minimum=1) if retention else None, defaults.keep_last),
        keep_daily=retention.integer("keepDaily", minimum=1) if retention else None,
        keep_weekly=retention.integer("keepWeekly", minimum=1) if retention else None,
        keep_monthly=retention.integer("keepMonthly", minimum=1) if retention else None,
        keep_yearly=retention.integer("keepYearly", minimum=1) if retention else None,
        max_age=_max_age(retention),
        compression=or_default(spec.enum("compression", Compression), defaults.compression),
        encryption_key=encryption_key,
        restore_test=or_default(verify.boolean("restoreTest") if verify else None, defaults.restore_test),
        resources=_resources(spec.mapping("resources")),
        verify_schedule=verify.string("schedule") if verify else None,
        verify_image=verify.string("image") if verify else None,
        verify_backups=or_default(
            verify.integer("backups", minimum=1, maximum=MAX_VERIFIED_BACKUPS) if verify else None,
            defaults.verify_backups,
        ),
        verify_queries=_queries(verify) if verify else (),
        verify_query_credentials=read_credentials(verify.mapping("queryCredentialsSecret")) if verify else None,
        continuous=_continuous(spec.mapping("continuous")),
    )
    if database_name is None or schedule is None:
        return None, errors
    return result, errors


def _resources(resources: Reader | None) -> Resources:
    if resources is None:
        return Resources()
    found: dict[str, tuple[tuple[str, str], ...]] = {}
    for kind in ("requests", "limits"):
        values = resources.mapping(kind)
        pairs: list[tuple[str, str]] = []
        for name in sorted(values.raw) if values else ():
            assert values is not None
            value = values.raw[name]
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)  # `cpu: 1` is as good as `cpu: "1"`
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                values._wrong(name, "a quantity such as 500m or 1Gi", value)
        found[kind] = tuple(pairs)
    return Resources(requests=found["requests"], limits=found["limits"])


def _store_reference(s3: Reader | None) -> StoreReference | None:
    if s3 is None:
        return None
    for key in sorted(set(s3.raw) - {"store", "prefix"}):
        s3.errors.append(
            FieldError(
                f"{s3.path}.{key}",
                "is not a field of storage.s3: the endpoint, bucket and keys are the BackupStore's, which the cluster "
                "administrators make; name it in storage.s3.store",
            )
        )
    store = s3.string("store", required=True)
    return StoreReference(store, s3.string("prefix")) if store is not None else None


def _queries(verify: Reader) -> tuple[VerifyQuery, ...]:
    items = verify.objects("queries")
    found = []
    for item in items:
        name, sql = item.string("name", required=True), item.string("sql", required=True)
        if name is not None and sql is not None:
            found.append(VerifyQuery(name=name, sql=sql, database=item.string("database")))
    return tuple(found)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


_MAX_AGE: Final = re.compile(r"[1-9][0-9]{0,5}[hdw]")


def _max_age(retention: Reader | None) -> str | None:
    """`retention.maxAge`: a whole number of hours, days or weeks, as the runner's --max-age reads it."""
    return _duration(retention, "maxAge")


def _duration(reader: Reader | None, name: str) -> str | None:
    """A whole number of hours, days or weeks: `36h`, `90d`, `52w`."""
    value = reader.string(name) if reader else None
    if value is not None and reader is not None and not _MAX_AGE.fullmatch(value):
        reader.errors.append(
            FieldError(
                f"{reader.path}.{name}", f"{show(value)} is not a whole number of hours, days or weeks (36h, 90d, 52w)"
            )
        )
        return None
    return value


def _continuous(continuous: Reader | None) -> Continuous | None:
    if continuous is None:
        return None
    lag = continuous.integer("maxLagSeconds", minimum=MIN_MAX_LAG_SECONDS, maximum=MAX_MAX_LAG_SECONDS)
    return Continuous(
        max_lag_seconds=or_default(lag, Continuous.max_lag_seconds), window=_duration(continuous, "window")
    )


def _counts(raw: object) -> dict[str, int]:
    """A map of names to counts from status, without anything else a hand edit put there."""
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


def _list(raw: object) -> list[Any]:
    return raw if isinstance(raw, list) else []
