"""What the webhook's caBundle must trust while its CA changes: pure decisions, no I/O.

The API server calls whichever replica the Service picks and checks its certificate against the caBundle. While
the CA changes, some replicas still serve a certificate signed by the old CA and others one signed by the new, so
for a while the bundle must trust both. The Secret carries what every replica needs to agree on that without
talking to the others:
- `ca.crt`, `ca.key`, `tls.crt`, `tls.key`: the current CA and serving certificate;
- `ca-previous.crt`: the CAs that were live when the current one arrived (PEM, one or more);
- the annotation `databases.test.io/ca-rotated-at`: when that was (for logs);
- an annotation `serving.databases.test.io/<pod>` per replica: the fingerprint of the certificate that replica's
  TLS listener serves now (what it has loaded, not what is on its disk).
Every replica publishes the current CA and the previous ones for as long as the Secret holds them: from the same
Secret all replicas compute the same bundle byte for byte, so each patches only what differs and two never undo
each other's work. The previous CAs leave the Secret (and then the bundle) only once the rotation has `settled`:
every Pod the webhook's Service routes to reports serving the Secret's current certificate. A fixed time would
drop a CA that a slow or briefly unreachable replica still serves; this waits for exactly as long as one does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.serving import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE

__all__ = [
    "FILES",
    "PREVIOUS_FILE",
    "PRIVATE_FILES",
    "ROTATED_AT",
    "SERVING",
    "Material",
    "bundle_patch",
    "certificates",
    "change",
    "fingerprint",
    "hand_over",
    "published_cas",
    "reports",
    "settled",
]

PREVIOUS_FILE: Final = "ca-previous.crt"
ROTATED_AT: Final = "databases.test.io/ca-rotated-at"
SERVING: Final = "serving.databases.test.io/"  # + a Pod name: the fingerprint of the certificate it serves
FILES: Final = (CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE)
PRIVATE_FILES: Final = frozenset({CA_KEY_FILE, KEY_FILE})

_PEM_CERTIFICATE: Final = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def certificates(pem: bytes) -> tuple[bytes, ...]:
    """Each certificate in a PEM bundle, once, in order, re-encoded so that equal certificates compare equal.
    What does not parse is left out: a bundle someone edited by hand must not stop the webhook."""
    found: dict[bytes, bytes] = {}
    for block in _PEM_CERTIFICATE.findall(pem):
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError:
            continue
        found.setdefault(cert.public_bytes(serialization.Encoding.DER), cert.public_bytes(serialization.Encoding.PEM))
    return tuple(found.values())


def fingerprint(pem: bytes) -> str:
    """A short, stable name for a certificate in logs: the start of its SHA-256 over DER."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()[:16]


@dataclass(frozen=True)
class Material:
    """What the Secret holds: the four files, and the previous CAs with the time the current one arrived."""

    files: Mapping[str, bytes] = field(default_factory=dict)
    previous: tuple[bytes, ...] = ()
    rotated_at: datetime | None = None

    @property
    def cas(self) -> tuple[bytes, ...]:
        return certificates(self.files.get(CA_FILE, b""))

    def trusted(self) -> tuple[bytes, ...]:
        """The CAs to publish: the current one first, then the previous ones until the rotation has settled."""
        return tuple(dict.fromkeys([*self.cas, *self.previous]))

    def bundle(self) -> bytes:
        return b"".join(self.trusted())

    def settle(self) -> Material:
        """The rotation is over: the previous CAs go."""
        return replace(self, previous=(), rotated_at=None)

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any]) -> Material:
        data: Mapping[str, str] = secret.get("data") or {}
        files = {name: _decoded(data[name]) for name in FILES if name in data}
        previous = certificates(_decoded(data.get(PREVIOUS_FILE, "")))
        annotations: Mapping[str, str] = (secret.get("metadata") or {}).get("annotations") or {}
        return cls(files, previous, _parse_time(annotations.get(ROTATED_AT)) if previous else None)

    def secret_data(self) -> dict[str, str]:
        data = {name: base64.b64encode(content).decode() for name, content in self.files.items()}
        if self.previous:
            data[PREVIOUS_FILE] = base64.b64encode(b"".join(self.previous)).decode()
        return data

    def annotations(self) -> dict[str, str]:
        if not self.previous or self.rotated_at is None:
            return {}
        return {ROTATED_AT: self.rotated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def reports(secret: Mapping[str, Any]) -> dict[str, str]:
    """Which certificate each replica serves, by Pod name, as the replicas recorded it on the Secret."""
    annotations: Mapping[str, str] = (secret.get("metadata") or {}).get("annotations") or {}
    return {key.removeprefix(SERVING): value for key, value in annotations.items() if key.startswith(SERVING)}


def settled(material: Material, served_by: Mapping[str, str], pods: Iterable[str]) -> bool:
    """Whether every Pod the Service routes to (`pods`) reports serving the Secret's current certificate. A Pod
    that is not routed to receives no admission request, whatever it serves."""
    current = fingerprint(material.files[CERT_FILE]) if CERT_FILE in material.files else None
    return current is not None and all(served_by.get(pod) == current for pod in pods)


def hand_over(
    candidate: Material,
    stored: Material | None,
    published: Iterable[bytes],
    served: Iterable[bytes],
    now: datetime,
) -> Material:
    """The candidate for the Secret, with the CAs that may still be live recorded as its previous ones when its CA
    is new to the API server.

    `candidate` is `stored` renewed (or brand new when there was no Secret), carrying stored's previous CAs.
    `published` are the CAs the caBundles hold now, `served` the CA this replica serves now: together with the
    stored CA and its previous ones, they are what replicas may be serving. Only a CA that is not yet published
    starts a rotation: once published, a later sync must not start another, or the old CA would stay trusted for
    ever."""
    published = tuple(published)
    if set(candidate.cas) <= set(published):
        return candidate
    outgoing = [*published, *served]
    kept: tuple[bytes, ...] = ()
    if stored is not None:
        kept = stored.previous
        outgoing += [*stored.cas, *kept]
    live = [ca for ca in dict.fromkeys(outgoing) if ca not in candidate.cas and _valid(ca, now)]
    if set(live) <= set(kept):
        # Nothing new is going out (e.g. the caBundle was edited away): keep the rotation that is running.
        return candidate
    return replace(candidate, previous=tuple(live), rotated_at=now.astimezone(UTC).replace(microsecond=0))


def change(stored: Material | None, candidate: Material) -> str:
    """What writing the candidate over the stored Secret amounts to, for logs and metrics."""
    if candidate.rotated_at is not None and (stored is None or candidate.rotated_at != stored.rotated_at):
        return "rotated"  # a new CA, and the ones going out kept until every replica has moved on
    if stored is None:
        return "created"
    if stored.previous and not candidate.previous:
        return "settled"  # every replica serves the current certificate: the previous CAs go
    if stored.files != candidate.files:
        return "renewed"
    return "stored"


def published_cas(configurations: Iterable[Mapping[str, Any]]) -> tuple[bytes, ...]:
    """Every CA the webhooks of these configurations trust now."""
    found: list[bytes] = []
    for configuration in configurations:
        for hook in configuration.get("webhooks") or []:
            found += certificates(_decoded((hook.get("clientConfig") or {}).get("caBundle") or ""))
    return tuple(dict.fromkeys(found))


def bundle_patch(configuration: Mapping[str, Any], bundle: bytes) -> dict[str, Any] | None:
    """A strategic merge patch that sets the caBundle of every webhook that lacks this one, or None if all have it.

    It carries the resourceVersion it was computed from: a replica working from an older view than another's patch
    gets 409 and starts over, instead of writing back a bundle that no longer trusts the other's new CA."""
    value = base64.b64encode(bundle).decode()
    hooks = [
        {"name": hook["name"], "clientConfig": {"caBundle": value}}
        for hook in configuration.get("webhooks") or []
        if (hook.get("clientConfig") or {}).get("caBundle") != value
    ]
    if not hooks:
        return None
    return {"metadata": {"resourceVersion": configuration["metadata"]["resourceVersion"]}, "webhooks": hooks}


def _decoded(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _valid(pem: bytes, now: datetime) -> bool:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc > now
