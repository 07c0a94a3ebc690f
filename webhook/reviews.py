"""The AdmissionReview wire format (admission.k8s.io/v1), typed, and what every endpoint answers alike."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any, Literal, NotRequired, TypedDict

from common.constants import GROUP

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    namespace: NotRequired[str]
    name: NotRequired[str]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]


class Status(TypedDict):
    code: int
    reason: NotRequired[str]
    message: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponse


def unjudgeable(request: AdmissionRequest, kind: str, operations: Collection[str]) -> str | None:
    """Why this request is not one an endpoint for `kind` can judge (another kind, no object on one of
    `operations`), or None."""
    requested = request.get("kind")
    if not isinstance(requested, Mapping) or requested.get("group") != GROUP or requested.get("kind") != kind:
        shown = (
            f"{requested.get('group')}/{requested.get('kind')}"
            if isinstance(requested, Mapping)
            else json.dumps(requested)
        )
        return f"this webhook admits {GROUP} {kind} objects, not {shown}; check the webhook configuration's rules"
    if request.get("operation") in operations and not isinstance(request.get("object"), Mapping):
        return f"request.object: must be an object (the {kind})"
    return None


def denied(uid: str, message: str) -> AdmissionResponse:
    """A refusal `kubectl apply` prints as `admission webhook ... denied the request: <message>`."""
    return {"uid": uid, "allowed": False, "status": {"code": 422, "reason": "Invalid", "message": message}}
