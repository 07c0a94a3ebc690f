"""The monitoring components of deploy/monitoring/ as a user installs them, and a real Prometheus (Debian's) that
scrapes the reconciler's metrics registry, evaluates the alert rules and answers every query of the Grafana
dashboard with data."""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CONTENT_TYPE_LATEST

from hack.harness.controlplane import ROOT, ControlPlane
from hack.harness.databases import free_port
from hack.harness.prometheus import Prometheus
from reconciler.metrics import Metrics
from tests.fixtures import cached_backup

MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboard.json"
RULES = MONITORING / "rules.yaml"


def render(control_plane: ControlPlane, folder: Path) -> list[dict[str, Any]]:
    """The base and both monitoring components, through an overlay as a user would write it."""
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "deploy", folder)],
        "components": [os.path.relpath(MONITORING, folder), os.path.relpath(MONITORING / "grafana", folder)],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    output = control_plane.kubectl("kustomize", str(folder)).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def test_the_components_add_the_rules_and_the_dashboard_to_the_base(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    objects = render(control_plane, tmp_path)
    [rule] = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "dbb-system"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    [dashboard] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "dbb-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["dashboard.json"]) == json.loads(DASHBOARD.read_text())


def backup(name: str, **status: Any) -> dict[str, Any]:
    return cached_backup(name, "0 * * * *", **status)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """The reconciler's registry with a healthy and a failing DatabaseBackup, served on loopback and scraped."""
    now = datetime.now(UTC)
    healthy = backup(
        "healthy",
        lastBackupTime=stamp(now - timedelta(minutes=5)),
        nextBackupTime=stamp(now + timedelta(minutes=55)),
        lastBackup={"size": 4096, "duration": "3.2s", "kept": 7, "keptBytes": 28672},
        lastVerification={"time": stamp(now - timedelta(hours=1)), "result": "Passed"},
        restoreDrills=[{"time": stamp(now - timedelta(hours=1)), "file": "x", "result": "Passed", "seconds": 42.5}],
    )
    failing = backup(
        "failing",
        lastBackupTime=stamp(now - timedelta(hours=3)),
        lastFailure={"time": stamp(now - timedelta(minutes=2))},
        consecutiveFailures=2,
        lastBackup={"size": 8192, "duration": "1m5s"},
    )
    metrics = Metrics()
    metrics.backups.read_from(lambda: [healthy, failing], lambda: datetime.now(UTC))
    metrics.runs.labels("Succeeded").inc()
    port = free_port()
    server = serve(metrics, port)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    try:
        with Prometheus.start(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{port}"], rule_files=(RULES,)) as p:
            yield p
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve(metrics: Metrics, port: int) -> http.server.ThreadingHTTPServer:
    """The reconciler's /metrics page, without its TLS and token check (those have tests of their own)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"".join(metrics.exposition())
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Page)


def until(what: str, check: Any, seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} within {seconds:g} s"
        time.sleep(0.5)
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def test_every_dashboard_query_returns_data_from_a_real_prometheus(prometheus: Prometheus) -> None:
    queries = dashboard_queries()
    assert len(queries) == 15
    for title, expression in queries:
        # Grafana's variables, with "All" chosen.
        concrete = re.sub(r"\$(namespace|name)\b", ".*", expression)
        result = until(f"data for {title!r}: {concrete}", lambda q=concrete: prometheus.query(q))
        assert all(sample["value"][1] not in ("NaN", "") for sample in result), (title, result)
    variables = [v["query"] for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["type"] == "query"]
    assert variables == [
        "label_values(dbb_backup_info, namespace)",
        'label_values(dbb_backup_info{namespace=~"$namespace"}, name)',
    ]
    assert prometheus.api("label/namespace/values", **{"match[]": "dbb_backup_info"}) == ["shop"]
    overdue = prometheus.query('max by (name) (dbb_backup_overdue_seconds{name="failing"})')
    assert float(overdue[0]["value"][1]) > 3600  # its slot passed over two hours ago (an hourly schedule)


def test_the_rules_fire_in_prometheus_for_the_failing_backup_only(prometheus: Prometheus) -> None:
    def firing() -> set[tuple[str, str]]:
        return {
            (a["labels"]["alertname"], a["labels"].get("name", ""))
            for a in prometheus.alerts()
            if a["state"] == "firing"
        }

    found = until("BackupFailing firing", lambda: firing() if ("BackupFailing", "failing") in firing() else None)
    # OperatorDown is pending (this registry leads nothing) and waits its 10 minutes; the healthy one is quiet.
    assert found == {("BackupFailing", "failing"), ("BackupOverdue", "failing")}
