"""The record of a backup's restore drills: `<backup>.drills.jsonl` beside it, one JSON object per drill, oldest
first, at most MAX_DRILLS lines.

A check with `--restore-test` restores each backup it checks into its scratch server and compares what it finds;
what it found is appended here, so that an auditor can be shown, for each kept backup, every time it was restored
and checked, and how long that took. A DatabaseBackup's status keeps only the last few drills; this file keeps each
backup's own history and goes when retention deletes the backup.

Each line:
    {"time": when the drill ended (UTC), "backupTime", "file", "result": "Passed" | "Failed", "reason" and
     "message" (failed), "sha256", "restoreSeconds", "tables" (restored and counted), "rows": {database: {table:
     rows}} (each table's rows, found equal to the backup's), "queries" (compared, if any), "by": "dbb-backup check"}

The record is written whole each time: a file through a temporary file renamed over it in the same folder (a reader
sees the old record or the new one), an object by one PutObject. A line that is not a JSON object (a hand edit) is
dropped when the record is next written. A record that cannot be written is logged and changes no verdict: the
drill happened, and the check's result says so.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Final

import structlog

from runner.errors import RunnerError
from runner.naming import DRILLS_SUFFIX
from runner.objectstore import error_code, storage_error

__all__ = ["MAX_DRILLS", "appended", "parse", "record_drill"]

log = structlog.get_logger("dbb-backup")

MAX_DRILLS: Final = 100  # a weekly drill for two years, a daily one for three months
MAX_RECORD: Final = 16 << 20  # a record larger than this is not ours to read whole: it is started again


def parse(text: str) -> list[dict[str, Any]]:
    """The drills in a record, oldest first; lines that are not JSON objects are left out."""
    drills = []
    for line in text.splitlines():
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            drills.append(found)
    return drills


def appended(text: str, drill: dict[str, Any]) -> bytes:
    """The record `text` with `drill` added at its end, the oldest dropped beyond MAX_DRILLS."""
    drills = [*parse(text), drill][-MAX_DRILLS:]
    return "".join(json.dumps(d, separators=(",", ":"), sort_keys=True) + "\n" for d in drills).encode()


def record_drill(
    where: str, drill: dict[str, Any], client: Any = None, object_arguments: dict[str, str] | None = None
) -> bool:
    """Appends `drill` to the record beside the backup `where` (a path, or s3://bucket/key with `client`); whether it
    was written."""
    try:
        if where.startswith("s3://"):
            bucket, _, key = where.removeprefix("s3://").partition("/")
            _append_object(client, bucket, key + DRILLS_SUFFIX, drill, object_arguments or {})
        else:
            _append_file(Path(where + DRILLS_SUFFIX), drill)
    except (OSError, RunnerError) as error:
        problem = error.strerror if isinstance(error, OSError) else error.message
        log.warning("the restore drill was not recorded", file=where, problem=problem)
        return False
    return True


def _append_file(path: Path, drill: dict[str, Any]) -> None:
    try:
        text = path.read_text(errors="replace") if path.stat().st_size <= MAX_RECORD else ""
    except FileNotFoundError:
        text = ""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with temporary.open("xb") as out:
            out.write(appended(text, drill))
            out.flush()
            os.fsync(out.fileno())
        temporary.rename(path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _append_object(client: Any, bucket: str, key: str, drill: dict[str, Any], arguments: dict[str, str]) -> None:
    where = f"s3://{bucket}/{key}"
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
        text = answer["Body"].read(MAX_RECORD + 1).decode("utf-8", errors="replace")
        text = text if len(text) <= MAX_RECORD else ""
    except Exception as error:
        if error_code(error) not in ("NoSuchKey", "404"):
            raise storage_error(error, where) from None
        text = ""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=appended(text, drill), **arguments)
    except Exception as error:
        raise storage_error(error, where) from None
