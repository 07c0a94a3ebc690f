"""The webhook keeps its certificate in a Secret and its CA in the webhook configurations, on a real API server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes_asyncio import client, config

from certs.serving import ensure_serving_certificate, service_hosts
from common.kube import body, raw
from tests.controlplane import ControlPlane
from webhook.incluster import CertificateKeeper


@pytest.fixture
def configurations(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    """Both webhook configurations, pointing at a Service, matching no namespace (they must not judge other tests)."""
    name = f"keeper-{namespace}"
    hook = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "clientConfig": {"service": {"name": "dbb-webhook", "namespace": namespace, "path": "/validate"}},
        "namespaceSelector": {"matchLabels": {"never": "true"}},
        "rules": [
            {
                "apiGroups": ["databases.test.io"],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["databasebackups"],
            }
        ],
    }
    items = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": name},
            "webhooks": [{**hook, "name": f"{prefix}.keeper.test.io"}],
        }
        for kind, prefix in (("MutatingWebhookConfiguration", "m"), ("ValidatingWebhookConfiguration", "v"))
    ]
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    control_plane.kubectl("apply", "-f", "-", input=document)
    yield name
    control_plane.kubectl("delete", "-f", "-", input=document, check=False)


@pytest.fixture
async def api(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    api = await config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    async with api:
        yield api


def keeper(api: client.ApiClient, namespace: str, configuration: str, folder: Path) -> CertificateKeeper:
    return CertificateKeeper(api, namespace, "dbb-webhook-tls", "dbb-webhook", [configuration], folder)


async def secret(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    core = client.CoreV1Api(api)
    return await raw(core.read_namespaced_secret("dbb-webhook-tls", namespace, _preload_content=False))


async def bundles(api: client.ApiClient, name: str) -> list[str]:
    admission = client.AdmissionregistrationV1Api(api)
    found = []
    for read in (admission.read_mutating_webhook_configuration, admission.read_validating_webhook_configuration):
        configuration = await raw(read(name, _preload_content=False))
        found += [hook["clientConfig"].get("caBundle", "") for hook in configuration["webhooks"]]
    return found


async def test_a_first_start_creates_the_secret_and_publishes_the_ca(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    await keeper(api, namespace, configurations, tmp_path).sync()
    stored = await secret(api, namespace)
    assert sorted(stored["data"]) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert base64.b64decode(stored["data"]["tls.crt"]) == (tmp_path / "tls.crt").read_bytes()
    ca = base64.b64encode((tmp_path / "ca.crt").read_bytes()).decode()
    assert await bundles(api, configurations) == [ca, ca]
    names = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert f"dbb-webhook.{namespace}.svc" in names.value.get_values_for_type(x509.DNSName)


async def test_a_second_start_changes_nothing(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    await keeper(api, namespace, configurations, tmp_path / "a").sync()
    version = (await secret(api, namespace))["metadata"]["resourceVersion"]
    await keeper(api, namespace, configurations, tmp_path / "b").sync()
    assert (await secret(api, namespace))["metadata"]["resourceVersion"] == version
    assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()


async def test_two_replicas_starting_together_end_with_one_certificate(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    folders = [tmp_path / f"replica-{n}" for n in range(3)]
    await asyncio.gather(*(keeper(api, namespace, configurations, folder).sync() for folder in folders))
    stored = base64.b64decode((await secret(api, namespace))["data"]["tls.crt"])
    assert [(folder / "tls.crt").read_bytes() for folder in folders] == [stored] * 3


async def test_a_certificate_about_to_expire_is_renewed_under_the_same_ca(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    hosts = service_hosts("dbb-webhook", namespace)
    ensure_serving_certificate(old, hosts, now=datetime.now(UTC) - timedelta(days=345))
    data = {
        name: base64.b64encode((old / name).read_bytes()).decode()
        for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")
    }
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        body({"metadata": {"name": "dbb-webhook-tls"}, "data": data}),
    )
    await keeper(api, namespace, configurations, tmp_path / "new").sync()
    renewed = x509.load_pem_x509_certificate(base64.b64decode((await secret(api, namespace))["data"]["tls.crt"]))
    assert renewed.not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)
    assert (tmp_path / "new" / "ca.crt").read_bytes() == (old / "ca.crt").read_bytes()
