"""docs/security.md names, for each guarantee, the test that proves it: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
# `tests/x/test_y.py` or `tests/x/test_y.py::test_z`, and a bare `::test_z` meaning the file named just before it.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(test_\w+))?`")


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_security_page_names_exists() -> None:
    named: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in REFERENCE.finditer(DOC.read_text()):
        path, test = match.groups()
        if path is None and test is None:
            continue
        current = path or current
        assert current is not None, f"{match.group(0)} names a test before any file"
        named.append((current, test))
    assert len(named) > 30
    for path, test in named:
        file = ROOT / path
        assert file.is_file(), f"docs/security.md names {path}, which does not exist"
        if test is not None:
            assert test in defined_tests(file), f"docs/security.md names {path}::{test}, which does not exist"
