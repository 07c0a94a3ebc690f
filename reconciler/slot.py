"""The replication slot of a DatabaseBackup that archives PostgreSQL WAL (pure): when it is held, and what lets it go.

The PostgreSQL archiver streams through a physical replication slot of its own (runner.walarchive), and the server
keeps every WAL segment from the slot's position on for as long as the slot exists: the archive loses nothing while
the archiver restarts, and a slot nobody reads any more fills the server's disk. So the slot is let go explicitly:
- While a DatabaseBackup archives PostgreSQL WAL, it carries the finalizer FINALIZER.
- Once it is deleted, or stops archiving (spec.continuous removed), its archiver is removed first (the plan has
  none), then a Job drops the slot (`dbb-backup archive --drop-slot`, which waits until the archiver's connection
  is gone), and only then does the finalizer go.
- A Job that fails does not hold the deletion for ever: a Warning event says the slot is still there and why, and
  the finalizer goes. So does a DatabaseBackup whose spec no longer says how to connect (invalid, or refused by a
  trust rule): no Job may connect with it, and the event says so.
A suspended DatabaseBackup keeps its slot: archiving resumes where it stopped, with no gap (docs/point-in-time.md
says what that costs the server, and how `max_slot_wal_keep_size` bounds it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from common.backups.model import DatabaseBackupSpec
from common.constants import GROUP, LABEL_RUN, RUN_RELEASE_SLOT
from common.values import Engine
from reconciler.jobs import RunnerSettings, release_slot_job
from reconciler.outcomes import JobOutcome, outcome
from reconciler.world import Event

__all__ = ["FINALIZER", "SlotPlan", "decide_slot", "held", "holds_slot", "is_release"]

FINALIZER: Final = f"{GROUP}/replication-slot"
DOCS: Final = "docs/point-in-time.md#the-replication-slot"


@dataclass(frozen=True)
class SlotPlan:
    hold: bool | None = None  # True: FINALIZER is added, False: it is removed, None: left as it is
    create: dict[str, Any] | None = None  # the Job that drops the slot
    events: tuple[Event, ...] = ()


def held(obj: Mapping[str, Any]) -> bool:
    """Whether `obj` carries FINALIZER."""
    return FINALIZER in ((obj.get("metadata") or {}).get("finalizers") or ())


def holds_slot(spec: DatabaseBackupSpec | None) -> bool:
    """Whether this spec's archiver streams through a replication slot (PostgreSQL, continuous)."""
    return spec is not None and spec.continuous is not None and spec.engine is Engine.POSTGRESQL


def is_release(job: Mapping[str, Any]) -> bool:
    return ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN) == RUN_RELEASE_SLOT


def decide_slot(
    obj: Mapping[str, Any],
    spec: DatabaseBackupSpec | None,
    jobs: Sequence[Mapping[str, Any]],
    messages: Mapping[str, str],
    runner: RunnerSettings,
) -> SlotPlan:
    """What the slot of `obj` needs now. `spec`: its spec as a run would use it (defaulted, resolved by the trust
    rules), None when no run may connect with it; `jobs`: its Jobs, `messages` their termination messages."""
    metadata = obj.get("metadata") or {}
    holding = held(obj)
    deleting = bool(metadata.get("deletionTimestamp"))
    if holds_slot(spec) and not deleting:
        return SlotPlan() if holding else SlotPlan(hold=True)
    if not holding:
        return SlotPlan()
    if spec is None:
        return SlotPlan(
            hold=False,
            events=(
                Event(
                    "Warning",
                    "SlotNotReleased",
                    "The archiver's replication slot was not dropped: the spec no longer says how to connect to "
                    f"the server. It keeps WAL for the slot until it is dropped by hand ({DOCS})",
                ),
            ),
        )
    wanted = release_slot_job(dict(obj), spec, runner)
    name = wanted["metadata"]["name"]
    found = next((job for job in jobs if (job.get("metadata") or {}).get("name") == name), None)
    if found is None:
        why = "deleted" if deleting else "no longer archiving"
        return SlotPlan(
            create=wanted,
            events=(Event("Normal", "ReleasingSlot", f"Dropping the archiver's replication slot ({why}): Job {name}"),),
        )
    ran = outcome(dict(found), messages.get(name))
    if ran.state == "Active":
        return SlotPlan()
    if ran.state == "Succeeded":
        return SlotPlan(
            hold=False,
            events=(Event("Normal", "SlotReleased", f"Dropped the archiver's replication slot ({name})"),),
        )
    return SlotPlan(hold=False, events=(_not_released(name, ran),))


def _not_released(name: str, ran: JobOutcome) -> Event:
    said = (ran.result or {}).get("message") if ran.result else None
    why = str(said)[:300] if isinstance(said, str) and said else (ran.message or ran.reason or "it failed")
    return Event(
        "Warning",
        "SlotNotReleased",
        f"The archiver's replication slot was not dropped ({name}: {why}). The server keeps WAL for it until it is "
        f"dropped by hand ({DOCS})",
    )
