"""`kubectl dbb` as a user runs it: `.venv/bin/kubectl-dbb` in a subprocess (and once through kubectl itself), with a
kubeconfig of its own that holds a client certificate of a user bound to a namespaced Role, against the real API
server, the real webhook and the reconciler (in process, the local executor playing kubelet) backing up a real
PostgreSQL.

A backup asked for and followed to its file; the status table; the list of stored backups; a restore into a new
database whose content is then identical to the source's; a check of the stored backups followed to its verdict;
a point in time refused for a source that archives no binlogs. A user who may not read Jobs, or Pod logs, is told
once and still sees the backup to its end. And a user the Role does not allow to create DatabaseRestores (or to ask for
backups) gets the API server's refusal as one line, with exit code 1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from certs.pki import issue, write_private
from common.constants import GROUP, LABEL_BACKUP_NAME
from common.kube import api_client, raw
from hack.harness import content
from hack.harness.content import pg_fingerprint
from hack.harness.controlplane import ControlPlane
from hack.harness.databases import PG_BIN, PostgresServer
from plugin.progress import format_bytes
from tests.backup.test_restore_reconciler import restorer
from tests.backup.test_s3_reconciler import reconciler, status_of, until
from tests.fixtures import databasebackup
from tests.integration.test_webhook import create_database

PLUGIN = Path(sys.executable).parent / "kubectl-dbb"
DEADLINE = 300.0  # seconds a followed command may take before the test fails; each takes a few here

AUTHOR_RULES = [
    {"apiGroups": [GROUP], "resources": ["databasebackups"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": ["databaserestores"], "verbs": ["get", "list", "watch", "create"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
]
# The author's, but for the logs: the Pods may be listed, their logs not read.
NO_LOGS_RULES = [*AUTHOR_RULES[:3], {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
VIEWER_RULES = [{"apiGroups": [GROUP], "resources": ["databasebackups", "databaserestores"], "verbs": ["get", "list"]}]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    if not (PG_BIN / "postgres").exists():
        pytest.fail("no PostgreSQL: run `bash hack/databases.sh`")
    with PostgresServer.start() as server:
        content.fill_postgres(server)
        yield server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def user_kubeconfig(control_plane: ControlPlane, folder: Path, user: str, namespace: str, rules: Any) -> Path:
    """A kubeconfig for `user` (a client certificate from the cluster's CA; no group, so no rights but the Role's)
    whose context's namespace is `namespace`, and a Role there with `rules` bound to the user."""
    assert control_plane.ca is not None
    pair = issue(control_plane.ca, user, server=False, client=True)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": control_plane.url, "certificate-authority-data": b64(control_plane.ca.cert_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(pair.cert_pem), "client-key-data": b64(pair.key_pem)},
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": "c", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    path = folder / f"{user}.kubeconfig"
    write_private(path, yaml.safe_dump(config).encode())
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": user, "namespace": namespace},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": user, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]})
    )
    return path


async def dbb(kubeconfig: Path, *args: str, kubectl: str | None = None) -> Result:
    """`kubectl-dbb ARGS` with KUBECONFIG set, as a user's shell runs it (not a terminal: plain lines); with
    `kubectl`, `kubectl dbb ARGS`, kubectl finding the plugin on PATH."""
    path = f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {"PATH": path, "HOME": str(kubeconfig.parent), "KUBECONFIG": str(kubeconfig)}
    argv = [kubectl, "dbb"] if kubectl is not None else [str(PLUGIN)]
    process = await asyncio.create_subprocess_exec(
        *argv, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(DEADLINE):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def columns(line: str) -> list[str]:
    """The cells of a table line: columns are three or more spaces apart; an empty cell at the end is left out."""
    return re.split(r" {3,}", line.rstrip())


def stored_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*")]


def setup(control_plane: ControlPlane, namespace: str, pg: PostgresServer) -> None:
    """The database's StatefulSet, Service and credentials, and DatabaseBackup `nightly` of `shop` (@yearly: every
    backup in the test is one asked for), applied by the administrator."""
    create_database(control_plane, namespace)
    credentials = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "example-db-credentials"},
        "stringData": {"password": pg.password, "username": pg.user},
    }
    nightly = databasebackup(namespace=namespace, schedule="@yearly", connection={"databases": ["shop"]})
    documents = {"apiVersion": "v1", "kind": "List", "items": [credentials, nightly]}
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(documents))


async def test_a_namespace_user_backs_up_lists_restores_and_verifies_with_kubectl_dbb(
    control_plane: ControlPlane, webhook_namespace: str, pg: PostgresServer, tmp_path: Path
) -> None:
    namespace = webhook_namespace
    root = tmp_path / "backups"
    pg.sql("DROP DATABASE IF EXISTS shop_from_plugin")
    author = user_kubeconfig(control_plane, tmp_path, f"author-{namespace}", namespace, AUTHOR_RULES)
    setup(control_plane, namespace, pg)
    api = await api_client(control_plane.kubeconfig)
    async with api, reconciler(api, namespace, pg, root), restorer(api, namespace, pg, root):
        backed_up = await dbb(author, "backup", "nightly", "--wait")
        status = await status_of(api, namespace)
        overview = await dbb(author, "status")
        stored = await dbb(author, "list", "nightly")
        restored = await dbb(
            author, "restore", "nightly", "--to", "example-db", "--database", "shop=shop_from_plugin", "--wait"
        )
        verified = await dbb(author, "verify", "nightly", "--wait")
        at = await dbb(author, "restore", "nightly", "--to", "example-db", "--at", "2026-12-07T09:00:00Z", "--wait")
        blind = user_kubeconfig(control_plane, tmp_path, f"nojobs-{namespace}", namespace, AUTHOR_RULES[:1])
        by_status = await dbb(blind, "backup", "nightly", "--wait")
        again = await status_of(api, namespace)

    for result in (backed_up, overview, stored, restored, verified, by_status):
        print(result.stdout)
    last = status["lastBackup"]
    assert backed_up.code == 0, backed_up
    assert f"backup written: {last['file']} (" in backed_up.stdout
    assert f"{last['size']:,} bytes)" in backed_up.stdout
    assert last["file"] in stored_files(root)

    assert overview.code == 0, overview
    header, row = (columns(line) for line in overview.stdout.splitlines())
    assert header == ["NAME", "DATABASE", "LAST BACKUP", "SCHEDULE", "OVERDUE", "LAST VERIFIED", "PROBLEM"]
    assert row[:2] == ["nightly", "example-db"]
    assert re.fullmatch(r"[0-9]+s", row[2])
    assert row[3:] == ["@yearly"]  # not overdue, never verified, no problem

    assert stored.code == 0, stored
    header, newest = (columns(line) for line in stored.stdout.splitlines())
    assert header == ["TIME", "SIZE", "KEY", "KEPT BY", "VERIFIED"]
    assert newest[:3] == [status["backups"][0]["time"], format_bytes(last["size"]), "-"]
    assert newest[4] == "when written"

    assert restored.code == 0, restored
    assert restored.stdout.startswith(f"databaserestore.{GROUP}/nightly-")
    assert "databases: shop -> shop_from_plugin" in restored.stdout
    assert pg_fingerprint(pg, "shop_from_plugin") == pg_fingerprint(pg, "shop")

    assert verified.code == 0, verified
    assert "verification passed: 1 backup(s) checked" in verified.stdout
    assert f"Passed  {last['file']}" in verified.stdout

    # The source archives no binlogs: the restore is written, and refused before any Job, saying why.
    assert at.code == 1, at
    assert "has no spec.continuous" in at.stdout + at.stderr

    # Without the right to read Jobs: said once, and followed by status alone.
    assert by_status.code == 0, by_status
    assert by_status.stdout.splitlines()[1:] == [
        f'Jobs not readable: Error from server (Forbidden): jobs.batch is forbidden: User "nojobs-{namespace}" '
        f'cannot list resource "jobs" in API group "batch" in the namespace "{namespace}"; following status only',
        *by_status.stdout.splitlines()[2:-2],
        f"backup written: {again['lastBackup']['file']} ({format_bytes(again['lastBackup']['size'])}, "
        f"{again['lastBackup']['size']:,} bytes) in {again['lastBackup']['duration']}",
        f"sha256 {again['lastBackup']['sha256']}",
    ]
    assert again["lastBackup"]["file"] != last["file"]
    pg.sql("DROP DATABASE IF EXISTS shop_from_plugin")


async def test_a_user_the_role_does_not_allow_gets_the_api_servers_refusal_in_one_line_and_exit_1(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    user = f"viewer-{namespace}"
    viewer = user_kubeconfig(control_plane, tmp_path, user, namespace, VIEWER_RULES)
    obj = databasebackup(namespace=namespace)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(obj))

    restore = await dbb(viewer, "restore", "nightly", "--to", "example-db")
    backup = await dbb(viewer, "backup", "nightly")
    everywhere = await dbb(viewer, "status", "-A")
    here = await dbb(viewer, "status", kubectl=control_plane.kubectl_path)
    for result in (restore, backup, everywhere, here):
        print(result.stdout, result.stderr)

    assert (restore.code, restore.stdout) == (1, "")
    assert restore.stderr == (
        f"Error from server (Forbidden): databaserestores.{GROUP} is forbidden: "
        f'User "{user}" cannot create resource "databaserestores" in API group "{GROUP}" '
        f'in the namespace "{namespace}"\n'
    )
    assert (backup.code, backup.stdout) == (1, "")
    assert backup.stderr.startswith(f'Error from server (Forbidden): databasebackups.{GROUP} "nightly" is forbidden: ')
    assert 'cannot patch resource "databasebackups"' in backup.stderr
    assert everywhere.code == 1
    assert 'cannot list resource "databasebackups" in API group' in everywhere.stderr
    assert "at the cluster scope" in everywhere.stderr
    for result in (restore, backup, everywhere):
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert here.code == 0, here
    assert here.stdout.splitlines()[1].split()[:2] == ["nightly", "example-db"]


async def test_waiting_gives_up_after_the_timeout_and_says_the_work_goes_on(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """No reconciler runs here: the request is never answered, whatever the timeout."""
    author = user_kubeconfig(control_plane, tmp_path, f"author-{namespace}", namespace, AUTHOR_RULES)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(databasebackup(namespace=namespace)))
    result = await dbb(author, "backup", "nightly", "--wait", "--timeout", "2s")
    print(result.stdout, result.stderr)
    assert result.code == 1, result
    assert result.stdout.splitlines()[1:] == ["waiting for the operator to start the backup"]
    assert result.stderr == (
        "error: gave up waiting after 2s; the work goes on in the cluster (`kubectl dbb status` shows how it stands)\n"
    )


@contextlib.asynccontextmanager
async def locked(pg: PostgresServer, database: str, table: str) -> AsyncIterator[None]:
    """`table` held under an ACCESS EXCLUSIVE lock for the block: a pg_dump of it waits (up to the runner's
    --lock-wait-timeout of 5 minutes) until the block ends."""
    psql = await asyncio.create_subprocess_exec(
        *("psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.host, "-p", str(pg.port), "-U", pg.user),
        *("-d", database),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "PGPASSWORD": pg.password},
    )
    assert psql.stdin is not None
    assert psql.stdout is not None
    psql.stdin.write(f"BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n\\echo locked\n".encode())
    await psql.stdin.drain()
    async with asyncio.timeout(DEADLINE):
        assert (await psql.stdout.readline()).strip() == b"locked"
    try:
        yield
    finally:
        psql.stdin.write(b"COMMIT;\n")
        psql.stdin.close()
        async with asyncio.timeout(DEADLINE):
            await psql.wait()


async def running_job(api: client.ApiClient, namespace: str) -> str:
    """The name of the DatabaseBackup's Job, once there is one."""
    batch = client.BatchV1Api(api)

    async def found() -> str | None:
        jobs = await raw(
            batch.list_namespaced_job(namespace, label_selector=f"{LABEL_BACKUP_NAME}=nightly", _preload_content=False)
        )
        names = [j["metadata"]["name"] for j in jobs["items"]]
        return names[0] if names else None

    name: str = await until(found, DEADLINE)
    return name


def running_pod(control_plane: ControlPlane, namespace: str, job: str) -> None:
    """A Pod of the Job, Running, as the Job controller and a kubelet would have made it (neither runs here)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job}-pod", "labels": {"batch.kubernetes.io/job-name": job}},
        "spec": {"containers": [{"name": "backup", "image": "dbb:test"}]},
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    running = json.dumps({"status": {"phase": "Running"}})
    control_plane.kubectl(
        "patch", "pod", f"{job}-pod", "-n", namespace, "--subresource=status", "--type=merge", "-p", running
    )


async def test_a_user_who_may_not_read_logs_is_told_once_and_the_backup_is_followed_to_its_end(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, tmp_path: Path
) -> None:
    user = f"nologs-{namespace}"
    author = user_kubeconfig(control_plane, tmp_path, user, namespace, NO_LOGS_RULES)
    setup(control_plane, namespace, pg)
    note = (
        f'progress not shown: Error from server (Forbidden): pods "{{job}}-pod" is forbidden: User "{user}" cannot '
        f'get resource "pods/log" in API group "" in the namespace "{namespace}"; following status only'
    )
    api = await api_client(control_plane.kubeconfig)
    async with api, reconciler(api, namespace, pg, tmp_path / "backups"):
        # The run waits on the lock while its Pod is made Running and the plugin tries to read that Pod's log.
        async with locked(pg, "shop", "public.customers"):
            plugin = await asyncio.create_subprocess_exec(
                *(str(PLUGIN), "backup", "nightly", "--wait"),
                env={"PATH": os.environ.get("PATH", ""), "KUBECONFIG": str(author)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert plugin.stdout is not None
            job = await running_job(api, namespace)
            running_pod(control_plane, namespace, job)
            lines: list[str] = []
            async with asyncio.timeout(DEADLINE):
                while not lines or lines[-1] != note.format(job=job):
                    line = await plugin.stdout.readline()
                    assert line, f"the plugin ended without the note: {lines}"
                    lines.append(line.decode().rstrip("\n"))
        async with asyncio.timeout(DEADLINE):
            rest, errors = await plugin.communicate()
    output = lines + rest.decode().splitlines()
    print("\n".join(output), errors.decode())
    assert plugin.returncode == 0, errors
    assert output.count(note.format(job=job)) == 1
    assert output[-2].startswith("backup written: ")
