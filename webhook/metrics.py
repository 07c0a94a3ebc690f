"""The webhook's Prometheus metrics, in a registry of its own (one per server, so tests never share counters)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "dbb_webhook_admission_requests",
            "Admission requests by endpoint and result",
            ["endpoint", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "dbb_webhook_admission_duration_seconds",
            "Time to answer an admission request",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.kube_requests = Counter(
            "dbb_webhook_kube_requests",
            "Kubernetes API requests made while answering admissions",
            ["reason"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "dbb_webhook_watch_restarts", "Restarts of the StatefulSet watch", ["reason"], registry=r
        )
        self.certificate_reloads = Counter(
            "dbb_webhook_certificate_reloads",
            "Certificate changes: files re-read (loaded, error); with --cert-secret, the Secret "
            "(created, rotated, renewed, stored) and another replica's Secret taken over (adopted)",
            ["result"],
            registry=r,
        )
        self.task_restarts = Counter(
            "dbb_webhook_task_restarts", "Background tasks restarted after they ended or crashed", ["task"], registry=r
        )
        self.certificate_expiry = Gauge(
            "dbb_webhook_certificate_expiry_timestamp_seconds", "When the serving certificate expires", registry=r
        )
        # For alerts: a keeper that fails keeps serving (webhook.readiness), so these are how anyone finds out.
        self.certificate_keeper_failures = Counter(
            "dbb_webhook_certificate_keeper_failures",
            "Certificate keeper syncs (--cert-secret) that failed, by the step that failed",
            ["step"],
            registry=r,
        )
        self.certificate_keeper_last_success = Gauge(
            "dbb_webhook_certificate_keeper_last_success_timestamp_seconds",
            "When the certificate keeper (--cert-secret) last completed a sync",
            registry=r,
        )
