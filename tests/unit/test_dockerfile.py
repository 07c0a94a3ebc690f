"""The Dockerfile installs what the entry points need.

The unit tests build no image (hack/cluster/images.sh does, for the local cluster, in minutes). Instead this reads
the Dockerfile and .dockerignore and holds them against their sources of truth: pyproject.toml (the package, its
readme and its console scripts), the runner's own argv builders (the client tools it calls), the Pods in deploy/
(the user they run as), and the sample database (the PostgreSQL major the clients must be able to dump). The
Dockerfile's last RUN makes the build itself fail when a command or tool is missing; these tests keep that list
complete.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from runner import engines
from runner.compression import Compression

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VENV_BIN = "/opt/venv/bin"
# Which Debian package brings each tool: PostgreSQL's versioned client package, MariaDB's client.
TOOL_PACKAGES = {
    "pg_dump": "postgresql-client-",
    "pg_dumpall": "postgresql-client-",
    "pg_restore": "postgresql-client-",
    "psql": "postgresql-client-",
    "mariadb-dump": "mariadb-client",
    "mariadb": "mariadb-client",
}


# --- a small Dockerfile reader ------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def words(self) -> list[str]:
        return shlex.split(self.arguments, comments=False)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def args(self) -> dict[str, str]:
        defaults = {}
        for instruction in self.all("ARG"):
            name, _, default = instruction.arguments.partition("=")
            defaults[name.strip()] = default.strip()
        return defaults

    def run_text(self) -> str:
        return "\n".join(i.arguments for i in self.all("RUN"))


def logical_lines(text: str) -> Iterator[str]:
    """Backslash continuations joined; comment lines dropped, also inside a continuation (as Docker does)."""
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        pending += line
        if pending.strip():
            yield pending.strip()
        pending = ""
    if pending.strip():
        yield pending.strip()


def substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), value)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(the ARGs declared before the first FROM, the stages)."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        arguments = arguments.strip()
        if keyword == "FROM":
            words = arguments.split()
            base = substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            name, _, default = arguments.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def build(stages: list[Stage], final: Stage) -> Stage:
    """The stage whose venv the final stage copies."""
    sources = [
        word.removeprefix("--from=")
        for instruction in final.all("COPY")
        for word in instruction.words()
        if word.startswith("--from=")
    ]
    assert len(sources) == 1, f"the final stage should copy from exactly one build stage: {sources}"
    named = [s for s in stages[:-1] if s.name == sources[0]]
    assert len(named) == 1, f"no earlier stage named {sources[0]}"
    return named[0]


# --- the base image ---------------------------------------------------------------------------------------------


def test_every_stage_starts_from_the_same_pinned_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "a multi-stage build: the build tools stay out of the image"
    for stage in stages:
        assert stage.base == "python:3.11-slim-bookworm"
        repository, _, tag = stage.base.rpartition(":")
        assert repository
        assert tag not in ("", "latest")


def test_the_final_stage_copies_the_whole_venv_from_the_build_stage(build: Stage, final: Stage) -> None:
    copies = [i.words() for i in final.all("COPY")]
    assert [f"--from={build.name}", "/opt/venv", "/opt/venv"] in copies
    # The same base in both stages: the venv's python symlink points at the same interpreter path.
    assert build.base == final.base


# --- the package and its console scripts ------------------------------------------------------------------------


def test_the_build_stage_installs_the_package_with_pip(build: Stage) -> None:
    installs = [i.words() for i in build.all("RUN") if "pip" in i.arguments and "install" in i.arguments]
    assert installs, "no pip install in the build stage"
    assert any(words[0] == f"{VENV_BIN}/pip" and words[-1] == "." for words in installs), installs


def test_the_build_stage_copies_everything_pip_install_reads(build: Stage) -> None:
    copied = {
        source.rstrip("/")
        for instruction in build.all("COPY")
        for source in instruction.words()[:-1]
        if not source.startswith("--")
    }
    packages = {
        pattern.rstrip("*").rstrip(".") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages == {"common", "webhook", "reconciler", "runner", "certs", "plugin"}
    readme = PYPROJECT["project"]["readme"]
    assert {"pyproject.toml", readme} | packages <= copied


def test_every_console_script_is_on_path_and_run_at_build_time(final: Stage) -> None:
    scripts = set(PYPROJECT["project"]["scripts"])
    assert {"dbb-webhook", "dbb-reconciler", "dbb-backup", "dbb-certs"} <= scripts
    path = next(i for i in final.all("ENV") if "PATH=" in i.arguments).arguments
    assert re.search(rf'PATH="{VENV_BIN}:', path), path
    smoke = final.run_text()
    for script in scripts:
        assert re.search(rf"\b{re.escape(script)}\b", smoke), f"{script} is not run with --help at build time"
    assert "--help" in smoke


# --- the database clients -----------------------------------------------------------------------------------------


def runner_tools(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The programs the runner executes, from its own argv builders (the first choice where it falls back)."""
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: f"/usr/bin/{name}")
    connection = engines.Connection(host="db", port=5432, user="backup")
    argvs = [
        engines.pg_dump_argv(connection, "app", Compression.GZIP),
        engines.pg_globals_argv(connection),
        engines.psql_argv(connection, "app"),
        engines.pg_restore_script_argv(),
        engines.psql_restore_argv(connection, "app"),
        engines.mysql_dump_argv(connection, ["app"], several=False),
        engines.mysql_client_argv(connection),
    ]
    return {argv[0] for argv in argvs}


def test_the_final_stage_installs_every_tool_the_runner_calls(final: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = runner_tools(monkeypatch)
    assert tools == set(TOOL_PACKAGES), "a new tool: add its package here and to the Dockerfile"
    installed = {
        word
        for instruction in final.all("RUN")
        for command in instruction.arguments.split(";")
        if "apt-get install" in command
        for word in shlex.split(command)
        if not word.startswith("-")
    }
    for tool, package in TOOL_PACKAGES.items():
        assert any(word.startswith(package) for word in installed), f"{tool}: {package}* is not installed"
    checked = re.search(r"for tool in ([^;]+); do", final.run_text())
    assert checked is not None, "the final stage should run each tool's --version"
    assert set(checked.group(1).split()) == tools


def test_the_postgresql_clients_are_the_newest_major_the_apt_sources_ship(final: Stage) -> None:
    """pg_dump refuses a server of a newer major version than its own: by default the image takes the newest."""
    assert final.args()["PG_CLIENT_MAJOR"] == "newest"
    package = next(w for i in final.all("RUN") for w in i.words() if w.startswith("postgresql-client-"))
    assert package == "postgresql-client-${major}"
    path = next(i for i in final.all("ENV") if "PATH=" in i.arguments).arguments
    assert "/usr/lib/postgresql/current/bin" in path
    assert 'ln -s "/usr/lib/postgresql/${major}" /usr/lib/postgresql/current' in final.run_text()


def resolve_major(final: Stage, tmp_path: Path, requested: str, listing: str) -> subprocess.CompletedProcess[str]:
    """The build's lines that choose the major, run with an apt-cache that lists `listing` (our seam for apt)."""
    text = final.run_text()
    snippet = text[
        text.index('major="${PG_CLIENT_MAJOR}"') : text.index('apt-get install -y --no-install-recommends "postgresql')
    ]
    fake = tmp_path / "apt-cache"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{listing}EOF\n")
    fake.chmod(0o755)
    script = f"set -eu; PG_CLIENT_MAJOR={requested}; {snippet} echo $major"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, check=False)


PGDG_LISTING = """postgresql-client-13 - front-end programs for PostgreSQL 13
postgresql-client-18 - front-end programs for PostgreSQL 18
postgresql-client-9.6 - front-end programs for PostgreSQL 9.6
postgresql-client-common - manager for multiple PostgreSQL client versions
postgresql-client-17 - front-end programs for PostgreSQL 17
"""


def test_newest_resolves_to_the_highest_major_listed(final: Stage, tmp_path: Path) -> None:
    assert resolve_major(final, tmp_path, "newest", PGDG_LISTING).stdout.strip() == "18"
    assert resolve_major(final, tmp_path, "16", PGDG_LISTING).stdout.strip() == "16"


def test_no_client_package_at_all_fails_the_build_naming_the_argument(final: Stage, tmp_path: Path) -> None:
    result = resolve_major(final, tmp_path, "newest", "postgresql-client-common - manager\n")
    assert result.returncode != 0
    assert "PG_CLIENT_MAJOR: no postgresql-client-N for 'newest'" in result.stderr


def test_the_clients_come_from_pgdg_for_the_base_images_own_suite_by_default(final: Stage) -> None:
    """bookworm ships only PostgreSQL 15's clients; PGDG has every major, for each Debian suite under its name."""
    assert final.args()["PG_CLIENT_SOURCE"] == "pgdg"
    text = final.run_text()
    source = re.search(r'echo "deb \[signed-by=/usr/share/keyrings/pgdg\.asc\] (\S+) (\S+) main"', text)
    assert source is not None, "no PGDG apt source"
    assert source.group(1) == "https://apt.postgresql.org/pub/repos/apt"
    # The suite is the base image's own codename, read from its /etc/os-release, not a name written here.
    suite = re.fullmatch(r"\$\{?(\w+)\}?-pgdg", source.group(2))
    assert suite is not None, source.group(2)
    variable = suite.group(1)
    assert re.search(rf"\b{variable}=\"?\$\(\. /etc/os-release && echo \"?\$VERSION_CODENAME", text), text


def test_every_client_source_installs_the_same_packages_and_another_fails_the_build(final: Stage) -> None:
    """`debian` (the base's own suite, for a machine that reaches no PGDG) skips only the PGDG steps."""
    text = final.run_text()
    branches = dict(re.findall(r"(?:\bin|;;)\s+([\w*]+)\)\s+(.*?)\s*(?=;;)", text))
    assert set(branches) == {"pgdg", "debian", "*"}, branches
    assert "curl" in branches["pgdg"]
    assert "curl" not in branches["debian"]
    assert "gnupg" not in branches["debian"]
    assert "exit 1" in branches["*"]
    # The clients are installed once, after the case, whichever the source.
    after = text[text.index("esac") :]
    assert "postgresql-client-${major}" in after
    assert "mariadb-client" in after


def test_the_pgdg_key_is_checked_against_its_fingerprint_before_apt_trusts_it(final: Stage) -> None:
    fingerprint = final.args()["PGDG_KEY_FINGERPRINT"]
    assert re.fullmatch(r"[0-9A-F]{40}", fingerprint)
    text = final.run_text()
    assert "${PGDG_KEY_FINGERPRINT}" in text
    assert text.index("${PGDG_KEY_FINGERPRINT}") < text.index("signed-by=")


# --- how it runs --------------------------------------------------------------------------------------------------


def test_the_image_runs_as_the_user_the_pods_run_as(final: Stage) -> None:
    users = final.all("USER")
    assert users, "no USER: the image would run as root"
    assert users[-1].arguments in ("65532", "65532:65532")
    for deployment in ("reconciler", "webhook"):
        documents = yaml.safe_load_all((ROOT / "deploy" / deployment / "deployment.yaml").read_text())
        pod = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 65532


def test_no_entrypoint_the_pod_names_the_command(stages: list[Stage], final: Stage) -> None:
    """One image, three programs: Pods pass the command as their first argument; nothing wraps it in a shell."""
    assert not final.all("ENTRYPOINT")
    commands = final.all("CMD")
    assert len(commands) == 1
    command = json.loads(commands[0].arguments)  # exec form: no /bin/sh -c
    assert command[0] in PYPROJECT["project"]["scripts"]


# --- the build context --------------------------------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, pattern) in file order, with Docker's matching: `*` within a path segment, `**` across them."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.removeprefix("!").strip("/")
        regex = ""
        index = 0
        while index < len(glob):
            if glob.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif glob.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif glob[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif glob[index] == "?":
                regex, index = regex + "[^/]", index + 1
            elif glob[index] == "[":
                end = glob.index("]", index)
                regex, index = regex + glob[index : end + 1], end + 1
            else:
                regex, index = regex + re.escape(glob[index]), index + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def ignored(path: str) -> bool:
    """The last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, pattern in ignore_patterns():
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "README.md", "common/backups/model.py", "webhook/main.py", "runner/main.py", "certs/pki.py"],
)
def test_the_build_context_holds_what_the_build_copies(path: str) -> None:
    assert (ROOT / path).exists()
    assert not ignored(path)


def test_every_source_the_build_copies_is_in_the_build_context(build: Stage) -> None:
    sources = [
        source.rstrip("/")
        for instruction in build.all("COPY")
        for source in instruction.words()[:-1]
        if not source.startswith("--")
    ]
    assert "plugin" in sources
    for source in sources:
        inside = ROOT / source
        files = [p for p in inside.rglob("*.py") if "__pycache__" not in p.parts] if inside.is_dir() else [inside]
        assert files, source
        left_out = [str(p.relative_to(ROOT)) for p in files if ignored(str(p.relative_to(ROOT)))]
        assert left_out == [], f".dockerignore leaves out what the Dockerfile copies: {left_out}"


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".dev/kubeconfig",
        ".dev/backups/example-db/example-db-20250101T000000Z.dump",
        "tests/conftest.py",
        "common/__pycache__/model.cpython-311.pyc",
        "databasebackup_operator.egg-info/PKG-INFO",
        "deploy/samples/postgresql.yaml",
    ],
)
def test_the_build_context_leaves_out_the_rest(path: str) -> None:
    assert ignored(path)
