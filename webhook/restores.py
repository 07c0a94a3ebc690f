"""Admission for DatabaseRestores, pure like `webhook.backups`: the caller looks up the source DatabaseBackup and
the target StatefulSet first (`Sources`), these functions judge (`common.restores.validation.judge`) and default.

Mutating fills in `spec.source.file` (the source's newest backup, so that the restore is pinned at apply time) and
`spec.target.databaseName` (the source's StatefulSet). Validating refuses, naming the field and the value, what
`judge` refuses. A lookup that the API server did not answer in time is a warning, not a refusal: the reconciler
judges again before it starts the Job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.backups.model import parse_spec
from common.constants import RESTORE_KIND
from common.fields import FieldError, join_errors
from common.hosts import HostFacts, host_refusal
from common.restores.defaults import restore_defaults
from common.restores.model import parse_restore_spec
from common.restores.validation import judge
from common.stores.access import resolve_store
from common.values import S3Storage
from webhook.patch import patched_spec
from webhook.reviews import AdmissionRequest, AdmissionResponse, StoreFacts, denied, unjudgeable

__all__ = ["EXTERNAL", "Sources", "external_host", "mutate_restore", "source_to_check", "validate_restore"]

EXTERNAL = ""  # source_to_check's target for `target.external`: no StatefulSet to look up


@dataclass(frozen=True)
class Sources:
    """What the caller found: the source DatabaseBackup, whether the target StatefulSet exists, the source's
    BackupStore (when it backs up to a bucket) and the external target's host (common.hosts)."""

    source: Mapping[str, Any] | None  # None: not found
    target_found: bool | None = None  # None: not looked up, or not answered
    error: str | None = None  # a lookup was not answered
    store: StoreFacts | None = None
    host: HostFacts | None = None


def external_host(request: AdmissionRequest) -> str | None:
    """`spec.target.external.host`, on a create."""
    if request.get("operation") != "CREATE":
        return None
    spec = (request.get("object") or {}).get("spec")
    target = spec.get("target") if isinstance(spec, Mapping) else None
    external = target.get("external") if isinstance(target, Mapping) else None
    host = external.get("host") if isinstance(external, Mapping) else None
    return host if isinstance(host, str) and host else None


def source_to_check(request: AdmissionRequest) -> tuple[str, str, str | None] | None:
    """(namespace, DatabaseBackup, target StatefulSet: None for the source's, EXTERNAL for none) on a create we can
    read; None otherwise. The spec is
    immutable (the CRD says so), so an update has nothing to judge but its metadata."""
    if request.get("operation") != "CREATE" or _problem(request) is not None:
        return None
    spec = (request.get("object") or {}).get("spec")
    source = spec.get("source") if isinstance(spec, Mapping) else None
    name = source.get("databaseBackup") if isinstance(source, Mapping) else None
    if not isinstance(name, str) or not name:
        return None
    assert isinstance(spec, Mapping)
    target = spec.get("target")
    target_name = target.get("databaseName") if isinstance(target, Mapping) else None
    if isinstance(target, Mapping) and "external" in target:
        target_name = EXTERNAL
    return str(request.get("namespace") or ""), name, target_name if isinstance(target_name, str) else None


def mutate_restore(request: AdmissionRequest, found: Sources | None) -> AdmissionResponse:
    uid = request["uid"]
    obj = request.get("object")
    if found is None or found.source is None or not isinstance(obj, Mapping):
        return {"uid": uid, "allowed": True}
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return {"uid": uid, "allowed": True}
    defaults = restore_defaults(spec, found.source)
    defaulted: dict[str, Any] = json.loads(json.dumps(spec))
    for key, values in defaults.items():
        part = defaulted.get(key)
        defaulted[key] = {**(part if isinstance(part, dict) else {}), **values}
    return patched_spec(uid, spec, defaulted)


def validate_restore(request: AdmissionRequest, found: Sources | None) -> AdmissionResponse:
    uid = request["uid"]
    problem = _problem(request)
    if problem is not None:
        return denied(uid, problem)
    if request.get("operation") != "CREATE":
        return {"uid": uid, "allowed": True}
    namespace = str(request.get("namespace") or "")
    spec, errors = parse_restore_spec((request.get("object") or {}).get("spec"))
    if found is not None and found.host is not None and (refused := host_refusal(found.host)) is not None:
        errors.append(FieldError("spec.target.external.host", refused))
    if spec is not None and found is not None and found.error is None:
        s3, refusals = _source_storage(found, namespace)
        errors += refusals or judge(spec, namespace, found.source, found.target_found, s3)
    if errors:
        return denied(uid, join_errors(errors))
    if found is not None and found.error is not None:
        return {"uid": uid, "allowed": True, "warnings": [f"could not check the source or target: {found.error}"]}
    return {"uid": uid, "allowed": True}


def _source_storage(found: Sources, namespace: str) -> tuple[S3Storage | None, list[FieldError]]:
    """The source's bucket storage through its BackupStore (None for a volume), or why it cannot be used."""
    source = found.source or {}
    spec, _ = parse_spec(source.get("spec"))
    if spec is None or spec.s3_store is None or found.store is None:
        return None, []
    where = "spec.source.databaseBackup"
    if found.store.error is not None:
        message = (
            f'could not read BackupStore "{found.store.name}": {found.store.error}; nothing was changed: try again'
        )
        return None, [FieldError(where, message)]
    s3, errors = resolve_store(
        spec.s3_store,
        namespace=namespace,
        namespace_labels=found.store.labels or {},
        database_name=spec.database_name,
        store=found.store.found,
        where=where,
    )
    return s3, [FieldError(e.path, f"its storage: {e.message}") for e in errors]


def _problem(request: AdmissionRequest) -> str | None:
    return unjudgeable(request, RESTORE_KIND, ("CREATE",))
