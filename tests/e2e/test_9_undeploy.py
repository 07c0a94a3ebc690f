"""`make undeploy` removes everything `make deploy` created, and leaves the backups on their PVCs."""

from __future__ import annotations

import yaml

from common.constants import CRD_NAME
from tests.e2e import databases
from tests.e2e.conftest import ROOT, make
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pods import read_pvc

NAMESPACE = "e2e-undeploy"


def test_undeploy_removes_the_operator_and_keeps_the_backups(kube: Kube, deployed: str) -> None:
    kube.run("create", "namespace", NAMESPACE, check=False)
    db = databases.Database("postgresql", "15", "kept-db", NAMESPACE, "e2e-undeploy-password")
    databases.deploy(kube, db)
    databases.wait_ready(kube, db)
    databases.seed(kube, db, rows=100, orders=100)
    kube.apply(databases.databasebackup("kept", db, "0 0 1 1 *", backup_now="1"))
    last = wait_for("a backup", lambda: kube.get("dbb", "kept", NAMESPACE).get("status", {}).get("lastBackup"), 240)

    created = list(yaml.safe_load_all(kube("kustomize", str(ROOT / "deploy"))))
    result = make(kube, "undeploy")
    assert result.returncode == 0, result.stderr

    def gone() -> list[str]:
        left = []
        for document in created:
            kind, name = document["kind"], document["metadata"]["name"]
            scope = ["-n", document["metadata"]["namespace"]] if "namespace" in document["metadata"] else []
            if kube.run("get", kind, name, *scope, check=False).returncode == 0:
                left.append(f"{kind}/{name}")
        return left

    wait_for("every object of deploy/ to be gone", lambda: not gone(), 180)
    assert kube.run("get", "crd", CRD_NAME, check=False).returncode != 0
    listing = read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"sha256sum {last['file']}")
    assert listing.split()[0] == last["sha256"]
    kube.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
