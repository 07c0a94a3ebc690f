"""The Helm chart on the real cluster: `helm install` brings up both Deployments and a backup runs, `helm upgrade`
applies changed values, `helm uninstall` removes the release's objects and keeps the CRDs, as Helm documents.

It runs after test_9_undeploy: the kustomize install and the chart own the same cluster-scoped objects, so only one
can be installed at a time. Run alone (`make e2e PYTEST_ARGS="-k helm"`), it removes a kustomize install first.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.constants import CRD_NAME, LABEL_BACKUP_NAME
from tests.e2e import databases
from tests.e2e.conftest import ROOT, SYSTEM, make
from tests.e2e.kube import Kube, wait_for

CHART = ROOT / "charts" / "databasebackup-operator"
RELEASE = "dbb"
NAMESPACE = "e2e-helm"
DEPLOYMENTS = ("dbb-webhook", "dbb-reconciler")


class Helm:
    def __init__(self, binary: str, kube: Kube) -> None:
        self.binary, self.kube = binary, kube

    def __call__(self, *args: str, timeout: float = 420) -> str:
        result = subprocess.run(
            [self.binary, *args, "--namespace", SYSTEM],
            capture_output=True,
            text=True,
            env=self.kube.env,
            check=False,
            timeout=timeout,
        )
        assert result.returncode == 0, f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result.stdout


@pytest.fixture(scope="module")
def helm(kube: Kube) -> Helm:
    binary = os.environ.get("HELM")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail(f"HELM={binary!r} is not an executable: run the suite with `make e2e`")
    return Helm(binary, kube)


@pytest.fixture(scope="module")
def release(kube: Kube, helm: Helm, image: str) -> Iterator[str]:
    """`helm install` of the chart with the suite's image; returns its output. Uninstalled by the last test, or
    here if that never ran."""
    if kube.exists("clusterrole", "dbb-webhook") and not managed_by_helm(kube):
        result = make(kube, "undeploy")
        assert result.returncode == 0, f"make undeploy failed:\n{result.stdout}\n{result.stderr}"
        wait_for("the kustomize install to be gone", lambda: not kube.exists("clusterrole", "dbb-webhook"), 180)
    # A namespace still terminating (a previous run's) would refuse the release's objects.
    wait_for(f"namespace {SYSTEM} to finish terminating", lambda: not terminating(kube, SYSTEM), 180)
    repository, tag = image.rsplit(":", 1)
    output = helm(
        "install",
        RELEASE,
        str(CHART),
        "--create-namespace",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--wait",
        "--timeout=5m",
    )
    yield output
    if json.loads(helm("list", "--output=json")):
        helm("uninstall", RELEASE, "--wait")
    # The cluster as the suite found it: the CRDs Helm kept would otherwise be Helm's fields in the next
    # `make deploy`'s server-side apply.
    kube.run("delete", "--ignore-not-found", "--wait=false", "-f", str(CHART / "crds"), check=False)
    kube.run("delete", "namespace", SYSTEM, "--wait=false", check=False)


def terminating(kube: Kube, namespace: str) -> bool:
    result = kube.run("get", "namespace", namespace, "-o", "jsonpath={.status.phase}", check=False)
    return result.returncode == 0 and result.stdout == "Terminating"


def managed_by_helm(kube: Kube) -> bool:
    """Whether the operator's cluster-scoped objects are a Helm release's (else `make deploy` made them)."""
    labels = kube.get("clusterrole", "dbb-webhook")["metadata"].get("labels", {})
    return bool(labels.get("app.kubernetes.io/managed-by") == "Helm")


def available(kube: Kube, name: str) -> dict[str, Any]:
    deployment = kube.get("deployment", name, SYSTEM)
    conditions = {c["type"]: c["status"] for c in deployment["status"].get("conditions", [])}
    assert conditions.get("Available") == "True", f"{name}: {deployment['status']}"
    assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"], deployment["status"]
    return deployment


@pytest.fixture(scope="module")
def shop(kube: Kube, release: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, NAMESPACE) as namespace:
        yield databases.running(
            kube,
            databases.Database("postgresql", "15", "shop-db", namespace, "e2e-helm-password"),
            rows=100,
            orders=100,
        )


def test_helm_install_brings_up_both_deployments(kube: Kube, release: str, image: str) -> None:
    assert "STATUS: deployed" in release
    for name in DEPLOYMENTS:
        kube.wait_rollout(SYSTEM, f"deployment/{name}", 300)
        deployment = available(kube, name)
        assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    reconciler = kube.get("deployment", "dbb-reconciler", SYSTEM)["spec"]["template"]["spec"]["containers"][0]
    assert reconciler["image"] == image
    assert {"name": "DBB_RUNNER_IMAGE", "value": image} in reconciler["env"]
    labels = kube.get("namespace", SYSTEM)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_backup_runs_under_the_helm_install(kube: Kube, shop: databases.Database, image: str) -> None:
    kube.apply(databases.databasebackup("helm-now", shop, "0 0 1 1 *", backup_now="first"))
    last = wait_for(
        "the backup-now run to be recorded",
        lambda: kube.get("dbb", "helm-now", shop.namespace).get("status", {}).get("lastBackup"),
        240,
    )
    assert last["file"].startswith(f"/backups/{shop.name}/helm-now-")
    # The Job runs the image the chart's image value named (DBB_RUNNER_IMAGE).
    jobs = kube.items("jobs", shop.namespace, f"{LABEL_BACKUP_NAME}=helm-now")
    assert [job["spec"]["template"]["spec"]["containers"][0]["image"] for job in jobs] == [image]


def test_helm_upgrade_applies_changed_values(kube: Kube, helm: Helm, release: str, tmp_path: Path) -> None:
    values = {
        "reconciler": {"maxRunning": 5},
        "webhook": {"replicas": 1},
        # Created through the webhook, which runs by now (docs/helm.md: not on a first install).
        "backupStores": [
            {
                "name": "e2e-helm",
                "spec": {
                    "s3": {"bucket": "e2e-helm", "endpoint": "https://s3.invalid", "credentialsSecret": {"name": "s3"}}
                },
            }
        ],
    }
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    # The CRDs first, as docs/helm.md says: Helm never upgrades crds/.
    kube("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    output = helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--values", str(file), "--wait", "--timeout=5m")
    assert "REVISION: 2" in output
    for name in DEPLOYMENTS:
        kube.wait_rollout(SYSTEM, f"deployment/{name}", 300)
        available(kube, name)
    reconciler = kube.get("deployment", "dbb-reconciler", SYSTEM)["spec"]["template"]["spec"]
    assert "--max-running=5" in reconciler["containers"][0]["args"]
    assert kube.get("deployment", "dbb-webhook", SYSTEM)["spec"]["replicas"] == 1
    assert kube.get("backupstore", "e2e-helm")["spec"]["s3"]["bucket"] == "e2e-helm"
    # The values of the install stay (--reuse-values): still the suite's image, with one more change.
    assert reconciler["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_helm_uninstall_removes_the_release_and_keeps_the_crds(kube: Kube, helm: Helm, release: str) -> None:
    manifest = [d for d in yaml.safe_load_all(helm("get", "manifest", RELEASE)) if d]
    assert len(manifest) > 20
    output = helm("uninstall", RELEASE, "--wait", "--timeout=3m")
    assert f'release "{RELEASE}" uninstalled' in output

    def left() -> list[str]:
        found = []
        for document in manifest:
            kind, metadata = document["kind"], document["metadata"]
            if kind == "Namespace":
                continue  # kept by its resource policy (templates/namespace.yaml)
            scope = ["-n", metadata["namespace"]] if "namespace" in metadata else []
            if kube.run("get", kind, metadata["name"], *scope, check=False).returncode == 0:
                found.append(f"{kind}/{metadata['name']}")
        return found

    wait_for("every object of the release to be gone", lambda: not left(), 180)
    assert kube.exists("crd", CRD_NAME), "Helm keeps the CRDs of crds/ on uninstall"
    assert kube.exists("namespace", SYSTEM)
    assert not json.loads(helm("list", "--output=json"))
