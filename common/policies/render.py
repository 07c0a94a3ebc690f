"""The DatabaseBackup a policy keeps for one database StatefulSet: its name, its labels (which mark it as the
policy's), and a digest of what the policy wrote, so that a changed template is written again and nothing else is.

The webhook defaults a policy's DatabaseBackup as it does any other (engine, connection, storage from the
StatefulSet), so the stored spec holds more than the template: the digest, not the spec, says whether it is current.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from common.constants import API_VERSION, GROUP, KIND, LABEL_MANAGED_BY, MANAGED_BY
from common.names import MAX_NAME_LENGTH
from common.policies.model import POLICY_KIND, PolicySpec

__all__ = ["ANNOTATION_TEMPLATE", "LABEL_POLICY", "backup_name", "made_by", "render"]

# On every DatabaseBackup a policy made: the policy's name. A DatabaseBackup without it was written by hand.
LABEL_POLICY: Final = f"{GROUP}/policy"
ANNOTATION_TEMPLATE: Final = f"{GROUP}/policy-template"  # the digest of what the policy last wrote


def backup_name(statefulset: str, policy: str) -> str:
    """`<statefulset>-<policy>`, shortened with a digest of both when that is longer than a DatabaseBackup name may
    be; the same for the same pair, always."""
    name = f"{statefulset}-{policy}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(f"{statefulset}/{policy}".encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME_LENGTH - 9].rstrip('-.')}-{digest}"


def made_by(backup: Mapping[str, Any]) -> str | None:
    """The policy that made this DatabaseBackup; None for one written by hand."""
    labels = (backup.get("metadata") or {}).get("labels") or {}
    policy = labels.get(LABEL_POLICY)
    return policy if isinstance(policy, str) and policy else None


def digest(spec: PolicySpec) -> str:
    rendered = {"spec": spec.template, "labels": spec.labels, "annotations": spec.annotations}
    return hashlib.sha256(json.dumps(rendered, sort_keys=True).encode()).hexdigest()[:16]


def render(
    policy: Mapping[str, Any], spec: PolicySpec, namespace: str, statefulset: str, template: str | None = None
) -> dict[str, Any]:
    """The DatabaseBackup `policy` keeps for `statefulset` in `namespace`: the template's spec with its databaseName,
    owned by the policy (so the garbage collector removes it with the policy; its stored backups stay). `template`:
    `digest(spec)`, when the caller has it already."""
    metadata = policy.get("metadata") or {}
    name = str(metadata.get("name") or "")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": backup_name(statefulset, name),
            "namespace": namespace,
            "labels": {**spec.labels, LABEL_POLICY: name, LABEL_MANAGED_BY: MANAGED_BY},
            "annotations": {**spec.annotations, ANNOTATION_TEMPLATE: template or digest(spec)},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": POLICY_KIND,
                    "name": name,
                    "uid": str(metadata.get("uid") or ""),
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {**(spec.template or {}), "databaseName": statefulset},
    }
