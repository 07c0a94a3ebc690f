"""The namespaced install (overlays/namespaced/): the reconciler's only grants on namespaced objects are a Role per
watched namespace, and with those alone it runs backups there and leaves every other namespace alone.

The rendered overlay is checked as kubectl would apply it; then the reconciler runs on the real API server as its
ServiceAccount (a real token), with exactly the overlay's Role in two namespaces (two `--namespace`) and the base's
Lease Role, and nothing else: a backup in each runs and its status and Event are written, a backup in a third
namespace is never touched, and no request of the reconciler is refused (it never even asks elsewhere)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.harness.controlplane import ROOT, ControlPlane
from reconciler import main as reconciler_main
from tests.fixtures import databasebackup, governing_service, statefulset
from tests.integration.inprocess import reconciler, until

OVERLAY = ROOT / "overlays" / "namespaced"
SYSTEM = "dbb-system"
ACCOUNT = "dbb-reconciler"
# Cluster-scoped by nature: the /metrics reviews, and what the trust rules read (Namespaces' labels and annotations,
# the administrators' BackupStores), read only. Everything else the reconciler does is in a namespace.
REVIEWS = {"tokenreviews", "subjectaccessreviews"}
CLUSTER_READS = {"namespaces", "backupstores"}
READ = {"get", "list", "watch"}

Object = dict[str, Any]


@pytest.fixture(scope="module")
def overlay(control_plane: ControlPlane) -> list[Object]:
    output = control_plane.kubectl("kustomize", str(OVERLAY)).stdout
    return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="module")
def base(control_plane: ControlPlane) -> list[Object]:
    output = control_plane.kubectl("kustomize", str(ROOT / "deploy")).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def binds_reconciler(binding: Object) -> bool:
    return any(
        s.get("kind") == "ServiceAccount" and s.get("name") == ACCOUNT and s.get("namespace") == SYSTEM
        for s in binding.get("subjects") or []
    )


def reconciler_roles(objects: list[Object]) -> dict[str, Object]:
    """The Roles bound to the reconciler, by namespace."""
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects if o["kind"] == "Role"}
    return {
        b["metadata"]["namespace"]: roles[(b["metadata"]["namespace"], b["roleRef"]["name"])]
        for b in objects
        if b["kind"] == "RoleBinding" and binds_reconciler(b)
    }


def test_the_overlay_gives_the_reconciler_no_cluster_role_over_namespaced_objects(overlay: list[Object]) -> None:
    cluster_roles = {o["metadata"]["name"]: o for o in overlay if o["kind"] == "ClusterRole"}
    bound = [
        cluster_roles[b["roleRef"]["name"]]
        for b in overlay
        if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and b["roleRef"]["kind"] == "ClusterRole"
        and binds_reconciler(b)
    ]
    assert sorted(role["metadata"]["name"] for role in bound) == ["dbb-metrics-auth", "dbb-reconciler-cluster-reads"]
    for role in bound:
        for rule in role["rules"]:
            resources = set(rule.get("resources", ()))
            assert resources <= REVIEWS or (resources <= CLUSTER_READS and set(rule["verbs"]) <= READ), rule
            assert not rule.get("nonResourceURLs"), rule


def test_the_overlay_watches_exactly_the_namespaces_it_has_roles_in(overlay: list[Object], base: list[Object]) -> None:
    deployment = next(o for o in overlay if o["kind"] == "Deployment" and o["metadata"]["name"] == ACCOUNT)
    args = reconciler_main.parse(deployment["spec"]["template"]["spec"]["containers"][0]["args"][1:])
    roles = reconciler_roles(overlay)
    assert args.namespace
    assert set(roles) == {*args.namespace, SYSTEM}  # dbb-system: only its Lease
    assert roles[SYSTEM] == reconciler_roles(base)[SYSTEM]
    # Each watched namespace's Role, with the cluster-scoped reads, grants what the base's ClusterRole grants
    # everywhere but for policies, no more and no less.
    cluster_role = next(o for o in base if o["kind"] == "ClusterRole" and o["metadata"]["name"] == ACCOUNT)
    reads = next(
        o for o in overlay if o["kind"] == "ClusterRole" and o["metadata"]["name"] == f"{ACCOUNT}-cluster-reads"
    )
    for namespace in args.namespace:
        assert grants(roles[namespace]["rules"]) | grants(reads["rules"]) == grants(cluster_role["rules"]) - POLICIES


# What only DatabaseBackupPolicies need: a namespaced reconciler runs none (they are cluster-scoped). (It keeps
# `update` of DatabaseBackups: the replication slot's finalizer, the only change admission.yaml lets through.)
POLICIES = {
    ("databases.test.io", "databasebackups", "create"),
    ("databases.test.io", "databasebackups", "delete"),
    ("databases.test.io", "databasebackuppolicies", "get"),
    ("databases.test.io", "databasebackuppolicies", "list"),
    ("databases.test.io", "databasebackuppolicies", "watch"),
    ("databases.test.io", "databasebackuppolicies/status", "get"),
    ("databases.test.io", "databasebackuppolicies/status", "patch"),
}


def grants(rules: list[Object]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) for every rule, however the rules group them."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", ())
        for resource in rule.get("resources", ())
        for verb in rule["verbs"]
    }


# --- the reconciler with only the overlay's Role, on the real API server -----------------------------------------


@dataclass(frozen=True)
class Install:
    watched: tuple[str, str]  # each with the overlay's Role, rewritten to it
    other: str  # nothing
    system: str  # the reconciler's own namespace: its ServiceAccount and Lease
    kubeconfig: Path  # the ServiceAccount's token


def moved(obj: Object, namespace: str, system: str) -> Object:
    """An object of the overlay, in the test's namespaces instead of the install's."""
    obj = json.loads(json.dumps(obj))
    obj["metadata"]["namespace"] = namespace
    for subject in obj.get("subjects") or []:
        subject["namespace"] = system
    return obj


@pytest.fixture
def install(control_plane: ControlPlane, overlay: list[Object], namespace: str, tmp_path: Path) -> Iterator[Install]:
    second, other, system = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("second", "other", "sys"))
    for name in (second, other, system):
        control_plane.kubectl("create", "namespace", name)
    control_plane.kubectl("create", "serviceaccount", ACCOUNT, "-n", system)
    roles = reconciler_roles(overlay)
    (watched,) = set(roles) - {SYSTEM}
    ours = [o for o in overlay if o["kind"] in ("Role", "RoleBinding") and o["metadata"]["name"] == ACCOUNT]
    targets = {SYSTEM: (system,), watched: (namespace, second)}
    rbac = [moved(o, target, system) for o in ours for target in targets[o["metadata"]["namespace"]]]
    assert len(rbac) == 6
    # The cluster-scoped reads, bound to this test's ServiceAccount (cluster-scoped: one name per test).
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        found = json.loads(
            json.dumps(
                next(o for o in overlay if o["kind"] == kind and o["metadata"]["name"] == f"{ACCOUNT}-cluster-reads")
            )
        )
        found["metadata"]["name"] = f"{ACCOUNT}-reads-{system}"
        if kind == "ClusterRoleBinding":
            found["roleRef"]["name"] = f"{ACCOUNT}-reads-{system}"
            found["subjects"] = [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": system}]
        rbac.append(found)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}))
    token = control_plane.kubectl("create", "token", ACCOUNT, "-n", system).stdout.strip()
    document = yaml.safe_load(control_plane.kubeconfig.read_text())
    document["users"] = [{"name": ACCOUNT, "user": {"token": token}}]
    document["contexts"][0]["context"]["user"] = ACCOUNT
    kubeconfig = tmp_path / "reconciler-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))
    yield Install((namespace, second), other, system, kubeconfig)
    for name in (second, other):
        control_plane.kubectl("delete", "dbb", "--all", "-n", name, "--wait=false", check=False)


def a_database_with_a_backup_due_now(control_plane: ControlPlane, namespace: str) -> None:
    sts = statefulset(namespace=namespace)
    del sts["status"]
    backup = databasebackup(namespace=namespace, schedule="@yearly")
    backup["metadata"]["annotations"] = {"databases.test.io/backup-now": "first"}
    items = [sts, governing_service(sts)]
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(backup))


def get(control_plane: ControlPlane, *args: str) -> Object:
    result: Object = json.loads(control_plane.kubectl("get", *args, "-o", "json").stdout)
    return result


async def test_a_reconciler_with_only_the_overlays_role_backs_up_its_namespace_and_ignores_the_others(
    control_plane: ControlPlane, install: Install, capfd: pytest.CaptureFixture[str]
) -> None:
    for namespace in (*install.watched, install.other):
        a_database_with_a_backup_due_now(control_plane, namespace)
    async with reconciler(
        f"--kubeconfig={install.kubeconfig}",
        *(f"--namespace={namespace}" for namespace in install.watched),
        "--leader-elect",
        f"--lease-namespace={install.system}",
        "--no-metrics-auth",
    ) as health:

        async def backed_up() -> bool:
            statuses = [get(control_plane, "dbb", "nightly", "-n", n).get("status") or {} for n in install.watched]
            return all(status.get("active") for status in statuses) and await health.status("/readyz") == 200

        await until(backed_up, what="the backups in the watched namespaces run and their status is written")
    for namespace in install.watched:
        assert len(get(control_plane, "jobs", "-n", namespace)["items"]) == 1
        events = get(control_plane, "events", "-n", namespace)["items"]
        assert "Scheduled" in {event["reason"] for event in events}
    # The other namespace: its backup was just as due, and nothing happened to it.
    assert get(control_plane, "jobs", "-n", install.other)["items"] == []
    assert "status" not in get(control_plane, "dbb", "nightly", "-n", install.other)
    output = capfd.readouterr()
    logs = output.out + output.err
    for refusal in ("Forbidden", "forbidden", "403", "watch failed"):
        assert refusal not in logs
