"""`restore BASEBACKUP --point-in-time T --pick-base-backup` (PostgreSQL): which base backup the restore starts from.

BASEBACKUP names the newest base backup the operator knows of; a base backup restores only to instants after its
end (pgpitr step 1), so for an earlier T the restore starts from the newest base backup beside it that ended at or
before T: in the same folder or bucket prefix, with the same name prefix (`<name>-<UTC>.base.tar.zst[.enc]`,
naming.parse_base_name), and, with `--owner NAMESPACE/NAME`, that owner in its manifest (a DatabaseRestore restores
its own DatabaseBackup's backups only, see restore.refuse_foreign). BASEBACKUP itself need not exist any more
(retention may have deleted it since). When none qualifies the restore is refused before anything is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from runner.basebackup import BaseManifest
from runner.baseretention import BaseShelf, FolderShelf, S3Shelf
from runner.errors import Reason, RunnerError
from runner.naming import base_prefix, parse_base_name
from runner.objectstore import S3Location
from runner.s3backup import S3Settings, s3_client

__all__ = ["choose_base", "pick_base_backup"]


def _rfc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def choose_base(
    prefix: str, manifests: Mapping[str, BaseManifest | None], point: datetime, owner: tuple[str, str] | None
) -> str:
    """Of the base backups `manifests` ({file: its manifest, None if unreadable}), the newest that ended at or
    before `point` and is `owner`'s (when given); else a refusal that names the oldest candidate's end."""
    candidates = {
        file: manifest
        for file, manifest in manifests.items()
        if manifest is not None
        and manifest.file == file
        and (owner is None or (manifest.owner is not None and (manifest.owner.namespace, manifest.owner.name) == owner))
    }
    whose = f" of {'/'.join(owner)}" if owner else ""
    if not candidates:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--pick-base-backup: no base backup{whose} named {prefix}-*")
    ends = {file: datetime.fromisoformat(manifest.end) for file, manifest in candidates.items()}
    fit = [file for file, end in ends.items() if end <= point]
    if not fit:
        oldest = min(candidates, key=ends.__getitem__)
        raise RunnerError(
            Reason.INVALID_ARGUMENTS,
            f"--point-in-time {_rfc(point)} is before every base backup{whose} named {prefix}-* ended (the oldest, "
            f"{oldest}, ended {candidates[oldest].end}): choose a later time",
        )
    return max(fit, key=ends.__getitem__)


def pick_base_backup(file: str, point: datetime, owner: tuple[str, str] | None, path_style: bool) -> str:
    """The base backup (a path, or s3://BUCKET/KEY) a restore of `file` to `point` starts from (see above)."""
    shelf: BaseShelf
    where: Callable[[str], str]
    if file.startswith("s3://"):
        location = S3Location.parse(file)
        folder_key, _, name = location.prefix.rpartition("/")
        folder = S3Location(location.bucket, folder_key)
        shelf, where = S3Shelf(s3_client(S3Settings(path_style=path_style)), folder, {}), folder.url
    else:
        name, parent = Path(file).name, Path(file).parent
        shelf, where = FolderShelf(parent), lambda chosen: str(parent / chosen)
    prefix = base_prefix(name)
    if prefix is None:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"--pick-base-backup: {name} is not a base backup's name")
    names = [n for n in shelf.names(prefix) if parse_base_name(prefix, n) is not None]
    return where(choose_base(prefix, {n: shelf.manifest(n) for n in names}, point, owner))
