"""Key rotation, end to end against a real PostgreSQL: back up with key A, rotate to B, back up again; both restore
with the keys of a Secret-like folder; with A removed, a check flags the old backup before anyone needs it."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from common.constants import ANNOTATION_BACKUP_NOW, GROUP, PLURAL, VERSION
from common.kube import MERGE_PATCH, api_client, body
from hack.harness.content import pg_fingerprint
from hack.harness.controlplane import ControlPlane
from hack.harness.databases import PostgresServer
from runner.crypto import fingerprint, load_key
from tests.backup.cli import backup, dbb, password_env, restore
from tests.backup.test_check import UID, check
from tests.backup.test_restore_reconciler import create_restore, finished, restorer
from tests.backup.test_retention_and_verify import next_second
from tests.backup.test_round_trips import new_name
from tests.backup.test_round_trips import scratch_names as scratch_names  # the fixture
from tests.backup.test_s3_reconciler import reconciler, status_of, until
from tests.backup.test_verification_reconciler import Clock, next_slot, setup, verification_after


def keys_folder(tmp_path: Path) -> Path:
    """Two keys, one file each, named by their ids, as a Secret volume lays out a Secret's entries."""
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "2026-11").write_text(os.urandom(32).hex() + "\n")
    (folder / "2026-12").write_text(os.urandom(32).hex() + "\n")
    return folder


def test_backups_written_before_a_rotation_stay_restorable_and_a_removed_key_is_flagged(
    pg: PostgresServer, tmp_path: Path, scratch_names: list[str]
) -> None:
    keys = keys_folder(tmp_path)
    folder = tmp_path / "backups"
    folder.mkdir()
    owner = {"name": "nightly", "owner": "ns/nightly", "owner_uid": UID, "verify": None}
    old = backup(pg, folder, "shop", encryption_key_file=str(keys / "2026-11"), **owner)
    next_second(old.name)
    new = backup(pg, folder, "shop", encryption_key_file=str(keys / "2026-12"), **owner)

    # Each manifest names its key by id and fingerprint, never the key itself.
    for file, key_id in ((old, "2026-11"), (new, "2026-12")):
        manifest = json.loads(Path(f"{file}.json").read_text())
        key = load_key(keys / key_id)
        assert (manifest["keyId"], manifest["keyFingerprint"]) == (key_id, fingerprint(key.secret))
        assert key.secret.hex() not in json.dumps(manifest)

    # Both restore with the folder: each file's header picks its own key.
    for file in (old, new):
        target = new_name(scratch_names)
        outcome = restore(pg, file, target, key_dir=keys)
        assert outcome.code == 0, outcome.stderr
        assert pg_fingerprint(pg, target) == pg_fingerprint(pg, "shop")
    listed = dbb("list", str(folder), env=password_env(pg))
    assert [(b["keyId"], b["encrypted"]) for b in listed.result["backups"]] == [("2026-11", True), ("2026-12", True)]
    both = check(str(folder), "--backups", "2", "--key-dir", str(keys))
    assert both.code == 0, both.stderr
    assert [c["result"] for c in both.result["checked"]] == ["Passed", "Passed"]

    # Key 2026-11 leaves the Secret. Only the newest backup is checked whole, yet the old one is reported, by the
    # key it needs; a restore of it names the key ids it was given.
    (keys / "2026-11").unlink()
    flagged = check(str(folder), "--backups", "1", "--key-dir", str(keys))
    assert flagged.code == 1
    assert flagged.result["status"] == "VerifyFailed"
    assert flagged.result["keyMissing"] == 1
    newest, oldest = flagged.result["checked"]
    assert (newest["file"], newest["result"]) == (str(new), "Passed")
    assert (oldest["file"], oldest["result"], oldest["reason"]) == (str(old), "Failed", "KeyMissing")
    assert "key '2026-11'" in oldest["message"]
    assert "ids: '2026-12'" in oldest["message"]
    refused = restore(pg, old, new_name(scratch_names), key_dir=keys)
    assert refused.code == 1
    assert refused.result["reason"] == "DecryptFailed"
    assert "ids: '2026-12'" in refused.result["message"]


def test_a_backup_whose_manifest_predates_key_ids_is_matched_by_its_header(pg: PostgresServer, tmp_path: Path) -> None:
    keys = keys_folder(tmp_path)
    folder = tmp_path / "backups"
    folder.mkdir()
    owner = {"name": "nightly", "owner": "ns/nightly", "owner_uid": UID, "verify": None}
    old = backup(pg, folder, "shop", encryption_key_file=str(keys / "2026-11"), **owner)
    manifest_file = Path(f"{old}.json")
    manifest = json.loads(manifest_file.read_text())
    del manifest["keyId"], manifest["keyFingerprint"]
    manifest_file.write_text(json.dumps(manifest))
    next_second(old.name)
    backup(pg, folder, "shop", encryption_key_file=str(keys / "2026-12"), **owner)

    assert check(str(folder), "--backups", "1", "--key-dir", str(keys)).code == 0
    (keys / "2026-11").unlink()
    flagged = check(str(folder), "--backups", "1", "--key-dir", str(keys))
    assert flagged.code == 1
    assert flagged.result["checked"][-1]["reason"] == "KeyMissing"
    assert "written before keys had ids" in flagged.result["checked"][-1]["message"]


def test_decrypt_takes_a_key_folder(pg: PostgresServer, tmp_path: Path) -> None:
    keys = keys_folder(tmp_path)
    folder = tmp_path / "backups"
    folder.mkdir()
    file = backup(pg, folder, "shop", encryption_key_file=str(keys / "2026-12"))
    plain = tmp_path / "plain.dump"
    outcome = dbb("decrypt", str(file), "--key-dir", str(keys), "-o", str(plain), env=password_env(pg))
    assert outcome.code == 0, outcome.stderr
    assert plain.read_bytes().startswith(b"PGDMP")


async def test_the_operator_rotates_keys_and_its_check_flags_a_removed_one(
    control_plane: ControlPlane, namespace: str, pg: PostgresServer, tmp_path: Path
) -> None:
    """Through the reconciler (the local executor projecting the Secret as the kubelet would): a backup with key
    2026-11, a rotation to 2026-12 by editing keySecret.key, a second backup; status lists both with their keys;
    then 2026-11 leaves the Secret and the next scheduled check fails the old backup with KeyMissing."""
    clock = Clock()
    api = await api_client(control_plane.kubeconfig)
    async with api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        keys = {"2026-11": os.urandom(32).hex(), "2026-12": os.urandom(32).hex()}
        await core.create_namespaced_secret(namespace, body({"metadata": {"name": "backup-keys"}, "stringData": keys}))
        await setup(api, namespace, pg, encryption={"keySecret": {"name": "backup-keys", "key": "2026-11"}})
        root = tmp_path / "backups"
        async with reconciler(api, namespace, pg, root, clock), restorer(api, namespace, pg, root):

            async def backed_up(previous: str | None) -> dict[str, Any] | None:
                status = await status_of(api, namespace)
                last = status.get("lastBackup")
                return status if last and last["file"] != previous else None

            first = (await until(lambda: backed_up(None)))["lastBackup"]["file"]
            rotate = {
                "metadata": {"annotations": {ANNOTATION_BACKUP_NOW: "after-rotation"}},
                "spec": {"encryption": {"keySecret": {"name": "backup-keys", "key": "2026-12"}}},
            }
            await custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "nightly", body(rotate), **MERGE_PATCH
            )
            status = await until(lambda: backed_up(first))
            second = status["lastBackup"]["file"]
            assert [(b["file"], b["keyId"]) for b in status["backups"]] == [(second, "2026-12"), (first, "2026-11")]
            for file, key_id in ((first, "2026-11"), (second, "2026-12")):
                manifest = await asyncio.to_thread(Path(f"{file}.json").read_text)
                assert json.loads(manifest)["keyId"] == key_id

            # Both restore through DatabaseRestores after the rotation: each Job gets the whole Secret.
            for number, file in enumerate((first, second)):
                database = f"rotated_{uuid.uuid4().hex[:8]}"
                try:
                    mapping = {"databases": [{"from": "shop", "to": database}]}
                    source = {"databaseBackup": "nightly", "file": file}
                    await create_restore(api, namespace, f"restore-{number}", source=source, target=mapping)
                    restored = await finished(api, namespace, f"restore-{number}")
                    assert restored["phase"] == "Succeeded", restored
                    assert pg_fingerprint(pg, database) == pg_fingerprint(pg, "shop")
                finally:
                    pg.sql(f"DROP DATABASE IF EXISTS {database}")

            # Checks run every minute of the real clock too: one may have run before (finding no backup yet), or
            # begin before the key leaves. The check that counts is a later one, started after the key left.
            before = (await status_of(api, namespace)).get("lastVerification")
            await core.patch_namespaced_secret(
                "backup-keys", namespace, body({"data": {"2026-11": None}}), **MERGE_PATCH
            )
            await next_slot(api, namespace, clock, 1)
            checked = await verification_after(api, namespace, before)
            if checked["result"] in ("Passed", "NoBackups"):  # begun before the key left: the next one was not
                await next_slot(api, namespace, clock, 2)
                checked = await verification_after(api, namespace, checked)
            assert checked["result"] == "Failed", checked
            verdicts = {b["file"]: b for b in checked["backups"]}
            assert verdicts[second]["result"] == "Passed"
            assert (verdicts[first]["result"], verdicts[first]["reason"]) == ("Failed", "KeyMissing")
            assert "key '2026-11'" in verdicts[first]["message"]
            assert keys["2026-11"] not in json.dumps(await status_of(api, namespace))
