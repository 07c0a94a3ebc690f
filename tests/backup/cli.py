"""Running `dbb-backup` as the Job runs it: a separate process, the password in its environment only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hack.harness.databases import MariaDBServer, PostgresServer

Server = PostgresServer | MariaDBServer


def command() -> str:
    path = shutil.which("dbb-backup", path=str(Path(sys.executable).parent))
    assert path is not None, "dbb-backup is not installed in the virtualenv (pip install -e .)"
    return path


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        lines = self.stdout.strip().splitlines()
        assert len(lines) == 1, f"expected one JSON line on stdout, got {self.stdout!r} (stderr: {self.stderr})"
        parsed: dict[str, Any] = json.loads(lines[0])
        return parsed

    @property
    def reason_line(self) -> str:
        return self.stderr.strip().splitlines()[-1]


def engine_of(server: Server) -> str:
    return "postgresql" if isinstance(server, PostgresServer) else "mysql"


def password_env(server: Server, password: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DB_PASSWORD", "PGPASSWORD", "MYSQL_PWD")}
    env["DB_PASSWORD"] = server.password if password is None else password
    return env


def connection_args(server: Server, *, port: int | None = None) -> list[str]:
    return ["--host", server.host, "--port", str(port or server.port), "--user", server.user]


def run_args(server: Server, folder: Path, *databases: str, **flags: str | None) -> list[str]:
    args = ["run", "--engine", engine_of(server), *connection_args(server), "--output-dir", str(folder)]
    for database in databases:
        args += ["--database", database]
    for flag, value in flags.items():
        option = "--" + flag.replace("_", "-")
        args += [option] if value is None else [option, value]
    return args


def queries(*items: tuple[str, str, str]) -> str:
    """`--queries`: (name, database, sql) each, as the reconciler passes spec.verify.queries."""
    return json.dumps([{"name": n, "database": d, "sql": s} for n, d, s in items])


def dbb(*args: str, env: Mapping[str, str], timeout: float = 120) -> Outcome:
    result = subprocess.run(
        [command(), *args], capture_output=True, text=True, env=dict(env), timeout=timeout, check=False
    )
    return Outcome(result.returncode, result.stdout, result.stderr)


def backup(server: Server, folder: Path, *databases: str, **flags: str | None) -> Path:
    """A successful run; returns the backup file."""
    outcome = dbb(*run_args(server, folder, *databases, **flags), env=password_env(server))
    assert outcome.code == 0, outcome.stderr
    return Path(outcome.result["file"])


def restore(
    server: Server, file: Path, *targets: str, key: Path | None = None, key_dir: Path | None = None, **flags: bool
) -> Outcome:
    """`dbb-backup restore`; `flags` such as replace=True become `--replace`."""
    args = ["restore", str(file), *connection_args(server)]
    for target in targets:
        args += ["--database", target]
    if key is not None:
        args += ["--key-file", str(key)]
    if key_dir is not None:
        args += ["--key-dir", str(key_dir)]
    args += ["--" + flag.replace("_", "-") for flag, given in flags.items() if given]
    return dbb(*args, env=password_env(server))


def spawn(args: list[str], server: Server) -> subprocess.Popen[str]:
    """`dbb-backup` started in the background, for a test that stops it or watches it work."""
    return subprocess.Popen(
        [command(), *args], env=password_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    """Exited: no longer in /proc, or a zombie (its parent, the killed runner, is gone; init reaps it)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    return True
