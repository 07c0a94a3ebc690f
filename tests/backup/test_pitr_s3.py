"""Point-in-time recovery with the archive and the backups in a bucket: `dbb-backup archive --output-url` against a
real S3-compatible store (SeaweedFS) and a real MariaDB with binary logging, and `restore --point-in-time` of an
s3:// backup."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard

from hack.harness.databases import MariaDBServer
from hack.harness.objectstore import SeaweedFS
from runner.crypto import Decryptor, load_keyring
from tests.backup.cli import Outcome, command, connection_args, dbb, password_env, wait_for
from tests.backup.test_pitr_mariadb import (
    BINLOG,
    aged_manifest,
    aged_name,
    assert_no_replay_crosses_the_gap,
    next_second,
    numbered_rows,
    rows_around_a_point,
    running,
    server_binlogs,
    server_bytes,
    written_rows,
)


@pytest.fixture(scope="module")
def binlogged() -> Iterator[MariaDBServer]:
    with MariaDBServer.start(settings=BINLOG) as server:
        server.sql("SET GLOBAL time_zone = '+00:00'")
        server.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id int PRIMARY KEY, at datetime(6))")
        yield server


@pytest.fixture
def prefix() -> str:
    return f"pitr-{uuid.uuid4().hex[:8]}"


def archiver(server: MariaDBServer, store: SeaweedFS, url: str, *flags: str, name: str = "shop") -> Any:
    """`dbb-backup archive --output-url` in the background (see `running`)."""
    args = ["archive", "--engine", "mysql", *connection_args(server), "--output-url", url, "--name", name, *flags]
    return running(
        subprocess.Popen(
            [command(), *args],
            env=password_env(server) | store.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )


def index_in(store: SeaweedFS, folder: str) -> dict[str, dict[str, Any]]:
    """The archive's entries and gap records under the key prefix `folder`: {name: content} (not its checkpoint)."""
    client, found = store.client(), {}
    for key in store.keys(folder + "/"):
        if key.endswith(".json") and not key.endswith("/complete.json"):
            try:
                body = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                continue  # a partial entry goes when its binlog closes
            found[key.rsplit("/", 1)[1]] = json.loads(body)
    return found


def stored(store: SeaweedFS, key: str) -> bytes:
    body: bytes = store.client().get_object(Bucket=store.bucket, Key=key)["Body"].read()
    return body


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_the_archiver_writes_the_folder_s_objects_and_entries_under_the_prefix(
    binlogged: MariaDBServer, seaweedfs: SeaweedFS, prefix: str, key_file: Path, encrypted: bool
) -> None:
    folder = f"{prefix}/shop-binlog"
    keyed = ["--encryption-key-file", str(key_file)] if encrypted else []
    # An upload a killed archiver left: the next run aborts it before it starts.
    client = seaweedfs.client()
    client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=f"{folder}/mysql-bin.000001.partial.zst")
    assert seaweedfs.uploads(folder) == [f"{folder}/mysql-bin.000001.partial.zst"]

    with archiver(binlogged, seaweedfs, f"s3://{seaweedfs.bucket}/{prefix}", "--max-lag", "2", *keyed):
        row = 10 if encrypted else 0  # each run writes rows of its own into the module's server
        binlogged.sql(f"INSERT INTO shop.orders VALUES ({row + 1}, NOW(6)); FLUSH BINARY LOGS")
        binlogged.sql(f"INSERT INTO shop.orders VALUES ({row + 2}, NOW(6))")
        open_file, position = binlogged.sql("SHOW MASTER STATUS").split("\t")[:2]
        closed = list(server_binlogs(binlogged))[:-1]
        wait_for(
            lambda: (
                index_in(seaweedfs, folder).get(f"{open_file}.partial.json", {}).get("binlogSize", 0) >= int(position)
                and all(f"{n}.json" in index_in(seaweedfs, folder) for n in closed)
            ),
            "the closed binlogs and the open one up to the insert in the bucket",
        )

    index = index_in(seaweedfs, folder)
    assert sorted(index) == sorted([f"{n}.json" for n in closed] + [f"{open_file}.partial.json"])
    # Each entry's objects: the first, and an open binlog's later pieces (`archivestore.Piece`), nothing else.
    objects = {name: [entry, *entry.get("pieces", [])] for name, entry in index.items()}
    assert seaweedfs.keys(folder + "/") == sorted(
        [f"{folder}/{name}" for name in [*index, "complete.json"]]
        + [f"{folder}/{part['object']}" for parts in objects.values() for part in parts]
    )
    checkpoint = json.loads(stored(seaweedfs, f"{folder}/complete.json"))
    assert checkpoint["binlog"] == open_file, checkpoint  # the archive held all the server had written then
    assert seaweedfs.uploads(folder) == []
    for name, entry in index.items():
        binlog = b""
        for part in objects[name]:
            data = stored(seaweedfs, f"{folder}/{part['object']}")
            assert (len(data), hashlib.sha256(data).hexdigest()) == (part["size"], part["sha256"]), name
            assert part["object"].endswith(".zst.enc" if encrypted else ".zst"), name
            if encrypted:
                data = Decryptor(load_keyring([key_file]), io.BytesIO(data)).read()
            binlog += zstandard.ZstdDecompressor().decompressobj().decompress(data)
        assert entry.get("keyId") == ("backup.key" if encrypted else None), name
        assert len(binlog) == entry["binlogSize"]
        if entry["closed"]:
            assert binlog == server_bytes(binlogged, entry["file"]), name
        else:  # the server's open file differs in its in-use flag, which it clears when it closes it
            assert binlog.startswith(b"\xfebin"), name


def test_an_archiver_killed_mid_stream_resumes_in_the_bucket_with_every_binlog_whole(
    binlogged: MariaDBServer, seaweedfs: SeaweedFS, prefix: str
) -> None:
    folder, url = f"{prefix}/shop-binlog", f"s3://{seaweedfs.bucket}/{prefix}"
    rows = itertools.count(100)

    def write_and_rotate() -> None:
        binlogged.sql(f"INSERT INTO shop.orders VALUES ({next(rows)}, NOW(6)); FLUSH BINARY LOGS")

    with archiver(binlogged, seaweedfs, url, "--max-lag", "2") as first:
        write_and_rotate()
        rotated = list(server_binlogs(binlogged))[-2]
        wait_for(lambda: f"{rotated}.json" in index_in(seaweedfs, folder), "a closed binlog in the bucket")
        first.send_signal(signal.SIGKILL)
        first.wait()
    write_and_rotate()  # written while no archiver runs
    with archiver(binlogged, seaweedfs, url, "--max-lag", "2"):
        write_and_rotate()
        closed = list(server_binlogs(binlogged))[:-1]
        wait_for(lambda: all(f"{n}.json" in index_in(seaweedfs, folder) for n in closed), "every closed binlog")

    index = index_in(seaweedfs, folder)
    for name in closed:
        data = stored(seaweedfs, f"{folder}/{index[f'{name}.json']['object']}")
        assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == server_bytes(binlogged, name), name
    assert [n for n in index if n.endswith(".partial.json")] == [f"{list(server_binlogs(binlogged))[-1]}.partial.json"]
    assert seaweedfs.uploads(folder) == []


def newest_in(store: SeaweedFS, folder: str) -> datetime:
    times = [e["lastEvent"] for e in index_in(store, folder).values() if e.get("lastEvent")]  # gap records have none
    return max((datetime.fromisoformat(t) for t in times), default=datetime.min.replace(tzinfo=UTC))


def pitr_from_s3(
    server: MariaDBServer, store: SeaweedFS, url: str, target: str, point: datetime, *flags: str
) -> Outcome:
    args = ["restore", url, *connection_args(server), "--database", target]
    args += ["--point-in-time", point.strftime("%Y-%m-%dT%H:%M:%SZ"), *flags]
    return dbb(*args, env=password_env(server) | store.env, timeout=120)


def test_a_backup_in_the_bucket_restores_to_a_point_in_time_from_the_archive_beside_it(
    binlogged: MariaDBServer, seaweedfs: SeaweedFS, prefix: str
) -> None:
    binlogged.sql("CREATE DATABASE ledger; CREATE TABLE ledger.rows (id int PRIMARY KEY, at datetime(6))")
    ids = itertools.count(1)

    def write(count: int) -> list[int]:
        done = []
        for _ in range(count):
            done.append(next(ids))
            binlogged.sql(f"INSERT INTO ledger.rows VALUES ({done[-1]}, NOW(6))")
            time.sleep(0.25)  # spreads the writes over several seconds
        return done

    write(3)
    location = f"s3://{seaweedfs.bucket}/{prefix}"
    with archiver(binlogged, seaweedfs, location, "--max-lag", "1", name="ledger"):
        run = ["run", "--engine", "mysql", *connection_args(binlogged), "--output-url", location]
        made = dbb(*run, "--database", "ledger", "--name", "ledger", env=password_env(binlogged) | seaweedfs.env)
        assert made.code == 0, made.stderr
        before = write(7)
        binlogged.sql("FLUSH BINARY LOGS")  # the replay crosses from one archived binlog into the next
        after = write(8)
        written = written_rows(binlogged, "ledger")
        point = (written[before[4]] + timedelta(seconds=1)).replace(microsecond=0)
        assert written[after[-1]] >= point
        last = max(written.values()).replace(microsecond=0)
        wait_for(lambda: newest_in(seaweedfs, f"{prefix}/ledger-binlog") >= last, "the archive to reach the last write")

    url = made.result["file"]
    beside = pitr_from_s3(binlogged, seaweedfs, url, "ledger_beside", point)
    named = pitr_from_s3(
        binlogged, seaweedfs, url, "ledger_named", point, "--binlog-archive", f"{location}/ledger-binlog"
    )

    expected = sorted(i for i, at in written.items() if at < point)
    assert beside.code == 0, beside.stderr
    assert named.code == 0, named.stderr
    assert sorted(written_rows(binlogged, "ledger_beside")) == expected
    assert sorted(written_rows(binlogged, "ledger_named")) == expected
    assert before[4] in expected
    assert after[-1] not in expected
    assert beside.result["replayedUntil"] == point.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_point_in_time_past_the_archive_in_the_bucket_is_refused_untouched(
    binlogged: MariaDBServer, seaweedfs: SeaweedFS, prefix: str
) -> None:
    location = f"s3://{seaweedfs.bucket}/{prefix}"
    run = ["run", "--engine", "mysql", *connection_args(binlogged), "--output-url", location, "--database", "shop"]
    made = dbb(*run, env=password_env(binlogged) | seaweedfs.env)
    assert made.code == 0, made.stderr
    late = datetime.now(UTC) + timedelta(hours=1)

    outcome = pitr_from_s3(binlogged, seaweedfs, made.result["file"], "shop_late", late)

    # No archiver ever wrote beside this backup: the archive has no binlog where the backup's snapshot sits.
    assert outcome.code == 1
    assert outcome.reason_line.startswith("dbb-backup: ArchiveGap: the archive has no mysql-bin."), outcome.stderr
    assert "shop_late" not in binlogged.databases()


def age_in_bucket(store: SeaweedFS, url: str, hours: int) -> str:
    """`test_pitr_mariadb.age` in a bucket: the backup at `url` and its manifest under the names of one taken
    `hours` earlier (copies, then the originals deleted). Returns the new URL."""
    client, key = store.client(), url.removeprefix(f"s3://{store.bucket}/")
    older = f"{key.rpartition('/')[0]}/{aged_name(key.rpartition('/')[2], hours)}"
    manifest = stored(store, key + ".json").decode()
    client.put_object(Bucket=store.bucket, Key=older + ".json", Body=aged_manifest(manifest, hours).encode())
    client.copy_object(Bucket=store.bucket, Key=older, CopySource={"Bucket": store.bucket, "Key": key})
    for gone in (key + ".json", key):
        client.delete_object(Bucket=store.bucket, Key=gone)
    return f"s3://{store.bucket}/{older}"


def in_the_bucket(
    server: MariaDBServer, store: SeaweedFS, prefix: str, database: str, *flags: str
) -> tuple[Callable[..., list[int]], str, str, dict[str, str], list[str]]:
    """For a test of `database` (created, with numbered rows) backed up and archived under `prefix`: its writer, the
    s3:// location, the archive's key prefix, the runs' environment and the `run` arguments (with `flags`)."""
    location = f"s3://{store.bucket}/{prefix}"
    run = ["run", "--engine", "mysql", *connection_args(server), "--output-url", location, "--database", database]
    return (
        numbered_rows(server, database),
        location,
        f"{prefix}/{database}-binlog",
        password_env(server) | store.env,
        [*run, "--name", database, *flags],
    )


def test_a_binlog_window_in_the_bucket_keeps_what_its_oldest_second_needs_and_prunes_older_binlogs(
    binlogged: MariaDBServer, seaweedfs: SeaweedFS, prefix: str
) -> None:
    write, location, folder, env, run = in_the_bucket(binlogged, seaweedfs, prefix, "s3window", "--verify")

    def backup_aged(hours: int) -> str:
        made = dbb(*run, env=env)
        assert made.code == 0, made.stderr
        return age_in_bucket(seaweedfs, made.result["file"], hours)

    with archiver(binlogged, seaweedfs, location, "--max-lag", "1", name="s3window"):
        write(3)
        oldest = backup_aged(7)
        binlogged.sql("FLUSH BINARY LOGS")
        write(3)
        next_second()
        needed = backup_aged(5)
        binlogged.sql("FLUSH BINARY LOGS")
        written, point = rows_around_a_point(binlogged, "s3window", write, lambda: newest_in(seaweedfs, folder))
        index = index_in(seaweedfs, folder)
        starts = {
            u: json.loads(stored(seaweedfs, u.split("/", 3)[3] + ".json"))["binlog"]["file"] for u in (oldest, needed)
        }
        next_second()

        pruned = dbb(*run, "--keep-last", "1", "--max-age", "1h", "--binlog-window", "4h", "--prune-binlogs", env=env)

    assert pruned.code == 0, pruned.stderr
    keys = set(seaweedfs.keys(prefix + "/"))
    backups = {k for k in keys if "/s3window-2" in k and not k.endswith(".json")}
    assert backups == {needed.removeprefix(f"s3://{seaweedfs.bucket}/"), pruned.result["file"].split("/", 3)[3]}
    needs = starts[needed]
    number = int(needs.rsplit(".", 1)[1])
    gone = [e for e in index.values() if e["closed"] and int(e["file"].rsplit(".", 1)[1]) < number]
    assert starts[oldest] in [e["file"] for e in gone]
    assert pruned.result["binlogRetention"] == {
        "pruned": len(gone),
        "prunedBytes": sum(e["size"] for e in gone),
        "keptFrom": needs,
    }
    for e in gone:
        assert not {f"{folder}/{e['file']}.json", f"{folder}/{e['object']}"} & keys, e["file"]
    assert f"{folder}/{needs}.json" in keys

    restored = pitr_from_s3(binlogged, seaweedfs, needed, "s3window_pitr", point)

    assert restored.code == 0, restored.stderr
    assert sorted(written_rows(binlogged, "s3window_pitr")) == sorted(i for i, t in written.items() if t < point)


def test_a_gap_in_the_bucket_is_recorded_archiving_resumes_and_no_restore_crosses_it(
    binlogged: MariaDBServer, seaweedfs: SeaweedFS, prefix: str
) -> None:
    write, location, folder, env, run = in_the_bucket(binlogged, seaweedfs, prefix, "s3gap")
    write(3)
    with archiver(binlogged, seaweedfs, location, "--max-lag", "1", name="s3gap"):
        before_gap = dbb(*run, env=env)
        binlogged.sql("FLUSH BINARY LOGS")
        rotated = list(server_binlogs(binlogged))[-2]
        wait_for(lambda: f"{rotated}.json" in index_in(seaweedfs, folder), "a closed binlog archived")
    assert before_gap.code == 0, before_gap.stderr
    missed = list(server_binlogs(binlogged))[-1]
    binlogged.sql("FLUSH BINARY LOGS; FLUSH BINARY LOGS")
    resumed = list(server_binlogs(binlogged))[-1]

    def purged() -> bool:
        binlogged.sql(f"PURGE BINARY LOGS TO '{resumed}'")  # see test_pitr_mariadb.purge_while_stopped
        return missed not in server_binlogs(binlogged)

    wait_for(purged, f"{missed} purged")

    with archiver(binlogged, seaweedfs, location, "--max-lag", "1", name="s3gap") as process:
        wait_for(lambda: f"{resumed}.gap.json" in index_in(seaweedfs, folder), "the gap recorded")
        after_gap = dbb(*run, env=env)
        written, point = rows_around_a_point(binlogged, "s3gap", write, lambda: newest_in(seaweedfs, folder))
        assert process.poll() is None, "the archiver runs on after the gap"

    assert after_gap.code == 0, after_gap.stderr
    gap = index_in(seaweedfs, folder)[f"{resumed}.gap.json"]
    assert (gap["firstMissing"], gap["resumedAt"]) == (missed, resumed)

    refused = pitr_from_s3(binlogged, seaweedfs, before_gap.result["file"], "s3gap_before", point)
    restored = pitr_from_s3(binlogged, seaweedfs, after_gap.result["file"], "s3gap_after", point)

    missing = (missed, gap["lastMissing"])
    assert_no_replay_crosses_the_gap(binlogged, "s3gap", (refused, restored), missing, (written, point))
