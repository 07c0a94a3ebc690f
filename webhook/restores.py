"""Admission for DatabaseRestores, pure like `webhook.admission`: the caller looks up the source DatabaseBackup and
the target StatefulSet first (`Sources`), these functions judge (`common.restores.judge`) and default.

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

from common.constants import RESTORE_KIND
from common.model import join_errors
from common.restores import judge, parse_restore_spec, restore_defaults
from webhook.patch import patched_spec
from webhook.reviews import AdmissionRequest, AdmissionResponse, denied, unjudgeable

__all__ = ["EXTERNAL", "Sources", "mutate_restore", "source_to_check", "validate_restore"]

EXTERNAL = ""  # source_to_check's target for `target.external`: no StatefulSet to look up


@dataclass(frozen=True)
class Sources:
    """What the caller found: the source DatabaseBackup and whether the target StatefulSet exists."""

    source: Mapping[str, Any] | None  # None: not found
    target_found: bool | None = None  # None: not looked up, or not answered
    error: str | None = None  # a lookup was not answered


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
    spec, errors = parse_restore_spec((request.get("object") or {}).get("spec"))
    if spec is not None and found is not None and found.error is None:
        errors += judge(spec, str(request.get("namespace") or ""), found.source, found.target_found)
    if errors:
        return denied(uid, join_errors(errors))
    if found is not None and found.error is not None:
        return {"uid": uid, "allowed": True, "warnings": [f"could not check the source or target: {found.error}"]}
    return {"uid": uid, "allowed": True}


def _problem(request: AdmissionRequest) -> str | None:
    return unjudgeable(request, RESTORE_KIND, ("CREATE",))
