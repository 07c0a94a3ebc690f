"""The e2e suite: the operator deployed from deploy/ with `make deploy IMG=...`, as a cluster admin does it, onto a
real cluster (kubelet, containerd, CNI, kube-proxy, CoreDNS, a PVC provisioner), then used through kubectl.

The cluster is `E2E_KUBECONFIG` (default: the one `make cluster-up` built here) and the image `E2E_IMG` (`make e2e`
builds it and loads it into the local cluster's containerd). Tests run in file order (test_1_* ... test_9_*): the
last one undeploys.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kube import Kube, wait_for

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "dbb-system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One long session against one cluster: no per-test timeout shorter than a scheduled slot plus a backup.
    for item in items:
        item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    value = os.environ.get("E2E_KUBECONFIG")
    if not value:
        pytest.fail("E2E_KUBECONFIG is not set: run the suite with `make e2e` (after `make cluster-up`)")
    path = Path(value)
    if not path.exists():
        pytest.fail(f"E2E_KUBECONFIG={path} does not exist: is the cluster up (`make cluster-up`)?")
    return path


@pytest.fixture(scope="session")
def image() -> str:
    value = os.environ.get("E2E_IMG")
    if not value:
        pytest.fail("E2E_IMG is not set: `make e2e` builds the operator image and sets it")
    return value


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Kube:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    binary = str(Path(assets) / "kubectl") if assets and (Path(assets) / "kubectl").exists() else "kubectl"
    kube = Kube(kubeconfig, binary)
    wait_for("the API server", lambda: kube.run("get", "--raw", "/readyz", check=False).returncode == 0, 60)
    return kube


def make(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    """A make target of the project, with the suite's kubeconfig and kubectl first on PATH."""
    env = {**kube.env, "PATH": f"{Path(kube.kubectl_binary).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )


@pytest.fixture(scope="session")
def deployed(kube: Kube, image: str) -> str:
    """`make deploy IMG=...`; returns its output. The first test checks what it made."""
    result = make(kube, "deploy", f"IMG={image}")
    assert result.returncode == 0, f"make deploy failed:\n{result.stdout}\n{result.stderr}"
    for deployment in ("dbb-webhook", "dbb-reconciler"):
        kube.wait_rollout(SYSTEM, f"deployment/{deployment}", 300)
    return result.stdout


@pytest.fixture
def namespace(kube: Kube, deployed: str) -> Iterator[str]:
    """A namespace of the test's own, enforcing the restricted Pod Security Standard as a careful admin does."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube("create", "namespace", name)
    kube(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)
