"""The run's result as one JSON line: printed on stdout and written to the termination log, where the reconciler
reads it from the Pod's termination message (Kubernetes keeps at most 4096 bytes of it).

Success: {"status": "Succeeded", "file", "size", "sha256", "databases", "serverVersion", "engine", "compression",
"encryption", "start", "end", "duration", "verified"}. Failure: {"status": "Failed", "reason", "message", "start",
"end", "duration"}. Keys are camelCase, as in the DatabaseBackup status they feed.

`backups` (a run's success): the owner's stored backups after its retention, newest first, each `[file name, size,
key id or "", [rules that keep it]]` (the name holds the backup's time), from which the reconciler records
`status.backups`.

Fitting into 4096 bytes: the oldest of `backups` are left out first (`backupsOmitted` counts them), a long database
list is cut (the manifest has it whole) and `databasesOmitted` counts what
was left out; a long message is cut in the middle, keeping its start (what failed) and its end (the tool's last
words).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from runner.errors import RunnerError
from runner.manifest import Manifest
from runner.naming import MANIFEST_SUFFIX
from runner.retention import Plan

__all__ = ["MAX_BYTES", "failure_result", "render", "success_result", "write_termination_log"]

MAX_BYTES: Final = 4096


def success_result(
    path: Path | str,
    manifest: Manifest,
    *,
    verified: bool,
    retention: Plan | None = None,
    catalog: Sequence[tuple[str, int, str | None, tuple[str, ...]]] = (),
) -> dict[str, Any]:
    """`path`: the file, or the object's s3:// URL; `retention`: what the run's retention kept and deleted;
    `catalog`: the owner's stored backups after it, newest first (`Plan.catalog`)."""
    result = {
        "status": "Succeeded",
        "file": str(path),
        "size": manifest.size,
        "sha256": manifest.sha256,
        "databases": manifest.databases,
        "serverVersion": manifest.server_version,
        "engine": manifest.engine,
        "compression": manifest.compression,
        "encryption": manifest.encryption,
        "start": manifest.start,
        "end": manifest.end,
        "duration": manifest.duration,
        "verified": verified,
    }
    if manifest.key_id is not None:
        result["keyId"] = manifest.key_id
    if catalog:
        # Compact, to fit beside the rest: [file name, size, key id or "", rules] each (the name holds its time);
        # `render` drops the oldest.
        result["backups"] = [[file, size, key or "", list(rules)] for file, size, key, rules in catalog]
    if retention is not None:
        deleted = [name for name in retention.delete if not name.endswith(MANIFEST_SUFFIX)]
        result["retention"] = {
            "kept": len(retention.kept),
            "keptBytes": retention.kept_bytes,
            "deleted": len(deleted),
            "byRule": retention.counts(),
        }
    return result


def failure_result(error: RunnerError, start: str, end: str, duration: float) -> dict[str, Any]:
    return {
        "status": "Failed",
        "reason": error.reason,
        "message": error.message,
        "start": start,
        "end": end,
        "duration": round(duration, 3),
    }


def _encode(result: dict[str, Any]) -> bytes:
    return json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def render(result: dict[str, Any], limit: int = MAX_BYTES) -> str:
    """The result as one line (with its newline) of at most `limit` bytes."""
    result = dict(result)
    data = _encode(result)
    databases = list(result.get("databases", []))
    keep = len(databases)
    while len(data) > limit and keep > 0:
        keep //= 2  # a few rounds even for thousands of names
        result["databases"] = databases[:keep]
        result["databasesOmitted"] = len(databases) - keep
        data = _encode(result)
    stored = list(result.get("backups", []))
    keep = len(stored)
    while len(data) > limit and keep > 0:
        keep = keep * 3 // 4  # the newest stay
        result["backups"] = stored[:keep]
        result["backupsOmitted"] = len(stored) - keep
        data = _encode(result)
    message = str(result.get("message", ""))
    while len(data) > limit and len(message) > 40:
        keep = max(len(message) - (len(data) - limit) - 8, 20)
        message = message[: keep // 2] + " … " + message[-(keep - keep // 2) :]
        result["message"] = message
        data = _encode(result)
    if len(data) > limit:
        # Only an absurdly long path or name gets here; the status and reason still reach the reconciler.
        small: dict[str, Any] = {k: result[k] for k in ("status", "reason", "size", "sha256") if k in result}
        data = _encode({**small, "truncated": True})
    return data.decode()


def write_termination_log(path: Path | None, line: str) -> None:
    if path is None:
        return
    # The result is on stdout too; a missing termination-log mount must not fail a good backup.
    with contextlib.suppress(OSError):
        path.write_text(line, encoding="utf-8")
