"""dbb-certs makes a CA and a serving certificate, keeps what is valid, and renews what is about to expire."""

from __future__ import annotations

import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certs.main import main
from certs.serving import ensure_serving_certificate, service_hosts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOSTS = service_hosts("dbb-webhook", "dbb-system", ["127.0.0.1"])


def names(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def test_service_hosts_cover_every_in_cluster_name_then_extras() -> None:
    assert service_hosts("svc", "ns", ["extra.example", "svc"]) == (
        "svc",
        "svc.ns",
        "svc.ns.svc",
        "svc.ns.svc.cluster.local",
        "extra.example",
    )


def test_the_files_are_written_with_a_private_key_only_the_owner_reads(tmp_path: Path) -> None:
    outcome = ensure_serving_certificate(tmp_path, HOSTS, now=NOW)
    assert outcome.ca_renewed
    assert outcome.certificate_renewed
    assert {p.name for p in tmp_path.iterdir()} == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert names(tmp_path / "tls.crt") == set(HOSTS)


def handshake(folder: Path, server_name: str) -> None:
    """A real TLS handshake in memory: our server context against a client that trusts only ca.crt."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
    client_context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    wires = [ssl.MemoryBIO() for _ in range(4)]
    client = client_context.wrap_bio(wires[0], wires[1], server_hostname=server_name)
    server = server_context.wrap_bio(wires[2], wires[3], server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end, outgoing, incoming in (
            ("client", client, wires[1], wires[2]),
            ("server", server, wires[3], wires[0]),
        ):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            incoming.write(outgoing.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize(
    "server_name", ["dbb-webhook.dbb-system.svc", "dbb-webhook.dbb-system.svc.cluster.local", "127.0.0.1"]
)
def test_a_client_trusting_the_ca_accepts_every_service_name(tmp_path: Path, server_name: str) -> None:
    ensure_serving_certificate(tmp_path, HOSTS)
    handshake(tmp_path, server_name)


def test_a_client_refuses_a_name_the_certificate_does_not_carry(tmp_path: Path) -> None:
    ensure_serving_certificate(tmp_path, HOSTS)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(tmp_path, "other.dbb-system.svc")


def test_a_second_run_keeps_valid_certificates(tmp_path: Path) -> None:
    ensure_serving_certificate(tmp_path, HOSTS, now=NOW)
    before = (tmp_path / "tls.crt").read_bytes()
    outcome = ensure_serving_certificate(tmp_path, HOSTS, now=NOW + timedelta(days=300))
    assert not outcome.certificate_renewed
    assert (tmp_path / "tls.crt").read_bytes() == before


def test_a_certificate_expiring_within_30_days_is_renewed_under_the_same_ca(tmp_path: Path) -> None:
    ensure_serving_certificate(tmp_path, HOSTS, now=NOW)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    outcome = ensure_serving_certificate(tmp_path, HOSTS, now=NOW + timedelta(days=340))
    assert outcome.certificate_renewed
    assert not outcome.ca_renewed
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert outcome.not_after > NOW + timedelta(days=340 + 300)


def test_a_new_name_renews_the_certificate(tmp_path: Path) -> None:
    ensure_serving_certificate(tmp_path, HOSTS, now=NOW)
    outcome = ensure_serving_certificate(tmp_path, [*HOSTS, "webhook.example"], now=NOW)
    assert outcome.certificate_renewed
    assert "webhook.example" in names(tmp_path / "tls.crt")


@pytest.mark.parametrize("damage", ["tls.key", "tls.crt", "ca.key"])
def test_missing_or_corrupt_files_are_replaced(tmp_path: Path, damage: str) -> None:
    ensure_serving_certificate(tmp_path, HOSTS, now=NOW)
    (tmp_path / damage).write_bytes(b"not pem")
    outcome = ensure_serving_certificate(tmp_path, HOSTS, now=NOW)
    assert outcome.certificate_renewed
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")


def test_dbb_certs_prints_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["--service", "hook", "--namespace", "ops", "--out", str(out), "--host", "10.1.2.3"]) == 0
    first = capsys.readouterr().out
    assert "certificate renewed (CA new)" in first
    assert "hook.ops.svc.cluster.local" in first
    assert "10.1.2.3" in names(out / "tls.crt")
    assert main(["--service", "hook", "--namespace", "ops", "--out", str(out), "--host", "10.1.2.3"]) == 0
    assert "certificate kept (CA kept)" in capsys.readouterr().out
