"""Certificates in the cluster without cert-manager.

The webhook keeps its CA and serving certificate in a Secret (what it holds: `webhook.rotation`). Every replica,
at start and then every ~10 s:
1. reads the webhook configurations, then the Secret (plain GETs: no watch to keep alive);
2. works out what the Secret should hold: what is there, renewed where it expires within 30 days
   (`certs.serving`, in a staging folder); if the Secret is gone, a brand-new CA and certificate: deleting the
   Secret is how an admin rotates them, so nothing on disk is reused. A CA the API server does not trust yet
   records the CAs that may still be serving as previous ones, trusted until every replica serves the new one;
3. if that differs from the Secret, writes it guarded by its resourceVersion: when two replicas race, one wins
   (201/200), the other gets 409, starts over and adopts the winner's Secret, so all replicas serve one certificate;
4. publishes the current CA, plus the previous ones while the Secret holds them, into each configuration's
   caBundle, and only if it differs (so replicas never fight);
5. only then writes the files into --cert-dir, where the reloader swaps them in;
6. records on the Secret which certificate its TLS listener serves (`serving.databases.test.io/<pod>`, a merge
   patch of its own key). Once every Pod the Service routes to (its EndpointSlices) serves the Secret's current
   certificate, the next sync drops the previous CAs from the Secret (a guarded write, step 3), then the bundle.
The order of 3-5 is what keeps admission working during a rotation: a replica serves a certificate only once the
caBundle trusts its CA, and, by 6, the old CA stays trusted until every replica has moved on.

A sync that fails raises KeeperFailure, naming the step (one of STEPS, a metric label) and what failed in words;
`status` keeps the last success and the failure since, for `/readyz` (webhook.readiness: what a failing keeper
means for availability) and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog
from cryptography import x509
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from certs.pki import write_private, write_public
from certs.serving import CA_FILE, CERT_FILE, ensure_serving_certificate, service_hosts
from common.kube import MERGE_PATCH, raw, timeout
from common.kube import body as as_body
from webhook.readiness import KeeperStatus
from webhook.rotation import (
    FILES,
    PRIVATE_FILES,
    SERVING,
    Material,
    bundle_patch,
    certificates,
    change,
    fingerprint,
    hand_over,
    published_cas,
    reports,
    settled,
)

__all__ = ["POLL_INTERVAL", "STEPS", "CertificateKeeper", "KeeperFailure"]

log = structlog.get_logger("webhook.certificates")

# Often enough that a deleted Secret, or another replica's rotation, is acted on within seconds; one GET of a
# small Secret and two of the configurations per replica every 10 s is little for the API server.
POLL_INTERVAL: Final = 10.0
# Replicas started together would otherwise poll in lockstep and race for every write.
_JITTER: Final = 0.2
# The API server applies a webhook configuration change through its informer, a moment after the write: a replica
# that has just made the caBundle trust a new CA gives it that moment before serving a certificate signed by it.
_SETTLE: Final = 2.0
# Strategic merge patches webhooks by name, and takes the resourceVersion in the patch as a precondition.
_STRATEGIC_MERGE_PATCH: Final[Mapping[str, Any]] = {"_content_type": "application/strategic-merge-patch+json"}
_ATTEMPTS: Final = 5
# What a sync does, each a label of the failures metric: "conflict" when other writers won every attempt, "crashed"
# for an error nobody expected (the supervisor restarts the keeper).
STEPS: Final = (
    "read_configurations",
    "read_secret",
    "renew",
    "read_endpoints",
    "write_secret",
    "publish_ca_bundle",
    "write_files",
    "record_serving",
    "conflict",
    "crashed",
)
# What a step may meet from the API server, the network and the disk; anything else is a bug.
_EXPECTED: Final = (ApiException, aiohttp.ClientError, TimeoutError, OSError, ValueError)


class _Conflict(Exception):
    """Someone else wrote first: start over from a fresh read."""


class KeeperFailure(Exception):
    """A sync failed at `step` (one of STEPS); the message says what could not be done and why."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class CertificateKeeper:
    api: client.ApiClient
    namespace: str
    secret_name: str
    service: str
    configurations: Sequence[str]
    cert_dir: Path
    extra_hosts: Sequence[str] = ()
    # This replica's Pod name: without one it records nothing, and no rotation it starts settles on its own.
    pod: str | None = None
    # The certificate the TLS listener serves now (PEM); by default the one in cert_dir.
    serving: Callable[[], bytes | None] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    settle: float = _SETTLE
    on_event: Callable[[str], None] | None = None  # "created", "rotated", "renewed", "settled", "stored", "adopted"
    on_failure: Callable[[str], None] | None = None  # the step that failed (STEPS)
    status: KeeperStatus = field(default_factory=KeeperStatus)

    @property
    def hosts(self) -> tuple[str, ...]:
        return service_hosts(self.service, self.namespace, self.extra_hosts)

    async def sync(self) -> None:
        """One sync, recorded in `status`. Raises KeeperFailure, or whatever a bug raises (recorded as "crashed")."""
        try:
            await self._sync()
        except KeeperFailure as failure:
            self._failed(failure.step, str(failure))
            raise
        except Exception as error:
            self._failed("crashed", f"crashed: {type(error).__name__}: {error}"[:300])
            raise
        self.status.succeeded(self.clock())

    async def run(self, interval: float = POLL_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval * random.uniform(1 - _JITTER, 1 + _JITTER))  # noqa: S311
            with contextlib.suppress(KeeperFailure):  # recorded and logged by sync; the next poll tries again
                await self.sync()

    async def _sync(self) -> None:
        for _ in range(_ATTEMPTS):
            try:
                await self._sync_once()
                return
            except _Conflict:
                log.debug("certificate sync conflict, starting over", secret=self.secret_name)
                await asyncio.sleep(random.uniform(0.05, 0.3))  # noqa: S311
        raise KeeperFailure("conflict", f"Secret {self._secret} kept changing under us in {_ATTEMPTS} attempts")

    def _failed(self, step: str, message: str) -> None:
        self.status.failed(message)
        log.warning("certificate sync failed", step=step, error=message)
        if self.on_failure is not None:
            self.on_failure(step)

    @property
    def _secret(self) -> str:
        return f"{self.namespace}/{self.secret_name}"

    async def _sync_once(self) -> None:
        now = self.clock()
        core = client.CoreV1Api(self.api)
        # Configurations before the Secret: if another replica rotated in between, we see its Secret too, and
        # never publish a bundle from an older Secret over its newer one.
        names = ", ".join(self.configurations)
        with _step("read_configurations", f"read the webhook configurations {names}"):
            configurations = await self._read_configurations()
        with _step("read_secret", f"read Secret {self._secret}"):
            secret = await self._read_secret(core)
            stored = Material.from_secret(secret) if secret is not None else None
        published = published_cas(c for _, c in configurations)
        served = self._served()
        with _step("renew", "make or renew the certificate"):
            candidate = hand_over(self._renewed(stored, now), stored, published, served, now)
        served_by = reports(secret) if secret is not None else {}
        if candidate.previous and candidate == stored:
            with _step("read_endpoints", f"list the endpoints of Service {self.namespace}/{self.service}"):
                routed = await self._routed_pods()
            if routed is not None and settled(candidate, served_by, routed):
                candidate = candidate.settle()
        wrote = candidate != stored
        if wrote:
            with _step("write_secret", f"{'create' if secret is None else 'update'} Secret {self._secret}"):
                await self._store(core, secret, candidate)
            self._report_stored(stored, candidate)
        with _step("publish_ca_bundle", f"write the caBundle of {names}"):
            added = await self._publish(configurations, candidate.bundle())
        if added and served and set(served) != set(candidate.cas):
            await asyncio.sleep(self.settle)
        with _step("write_files", f"write the certificate into {self.cert_dir}"):
            await self._serve(candidate, adopted=not wrote)
        with _step("record_serving", f"record the served certificate on Secret {self._secret}"):
            await self._report(core, served_by)

    async def _report(self, core: client.CoreV1Api, served_by: Mapping[str, str]) -> None:
        """Record the certificate this replica serves, and forget replicas the Service no longer routes to."""
        pem = self.serving() if self.serving is not None else _read(self.cert_dir / CERT_FILE)
        if self.pod is None or pem is None:
            return
        mine = fingerprint(pem)
        if served_by.get(self.pod) == mine:
            return
        routed = await self._routed_pods() or set()
        gone = {SERVING + pod: None for pod in served_by if pod != self.pod and pod not in routed}
        patch = {"metadata": {"annotations": {**gone, SERVING + self.pod: mine}}}
        await core.patch_namespaced_secret(self.secret_name, self.namespace, as_body(patch), **MERGE_PATCH, **timeout())
        log.info("serving certificate recorded", secret=self.secret_name, pod=self.pod, certificate=mine)

    async def _routed_pods(self) -> set[str] | None:
        """The Pods the webhook's Service routes to (serving endpoints, terminating ones included); None if they
        cannot be read, which keeps the previous CAs trusted."""
        discovery = client.DiscoveryV1Api(self.api)
        try:
            slices = await raw(
                discovery.list_namespaced_endpoint_slice(
                    self.namespace,
                    label_selector=f"kubernetes.io/service-name={self.service}",
                    _preload_content=False,
                    **timeout(),
                )
            )
        except ApiException as error:
            log.warning("cannot read the webhook's endpoints", service=self.service, status=error.status)
            return None
        pods = set()
        for item in slices.get("items") or []:
            for endpoint in item.get("endpoints") or []:
                conditions = endpoint.get("conditions") or {}
                target = endpoint.get("targetRef") or {}
                if (
                    conditions.get("serving", conditions.get("ready", True)) is not False
                    and target.get("kind") == "Pod"
                ):
                    pods.add(str(target.get("name")))
        return pods

    def _renewed(self, stored: Material | None, now: datetime) -> Material:
        """The stored files renewed where needed, or brand-new ones without a Secret. In a staging folder: what
        the reloader reads must not change before the caBundle trusts it."""
        staging = self.cert_dir / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            if stored is not None:
                _write(staging, stored.files)
            ensure_serving_certificate(staging, self.hosts, common_name=f"{self.service}.{self.namespace}.svc", now=now)
            files = {name: (staging / name).read_bytes() for name in FILES}
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        base = stored or Material()
        return replace(base, files=files)

    def _served(self) -> tuple[bytes, ...]:
        try:
            return certificates((self.cert_dir / CA_FILE).read_bytes())
        except OSError:
            return ()

    async def _serve(self, material: Material, *, adopted: bool) -> None:
        on_disk = {name: _read(self.cert_dir / name) for name in FILES}
        if on_disk == dict(material.files):
            return
        served = certificates(on_disk[CA_FILE] or b"")
        _write(self.cert_dir, material.files)
        if adopted:
            log.info(
                "certificate adopted",
                secret=self.secret_name,
                ca=fingerprint(material.cas[0]),
                ca_changed=bool(served) and set(served) != set(material.cas),
            )
            self._event("adopted")

    def _report_stored(self, stored: Material | None, candidate: Material) -> None:
        event = change(stored, candidate)
        not_after = x509.load_pem_x509_certificate(candidate.files[CERT_FILE]).not_valid_after_utc.isoformat()
        if event == "rotated":
            assert candidate.rotated_at is not None
            log.info(
                "certificate rotated",
                secret=self.secret_name,
                ca=fingerprint(candidate.cas[0]),
                secret_deleted=stored is None,
                previous=[fingerprint(ca) for ca in candidate.previous],
                not_after=not_after,
            )
        else:
            ca = fingerprint(candidate.cas[0])
            log.info("certificate stored", change=event, secret=self.secret_name, ca=ca, not_after=not_after)
        self._event(event)

    def _event(self, event: str) -> None:
        if self.on_event is not None:
            self.on_event(event)

    async def _read_secret(self, core: client.CoreV1Api) -> dict[str, Any] | None:
        try:
            return await raw(
                core.read_namespaced_secret(self.secret_name, self.namespace, _preload_content=False, **timeout())
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def _store(self, core: client.CoreV1Api, existing: dict[str, Any] | None, material: Material) -> None:
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
                # The replicas' records stay: they are about the replicas, not this material.
                "annotations": {**_records(existing), **material.annotations()},
            },
            "data": material.secret_data(),
        }
        try:
            if existing is None:
                await core.create_namespaced_secret(self.namespace, as_body(secret), **timeout())
            else:
                secret["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                await core.replace_namespaced_secret(self.secret_name, self.namespace, as_body(secret), **timeout())
        except ApiException as error:
            if error.status == 409:
                raise _Conflict from None  # another replica wrote first: adopt its Secret
            raise

    async def _read_configurations(self) -> list[tuple[str, dict[str, Any]]]:
        api = client.AdmissionregistrationV1Api(self.api)
        found = []
        for name in self.configurations:
            for kind, read in (
                ("mutating", api.read_mutating_webhook_configuration),
                ("validating", api.read_validating_webhook_configuration),
            ):
                try:
                    found.append((kind, await raw(read(name, _preload_content=False, **timeout()))))
                except ApiException as error:
                    if error.status != 404:  # e.g. only a validating configuration is installed
                        raise
        return found

    async def _publish(self, configurations: list[tuple[str, dict[str, Any]]], bundle: bytes) -> bool:
        """Write the bundle where it differs. True if some webhook now trusts a CA it did not before."""
        api = client.AdmissionregistrationV1Api(self.api)
        patches = {
            "mutating": api.patch_mutating_webhook_configuration,
            "validating": api.patch_validating_webhook_configuration,
        }
        wanted = set(certificates(bundle))
        added = False
        for kind, configuration in configurations:
            patch = bundle_patch(configuration, bundle)
            if patch is None:
                continue
            name = configuration["metadata"]["name"]
            try:
                await patches[kind](name, as_body(patch), **_STRATEGIC_MERGE_PATCH, **timeout())
            except ApiException as error:
                if error.status == 409:
                    raise _Conflict from None  # changed since we read it: start over from what is there now
                raise
            before = published_cas([configuration])
            added = added or not wanted <= set(before)
            log.info("caBundle written", configuration=name, kind=configuration.get("kind"), cas=len(wanted))
        return added


@contextlib.contextmanager
def _step(step: str, action: str) -> Iterator[None]:
    """Turns an expected error of one step into a KeeperFailure that says what could not be done."""
    try:
        yield
    except _EXPECTED as error:
        raise KeeperFailure(step, f"cannot {action}: {_describe(error)}"[:500]) from error


def _describe(error: BaseException) -> str:
    """An error in one line: for the API server's, its status and its own message (which names the verb, resource
    and user RBAC refused)."""
    if isinstance(error, ApiException):
        try:
            message = str(json.loads(error.body or "{}").get("message") or "")
        except (ValueError, AttributeError):
            message = ""
        return f"{error.status} {error.reason}" + (f": {message}" if message else "")
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _write(folder: Path, files: Mapping[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # Keys before certificates: a reader that sees a new certificate finds its key already there.
    for name in sorted(files, key=lambda n: n not in PRIVATE_FILES):
        (write_private if name in PRIVATE_FILES else write_public)(folder / name, files[name])


def _records(secret: Mapping[str, Any] | None) -> dict[str, str]:
    return {SERVING + pod: value for pod, value in (reports(secret) if secret is not None else {}).items()}


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
