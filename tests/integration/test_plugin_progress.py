"""The progress lines `dbb-backup` writes to a Job's log are the ones `kubectl dbb --wait` reads: the contract
across the process boundary, tested from both sides, with the real runner dumping the real PostgreSQL."""

from __future__ import annotations

import itertools
from pathlib import Path

from hack.harness.databases import PostgresServer
from plugin.progress import parse_progress, render
from tests.backup import cli
from tests.backup.cli import password_env, run_args
from tests.integration.test_plugin import pg  # noqa: F401 - the PostgreSQL with the samples, a fixture


def test_the_runners_progress_lines_are_the_ones_the_plugin_reads(
    pg: PostgresServer,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """`dbb-backup run` as the Job runs it (stderr not a terminal; a report after every write), and the plugin's
    reader of its log."""
    env = {**password_env(pg), "DBB_PROGRESS_INTERVAL": "0"}
    outcome = cli.dbb(*run_args(pg, tmp_path, "shop"), env=env)
    assert outcome.code == 0, outcome.stderr
    found = [p for p in map(parse_progress, outcome.stderr.splitlines()) if p is not None]
    dumped = [p for p in found if p.phase == "dump"]
    assert dumped, outcome.stderr
    assert [p.done for p in dumped] == [False] * (len(dumped) - 1) + [True]
    assert dumped[-1].bytes == outcome.result["size"]
    assert dumped[-1].total is None  # a dump's size is known only at its end
    assert all(p.bytes <= q.bytes for p, q in itertools.pairwise(dumped))
    print("\n".join(render(p) for p in found))
