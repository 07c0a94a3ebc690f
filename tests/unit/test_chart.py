"""The Helm chart (charts/databasebackup-operator) renders what kustomize renders from deploy/, object by object, so
the two installs cannot drift; its values reach the objects they name; `helm lint` passes.

helm is $HELM (the Makefile sets it from hack/helm.sh); kubectl, for `kubectl kustomize`, is the one
hack/envtest.sh builds. Neither needs a cluster.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.harness.controlplane import ROOT, find_assets

CHART = ROOT / "charts" / "databasebackup-operator"
DEPLOY = ROOT / "deploy"
RELEASE_NAMESPACE = "dbb-system"
# Helm's standard labels: the only difference the chart may add to what deploy/ renders,
STANDARD_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
}
# and, on the Namespace only, that `helm uninstall` keeps it: Helm's record of the release lives in it, and with
# the namespace deleted first the uninstall fails to find that record (templates/namespace.yaml).
KEEP = {"helm.sh/resource-policy": "keep"}

Object = dict[str, Any]
Key = tuple[str, str, str, str]
Render = Callable[..., list[Object]]


@pytest.fixture(scope="module")
def helm() -> str:
    path = os.environ.get("HELM")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"HELM={path!r} is not an executable: run the tests through make, or HELM=$(bash hack/helm.sh)")
    return path


@pytest.fixture(scope="module")
def kubectl() -> str:
    return str(find_assets() / "kubectl")


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def documents(text: str) -> list[Object]:
    return [document for document in yaml.safe_load_all(text) if document]


@pytest.fixture(scope="module")
def template(helm: str) -> Render:
    """`helm template` of the chart in RELEASE_NAMESPACE, CRDs included, with these values."""

    def render(values: dict[str, Any] | None = None, *, namespace: str = RELEASE_NAMESPACE) -> list[Object]:
        return documents(template_text(helm, values, namespace=namespace, crds=True))

    return render


def helm_template(
    helm: str, values: dict[str, Any] | None, *, namespace: str = RELEASE_NAMESPACE, crds: bool = False
) -> subprocess.CompletedProcess[str]:
    # Values as JSON on stdin: exact types, unlike --set. The Kubernetes version is the one the suite runs: a helm
    # built from Go modules may default to an older one than the chart's kubeVersion allows.
    command = [helm, "template", "dbb", str(CHART), "--namespace", namespace, "--values", "-", "--kube-version=1.34.4"]
    return subprocess.run(
        command + (["--include-crds"] if crds else []),
        input=json.dumps(values or {}),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def template_text(helm: str, values: dict[str, Any] | None, *, namespace: str, crds: bool = False) -> str:
    result = helm_template(helm, values, namespace=namespace, crds=crds)
    assert result.returncode == 0, f"helm template exited {result.returncode}:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def cert_manager_overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base plus the cert-manager component, through an overlay as a user writes it."""
    overlay = tmp_path_factory.mktemp("cert-manager-overlay")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY, overlay)],
        "components": [os.path.relpath(DEPLOY / "webhook" / "cert-manager", overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def key(obj: Object) -> Key:
    metadata = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], metadata.get("namespace", ""), metadata["name"])


def without_standard_labels(obj: Object) -> Object:
    obj = json.loads(json.dumps(obj))
    if obj["kind"] == "Namespace" and obj["metadata"].get("annotations") == KEEP:
        del obj["metadata"]["annotations"]
    for metadata in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        labels = metadata.get("labels")
        if labels is None:
            continue
        for label in STANDARD_LABELS & labels.keys():
            del labels[label]
        if not labels:
            del metadata["labels"]
    result: Object = obj
    return result


def by_key(objects: list[Object]) -> dict[Key, Object]:
    keyed = {key(obj): without_standard_labels(obj) for obj in objects}
    assert len(keyed) == len(objects), "two objects with the same apiVersion, kind, namespace and name"
    return keyed


def differences(kustomize: list[Object], chart: list[Object]) -> list[str]:
    """What differs, object by object, in words and as a diff of each object's YAML."""
    ours, theirs = by_key(kustomize), by_key(chart)
    problems = [f"only in kustomize: {k}" for k in sorted(ours.keys() - theirs.keys())]
    problems += [f"only in the chart: {k}" for k in sorted(theirs.keys() - ours.keys())]
    for k in sorted(ours.keys() & theirs.keys()):
        if ours[k] != theirs[k]:
            left = yaml.safe_dump(ours[k], sort_keys=True).splitlines()
            right = yaml.safe_dump(theirs[k], sort_keys=True).splitlines()
            diff = "\n".join(difflib.unified_diff(left, right, "kustomize", "chart", lineterm=""))
            problems.append(f"{k} differs:\n{diff}")
    return problems


# --- the chart renders what kustomize renders ---------------------------------------------------------------


VARIANTS = {
    "default": (DEPLOY, {}),
    "namespaced": (ROOT / "overlays" / "namespaced", {"namespaced": {"enabled": True, "namespaces": ["databases"]}}),
    "cert-manager": (None, {"certManager": {"enabled": True}}),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_chart_renders_the_objects_kustomize_renders(
    variant: str, template: Render, kubectl: str, cert_manager_overlay: Path
) -> None:
    path, values = VARIANTS[variant]
    kustomize = documents(run(kubectl, "kustomize", str(path or cert_manager_overlay)))
    problems = differences(kustomize, template(values))
    assert not problems, "\n".join(problems)


def test_the_crds_in_the_chart_are_the_files_in_deploy_crd() -> None:
    ours = sorted(p.name for p in (DEPLOY / "crd").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart == ours
    for name in ours:
        copy = CHART / "crds" / name
        assert not copy.is_symlink(), f"{copy} is a symlink: helm package would not follow it everywhere"
        assert copy.read_bytes() == (DEPLOY / "crd" / name).read_bytes(), (
            f"{copy} differs from deploy/crd/{name}: run make chart-crds"
        )


# --- values ---------------------------------------------------------------------------------------------------


def find(objects: list[Object], kind: str, name: str) -> Object:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(objects: list[Object], deployment: str) -> Object:
    spec: Object = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def containers(objects: list[Object]) -> Iterator[Object]:
    for deployment in ("dbb-webhook", "dbb-reconciler"):
        spec = pod_spec(objects, deployment)
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def test_every_object_follows_the_release_namespace(helm: str) -> None:
    """No object names dbb-system when the release is elsewhere: Service references, subjects, the admission
    policy's ServiceAccount, cert-manager's names."""
    for values in ({}, {"certManager": {"enabled": True}}, {"namespaced": {"enabled": True}}):
        text = template_text(helm, values, namespace="backups-system")
        assert "dbb-system" not in text, values
    objects = documents(template_text(helm, {}, namespace="backups-system"))
    policy = find(objects, "ValidatingAdmissionPolicy", "dbb-reconciler-writes-only-policy-backups")
    expression = policy["spec"]["matchConditions"][0]["expression"]
    assert expression == 'request.userInfo.username == "system:serviceaccount:backups-system:dbb-reconciler"'
    assert find(objects, "Namespace", "backups-system")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )


def test_the_image_is_every_containers_and_the_backup_jobs(template: Render) -> None:
    image = "team/databasebackup-operator"
    objects = template({"image": {"repository": image, "tag": "1.2.3", "pullPolicy": "IfNotPresent"}})
    boxes = list(containers(objects))
    assert len(boxes) == 3
    assert {(c["image"], c["imagePullPolicy"]) for c in boxes} == {(f"{image}:1.2.3", "IfNotPresent")}
    env = {e["name"]: e.get("value") for e in pod_spec(objects, "dbb-reconciler")["containers"][0]["env"]}
    assert env["DBB_RUNNER_IMAGE"] == f"{image}:1.2.3"


def test_replicas_resources_and_scheduling_reach_both_deployments(template: Render) -> None:
    scheduling = {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "imagePullSecrets": [{"name": "pull"}],
    }
    objects = template(
        {
            "webhook": {"replicas": 3, "resources": {"limits": {"memory": "1Gi"}}},
            "reconciler": {"replicas": 1, "resources": {"requests": {"cpu": "1"}}},
            **scheduling,
        }
    )
    webhook, reconciler = (find(objects, "Deployment", name)["spec"] for name in ("dbb-webhook", "dbb-reconciler"))
    assert (webhook["replicas"], reconciler["replicas"]) == (3, 1)
    assert webhook["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert reconciler["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "96Mi"}
    for spec in (webhook["template"]["spec"], reconciler["template"]["spec"]):
        assert {field: spec[field] for field in scheduling} == scheduling


def test_the_caps_become_the_reconcilers_flags_and_only_when_set(template: Render) -> None:
    def args(values: dict[str, Any]) -> list[str]:
        arguments: list[str] = pod_spec(template({"reconciler": values}), "dbb-reconciler")["containers"][0]["args"]
        return arguments

    base = ["dbb-reconciler", "--leader-elect", "--health-port=8081", "--cert-dir=/tls"]
    assert args({}) == base
    caps = {"maxRunning": 20, "maxRunningPerNamespace": 5, "maxRunningPerServer": 2, "maxRunningPerStorage": 0}
    assert args(caps) == [
        *base,
        "--max-running=20",
        "--max-running-per-namespace=5",
        "--max-running-per-server=2",
        "--max-running-per-storage=0",
    ]


def test_a_namespaced_reconciler_watching_only_its_own_namespace_has_one_role_there(template: Render) -> None:
    objects = template({"namespaced": {"enabled": True}})
    args = pod_spec(objects, "dbb-reconciler")["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={RELEASE_NAMESPACE}"]
    roles = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "dbb-reconciler"]
    assert len(roles) == 1
    resources = {r for rule in roles[0]["rules"] for r in rule["resources"]}
    assert {"leases", "databasebackups", "jobs"} <= resources
    assert not [o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "dbb-reconciler"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"namespaced": {"enabled": True}, "policies": [{"name": "nightly", "spec": {}}]},
            "policies need the cluster-wide reconciler",
        ),
        # values.schema.json: a misspelled cap would otherwise be ignored without a word.
        ({"reconciler": {"maxRuning": 3}}, "additional properties 'maxRuning' not allowed"),
        ({"reconciler": {"maxRunning": -1}}, "/reconciler/maxRunning"),
        ({"backupStores": [{"spec": {}}]}, "missing property 'name'"),
    ],
    ids=["policies-namespaced", "misspelled", "negative-cap", "store-without-name"],
)
def test_values_that_cannot_work_are_refused(helm: str, values: dict[str, Any], message: str) -> None:
    result = helm_template(helm, values)
    assert result.returncode != 0
    assert message in result.stderr


def test_backup_stores_policies_and_metrics_readers_come_from_values(template: Render) -> None:
    store = {"s3": {"bucket": "backups", "endpoint": "https://s3.example", "credentialsSecret": {"name": "s3"}}}
    policy = {"namespaceSelector": {"matchLabels": {"tier": "db"}}, "template": {"spec": {"schedule": "@daily"}}}
    reader = {"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}
    objects = template(
        {
            "backupStores": [{"name": "main", "spec": store, "labels": {"tier": "gold"}}],
            "policies": [{"name": "nightly", "spec": policy}, {"name": "audit"}],
            "metrics": {"readers": [reader]},
        }
    )
    backup_store = find(objects, "BackupStore", "main")
    assert (backup_store["apiVersion"], backup_store["spec"]) == ("databases.test.io/v1", store)
    assert backup_store["metadata"]["labels"]["tier"] == "gold"
    assert find(objects, "DatabaseBackupPolicy", "nightly")["spec"] == policy
    assert find(objects, "DatabaseBackupPolicy", "audit")["spec"] == {}
    binding = find(objects, "ClusterRoleBinding", "databasebackup-metrics-reader")
    assert binding["roleRef"]["name"] == "databasebackup-metrics-reader"
    assert binding["subjects"] == [reader]


def test_without_create_namespace_the_chart_renders_no_namespace(template: Render) -> None:
    assert not [o for o in template({"createNamespace": False}) if o["kind"] == "Namespace"]


# --- helm lint ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "namespaced": {"enabled": True, "namespaces": ["a", "b"]},
            "certManager": {"enabled": True},
            "reconciler": {"maxRunning": 3},
            "metrics": {"readers": [{"kind": "Group", "name": "scrapers"}]},
            "backupStores": [{"name": "main", "spec": {"s3": {"bucket": "b", "credentialsSecret": {"name": "s"}}}}],
        },
    ],
    ids=["default", "everything-set"],
)
def test_helm_lint_passes(helm: str, values: dict[str, Any], tmp_path: Path) -> None:
    file = tmp_path / "values.json"
    file.write_text(json.dumps(values))
    output = run(helm, "lint", "--strict", str(CHART), "--values", str(file))
    assert "1 chart(s) linted, 0 chart(s) failed" in output
