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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from common.constants import STORE_KIND, STORE_PLURAL
from common.fields import FieldError, Reader, or_default, show
from common.values import (
    S3Credentials,
    ServerSideEncryption,
)

__all__ = [
    "STORE_KIND",
    "STORE_PLURAL",
    "BackupStoreSpec",
    "parse_store_spec",
]

STORE_FIELD: Final = "spec.storage.s3.store"


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
        return None, [FieldError(path, f"must be an object, not {show(raw)}")]
    spec = Reader(raw, path, errors)
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
        force_path_style=or_default(s3.boolean("forcePathStyle"), False),
        allow_insecure=or_default(s3.boolean("allowInsecure"), False),
        ca_bundle=s3.string("caBundle") or None,
        server_side_encryption=s3.enum("serverSideEncryption", ServerSideEncryption),
        kms_key_id=s3.string("kmsKeyId") or None,
        prefix=(spec.string("prefix") or "").strip("/"),
        namespace_selector=selector.raw if selector is not None else None,
    )
    if bucket is None:
        return None, errors
    return parsed, errors
