"""The sandbox's executor, where no kubelet runs (`make run`).

It creates the same Job as the cluster executor, so the name still locks the slot and the Job still records the
run; then it plays kubelet and Job controller: it runs `dbb-backup` as a subprocess with the Job's own arguments and
environment (Secrets resolved, `/backups` mapped to a local folder), and writes the outcome onto the Job (the
runner's result as an annotation, Complete or Failed in its status). The reconciler then reads it exactly as it
reads a real Job. This executor reads Secrets, as a kubelet does; the cluster executor never does, which is why it
lives here and not in the operator. An archiver's Deployment is created as in a cluster, and its Pod played the
same way: `dbb-backup archive` runs as a subprocess, restarted when it exits (restartPolicy Always), with its status
port moved to a free loopback port, which `archiver_status` asks. No cluster DNS resolves the database's Service
name here: host aliases (`hack.sandbox.aliases`) stand in for it, in the subprocess's argv only; the Job keeps the
in-cluster name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import BACKUP_ROOT
from common.kube import MERGE_PATCH, body, raw, sent, timeout
from hack.harness.databases import MariaDBServer, PostgresServer
from hack.sandbox.aliases import HostAlias, apply_aliases
from reconciler.executor import JobExecutor
from reconciler.outcomes import ANNOTATION_RESULT

__all__ = ["LocalExecutor"]

log = structlog.get_logger("sandbox.executor")

TERMINATION_GRACE_SECONDS = 30  # the Pod default


class LocalExecutor(JobExecutor):
    def __init__(
        self,
        api: client.ApiClient,
        backup_root: Path,
        runner: str | None = None,
        host_aliases: Mapping[str, HostAlias] | None = None,
    ) -> None:
        """`host_aliases`: by canonical name (`hack.sandbox.aliases.alias_table`)."""
        super().__init__(api)
        self._core = client.CoreV1Api(api)
        self._root = backup_root
        self._runner = runner or str(Path(sys.executable).parent / "dbb-backup")
        self._aliases = dict(host_aliases or {})
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._archivers: dict[tuple[str, str], tuple[asyncio.Task[None], int]] = {}  # Deployment -> (run, port)

    async def start(self, job: dict[str, Any]) -> dict[str, Any]:
        created = await super().start(job)
        key = (created["metadata"]["namespace"], created["metadata"]["name"])
        task = asyncio.create_task(self._run(created), name=f"local:{key[1]}")
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))
        return created

    async def stop(self, namespace: str, name: str) -> None:
        # Playing kubelet and garbage collector: the run is killed and awaited, then the Job deleted.
        task = self._running.get((namespace, name))
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await sent(
                self._batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Background", _preload_content=False, **timeout()
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def close(self) -> None:
        tasks = list(self._running.values()) + [task for task, _ in self._archivers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await super().close()

    async def apply_archiver(self, deployment: dict[str, Any], exists: bool) -> None:
        await super().apply_archiver(deployment, exists)
        key = (deployment["metadata"]["namespace"], deployment["metadata"]["name"])
        await self._stop_archiver(key)  # Recreate: the old one is gone before the new one starts
        port = _free_port()
        task = asyncio.create_task(self._archive(deployment, port), name=f"local:{key[1]}")
        self._archivers[key] = (task, port)

    async def remove_archiver(self, namespace: str, name: str) -> None:
        await self._stop_archiver((namespace, name))
        await super().remove_archiver(namespace, name)

    async def archiver_status(self, namespace: str, name: str, pod: Mapping[str, Any] | None) -> dict[str, Any] | None:
        found = self._archivers.get((namespace, name))
        return None if found is None else await self.status_from(f"http://127.0.0.1:{found[1]}/status")

    async def _stop_archiver(self, key: tuple[str, str]) -> None:
        found = self._archivers.pop(key, None)
        if found is not None:
            found[0].cancel()
            await asyncio.gather(found[0], return_exceptions=True)

    async def _archive(self, deployment: dict[str, Any], port: int) -> None:
        """The archiver's Pod: its command run again whenever it ends, after a back-off (as the kubelet's)."""
        name = deployment["metadata"]["name"]
        pause = 1.0
        while True:
            with tempfile.TemporaryDirectory(prefix="dbb-archiver-") as scratch:
                argv, env = await self._command(deployment, Path(scratch))
                argv = [f"--status-port={port}" if a.startswith("--status-port=") else a for a in argv]
                process = await asyncio.create_subprocess_exec(
                    *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
                )
                try:
                    code = await process.wait()
                except asyncio.CancelledError:
                    await _stopped(process)
                    raise
            log.info("local archiver ended", deployment=name, exit_code=code, restart_in=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    async def _run(self, job: dict[str, Any]) -> None:
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        started = datetime.now(UTC)
        servers = contextlib.ExitStack()
        with tempfile.TemporaryDirectory(prefix="dbb-local-") as scratch:
            try:
                sidecar = _scratch_sidecar(job)
                argv, env = await self._command(job, Path(scratch))
                if sidecar is not None:
                    # The scratch server a kubelet would run beside the runner: a local server of the same engine.
                    server = await asyncio.to_thread(servers.enter_context, _local_server(sidecar))
                    argv, env = _pointed_at(server, sidecar, argv, env)
                code, result = await self._execute(argv, env, job, Path(scratch))
            except _Unsupported as error:
                code, result = 1, json.dumps({"status": "Failed", "reason": "LocalRunFailed", "message": str(error)})
            except Exception as error:  # anything at all: the Job must end, or it would stay active for ever
                log.exception("local run could not start", job=name)
                code, result = 1, f'{{"status":"Failed","reason":"LocalRunFailed","message":"{type(error).__name__}"}}'
            finally:
                await asyncio.to_thread(servers.close)
        await self._finish(namespace, name, started, code, result)

    async def _command(self, job: dict[str, Any], scratch: Path) -> tuple[list[str], dict[str, str]]:
        namespace = job["metadata"]["namespace"]
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(scratch), "TMPDIR": str(scratch)}
        for variable in container.get("env") or []:
            value = await self._env_value(namespace, variable)
            # The kubelet expands `$(VAR)` and `$$` in literal values too, from the variables defined before.
            env[variable["name"]] = _expand(value, env) if "value" in variable else value
        mounts = await self._project_volumes(namespace, pod, container, scratch)
        if any(m["mountPath"] == BACKUP_ROOT for m in container.get("volumeMounts") or []):
            mounts[BACKUP_ROOT] = self._root  # the backup volume: a local folder (read-only or not, as mounted)
        env = {name: _localize(value, mounts) for name, value in env.items()}
        argv = [self._runner if container["args"][0] == "dbb-backup" else container["args"][0]]
        for argument in container["args"][1:]:
            argument = _expand(argument, env)
            if argument.startswith("--termination-log="):
                argument = f"--termination-log={scratch / 'termination-log'}"
            else:
                argument = _localize(argument, mounts)
            argv.append(argument)
        argv, alias = apply_aliases(argv, self._aliases)
        if alias is not None:
            log.info("local host alias used", job=job["metadata"]["name"], host=alias.name, target=alias.target)
        return argv, env

    async def _execute(
        self, argv: list[str], env: dict[str, str], job: dict[str, Any], scratch: Path
    ) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        deadline = job["spec"].get("activeDeadlineSeconds")
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=deadline)
        except TimeoutError:
            process.kill()
            await process.wait()
            return 1, '{"status":"Failed","reason":"DeadlineExceeded","message":"activeDeadlineSeconds passed"}'
        except asyncio.CancelledError:
            await _stopped(process)  # Replace, shutdown
            raise
        termination = scratch / "termination-log"
        text = termination.read_text() if termination.exists() else ""
        # As terminationMessagePolicy FallbackToLogsOnError: no result written, the log's tail stands in.
        return process.returncode or 0, text or (stderr or stdout).decode(errors="replace")[-2000:]

    async def _finish(self, namespace: str, name: str, started: datetime, code: int, result: str) -> None:
        batch = self._batch
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        await batch.patch_namespaced_job(
            name,
            namespace,
            body({"metadata": {"annotations": {ANNOTATION_RESULT: result[-4000:]}}}),
            **MERGE_PATCH,
            **timeout(),
        )
        begun = started.strftime("%Y-%m-%dT%H:%M:%SZ")
        if code == 0:
            conditions = [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
                {"type": "Complete", "status": "True", "lastTransitionTime": stamp},
            ]
            status: dict[str, Any] = {"startTime": begun, "completionTime": stamp, "succeeded": 1}
        else:
            conditions = [
                {
                    "type": "FailureTarget",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "the backup run failed",
                    "lastTransitionTime": stamp,
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "the backup run failed",
                    "lastTransitionTime": stamp,
                },
            ]
            status = {"startTime": begun, "failed": 1}
        status["conditions"] = conditions
        await batch.patch_namespaced_job_status(name, namespace, body({"status": status}), **MERGE_PATCH, **timeout())
        log.info("local run finished", job=name, exit_code=code, seconds=round((now - started).total_seconds(), 1))

    async def _env_value(self, namespace: str, variable: Mapping[str, Any]) -> str:
        if "value" in variable:
            return str(variable["value"])
        reference = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
        return await self._secret_value(namespace, reference["name"], reference["key"])

    async def _secret_value(self, namespace: str, name: str, key: str) -> str:
        secret = await raw(self._core.read_namespaced_secret(name, namespace, _preload_content=False, **timeout()))
        return base64.b64decode((secret.get("data") or {})[key]).decode()

    async def _project_volumes(
        self, namespace: str, pod: Mapping[str, Any], container: Mapping[str, Any], scratch: Path
    ) -> dict[str, Path]:
        """Each Secret or ConfigMap volume the container mounts, written into the scratch folder as the kubelet
        projects it (the listed items at their paths, or every key; files 0600): {mount path: local folder}."""
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        found: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"]) or {}
            if "secret" in volume:
                source = volume["secret"]
                data = await self._secret_data(namespace, source["secretName"])
            elif "configMap" in volume:
                source = volume["configMap"]
                data = await self._config_map_data(namespace, source["name"])
            else:
                continue
            folder = scratch / "volumes" / mount["name"]
            folder.mkdir(parents=True)
            for item in source.get("items") or [{"key": key, "path": key} for key in data]:
                descriptor = os.open(folder / item["path"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(data[item["key"]])
            found[mount["mountPath"]] = folder
        return found

    async def _secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        secret = await raw(self._core.read_namespaced_secret(name, namespace, _preload_content=False, **timeout()))
        return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}

    async def _config_map_data(self, namespace: str, name: str) -> dict[str, bytes]:
        found = await raw(self._core.read_namespaced_config_map(name, namespace, _preload_content=False, **timeout()))
        return {key: value.encode() for key, value in (found.get("data") or {}).items()}


# The variables by which the engines' official images take their superuser's password, as the scratch sidecar sets it.
_SCRATCH_PASSWORDS = ("MARIADB_ROOT_PASSWORD", "POSTGRES_PASSWORD")


def _scratch_sidecar(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Pod's scratch server (`scratch-db`), or None; any other sidecar only a kubelet runs."""
    sidecars = job["spec"]["template"]["spec"].get("initContainers") or []
    others = [c["name"] for c in sidecars if c["name"] != "scratch-db"]
    if others:
        raise _Unsupported(f"the local executor runs no sidecar ({', '.join(others)}): use a cluster")
    return sidecars[0] if sidecars else None


def _local_server(sidecar: Mapping[str, Any]) -> contextlib.AbstractContextManager[MariaDBServer | PostgresServer]:
    names = {variable["name"] for variable in sidecar.get("env") or []}
    if "MARIADB_ROOT_PASSWORD" in names:
        return MariaDBServer.start()
    if "POSTGRES_PASSWORD" in names:
        return PostgresServer.start()
    raise _Unsupported(f"the local executor cannot tell the engine of the scratch server {sidecar.get('image')!r}")


def _pointed_at(
    server: MariaDBServer | PostgresServer, sidecar: Mapping[str, Any], argv: list[str], env: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The runner's command and environment with the scratch server's port, user and password those of `server`:
    the password the Job derived for its sidecar is replaced wherever the runner's environment holds it."""
    password = next(v.get("value") for v in sidecar["env"] if v["name"] in _SCRATCH_PASSWORDS)
    replaced = {"--scratch-port": str(server.port), "--scratch-user": server.user, "--scratch-host": server.host}
    pointed = [
        f"{flag}={replaced[flag]}" if (flag := a.partition("=")[0]) in replaced and "=" in a else a for a in argv
    ]
    return pointed, {name: server.password if value == password else value for name, value in env.items()}


class _Unsupported(Exception):
    pass


async def _stopped(process: asyncio.subprocess.Process) -> None:
    """A run stopped as the kubelet stops a container: SIGTERM, then SIGKILL after the grace period."""
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=TERMINATION_GRACE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _localize(value: str, mounts: Mapping[str, Path]) -> str:
    """A path under a mounted volume (`/var/run/.../s3-ca/ca.crt`, also as `--flag=path`), as the local copy's."""
    for mount, folder in mounts.items():
        head, sep, path = value.partition("=") if value.startswith("--") else ("", "", value)
        if path == mount or path.startswith(mount + "/"):
            return f"{head}{sep}{folder}{path.removeprefix(mount)}"
    return value


def _expand(argument: str, env: Mapping[str, str]) -> str:
    """The kubelet's expansion of container args: `$$` is `$`, `$(VAR)` is VAR's value (left as is if unset)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return "$" if name is None else env.get(name, match.group(0))

    return re.sub(r"\$(?:\$|\(([A-Za-z_][A-Za-z0-9_]*)\))", one, argument)
