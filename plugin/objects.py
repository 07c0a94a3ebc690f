"""What the commands write: the backup-now and verify-now annotations, and a DatabaseRestore. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from common.constants import API_VERSION, RESTORE_KIND
from common.values import database_name_problems

__all__ = [
    "RestoreRequest",
    "annotation_patch",
    "parse_duration",
    "parse_mapping",
    "parse_point_in_time",
    "request_value",
    "restore_object",
]

_DURATION: Final = re.compile(r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")


def request_value(now: datetime) -> str:
    """A new annotation value: the time, to the microsecond, so two requests never carry the same value (a value
    the operator has already acted on asks for nothing)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def annotation_patch(annotation: str, value: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {annotation: value}}}


def parse_duration(text: str) -> timedelta:
    """`--timeout`: `90s`, `10m`, `1h30m`, or plain seconds; ValueError otherwise."""
    if text.isdigit():
        return timedelta(seconds=int(text))
    found = _DURATION.fullmatch(text)
    if not text or found is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m or 1h30m")
    return timedelta(hours=int(found["h"] or 0), minutes=int(found["m"] or 0), seconds=int(found["s"] or 0))


def parse_mapping(text: str) -> tuple[str, str]:
    """`--database FROM=TO`; ValueError with what a database name may be."""
    source, equals, target = text.partition("=")
    if not equals:
        raise ValueError(f"{text!r} is not FROM=TO (a database of the backup, and the name to restore it under)")
    for name in (source, target):
        if any(database_name_problems("--database", name)):
            raise ValueError(f"{name!r} is not a database name (letters, digits, _, $ and -, at most 63)")
    return source, target


def parse_point_in_time(text: str) -> str:
    """`--at`: an RFC 3339 time with a zone (`2026-12-07T09:30:00Z`), as UTC; ValueError otherwise."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-12-07T09:30:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z for UTC, or an offset such as +01:00")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RestoreRequest:
    source: str  # the DatabaseBackup
    target: str  # the database StatefulSet restored into
    databases: tuple[tuple[str, str], ...] = ()
    replace: bool = False
    file: str | None = None
    point_in_time: str | None = None
    name: str | None = None  # default: one the API server makes up from the source's name


def restore_object(request: RestoreRequest) -> dict[str, Any]:
    """The DatabaseRestore for `request` (docs/api.md): source, target StatefulSet, database names, replace, file."""
    source: dict[str, Any] = {"databaseBackup": request.source}
    if request.file:
        source["file"] = request.file
    target: dict[str, Any] = {"databaseName": request.target}
    if request.databases:
        target["databases"] = [{"from": a, "to": b} for a, b in request.databases]
    spec: dict[str, Any] = {"source": source, "target": target}
    if request.replace:
        spec["replace"] = True
    if request.point_in_time:
        spec["pointInTime"] = request.point_in_time
    metadata = {"name": request.name} if request.name else {"generateName": f"{request.source[:50]}-"}
    return {"apiVersion": API_VERSION, "kind": RESTORE_KIND, "metadata": metadata, "spec": spec}
