"""`dbb-backup restore BASEBACKUP --point-in-time T --replay-dir DIR` against a real PostgreSQL 15, with the replay
server a restore Job runs beside the runner started for real: the reconciler's SUPERVISOR script under /bin/sh,
with PostgreSQL 15's binaries on its PATH, in a folder shared with the runner. The runner drives it through files
there (start.N, stop.N, exited.N, done), leaves nothing of its own behind, and lets it exit; `--pick-base-backup`
starts from an older base backup, in a folder or a bucket (SeaweedFS), when the point is before the newest one's end.

As in the Pod, the server's files belong to the user the replay server runs as: when the tests run as root, the
replay server runs as `postgres` (PostgreSQL refuses root) and the runner, still root, hands its files to that user
(`--scratch-os-user`); the shared folder is one that user can enter (the test's own folder is root's alone)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hack.harness.databases import PG_BIN, PostgresServer
from hack.harness.objectstore import SeaweedFS
from reconciler.replayserver import SUPERVISOR
from tests.backup.cli import Outcome, connection_args, dbb, password_env, wait_for
from tests.backup.test_pitr_mariadb import next_second
from tests.backup.test_pitr_postgres import Workload, server_now, written_rows
from tests.backup.test_pitr_postgres_base import OWNER, Place, archiving, fresh_database, run

SERVER_USER = "postgres"  # whom the replay server runs as when the tests run as root


@pytest.fixture(scope="module")
def primary() -> Iterator[PostgresServer]:
    with PostgresServer.start() as server:
        yield server


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return Place(tmp_path / "backups")


@pytest.fixture(params=["folder", "s3"])
def any_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "folder":
        return Place(tmp_path / "backups")
    store: SeaweedFS = request.getfixturevalue("seaweedfs")
    return Place(tmp_path, store, f"pick-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def replay_dir() -> Iterator[Path]:
    """The Pod's shared emptyDir: owned by the replay server's user, as the Pod's is by its one user."""
    folder = Path(tempfile.mkdtemp(prefix="dbb-replay-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sidecar(replay_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The replay server, as the restore Job's sidecar runs it."""
    as_user = ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups", "--"]
    process = subprocess.Popen(
        [*(as_user if os.geteuid() == 0 else []), "/bin/sh", "-c", SUPERVISOR, "supervisor", str(replay_dir)],
        env={**os.environ, "PATH": f"{PG_BIN}:{os.environ['PATH']}"},
    )
    try:
        yield process
    finally:
        if process.poll() is None:  # a failed test's: `done` stops a server it runs, SIGTERM the script
            (replay_dir / "done").touch()
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def watching(folder: Path) -> Iterator[set[str]]:
    """Every name that appears in `folder` while the block runs (the protocol's files come and go)."""
    seen: set[str] = set()
    stop = threading.Event()

    def look() -> None:
        while not stop.is_set():
            seen.update(path.name for path in folder.iterdir())
            stop.wait(0.02)

    thread = threading.Thread(target=look, name="watcher")
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def replay_restore(
    server: PostgresServer, place: Place, replay_dir: Path, file: str, point: datetime, target: str, *flags: str
) -> Outcome:
    """A restore as the Job runs it beside its replay server: no --pg-bin, the client tools from PATH."""
    args = ["restore", file, *connection_args(server), "--point-in-time", point.isoformat(), "--database", target]
    env = password_env(server) | place.env
    return dbb(*args, "--replay-dir", str(replay_dir), *flags, env=env, timeout=300)


def assert_let_go(sidecar: subprocess.Popen[bytes], replay_dir: Path) -> None:
    """The folder holds nothing but `done`, and the replay server, which waits for the kubelet's SIGTERM after it,
    ends at once on it (with no postgres left running)."""
    assert sorted(path.name for path in replay_dir.iterdir()) == ["done"]
    assert sidecar.poll() is None, "a sidecar that exits by itself is restarted by the kubelet"
    sidecar.terminate()
    assert sidecar.wait(timeout=10) == 0


def test_a_restore_through_the_replay_server_has_every_row_up_to_the_point_and_none_after(
    primary: PostgresServer, place: Place, replay_dir: Path, sidecar: subprocess.Popen[bytes]
) -> None:
    name = fresh_database(primary)
    workload = Workload(primary, name)
    with archiving(primary, place, name):
        outcome, last, point = workload.around(lambda: run(primary, place, name, "--base-backup"))
        end = server_now(primary)
        wait_for(lambda: place.newest_until(name) >= end, "the archive to reach the last write")
    assert outcome.code == 0, outcome.stderr

    with watching(replay_dir) as seen:
        restored = replay_restore(
            primary, place, replay_dir, outcome.result["baseBackup"]["file"], point, f"{name}={name}_r"
        )

    assert restored.code == 0, restored.stderr
    assert sorted(written_rows(primary, f"{name}_r")) == list(range(1, last + 1))
    assert len(written_rows(primary, name)) >= last + 20, "rows were written after the point"
    assert restored.result["replayed"] == "target"
    assert {"start.1", "stop.1", "data", "wal", "postgres.log"} <= seen, "the server ran beside, in the folder"
    assert "start.2" not in seen
    assert_let_go(sidecar, replay_dir)


def test_a_point_after_the_last_commit_replays_the_whole_archive_on_a_second_start(
    primary: PostgresServer, place: Place, replay_dir: Path, sidecar: subprocess.Popen[bytes]
) -> None:
    name = fresh_database(primary)
    with archiving(primary, place, name):
        outcome = run(primary, place, name, "--base-backup")
        assert outcome.code == 0, outcome.stderr
        primary.sql("INSERT INTO rows (id) VALUES (1); INSERT INTO rows (id) VALUES (2)", name)
        last = max(written_rows(primary, name).values())
        # No commit follows in the cluster's archive after the point; `until` moves on all the same.
        wait_for(lambda: place.newest_until(name) >= last + timedelta(seconds=2), "the archive to move on")

    with watching(replay_dir) as seen:
        restored = replay_restore(
            primary,
            place,
            replay_dir,
            outcome.result["baseBackup"]["file"],
            last + timedelta(seconds=1),
            f"{name}={name}_r",
        )

    assert restored.code == 0, restored.stderr
    assert sorted(written_rows(primary, f"{name}_r")) == [1, 2]
    assert restored.result["replayed"] == "whole archive"
    assert {"start.1", "exited.1", "start.2"} <= seen, "the first server ended recovery short of the target"
    assert "stop.1" not in seen, "the first server exited by itself"
    assert "start.3" not in seen
    assert_let_go(sidecar, replay_dir)


def forge_foreign(place: Place, like: str, name: str, end: datetime) -> str:
    """Another owner's base backup beside ours (a copy of `like`, which would restore), ending at `end`."""
    foreign = f"{name}-20260101T000000Z.base.tar.zst"
    theirs = place.manifest(like) | {"file": foreign, "end": end.isoformat()}
    theirs["owner"] = theirs["owner"] | {"name": "other", "uid": "uid-other"}
    data = place.read(like.rsplit("/", 1)[-1])
    assert data is not None
    place.write(foreign, data)
    place.write(foreign + ".json", json.dumps(theirs).encode())
    return foreign


def test_pick_base_backup_starts_from_the_newest_of_the_owner_s_that_ended_before_the_point(
    primary: PostgresServer, any_place: Place, replay_dir: Path, sidecar: subprocess.Popen[bytes]
) -> None:
    place = any_place
    name = fresh_database(primary)
    with archiving(primary, place, name):
        older = run(primary, place, name, "--base-backup")
        assert older.code == 0, older.stderr
        primary.sql("INSERT INTO rows (id) VALUES (1)", name)
        point = server_now(primary)  # after row 1 committed, before row 2
        primary.sql("INSERT INTO rows (id) VALUES (2)", name)
        next_second()
        newest = run(primary, place, name, "--base-backup")
        assert newest.code == 0, newest.stderr
        primary.sql("INSERT INTO rows (id) VALUES (3)", name)
        end = server_now(primary)
        wait_for(lambda: place.newest_until(name) >= end, "the archive to reach the last write")
    older_file = older.result["baseBackup"]["file"]
    older_end = datetime.fromisoformat(place.manifest(older_file)["end"])
    newest_file = newest.result["baseBackup"]["file"]
    assert datetime.fromisoformat(place.manifest(newest_file)["end"]) > point, "the newest is of no use for the point"
    foreign = forge_foreign(place, older_file, name, point - timedelta(milliseconds=1))
    assert older_end < point - timedelta(milliseconds=1), "the foreign one would be the newest that fits"

    restored = replay_restore(
        primary, place, replay_dir, newest_file, point, f"{name}={name}_r", "--pick-base-backup", "--owner", OWNER
    )

    assert restored.code == 0, restored.stderr
    assert restored.result["baseBackup"] == Path(older_file).name, f"not the newest, not {foreign}"
    assert restored.result["file"] == older_file, "the result names the base backup restored from"
    assert sorted(written_rows(primary, f"{name}_r")) == [1]
    picked = [json.loads(line) for line in restored.stderr.splitlines() if "base backup picked" in line]
    assert [entry["file"] for entry in picked] == [older_file]
    assert_let_go(sidecar, replay_dir)


def test_pick_base_backup_refuses_a_point_before_every_base_backup_and_touches_nothing(
    primary: PostgresServer, any_place: Place, replay_dir: Path, sidecar: subprocess.Popen[bytes]
) -> None:
    place = any_place
    name = fresh_database(primary)
    outcome = run(primary, place, name, "--base-backup")
    assert outcome.code == 0, outcome.stderr
    file = outcome.result["baseBackup"]["file"]
    end = place.manifest(file)["end"]
    point = datetime.fromisoformat(end) - timedelta(seconds=30)

    refused = replay_restore(
        primary, place, replay_dir, file, point, f"{name}={name}_r", "--pick-base-backup", "--owner", OWNER
    )

    assert refused.code == 1
    stamp = point.isoformat().replace("+00:00", "Z")
    assert refused.reason_line == (
        f"dbb-backup: InvalidArguments: --point-in-time {stamp} is before every base backup of {OWNER} named "
        f"{name}-* ended (the oldest, {Path(file).name}, ended {end}): choose a later time"
    ), refused.stderr
    assert f"{name}_r" not in primary.databases()
    assert_let_go(sidecar, replay_dir)


@pytest.mark.parametrize(
    ("file", "flags", "says"),
    [
        ("app-20261207T100000Z.base.tar.zst", [], "--replay-dir: for a restore to a point in time (--point-in-time)"),
        (
            "app-20261207T100000Z.sql.zst",
            ["--point-in-time", "2026-12-07T10:00:00Z"],
            "--replay-dir: PostgreSQL point-in-time restores only (a base backup, *.base.tar.zst, with "
            "--point-in-time)",
        ),
        (
            "app-20261207T100000Z.sql.zst",
            ["--point-in-time", "2026-12-07T10:00:00Z", "--pick-base-backup"],
            "--replay-dir and --pick-base-backup: PostgreSQL point-in-time restores only (a base backup, "
            "*.base.tar.zst, with --point-in-time)",
        ),
        (
            "app-20261207T100000Z.base.tar.zst",
            ["--point-in-time", "2026-12-07T10:00:00Z", "--pg-bin", str(PG_BIN)],
            "--pg-bin and --replay-dir: the replay server brings its own postgres",
        ),
    ],
    ids=["without a point in time", "for mysql", "with --pick-base-backup for mysql", "with --pg-bin"],
)
def test_replay_dir_is_refused_where_it_cannot_apply_before_anything_is_touched(
    tmp_path: Path, file: str, flags: list[str], says: str
) -> None:
    shared = tmp_path / "replay"
    shared.mkdir()
    args = ["restore", str(tmp_path / file), "--host", "127.0.0.1", "--port", "1", "--user", "u", "--database", "db"]

    outcome = dbb(*args, "--replay-dir", str(shared), *flags, env={**os.environ, "DB_PASSWORD": "unused"})

    assert outcome.code == 1
    assert outcome.reason_line == f"dbb-backup: InvalidArguments: {says}", outcome.stderr
    assert list(shared.iterdir()) == []
