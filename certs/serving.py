"""Serving certificates for a Kubernetes Service, kept in a folder as ca.crt, ca.key, tls.crt, tls.key.

Re-running keeps what is still good and renews what is not: the serving certificate when it expires within
`renew_before`, lacks a name, or was not signed by the CA on disk; the CA too when it is itself about to expire or
its key is gone. Keeping the CA across renewals keeps every `caBundle` that already trusts it valid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certs.pki import KeyPair, issue, new_ca, write_private, write_public

__all__ = ["Outcome", "ensure_serving_certificate", "service_hosts"]

RENEW_BEFORE = timedelta(days=30)
CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE = "ca.crt", "ca.key", "tls.crt", "tls.key"


@dataclass(frozen=True)
class Outcome:
    ca_renewed: bool
    certificate_renewed: bool
    not_after: datetime
    hosts: tuple[str, ...]


def service_hosts(service: str, namespace: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Every name a client inside the cluster may use for the Service, then any extra names or IPs."""
    base = (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )
    return tuple(dict.fromkeys([*base, *extra]))


def ensure_serving_certificate(
    folder: Path,
    hosts: Sequence[str],
    *,
    common_name: str | None = None,
    now: datetime | None = None,
    renew_before: timedelta = RENEW_BEFORE,
    days: int = 365,
    ca_days: int = 3650,
) -> Outcome:
    moment = now or datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    ca = _load(folder / CA_FILE, folder / CA_KEY_FILE)
    ca_renewed = ca is None or not _lasts(ca.cert, moment, renew_before)
    if ca is None or ca_renewed:
        ca = new_ca(f"{common_name or hosts[0]}-ca", days=ca_days, now=moment)
        write_private(folder / CA_KEY_FILE, ca.key_pem)
        write_public(folder / CA_FILE, ca.cert_pem)
    leaf = _load(folder / CERT_FILE, folder / KEY_FILE)
    renew = ca_renewed or leaf is None or not _good_leaf(leaf.cert, ca.cert, hosts, moment, renew_before)
    if renew:
        leaf = issue(ca, common_name or hosts[0], hosts=hosts, server=True, days=days, now=moment)
        # Key first: a reader that sees the new certificate must find its key already there.
        write_private(folder / KEY_FILE, leaf.key_pem)
        write_public(folder / CERT_FILE, leaf.cert_pem)
    assert leaf is not None
    return Outcome(ca_renewed, renew, leaf.cert.not_valid_after_utc, tuple(hosts))


def _load(cert_path: Path, key_path: Path) -> KeyPair | None:
    try:
        return KeyPair.load(cert_path.read_bytes(), key_path.read_bytes())
    except (OSError, ValueError):
        return None


def _lasts(cert: x509.Certificate, now: datetime, margin: timedelta) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - margin > now


def _good_leaf(
    cert: x509.Certificate, ca: x509.Certificate, hosts: Sequence[str], now: datetime, margin: timedelta
) -> bool:
    if not _lasts(cert, now, margin) or cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(n) for n in names.get_values_for_type(x509.DNSName)}
    have |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return all(_normal(h) in have for h in hosts)


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host
