"""What makes a BackupStore wrong: its bucket, endpoint, keys, CA and namespace selector."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import urlsplit

from common.fields import FieldError
from common.selectors import selector_problems
from common.stores.model import BackupStoreSpec
from common.values import (
    ServerSideEncryption,
    dns_subdomain_problems,
    prefix_problems,
    secret_key_problems,
    unprintable,
)

__all__ = ["store_problems"]

_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


_PEM_CERTIFICATE: Final = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----")


def store_problems(store: BackupStoreSpec, where: str = "spec") -> Iterator[FieldError]:
    """What is wrong with a parsed store, each naming its field and value."""
    s3 = f"{where}.s3"
    bucket = store.bucket
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _is_ip(bucket) or bucket.startswith("xn--"):
        yield FieldError(
            f"{s3}.bucket",
            f'"{bucket}" is not an S3 bucket name (3 to 63 lower-case letters, digits, "." and "-", starting and '
            "ending with a letter or digit, not an IP address)",
        )
    if store.endpoint is not None:
        parts = urlsplit(store.endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
            yield FieldError(f"{s3}.endpoint", f'"{store.endpoint}" is not an https:// URL')
        elif parts.scheme == "http" and not store.allow_insecure:
            yield FieldError(
                f"{s3}.endpoint",
                f'"{store.endpoint}" is plain http: the access keys and every backup would cross the network '
                "unencrypted; use https://, or set allowInsecure: true",
            )
    for field, value in (("endpoint", store.endpoint), ("region", store.region), ("kmsKeyId", store.kms_key_id)):
        if value is not None and unprintable(value):
            yield FieldError(f"{s3}.{field}", f"{value!r} must not contain spaces or control characters")
    if store.credentials_secret is not None:
        secret = store.credentials_secret
        yield from dns_subdomain_problems(f"{s3}.credentialsSecret.name", secret.name)
        yield from secret_key_problems(f"{s3}.credentialsSecret.accessKeyIdKey", secret.access_key_id_key)
        yield from secret_key_problems(f"{s3}.credentialsSecret.secretAccessKeyKey", secret.secret_access_key_key)
    if store.ca_bundle is not None and not _PEM_CERTIFICATE.search(store.ca_bundle):
        yield FieldError(f"{s3}.caBundle", "is not a PEM certificate (-----BEGIN CERTIFICATE-----...)")
    if store.server_side_encryption is ServerSideEncryption.KMS and not store.kms_key_id:
        yield FieldError(f"{s3}.kmsKeyId", "is required with serverSideEncryption aws:kms")
    if store.kms_key_id and store.server_side_encryption is not ServerSideEncryption.KMS:
        yield FieldError(f"{s3}.kmsKeyId", "goes with serverSideEncryption aws:kms only")
    yield from prefix_problems(f"{where}.prefix", store.prefix)
    if store.namespace_selector is not None:
        yield from selector_problems(f"{where}.namespaceSelector", store.namespace_selector)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
