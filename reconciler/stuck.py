"""A run whose Pod cannot start is a failure, not an hour of "Running" (pure).

The kubelet retries a container it cannot create for as long as the Pod lives, and a Job's Pod lives until
`activeDeadlineSeconds`: an hour by default. Some waiting states heal by themselves (an image still downloading, a
node not yet free); others wait for a person (a Secret key that does not exist, an image that is never pulled). A
state of the second kind fails the run once it has lasted its grace, with the kubelet's own message and a reason of
ours, for backups, checks and restores alike.

| waiting state (kubelet or scheduler) | our reason | grace, from the Pod's creation |
|---|---|---|
| CreateContainerConfigError, CreateContainerError | PodConfigError | 30 s |
| InvalidImageName, ErrImageNeverPull | ImageUnavailable | 30 s |
| ErrImagePull, ImagePullBackOff | ImageUnavailable | 5 min (the kubelet's own back-off reaches its 5 min cap) |
| PodScheduled=False, Unschedulable (a claim that stays Pending is one) | Unschedulable | 5 min |

The short grace leaves room for a Secret applied a moment after its DatabaseBackup; the long ones for a slow
registry and for a cluster autoscaler adding a node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from reconciler.world import parse_time

__all__ = ["GRACE", "Stuck", "diagnose"]

SHORT: Final = timedelta(seconds=30)
LONG: Final = timedelta(minutes=5)

# kubelet or scheduler reason -> (our reason, grace)
GRACE: Final[Mapping[str, tuple[str, timedelta]]] = {
    "CreateContainerConfigError": ("PodConfigError", SHORT),
    "CreateContainerError": ("PodConfigError", SHORT),
    "InvalidImageName": ("ImageUnavailable", SHORT),
    "ErrImageNeverPull": ("ImageUnavailable", SHORT),
    "ErrImagePull": ("ImageUnavailable", LONG),
    "ImagePullBackOff": ("ImageUnavailable", LONG),
    "Unschedulable": ("Unschedulable", LONG),
}

_MESSAGE_LIMIT: Final = 400


@dataclass(frozen=True)
class Stuck:
    reason: str  # ours: PodConfigError | ImageUnavailable | Unschedulable
    message: str  # the Pod, the container and the kubelet's (or scheduler's) own words


@dataclass(frozen=True)
class Diagnosis:
    stuck: Stuck | None = None  # the run cannot start: fail it
    recheck: timedelta | None = None  # waiting in a state that fails once its grace has passed: look again then


def diagnose(pods: Iterable[Mapping[str, Any]], now: datetime) -> Diagnosis:
    """The first Pod of a Job's Pods that cannot start, or when to look again."""
    recheck: timedelta | None = None
    for pod in pods:
        for kubelet_reason, where, message in _waiting(pod):
            our_reason, grace = GRACE[kubelet_reason]
            created = parse_time((pod.get("metadata") or {}).get("creationTimestamp")) or now
            left = created + grace - now
            if left <= timedelta(0):
                name = (pod.get("metadata") or {}).get("name")
                text = f"Pod {name} cannot start: {where}: {kubelet_reason}"
                if message:
                    text = f"{text}: {message}"
                return Diagnosis(stuck=Stuck(our_reason, _clip(text)))
            recheck = left if recheck is None else min(recheck, left)
    return Diagnosis(recheck=recheck)


def _waiting(pod: Mapping[str, Any]) -> Iterable[tuple[str, str, str]]:
    """(reason, where, message) for each waiting state of the Pod that GRACE knows."""
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending", "Running"):
        return
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = str(condition.get("reason") or "")
            if reason in GRACE:
                yield reason, "not scheduled", str(condition.get("message") or "")
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = str(waiting.get("reason") or "")
            if reason in GRACE:
                yield reason, f"container {container.get('name')}", str(waiting.get("message") or "")


def _clip(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"
