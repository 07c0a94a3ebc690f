"""S3_CA_BUNDLE_PEM: the approved store's CA, passed as PEM text in the Job's env, becomes a private file that
AWS_CA_BUNDLE names before the S3 client is made."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from certs.pki import new_ca
from runner.errors import RunnerError
from runner.s3backup import ca_bundle_from_env

PEM = new_ca("dbb-test-store-ca").cert_pem.decode()


def test_the_pem_is_written_to_a_private_file_that_aws_ca_bundle_names(tmp_path: Path) -> None:
    environ = {"S3_CA_BUNDLE_PEM": PEM, "TMPDIR": str(tmp_path), "AWS_CA_BUNDLE": "/mounted/ca.crt"}
    written = ca_bundle_from_env(environ)
    assert written is not None
    assert written.parent == tmp_path
    assert written.read_text() == PEM
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert environ["AWS_CA_BUNDLE"] == str(written)
    # A second client of the same run finds it written.
    assert ca_bundle_from_env(environ) == written
    assert list(tmp_path.iterdir()) == [written]


def test_without_the_variable_nothing_changes(tmp_path: Path) -> None:
    environ = {"TMPDIR": str(tmp_path), "AWS_CA_BUNDLE": "/mounted/ca.crt"}
    assert ca_bundle_from_env(environ) is None
    assert environ["AWS_CA_BUNDLE"] == "/mounted/ca.crt"
    assert list(tmp_path.iterdir()) == []


def test_text_that_is_no_certificate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunnerError) as raised:
        ca_bundle_from_env({"S3_CA_BUNDLE_PEM": "not a certificate", "TMPDIR": str(tmp_path)})
    assert raised.value.reason == "InvalidArguments"
    assert list(tmp_path.iterdir()) == []
