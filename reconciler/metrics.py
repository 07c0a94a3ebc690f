"""The reconciler's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from reconciler.backup_metrics import BackupMetrics

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
# Lateness is judged against a target of 2 s: buckets below it fine enough to tell 1.2 s from 2 s.
_LATENESS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30, 60, 300)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.runs = Counter("dbb_backup_runs", "Finished backup runs by result", ["result"], registry=r)
        self.run_duration = Histogram(
            "dbb_backup_run_duration_seconds",
            "How long a backup Job ran",
            registry=r,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
        )
        self.lateness = Histogram(
            "dbb_job_creation_lateness_seconds",
            "From the scheduled slot to the Job's creation",
            buckets=_LATENESS,
            registry=r,
        )
        self.queue_depth = Gauge("dbb_reconcile_queue_depth", "DatabaseBackups waiting to be reconciled", registry=r)
        self.reconciles = Counter("dbb_reconciles", "Reconciles by result", ["result"], registry=r)
        self.reconcile_duration = Histogram(
            "dbb_reconcile_duration_seconds", "Time for one reconcile", buckets=_SECONDS, registry=r
        )
        self.watch_restarts = Counter("dbb_watch_restarts", "Restarts of a watch", ["informer", "reason"], registry=r)
        self.api_requests = Counter(
            "dbb_api_requests", "Kubernetes API writes made by the reconciler", ["verb", "resource"], registry=r
        )
        self.leader = Gauge("dbb_leader", "1 while this replica holds the leader Lease", registry=r)
        # One series set per DatabaseBackup, read from the controller's cache at each scrape and written after the
        # registry's page (reconciler.backup_metrics says why not through the registry).
        self.backups = BackupMetrics()

    def exposition(self) -> Iterator[bytes]:
        """The whole /metrics page, in pieces."""
        yield generate_latest(self.registry)
        yield from self.backups.exposition()
