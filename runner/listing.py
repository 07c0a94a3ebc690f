"""`dbb-backup list FOLDER | s3://BUCKET/PREFIX`: the backups there, as their manifests describe them.

A backup is listed from its manifest (`<file>.json`): its kind (`dump`, or `basebackup`: a PostgreSQL base backup,
see `basebackup`), time, size, owner and whether it verified, and whether the file itself is there. A file without a
manifest is an unfinished run and no backup, so it is not listed. A base backup is listed as verified (it is
published only once whole and hashed) and with its `end`, the first instant a point-in-time restore from it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from runner.basebackup import BaseManifest
from runner.errors import Reason, RunnerError
from runner.manifest import ENCRYPTION_NONE, Manifest
from runner.naming import MANIFEST_SUFFIX
from runner.objectstore import S3Location, list_keys
from runner.retention import Policy, plan

__all__ = [
    "Found",
    "entry",
    "everything_in_folder",
    "everything_in_s3",
    "kept_by",
    "list_folder",
    "list_s3",
    "manifests_in_folder",
    "manifests_in_s3",
]

log = structlog.get_logger("dbb-backup")


def entry(
    manifest: Manifest | BaseManifest, where: str, present: bool, kept: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """`kept`: with a retention policy, the rules that keep it (empty: the next run deletes it)."""
    owner = manifest.owner
    base = isinstance(manifest, BaseManifest)
    listed = {
        "kind": "basebackup" if base else "dump",
        "file": where,
        "time": manifest.start,
        "size": manifest.size,
        "sha256": manifest.sha256,
        "databases": manifest.databases if isinstance(manifest, Manifest) else [],  # a base backup: all of them
        "owner": f"{owner.namespace}/{owner.name}" if owner else None,
        "verified": manifest.verified if isinstance(manifest, Manifest) else True,
        "present": present,
        "encrypted": manifest.encryption != ENCRYPTION_NONE,
    }
    if isinstance(manifest, BaseManifest):
        listed["end"] = manifest.end
    if manifest.key_id is not None:
        listed["keyId"] = manifest.key_id
    if kept is not None:
        listed["keptBy"] = list(kept)
    return listed


def kept_by(found: list[Found], policy: Policy, owner_uid: str, now: datetime) -> dict[str, tuple[str, ...]]:
    """{where: the rules of `policy` that keep it} for each backup of the owner `owner_uid`, as the owner's next
    run would decide (runner.retention); other owners' backups are not marked."""
    marks: dict[str, tuple[str, ...]] = {}
    by_prefix: dict[str, list[Found]] = {}
    for item in found:
        owner = item.manifest.owner
        if owner is not None and owner.uid == owner_uid and item.present and "-" in item.manifest.file:
            by_prefix.setdefault(item.manifest.file.rsplit("-", 1)[0], []).append(item)
    for prefix, items in by_prefix.items():
        ours = {i.manifest.file: i.manifest.verified for i in items}
        decided = plan(list(ours), prefix, policy, ours, now=now)
        for item in items:
            marks[item.where] = decided.kept.get(item.manifest.file, ())
    return marks


@dataclass(frozen=True)
class Found:
    """A backup as its manifest describes it: where it is (a path, or an s3:// URL) and whether it is still there."""

    manifest: Manifest
    where: str
    present: bool


def list_folder(folder: Path) -> list[dict[str, Any]]:
    return [entry(f.manifest, f.where, f.present) for f in manifests_in_folder(folder)]


def list_s3(client: Any, location: S3Location) -> list[dict[str, Any]]:
    return [entry(f.manifest, f.where, f.present) for f in manifests_in_s3(client, location)]


Base = tuple[BaseManifest, str, bool]  # a base backup's manifest, where it is, whether it is there


def manifests_in_folder(folder: Path) -> list[Found]:
    """Every backup with a manifest in `folder`, oldest first."""
    return _split(_in_folder(folder))[0]


def manifests_in_s3(client: Any, location: S3Location) -> list[Found]:
    """Every backup with a manifest under the prefix, oldest first."""
    return _split(_in_s3(client, location))[0]


def everything_in_folder(folder: Path) -> tuple[list[Found], list[Base]]:
    """The dumps and the base backups in `folder`, each oldest first."""
    return _split(_in_folder(folder))


def everything_in_s3(client: Any, location: S3Location) -> tuple[list[Found], list[Base]]:
    """The dumps and the base backups under the prefix, each oldest first."""
    return _split(_in_s3(client, location))


_Read = tuple[Manifest | BaseManifest, str, bool]


def _split(found: list[_Read]) -> tuple[list[Found], list[Base]]:
    ordered = sorted(found, key=lambda f: f[0].start)
    dumps = [Found(m, where, present) for m, where, present in ordered if isinstance(m, Manifest)]
    bases = [(m, where, present) for m, where, present in ordered if isinstance(m, BaseManifest)]
    return dumps, bases


def _parse(text: str) -> Manifest | BaseManifest:
    """A dump's manifest, or a base backup's; ValueError for anything else."""
    try:
        return Manifest.from_json(text)
    except ValueError:
        pass
    try:
        return BaseManifest.from_json(text)
    except (KeyError, TypeError) as error:
        raise ValueError(str(error)) from None


def _in_folder(folder: Path) -> list[_Read]:
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError as error:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"cannot list {folder}: {error.strerror}") from None
    found: list[_Read] = []
    for name in sorted(names):
        if not name.endswith(MANIFEST_SUFFIX) or name.startswith("."):
            continue
        try:
            manifest = _parse((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not one of ours
        found.append((manifest, str(folder / manifest.file), manifest.file in names))
    return found


def _in_s3(client: Any, location: S3Location) -> list[_Read]:
    keys = set(list_keys(client, location.bucket, location.key("")))
    found: list[_Read] = []
    for key in sorted(k for k in keys if k.endswith(MANIFEST_SUFFIX)):
        try:
            body = client.get_object(Bucket=location.bucket, Key=key)["Body"].read()
            manifest = _parse(body.decode("utf-8"))
        except Exception as error:  # unreadable: not one of ours, or gone meanwhile
            log.warning("manifest skipped", key=key, error=type(error).__name__)
            continue
        backup = key.removesuffix(MANIFEST_SUFFIX)
        present = backup in keys or any(k.startswith(backup + "/") for k in keys)  # a file, or a set's members
        found.append((manifest, f"s3://{location.bucket}/{backup}", present))
    return found
