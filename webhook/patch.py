"""RFC 6902 JSON Patch between two JSON documents: the smallest set of add/replace/remove operations."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from webhook.reviews import AdmissionResponse

__all__ = ["json_patch", "patched_spec"]


def patched_spec(uid: str, spec: Mapping[str, Any], defaulted: Mapping[str, Any]) -> AdmissionResponse:
    """An admission that turns `spec` into `defaulted` with a JSONPatch (none when they are equal)."""
    operations = json_patch(dict(spec), dict(defaulted), "/spec")
    if not operations:
        return {"uid": uid, "allowed": True}
    return {
        "uid": uid,
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": base64.b64encode(json.dumps(operations).encode()).decode(),
    }


def json_patch(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        operations: list[dict[str, Any]] = []
        for key, value in after.items():
            child = f"{path}/{_escape(key)}"
            if key not in before:
                operations.append({"op": "add", "path": child, "value": value})
            else:
                operations += json_patch(before[key], value, child)
        operations += [{"op": "remove", "path": f"{path}/{_escape(k)}"} for k in before if k not in after]
        return operations
    # Lists are replaced whole: element-wise patches of lists that changed length are fragile.
    if before != after or type(before) is not type(after):
        return [{"op": "replace", "path": path, "value": after}]
    return []


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
