"""RESULTS.md, one section per benchmark, each replaced in place when its benchmark runs again."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = RESULTS.parents[2]
HEADER = "# Benchmark results\n\nWritten by `make bench`; each section by its own benchmark module in `tests/bench/`.\n"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def revision(repo: Path = REPO) -> str:
    """The commit measured, and whether the tree differed from it: a figure from a dirty tree measured code that
    no commit holds. RESULTS.md itself does not count (every run rewrites it)."""
    head = _git(repo, "rev-parse", "--short", "HEAD")
    if head is None:
        return "no git commit (not a checkout)"
    changes = _git(repo, "status", "--porcelain", "--", ".", f":!{RESULTS.relative_to(repo)}")
    if changes is None:
        return f"commit {head} (tree state unknown)"
    if not changes:
        return f"commit {head}, clean tree"
    return f"commit {head}, tree dirty ({len(changes.splitlines())} files changed or untracked)"


def _git(repo: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def write_section(name: str, body: str, path: Path = RESULTS, measured: str | None = None) -> None:
    """`measured`: the revision the figures came from, read when the benchmark started (the tree may change while
    it runs); read now when not given."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{name} -->\n## {name}\n\n_Measured {stamp} on {machine()}, {measured or revision()}._\n\n"
        f"{body.strip()}\n<!-- /bench:{name} -->"
    )
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.DOTALL)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text.rstrip()}\n\n{section}\n"
    path.write_text(text)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
