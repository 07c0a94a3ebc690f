"""`dbb-backup run --output-url s3://...` against a real S3-compatible store (SeaweedFS) and the real database
servers: streamed, verified by reading the object back, the manifest last, retention per owner, and errors that name
the endpoint and bucket without a secret."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hack.harness.content import mariadb_fingerprint, pg_fingerprint
from hack.harness.databases import MariaDBServer, PostgresServer
from hack.harness.objectstore import SECRET_KEY, SeaweedFS
from tests.backup.cli import Outcome, command, connection_args, dbb, engine_of, password_env, restore, wait_for
from tests.backup.test_failures import dump_is_waiting, table_locked

Server = PostgresServer | MariaDBServer


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Server:
    found: Server = request.getfixturevalue("pg" if request.param == "postgresql" else "mariadb")
    return found


def run_to_s3(server: Server, store: SeaweedFS, url: str, *flags: str, env: dict[str, str] | None = None) -> Outcome:
    args = ["run", "--engine", engine_of(server), *connection_args(server), "--output-url", url, "--database", "shop"]
    return dbb(*args, *flags, env=password_env(server) | store.env | (env or {}))


def fetch(store: SeaweedFS, url: str, folder: Path) -> Path:
    """The object and its manifest, downloaded side by side, as `dbb-backup restore` reads them from a folder."""
    key = url.removeprefix(f"s3://{store.bucket}/")
    file = folder / key.rsplit("/", 1)[-1]
    client = store.client()
    for suffix in ("", ".json"):
        body = client.get_object(Bucket=store.bucket, Key=key + suffix)["Body"].read()
        Path(str(file) + suffix).write_bytes(body)
    return file


@pytest.mark.parametrize(
    "flags",
    [["--compression", "gzip"], ["--compression", "zstd", "--encrypt", "--s3-path-style"]],
    ids=["gzip", "zstd-encrypted-path-style"],
)
def test_a_backup_streams_into_the_bucket_and_restores_to_the_same_content(
    server: Server, seaweedfs: SeaweedFS, tmp_path: Path, key_file: Path, flags: list[str]
) -> None:
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    extra = [f for f in flags if f != "--encrypt"]
    key = key_file if "--encrypt" in flags else None
    if key is not None:
        extra += ["--encryption-key-file", str(key)]
    outcome = run_to_s3(server, seaweedfs, f"s3://{seaweedfs.bucket}/{prefix}", "--verify", *extra)
    assert outcome.code == 0, outcome.stderr
    url = outcome.result["file"]
    assert url.startswith(f"s3://{seaweedfs.bucket}/{prefix}/shop-")
    name = url.rsplit("/", 1)[-1]
    assert seaweedfs.keys(prefix) == [f"{prefix}/{name}", f"{prefix}/{name}.json"]
    assert seaweedfs.uploads(prefix) == []
    assert outcome.result["verified"] is True
    # Restored straight from the bucket (checked whole first, then streamed), and the same from a download.
    target = f"s3_{uuid.uuid4().hex[:8]}"
    args = ["restore", url, *connection_args(server), "--database", target]
    args += ["--key-file", str(key)] if key is not None else []
    restored = dbb(*args, env=password_env(server) | seaweedfs.env)
    assert restored.code == 0, restored.stderr
    assert restored.result["file"] == url
    downloaded = f"s3_{uuid.uuid4().hex[:8]}"
    assert restore(server, fetch(seaweedfs, url, tmp_path), downloaded, key=key).code == 0
    server.drop_database(downloaded)
    if isinstance(server, PostgresServer):
        assert pg_fingerprint(server, target) == pg_fingerprint(server, "shop")
    else:
        assert mariadb_fingerprint(server, target) == mariadb_fingerprint(server, "shop")
    server.drop_database(target)


def test_server_side_encryption_covers_the_backup_and_its_manifest(pg: PostgresServer, seaweedfs: SeaweedFS) -> None:
    prefix = f"sse-{uuid.uuid4().hex[:8]}"
    outcome = run_to_s3(pg, seaweedfs, f"s3://{seaweedfs.bucket}/{prefix}", "--verify", "--s3-sse", "AES256")
    assert outcome.code == 0, outcome.stderr
    key = outcome.result["file"].removeprefix(f"s3://{seaweedfs.bucket}/")
    client = seaweedfs.client()
    for stored in (key, key + ".json"):
        assert client.head_object(Bucket=seaweedfs.bucket, Key=stored).get("ServerSideEncryption") == "AES256"
    verified = dbb("verify", outcome.result["file"], env=password_env(pg) | seaweedfs.env)
    assert verified.code == 0, verified.stderr


def test_wrong_keys_name_the_endpoint_and_bucket_and_no_secret(pg: PostgresServer, seaweedfs: SeaweedFS) -> None:
    wrong = "Wr0ng-secret-key-never-shown"
    outcome = run_to_s3(pg, seaweedfs, f"s3://{seaweedfs.bucket}/x", env={"AWS_SECRET_ACCESS_KEY": wrong})
    assert outcome.code == 1
    assert outcome.result["reason"] == "AuthenticationFailed"
    assert f"s3://{seaweedfs.bucket} at {seaweedfs.endpoint}" in outcome.result["message"]
    for secret in (wrong, SECRET_KEY, pg.password):
        assert secret not in outcome.stdout + outcome.stderr


def test_a_missing_bucket_fails_before_the_dump(pg: PostgresServer, seaweedfs: SeaweedFS) -> None:
    outcome = run_to_s3(pg, seaweedfs, "s3://no-such-bucket/x")
    assert outcome.code == 1
    assert outcome.result["reason"] == "StorageError"
    assert outcome.result["message"] == f"s3://no-such-bucket at {seaweedfs.endpoint}: NoSuchBucket: no such bucket"


def test_retention_in_a_bucket_keeps_this_owners_newest(pg: PostgresServer, seaweedfs: SeaweedFS) -> None:
    prefix = f"keep-{uuid.uuid4().hex[:8]}"
    url = f"s3://{seaweedfs.bucket}/{prefix}"
    owner = ["--verify", "--keep-last", "1", "--owner", "shop/nightly", "--owner-uid", "uid-nightly"]
    names: list[str] = []
    for _ in range(2):
        if names:  # backup names have whole seconds
            wait_for(lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") not in names[-1], "the next second")
        outcome = run_to_s3(pg, seaweedfs, url, *owner)
        assert outcome.code == 0, outcome.stderr
        names.append(outcome.result["file"].rsplit("/", 1)[-1])
    assert seaweedfs.keys(prefix) == [f"{prefix}/{names[-1]}", f"{prefix}/{names[-1]}.json"]


def test_several_postgresql_databases_become_a_set_of_objects_that_restores_from_the_bucket(
    pg: PostgresServer, seaweedfs: SeaweedFS, key_file: Path
) -> None:
    prefix = f"set-{uuid.uuid4().hex[:8]}"
    args = ["run", "--engine", "postgresql", *connection_args(pg), "--output-url", f"s3://{seaweedfs.bucket}/{prefix}"]
    flags = ["--database", "all", "--name", "cluster", "--compression", "zstd", "--verify"]
    flags += ["--encryption-key-file", str(key_file)]
    outcome = dbb(*args, *flags, env=password_env(pg) | seaweedfs.env)
    assert outcome.code == 0, outcome.stderr
    url = outcome.result["file"]
    name = url.rsplit("/", 1)[-1]
    assert name.startswith("cluster-")
    assert name.endswith(".set.enc")
    # No object named after the set: one object per member under it, and the manifest of the set.
    keys = seaweedfs.keys(prefix)
    assert f"{prefix}/{name}/globals.sql.zst.enc" in keys
    assert {f"{prefix}/{name}/databases/{db}.dump.zst.enc" for db in ("shop", "crm")} <= set(keys)
    assert f"{prefix}/{name}" not in keys
    assert seaweedfs.uploads(prefix) == []
    keys.remove(manifest_key := f"{prefix}/{name}.json")
    manifest = json.loads(seaweedfs.client().get_object(Bucket=seaweedfs.bucket, Key=manifest_key)["Body"].read())
    assert manifest["layout"] == "set"
    assert sorted(f"{prefix}/{name}/{m['name']}" for m in manifest["members"]) == keys
    assert all(m["size"] > 0 and len(m["sha256"]) == 64 for m in manifest["members"])
    # Verified and restored straight from the bucket, each database under a new name.
    env = password_env(pg) | seaweedfs.env
    verified = dbb("verify", url, "--key-file", str(key_file), env=env)
    assert verified.code == 0, verified.stderr
    assert {"shop", "crm"} <= set(verified.result["tables"])
    shop, crm = (f"s3_{uuid.uuid4().hex[:8]}" for _ in range(2))
    restore_args = ["restore", url, *connection_args(pg), "--key-file", str(key_file)]
    restored = dbb(*restore_args, "--database", f"shop={shop}", "--database", f"crm={crm}", env=env)
    assert restored.code == 0, restored.stderr
    assert restored.result["databases"] == {"shop": shop, "crm": crm}
    assert pg_fingerprint(pg, shop) == pg_fingerprint(pg, "shop")
    assert pg_fingerprint(pg, crm) == pg_fingerprint(pg, "crm")
    pg.drop_database(shop)
    pg.drop_database(crm)
    listed = dbb("list", f"s3://{seaweedfs.bucket}/{prefix}", env=env)
    [entry] = listed.result["backups"]
    assert (entry["file"], entry["present"], entry["verified"]) == (url, True, True)
    assert entry["size"] == sum(m["size"] for m in manifest["members"])


@pytest.mark.parametrize("damage", ["changed", "deleted"])
def test_a_damaged_member_of_a_set_is_found_and_nothing_is_restored(
    pg: PostgresServer, seaweedfs: SeaweedFS, damage: str
) -> None:
    prefix = f"setdmg-{uuid.uuid4().hex[:8]}"
    args = ["run", "--engine", "postgresql", *connection_args(pg), "--output-url", f"s3://{seaweedfs.bucket}/{prefix}"]
    env = password_env(pg) | seaweedfs.env
    outcome = dbb(*args, "--database", "shop", "--database", "crm", "--name", "pair", env=env)
    assert outcome.code == 0, outcome.stderr
    url = outcome.result["file"]
    member = url.removeprefix(f"s3://{seaweedfs.bucket}/") + "/databases/crm.dump"
    client = seaweedfs.client()
    if damage == "changed":
        data = bytearray(client.get_object(Bucket=seaweedfs.bucket, Key=member)["Body"].read())
        data[len(data) // 2] ^= 0x01
        client.put_object(Bucket=seaweedfs.bucket, Key=member, Body=bytes(data))
    else:
        client.delete_object(Bucket=seaweedfs.bucket, Key=member)
    verified = dbb("verify", url, env=env)
    assert verified.code == 1
    assert verified.result["reason"] in ("VerifyFailed", "StorageError")
    assert "databases/crm.dump" in verified.result["message"]
    before = pg.databases()
    target = f"s3_{uuid.uuid4().hex[:8]}"
    restored = dbb("restore", url, *connection_args(pg), "--database", f"shop={target}", env=env)
    assert restored.code == 1
    assert "databases/crm.dump" in restored.result["message"]
    assert pg.databases() == before, "the set is checked whole before the first database is restored"


def test_retention_and_orphans_in_a_bucket_count_sets_as_backups(pg: PostgresServer, seaweedfs: SeaweedFS) -> None:
    prefix = f"setkeep-{uuid.uuid4().hex[:8]}"
    args = ["run", "--engine", "postgresql", *connection_args(pg), "--output-url", f"s3://{seaweedfs.bucket}/{prefix}"]
    owner = ["--database", "shop", "--database", "crm", "--name", "pair", "--verify", "--keep-last", "1"]
    owner += ["--owner", "shop/pair", "--owner-uid", "uid-pair", "--stale-upload-age", "0"]
    env = password_env(pg) | seaweedfs.env
    client = seaweedfs.client()
    # What runs that died before their manifest left: a member of ours, a backup of ours, and one of another owner.
    ours = {"Metadata": {"dbb-owner-uid": "uid-pair"}}
    client.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/pair-20200101T000000Z.set/globals.sql", Body=b"x", **ours)
    client.put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/pair-20200102T000000Z.dump", Body=b"x", **ours)
    theirs = f"{prefix}/pair-20200103T000000Z.dump"
    client.put_object(Bucket=seaweedfs.bucket, Key=theirs, Body=b"x", Metadata={"dbb-owner-uid": "uid-other"})
    names: list[str] = []
    for _ in range(2):
        if names:  # backup names have whole seconds
            wait_for(lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") not in names[-1], "the next second")
        outcome = dbb(*args, *owner, env=env)
        assert outcome.code == 0, outcome.stderr
        names.append(outcome.result["file"].rsplit("/", 1)[-1])
    newest = f"{prefix}/{names[-1]}"
    members = [f"{newest}/databases/{db}.dump" for db in ("crm", "shop")]
    assert seaweedfs.keys(prefix) == sorted([*members, f"{newest}.json", theirs])


def test_a_run_of_app_leaves_the_uploads_and_orphans_of_app_2_alone(pg: PostgresServer, seaweedfs: SeaweedFS) -> None:
    """Two DatabaseBackups `app` and `app-2` share a prefix: `app-` starts the names of both. What a killed run of
    `app` left goes with `app`'s next run; `app-2`'s upload (perhaps still running) and orphan stay."""
    prefix = f"names-{uuid.uuid4().hex[:8]}"
    client = seaweedfs.client()
    uploads = {
        "app": [f"{prefix}/app-20200101T000000Z.dump", f"{prefix}/app-20200101T000000Z.set/databases/shop.dump"],
        "app-2": [f"{prefix}/app-2-20200101T000000Z.dump", f"{prefix}/app-2-20200101T000000Z.set/globals.sql"],
    }
    for key in uploads["app"] + uploads["app-2"]:
        client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=key)
    # Orphans (a backup whose run died before its manifest), both carrying the uid of `app`: only the name tells.
    same_uid = {"Metadata": {"dbb-owner-uid": "uid-app"}}
    ours, theirs = f"{prefix}/app-20200102T000000Z.dump", f"{prefix}/app-2-20200102T000000Z.dump"
    for key in (ours, theirs):
        client.put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"x", **same_uid)
    owner = ["--name", "app", "--owner", "shop/app", "--owner-uid", "uid-app", "--stale-upload-age", "0"]
    outcome = run_to_s3(pg, seaweedfs, f"s3://{seaweedfs.bucket}/{prefix}", *owner)
    assert outcome.code == 0, outcome.stderr
    assert seaweedfs.uploads(prefix) == sorted(uploads["app-2"])
    new = outcome.result["file"].removeprefix(f"s3://{seaweedfs.bucket}/")
    assert seaweedfs.keys(prefix) == sorted([theirs, new, new + ".json"])


@pytest.fixture(scope="module")
def locked_database(pg: PostgresServer) -> str:
    """`s3slow`: a table the test locks, so that a run waits in the middle of its upload."""
    pg.sql("CREATE DATABASE s3slow")
    pg.sql(
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g; CREATE TABLE zz_locked (id int);", "s3slow"
    )
    return "s3slow"


def test_a_run_killed_mid_upload_leaves_no_object_and_the_next_run_no_upload(
    pg: PostgresServer, seaweedfs: SeaweedFS, locked_database: str
) -> None:
    prefix = f"killed-{uuid.uuid4().hex[:8]}"
    url = f"s3://{seaweedfs.bucket}/{prefix}"
    args = ["run", "--engine", "postgresql", *connection_args(pg), "--output-url", url, "--database", locked_database]
    env = password_env(pg) | seaweedfs.env
    with table_locked(pg, locked_database, "zz_locked"):
        runner = subprocess.Popen([command(), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: seaweedfs.uploads(prefix) != [] and dump_is_waiting(pg), "the run to be mid-upload")
        runner.send_signal(signal.SIGKILL)  # no `finally` runs: the upload stays incomplete
        runner.wait()
    assert seaweedfs.keys(prefix) == [], "an incomplete upload is no object"
    assert len(seaweedfs.uploads(prefix)) == 1
    outcome = dbb(*args, "--stale-upload-age", "0", env=env)
    assert outcome.code == 0, outcome.stderr
    assert seaweedfs.uploads(prefix) == []
    assert len(seaweedfs.keys(prefix)) == 2  # the new backup and its manifest


def test_a_changed_object_is_not_restored_and_fails_as_changed(
    pg: PostgresServer, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    prefix = f"changed-{uuid.uuid4().hex[:8]}"
    outcome = run_to_s3(pg, seaweedfs, f"s3://{seaweedfs.bucket}/{prefix}", "--verify")
    assert outcome.code == 0, outcome.stderr
    url = outcome.result["file"]
    key = url.removeprefix(f"s3://{seaweedfs.bucket}/")
    client = seaweedfs.client()
    data = bytearray(client.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=seaweedfs.bucket, Key=key, Body=bytes(data))
    target = f"s3_{uuid.uuid4().hex[:8]}"
    before = pg.databases()
    restored = dbb("restore", url, *connection_args(pg), "--database", target, env=password_env(pg) | seaweedfs.env)
    assert restored.code == 1
    assert restored.result["reason"] == "VerifyFailed"
    assert "is not the manifest's" in restored.result["message"]
    assert pg.databases() == before


def test_list_shows_each_backup_with_its_time_size_owner_and_verification(
    pg: PostgresServer, seaweedfs: SeaweedFS, backups: Path
) -> None:
    prefix = f"list-{uuid.uuid4().hex[:8]}"
    owner = ["--verify", "--owner", "shop/nightly", "--owner-uid", "uid-nightly"]
    url = run_to_s3(pg, seaweedfs, f"s3://{seaweedfs.bucket}/{prefix}", *owner).result["file"]
    seaweedfs.client().put_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/shop-20200101T000000Z.dump", Body=b"x")
    listed = dbb("list", f"s3://{seaweedfs.bucket}/{prefix}", env=password_env(pg) | seaweedfs.env)
    assert listed.code == 0, listed.stderr
    [entry] = listed.result["backups"]  # the file without a manifest is an unfinished run, not a backup
    assert entry["file"] == url
    assert entry["owner"] == "shop/nightly"
    assert entry["verified"] is True
    assert entry["present"] is True
    assert entry["size"] > 0
    assert entry["time"].endswith("Z")
    verified = dbb("verify", url, env=password_env(pg) | seaweedfs.env)
    assert verified.code == 0, verified.stderr
    assert (verified.result["status"], verified.result["tables"]) == ("Verified", {"shop": 4})
    # The same for a folder.
    args = ["run", "--engine", "postgresql", *connection_args(pg), "--output-dir", str(backups), "--database", "shop"]
    file = dbb(*args, "--verify", env=password_env(pg)).result["file"]
    [local] = dbb("list", str(backups), env=password_env(pg)).result["backups"]
    assert (local["file"], local["verified"], local["owner"]) == (file, True, None)
