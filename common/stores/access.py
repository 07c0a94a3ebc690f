"""Who may use a BackupStore, and where: its namespace selector, and a DatabaseBackup's reference resolved into the
storage its Jobs use, below the namespace's own part of the bucket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.fields import FieldError
from common.selectors import selector_matches
from common.stores.model import STORE_FIELD, parse_store_spec
from common.stores.validation import store_problems
from common.values import S3Storage, StoreReference

__all__ = ["resolve_store"]


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
