"""Monitoring as a platform team runs it: a Prometheus in the cluster (Debian's, E2E_PROMETHEUS_IMG) finds the
reconciler's Pods by DNS through a headless Service, scrapes their /metrics over HTTPS with its ServiceAccount's token
(bound to the reader role that deploy/metrics/ ships), and evaluates deploy/monitoring/rules.yaml. A backup that fails
fires BackupFailing, read from Prometheus's own API; a good backup resolves it."""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e import databases
from tests.e2e.conftest import ROOT, SYSTEM
from tests.e2e.kube import Kube, wait_for

NAMESPACE = "e2e-monitoring"
PROMETHEUS = "prometheus"
RULES = ROOT / "deploy" / "monitoring" / "rules.yaml"

# Every reconciler Pod of dbb-system, on its health port, found through a headless Service by DNS (Debian builds
# Prometheus without Kubernetes service discovery); the token is Prometheus's own ServiceAccount's. The reconciler's
# certificate is one its init container makes at each start, signed by no CA Prometheus could be given beforehand:
# the TLS of /metrics has tests of its own (tests/integration/test_reconciler_tls.py).
TARGETS = f"{PROMETHEUS}-dbb-reconciler"
CONFIG = {
    "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
    "rule_files": ["/etc/prometheus/rules.yaml"],
    "scrape_configs": [
        {
            "job_name": "dbb-reconciler",
            "scheme": "https",
            "authorization": {"credentials_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"},
            "tls_config": {"insecure_skip_verify": True},
            "dns_sd_configs": [
                {"names": [f"{TARGETS}.{SYSTEM}.svc"], "type": "A", "port": 8081, "refresh_interval": "5s"}
            ],
            "relabel_configs": [{"source_labels": ["__address__"], "target_label": "pod"}],
        }
    ],
}


def image() -> str:
    value = os.environ.get("E2E_PROMETHEUS_IMG")
    assert value, "E2E_PROMETHEUS_IMG is not set: `make e2e` takes it from `python -m hack.cluster load`"
    return value


def manifests() -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": PROMETHEUS}
    meta = {"namespace": NAMESPACE, "labels": labels}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": PROMETHEUS, **meta}}
    reader = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{NAMESPACE}-dbb-metrics"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "databasebackup-metrics-reader",
        },
        "subjects": [{"kind": "ServiceAccount", "name": PROMETHEUS, "namespace": NAMESPACE}],
    }
    targets = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": TARGETS, "namespace": SYSTEM},
        "spec": {
            "clusterIP": "None",
            "selector": {"app.kubernetes.io/name": "dbb-reconciler"},
            "ports": [{"name": "health", "port": 8081}],
        },
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PROMETHEUS, **meta},
        "data": {"prometheus.yml": yaml.safe_dump(CONFIG), "rules.yaml": RULES.read_text()},
    }
    container = {
        "name": PROMETHEUS,
        "image": image(),
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--web.listen-address=0.0.0.0:9090",
        ],
        "ports": [{"name": "http", "containerPort": 9090}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "http"}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
            {"name": "data", "mountPath": "/prometheus"},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": PROMETHEUS, **meta},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": PROMETHEUS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65534,
                        "runAsGroup": 65534,
                        "fsGroup": 65534,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": PROMETHEUS}},
                        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": PROMETHEUS, **meta},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 9090, "targetPort": "http"}]},
    }
    return [account, reader, targets, config, deployment, service]


def api(kube: Kube, path: str, **params: str) -> Any:
    """Prometheus's HTTP API, through the API server's Service proxy (as `kubectl get --raw` reaches it)."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    raw = kube("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/services/{PROMETHEUS}:http/proxy/api/v1/{path}{query}")
    body = json.loads(raw)
    assert body["status"] == "success", body
    return body["data"]


def firing(kube: Kube, alertname: str, name: str) -> bool:
    return any(
        a["labels"].get("alertname") == alertname and a["labels"].get("name") == name and a["state"] == "firing"
        for a in api(kube, "alerts")["alerts"]
    )


@pytest.fixture(scope="module")
def prometheus(kube: Kube, deployed: str) -> Iterator[None]:
    with databases.namespace(kube, NAMESPACE):
        kube.apply(*manifests())
        kube.wait_rollout(NAMESPACE, f"deployment/{PROMETHEUS}", 300)
        try:
            yield
        finally:
            kube.run("delete", "clusterrolebinding", f"{NAMESPACE}-dbb-metrics", "--ignore-not-found", check=False)
            kube.run("delete", "service", TARGETS, "-n", SYSTEM, "--ignore-not-found", check=False)


def test_prometheus_scrapes_the_reconciler_with_its_token_and_sees_each_databasebackup(
    kube: Kube, prometheus: None
) -> None:
    def healthy_targets() -> list[dict[str, Any]] | None:
        targets = [t for t in api(kube, "targets")["activeTargets"] if t["labels"]["job"] == "dbb-reconciler"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_for("the reconciler's Pods scraped", healthy_targets, 180)
    replicas = kube.json("get", "deployment", "dbb-reconciler", "-n", SYSTEM)["spec"]["replicas"]
    assert len(targets) == replicas, targets
    leaders = api(kube, "query", query="sum(dbb_leader)")["result"]
    assert float(leaders[0]["value"][1]) == 1.0, leaders  # exactly one replica leads


def test_a_failing_backup_fires_backup_failing_and_a_good_one_resolves_it(kube: Kube, prometheus: None) -> None:
    with databases.namespace(kube, "e2e-monitored") as namespace:
        db = databases.running(
            kube,
            databases.Database("postgresql", "15", "watched-db", namespace, "e2e-monitored-pw"),
            rows=100,
            orders=100,
        )
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "wrong-credentials", "namespace": namespace},
                "stringData": {"username": "postgres", "password": "not-the-password"},
            },
            databases.databasebackup(
                "watched",
                db,
                "0 0 1 1 *",
                backup_now="1",
                connection={"credentialsSecret": {"name": "wrong-credentials", "passwordKey": "password"}},
            ),
        )
        wait_for("BackupFailing firing in Prometheus", lambda: firing(kube, "BackupFailing", "watched") or None, 300)
        series = api(kube, "query", query=f'dbb_backup_consecutive_failures{{name="watched",namespace="{namespace}"}}')
        assert series["result"], series

        # The right Secret, and a backup now: the run succeeds and the alert resolves.
        kube(
            "patch", "dbb", "watched", "-n", namespace, "--type=json",
            "-p", json.dumps([{"op": "remove", "path": "/spec/connection/credentialsSecret"}]),
        )  # fmt: skip
        kube("annotate", "dbb", "watched", "-n", namespace, "databases.test.io/backup-now=2", "--overwrite")
        wait_for(
            "a good backup",
            lambda: (kube.get("dbb", "watched", namespace).get("status") or {}).get("consecutiveFailures") == 0 or None,
            300,
        )
        wait_for("BackupFailing resolved", lambda: not firing(kube, "BackupFailing", "watched") or None, 120)
