"""A rolling restart refuses no admission request: after SIGTERM the webhook fails /readyz, so that the endpoints
forget it, but goes on answering for --shutdown-delay, then finishes and exits 0. The manifests give it the time."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from certs.serving import ensure_serving_certificate
from hack.harness.controlplane import ControlPlane, free_port
from tests.fixtures import admission_review, databasebackup
from tests.integration.conftest import Webhook, _wait_ready
from webhook.main import SHUTDOWN_DELAY, parser

DRAIN = 10.0  # long enough that the checks below, each a few milliseconds, never race the end of the drain
DEPLOYMENT = Path(__file__).parents[2] / "deploy" / "webhook" / "deployment.yaml"


def call(hook: Webhook, path: str, body: Any = None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(hook.cert_dir / "ca.crt"))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"https://127.0.0.1:{hook.port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310 - our https URL
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_after_sigterm_it_is_not_ready_but_answers_until_the_drain_ends_and_exits_0(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cert_dir = tmp_path / "tls"
    ensure_serving_certificate(cert_dir, ["127.0.0.1"])
    port, log = free_port(), tmp_path / "webhook.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dbb-webhook"),
                f"--kubeconfig={control_plane.kubeconfig}",
                f"--cert-dir={cert_dir}",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--shutdown-delay={DRAIN}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    hook = Webhook(port, cert_dir, log, process)
    try:
        _wait_ready(hook)
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN / 2
        while call(hook, "/readyz")[0] != 503:
            assert time.monotonic() < deadline, "/readyz still ok after SIGTERM"
            time.sleep(0.05)
        review = admission_review(databasebackup(namespace="drained", databaseName="nope"))
        status, answer = call(hook, "/validate", review)
        assert status == 200
        assert json.loads(answer)["response"]["uid"] == review["request"]["uid"]
        assert process.wait(DRAIN + 60) == 0
    finally:
        process.kill()
        process.wait()
    assert "draining: answering, not ready" in log.read_text()


def test_the_grace_period_covers_the_prestop_sleep_the_drain_and_the_last_requests() -> None:
    (deployment,) = [d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = parser().parse_args(container["args"][1:]).shutdown_delay
    assert drain == SHUTDOWN_DELAY
    assert pre_stop + drain + 10 <= spec["terminationGracePeriodSeconds"]
