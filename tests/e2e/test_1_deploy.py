"""`make deploy` on a real cluster: both Deployments come up, and the API server reaches the webhook through its
Service for every DatabaseBackup that is applied."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import databases
from tests.e2e.conftest import SYSTEM
from tests.e2e.kube import Kube, wait_for


@pytest.fixture(scope="module")
def postgres(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, "e2e-webhook", restricted=False) as namespace:
        db = databases.Database("postgresql", "15", "shop-db", namespace, "e2e-webhook-password")
        databases.deploy(kube, db)
        yield db


def test_both_deployments_become_available(kube: Kube, deployed: str) -> None:
    for name in ("dbb-webhook", "dbb-reconciler"):
        deployment = kube.get("deployment", name, SYSTEM)
        conditions = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
        assert conditions.get("Available") == "True", f"{name}: {deployment['status']}"
        assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"]


def test_the_reconcilers_health_port_speaks_only_https(kube: Kube, deployed: str) -> None:
    """Its probes pass over HTTPS (the Deployment is available); through the API server's proxy to a reconciler Pod,
    HTTPS answers and plain HTTP is refused."""

    # A Ready Pod that is not on its way out: on a cluster the operator was deployed to before, the rollout of the
    # new image may still be ending the old Pods.
    def ready() -> str | None:
        for pod in kube.items("pods", SYSTEM, "app.kubernetes.io/name=dbb-reconciler"):
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if not pod["metadata"].get("deletionTimestamp") and conditions.get("Ready") == "True":
                name: str = pod["metadata"]["name"]
                return name
        return None

    proxy = f"/api/v1/namespaces/{SYSTEM}/pods/{{scheme}}:{wait_for('a Ready reconciler Pod', ready)}:8081/proxy"
    assert kube("get", "--raw", proxy.format(scheme="https") + "/healthz") == "ok"
    assert kube.run("get", "--raw", proxy.format(scheme="http") + "/healthz", check=False).returncode != 0
    # The API server drops the caller's credentials before it proxies: /metrics sees no token and refuses.
    assert kube.run("get", "--raw", proxy.format(scheme="https") + "/metrics", check=False).returncode != 0


def test_a_bad_databasebackup_is_refused_with_a_message_naming_the_field(
    kube: Kube, postgres: databases.Database
) -> None:
    bad = databases.databasebackup("broken", postgres, "*/5 * * *")
    result = kube.try_apply(bad)
    assert result.returncode != 0
    assert 'admission webhook "vdatabasebackup.databases.test.io" denied the request' in result.stderr
    assert 'spec.schedule: "*/5 * * *" has 4 fields' in result.stderr
    assert not kube.exists("dbb", "broken", postgres.namespace)


def test_a_databasebackup_for_a_missing_statefulset_is_refused(kube: Kube, postgres: databases.Database) -> None:
    result = kube.try_apply(databases.databasebackup("orphan", postgres, "@daily", databaseName="no-such-db"))
    assert result.returncode != 0
    assert f'spec.databaseName: StatefulSet "no-such-db" not found in namespace "{postgres.namespace}"' in result.stderr


def test_a_good_databasebackup_is_defaulted_by_the_webhook(kube: Kube, postgres: databases.Database) -> None:
    result = kube.try_apply(databases.databasebackup("nightly", postgres, "0 3 * * *"))
    assert result.returncode == 0, result.stderr
    spec = kube.get("dbb", "nightly", postgres.namespace)["spec"]
    assert spec["backupPath"] == f"/backups/{postgres.name}"
    assert spec["engine"] == "PostgreSQL"
    assert spec["connection"]["host"] == postgres.host
    assert spec["connection"]["port"] == 5432
    assert spec["connection"]["credentialsSecret"]["name"] == f"{postgres.name}-credentials"
    assert spec["storage"]["persistentVolumeClaim"]["claimName"] == f"{postgres.name}-backups"


def test_kubectl_get_dbb_shows_the_columns(kube: Kube, postgres: databases.Database) -> None:
    kube.apply(databases.databasebackup("hourly", postgres, "0 * * * *"))

    def scheduled() -> str | None:
        out = kube("get", "dbb", "hourly", "-n", postgres.namespace)
        return out if "Scheduled" in out or "Pending" in out else None

    out = wait_for("the reconciler to write the phase", scheduled, 120)
    header, row = out.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "DATABASE", "SCHEDULE", "LAST", "BACKUP"]
    assert row.split()[:4] == ["hourly", postgres.name, "0", "*"]
