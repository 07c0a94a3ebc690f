"""Scheduled verification end to end below the cluster: the reconciler (in process, the local executor playing
kubelet) on the real API server, the real PostgreSQL, backups in a folder. A backup that verified when it was
written is later changed on disk, then deleted; each scheduled check after that says so in status, in the Verified
condition and in a Warning Event, and deletes nothing. The clock is moved a minute ahead for each slot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from common.constants import ANNOTATION_BACKUP_NOW, GROUP, PLURAL, VERSION
from common.kube import MERGE_PATCH, api_client, body, raw
from hack.harness.controlplane import ControlPlane
from hack.harness.databases import PostgresServer
from tests.backup.test_s3_reconciler import reconciler, status_of, until
from tests.fixtures import databasebackup, governing_service, statefulset


class Clock:
    """Now, plus a shift the test moves forward a minute at a time: each move makes the next slot due."""

    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


async def setup(api: client.ApiClient, namespace: str, pg: PostgresServer, **spec: Any) -> None:
    """A StatefulSet, its Service and credentials, and DatabaseBackup `nightly` with `spec` added, asked to back up
    now and verified every minute."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    sts = statefulset(namespace=namespace)
    del sts["status"]
    await apps.create_namespaced_stateful_set(namespace, body(sts))
    await core.create_namespaced_service(namespace, body(governing_service(sts)))
    data = {"password": pg.password, "username": pg.user}
    await core.create_namespaced_secret(
        namespace, body({"metadata": {"name": "example-db-credentials"}, "stringData": data})
    )
    obj = databasebackup(
        namespace=namespace,
        schedule="@yearly",
        connection={"databases": ["shop"]},
        verify={"schedule": "* * * * *", "backups": 2},
        **spec,
    )
    obj["metadata"]["annotations"] = {ANNOTATION_BACKUP_NOW: "first"}
    await client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(obj))


async def next_slot(api: client.ApiClient, namespace: str, clock: Clock, nudge: int) -> None:
    """A minute later on the reconciler's clock, and a touch of the object so that it looks now."""
    clock.shift += timedelta(minutes=1)
    patch = {"metadata": {"annotations": {"test.databases.test.io/nudge": str(nudge)}}}
    custom = client.CustomObjectsApi(api)
    await custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "nightly", body(patch), **MERGE_PATCH
    )


async def verification_after(api: client.ApiClient, namespace: str, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The lastVerification of a later Job than `previous`'s."""

    async def found() -> dict[str, Any] | None:
        last: dict[str, Any] | None = (await status_of(api, namespace)).get("lastVerification")
        return last if last and (previous is None or last["job"] != previous["job"]) else None

    result: dict[str, Any] = await until(found)
    return result


def flip_a_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_a_scheduled_verification_finds_a_changed_backup_then_a_deleted_one_and_deletes_nothing(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    clock = Clock()
    api = await api_client(control_plane.kubeconfig)
    async with api:
        await setup(api, namespace, pg)
        async with reconciler(api, namespace, pg, root, clock):

            async def backed_up() -> dict[str, Any] | None:
                last: dict[str, Any] | None = (await status_of(api, namespace)).get("lastBackup")
                return last

            # The local executor maps /backups to `root`: the runner reports the file where it is here.
            name = (await until(backed_up))["file"]
            file = Path(name)
            assert file.parent == root / "example-db"

            # Checks run every minute of the real clock too: one that ran before the backup existed found none.
            before = (await status_of(api, namespace)).get("lastVerification")
            await next_slot(api, namespace, clock, 1)
            passed = await verification_after(api, namespace, before)
            if passed["result"] == "NoBackups":  # that one, finished only now
                await next_slot(api, namespace, clock, 1)
                passed = await verification_after(api, namespace, passed)
            assert passed["result"] == "Passed", passed
            assert passed["backups"] == [{"file": name, "result": "Passed"}]

            flip_a_byte(file)
            await next_slot(api, namespace, clock, 2)
            changed = await verification_after(api, namespace, passed)
            assert changed["result"] == "Failed", changed
            [verdict] = changed["backups"]
            assert (verdict["file"], verdict["reason"]) == (name, "VerifyFailed")
            assert files_in(file.parent) == [file.name, f"{file.name}.json"]  # a failed check deletes nothing
            status = await status_of(api, namespace)
            conditions = {c["type"]: c for c in status["conditions"]}
            assert (conditions["Verified"]["status"], conditions["Verified"]["reason"]) == ("False", "VerifyFailed")
            assert name in conditions["Verified"]["message"]
            assert status["phase"] == "Succeeded"  # the backup run itself did succeed

            await asyncio.to_thread(file.unlink)
            await next_slot(api, namespace, clock, 3)
            deleted = await verification_after(api, namespace, changed)
            assert [(b["file"], b["reason"]) for b in deleted["backups"]] == [(name, "BackupMissing")]
            assert files_in(file.parent) == [f"{file.name}.json"]  # its manifest stays, for whoever looks into it

            async def warnings() -> list[str] | None:
                events = await raw(client.CoreV1Api(api).list_namespaced_event(namespace, _preload_content=False))
                found = [e["message"] for e in events["items"] if e["reason"] == "VerificationFailed"]
                return found if len(found) >= 2 else None

            messages = await until(warnings)
            assert any("VerifyFailed" in m and name in m for m in messages), messages
            assert any("BackupMissing" in m for m in messages), messages
