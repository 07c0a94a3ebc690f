"""The webhook keeps its certificate in a Secret and its CA in the webhook configurations, on a real API server."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from kubernetes_asyncio import client

from certs.pki import KeyPair, issue
from certs.serving import ensure_serving_certificate, service_hosts
from common.kube import api_client, body, raw
from hack.harness.controlplane import ROOT, ControlPlane, free_port
from webhook.incluster import CertificateKeeper
from webhook.rotation import SERVING, Material


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
    api = await api_client(control_plane.kubeconfig)
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


# ---- rotation: deleting the Secret gives a new CA, and the caBundle trusts every served certificate throughout


def remove_bundles(control_plane: ControlPlane, configuration: str) -> None:
    """What someone editing the configurations by hand may do."""
    remove = json.dumps([{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}])
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        control_plane.kubectl("patch", kind, configuration, "--type=json", "-p", remove)


def a_day_later() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


async def route(api: client.ApiClient, namespace: str, pods: list[str]) -> None:
    """What the EndpointSlice controller would write for the webhook's Service: these Pods serve it."""
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "dbb-webhook-x", "labels": {"kubernetes.io/service-name": "dbb-webhook"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [f"10.0.0.{n}"], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": pod}}
            for n, pod in enumerate(pods, start=1)
        ],
        "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
    }
    await client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(namespace, body(endpoint_slice))


async def delete_secret(api: client.ApiClient, namespace: str) -> None:
    await client.CoreV1Api(api).delete_namespaced_secret("dbb-webhook-tls", namespace)


async def published(api: client.ApiClient, name: str) -> list[list[bytes]]:
    """The CAs each webhook trusts, in bundle order, as the PEM of each certificate."""
    found = []
    for bundle in await bundles(api, name):
        pem = base64.b64decode(bundle)
        found.append([ca.public_bytes(serialization.Encoding.PEM) for ca in certificates_in(pem)])
    return found


def certificates_in(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem) if pem.strip() else []


def verifies(cert_pem: bytes, cas: list[bytes]) -> bool:
    """What the API server checks: the certificate is signed by one of the CAs in the bundle."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    for ca in cas:
        try:
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
        except (InvalidSignature, ValueError, TypeError):
            continue
        return True
    return False


async def untrusted(api: client.ApiClient, configuration: str, folders: list[Path]) -> list[str]:
    """Each (webhook, replica) pair whose served certificate the webhook's bundle does not trust. The files are read
    before the bundles: a replica writes its files only after the bundle trusts them, so this order never reports
    a pair that was in fact trusted."""
    served = {folder.name: (folder / "tls.crt").read_bytes() for folder in folders}
    failures = []
    for index, cas in enumerate(await published(api, configuration)):
        failures += [
            f"webhook {index} does not trust {name}" for name, cert in served.items() if not verifies(cert, cas)
        ]
    return failures


@dataclass
class Replica(CertificateKeeper):
    """A keeper that checks, at the moment it writes new files, that every caBundle already trusts them (the order
    that keeps admission working), and whose next Secret read can be made to wait for another replica's."""

    together: asyncio.Barrier | None = None
    reads: list[bool] = field(default_factory=list)  # True where the Secret was not there
    premature: list[str] = field(default_factory=list)

    async def _read_secret(self, core: client.CoreV1Api) -> dict[str, Any] | None:
        found = await super()._read_secret(core)
        self.reads.append(found is None)
        if self.together is not None:
            together, self.together = self.together, None
            await together.wait()
        return found

    async def _serve(self, material: Material, *, adopted: bool) -> None:
        served = self.cert_dir / "tls.crt"
        if not served.exists() or served.read_bytes() != material.files["tls.crt"]:
            for index, cas in enumerate(await published(self.api, self.configurations[0])):
                if not verifies(material.files["tls.crt"], cas):
                    self.premature.append(f"{self.cert_dir.name} served before webhook {index} trusted it")
        await super()._serve(material, adopted=adopted)


def replicas(api: client.ApiClient, namespace: str, configuration: str, folders: list[Path]) -> list[Replica]:
    """Keepers named as Pods after their folders; each records the certificate in its folder as the one it serves."""
    return [
        Replica(api, namespace, "dbb-webhook-tls", "dbb-webhook", [configuration], folder, pod=folder.name)
        for folder in folders
    ]


async def two_started_replicas(
    api: client.ApiClient, namespace: str, configuration: str, tmp_path: Path
) -> tuple[list[Path], list[Replica]]:
    folders = [tmp_path / "replica-a", tmp_path / "replica-b"]
    await route(api, namespace, [folder.name for folder in folders])
    both = replicas(api, namespace, configuration, folders)
    await asyncio.gather(*(replica.sync() for replica in both))
    assert await untrusted(api, configuration, folders) == []
    return folders, both


async def test_deleting_the_secret_rotates_to_a_new_ca_trusted_beside_the_old_one_until_every_replica_serves_it(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    folders = [tmp_path / "first", tmp_path / "second"]
    await route(api, namespace, ["first", "second"])
    first, second = replicas(api, namespace, configurations, folders)
    await first.sync()
    await second.sync()
    old_ca = (folders[0] / "ca.crt").read_bytes()

    await delete_secret(api, namespace)
    await first.sync()
    stored = await secret(api, namespace)
    new_ca = base64.b64decode(stored["data"]["ca.crt"])
    assert new_ca != old_ca
    assert base64.b64decode(stored["data"]["ca-previous.crt"]) == old_ca
    assert "databases.test.io/ca-rotated-at" in stored["metadata"]["annotations"]
    assert (folders[0] / "tls.crt").read_bytes() == base64.b64decode(stored["data"]["tls.crt"])
    assert await published(api, configurations) == [[new_ca, old_ca]] * 2
    # The second replica has not noticed yet and still serves the old certificate: still trusted, however long
    # that takes (a day, where a fixed grace period was 5 minutes), and whoever else syncs meanwhile.
    assert await untrusted(api, configurations, folders) == []
    first.clock = a_day_later
    await first.sync()
    await replicas(api, namespace, configurations, [tmp_path / "not-routed"])[0].sync()
    assert await published(api, configurations) == [[new_ca, old_ca]] * 2
    served_by = {
        key.removeprefix(SERVING): value
        for key, value in (await secret(api, namespace))["metadata"]["annotations"].items()
        if key.startswith(SERVING)
    }
    assert served_by.get("second") != served_by["first"]  # its record went with the deleted Secret

    await second.sync()
    assert (folders[1] / "tls.crt").read_bytes() == base64.b64decode(stored["data"]["tls.crt"])
    assert await untrusted(api, configurations, folders) == []

    # Every routed replica now serves the new certificate: the next sync drops the old CA.
    await first.sync()
    assert await bundles(api, configurations) == [base64.b64encode(new_ca).decode()] * 2
    settled = await secret(api, namespace)
    assert "ca-previous.crt" not in settled["data"]
    assert settled["data"]["tls.crt"] == stored["data"]["tls.crt"]
    assert await untrusted(api, configurations, folders) == []
    assert first.premature + second.premature == []


async def test_two_replicas_that_both_see_the_deletion_agree_on_one_new_certificate_trusted_at_every_step(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    folders, both = await two_started_replicas(api, namespace, configurations, tmp_path)
    old_ca = (folders[0] / "ca.crt").read_bytes()

    await delete_secret(api, namespace)
    assert await untrusted(api, configurations, folders) == []

    # Both read the Secret as gone before either writes one: both make a new CA, one wins, the other adopts.
    together = asyncio.Barrier(2)
    for replica in both:
        replica.reads.clear()
        replica.together = together
    await asyncio.gather(*(replica.sync() for replica in both))
    assert [replica.reads[0] for replica in both] == [True, True]
    assert sorted(len(replica.reads) for replica in both) == [1, 2]  # the loser read again, and adopted
    stored = await secret(api, namespace)
    new_ca = base64.b64decode(stored["data"]["ca.crt"])
    assert new_ca != old_ca
    assert [(folder / "tls.crt").read_bytes() for folder in folders] == [
        base64.b64decode(stored["data"]["tls.crt"])
    ] * 2
    assert await published(api, configurations) == [[new_ca, old_ca]] * 2
    assert await untrusted(api, configurations, folders) == []

    for replica in both:  # both serve the new certificate and have said so: the first sync settles the rotation
        await replica.sync()
        assert await untrusted(api, configurations, folders) == []
    assert await published(api, configurations) == [[new_ca]] * 2
    assert [replica.premature for replica in both] == [[], []]


async def test_polling_replicas_notice_the_deletion_rotate_and_never_serve_an_untrusted_certificate(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    folders, both = await two_started_replicas(api, namespace, configurations, tmp_path)
    old_ca = (folders[0] / "ca.crt").read_bytes()
    failures: list[str] = []

    async def watch_trust() -> None:
        while True:
            failures.extend(await untrusted(api, configurations, folders))
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(replica.run(interval=0.5)) for replica in both]
    tasks.append(asyncio.create_task(watch_trust()))
    try:
        await delete_secret(api, namespace)

        async def rotated() -> bool:
            try:
                stored = await secret(api, namespace)
            except client.ApiException:
                return False
            cert = base64.b64decode(stored["data"]["tls.crt"])
            return base64.b64decode(stored["data"]["ca.crt"]) != old_ca and all(
                (folder / "tls.crt").read_bytes() == cert for folder in folders
            )

        await eventually("both replicas serve the new certificate", rotated, seconds=60)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [asyncio.CancelledError] * 3  # none died on its own
    assert failures == []
    assert await untrusted(api, configurations, folders) == []
    assert [replica.premature for replica in both] == [[], []]


async def test_a_removed_ca_bundle_comes_back_on_the_next_sync(
    api: client.ApiClient, control_plane: ControlPlane, namespace: str, configurations: str, tmp_path: Path
) -> None:
    replica = keeper(api, namespace, configurations, tmp_path)
    await replica.sync()
    ca = base64.b64encode((tmp_path / "ca.crt").read_bytes()).decode()
    remove_bundles(control_plane, configurations)
    assert await bundles(api, configurations) == ["", ""]

    await replica.sync()
    assert await bundles(api, configurations) == [ca, ca]
    # The patch touched the caBundle only.
    for read in (
        client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration,
        client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration,
    ):
        (hook,) = (await raw(read(configurations, _preload_content=False)))["webhooks"]
        assert hook["clientConfig"]["service"]["name"] == "dbb-webhook"
        assert hook["rules"][0]["resources"] == ["databasebackups"]


@dataclass
class Overtaken(CertificateKeeper):
    """A replica that someone else overtakes once: the configurations change right after it has read them."""

    overtake: Callable[[], None] = lambda: None
    configuration_reads: int = 0

    async def _read_configurations(self) -> list[tuple[str, dict[str, Any]]]:
        found = await super()._read_configurations()
        self.configuration_reads += 1
        if self.configuration_reads == 1:
            self.overtake()
        return found


async def test_a_replica_whose_view_of_the_configurations_is_outdated_starts_over_instead_of_overwriting(
    api: client.ApiClient, control_plane: ControlPlane, namespace: str, configurations: str, tmp_path: Path
) -> None:
    await keeper(api, namespace, configurations, tmp_path / "first").sync()
    ca = base64.b64encode((tmp_path / "first" / "ca.crt").read_bytes()).decode()
    remove_bundles(control_plane, configurations)

    def overtake() -> None:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            control_plane.kubectl("label", kind, configurations, "overtaken=yes")

    replica = Overtaken(
        api, namespace, "dbb-webhook-tls", "dbb-webhook", [configurations], tmp_path / "second", overtake=overtake
    )
    await replica.sync()
    assert replica.configuration_reads == 2  # the first patch met 409, the second view was current
    assert await bundles(api, configurations) == [ca, ca]


async def test_a_secret_replaced_by_hand_keeps_the_ca_still_being_served_trusted(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    replica = keeper(api, namespace, configurations, tmp_path / "replica")
    await replica.sync()
    old_ca = (tmp_path / "replica" / "ca.crt").read_bytes()
    mine = tmp_path / "mine"
    ensure_serving_certificate(mine, service_hosts("dbb-webhook", namespace))
    stored = await secret(api, namespace)
    stored["data"] = {
        name: base64.b64encode((mine / name).read_bytes()).decode()
        for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")
    }
    await client.CoreV1Api(api).replace_namespaced_secret("dbb-webhook-tls", namespace, body(stored))

    await replica.sync()
    assert (tmp_path / "replica" / "tls.crt").read_bytes() == (mine / "tls.crt").read_bytes()
    assert await published(api, configurations) == [[(mine / "ca.crt").read_bytes(), old_ca]] * 2
    kept = await secret(api, namespace)
    assert base64.b64decode(kept["data"]["ca-previous.crt"]) == old_ca


async def eventually(what: str, condition: Callable[[], Awaitable[bool]], *, seconds: float) -> None:
    """Poll an async check of the API server and the replicas' files until it holds."""
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.2)


# ---- a keeper that fails: /readyz says what failed, the metrics count it, and it is out of service only after long

WEBHOOK_RBAC = ROOT / "deploy" / "webhook" / "rbac.yaml"


def keeper_rbac(namespace: str, configuration: str, *, update: bool) -> list[dict[str, Any]]:
    """The webhook's own rules (deploy/webhook/rbac.yaml), for a ServiceAccount `webhook` in `namespace` and these
    configurations; without `update` on its Secret unless `update`."""
    documents = [d for d in yaml.safe_load_all(WEBHOOK_RBAC.read_text()) if d["kind"] in ("ClusterRole", "Role")]
    objects: list[dict[str, Any]] = []
    for role in documents:
        name = f"keeper-{namespace}"
        for rule in role["rules"]:
            if "secrets" in rule["resources"] and "resourceNames" in rule and not update:
                rule["verbs"] = [verb for verb in rule["verbs"] if verb != "update"]
            if rule.get("apiGroups") == ["admissionregistration.k8s.io"]:
                rule["resourceNames"] = [configuration]
        metadata: dict[str, Any] = {"name": name}
        if role["kind"] == "Role":
            metadata["namespace"] = namespace
        binding = "ClusterRoleBinding" if role["kind"] == "ClusterRole" else "RoleBinding"
        objects += [
            {"apiVersion": role["apiVersion"], "kind": role["kind"], "metadata": metadata, "rules": role["rules"]},
            {
                "apiVersion": role["apiVersion"],
                "kind": binding,
                "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"], "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "webhook", "namespace": namespace}],
            },
        ]
    return objects


def grant(control_plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


@dataclass
class KeepingWebhook:
    """A dbb-webhook process that keeps its certificate with a ServiceAccount's token."""

    url: str
    session: aiohttp.ClientSession
    process: subprocess.Popen[bytes]
    log: Path

    async def get(self, path: str) -> tuple[int, str]:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        async with self.session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.text()

    async def failures(self, step: str) -> float:
        _, text = await self.get("/metrics")
        return sample(text, f'dbb_webhook_certificate_keeper_failures_total{{step="{step}"}}')


def sample(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {series} in /metrics")


@pytest.fixture
async def keeping_webhook(
    control_plane: ControlPlane, namespace: str, configurations: str, tmp_path: Path
) -> AsyncIterator[KeepingWebhook]:
    control_plane.kubectl("create", "serviceaccount", "webhook", "-n", namespace)
    grant(control_plane, keeper_rbac(namespace, configurations, update=True))
    token = control_plane.kubectl("create", "token", "webhook", "-n", namespace).stdout.strip()
    document = yaml.safe_load(control_plane.kubeconfig.read_text())
    document["users"] = [{"name": "webhook", "user": {"token": token}}]
    document["contexts"][0]["context"]["user"] = "webhook"
    kubeconfig = tmp_path / "webhook-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))
    port, log = free_port(), tmp_path / "webhook.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, before the test; not on a hot path
            [
                str(Path(sys.executable).parent / "dbb-webhook"),
                f"--kubeconfig={kubeconfig}",
                f"--cert-dir={tmp_path / 'tls'}",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--namespace={namespace}",
                "--cert-secret=dbb-webhook-tls",
                "--service=dbb-webhook",
                f"--webhook-configuration={configurations}",
                "--no-metrics-auth",
                # Long enough to see the failure reported while the replica stays ready (the keeper polls every
                # ~10 s), short enough for a test.
                "--cert-failure-tolerance=25",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Not verified: the test is about what the webhook says, and a rotation changes the CA under the client.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
            yield KeepingWebhook(f"https://127.0.0.1:{port}", session, process, log)
    finally:
        process.terminate()
        process.wait(15)
        for kind in ("clusterrole", "clusterrolebinding"):
            control_plane.kubectl("delete", kind, f"keeper-{namespace}", "--ignore-not-found")


async def test_a_keeper_that_may_not_update_its_secret_fails_readyz_naming_it_and_counts_each_failure(
    api: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
    configurations: str,
    keeping_webhook: KeepingWebhook,
) -> None:
    hook = keeping_webhook

    async def says(status: int, *texts: str) -> bool:
        try:
            got, body = await hook.get("/readyz")
        except aiohttp.ClientError:
            return False
        return got == status and all(text in body for text in texts)

    await eventually("the webhook is ready", lambda: says(200, "ok"), seconds=60)
    assert await hook.get("/readyz") == (200, "ok")
    _, metrics = await hook.get("/metrics")
    assert sample(metrics, 'dbb_webhook_certificate_keeper_failures_total{step="write_secret"}') == 0
    assert sample(metrics, "dbb_webhook_certificate_keeper_last_success_timestamp_seconds") > time.time() - 60
    year = timedelta(days=300).total_seconds()
    assert sample(metrics, "dbb_webhook_certificate_expiry_timestamp_seconds") > time.time() + year

    # The keeper loses `update` on its Secret, and the certificate in it is 20 days from expiry: it must renew.
    grant(control_plane, keeper_rbac(namespace, configurations, update=False))
    stored = await secret(api, namespace)
    ca = KeyPair.load(*(base64.b64decode(stored["data"][name]) for name in ("ca.crt", "ca.key")))
    aging = issue(ca, f"dbb-webhook.{namespace}.svc", hosts=service_hosts("dbb-webhook", namespace), days=20)
    stored["data"]["tls.crt"] = base64.b64encode(aging.cert_pem).decode()
    stored["data"]["tls.key"] = base64.b64encode(aging.key_pem).decode()
    await client.CoreV1Api(api).replace_namespaced_secret("dbb-webhook-tls", namespace, body(stored))

    # Reported at once, while the certificate it serves (valid for a year) keeps the replica in service.
    refused = f"cannot update Secret {namespace}/dbb-webhook-tls: 403 Forbidden"
    await eventually(
        "/readyz names the failure", lambda: says(200, "warning: certificate keeper failing", refused), seconds=30
    )
    assert await hook.failures("write_secret") >= 1
    # Past the tolerance (25 s without a successful sync), out of service, still saying why.
    await eventually("/readyz fails", lambda: says(503, "not ready: certificate keeper failing", refused), seconds=60)

    async def counted_again() -> bool:
        return await hook.failures("write_secret") >= 2

    await eventually("each failure is counted", counted_again, seconds=30)

    # Granted again: the next sync renews the certificate and the replica is ready with nothing to report.
    grant(control_plane, keeper_rbac(namespace, configurations, update=True))

    async def recovered() -> bool:
        return await hook.get("/readyz") == (200, "ok")

    await eventually("the keeper recovers", recovered, seconds=60)
    renewed = x509.load_pem_x509_certificate(base64.b64decode((await secret(api, namespace))["data"]["tls.crt"]))
    assert renewed.not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)


@dataclass
class Broken(CertificateKeeper):
    """A keeper that meets an error nobody expected (a bug) when it reads its Secret."""

    async def _read_secret(self, core: client.CoreV1Api) -> dict[str, Any] | None:
        raise KeyError("metadata")


async def test_a_keeper_that_crashes_records_it_and_leaves_the_restart_to_its_supervisor(
    api: client.ApiClient, namespace: str, configurations: str, tmp_path: Path
) -> None:
    steps: list[str] = []
    broken = Broken(
        api, namespace, "dbb-webhook-tls", "dbb-webhook", [configurations], tmp_path, on_failure=steps.append
    )
    with pytest.raises(KeyError):
        await broken.run(interval=0.01)
    assert steps == ["crashed"]
    assert broken.status.failure == "crashed: KeyError: 'metadata'"
    assert broken.status.last_success is None
