"""What admission fills in on a DatabaseRestore, from its source DatabaseBackup."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.restores.model import archives_wal, backup_before, newest_backup, object_or_empty
from common.schedule import parse_time, rfc3339

__all__ = ["restore_defaults"]


def restore_defaults(raw_spec: Mapping[str, Any], source: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields admission fills in: `source.file` (the newest backup; with `pointInTime`, the newest taken at or
    before it, except for PostgreSQL WAL, whose base backup the runner picks) and `target.databaseName` (the
    source's)."""
    defaults: dict[str, Any] = {}
    if source is None:
        return defaults
    given_source, given_target = (object_or_empty(raw_spec.get(key)) for key in ("source", "target"))
    moment = parse_time(raw_spec.get("pointInTime"))
    chosen = backup_before(source, rfc3339(moment)) if moment is not None else newest_backup(source)
    if moment is not None and archives_wal(source):
        chosen = None  # the runner picks the base backup that ended last before the point: later ones end after it
    if not given_source.get("file") and chosen is not None:
        defaults["source"] = {"file": chosen}
    database = (source.get("spec") or {}).get("databaseName")
    external = "external" in given_target
    if not external and not given_target.get("databaseName") and isinstance(database, str) and database:
        defaults["target"] = {"databaseName": database}
    return defaults
