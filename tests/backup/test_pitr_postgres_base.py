"""`dbb-backup run --base-backup --prune-wal` against a real PostgreSQL 15, into a folder and into a real
S3-compatible store (SeaweedFS): the run's base backup restores to a point in time with the WAL `archive` wrote
beside it, retention keeps the owner's newest base backups and deletes only the WAL none of them needs, a restore
from the bucket refuses a point it cannot reach before it touches anything, and MySQL is refused the flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hack.harness.databases import PG_BIN, PostgresServer
from hack.harness.objectstore import SeaweedFS
from tests.backup.cli import Outcome, command, connection_args, dbb, password_env, wait_for
from tests.backup.test_pitr_mariadb import next_second
from tests.backup.test_pitr_postgres import Workload, server_now, written_rows

OWNER, UID = "shop/nightly", "uid-nightly"


@pytest.fixture(scope="module")
def primary() -> Iterator[PostgresServer]:
    """A PostgreSQL as initdb makes it: wal_level replica, and a replication line in pg_hba.conf."""
    with PostgresServer.start() as server:
        yield server


@dataclass
class Place:
    """Where a run writes and the archiver archives: a folder, or a prefix in the bucket."""

    folder: Path
    store: SeaweedFS | None = None
    prefix: str = ""

    @property
    def output(self) -> list[str]:
        if self.store is None:
            return ["--output-dir", str(self.folder)]
        return ["--output-url", f"s3://{self.store.bucket}/{self.prefix}"]

    @property
    def env(self) -> dict[str, str]:
        return self.store.env if self.store is not None else {}

    def names(self, under: str = "") -> list[str]:
        """The file names in the place (or in its folder `under`), without those of deeper folders."""
        if self.store is None:
            folder = self.folder / under
            return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        base = f"{self.prefix}/{under + '/' if under else ''}"
        return sorted(k.removeprefix(base) for k in self.store.keys(base) if "/" not in k.removeprefix(base))

    def read(self, name: str) -> bytes | None:
        """The file's bytes; None when it is gone (a partial entry goes when its segment completes)."""
        if self.store is None:
            path = self.folder / name
            return path.read_bytes() if path.exists() else None
        client = self.store.client()
        try:
            body: bytes = client.get_object(Bucket=self.store.bucket, Key=f"{self.prefix}/{name}")["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
        return body

    def write(self, name: str, data: bytes) -> None:
        if self.store is None:
            (self.folder / name).write_bytes(data)
        else:
            self.store.client().put_object(Bucket=self.store.bucket, Key=f"{self.prefix}/{name}", Body=data)

    def where(self, name: str) -> str:
        return str(self.folder / name) if self.store is None else f"s3://{self.store.bucket}/{self.prefix}/{name}"

    def manifest(self, where: str) -> dict[str, Any]:
        data = self.read(where.rsplit("/", 1)[-1] + ".json")
        assert data is not None, f"no manifest beside {where}"
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    def wal(self, name: str) -> dict[str, dict[str, Any]]:
        """The WAL archive's entries: {segment: entry}, a completed segment's over its partial one's."""
        found: dict[str, dict[str, Any]] = {}
        for file in self.names(f"{name}-wal"):
            data = self.read(f"{name}-wal/{file}") if file.endswith(".json") and not file.startswith(".") else None
            if data is not None:
                entry = json.loads(data)
                if entry["segment"] not in found or entry["closed"]:
                    found[entry["segment"]] = entry
        return found

    def closed_segments(self, name: str) -> set[str]:
        return {s for s, e in self.wal(name).items() if e["closed"] and len(s) == 24}

    def newest_until(self, name: str) -> datetime:
        untils = [datetime.fromisoformat(e["until"]) for e in self.wal(name).values() if e["until"]]
        return max(untils, default=datetime.min.replace(tzinfo=UTC))


@pytest.fixture(params=["folder", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "folder":
        return Place(tmp_path / "backups")
    store: SeaweedFS = request.getfixturevalue("seaweedfs")
    return Place(tmp_path, store, f"base-{uuid.uuid4().hex[:8]}")


def fresh_database(server: PostgresServer) -> str:
    """A database of its own, which also names the run's files (and the archive's slot)."""
    name = f"ledger_{uuid.uuid4().hex[:8]}"
    server.sql(f"CREATE DATABASE {name}")
    server.sql("CREATE TABLE rows (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())", name)
    return name


@contextmanager
def archiving(server: PostgresServer, place: Place, name: str, *flags: str) -> Iterator[None]:
    """`dbb-backup archive --engine postgresql` into the place (with `flags`), in the background, until SIGTERM; its
    slot is dropped afterwards so that it keeps no WAL on the module's server."""
    args = ["archive", "--engine", "postgresql", *connection_args(server), *place.output, "--name", name, *flags]
    # TMPDIR in the test's folder: the archiver spools a bucket's WAL there, as in its Pod's emptyDir, and the
    # spool goes with the test.
    process = subprocess.Popen(
        [command(), *args, "--max-lag", "1"],
        env=password_env(server) | place.env | {"TMPDIR": str(place.folder)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: bool(place.wal(name)) or process.poll() is not None, "the archiver's first entry")
        assert process.poll() is None, process.communicate()[1]
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
        server.sql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            f" WHERE NOT active AND slot_name LIKE 'dbb_{name}_%'"
        )
    assert process.returncode == 0, err


def run(server: PostgresServer, place: Place, name: str, *flags: str) -> Outcome:
    """A scheduled run as the operator starts it, with the base backup flags."""
    args = ["run", "--engine", "postgresql", *connection_args(server), *place.output, "--database", name]
    args += ["--name", name, "--owner", OWNER, "--owner-uid", UID, "--verify", *flags]
    return dbb(*args, env=password_env(server) | place.env, timeout=180)


def pitr_restore(server: PostgresServer, place: Place, file: str, point: datetime, target: str, *flags: str) -> Outcome:
    args = ["restore", file, *connection_args(server), "--point-in-time", point.isoformat(), "--database", target]
    return dbb(*args, "--pg-bin", str(PG_BIN), *flags, env=password_env(server) | place.env, timeout=300)


def test_a_run_s_base_backup_restores_to_a_point_with_every_row_up_to_it_and_none_after(
    primary: PostgresServer, place: Place, key_file: Path
) -> None:
    name = fresh_database(primary)
    workload = Workload(primary, name)
    keyed = ("--encryption-key-file", str(key_file))
    with archiving(primary, place, name):
        # The run while rows are being written, encrypted with the dumps' key.
        outcome, last, point = workload.around(lambda: run(primary, place, name, "--base-backup", *keyed))
        end = server_now(primary)
        wait_for(lambda: place.newest_until(name) >= end, "the archive to reach the last write")

    assert outcome.code == 0, outcome.stderr
    taken = outcome.result["baseBackup"]
    manifest = place.manifest(taken["file"])
    assert taken == {
        "file": taken["file"],
        "time": manifest["end"],
        "size": manifest["size"],
        "sha256": manifest["sha256"],
    }
    assert taken["file"] == place.where(manifest["file"])
    assert manifest["file"].startswith(f"{name}-")
    assert manifest["file"].endswith(".base.tar.zst.enc")
    assert manifest["keyId"] == outcome.result["keyId"] == "backup.key"
    assert manifest["owner"] == {"kind": "DatabaseBackup", "namespace": "shop", "name": "nightly", "uid": UID}
    assert outcome.result["file"] != taken["file"], "the dump is there too"
    if place.store is not None:
        assert place.store.uploads(place.prefix) == []

    restored = pitr_restore(primary, place, taken["file"], point, f"{name}={name}_pitr", "--key-file", str(key_file))

    assert restored.code == 0, restored.stderr
    assert sorted(written_rows(primary, f"{name}_pitr")) == list(range(1, last + 1))
    assert len(written_rows(primary, name)) >= last + 20, "rows were written after the point"
    assert restored.result["baseBackup"] == manifest["file"]


def test_retention_keeps_the_newest_base_backups_and_deletes_only_wal_none_of_them_needs(
    primary: PostgresServer, place: Place
) -> None:
    name = fresh_database(primary)
    flags = ("--base-backup", "--keep-last", "2", "--prune-wal")
    with archiving(primary, place, name):
        first = run(primary, place, name, *flags)
        assert first.code == 0, first.stderr
        next_second()
        second = run(primary, place, name, *flags)
        assert second.code == 0, second.stderr
        oldest = place.manifest(first.result["baseBackup"]["file"])["wal"]["startSegment"]
        kept_from = place.manifest(second.result["baseBackup"]["file"])["wal"]["startSegment"]
        assert oldest < kept_from, "the first base backup starts in an earlier segment than the second"
        archive_start = min(s for s in place.wal(name) if len(s) == 24)
        needed = {f"{kept_from[:16]}{n:08X}" for n in range(int(archive_start[16:], 16), int(kept_from[16:], 16))}
        wait_for(lambda: needed <= place.closed_segments(name), "every segment before the second's archived")
        # Another owner's base backup, older than both: retention never touches it.
        foreign = f"{name}-20260101T000000Z.base.tar.zst"
        theirs = place.manifest(first.result["baseBackup"]["file"]) | {"file": foreign}
        theirs["owner"] = theirs["owner"] | {"uid": "uid-someone-else"}
        place.write(foreign, b"not ours")
        place.write(foreign + ".json", json.dumps(theirs).encode())
        archived = place.wal(name)
        next_second()
        third = run(primary, place, name, *flags)

    assert third.code == 0, third.stderr
    removed = set(archived) - set(place.wal(name))
    assert removed == needed, "exactly the segments wholly before the oldest kept base backup's start"
    assert oldest in removed, "the deleted base backup's own segments among them"
    wal_files = place.names(f"{name}-wal")
    assert not {archived[s]["object"] for s in removed} & set(wal_files), "their objects too"
    assert f"{kept_from}.json" in wal_files, "the kept base backup's first segment stays"
    assert third.result["walRetention"] == {
        "baseBackupsKept": 2,
        "baseBackupsDeleted": 1,
        "pruned": len(removed),
        "prunedBytes": sum(archived[s]["size"] for s in removed),
        "keptFrom": kept_from,
        "oldestBaseBackup": {  # the second run's: the earliest a restore can start from now
            "file": second.result["baseBackup"]["file"].rsplit("/", 1)[-1],
            "time": place.manifest(second.result["baseBackup"]["file"])["end"],
        },
    }
    bases = {n for n in place.names() if ".base.tar.zst" in n and not n.endswith(".json")}
    kept = {outcome.result["baseBackup"]["file"].rsplit("/", 1)[-1] for outcome in (second, third)}
    assert bases == kept | {foreign}
    assert first.result["baseBackup"]["file"].rsplit("/", 1)[-1] + ".json" not in place.names()

    listed = dbb("list", place.where("").rstrip("/"), env=password_env(primary) | place.env)
    assert listed.code == 0, listed.stderr
    kinds = {(entry["kind"], entry["file"].rsplit("/", 1)[-1]) for entry in listed.result["backups"]}
    assert {("basebackup", file) for file in kept | {foreign}} <= kinds
    dumps = {file for kind, file in kinds if kind == "dump"}
    assert len(dumps) == 2, kinds
    assert all(file.endswith(".dump") for file in dumps), kinds


def test_a_restore_from_the_bucket_refuses_a_point_it_cannot_reach_and_touches_nothing(
    primary: PostgresServer, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    place = Place(tmp_path, seaweedfs, f"refuse-{uuid.uuid4().hex[:8]}")
    name = fresh_database(primary)
    outcome = run(primary, place, name, "--base-backup")
    assert outcome.code == 0, outcome.stderr
    file = outcome.result["baseBackup"]["file"]
    manifest = place.manifest(file)

    early = pitr_restore(primary, place, file, datetime.fromisoformat(manifest["start"]), f"{name}={name}_early")
    unarchived = pitr_restore(primary, place, file, datetime.fromisoformat(manifest["end"]), f"{name}={name}_late")

    assert early.code == 1
    assert early.reason_line.startswith("dbb-backup: InvalidArguments: --point-in-time "), early.stderr
    assert f"is before the base backup ended ({manifest['end']})" in early.reason_line
    assert unarchived.code == 1
    start = manifest["wal"]["startSegment"]
    assert unarchived.reason_line == (
        f"dbb-backup: ArchiveGap: the WAL archive has no {start}, where the base backup starts"
    ), unarchived.stderr
    assert not {f"{name}_early", f"{name}_late"} & set(primary.databases())


def test_base_backup_flags_are_refused_for_mysql_before_anything_is_contacted(tmp_path: Path) -> None:
    args = ["run", "--engine", "mysql", "--host", "127.0.0.1", "--port", "1", "--user", "backup"]
    args += ["--output-dir", str(tmp_path), "--database", "shop", "--base-backup", "--prune-wal"]

    outcome = dbb(*args, env={**os.environ, "DB_PASSWORD": "unused"})

    assert outcome.code == 1
    assert outcome.reason_line == (
        "dbb-backup: InvalidArguments: --base-backup and --prune-wal: PostgreSQL only; a MySQL/MariaDB "
        "point-in-time restore starts from a dump (see --prune-binlogs and --binlog-window)"
    )
    assert list(tmp_path.iterdir()) == []
