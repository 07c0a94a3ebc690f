"""The cluster's cgroups: one subtree, `/dbb-cluster`, in every cgroup v1 hierarchy. The daemons start in
`system/` (containerd's shims inherit it), kubelet puts every Pod under `kubepods/` (its cgroupRoot). Stopping the
cluster is then exact: every process in the subtree is ours, and nothing outside it is."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from hack.cluster import config

CGROUP_FS = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """The mounted v1 hierarchies (cpu, memory, pids, ...); the unified v2 mount of a hybrid host is left alone."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup":
            found.append(Path(fields[1]))
    return sorted(found)


def root(hierarchy: Path) -> Path:
    return hierarchy / config.CGROUP_ROOT


def _inherit_cpuset(folder: Path) -> None:
    # A new cpuset cgroup starts with no CPUs and no memory nodes, and refuses every process until it has some.
    for name in ("cpuset.cpus", "cpuset.mems"):
        target = folder / name
        if target.exists() and not target.read_text().strip():
            target.write_text((folder.parent / name).read_text())


def create() -> None:
    for hierarchy in hierarchies():
        for folder in (root(hierarchy), root(hierarchy) / "system"):
            folder.mkdir(exist_ok=True)
            _inherit_cpuset(folder)


def join_system(pid: int | None = None) -> None:
    """Move a process (default: the caller) into `/dbb-cluster/system` of every hierarchy; its children follow."""
    pid = pid or os.getpid()
    for hierarchy in hierarchies():
        (root(hierarchy) / "system" / "cgroup.procs").write_text(f"{pid}\n")


def _walk(folder: Path) -> Iterator[Path]:
    """Every cgroup folder below `folder`, deepest first (the order rmdir needs)."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir():
            yield from _walk(child)
    yield folder


def pids() -> set[int]:
    found: set[int] = set()
    for hierarchy in hierarchies():
        for folder in _walk(root(hierarchy)):
            with contextlib.suppress(OSError):
                found.update(int(line) for line in (folder / "cgroup.procs").read_text().split())
    return found


def remove() -> list[str]:
    """rmdir the subtree in every hierarchy; returns what could not be removed (still holding a process)."""
    left = []
    for hierarchy in hierarchies():
        for folder in _walk(root(hierarchy)):
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError as error:
                left.append(f"{folder}: {error.strerror}")
    return left
