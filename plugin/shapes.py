"""Reading status as the API server returns it: loose JSON, where any field may be absent or of another shape
(an older operator, a hand edit). Each reader gives an empty value rather than raising."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.schedule import parse_time

__all__ = ["items", "one_line", "parse_time", "part", "text"]


def part(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    found = obj.get(key)
    return found if isinstance(found, Mapping) else {}


def items(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def one_line(value: object) -> str:
    return " ".join(str(value or "").split())
