"""Certificates in the cluster without cert-manager.

The webhook keeps its CA and serving certificate in a Secret. Every replica, at start and then hourly:
1. reads the Secret and writes its files into --cert-dir (an emptyDir), where the reloader picks them up;
2. renews in place what is missing or expires within 30 days (`certs.serving`), and if anything changed, writes
   the Secret back guarded by its resourceVersion: when two replicas race, one wins with 201/200, the other gets
   409, re-reads, and adopts the winner's files, so all replicas serve one certificate;
3. writes the CA into the caBundle of each webhook configuration, if it is not already there.
Keeping the CA key in the Secret keeps the CA stable across renewals, so the caBundle rarely changes at all.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from certs.pki import write_private, write_public
from certs.serving import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE, ensure_serving_certificate, service_hosts
from common.kube import body as as_body
from common.kube import raw, timeout

__all__ = ["CertificateKeeper"]

log = structlog.get_logger("webhook.certificates")
_FILES = (CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE)
_PRIVATE = {CA_KEY_FILE, KEY_FILE}


@dataclass
class CertificateKeeper:
    api: client.ApiClient
    namespace: str
    secret_name: str
    service: str
    configurations: Sequence[str]
    cert_dir: Path
    extra_hosts: Sequence[str] = ()

    @property
    def hosts(self) -> tuple[str, ...]:
        return service_hosts(self.service, self.namespace, self.extra_hosts)

    async def sync(self) -> None:
        core = client.CoreV1Api(self.api)
        for _ in range(5):
            secret = await self._read_secret(core)
            if secret is not None:
                self._write_files(secret.get("data") or {})
            outcome = ensure_serving_certificate(
                self.cert_dir, self.hosts, common_name=f"{self.service}.{self.namespace}.svc"
            )
            if secret is not None and not outcome.certificate_renewed:
                break
            try:
                await self._store(core, secret)
                log.info("certificate stored", secret=self.secret_name, not_after=outcome.not_after.isoformat())
                break
            except ApiException as error:
                if error.status != 409:
                    raise
                # Another replica wrote first: adopt its Secret.
                await asyncio.sleep(random.uniform(0.05, 0.3))  # noqa: S311
        else:
            raise RuntimeError(f"Secret {self.namespace}/{self.secret_name} kept changing under us")
        await self._publish_ca()

    async def run(self, interval: float = 3600.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except (ApiException, OSError, RuntimeError) as error:
                log.warning("certificate sync failed", error=str(error)[:300])

    async def _read_secret(self, core: client.CoreV1Api) -> dict[str, Any] | None:
        try:
            return await raw(
                core.read_namespaced_secret(self.secret_name, self.namespace, _preload_content=False, **timeout())
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _write_files(self, data: dict[str, str]) -> None:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        # Keys before certificates: a reader that sees a new certificate finds its key already there.
        for name in sorted(_FILES, key=lambda n: n not in _PRIVATE):
            if name in data:
                content = base64.b64decode(data[name])
                (write_private if name in _PRIVATE else write_public)(self.cert_dir / name, content)

    async def _store(self, core: client.CoreV1Api, existing: dict[str, Any] | None) -> None:
        data = {name: base64.b64encode((self.cert_dir / name).read_bytes()).decode() for name in _FILES}
        secret: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.secret_name,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/name": self.service,
                    "app.kubernetes.io/part-of": "databasebackup-operator",
                },
            },
            "data": data,
        }
        if existing is None:
            await core.create_namespaced_secret(self.namespace, as_body(secret), **timeout())
        else:
            secret["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            await core.replace_namespaced_secret(self.secret_name, self.namespace, as_body(secret), **timeout())

    async def _publish_ca(self) -> None:
        bundle = base64.b64encode((self.cert_dir / CA_FILE).read_bytes()).decode()
        api = client.AdmissionregistrationV1Api(self.api)
        pairs = (
            (api.read_mutating_webhook_configuration, api.patch_mutating_webhook_configuration),
            (api.read_validating_webhook_configuration, api.patch_validating_webhook_configuration),
        )
        for name in self.configurations:
            for read, patch in pairs:
                try:
                    current = await raw(read(name, _preload_content=False, **timeout()))
                except ApiException as error:
                    if error.status == 404:
                        continue  # e.g. only a validating configuration is installed
                    raise
                operations = [
                    {
                        "op": "replace" if "caBundle" in (hook.get("clientConfig") or {}) else "add",
                        "path": f"/webhooks/{index}/clientConfig/caBundle",
                        "value": bundle,
                    }
                    for index, hook in enumerate(current.get("webhooks") or [])
                    if (hook.get("clientConfig") or {}).get("caBundle") != bundle
                ]
                if operations:
                    await patch(name, operations, **timeout())
                    log.info("caBundle written", configuration=name, kind=current.get("kind"))
