"""deploy/ on a real kube-apiserver: every manifest is valid against the server's own schemas, the RBAC grants each
component what it needs and refuses the rest, and every Pod the operator runs passes restricted Pod Security.

What is stored and what is a dry run, exactly:
- stored: the namespace dbb-system, the ServiceAccounts, Roles, ClusterRoles and their bindings. `kubectl auth
  can-i` asks the authorizer, which knows only stored RBAC; and a dry run of a namespaced object needs its
  namespace to exist. The samples' namespace `databases` is stored for the same reason.
- `--dry-run=server` for everything else: validated against the server's schemas (strict field validation),
  defaulted and admitted (Pod Security included), then not stored. The webhook configurations in particular must
  never be stored here: they fail closed, no webhook runs behind their Service, and every DatabaseBackup that other
  tests create would be refused.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.backups.defaults import default_spec
from common.backups.model import DatabaseBackupSpec, parse_spec
from hack.harness.controlplane import ROOT, ControlPlane
from reconciler import main as reconciler_main
from reconciler.jobs import RunnerSettings, backup_job
from webhook import main as webhook_main

DEPLOY = ROOT / "deploy"
SAMPLES = DEPLOY / "samples"
CERT_MANAGER = DEPLOY / "webhook" / "cert-manager"
SYSTEM = "dbb-system"
SAMPLES_NAMESPACE = "databases"
# The one spelling of the image in deploy/: `make deploy IMG=...` replaces exactly this string.
IMAGE = "databasebackup-operator:latest"
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
STORED_KINDS = {
    "Namespace",
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# The groups a ServiceAccount token carries: can-i must see what the real token would be allowed, bindings to
# system:authenticated included.
SA_GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{SYSTEM}", "system:authenticated")
PSS_VIOLATION = 'violates PodSecurity "restricted:latest"'

Object = dict[str, Any]
Weakening = Callable[[Object], None]


# --- rendering and applying -----------------------------------------------------------------------------------


def render(control_plane: ControlPlane, path: Path) -> list[Object]:
    """`kubectl kustomize`: the objects `kubectl apply -k` would send."""
    output = control_plane.kubectl("kustomize", str(path)).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def find(objects: list[Object], kind: str, name: str) -> Object:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def as_list(objects: list[Object]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def apply_for_real(control_plane: ControlPlane, objects: list[Object]) -> None:
    # Server-side and forced: idempotent whoever applied these before in this session.
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=as_list(objects))


def dry_run_lines(output: str) -> list[str]:
    lines = output.splitlines()
    assert lines, "kubectl reported nothing"
    assert all(line.endswith("(server dry run)") for line in lines), output
    return lines


@pytest.fixture(scope="module")
def base(control_plane: ControlPlane) -> list[Object]:
    return render(control_plane, DEPLOY)


@pytest.fixture(scope="module")
def samples(control_plane: ControlPlane) -> list[Object]:
    return render(control_plane, SAMPLES)


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, base: list[Object]) -> None:
    """The namespace and the RBAC of deploy/, stored (see the module docstring for why only these)."""
    namespaces = [o for o in base if o["kind"] == "Namespace"]
    apply_for_real(control_plane, namespaces)
    apply_for_real(control_plane, [o for o in base if o["kind"] in STORED_KINDS - {"Namespace"}])


@pytest.fixture(scope="module")
def restricted_namespace(control_plane: ControlPlane) -> str:
    """A namespace that enforces restricted, like a database namespace may: where backup Jobs run. Only dry runs
    go into it, so it stays empty."""
    name = f"pss-{uuid.uuid4().hex[:10]}"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    return name


@pytest.fixture(scope="module")
def with_cert_manager(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> list[Object]:
    """The base plus the cert-manager component, through an overlay as a user would write it."""
    overlay = tmp_path_factory.mktemp("cert-manager-overlay")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY, overlay)],
        "components": [os.path.relpath(CERT_MANAGER, overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(control_plane, overlay)


# --- the base: what `kubectl apply -k deploy/` installs ----------------------------------------------------------


def test_the_base_installs_the_whole_operator_and_nothing_else(base: list[Object]) -> None:
    inventory = {(o["kind"], o["metadata"]["name"]) for o in base}
    assert inventory == {
        ("Namespace", SYSTEM),
        ("CustomResourceDefinition", "databasebackups.databases.test.io"),
        ("CustomResourceDefinition", "databaserestores.databases.test.io"),
        ("CustomResourceDefinition", "backupstores.databases.test.io"),
        ("CustomResourceDefinition", "databasebackuppolicies.databases.test.io"),
        ("ValidatingAdmissionPolicy", "dbb-reconciler-writes-only-policy-backups"),
        ("ValidatingAdmissionPolicyBinding", "dbb-reconciler-writes-only-policy-backups"),
        ("ServiceAccount", "dbb-reconciler"),
        ("ServiceAccount", "dbb-webhook"),
        ("ClusterRole", "dbb-reconciler"),
        ("ClusterRoleBinding", "dbb-reconciler"),
        ("Role", "dbb-reconciler"),
        ("RoleBinding", "dbb-reconciler"),
        ("ClusterRole", "dbb-webhook"),
        ("ClusterRoleBinding", "dbb-webhook"),
        ("Role", "dbb-webhook"),
        ("RoleBinding", "dbb-webhook"),
        ("ClusterRole", "dbb-metrics-auth"),
        ("ClusterRoleBinding", "dbb-metrics-auth"),
        ("ClusterRole", "databasebackup-metrics-reader"),
        ("Deployment", "dbb-reconciler"),
        ("Deployment", "dbb-webhook"),
        ("Service", "dbb-webhook"),
        ("PodDisruptionBudget", "dbb-webhook"),
        ("MutatingWebhookConfiguration", "dbb-webhook"),
        ("ValidatingWebhookConfiguration", "dbb-webhook"),
    }
    namespaced = [o for o in base if "namespace" in o["metadata"]]
    assert {o["metadata"]["namespace"] for o in namespaced} == {SYSTEM}


def test_the_crd_in_the_base_is_the_file_in_deploy_crd(base: list[Object]) -> None:
    for plural in ("databasebackups", "databaserestores"):
        crd = find(base, "CustomResourceDefinition", f"{plural}.databases.test.io")
        on_disk = yaml.safe_load((DEPLOY / "crd" / f"databases.test.io_{plural}.yaml").read_text())
        assert crd == on_disk


def test_kubectl_apply_dry_run_server_accepts_every_manifest(
    control_plane: ControlPlane, base: list[Object], installed: None
) -> None:
    result = control_plane.kubectl("apply", "--dry-run=server", "-k", str(DEPLOY))
    assert len(dry_run_lines(result.stdout)) == len(base)
    # dbb-system warns at restricted: a Deployment whose Pods would be refused says so here.
    assert "PodSecurity" not in result.stderr, result.stderr


def test_dbb_system_enforces_restricted_pod_security(control_plane: ControlPlane, installed: None) -> None:
    stored = json.loads(control_plane.kubectl("get", "namespace", SYSTEM, "-o", "json").stdout)
    labels = stored["metadata"]["labels"]
    assert {key: labels.get(key) for key in RESTRICTED} == RESTRICTED


def test_the_warning_bites_a_deployment_whose_pods_would_be_refused_is_flagged(
    control_plane: ControlPlane, base: list[Object], installed: None
) -> None:
    deployment = copy.deepcopy(find(base, "Deployment", "dbb-reconciler"))
    del deployment["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(deployment))
    assert 'would violate PodSecurity "restricted:latest"' in result.stderr


def test_the_image_is_spelled_once_for_each_use(base: list[Object]) -> None:
    """`make deploy IMG=...` swaps this string: it must be every image the operator runs, and nothing else."""
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{item.get('name', index) if isinstance(item, dict) else index}]")
        elif isinstance(value, str) and "databasebackup-operator:" in value:
            assert value == IMAGE, path
            found.append(path)

    for obj in base:
        walk(obj, f"{obj['kind']}/{obj['metadata']['name']}")
    assert sorted(found) == [
        "Deployment/dbb-reconciler.spec.template.spec.containers[reconciler].env[DBB_RUNNER_IMAGE].value",
        "Deployment/dbb-reconciler.spec.template.spec.containers[reconciler].image",
        "Deployment/dbb-reconciler.spec.template.spec.initContainers[certificate].image",
        "Deployment/dbb-webhook.spec.template.spec.containers[webhook].image",
    ]


# --- the Deployments: hardened, and their arguments are the programs' own flags ------------------------------


def container(deployment: Object) -> Object:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    only: Object = containers[0]
    return only


def port_number(box: Object, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in box.get("ports", []) if p.get("name") == port]
    assert len(numbers) == 1, f"port {port!r} is not declared"
    return int(numbers[0])


@pytest.mark.parametrize("name", ["dbb-reconciler", "dbb-webhook"])
def test_each_deployment_runs_hardened_with_probes_and_resources(base: list[Object], name: str) -> None:
    deployment = find(base, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    box = container(deployment)
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == name
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = box["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert set(box["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in box["resources"]["limits"]
    assert {"livenessProbe", "readinessProbe"} <= set(box)
    assert box["args"][0] == name  # the image has no entrypoint: the first argument is the command


def test_the_reconciler_elects_a_leader_and_is_probed_on_its_health_port(base: list[Object]) -> None:
    deployment = find(base, "Deployment", "dbb-reconciler")
    box = container(deployment)
    args = reconciler_main.parser().parse_args(box["args"][1:])
    assert args.leader_elect is True
    assert args.health_port == 8081
    for probe in ("livenessProbe", "readinessProbe"):
        assert port_number(box, box[probe]["httpGet"]["port"]) == 8081
        assert box[probe]["httpGet"]["scheme"] == "HTTPS"  # the port answers plain HTTP with a 400
    # Ready: synced and leading, or standing by, with the API server answering. Alive: the process answers.
    assert box["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert box["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert args.metrics_auth is True
    env = {e["name"]: e for e in box["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["DBB_RUNNER_IMAGE"]["value"] == box["image"]  # backup Jobs run the image that has dbb-backup
    lease = find(base, "Role", "dbb-reconciler")["rules"][0]
    assert lease["resourceNames"] == [args.lease_name]


def test_the_reconciler_serves_a_certificate_its_init_container_makes_in_memory(base: list[Object]) -> None:
    deployment = find(base, "Deployment", "dbb-reconciler")
    pod = deployment["spec"]["template"]["spec"]
    args = reconciler_main.parser().parse_args(container(deployment)["args"][1:])
    (init,) = pod["initContainers"]
    assert init["args"][0] == "dbb-certs"
    assert f"--out={args.cert_dir}" in init["args"]
    (volume,) = pod["volumes"]
    assert volume["emptyDir"]["medium"] == "Memory"  # the key never touches a disk
    mounts = {box["name"]: box["volumeMounts"] for box in (init, pod["containers"][0])}
    assert mounts["certificate"] == [{"name": volume["name"], "mountPath": str(args.cert_dir)}]
    assert mounts["reconciler"] == [{"name": volume["name"], "mountPath": str(args.cert_dir), "readOnly": True}]


def test_the_webhook_flags_name_its_own_secret_service_and_configurations(base: list[Object]) -> None:
    deployment = find(base, "Deployment", "dbb-webhook")
    box = container(deployment)
    args = webhook_main.parser().parse_args(box["args"][1:])
    service = find(base, "Service", "dbb-webhook")
    assert args.service == service["metadata"]["name"]
    assert port_number(box, service["spec"]["ports"][0]["targetPort"]) == args.port
    secret_rule = find(base, "Role", "dbb-webhook")["rules"][0]
    assert secret_rule["resourceNames"] == [args.cert_secret]
    configuration_rule = find(base, "ClusterRole", "dbb-webhook")["rules"][1]
    assert configuration_rule["resourceNames"] == args.webhook_configuration
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        configuration = find(base, kind, args.webhook_configuration[0])
        for hook in configuration["webhooks"]:
            assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
            assert hook["clientConfig"]["service"]["namespace"] == SYSTEM
    mounts = {m["mountPath"] for m in box["volumeMounts"]}
    assert str(args.cert_dir) in mounts


def test_the_webhook_keeps_one_replica_through_voluntary_disruptions(base: list[Object]) -> None:
    budget = find(base, "PodDisruptionBudget", "dbb-webhook")
    deployment = find(base, "Deployment", "dbb-webhook")
    assert budget["spec"]["minAvailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


# --- RBAC: what each ServiceAccount may do, asked of the real authorizer ------------------------------------------

DBB = "databasebackups.databases.test.io"
DBR = "databaserestores.databases.test.io"
LEASE = "leases.coordination.k8s.io"
MUTATING = "mutatingwebhookconfigurations.admissionregistration.k8s.io"
VALIDATING = "validatingwebhookconfigurations.admissionregistration.k8s.io"
ANY = ("--all-namespaces",)
SHOP = ("-n", "shop")  # any namespace with databases in it
OWN = ("-n", SYSTEM)

# Who may read /metrics: each component asks the API server (common/metrics_auth.py).
METRICS_REVIEWS = [
    ("create", "tokenreviews.authentication.k8s.io"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
]
RECONCILER_MAY = [
    ("list", DBB, *ANY),
    ("watch", DBB, *ANY),
    ("patch", DBB, "--subresource=status", *SHOP),
    ("update", DBB, "--subresource=finalizers", *SHOP),
    ("get", DBB, *SHOP),
    # For DatabaseBackupPolicies; deploy/reconciler/admission.yaml narrows these to the policies' own (tested below).
    ("create", DBB, *SHOP),
    ("update", DBB, *SHOP),
    ("delete", DBB, *SHOP),
    ("list", "databasebackuppolicies.databases.test.io", *ANY),
    ("watch", "databasebackuppolicies.databases.test.io", *ANY),
    ("patch", "databasebackuppolicies.databases.test.io", "--subresource=status", *ANY),
    ("list", DBR, *ANY),
    ("watch", DBR, *ANY),
    ("patch", DBR, "--subresource=status", *SHOP),
    ("update", DBR, "--subresource=finalizers", *SHOP),
    ("list", "jobs.batch", *ANY),
    ("watch", "jobs.batch", *ANY),
    ("create", "jobs.batch", *SHOP),
    ("delete", "jobs.batch", *SHOP),
    ("patch", "jobs.batch", *SHOP),  # ends a run whose Pod cannot start; no more than create already allows
    ("list", "pods", *ANY),
    ("watch", "pods", *ANY),
    ("list", "statefulsets.apps", *ANY),
    ("watch", "statefulsets.apps", *ANY),
    ("create", "events", *SHOP),
    ("create", LEASE, *OWN),
    ("get", f"{LEASE}/dbb-reconciler", *OWN),
    ("update", f"{LEASE}/dbb-reconciler", *OWN),
    *METRICS_REVIEWS,
]
RECONCILER_MUST_NOT = [
    # No Secrets at all, anywhere: the kubelet resolves them for the backup Job.
    ("get", "secrets", *SHOP),
    ("list", "secrets", *SHOP),
    ("watch", "secrets", *SHOP),
    ("list", "secrets", *ANY),
    ("get", "secrets", *OWN),
    ("create", "secrets", *SHOP),
    ("update", "secrets", *SHOP),
    # The user's objects are theirs: no spec writes, no deletes, no database changes. (DatabaseBackups: only a
    # policy's, which admission.yaml enforces.) The administrators' policies are read, never written.
    ("patch", DBB, *SHOP),
    ("update", "databasebackuppolicies.databases.test.io", *ANY),
    ("delete", "databasebackuppolicies.databases.test.io", *ANY),
    ("patch", DBR, *SHOP),
    ("delete", DBR, *SHOP),
    ("patch", "statefulsets.apps", *SHOP),
    ("delete", "statefulsets.apps", *SHOP),
    ("create", "pods", *SHOP),
    ("create", "pods", "--subresource=exec", *SHOP),
    # Only its own Lease, only in its own namespace.
    ("update", f"{LEASE}/some-other-lease", *OWN),
    ("delete", f"{LEASE}/dbb-reconciler", *OWN),
    ("create", LEASE, *SHOP),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", *ANY),
]
WEBHOOK_MAY = [
    ("get", "statefulsets.apps", *SHOP),
    ("get", DBB, *SHOP),  # a DatabaseRestore's source
    ("list", "pods", *SHOP),
    ("list", "pods", *ANY),  # the cache of StatefulSets' Pods
    ("watch", "pods", *ANY),
    ("list", "statefulsets.apps", *ANY),
    ("watch", "statefulsets.apps", *ANY),
    ("get", f"{MUTATING}/dbb-webhook"),
    ("patch", f"{MUTATING}/dbb-webhook"),
    ("get", f"{VALIDATING}/dbb-webhook"),
    ("patch", f"{VALIDATING}/dbb-webhook"),
    ("get", "secrets/dbb-webhook-tls", *OWN),
    ("update", "secrets/dbb-webhook-tls", *OWN),
    ("patch", "secrets/dbb-webhook-tls", *OWN),
    ("list", "endpointslices.discovery.k8s.io", *OWN),
    ("create", "secrets", *OWN),
    *METRICS_REVIEWS,
]
WEBHOOK_MUST_NOT = [
    ("update", "secrets/other", *OWN),
    ("patch", "secrets/other", *OWN),
    ("list", "endpointslices.discovery.k8s.io", *SHOP),
    ("get", "secrets/other", *OWN),
    ("list", "secrets", *OWN),
    ("delete", "secrets/dbb-webhook-tls", *OWN),
    ("get", "secrets/dbb-webhook-tls", *SHOP),
    ("create", "secrets", *SHOP),
    ("patch", f"{VALIDATING}/other"),
    ("patch", f"{MUTATING}/other"),
    ("list", VALIDATING),
    ("create", VALIDATING),
    ("delete", f"{VALIDATING}/dbb-webhook"),
    ("update", f"{VALIDATING}/dbb-webhook"),
    ("create", "statefulsets.apps", *SHOP),
    ("patch", "statefulsets.apps", *SHOP),
    ("list", DBB, *SHOP),
    ("patch", DBB, *SHOP),
    ("get", DBR, *SHOP),
    ("create", "jobs.batch", *SHOP),
    ("get", "pods", *SHOP),
]


def can_i(control_plane: ControlPlane, account: str, check: tuple[str, ...]) -> bool:
    groups = [f"--as-group={group}" for group in SA_GROUPS]
    result = control_plane.kubectl(
        "auth", "can-i", *check, f"--as=system:serviceaccount:{SYSTEM}:{account}", *groups, check=False
    )
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(check)}: {result.stderr}"
    return answer == "yes"


def label(check: tuple[str, ...]) -> str:
    return " ".join(check)


@pytest.mark.parametrize("check", RECONCILER_MAY, ids=label)
def test_the_reconciler_may(control_plane: ControlPlane, installed: None, check: tuple[str, ...]) -> None:
    assert can_i(control_plane, "dbb-reconciler", check)


@pytest.mark.parametrize("check", RECONCILER_MUST_NOT, ids=label)
def test_the_reconciler_may_not(control_plane: ControlPlane, installed: None, check: tuple[str, ...]) -> None:
    assert not can_i(control_plane, "dbb-reconciler", check)


def test_the_reconciler_writes_only_the_databasebackups_of_policies(
    control_plane: ControlPlane, installed: None
) -> None:
    """RBAC grants DatabaseBackup writes in every namespace; the API server's own admission policy narrows them
    to those labelled as a policy's, whatever the reconciler (or whoever holds its token) asks."""
    namespace = f"vap-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", namespace)
    reconciler = ("--as", f"system:serviceaccount:{SYSTEM}:dbb-reconciler", *(f"--as-group={g}" for g in SA_GROUPS))

    def backup(name: str, labels: dict[str, str]) -> str:
        obj = {
            "apiVersion": "databases.test.io/v1",
            "kind": "DatabaseBackup",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"databaseName": "orders", "schedule": "@daily"},
        }
        return json.dumps(obj)

    def relabelled(name: str, labels: dict[str, str]) -> str:
        # The reconciler writes whole objects (update), never patches.
        obj = json.loads(control_plane.kubectl("get", "dbb", name, "-n", namespace, "-o", "json").stdout)
        obj["metadata"]["labels"] = labels
        return json.dumps(obj)

    policy = {"databases.test.io/policy": "nightly"}
    control_plane.kubectl("apply", "-f", "-", input=backup("by-hand", {}))
    refused = "dbb-reconciler writes only DatabaseBackups a DatabaseBackupPolicy made"

    def as_reconciler(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        # The API server loads a new admission policy within a second or so: retry only that wait.
        deadline = time.monotonic() + 30
        while True:
            result = control_plane.kubectl(*reconciler, *args, "-n", namespace, input=input, check=False)
            if refused in result.stderr or result.returncode == 0 or time.monotonic() > deadline:
                return result
            time.sleep(0.2)

    assert refused in as_reconciler("delete", "dbb", "by-hand").stderr
    assert refused in as_reconciler("replace", "-f", "-", input=relabelled("by-hand", policy)).stderr
    assert refused in as_reconciler("create", "-f", "-", input=backup("sneaky", {})).stderr
    assert as_reconciler("create", "-f", "-", input=backup("orders-nightly", policy)).returncode == 0
    assert refused in as_reconciler("replace", "-f", "-", input=relabelled("orders-nightly", {})).stderr
    assert as_reconciler("replace", "-f", "-", input=relabelled("orders-nightly", {**policy, "a": "b"})).returncode == 0
    assert as_reconciler("delete", "dbb", "orders-nightly").returncode == 0
    assert control_plane.kubectl("get", "dbb", "by-hand", "-n", namespace).returncode == 0

    # Of a DatabaseBackup written by hand, its own finalizer only (reconciler/slot.py), and nothing with it. (Made
    # with create: `kubectl replace` rewrites the last-applied annotation of an applied object, which the
    # reconciler's own writes never do, and which the policy rightly refuses.)
    control_plane.kubectl("create", "-f", "-", input=backup("slotted", {}))

    def changed(name: str, finalizers: list[str], **spec: Any) -> str:
        obj = json.loads(control_plane.kubectl("get", "dbb", name, "-n", namespace, "-o", "json").stdout)
        obj["metadata"]["finalizers"] = finalizers
        obj["spec"].update(spec)
        return json.dumps(obj)

    slot = "databases.test.io/replication-slot"
    assert refused in as_reconciler("replace", "-f", "-", input=changed("slotted", [slot], suspend=True)).stderr
    assert refused in as_reconciler("replace", "-f", "-", input=changed("slotted", [slot, "example.com/other"])).stderr
    assert as_reconciler("replace", "-f", "-", input=changed("slotted", [slot])).returncode == 0
    assert as_reconciler("replace", "-f", "-", input=changed("slotted", [])).returncode == 0


@pytest.mark.parametrize("check", WEBHOOK_MAY, ids=label)
def test_the_webhook_may(control_plane: ControlPlane, installed: None, check: tuple[str, ...]) -> None:
    assert can_i(control_plane, "dbb-webhook", check)


@pytest.mark.parametrize("check", WEBHOOK_MUST_NOT, ids=label)
def test_the_webhook_may_not(control_plane: ControlPlane, installed: None, check: tuple[str, ...]) -> None:
    assert not can_i(control_plane, "dbb-webhook", check)


def test_no_other_account_is_bound_to_the_operators_roles(base: list[Object]) -> None:
    # Each component's own roles go to its own account; dbb-metrics-auth (the /metrics reviews) to both.
    own = {"dbb-reconciler": ["dbb-reconciler"], "dbb-webhook": ["dbb-webhook"]}
    shared = {"dbb-metrics-auth": ["dbb-reconciler", "dbb-webhook"]}
    bindings = [obj for obj in base if obj["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert {obj["metadata"]["name"] for obj in bindings} == own.keys() | shared.keys()
    for obj in bindings:
        name = obj["metadata"]["name"]
        assert obj["roleRef"]["name"] == name
        accounts = {**own, **shared}[name]
        assert obj["subjects"] == [{"kind": "ServiceAccount", "name": a, "namespace": SYSTEM} for a in accounts]


# --- Pod Security: every Pod the operator runs, submitted to a namespace that enforces restricted ---------------


def sample_spec(samples: list[Object], name: str, **extra: Any) -> tuple[Object, DatabaseBackupSpec]:
    """A sample DatabaseBackup with the defaults the webhook fills in from its sample StatefulSet."""
    obj = copy.deepcopy(find(samples, "DatabaseBackup", name))
    obj["metadata"]["uid"] = str(uuid.uuid4())
    obj["spec"].update(extra)
    statefulset = find(samples, "StatefulSet", obj["spec"]["databaseName"])
    spec, errors = parse_spec(default_spec(obj["spec"], namespace=SAMPLES_NAMESPACE, statefulset=statefulset))
    assert spec is not None, errors
    return obj, spec


def backup_jobs(samples: list[Object]) -> dict[str, Object]:
    runner = RunnerSettings(image=IMAGE)
    scheduled = datetime(2025, 1, 1, 3, 5, tzinfo=UTC)
    variants = {
        "job/databasebackup-sample": sample_spec(samples, "databasebackup-sample"),
        "job/databasebackup-mariadb-sample": sample_spec(samples, "databasebackup-mariadb-sample"),
        # Adds the encryption key's Secret volume and the scratch restore.
        "job/encrypted-with-restore-test": sample_spec(
            samples,
            "databasebackup-sample",
            encryption={"keySecret": {"name": "backup-key", "key": "key"}},
            verify={"restoreTest": True},
        ),
    }
    return {key: backup_job(obj, spec, scheduled=scheduled, runner=runner) for key, (obj, spec) in variants.items()}


SAMPLE_DATABASES = ("example-db", "example-mariadb")


def statefulset_pod(statefulset: Object) -> Object:
    """Pod 0's spec as the StatefulSet controller makes it: each claim template becomes a PVC volume."""
    spec: Object = copy.deepcopy(statefulset["spec"]["template"]["spec"])
    name = statefulset["metadata"]["name"]
    for template in statefulset["spec"].get("volumeClaimTemplates", []):
        claim = template["metadata"]["name"]
        volume = {"name": claim, "persistentVolumeClaim": {"claimName": f"{claim}-{name}-0"}}
        spec.setdefault("volumes", []).append(volume)
    return spec


@pytest.fixture(scope="module")
def pod_specs(base: list[Object], samples: list[Object], with_cert_manager: list[Object]) -> dict[str, Object]:
    specs = {
        f"deployment/{name}": find(base, "Deployment", name)["spec"]["template"]["spec"]
        for name in ("dbb-reconciler", "dbb-webhook")
    }
    specs["deployment/dbb-webhook+cert-manager"] = find(with_cert_manager, "Deployment", "dbb-webhook")["spec"][
        "template"
    ]["spec"]
    specs |= {f"statefulset/{name}": statefulset_pod(find(samples, "StatefulSet", name)) for name in SAMPLE_DATABASES}
    specs |= {key: job["spec"]["template"]["spec"] for key, job in backup_jobs(samples).items()}
    return specs


def submit_pod(control_plane: ControlPlane, namespace: str, spec: Object) -> subprocess.CompletedProcess[str]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pss-{uuid.uuid4().hex[:8]}"}, "spec": spec}
    return control_plane.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False
    )


POD_SPECS = [
    "deployment/dbb-reconciler",
    "deployment/dbb-webhook",
    "deployment/dbb-webhook+cert-manager",
    "statefulset/example-db",
    "statefulset/example-mariadb",
    "job/databasebackup-sample",
    "job/databasebackup-mariadb-sample",
    "job/encrypted-with-restore-test",
]


@pytest.mark.parametrize("which", POD_SPECS)
def test_the_pod_passes_restricted_pod_security(
    control_plane: ControlPlane, restricted_namespace: str, pod_specs: dict[str, Object], which: str
) -> None:
    result = submit_pod(control_plane, restricted_namespace, pod_specs[which])
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr


def test_the_check_bites_a_privileged_pod_is_refused(control_plane: ControlPlane, restricted_namespace: str) -> None:
    spec = {"containers": [{"name": "root", "image": IMAGE, "securityContext": {"privileged": True}}]}
    result = submit_pod(control_plane, restricted_namespace, spec)
    assert result.returncode != 0
    assert PSS_VIOLATION in result.stderr
    assert "privileged" in result.stderr


def _without_run_as_non_root(spec: Object) -> None:
    del spec["securityContext"]["runAsNonRoot"]


def _without_seccomp(spec: Object) -> None:
    del spec["securityContext"]["seccompProfile"]


def _without_dropping_capabilities(spec: Object) -> None:
    del spec["containers"][0]["securityContext"]["capabilities"]


def _with_privilege_escalation(spec: Object) -> None:
    del spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"]


@pytest.mark.parametrize(
    ("weaken", "complaint"),
    [
        (_without_run_as_non_root, "runAsNonRoot != true"),
        (_without_seccomp, "seccompProfile"),
        (_without_dropping_capabilities, "unrestricted capabilities"),
        (_with_privilege_escalation, "allowPrivilegeEscalation != false"),
    ],
    ids=["runAsNonRoot", "seccompProfile", "capabilities", "allowPrivilegeEscalation"],
)
def test_each_hardening_setting_of_the_backup_job_is_load_bearing(
    control_plane: ControlPlane,
    restricted_namespace: str,
    pod_specs: dict[str, Object],
    weaken: Weakening,
    complaint: str,
) -> None:
    """Without any one of them, the backup Job's Pod would be refused in a restricted namespace."""
    spec = copy.deepcopy(pod_specs["job/databasebackup-sample"])
    weaken(spec)
    result = submit_pod(control_plane, restricted_namespace, spec)
    assert result.returncode != 0
    assert PSS_VIOLATION in result.stderr
    assert complaint in result.stderr


@pytest.mark.parametrize("which", ["job/databasebackup-sample", "job/encrypted-with-restore-test"])
def test_the_backup_job_is_a_valid_job_with_no_pod_security_warning(
    control_plane: ControlPlane, restricted_namespace: str, samples: list[Object], which: str
) -> None:
    job = copy.deepcopy(backup_jobs(samples)[which])
    job["metadata"]["namespace"] = restricted_namespace
    del job["metadata"]["ownerReferences"]  # its owner does not exist here
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(job))
    assert "PodSecurity" not in result.stderr, result.stderr


# --- the cert-manager component ------------------------------------------------------------------------------------

CERT_MANAGER_KINDS = {"Certificate", "Issuer"}


def test_with_cert_manager_the_webhook_only_reads_the_certificate_it_is_given(with_cert_manager: list[Object]) -> None:
    deployment = find(with_cert_manager, "Deployment", "dbb-webhook")
    box = container(deployment)
    args = webhook_main.parser().parse_args(box["args"][1:])
    assert args.cert_secret is None
    assert args.webhook_configuration == []
    certificate = find(with_cert_manager, "Certificate", "dbb-webhook")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in box["volumeMounts"] if m["mountPath"] == str(args.cert_dir))
    assert volumes[mount["name"]] == {
        "name": mount["name"],
        "secret": {"secretName": certificate["spec"]["secretName"], "defaultMode": 0o440},
    }
    assert deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 65532
    service = find(with_cert_manager, "Service", "dbb-webhook")
    assert f"{service['metadata']['name']}.{SYSTEM}.svc" in certificate["spec"]["dnsNames"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = find(with_cert_manager, kind, "dbb-webhook")["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{SYSTEM}/{certificate['metadata']['name']}"


def test_with_cert_manager_the_webhook_may_write_nothing(base: list[Object], with_cert_manager: list[Object]) -> None:
    inventory = {(o["kind"], o["metadata"]["name"]) for o in with_cert_manager}
    assert ("Role", "dbb-webhook") not in inventory
    assert ("RoleBinding", "dbb-webhook") not in inventory
    rules = find(with_cert_manager, "ClusterRole", "dbb-webhook")["rules"]
    # The base's read rules, every one: the host, store and restore checks read Services, Namespaces,
    # DatabaseBackups and BackupStores whoever issues the certificate.
    assert rules == [
        rule
        for rule in find(base, "ClusterRole", "dbb-webhook")["rules"]
        if rule["apiGroups"] != ["admissionregistration.k8s.io"]
    ]
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in rules)


def test_with_cert_manager_the_manifests_apply_with_dry_run_server(
    control_plane: ControlPlane, installed: None, with_cert_manager: list[Object]
) -> None:
    """All but cert-manager's own kinds, whose CRDs this control plane does not have."""
    ours = [o for o in with_cert_manager if o["kind"] not in CERT_MANAGER_KINDS]
    assert len(ours) == len(with_cert_manager) - len(CERT_MANAGER_KINDS)
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=as_list(ours))
    assert len(dry_run_lines(result.stdout)) == len(ours)
    assert "PodSecurity" not in result.stderr, result.stderr


# --- the samples ------------------------------------------------------------------------------------------------


def test_the_samples_hold_two_databases_with_their_backups(samples: list[Object]) -> None:
    inventory = {(o["kind"], o["metadata"]["name"]) for o in samples}
    assert inventory == {
        ("Namespace", SAMPLES_NAMESPACE),
        ("Secret", "example-db-credentials"),
        ("Service", "example-db"),
        ("StatefulSet", "example-db"),
        ("PersistentVolumeClaim", "example-db-backups"),
        ("DatabaseBackup", "databasebackup-sample"),
        ("Secret", "example-mariadb-credentials"),
        ("Service", "example-mariadb"),
        ("StatefulSet", "example-mariadb"),
        ("PersistentVolumeClaim", "example-mariadb-backups"),
        ("DatabaseBackup", "databasebackup-mariadb-sample"),
    }
    namespace = find(samples, "Namespace", SAMPLES_NAMESPACE)
    assert namespace["metadata"]["labels"].items() >= RESTRICTED.items()
    assert find(samples, "StatefulSet", "example-db")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "postgres:16"
    )


def test_the_original_sample_keeps_its_fields(samples: list[Object]) -> None:
    sample = find(samples, "DatabaseBackup", "databasebackup-sample")
    assert sample["apiVersion"] == "databases.test.io/v1"
    assert sample["spec"] == {
        "databaseName": "example-db",
        "schedule": "*/5 * * * *",
        "backupPath": "/backups/example-db",
    }


def test_the_samples_apply_with_dry_run_server(control_plane: ControlPlane, samples: list[Object]) -> None:
    apply_for_real(control_plane, [find(samples, "Namespace", SAMPLES_NAMESPACE)])
    result = control_plane.kubectl("apply", "--dry-run=server", "-k", str(SAMPLES))
    assert len(dry_run_lines(result.stdout)) == len(samples)
    assert "PodSecurity" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("name", "engine", "port"),
    [("databasebackup-sample", "PostgreSQL", 5432), ("databasebackup-mariadb-sample", "MySQL", 3306)],
)
def test_the_webhook_completes_each_sample_from_the_objects_beside_it(
    control_plane: ControlPlane, webhook_namespace: str, samples: list[Object], name: str, engine: str, port: int
) -> None:
    """The real webhook defaults the sample from its StatefulSet; everything it names is in the samples."""
    stored = []
    for obj in samples:
        if obj["kind"] in ("Secret", "Service", "StatefulSet", "PersistentVolumeClaim"):
            obj = copy.deepcopy(obj)
            obj["metadata"]["namespace"] = webhook_namespace
            stored.append(obj)
    control_plane.kubectl("apply", "-f", "-", input=as_list(stored))
    sample = copy.deepcopy(find(samples, "DatabaseBackup", name))
    sample["metadata"]["namespace"] = webhook_namespace
    result = control_plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(sample))
    spec = json.loads(result.stdout)["spec"]
    statefulset = find(samples, "StatefulSet", sample["spec"]["databaseName"])
    service = find(samples, "Service", statefulset["spec"]["serviceName"])
    assert spec["engine"] == engine
    assert spec["connection"]["host"] == f"{service['metadata']['name']}.{webhook_namespace}.svc"
    assert spec["connection"]["port"] == port
    assert service["spec"]["clusterIP"] == "None"
    assert port in [p["port"] for p in service["spec"]["ports"]]
    credentials = spec["connection"]["credentialsSecret"]
    secret = find(samples, "Secret", credentials["name"])
    assert credentials["passwordKey"] in secret["stringData"]
    assert "usernameKey" not in credentials or credentials["usernameKey"] in secret["stringData"]
    find(samples, "PersistentVolumeClaim", spec["storage"]["persistentVolumeClaim"]["claimName"])
    assert spec["backupPath"] == f"/backups/{sample['spec']['databaseName']}"
