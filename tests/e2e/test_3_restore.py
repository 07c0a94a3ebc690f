"""Each engine at two major versions (PostgreSQL 15 and 17, MariaDB 10.11 and 11.8): a backup taken by a real Job,
taken out of the PVC by another Pod, restores into a fresh server of the same version with identical content: every
table's row count and a checksum of all its rows, compared with the source."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pods import run_pod

VERSIONS = [("postgresql", "15"), ("postgresql", "17"), ("mariadb", "10.11"), ("mariadb", "11.8")]
NAMESPACE = "e2e-restore"


def slug(engine: str, version: str) -> str:
    return f"{'pg' if engine == 'postgresql' else 'maria'}{version.replace('.', '')}"


@pytest.fixture(scope="module")
def servers(kube: Kube, deployed: str) -> Iterator[dict[str, tuple[databases.Database, databases.Database]]]:
    """A seeded source and an empty target per version, all started at once (they start in parallel)."""
    kube.run("create", "namespace", NAMESPACE, check=False)
    kube("label", "--overwrite", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    pairs = {}
    for engine, version in VERSIONS:
        name = slug(engine, version)
        source = databases.Database(engine, version, f"{name}-src", NAMESPACE, f"{name}-source-password")
        target = databases.Database(engine, version, f"{name}-dst", NAMESPACE, f"{name}-target-password")
        databases.deploy(kube, source)
        databases.deploy(kube, target, database=None)
        pairs[f"{engine}-{version}"] = (source, target)
    for source, target in pairs.values():
        databases.wait_ready(kube, source)
        databases.wait_ready(kube, target)
        databases.seed(kube, source)
    yield pairs
    kube.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.mark.parametrize(("engine", "version"), VERSIONS, ids=[f"{e}-{v}" for e, v in VERSIONS])
def test_a_backup_restores_to_identical_content(
    kube: Kube,
    servers: dict[str, tuple[databases.Database, databases.Database]],
    engine: str,
    version: str,
) -> None:
    source, target = servers[f"{engine}-{version}"]
    expected = databases.fingerprint(kube, source)
    assert expected["customers"][0] == 2000
    assert expected["orders"][0] == 5000

    owner = f"{source.name}-now"
    kube.apply(databases.databasebackup(owner, source, "0 0 1 1 *", backup_now="1"))

    def backed_up() -> dict[str, str] | None:
        status = kube.get("dbb", owner, NAMESPACE).get("status", {})
        assert status.get("phase") != "Failed", status.get("lastFailure")
        last: dict[str, str] | None = status.get("lastBackup")
        return last if last and last.get("sha256") else None

    last = wait_for(f"a backup of {engine} {version}", backed_up, 300)

    # The restore runs from the PVC in a Pod of the operator's image, with the target's password from its Secret:
    # the whole backup, as a disaster recovery would (for PostgreSQL that is the roles, then every database).
    secret_ref = {"secretKeyRef": {"name": f"{target.name}-credentials", "key": "password"}}
    output = run_pod(
        kube,
        NAMESPACE,
        ["dbb-backup", "restore", last["file"], f"--host={target.host}", f"--user={target.user}"],
        {f"{source.name}-backups": "/backups"},
        env=[{"name": "DB_PASSWORD", "valueFrom": secret_ref}],
    )
    assert target.password not in output
    assert source.password not in output
    assert databases.fingerprint(kube, target) == expected


def test_a_client_older_than_the_server_is_refused_with_a_clear_message(
    kube: Kube, servers: dict[str, tuple[databases.Database, databases.Database]]
) -> None:
    """The same Dockerfile built with Debian bookworm's PostgreSQL 15 clients cannot dump a PostgreSQL 17 server:
    the run fails at once, names both versions, and publishes nothing."""
    image = os.environ.get("E2E_OLD_CLIENT_IMG")
    if not image:
        pytest.skip("E2E_OLD_CLIENT_IMG not set (make e2e sets it on the local cluster)")
    source, _ = servers["postgresql-17"]
    secret_ref = {"secretKeyRef": {"name": f"{source.name}-credentials", "key": "password"}}
    command = [
        "sh",
        "-c",
        f"dbb-backup run --engine=postgresql --host={source.host} --user=postgres --database=app "
        "--output-dir=/backups/old-client; echo exit=$?; echo files:; ls -A /backups/old-client 2>/dev/null; true",
    ]
    output = run_pod(
        kube,
        NAMESPACE,
        command,
        {f"{source.name}-backups": "/backups"},
        env=[{"name": "DB_PASSWORD", "valueFrom": secret_ref}],
        image=image,
    )
    result = json.loads(next(line for line in output.splitlines() if line.startswith('{"status"')))
    assert result["status"] == "Failed"
    assert result["reason"] == "ClientTooOld", result
    assert result["message"].startswith("server 17 is newer than pg_dump 15; use an image with PostgreSQL 17+ clients")
    assert "server version: 17" in result["message"]
    assert "pg_dump version: 15" in result["message"]
    lines = output.splitlines()
    assert "exit=0" not in lines
    assert lines[lines.index("files:") + 1 :] == [], "a failed run publishes nothing"


@pytest.mark.parametrize(("engine", "version"), [("postgresql", "17"), ("mariadb", "11.8")], ids=["pg17", "maria118"])
def test_a_databaserestore_restores_into_another_statefulset_as_one_real_job(
    kube: Kube,
    servers: dict[str, tuple[databases.Database, databases.Database]],
    engine: str,
    version: str,
) -> None:
    """A DatabaseRestore (dbr) of the source's newest backup into the target StatefulSet, under a new name: the
    webhook pins the file, the reconciler runs one Job with the target's credentials from its own Secret, and the
    restored database is identical to the source's."""
    source, target = servers[f"{engine}-{version}"]
    owner = f"{source.name}-app"
    kube.apply(databases.databasebackup(owner, source, "0 0 1 1 *", backup_now="1", connection={"databases": ["app"]}))

    def backed_up() -> dict[str, str] | None:
        status = kube.get("dbb", owner, NAMESPACE).get("status", {})
        assert status.get("phase") != "Failed", status.get("lastFailure")
        last: dict[str, str] | None = status.get("lastBackup")
        return last if last and last.get("sha256") else None

    last = wait_for(f"a backup of {engine} {version} app", backed_up, 300)
    name = f"{owner}-to-dst"
    kube.apply(
        {
            "apiVersion": "databases.test.io/v1",
            "kind": "DatabaseRestore",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "source": {"databaseBackup": owner},
                "target": {"databaseName": target.name, "databases": [{"from": "app", "to": "app_dbr"}]},
            },
        }
    )
    assert kube.get("dbr", name, NAMESPACE)["spec"]["source"]["file"] == last["file"]

    def finished() -> dict[str, object] | None:
        status: dict[str, object] = kube.get("dbr", name, NAMESPACE).get("status", {})
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(f"DatabaseRestore {name} to finish", finished, 300)
    assert status["phase"] == "Succeeded", status
    assert status["sha256"] == last["sha256"]
    assert status["databases"] == [{"source": "app", "target": "app_dbr", "result": "Restored"}]
    assert databases.fingerprint(kube, target, "app_dbr") == databases.fingerprint(kube, source)
    header, row = kube("get", "dbr", name, "-n", NAMESPACE).splitlines()
    assert header.split() == ["NAME", "SOURCE", "TARGET", "PHASE", "AGE"]
    assert row.split()[:4] == [name, owner, target.name, "Succeeded"]
    assert target.password not in json.dumps(kube.items("jobs", NAMESPACE))


def test_a_restore_whose_pod_cannot_start_fails_within_a_minute_with_the_kubelets_words(
    kube: Kube, servers: dict[str, tuple[databases.Database, databases.Database]]
) -> None:
    """A target Secret key that does not exist leaves the restore's Pod in CreateContainerConfigError, which the
    kubelet retries for as long as the Pod lives: the reconciler fails the restore instead, with the kubelet's
    message."""
    source, target = servers["postgresql-17"]
    owner = f"{source.name}-app"
    kube.apply(databases.databasebackup(owner, source, "0 0 1 1 *", backup_now="1", connection={"databases": ["app"]}))
    wait_for(
        "a backup to restore",
        lambda: (kube.get("dbb", owner, NAMESPACE).get("status", {}).get("lastBackup") or {}).get("sha256"),
        300,
    )
    name = f"{owner}-no-such-key"
    started = time.monotonic()
    kube.apply(
        {
            "apiVersion": "databases.test.io/v1",
            "kind": "DatabaseRestore",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "source": {"databaseBackup": owner},
                "target": {
                    "databaseName": target.name,
                    "databases": [{"from": "app", "to": "app_never"}],
                    "credentialsSecret": {"name": f"{target.name}-credentials", "passwordKey": "no-such-key"},
                },
            },
        }
    )

    def ended() -> dict[str, str] | None:
        status: dict[str, str] = kube.get("dbr", name, NAMESPACE).get("status", {})
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    # Well inside the deadline that would otherwise end it: the Job's activeDeadlineSeconds, an hour.
    status = wait_for(f"DatabaseRestore {name} to end", ended, 300)
    took = time.monotonic() - started
    print(f"restore with a missing Secret key: Failed after {took:.0f} s")
    assert status["phase"] == "Failed", status
    assert status["reason"] == "PodConfigError", status
    assert "CreateContainerConfigError" in status["message"], status
    assert "no-such-key" in status["message"], status
    assert wait_for("its Pod gone", lambda: not kube.items("pods", NAMESPACE, f"job-name={status['job']}") or None)
