"""`pgserver.SidecarServer`, the runner's side of the replay server's file protocol, where no replay server answers:
what it writes, and that it neither hangs nor writes a start the sidecar would misread. (The protocol end to end,
with the real script and a real PostgreSQL: tests/backup/test_pitr_postgres_sidecar.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runner.errors import Reason, RunnerError
from runner.pgserver import SidecarServer, letting_go


def test_a_start_is_its_arguments_one_a_line_under_the_next_number(tmp_path: Path) -> None:
    server = SidecarServer(tmp_path)

    server.start(["-D", "/replay/data", "-c", "listen_addresses="])
    (tmp_path / "exited.1").write_text("1\n")
    server.start(["-D", "/replay/data"])

    assert (tmp_path / "start.1").read_text() == "-D\n/replay/data\n-c\nlisten_addresses=\n"
    assert (tmp_path / "start.2").read_text() == "-D\n/replay/data\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_an_argument_with_a_newline_is_refused_and_nothing_is_started(tmp_path: Path) -> None:
    with pytest.raises(RunnerError) as refused:
        SidecarServer(tmp_path).start(["-c", "recovery_target_name=a\nrestore_command=sh"])

    assert refused.value.reason is Reason.INVALID_ARGUMENTS
    assert list(tmp_path.iterdir()) == []


def test_the_exit_status_is_the_sidecar_s_answer(tmp_path: Path) -> None:
    server = SidecarServer(tmp_path)
    server.start(["-D", "data"])
    assert server.poll() is None

    (tmp_path / "exited.1").write_text("3\n")

    assert server.poll() == 3


def test_a_stop_no_one_answers_gives_up_after_its_wait(tmp_path: Path) -> None:
    server = SidecarServer(tmp_path, stop_wait=0.5)
    server.start(["-D", "data"])
    began = time.monotonic()

    server.close()

    assert 0.5 <= time.monotonic() - began < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done"]


def test_done_is_written_on_the_way_out_of_a_refusal(tmp_path: Path) -> None:
    with pytest.raises(RunnerError), letting_go(tmp_path):
        raise RunnerError(Reason.INVALID_ARGUMENTS, "refused before any start")

    assert (tmp_path / "done").exists()
