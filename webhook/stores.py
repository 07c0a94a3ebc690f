"""Admission for BackupStores (the cluster administrators' approved object storage, common.stores): pure, like
`webhook.backups`. A store that could never be used is refused at apply time, naming the field and the value,
rather than failing every DatabaseBackup that names it."""

from __future__ import annotations

from common.fields import join_errors
from common.stores.model import STORE_KIND, parse_store_spec
from common.stores.validation import store_problems
from webhook.reviews import AdmissionRequest, AdmissionResponse, denied, unjudgeable

__all__ = ["validate_store"]


def validate_store(request: AdmissionRequest) -> AdmissionResponse:
    uid = request["uid"]
    problem = unjudgeable(request, STORE_KIND, ("CREATE", "UPDATE"))
    if problem is not None:
        return denied(uid, problem)
    spec, errors = parse_store_spec((request.get("object") or {}).get("spec"))
    if spec is not None:
        errors += store_problems(spec)
    return denied(uid, join_errors(errors)) if errors else {"uid": uid, "allowed": True}
