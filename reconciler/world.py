"""What one reconcile reads (`World`) and the Events it may record: shared by the backup schedule (`plan`) and the
verification schedule (`verification`), which both decide from the same view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common.schedule import parse_time, rfc3339
from reconciler.trust import NamespaceFacts

if TYPE_CHECKING:
    from reconciler.outcomes import JobOutcome

__all__ = ["Event", "World", "due_request", "over_limit", "parse_time", "rfc3339"]


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
    # The namespace as the trust rules read it; the default knows nothing, so every rule that needs a fact refuses.
    facts: NamespaceFacts = field(default_factory=lambda: NamespaceFacts(""))


def due_request(obj: Mapping[str, Any], annotation: str, handled: str | None) -> str | None:
    """An on-demand request (the annotation's value) not yet recorded as handled. Its Job may already exist
    (created on an earlier pass): the caller then records it as handled without creating anything."""
    request = ((obj.get("metadata") or {}).get("annotations") or {}).get(annotation)
    if not isinstance(request, str) or not request or request == handled:
        return None
    return request


def over_limit(outcomes: Sequence[JobOutcome], state: str, limit: int) -> list[str]:
    """The finished Jobs in `state` beyond the newest `limit`: a history limit's deletions."""
    finished = sorted((o for o in outcomes if o.state == state), key=lambda o: o.finished or "", reverse=True)
    return [o.name for o in finished[limit:]]
