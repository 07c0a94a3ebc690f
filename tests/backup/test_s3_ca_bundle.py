"""An HTTPS store whose certificate a private CA signed, reached with that CA passed as PEM text in
S3_CA_BUNDLE_PEM (as the reconciler passes an approved store's CA), with no file mounted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certs.pki import issue, new_ca
from hack.harness.objectstore import SeaweedFS
from tests.backup.cli import dbb


@pytest.fixture(scope="module")
def https_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    ca = new_ca("dbb-test-s3-ca")
    server = issue(ca, "s3", hosts=["127.0.0.1"])
    with SeaweedFS.start(
        tmp_path_factory.mktemp("https-store"), tls=(server.cert_pem, server.key_pem, ca.cert_pem)
    ) as store:
        yield store


def test_the_ca_from_the_environment_reaches_an_https_store(https_store: SeaweedFS, tmp_path: Path) -> None:
    assert https_store.ca is not None
    env = {k: v for k, v in https_store.env.items() if k != "AWS_CA_BUNDLE"} | {"TMPDIR": str(tmp_path)}
    refused = dbb("list", f"s3://{https_store.bucket}", env=env)
    assert (refused.code, refused.result["reason"]) == (1, "TlsFailed")
    listed = dbb("list", f"s3://{https_store.bucket}", env=env | {"S3_CA_BUNDLE_PEM": https_store.ca.read_text()})
    assert listed.code == 0, listed.stderr
    assert listed.result["status"] == "Listed"
    assert list(tmp_path.iterdir()) == [], "the file is removed when the runner exits"
