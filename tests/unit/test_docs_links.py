"""The README and the pages in docs/ hold together: every relative link reaches a file of the repository, every
`#anchor` names a heading of the page it points to, and every `make TARGET` they tell a reader to run is a rule of
the Makefile. A page that moves, a heading that is renamed or a target that goes away fails here, not in a reader's
shell."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A fenced code block (``` or ~~~, indented when it sits in a list item), closed by the same fence.
FENCE = re.compile(
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[^\n]*\n(?P<body>.*?)^[ \t]*(?P=fence)[ \t]*$", re.MULTILINE | re.DOTALL
)
# An inline code span; it may run over a line break inside its paragraph.
SPAN = re.compile(r"(?P<ticks>`+)(?P<body>.+?)(?P=ticks)", re.DOTALL)
# [text](target) and ![alt](target), with an optional "title"; and [label]: target definitions.
INLINE_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]*)(?:\s+\"[^\"]*\")?\)")
LINK_DEFINITION = re.compile(r"^[ \t]*\[[^\]]+\]:[ \t]*(?P<target>\S+)", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<text>.*?)[ \t#]*$", re.MULTILINE)
# `make` as a command word (not `remake`, `.venv/bin/make-x` or `makes`), and the words after it up to a shell
# separator: targets, VAR=value assignments and -options.
MAKE = re.compile(r"(?<![\w./-])make(?P<args>(?:[ \t]+[^\s;&|)]+)*)")
# A Makefile rule: `name:` or `a b:` at the start of a line, and not an assignment such as `SHELL := /bin/bash`.
RULE = re.compile(r"^(?P<names>[A-Za-z0-9][\w.-]*(?:[ \t]+[A-Za-z0-9][\w.-]*)*)[ \t]*::?(?!=)", re.MULTILINE)


@dataclass(frozen=True)
class Page:
    path: Path
    text: str  # without its code blocks: what headings are read from
    prose: str  # without code blocks or code spans: what links are read from
    code: list[str]  # each code block and each code span


def read(path: Path) -> Page:
    code: list[str] = []

    def set_aside(match: re.Match[str], *, lines: bool) -> str:
        body = match.group("body")
        code.append(body if lines else " ".join(body.split()))  # a span's line break is a space
        return "\n" * match.group(0).count("\n")  # keep the line count, so nothing else joins up

    text = FENCE.sub(lambda match: set_aside(match, lines=True), path.read_text())
    prose = SPAN.sub(lambda match: set_aside(match, lines=False), text)
    return Page(path, text, prose, code)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation but `-` and `_` removed, spaces as `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets `-1`, `-2`, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for match in HEADING.finditer(read(path).text):
        base = anchor(match.group("text"))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Page) -> list[str]:
    targets = [m.group("target") for m in INLINE_LINK.finditer(page.prose)]
    targets += [m.group("target") for m in LINK_DEFINITION.finditer(page.prose)]
    return [target for target in targets if not SCHEME.match(target)]


def resolve(page: Page, target: str) -> tuple[Path, str | None]:
    path, _, fragment = target.partition("#")
    file = (page.path.parent / path).resolve() if path else page.path
    return file, fragment or None


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    page = read(path)
    problems = []
    for target in relative_links(page):
        file, _ = resolve(page, target)
        if not file.is_relative_to(root):
            problems.append(f"{path.name}: ({target}) leaves the repository")
        elif not file.exists():
            problems.append(f"{path.name}: ({target}) points to {file.relative_to(root)}, which does not exist")
    return problems


def anchor_problems(path: Path, root: Path = ROOT) -> list[str]:
    page = read(path)
    problems = []
    for target in relative_links(page):
        file, fragment = resolve(page, target)
        if fragment is None or not file.is_file() or not file.is_relative_to(root):
            continue  # no anchor, or no file of the repository: link_problems reports that
        if file.suffix != ".md":
            problems.append(f"{path.name}: ({target}) has an anchor into {file.name}, which has no headings")
        elif fragment not in anchors(file):
            problems.append(f"{path.name}: ({target}): {file.relative_to(root)} has no heading #{fragment}")
    return problems


def make_targets_named(code: str) -> list[str]:
    """The targets of every `make` command in a code block or span, without its variables and options."""
    named = []
    for line in code.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)  # a shell comment
        for match in MAKE.finditer(line):
            named += [word for word in match.group("args").split() if "=" not in word and not word.startswith("-")]
    return named


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {name for match in RULE.finditer(text) for name in match.group("names").split()}


def make_problems(path: Path, targets: set[str]) -> list[str]:
    named = [target for code in read(path).code for target in make_targets_named(code)]
    return [
        f"{path.name}: `make {target}` is not a target of the Makefile" for target in named if target not in targets
    ]


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_every_relative_link_reaches_a_file_of_the_repository(path: Path) -> None:
    assert link_problems(path) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_every_anchor_names_a_heading_of_the_page_it_points_to(path: Path) -> None:
    assert anchor_problems(path) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_every_make_target_a_page_names_is_a_rule_of_the_makefile(path: Path) -> None:
    assert make_problems(path, makefile_targets()) == []


def test_the_checks_have_links_and_targets_to_check() -> None:
    readme = read(ROOT / "README.md")
    assert {"docs/api.md", "docs/security.md"} <= {
        resolve(readme, t)[0].relative_to(ROOT).as_posix() for t in relative_links(readme)
    }
    assert sum("#" in target for path in PAGES for target in relative_links(read(path))) > 10
    assert {"run", "test", "deploy", "dev-up"} <= {t for code in readme.code for t in make_targets_named(code)}
    assert {"test", "run", "deploy", "dev-up", "cluster-up", "e2e", "help"} <= makefile_targets()


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("The API: kind `BackupStore` (cluster-scoped)", "the-api-kind-backupstore-cluster-scoped"),
        ("Who may read `/metrics`", "who-may-read-metrics"),
        ("(a) learn a Secret value", "a-learn-a-secret-value"),
        ("snake_case, dash-es & more", "snake_case-dash-es--more"),
        ("Restoring with the databases' own tools", "restoring-with-the-databases-own-tools"),
    ],
)
def test_anchors_follow_githubs_rules(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_a_repeated_heading_gets_a_numbered_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Usage\n\n## Usage\n\n```\n## not a heading\n```\n")
    assert anchors(page) == {"page", "usage", "usage-1"}


def test_a_missing_file_a_missing_heading_and_an_unknown_target_are_each_reported(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Project\n\n## Install\n")
    (tmp_path / "Makefile").write_text("test:\n\ttrue\n")
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n## Here\n\n"
        "[ok](#here), [gone](#nowhere), [missing](no-such-page.md), [readme](../README.md#install),\n"
        "[wrong heading](../README.md#no-such-heading), [rule](../Makefile#L1), [outside](../../outside.md),\n"
        "[web](https://example.com/x.md#y)\n\n"
        "`[in code](no-such-file.md)`, `make test` and `make\nwrapped-target`\n\n"
        "```sh\nmake test\nmake no-such-target IMG=x  # make other\n```\n"
    )
    assert link_problems(page, tmp_path) == [
        "page.md: (no-such-page.md) points to docs/no-such-page.md, which does not exist",
        "page.md: (../../outside.md) leaves the repository",
    ]
    assert anchor_problems(page, tmp_path) == [
        "page.md: (#nowhere): docs/page.md has no heading #nowhere",
        "page.md: (../README.md#no-such-heading): README.md has no heading #no-such-heading",
        "page.md: (../Makefile#L1) has an anchor into Makefile, which has no headings",
    ]
    assert make_problems(page, {"test"}) == [
        "page.md: `make no-such-target` is not a target of the Makefile",
        "page.md: `make wrapped-target` is not a target of the Makefile",
    ]


@pytest.mark.parametrize(
    ("code", "targets"),
    [
        ("make deploy IMG=registry/name:tag", ["deploy"]),
        ("make docker-build docker-push IMG=...", ["docker-build", "docker-push"]),
        ("$ PYTEST_ARGS='-k crd' make test   # make nothing of this", ["test"]),
        ("make deploy DEPLOY_DIR=overlays/namespaced IMG=x && make e2e", ["deploy", "e2e"]),
        ("make --no-print-directory lint; remake all", ["lint"]),
        ("make", []),
    ],
)
def test_make_commands_name_their_targets_without_variables_or_options(code: str, targets: list[str]) -> None:
    assert make_targets_named(code) == targets
