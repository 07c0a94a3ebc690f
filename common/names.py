"""Names the operator derives: Job names (the lock against running a slot twice) and their length limit."""

from __future__ import annotations

from datetime import datetime
from typing import Final

__all__ = ["MAX_NAME_LENGTH", "job_name", "scheduled_minutes"]

# A Job name is `<name>-<unix minutes>` and must fit a 63-character label value (the Job controller labels its Pods
# with it). Unix minutes have 8 digits until the year 2160; CronJob keeps 11 characters for its suffix and so limits
# names to 52. We do the same, which leaves room for a longer suffix later.
MAX_NAME_LENGTH: Final = 52


def scheduled_minutes(scheduled: datetime) -> int:
    return int(scheduled.timestamp()) // 60


def job_name(name: str, scheduled: datetime) -> str:
    """The one Job for the slot `scheduled`: creating it twice fails with AlreadyExists, which means "done"."""
    return f"{name}-{scheduled_minutes(scheduled)}"
