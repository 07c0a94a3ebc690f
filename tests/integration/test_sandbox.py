"""The sandbox as a user drives it (`make dev-up`, kubectl, `make dev-down`): a real backup of the sample database
within seconds, shown by `kubectl get dbb`, that restores; a DatabaseBackup of the user's own, defaulted by the
webhook to the sample Service's name, that backs up as it would in a cluster; and nothing left running afterwards,
even when the supervisor itself was killed.

`python -m hack.sandbox` runs exactly as the Makefile runs it, with its state in a temporary folder ($DBB_DEV_DIR),
so a developer's own `.dev/` is never touched. It starts its own control plane, not the session's.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.constants import ANNOTATION_BACKUP_NOW
from hack.harness import content
from hack.harness.controlplane import find_assets
from hack.harness.databases import PostgresServer
from hack.sandbox.manifests import BACKUP, DATABASE, NAMESPACE, PITR_BACKUP, S3_BACKUP, SERVICE_HOST
from hack.sandbox.paths import ENV_VAR, ROOT, DevDir
from hack.sandbox.processes import Record, alive, load_records, port_free
from tests.backup import cli
from tests.fixtures import databasebackup

PARTS = {"sandbox", "etcd", "kube-apiserver", "postgres", "mariadb", "seaweedfs", "webhook", "reconciler"}
# The sample's schedule is */5: a backup must come within the first slot. The backup-now annotation set at start
# makes it come within seconds; this bound leaves room for a slow machine.
FIRST_BACKUP_WITHIN = 60.0
# A backup-now run of the user's own DatabaseBackup: seconds of work, on a machine that may be busy.
OWN_BACKUP_WITHIN = 120.0


@dataclass
class Sandbox:
    dev: DevDir

    def __call__(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hack.sandbox", command],
            cwd=ROOT,
            env={**os.environ, ENV_VAR: str(self.dev.root)},
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )

    def up(self) -> str:
        started = self("up")
        assert started.returncode == 0, started.stdout + started.stderr
        return started.stdout

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [_kubectl(), f"--kubeconfig={self.dev.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout

    def postgres(self) -> PostgresServer:
        """The sandbox's PostgreSQL, reached as a user would: the port the sandbox printed at start (its state file
        keeps it), the password from the Secret."""
        port = int(json.loads(self.dev.state.read_text())["postgres"]["port"])
        secret = self.kubectl("get", "secret", f"{DATABASE}-credentials", "-n", NAMESPACE, "-o", "jsonpath={.data}")
        password = base64.b64decode(secret.split('"password":"', 1)[1].split('"', 1)[0]).decode()
        return PostgresServer(port=port, folder=self.dev.root, password=password)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(DevDir(tmp_path / "dev"))
    yield box
    box("down")  # whatever happened above, nothing stays running


def test_dev_up_backs_up_the_sample_within_seconds_and_the_backup_restores(sandbox: Sandbox) -> None:
    began = time.monotonic()
    output = sandbox.up()
    assert "✓ first backup" in output, output
    backups = sorted((sandbox.dev.backups / DATABASE).glob("databasebackup-sample-*.tar"))  # the owner names the file
    # The one asked for at start, and the schedule's (*/5) if a slot passed while the sandbox went on starting.
    assert 1 <= len(backups) <= 2, output
    assert time.monotonic() - began < FIRST_BACKUP_WITHIN
    assert f"export KUBECONFIG={sandbox.dev.kubeconfig}" in output

    table = sandbox.kubectl("get", "dbb", "-A")
    assert _column(table, BACKUP, "LAST BACKUP") not in ("", "<none>"), table
    assert _column(table, BACKUP, "PHASE") == "Succeeded", table

    # The metrics command dev-up printed works as printed: the sample's series, its last success among them.
    [command] = [
        line.split("metrics (each DatabaseBackup's last success, how overdue it is, ...): ", 1)[1]
        for line in output.splitlines()
        if "metrics (each DatabaseBackup" in line
    ]
    assert command.startswith("curl -s --cacert "), command
    series = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)  # noqa: S602
    assert f'dbb_backup_last_success_timestamp_seconds{{name="{BACKUP}",namespace="{NAMESPACE}"}}' in series.stdout

    server = sandbox.postgres()
    restored = cli.restore(server, backups[0], "shop=restored")  # dbb-backup restore, as docs/sandbox.md tells users
    assert restored.code == 0, restored.stderr
    assert server.sql("SELECT count(*) FROM sales.orders", "restored") == "3000"
    assert content.pg_fingerprint(server, "restored") == content.pg_fingerprint(server, "shop")

    # The sample to S3: every database as a set of objects in the sandbox's SeaweedFS, listed as docs/sandbox.md shows.
    assert "✓ first to S3" in output, output
    url = _column(sandbox.kubectl("get", "dbb", "-A", "-o", "wide"), S3_BACKUP, "LAST FILE")
    assert url.startswith(f"s3://backups/{NAMESPACE}/{DATABASE}/{S3_BACKUP}-"), url
    assert url.endswith(".set")
    s3_env = dict(line.removeprefix("export ").split("=", 1) for line in sandbox.dev.s3_env.read_text().splitlines())
    listed = cli.dbb("list", f"s3://backups/{NAMESPACE}/{DATABASE}", env=s3_env)
    assert listed.code == 0, listed.stderr
    [entry] = listed.result["backups"]
    assert (entry["file"], entry["owner"], entry["verified"]) == (url, f"{NAMESPACE}/{S3_BACKUP}", True)
    assert {"shop", "crm"} <= set(entry["databases"])

    # The MariaDB sample archives its binlogs continuously: a point-in-time restore reaches past its first backup.
    assert "✓ point in time" in output, output
    reach = _column(sandbox.kubectl("get", "dbb", "-A", "-o", "wide"), PITR_BACKUP, "RECOVERABLE UNTIL")
    assert reach.startswith("20"), reach

    again = sandbox("up")
    assert again.returncode == 0
    assert "already running" in again.stdout


def test_a_databasebackup_of_your_own_for_the_sample_database_backs_up_as_in_a_cluster(sandbox: Sandbox) -> None:
    sandbox.up()
    own = databasebackup("nightly", NAMESPACE, databaseName=DATABASE, schedule="0 3 * * *")
    assert set(own["spec"]) == {"databaseName", "schedule"}
    sandbox.kubectl("apply", "-f", "-", input=json.dumps(own))

    def nightly() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(sandbox.kubectl("get", "dbb", "nightly", "-n", NAMESPACE, "-o", "json"))
        return found

    assert nightly()["spec"]["connection"]["host"] == SERVICE_HOST  # the webhook's default, as in a cluster

    sandbox.kubectl("annotate", "dbb", "nightly", "-n", NAMESPACE, f"{ANNOTATION_BACKUP_NOW}=first")

    def backed_up() -> bool:
        status = nightly().get("status", {})
        assert not status.get("lastFailure"), status["lastFailure"]
        return bool(status.get("lastBackup"))

    _wait(backed_up, OWN_BACKUP_WITHIN)
    status = nightly()["status"]
    written = Path(status["lastBackup"]["file"])
    assert written.is_file(), status
    assert written.resolve().parent == (sandbox.dev.backups / DATABASE).resolve(), status
    table = sandbox.kubectl("get", "dbb", "-A")
    assert _column(table, "nightly", "PHASE") == "Succeeded", table


def test_dev_down_leaves_no_process_and_no_port_behind(sandbox: Sandbox) -> None:
    sandbox.up()
    records = load_records(sandbox.dev.records)
    assert {r.name for r in records} == PARTS
    assert sandbox("status").returncode == 0

    stopped = sandbox("down")

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    _assert_gone(records, sandbox.dev)
    assert sandbox("status").returncode == 3
    assert not sandbox.dev.kubeconfig.exists()


def test_dev_down_stops_what_a_killed_supervisor_left_running(sandbox: Sandbox) -> None:
    sandbox.up()
    records = load_records(sandbox.dev.records)
    supervisor = next(r for r in records if r.name == "sandbox")
    os.kill(supervisor.pid, signal.SIGKILL)  # no chance to clean up: its children live on, orphaned
    _wait(lambda: not alive(supervisor))
    assert all(alive(r) for r in records if r is not supervisor)
    assert "stopped without cleaning up" in sandbox("status").stdout

    stopped = sandbox("down")

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    _assert_gone(records, sandbox.dev)


def _assert_gone(records: list[Record], dev: DevDir) -> None:
    assert [r.name for r in records if alive(r)] == []
    busy = [port for r in records for port in r.ports if not port_free(port)]
    assert busy == []
    assert list(dev.records.glob("*.pid")) == []


def _column(table: str, row: str, name: str) -> str:
    """A cell of kubectl's table, by the header's offsets (headers and the schedule hold spaces)."""
    header, *rows = table.splitlines()
    start = header.index(name)
    following = [
        header.find(h, start + len(name))
        for h in ("PHASE", "NEXT BACKUP", "LAST VERIFIED", "AGE", "VERIFICATION", "LAST FILE", "KEPT")
        if h != name
    ]
    end = min([i for i in following if i > start], default=None)  # the last column runs to the end of its line
    line = next(r for r in rows if f" {row} " in r)
    return line[start:end].strip()


def _kubectl() -> str:
    """The kubectl at the API server's version, as the control plane harness picks it."""
    bundled = find_assets() / "kubectl"
    return str(bundled) if bundled.is_file() else shutil.which("kubectl") or "kubectl"


def _wait(check: object, seconds: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
