"""Integration fixtures: the real webhook process, registered with the real API server."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certs.serving import ensure_serving_certificate
from hack.harness.controlplane import ControlPlane, free_port, webhook_registration

# The webhook judges only namespaces with this label, so other tests' DatabaseBackups (whose databases do not
# exist) are not refused. Production configurations have no selector.
WEBHOOK_LABEL = "databases.test.io/webhook-test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@dataclass
class Webhook:
    port: int
    cert_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def metrics(self) -> str:
        context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        url = f"https://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def counter(self, endpoint: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(f'dbb_webhook_admission_requests_total{{endpoint="{endpoint}"'):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="session")
def webhook(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    cert_dir = tmp_path_factory.mktemp("webhook-tls")
    ensure_serving_certificate(cert_dir, ["127.0.0.1", "localhost"])
    port = free_port()
    log = cert_dir.parent / "webhook.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dbb-webhook"),
                f"--kubeconfig={control_plane.kubeconfig}",
                f"--cert-dir={cert_dir}",
                "--host=127.0.0.1",
                f"--port={port}",
                "--log-level=debug",
                # The tests read its counters; who may read them is tests/integration/test_metrics_auth.py's.
                "--no-metrics-auth",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    hook = Webhook(port, cert_dir, log, process)
    try:
        _wait_ready(hook)
        control_plane.kubectl("apply", "-f", "-", input=_registration(port, cert_dir))
        yield hook
    finally:
        control_plane.kubectl("delete", "-f", "-", "--ignore-not-found", input=_registration(port, cert_dir))
        process.terminate()
        code = process.wait(15)
    # Outside the finally: a failed shutdown must fail the session, not hide a test failure.
    assert code == 0, f"dbb-webhook exited with {code}:\n{log.read_text()[-3000:]}"


@pytest.fixture
def webhook_namespace(control_plane: ControlPlane, webhook: Webhook) -> Iterator[str]:
    name = f"hook-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {WEBHOOK_LABEL: "true"}}}
        ),
    )
    yield name
    control_plane.kubectl("delete", "dbb,statefulset", "--all", "-n", name, "--wait=false", check=False)


def _registration(port: int, cert_dir: Path) -> str:
    documents = webhook_registration(
        port, cert_dir / "ca.crt", namespace_selector={"matchLabels": {WEBHOOK_LABEL: "true"}}
    )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})


def _wait_ready(hook: Webhook) -> None:
    context = ssl.create_default_context(cafile=str(hook.cert_dir / "ca.crt"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if hook.process.poll() is not None:
            raise RuntimeError(f"dbb-webhook exited with {hook.process.returncode}:\n{hook.log.read_text()[-3000:]}")
        try:
            url = f"https://127.0.0.1:{hook.port}/readyz"
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"dbb-webhook not ready after 30s:\n{hook.log.read_text()[-3000:]}")
