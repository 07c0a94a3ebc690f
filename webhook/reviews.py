"""The AdmissionReview wire format (admission.k8s.io/v1), typed; reading one (`parse_review`, `BadReview`: the
body is no AdmissionReview we can answer, a 400) and what every endpoint answers alike; what the caller found out
about a BackupStore, which DatabaseBackups and DatabaseRestores both name."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, cast

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


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request we can answer."""


@dataclass(frozen=True)
class StoreFacts:
    """The BackupStore that `spec.storage.s3.store` names, and the labels of the namespace (its selector's input)."""

    name: str
    found: Mapping[str, Any] | None = None  # None: it does not exist
    labels: Mapping[str, str] | None = None
    error: str | None = None  # a lookup failed


def parse_review(body: object) -> AdmissionRequest:
    if not isinstance(body, Mapping):
        raise BadReview(f"the body must be a JSON object (an AdmissionReview), not {type(body).__name__}")
    if body.get("kind") != KIND:
        raise BadReview(f'kind must be "{KIND}", not {json.dumps(body.get("kind"))}')
    if body.get("apiVersion") != API_VERSION:
        raise BadReview(f'apiVersion must be "{API_VERSION}", not {json.dumps(body.get("apiVersion"))}')
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise BadReview("request must be an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid must be a non-empty string")
    return cast(AdmissionRequest, dict(request))


def review(response: AdmissionResponse) -> AdmissionReviewResponse:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}
