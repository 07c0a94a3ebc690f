"""The BackupStore kind: object storage the cluster administrators approve, and the only place a DatabaseBackup's
backups may go when they go to a bucket.

A DatabaseBackup names a store (`spec.storage.s3.store`) and at most a prefix of its own; everything that decides
where the data and the access keys go is the store's: the endpoint, the bucket, the region, the CA, server-side
encryption, and which keys of which Secret are the access key pair. BackupStores are cluster-scoped, so namespace
users cannot create or edit them (Velero's BackupStorageLocation and CloudNativePG's ObjectStore are the models; both
are namespaced in the operator's or the cluster's namespace, which comes to the same: the administrators' objects).

Every namespace that uses a store writes only under its own part of the bucket:

    s3://<bucket>/<store prefix>/<namespace>/<the DatabaseBackup's prefix, default its databaseName>/

so with access keys shared by many namespaces, one namespace's DatabaseBackups and DatabaseRestores can never name,
read, restore or delete another's backups: every location the operator builds is below that namespace's part, and
a DatabaseBackup's prefix cannot climb out of it (`..` is refused). Which namespaces may use a store is its
`namespaceSelector` (absent: every namespace).

The access keys are read, in each namespace that uses the store, from the Secret the store names
(`s3.credentialsSecret`), by the Job's `secretKeyRef`: a namespace user cannot turn another key of another Secret (the
database's password) into an access key that would be sent to the store. Administrators who want the storage itself
to keep namespaces apart give each namespace keys of its own, limited to its part of the bucket.

Pure functions: parsing and validating a store (the webhook's admission of BackupStores, and the reconciler again
when it uses one), matching its namespace selector, and resolving a DatabaseBackup's reference into the storage its
Jobs use.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from common.constants import STORE_KIND, STORE_PLURAL
from common.model import (
    FieldError,
    S3Credentials,
    S3Storage,
    ServerSideEncryption,
    StoreReference,
    _or,
    _Reader,
    _show,
)
from common.validation import _dns_subdomain, _secret_key, prefix_problems

__all__ = [
    "STORE_KIND",
    "STORE_PLURAL",
    "BackupStoreSpec",
    "parse_store_spec",
    "resolve_store",
    "selector_matches",
    "store_problems",
]

STORE_FIELD: Final = "spec.storage.s3.store"

_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
_PEM_CERTIFICATE: Final = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----")


@dataclass(frozen=True)
class BackupStoreSpec:
    bucket: str
    credentials_secret: S3Credentials | None
    endpoint: str | None = None  # None: AWS
    region: str | None = None
    force_path_style: bool = False
    allow_insecure: bool = False  # an http:// endpoint
    ca_bundle: str | None = None  # PEM: public, so it travels in the store and the Job's env, not in a Secret
    server_side_encryption: ServerSideEncryption | None = None
    kms_key_id: str | None = None
    prefix: str = ""
    namespace_selector: Mapping[str, Any] | None = None  # None: every namespace


def parse_store_spec(raw: object, path: str = "spec") -> tuple[BackupStoreSpec | None, list[FieldError]]:
    errors: list[FieldError] = []
    if not isinstance(raw, Mapping):
        return None, [FieldError(path, f"must be an object, not {_show(raw)}")]
    spec = _Reader(raw, path, errors)
    s3 = spec.mapping("s3", required=True)
    selector = spec.mapping("namespaceSelector")
    if s3 is None:
        return None, errors
    bucket = s3.string("bucket", required=True)
    credentials = s3.mapping("credentialsSecret", required=True)
    secret = None
    if credentials is not None and (name := credentials.string("name", required=True)) is not None:
        secret = S3Credentials(
            name,
            credentials.string("accessKeyIdKey") or S3Credentials.access_key_id_key,
            credentials.string("secretAccessKeyKey") or S3Credentials.secret_access_key_key,
        )
    parsed = BackupStoreSpec(
        bucket=bucket or "",
        credentials_secret=secret,
        endpoint=s3.string("endpoint") or None,
        region=s3.string("region") or None,
        force_path_style=_or(s3.boolean("forcePathStyle"), False),
        allow_insecure=_or(s3.boolean("allowInsecure"), False),
        ca_bundle=s3.string("caBundle") or None,
        server_side_encryption=s3.enum("serverSideEncryption", ServerSideEncryption),
        kms_key_id=s3.string("kmsKeyId") or None,
        prefix=(spec.string("prefix") or "").strip("/"),
        namespace_selector=selector.raw if selector is not None else None,
    )
    if bucket is None:
        return None, errors
    return parsed, errors


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
        if value is not None and _unprintable(value):
            yield FieldError(f"{s3}.{field}", f"{value!r} must not contain spaces or control characters")
    if store.credentials_secret is not None:
        secret = store.credentials_secret
        yield from _dns_subdomain(f"{s3}.credentialsSecret.name", secret.name)
        yield from _secret_key(f"{s3}.credentialsSecret.accessKeyIdKey", secret.access_key_id_key)
        yield from _secret_key(f"{s3}.credentialsSecret.secretAccessKeyKey", secret.secret_access_key_key)
    if store.ca_bundle is not None and not _PEM_CERTIFICATE.search(store.ca_bundle):
        yield FieldError(f"{s3}.caBundle", "is not a PEM certificate (-----BEGIN CERTIFICATE-----...)")
    if store.server_side_encryption is ServerSideEncryption.KMS and not store.kms_key_id:
        yield FieldError(f"{s3}.kmsKeyId", "is required with serverSideEncryption aws:kms")
    if store.kms_key_id and store.server_side_encryption is not ServerSideEncryption.KMS:
        yield FieldError(f"{s3}.kmsKeyId", "goes with serverSideEncryption aws:kms only")
    yield from prefix_problems(f"{where}.prefix", store.prefix)
    if store.namespace_selector is not None:
        yield from _selector_problems(f"{where}.namespaceSelector", store.namespace_selector)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector against a set of labels (an empty selector matches everything). A selector this
    function cannot read matches nothing: it fails closed."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in _OPERATORS:
            return False
    return True


def resolve_store(
    reference: StoreReference,
    *,
    namespace: str,
    namespace_labels: Mapping[str, str],
    database_name: str,
    store: Mapping[str, Any] | None,
    where: str = STORE_FIELD,
) -> tuple[S3Storage | None, list[FieldError]]:
    """The storage a DatabaseBackup's Jobs use, from the store it names (`store`: the BackupStore object, None if it
    does not exist), or why it may not use it."""
    name = reference.store
    listing = "kubectl get backupstores lists those the cluster administrators made"
    if store is None:
        return None, [FieldError(where, f'BackupStore "{name}" not found ({listing})')]
    spec, errors = parse_store_spec(store.get("spec"))
    if spec is not None:
        errors += store_problems(spec)
    if spec is None or errors:
        problems = "; ".join(str(e) for e in errors)
        return None, [
            FieldError(where, f'BackupStore "{name}" is invalid ({problems}): tell the cluster administrators')
        ]
    if not selector_matches(spec.namespace_selector, namespace_labels):
        return None, [
            FieldError(where, f'BackupStore "{name}" is not open to namespace "{namespace}" (its namespaceSelector)')
        ]
    own = (reference.prefix if reference.prefix is not None else database_name).strip("/")
    prefix = "/".join(part for part in (spec.prefix, namespace, own) if part)
    return (
        S3Storage(
            bucket=spec.bucket,
            prefix=prefix,
            endpoint=spec.endpoint,
            region=spec.region,
            force_path_style=spec.force_path_style,
            allow_insecure=spec.allow_insecure,
            credentials_secret=spec.credentials_secret,
            ca_bundle=spec.ca_bundle,
            server_side_encryption=spec.server_side_encryption,
            kms_key_id=spec.kms_key_id,
            store=name,
        ),
        [],
    )


def _selector_problems(where: str, selector: Mapping[str, Any]) -> Iterator[FieldError]:
    labels = selector.get("matchLabels")
    if labels is not None and not (
        isinstance(labels, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        yield FieldError(f"{where}.matchLabels", f"must map label names to strings, not {_show(labels)}")
    expressions = selector.get("matchExpressions")
    if expressions is not None and not isinstance(expressions, list):
        yield FieldError(f"{where}.matchExpressions", f"must be a list, not {_show(expressions)}")
        return
    for index, expression in enumerate(expressions or []):
        at = f"{where}.matchExpressions[{index}]"
        if not isinstance(expression, Mapping) or not isinstance(expression.get("key"), str):
            yield FieldError(at, "must be an object with a key, an operator and (for In and NotIn) values")
            continue
        operator, values = expression.get("operator"), expression.get("values")
        if operator not in _OPERATORS:
            yield FieldError(f"{at}.operator", f"{_show(operator)} is not one of {', '.join(_OPERATORS)}")
        elif operator in ("In", "NotIn") and not (isinstance(values, list) and values):
            yield FieldError(f"{at}.values", f"must list at least one value with operator {operator}")
        elif operator in ("Exists", "DoesNotExist") and values:
            yield FieldError(f"{at}.values", f"must be empty with operator {operator}")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _unprintable(text: str) -> bool:
    return any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text)
