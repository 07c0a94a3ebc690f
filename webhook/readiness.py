"""What the webhook's `/readyz` says: pure decisions, no I/O.

A replica is ready when it can answer admission requests correctly: a certificate is loaded, the StatefulSet cache
has synced, its background tasks run and it is not shutting down. Each problem is named in the 503's body.

The certificate keeper (webhook.incluster) is the exception, because its failure does not stop a replica from
answering. The certificate it serves stays valid for months after a renewal (one year, renewed 30 days before
expiry), and the caBundle keeps trusting it: a CA leaves the bundle only once every replica the Service routes to
serves the new certificate (webhook.rotation). Taking the replica out of the Service, on the other hand, costs
availability, and when every replica fails alike (their RBAC, the API server) it would leave no endpoint at all:
with failurePolicy Fail every DatabaseBackup apply is then refused. So a failing keeper is reported at once (in
`/readyz`'s body with what failed, in `dbb_webhook_certificate_keeper_failures_total`, in the log) while the replica
stays ready, and takes the replica out of service only when:
- the certificate it serves expires within NEAR_EXPIRY (a day). The API server will refuse it soon anyway; leaving
  the Service first sends requests to a replica whose keeper renewed, if there is one, and turns an x509 error into
  "no endpoints". A working keeper renews 30 days before expiry, so this is reached only after four weeks of
  failing renewals, long after an alert on the certificate's expiry should have fired. A day is far more than the
  kubelet needs to notice (probes every 5 s) and than the clocks of node and API server differ by.
- the keeper has completed no sync for `tolerance` (an hour by default, `--cert-failure-tolerance`). An API server
  restart, an etcd leader change or a control-plane upgrade lasts minutes, and while the API server is away it sends
  no admission requests at all. An hour is past any of those and gives the alert on the failures counter time to
  reach someone. Beyond it the replica is stale in a way that matters: it cannot follow a rotation (deleting the
  Secret after a key leak), and while the Service routes to it the old CA stays trusted for ever. Out of the
  Service, it no longer holds the rotation back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["NEAR_EXPIRY", "STALLED", "TOLERANCE", "KeeperStatus", "Report", "keeper_report", "report"]

NEAR_EXPIRY: Final = timedelta(days=1)
TOLERANCE: Final = timedelta(hours=1)
# A keeper polls every ~10 s and each request times out within 35 s: this long without a sync and without a
# reported failure means its loop has stopped (it is restarted, but says nothing while down).
STALLED: Final = timedelta(minutes=2)


@dataclass(frozen=True)
class Report:
    problems: tuple[str, ...] = ()  # each makes the replica not ready
    warnings: tuple[str, ...] = ()  # shown in the body; the replica stays ready

    @property
    def ready(self) -> bool:
        return not self.problems

    def text(self) -> str:
        head = "not ready: " + "; ".join(self.problems) if self.problems else "ok"
        return "\n".join([head, *(f"warning: {warning}" for warning in self.warnings)])


@dataclass
class KeeperStatus:
    """What the certificate keeper last managed; written by the keeper, read by `/readyz`."""

    last_success: datetime | None = None
    failure: str | None = None  # what failed since the last success, in words

    def succeeded(self, now: datetime) -> None:
        self.last_success, self.failure = now, None

    def failed(self, failure: str) -> None:
        self.failure = failure


def keeper_report(
    status: KeeperStatus,
    served_not_after: datetime | None,
    now: datetime,
    *,
    tolerance: timedelta = TOLERANCE,
    near_expiry: timedelta = NEAR_EXPIRY,
) -> Report:
    """The keeper's part of `/readyz`; see the module docstring for when a failure makes the replica not ready."""
    problems: list[str] = []
    if served_not_after is not None and served_not_after - now <= near_expiry:
        problems.append(f"the served certificate expires at {_moment(served_not_after)} and has not been renewed")
    since = now - status.last_success if status.last_success is not None else None
    if status.failure is not None:
        trouble = f"certificate keeper failing: {status.failure}"
    elif since is None or since > STALLED:
        trouble = "certificate keeper completes no sync"
    else:
        return Report(tuple(problems))
    last = f"{_duration(since)} ago" if since is not None else "never"
    trouble += f" (last success {last}; out of service after {_duration(tolerance)})"
    if since is None or since >= tolerance:
        return Report((*problems, trouble))
    return Report(tuple(problems), (trouble,))


def report(
    *,
    draining: bool,
    certificate_loaded: bool,
    cache_synced: bool,
    tasks_down: Iterable[str],
    keeper: Report | None = None,
) -> Report:
    """The whole of `/readyz`. `tasks_down`: the supervisor's tasks that are down and restarting, the keeper's
    excepted (its own report says what a failing keeper means)."""
    problems = []
    if draining:
        problems.append("shutting down")
    if not certificate_loaded:
        problems.append("no certificate loaded")
    if not cache_synced:
        problems.append("the StatefulSet cache has not synced yet")
    problems += [f"background task {task} is down, restarting" for task in sorted(tasks_down)]
    if keeper is None:
        return Report(tuple(problems))
    return Report((*problems, *keeper.problems), keeper.warnings)


def _moment(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
