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


def write_section(
    name: str, body: str, path: Path = RESULTS, measured: str | None = None, part_of: str | None = None
) -> None:
    """`measured`: the revision the figures came from, read when the benchmark started (the tree may change while
    it runs); read now when not given. `part_of`: the section this one is a part of, inside it at its end and
    without a heading of its own (a benchmark that adds to another's, measured apart from it)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    stamped = f"_Measured {stamp} on {machine()}, {measured or revision()}._"
    text = path.read_text() if path.exists() else HEADER
    if part_of is None:
        old = _block(name).search(text)
        # The parts measured apart stay as they were: rerunning this benchmark does not rerun them.
        inside = old.group(0).removeprefix(f"<!-- bench:{name} -->") if old else ""
        parts = [m.group(0) for m in _PART.finditer(inside)]
        section = "\n\n".join([f"<!-- bench:{name} -->\n## {name}\n\n{stamped}\n\n{body.strip()}", *parts])
        text = _put(text, name, f"{section}\n<!-- /bench:{name} -->", None)
    else:
        text = _put(text, name, f"<!-- bench:{name} -->\n{stamped}\n\n{body.strip()}\n<!-- /bench:{name} -->", part_of)
    path.write_text(text)


_PART = re.compile(r"<!-- bench:([\w-]+) -->.*?<!-- /bench:\1 -->", re.DOTALL)


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.DOTALL)


def _put(text: str, name: str, block: str, part_of: str | None) -> str:
    """`block` in place of the one named `name`; else at the end of section `part_of` (made if missing), or of
    the file."""
    if _block(name).search(text):
        return _block(name).sub(lambda _: block, text)
    if part_of is None:
        return f"{text.rstrip()}\n\n{block}\n"
    end = f"<!-- /bench:{part_of} -->"
    if end not in text:
        return f"{text.rstrip()}\n\n<!-- bench:{part_of} -->\n## {part_of}\n\n{block}\n{end}\n"
    head, _, tail = text.partition(end)
    return f"{head.rstrip()}\n\n{block}\n{end}{tail}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
