"""Thin helpers around kubernetes-asyncio: the one module that knows its quirks.

- A dict body makes PATCH default to JSON Patch; custom objects and their status want a merge patch. The generated
  stubs omit `_content_type`, so it travels as `**MERGE_PATCH`.
- Since kubernetes-asyncio 32 no request has a timeout unless given one: pass `**timeout(...)` to every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MERGE_PATCH", "timeout"]

MERGE_PATCH: Final[Mapping[str, Any]] = {"_content_type": "application/merge-patch+json"}


def timeout(connect: float = 5.0, read: float = 30.0) -> dict[str, Any]:
    """Keyword arguments that bound one API request: (connect, read) seconds."""
    return {"_request_timeout": (connect, read)}
