"""Which PersistentVolumeClaims hold a database's own data, as pure functions of its StatefulSet and Pods.

A backup Job mounts `spec.storage.persistentVolumeClaim.claimName` read-write and writes into it. If that claim is
the database's data volume, a backup writes into the live data directory, and retention deletes files there. A
claim is the database's own when:
- the StatefulSet's `volumeClaimTemplates` make it: the controller names each Pod's claim
  `<template>-<statefulset>-<ordinal>`. Every ordinal counts, not only those below `replicas`: a scale-down keeps
  the claims of the removed Pods, with their data;
- the StatefulSet's Pod template mounts it by name (one claim shared by every Pod);
- a Pod of the StatefulSet mounts it: during a rolling update older Pods may still mount what the template no
  longer names. Those Pods are read by the caller (`webhook.lookup`), within the admission request's deadline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["data_claim_reason", "label_selector", "mounting_pod", "owned_by", "pod_claims"]


def data_claim_reason(statefulset: Mapping[str, Any], claim: str) -> str | None:
    """Why `claim` is the data of this StatefulSet (from its spec alone), or None."""
    name = str((statefulset.get("metadata") or {}).get("name") or "")
    spec = statefulset.get("spec") or {}
    for template in spec.get("volumeClaimTemplates") or []:
        prefix = str((template.get("metadata") or {}).get("name") or "")
        if prefix and re.fullmatch(rf"{re.escape(prefix)}-{re.escape(name)}-\d+", claim):
            return f'a data volume of StatefulSet "{name}" (its volumeClaimTemplate "{prefix}")'
    if claim in _claims(((spec.get("template") or {}).get("spec") or {}).get("volumes")):
        return f'mounted by every Pod of StatefulSet "{name}" (its Pod template)'
    return None


def mounting_pod(pods: Mapping[str, Iterable[str]], claim: str) -> str | None:
    """The first Pod (by name) that mounts `claim`, given each Pod's claims."""
    return next((pod for pod in sorted(pods) if claim in set(pods[pod])), None)


def pod_claims(pod: Mapping[str, Any]) -> tuple[str, ...]:
    return _claims((pod.get("spec") or {}).get("volumes"))


def owned_by(pod: Mapping[str, Any], statefulset: Mapping[str, Any]) -> bool:
    """Whether the StatefulSet controls this Pod: a selector may match other Pods too."""
    metadata = statefulset.get("metadata") or {}
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "StatefulSet" and owner.get("name") == metadata.get("name"):
            return metadata.get("uid") is None or owner.get("uid") == metadata.get("uid")
    return False


def label_selector(statefulset: Mapping[str, Any]) -> str | None:
    """The StatefulSet's `spec.selector` in the list API's syntax, or None if it selects nothing we can express."""
    selector = (statefulset.get("spec") or {}).get("selector") or {}
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            terms.append(str(key))
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            return None
    return ",".join(terms) or None


def _claims(volumes: Any) -> tuple[str, ...]:
    found = []
    for volume in volumes or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName") if isinstance(volume, Mapping) else None
        if isinstance(claim, str) and claim:
            found.append(claim)
    return tuple(found)
