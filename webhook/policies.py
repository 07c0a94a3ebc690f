"""Admission for DatabaseBackupPolicies (common.policies): pure, like `webhook.stores`. The template is judged as a
DatabaseBackup's spec would be, so a policy that could only make DatabaseBackups the webhook refuses is refused
itself, naming the field under spec.template.spec and the value."""

from __future__ import annotations

from common.constants import POLICY_KIND
from common.fields import join_errors
from common.policies.model import parse_policy_spec
from webhook.reviews import AdmissionRequest, AdmissionResponse, denied, unjudgeable

__all__ = ["validate_policy"]


def validate_policy(request: AdmissionRequest) -> AdmissionResponse:
    uid = request["uid"]
    problem = unjudgeable(request, POLICY_KIND, ("CREATE", "UPDATE"))
    if problem is not None:
        return denied(uid, problem)
    _, errors = parse_policy_spec((request.get("object") or {}).get("spec"))
    return denied(uid, join_errors(errors)) if errors else {"uid": uid, "allowed": True}
