"""The reconciler's health port over real TLS: it will not start without a certificate, and serves a new one from
--cert-dir without a restart, as the webhook does (common.tls)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

from certs.serving import ensure_serving_certificate
from tests.integration.inprocess import reconciler, until
from tests.unit.test_webhook_tls import peer_serial


def test_without_a_certificate_the_reconciler_exits_and_says_where_it_looked(kubeconfig: Path, tmp_path: Path) -> None:
    empty = tmp_path / "tls"
    empty.mkdir()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dbb-reconciler"), f"--kubeconfig={kubeconfig}", f"--cert-dir={empty}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"no usable tls.crt and tls.key in {empty} (--cert-dir)" in result.stderr


async def test_a_certificate_replaced_in_the_cert_dir_is_served_without_a_restart(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    async with reconciler(
        f"--kubeconfig={kubeconfig}", f"--namespace={namespace}", "--no-metrics-auth", "--cert-reload-seconds=0.2"
    ) as health:
        before = await peer_serial(health.port, health.cert_dir / "ca.crt")
        # A new CA and certificate, as cert-manager would leave them in a mounted Secret.
        fresh = tmp_path / "fresh"
        ensure_serving_certificate(fresh, ["127.0.0.1"])
        for name in ("tls.key", "tls.crt"):
            (health.cert_dir / name).write_bytes((fresh / name).read_bytes())

        async def moved_on() -> bool:
            try:
                return await peer_serial(health.port, fresh / "ca.crt") != before
            except (ssl.SSLError, OSError):  # still the old certificate, which this client does not trust
                return False

        await until(moved_on, what="the new certificate is served")
