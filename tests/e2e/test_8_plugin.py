"""`kubectl dbb` on a real cluster, as a user who has only a namespaced Role (a ServiceAccount's token in a kubeconfig
of its own): back up now and follow it (progress read from the backup Pod's real log), list, restore into a new
database with identical content, verify, status; and a user without the right to restore gets the API server's
refusal in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import databases
from tests.e2e.kube import Kube

NAMESPACE = "e2e-plugin"
OWNER = "plugin-nightly"
PLUGIN = str(Path(sys.executable).with_name("kubectl-dbb"))
OPERATOR = ["get", "list", "watch", "patch"]


def role(name: str, restore: bool) -> list[dict[str, Any]]:
    """A ServiceAccount with a Role as a team member would have it: DatabaseBackups, Jobs and Pod logs to read, and
    DatabaseRestores to create only when `restore`."""
    rules: list[dict[str, Any]] = [
        {"apiGroups": ["databases.test.io"], "resources": ["databasebackups"], "verbs": OPERATOR},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
        {
            "apiGroups": ["databases.test.io"],
            "resources": ["databaserestores"],
            "verbs": ["get", "list", "create"] if restore else ["get", "list"],
        },
    ]
    meta = {"name": name, "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        },
    ]


def user_kubeconfig(kube: Kube, name: str, folder: Path) -> Path:
    """The cluster's address and CA from the admin's kubeconfig, and the ServiceAccount's token: nothing else."""
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    token = kube("create", "token", name, "-n", NAMESPACE, "--duration=1h").strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "e2e", "user": name, "namespace": NAMESPACE}}],
        "current-context": name,
    }
    path = folder / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def dbb(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLUGIN, "--kubeconfig", str(config), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(config.parent)},
    )


@pytest.fixture(scope="module")
def server(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, NAMESPACE):
        db = databases.Database("postgresql", "17", "plugin-db", NAMESPACE, "plugin-db-password")
        databases.running(kube, db, rows=300, orders=800)
        kube.apply(*role("team", restore=True), *role("viewer", restore=False))
        kube.apply(databases.databasebackup(OWNER, db, "0 0 1 1 *", connection={"databases": ["app"]}))
        yield db


def test_a_team_member_backs_up_lists_restores_verifies_with_the_plugin(
    kube: Kube, server: databases.Database, tmp_path: Path
) -> None:
    team = user_kubeconfig(kube, "team", tmp_path)
    backup = dbb(team, "backup", OWNER, "--wait", "--timeout", "300s")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    print(backup.stdout)
    status = kube.get("dbb", OWNER, NAMESPACE)["status"]
    file, size = status["lastBackup"]["file"], status["lastBackup"]["size"]
    assert f"backup written: {file}" in backup.stdout
    assert f"{size:,} bytes" in backup.stdout
    # Progress, read from the backup Pod's real log: at least each phase's last line (the run is short).
    assert "dump" in backup.stdout + backup.stderr, backup.stdout + backup.stderr

    listed = dbb(team, "list", OWNER)
    assert listed.returncode == 0, listed.stderr
    print(listed.stdout)
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:2] == ["TIME", "SIZE"]
    assert len(rows) == len(status["backups"]) >= 1

    restored = dbb(team, "restore", OWNER, "--to", server.name, "--database", "app=app_plugin", "--wait")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    print(restored.stdout)
    assert "app -> app_plugin" in restored.stdout
    assert databases.fingerprint(kube, server, "app_plugin") == databases.fingerprint(kube, server)

    verified = dbb(team, "verify", OWNER, "--wait", "--timeout", "300s")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    print(verified.stdout)
    assert "verification passed" in verified.stdout

    table = dbb(team, "status")
    assert table.returncode == 0, table.stderr
    print(table.stdout)
    [row] = [line for line in table.stdout.splitlines() if line.startswith(OWNER)]
    assert server.name in row.split()
    assert server.password not in json.dumps(kube.items("jobs", NAMESPACE))


def test_a_user_without_the_right_to_restore_gets_the_api_servers_refusal(
    kube: Kube, server: databases.Database, tmp_path: Path
) -> None:
    viewer = user_kubeconfig(kube, "viewer", tmp_path)
    refused = dbb(viewer, "restore", OWNER, "--to", server.name, "--database", "app=app_never")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("Error from server (Forbidden): databaserestores.databases.test.io is forbidden:"), line
    assert "Traceback" not in refused.stderr
    targets = [d["to"] for r in kube.items("dbr", NAMESPACE) for d in r["spec"]["target"].get("databases", [])]
    assert "app_never" not in targets
