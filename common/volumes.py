"""Which PersistentVolumeClaims hold a database's own data, as pure functions of the namespace's StatefulSets and
their Pods.

A backup Job mounts `spec.storage.persistentVolumeClaim.claimName` read-write and writes into it. If that claim is
the data volume of a database, a backup writes into the live data directory, and retention deletes files there. So
the claim must not be the data of any StatefulSet of the namespace (not only the one backed up: a second database
beside it is as much at risk). A claim is a StatefulSet's data when:
- its `volumeClaimTemplates` make it: the controller names each Pod's claim `<template>-<statefulset>-<ordinal>`.
  Every ordinal counts, not only those below `replicas`: a scale-down keeps the claims of the removed Pods, with
  their data;
- its Pod template mounts it by name (one claim shared by every Pod);
- a Pod of it mounts it: during a rolling update older Pods may still mount what the template no longer names.
The webhook judges this at apply time, and the reconciler again before every Job (from its caches, by the
StatefulSets' specs), because a StatefulSet created after the DatabaseBackup changes the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["claim_refusal", "data_claim_reason", "pod_claims"]


def claim_refusal(
    claim: str, statefulsets: Iterable[Mapping[str, Any]], pods: Mapping[str, Iterable[str]] | None = None
) -> str | None:
    """Why `claim` may not be a backup volume, or None. `statefulsets`: every StatefulSet of the namespace; `pods`:
    the claims each StatefulSet Pod of the namespace mounts, by Pod name (None: not read)."""
    for statefulset in statefulsets:
        reason = data_claim_reason(statefulset, claim)
        if reason is not None:
            return f'"{claim}" is {reason}; backups need a claim of their own'
    for pod in sorted(pods or {}):
        if claim in set((pods or {})[pod]):
            return f'"{claim}" is mounted by Pod "{pod}" of a StatefulSet; backups need a claim of their own'
    return None


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


def pod_claims(pod: Mapping[str, Any]) -> tuple[str, ...]:
    return _claims((pod.get("spec") or {}).get("volumes"))


def _claims(volumes: Any) -> tuple[str, ...]:
    found = []
    for volume in volumes or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName") if isinstance(volume, Mapping) else None
        if isinstance(claim, str) and claim:
            found.append(claim)
    return tuple(found)
