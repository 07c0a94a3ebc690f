"""dbb-reconciler as processes: with leader election two replicas never both act, and a graceful stop hands over."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certs.serving import ensure_serving_certificate
from hack.harness.controlplane import ControlPlane, free_port
from tests.fixtures import databasebackup, governing_service, statefulset


class Replica:
    def __init__(self, plane: ControlPlane, namespace: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        cert_dir = log.with_suffix(".tls")
        ensure_serving_certificate(cert_dir, ["127.0.0.1"])
        self.scrape = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "dbb-reconciler"),
                    f"--kubeconfig={plane.kubeconfig}",
                    f"--namespace={namespace}",
                    "--leader-elect",
                    f"--lease-namespace={namespace}",
                    "--lease-duration=3",
                    "--renew-deadline=2",
                    "--retry-period=0.3",
                    "--health-host=127.0.0.1",
                    f"--health-port={self.port}",
                    f"--cert-dir={cert_dir}",
                    "--no-metrics-auth",  # the tests read dbb_leader
                    # Each request's Job runs on (no kubelet ends it): the one-per-server cap would hold the next.
                    "--max-running-per-server=0",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def metric(self, name: str) -> float:
        try:
            url = f"https://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=2, context=self.scrape) as response:
                text = response.read().decode()
        except OSError:
            return -1.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(20)


def wait_for(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def replicas(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[list[Replica]]:
    sts = statefulset(namespace=namespace)
    del sts["status"]
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(sts))
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(governing_service(sts)))
    # Allow: the first on-demand Job never finishes here (no kubelet), and the second must not wait for it.
    backup = databasebackup(namespace=namespace, schedule="@yearly", concurrencyPolicy="Allow")
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(backup))
    started = [Replica(control_plane, namespace, tmp_path / f"replica-{n}.log") for n in range(2)]
    yield started
    for replica in started:
        replica.stop(signal.SIGKILL)


def jobs(plane: ControlPlane, namespace: str) -> list[str]:
    return plane.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout.split()


def status(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    found = json.loads(plane.kubectl("get", "dbb", "nightly", "-n", namespace, "-o", "json").stdout)
    return dict(found.get("status") or {})


def changed_spec(plane: ControlPlane, namespace: str) -> int:
    """A spec change that starts nothing (how many backups to keep); the object's new generation."""
    patch = json.dumps({"spec": {"retention": {"keepLast": 8}}})
    changed = plane.kubectl("patch", "dbb", "nightly", "-n", namespace, "--type=merge", "-p", patch, "-o", "json")
    generation: int = json.loads(changed.stdout)["metadata"]["generation"]
    return generation


def test_two_replicas_never_both_act_and_a_graceful_stop_hands_over(
    control_plane: ControlPlane, namespace: str, replicas: list[Replica]
) -> None:
    wait_for(lambda: sorted(r.metric("dbb_leader") for r in replicas) == [0.0, 1.0])
    leader, follower = sorted(replicas, key=lambda r: -r.metric("dbb_leader"))
    control_plane.kubectl("annotate", "dbb", "nightly", "-n", namespace, "databases.test.io/backup-now=one")
    wait_for(lambda: len(jobs(control_plane, namespace)) == 1)
    wait_for(lambda: status(control_plane, namespace).get("lastBackupNowRequest") == "one")
    # The positive sign that the leader is done with the request: a change made after its Job and status (a spec
    # change: generation + 1) shows in status.observedGeneration. The pass that wrote it saw the request, its Job
    # and its status, and started nothing; the passes before it are over (one at a time per object).
    generation = changed_spec(control_plane, namespace)
    wait_for(lambda: status(control_plane, namespace).get("observedGeneration") == generation)
    assert len(jobs(control_plane, namespace)) == 1
    assert follower.metric("dbb_api_requests_total") == 0  # the follower wrote nothing at all
    assert leader.metric("dbb_api_requests_total") > 0
    # A graceful stop releases the Lease: the follower takes over well before the 3 s lease would expire.
    handed_over = time.monotonic()
    assert leader.stop() == 0
    wait_for(lambda: follower.metric("dbb_leader") == 1.0, seconds=10)
    takeover = time.monotonic() - handed_over
    control_plane.kubectl(
        "annotate", "--overwrite", "dbb", "nightly", "-n", namespace, "databases.test.io/backup-now=two"
    )
    wait_for(lambda: len(jobs(control_plane, namespace)) == 2)
    assert takeover < 3.0, f"takeover took {takeover:.1f}s"


def test_a_replica_that_loses_its_lease_stops_all_work_and_exits(
    control_plane: ControlPlane, namespace: str, replicas: list[Replica]
) -> None:
    wait_for(lambda: sorted(r.metric("dbb_leader") for r in replicas) == [0.0, 1.0])
    leader = max(replicas, key=lambda r: r.metric("dbb_leader"))
    # Another holder appears in the Lease (as after a network partition healed): the old leader must stop at once.
    control_plane.kubectl(
        "patch",
        "lease",
        "dbb-reconciler",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"holderIdentity": "someone-else"}}',
    )
    assert leader.process.wait(15) == 1
    assert "lost the lease" in leader.log.read_text()
