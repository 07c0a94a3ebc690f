"""/metrics on a real API server: both components serve it only to a ServiceAccount token that TokenReview
authenticates and SubjectAccessReview authorizes through the ClusterRole deploy/metrics/ ships; 401 without a token
or with a bad one, 403 for a user without the role, 200 with it, and only over HTTPS. Decisions are cached only for
their TTL, and no token reaches a log."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from certs.serving import ensure_serving_certificate
from common.metrics_auth import READER_ROLE, MetricsAuth
from hack.harness.controlplane import ROOT, ControlPlane, free_port
from tests.integration.inprocess import reconciler, until

METRICS_RBAC = ROOT / "deploy" / "metrics" / "rbac.yaml"


@dataclass(frozen=True)
class Tokens:
    reader: str  # a ServiceAccount bound to databasebackup-metrics-reader
    stranger: str  # a ServiceAccount with no binding at all
    binding: str  # the reader's ClusterRoleBinding


@pytest.fixture
def tokens(control_plane: ControlPlane, namespace: str) -> Iterator[Tokens]:
    reader_role = next(d for d in yaml.safe_load_all(METRICS_RBAC.read_text()) if d["metadata"]["name"] == READER_ROLE)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(reader_role))
    for account in ("prometheus", "stranger"):
        control_plane.kubectl("create", "serviceaccount", account, "-n", namespace)
    binding = f"metrics-{namespace}"
    control_plane.kubectl(
        "create",
        "clusterrolebinding",
        binding,
        f"--clusterrole={READER_ROLE}",
        f"--serviceaccount={namespace}:prometheus",
    )

    def token(account: str) -> str:
        return control_plane.kubectl("create", "token", account, "-n", namespace).stdout.strip()

    yield Tokens(token("prometheus"), token("stranger"), binding)
    control_plane.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")


async def assert_guarded(get: Any, tokens: Tokens) -> None:
    """`get(token)` -> (status, body, headers) of one GET /metrics."""
    status, _, headers = await get(None)
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert (await get("not-a-token"))[0] == 401
    assert (await get(tokens.reader + "x"))[0] == 401  # a tampered signature
    status, text, _ = await get(tokens.stranger)
    assert status == 403
    assert READER_ROLE in text
    status, text, _ = await get(tokens.reader)
    assert status == 200
    assert "# TYPE dbb_" in text


async def test_the_reconciler_serves_metrics_only_to_an_authorized_token(
    kubeconfig: Path, namespace: str, tokens: Tokens, capfd: pytest.CaptureFixture[str]
) -> None:
    async with reconciler(f"--kubeconfig={kubeconfig}", f"--namespace={namespace}") as health:
        await assert_guarded(lambda token: health.get("/metrics", token), tokens)
        # The probes stay open: the kubelet sends no token.
        assert await health.status("/healthz") == 200
    output = capfd.readouterr()
    assert tokens.reader not in output.out + output.err
    assert tokens.stranger not in output.out + output.err


async def test_the_reconciler_refuses_a_plain_http_scrape_and_serves_an_https_one_with_the_token(
    kubeconfig: Path, namespace: str, tokens: Tokens
) -> None:
    async with reconciler(f"--kubeconfig={kubeconfig}", f"--namespace={namespace}") as health:
        status, text, _ = await health.get("/metrics", tokens.reader, scheme="http")
        assert status == 400
        assert "this port speaks HTTPS only" in text
        status, text, _ = await health.get("/metrics", tokens.reader)
        assert status == 200
        assert "# TYPE dbb_" in text
        # The kubelet's probes: HTTPS too, without a token.
        assert (await health.get("/readyz", scheme="http"))[0] == 400
        assert await health.status("/healthz") == 200


async def test_no_metrics_auth_serves_metrics_to_anyone(kubeconfig: Path, namespace: str) -> None:
    async with reconciler(f"--kubeconfig={kubeconfig}", f"--namespace={namespace}", "--no-metrics-auth") as health:
        status, text, _ = await health.get("/metrics")
    assert status == 200
    assert "# TYPE dbb_" in text


@pytest.fixture
async def webhook_metrics(
    control_plane: ControlPlane, tmp_path: Path
) -> AsyncIterator[tuple[aiohttp.ClientSession, str, Path]]:
    """A dbb-webhook process with its default flags (metrics auth on): a session that trusts it, the URL of its
    /metrics, and its log."""
    cert_dir = tmp_path / "tls"
    ensure_serving_certificate(cert_dir, ["127.0.0.1"])
    port = free_port()
    log = tmp_path / "webhook.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, before the test; not on a hot path
            [
                str(Path(sys.executable).parent / "dbb-webhook"),
                f"--kubeconfig={control_plane.kubeconfig}",
                f"--cert-dir={cert_dir}",
                "--host=127.0.0.1",
                f"--port={port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:

            async def ready() -> bool:
                assert process.poll() is None, log.read_text()[-3000:]
                try:
                    async with session.get(f"https://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, what="the webhook is ready")
            yield session, f"https://127.0.0.1:{port}/metrics", log
    finally:
        process.terminate()
        process.wait(15)


async def test_the_webhook_serves_metrics_only_to_an_authorized_token(
    webhook_metrics: tuple[aiohttp.ClientSession, str, Path], tokens: Tokens
) -> None:
    session, url, log = webhook_metrics

    async def get(token: str | None) -> tuple[int, str, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with session.get(url, headers=headers) as response:
            return response.status, await response.text(), dict(response.headers)

    await assert_guarded(get, tokens)
    assert tokens.reader not in log.read_text()


async def test_a_decision_is_cached_for_its_ttl_and_no_longer(
    control_plane: ControlPlane, api_client: client.ApiClient, tokens: Tokens
) -> None:
    now = [1000.0]
    auth = MetricsAuth(api_client, allow_ttl=60.0, deny_ttl=10.0, clock=lambda: now[0])
    assert (await auth.check(f"Bearer {tokens.reader}")).status == 200
    control_plane.kubectl("delete", "clusterrolebinding", tokens.binding)
    # Within the TTL the cached decision stands (the API server is not asked again)...
    now[0] += 59.0
    assert (await auth.check(f"Bearer {tokens.reader}")).status == 200
    # ...after it, the reader is asked about again, and the revoked binding shows. RBAC changes reach the authorizer
    # through its watch: wait for that, not for a time.
    now[0] += 2.0

    async def revoked() -> bool:
        now[0] += 11.0  # past the deny TTL too, so each try asks the API server
        return (await auth.check(f"Bearer {tokens.reader}")).status == 403

    await until(revoked, what="the revoked binding refuses the reader")
