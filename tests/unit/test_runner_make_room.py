"""Making room before a dump: on a volume too full for another backup the size of this owner's newest verified one,
retention runs one backup early, and never deletes the newest. The volume is measured through make_room's
`free_bytes`, so these need no small filesystem (and no root to mount one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runner.backup import make_room
from runner.manifest import Owner
from runner.retention import Policy

OWNER = Owner(kind="DatabaseBackup", namespace="shop", name="nightly", uid="uid-nightly")
MAKE_ROOM = "old backup deleted to make room before the dump"


@dataclass
class Volume:
    """A volume of `capacity` bytes, as make_room measures it: what the files in the folder leave free."""

    capacity: int

    def __call__(self, folder: Path) -> int:
        return self.capacity - sum(p.stat().st_size for p in folder.iterdir())


def place_owned(folder: Path, day: int, size: int, *, uid: str = "uid-nightly") -> str:
    """A verified backup of the owner `uid`, `size` bytes, as an earlier run would have left it."""
    name = f"nightly-202001{day:02d}T000000Z.dump"
    (folder / name).write_bytes(b"\0" * size)
    manifest = {
        "formatVersion": 1, "file": name, "engine": "postgresql", "serverVersion": "17", "databases": ["x"],
        "globals": False, "layout": "custom", "size": size, "sha256": "0" * 64, "compression": "gzip",
        "encryption": "none", "tool": "pg_dump", "host": "db", "port": 5432, "user": "postgres",
        "start": "2020-01-01T00:00:00Z", "end": "2020-01-01T00:00:01Z", "duration": 1.0, "verified": True,
        "owner": {"kind": "DatabaseBackup", "namespace": "shop", "name": "nightly", "uid": uid},
    }  # fmt: skip
    (folder / (name + ".json")).write_text(json.dumps(manifest))
    return name


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def with_manifests(*backups: str) -> list[str]:
    return sorted(n for b in backups for n in (b, b + ".json"))


def test_a_volume_too_full_for_another_backup_makes_room_first_but_keeps_the_newest(tmp_path: Path) -> None:
    # 1 MiB: three 300 KiB backups leave less free than the newest one's size. keepLast 3: the oldest goes before
    # the dump instead of after it, and the new backup has room.
    volume = Volume(1 << 20)
    old = [place_owned(tmp_path, day, 300 << 10) for day in (1, 2, 3)]
    assert volume(tmp_path) < 300 << 10
    with capture_logs() as logs:
        removed = make_room(tmp_path, "nightly", Policy(keep_last=3), OWNER, free_bytes=volume)
    assert removed == with_manifests(old[0])
    assert [e["file"] for e in logs if e["event"] == MAKE_ROOM] == removed
    assert files(tmp_path) == with_manifests(*old[1:])
    assert volume(tmp_path) >= 300 << 10


def test_making_room_never_deletes_the_newest_verified_backup(tmp_path: Path) -> None:
    # The newest alone does not leave room for another of its size: it stays all the same (the dump then fails
    # with DiskFull, as tests/backup/test_failures.py shows for a full disk).
    newest = place_owned(tmp_path, 1, 600 << 10)
    with capture_logs() as logs:
        removed = make_room(tmp_path, "nightly", Policy(keep_last=2), OWNER, free_bytes=Volume(1 << 20))
    assert removed == []
    assert logs == []
    assert files(tmp_path) == with_manifests(newest)


def unmeasurable(folder: Path) -> int:
    raise PermissionError(13, "Permission denied", str(folder))


@pytest.mark.parametrize(
    ("free_bytes", "uid"),
    [
        pytest.param(lambda _: 300 << 10, "uid-nightly", id="room for the newest's size"),
        pytest.param(lambda _: 0, "uid-someone-else", id="only another owner's backups"),
        pytest.param(unmeasurable, "uid-nightly", id="a volume that cannot be measured"),
    ],
)
def test_nothing_goes_with_room_enough_nothing_of_ours_or_no_measure(
    tmp_path: Path, free_bytes: Callable[[Path], int], uid: str
) -> None:
    placed = [place_owned(tmp_path, day, 300 << 10, uid=uid) for day in (1, 2, 3)]
    assert make_room(tmp_path, "nightly", Policy(keep_last=3), OWNER, free_bytes=free_bytes) == []
    assert files(tmp_path) == with_manifests(*placed)
