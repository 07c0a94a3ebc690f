"""RFC 6902 JSON Patch between two JSON documents: the smallest set of add/replace/remove operations."""

from __future__ import annotations

from typing import Any

__all__ = ["json_patch"]


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
