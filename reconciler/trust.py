"""The trust rules, applied again before every Job (pure): the webhook judged them at apply time, but the world
moves on. A Service becomes an ExternalName, a namespace loses its label, a StatefulSet is created whose data volume
is the backup claim, a BackupStore is closed to the namespace, the database's image changes; and a webhook can be
bypassed or down. So the reconciler never starts a Job that the same rules (common.hosts, common.volumes,
common.images, common.stores) refuse now, and says which rule and which field in the object's status.

`NamespaceFacts` is what the rules read about the object's namespace, from the controller's caches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from common.backups.defaults import default_claim_name
from common.backups.model import DatabaseBackupSpec
from common.fields import FieldError
from common.hosts import ALLOW_EXTERNAL_HOSTS, DEFAULT_CLUSTER_DOMAIN, HostFacts, host_refusal, own_service
from common.images import image_refusal
from common.stores.access import resolve_store
from common.values import S3Storage, StoreReference
from common.volumes import claim_refusal

__all__ = ["NamespaceFacts", "backup_refusals", "host_refusals", "storage_refusals"]


@dataclass(frozen=True)
class NamespaceFacts:
    """The object's namespace as the rules see it. `services`, `statefulsets` and `stores` are views of the
    caches, not copies."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the namespace's Services, by name
    statefulsets: Sequence[Mapping[str, Any]] = ()  # every StatefulSet of the namespace
    stores: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # BackupStores, by name
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


def host_refusals(host: str | None, where: str, facts: NamespaceFacts) -> list[FieldError]:
    """The host rule (common.hosts) for a host a Job would connect to with a Secret's password."""
    if host is None:
        return []
    service = own_service(host, facts.name, facts.cluster_domain)
    found = facts.services.get(service) if service is not None else None
    allowed = facts.labels.get(ALLOW_EXTERNAL_HOSTS) == "true"
    refused = host_refusal(HostFacts(host, facts.name, service, found, allowed))
    return [FieldError(where, refused)] if refused is not None else []


def storage_refusals(
    reference: StoreReference | None, database_name: str, facts: NamespaceFacts, where: str = "spec.storage.s3.store"
) -> tuple[S3Storage | None, list[FieldError]]:
    """The bucket storage a store reference resolves to now (None for a volume), or why it may not be used."""
    if reference is None:
        return None, []
    return resolve_store(
        reference,
        namespace=facts.name,
        namespace_labels=facts.labels,
        database_name=database_name,
        store=facts.stores.get(reference.store),
        where=where,
    )


def backup_refusals(
    spec: DatabaseBackupSpec, statefulset: Mapping[str, Any] | None, facts: NamespaceFacts
) -> tuple[DatabaseBackupSpec, list[FieldError]]:
    """`spec` with its bucket storage resolved, and every rule a backup or check Job of it would break now."""
    errors = host_refusals(spec.connection.host, "spec.connection.host", facts)
    if spec.s3_store is None:
        claim = spec.claim_name or default_claim_name(spec.database_name)
        refused = claim_refusal(claim, facts.statefulsets)
        if refused is not None:
            errors.append(FieldError("spec.storage.persistentVolumeClaim.claimName", refused))
    if spec.verify_image is not None:  # judged whether or not a restore test uses it now, as the webhook does
        refused = image_refusal(spec.verify_image, statefulset, facts.annotations)
        if refused is not None:
            errors.append(FieldError("spec.verify.image", refused))
    s3, refusals = storage_refusals(spec.s3_store, spec.database_name, facts)
    return replace(spec, s3=s3), errors + refusals
