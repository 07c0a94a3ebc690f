"""Progress of long work: a bar that advances on a terminal, plain JSON lines without control codes in a Job's log
(which `kubectl dbb --wait` reads)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
from pathlib import Path
from typing import Any

from hack.harness.databases import PostgresServer
from tests.backup.cli import backup, command, connection_args, password_env


def progress_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "progress"]


def test_in_a_log_progress_is_plain_json_lines_that_add_up(pg: PostgresServer, backups: Path, key_file: Path) -> None:
    env = {**password_env(pg), "DBB_PROGRESS_INTERVAL": "0"}
    args = ["run", "--engine", "postgresql", *connection_args(pg), "--output-dir", str(backups), "--database", "shop"]
    args += ["--encryption-key-file", str(key_file), "--verify"]
    ran = subprocess.run([command(), *args], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert ran.returncode == 0, ran.stderr
    assert "\x1b" not in ran.stderr
    assert "\r" not in ran.stderr
    size = json.loads(ran.stdout)["size"]
    lines = progress_lines(ran.stderr)
    phases = [line["phase"] for line in lines if line.get("done")]
    assert phases == ["dump", "checksum", "verify"]
    for name in ("dump", "checksum", "verify"):
        counts = [line["bytes"] for line in lines if line["phase"] == name]
        assert counts == sorted(counts)
        assert len(counts) > 2, f"{name}: no progress before its end"
        assert counts[-1] == size
    dump = [line for line in lines if line["phase"] == "dump"]
    assert all(line["total"] is None for line in dump)  # not known ahead
    verify = [line for line in lines if line["phase"] == "verify"]
    assert all(line["total"] == size for line in verify)
    assert all(isinstance(line["rate"], float | int) and isinstance(line["elapsed"], float | int) for line in lines)


def test_on_a_terminal_a_bar_advances_to_its_end(pg: PostgresServer, backups: Path) -> None:
    file = backup(pg, backups, "shop", verify=None)
    size = json.loads(Path(f"{file}.json").read_text())["size"]
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns, as a terminal
    process = subprocess.Popen(
        [command(), "verify", str(file)],
        stdout=subprocess.PIPE,
        stderr=terminal,
        env={**os.environ, "DBB_PROGRESS_INTERVAL": "0"},
    )
    os.close(terminal)
    seen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        assert ready, "the verify went silent"
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(timeout=60) == 0
    assert process.stdout is not None
    process.stdout.close()
    os.close(main)
    text = seen.decode(errors="replace")
    # The bar redraws in place; its percentages climb to 100 and it names the phase, the size and a rate.
    percents = [int(p) for p in re.findall(r"verify [^\r\n]*?\s(\d+)%", text)]
    assert len(set(percents)) > 2, text[-2000:]
    assert percents == sorted(percents)
    assert percents[-1] == 100
    assert "\r" in text
    assert re.search(r"B/s", text)
    assert size > 1 << 20
