"""What one reconcile reads (`World`) and the Events it may record: shared by the backup schedule (`plan`) and the
verification schedule (`verification`), which both decide from the same view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Event", "World", "parse_time"]


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class World:
    obj: Mapping[str, Any]  # the DatabaseBackup
    jobs: Sequence[Mapping[str, Any]]  # the Jobs it owns: backup runs and verifications
    now: datetime
    statefulset: Mapping[str, Any] | None = None  # None: not found (the controller asks only once synced)
    termination_messages: Mapping[str, str] = field(default_factory=dict)  # Job name -> its Pod's message


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time from an object we read; None when absent or unreadable (a hand edit must not crash us)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None
