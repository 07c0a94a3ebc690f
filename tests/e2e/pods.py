"""Short-lived Pods the suite runs to look at what the operator left behind (a PVC's files), as restricted Pods."""

from __future__ import annotations

import os
import uuid
from typing import Any

from tests.e2e.kube import Kube, wait_for


def restricted_pod(
    name: str,
    namespace: str,
    image: str,
    command: list[str],
    volumes: dict[str, str],
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                    "env": env or [],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": f"v{i}", "mountPath": path} for i, path in enumerate(volumes.values())],
                }
            ],
            "volumes": [
                {"name": f"v{i}", "persistentVolumeClaim": {"claimName": claim}} for i, claim in enumerate(volumes)
            ],
        },
    }


def run_pod(
    kube: Kube,
    namespace: str,
    command: list[str],
    volumes: dict[str, str],
    *,
    env: list[dict[str, Any]] | None = None,
    image: str | None = None,
    timeout: float = 300,
) -> str:
    """Run a command in a Pod of the operator's image to completion; returns its log. Fails on a non-zero exit."""
    name = f"look-{uuid.uuid4().hex[:6]}"
    kube.apply(restricted_pod(name, namespace, image or os.environ["E2E_IMG"], command, volumes, env))
    phase = wait_for(
        f"Pod {name} to finish",
        lambda: (
            kube.get("pod", name, namespace)["status"].get("phase") in ("Succeeded", "Failed")
            and kube.get("pod", name, namespace)["status"]["phase"]
        ),
        timeout,
    )
    output = kube.logs(namespace, name)
    kube.run("delete", "pod", name, "-n", namespace, "--wait=false", check=False)
    assert phase == "Succeeded", f"{' '.join(command)} failed:\n{output}"
    return output


def read_pvc(kube: Kube, namespace: str, claim: str, script: str) -> str:
    """Run a shell script with the claim mounted at /backups."""
    return run_pod(kube, namespace, ["sh", "-c", script], {claim: "/backups"})
