"""A restore commits only the bytes that were checked: a file (or object) that changes between the restore's check
and its own read is refused before the PostgreSQL COMMIT, and for MySQL the databases it created are dropped.

A restore that any failure undoes (one database) reads once, held to the manifest; the others check the whole
backup first and then read it again. The moment between the two reads is one no test can hit from outside the
process, so these tests run the restore in-process and replace the stored bytes at our own seam there: right after
`restore.check_whole` returns. The files, the objects, the databases and the restore are real.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.harness.databases import MariaDBServer, PostgresServer
from hack.harness.objectstore import SeaweedFS
from runner import restore as restore_module
from runner.engines import Connection
from runner.errors import RunnerError, Scrubber
from runner.layout import Stored
from runner.process import Deadline
from runner.restore import RestoreOptions, restore_backup
from runner.s3backup import S3Object
from tests.backup.cli import Server, backup, connection_args, dbb, engine_of, password_env


@pytest.fixture(scope="module")
def ledgers(pg: PostgresServer) -> Iterator[tuple[str, str]]:
    """Two small databases of our own, whose content a test changes between two backups."""
    names = ("ledger_a", "ledger_b")
    for name in names:
        pg.sql(f"CREATE DATABASE {name}")
        pg.sql("CREATE TABLE entries (id int PRIMARY KEY); INSERT INTO entries SELECT generate_series(1, 100)", name)
    try:
        yield names
    finally:
        for name in names:
            pg.drop_database(name)


@pytest.fixture(scope="module")
def my_ledger(mariadb: MariaDBServer) -> Iterator[str]:
    mariadb.sql("CREATE DATABASE my_ledger")
    mariadb.sql("CREATE TABLE entries (id INT PRIMARY KEY); INSERT INTO entries VALUES (1), (2), (3)", "my_ledger")
    try:
        yield "my_ledger"
    finally:
        mariadb.drop_database("my_ledger")


GROW = "INSERT INTO entries SELECT max(id) + 1 FROM entries"


def two_backups(server: Server, tmp_path: Path, *databases: str, change: str) -> tuple[Path, bytes]:
    """A backup of `databases`, then `change` is made on the last of them, and the bytes of a second backup: a
    valid backup that differs from the first (as a swapped file would be) in what that database holds."""
    first = backup(server, tmp_path / "first", *databases)
    server.sql(change, databases[-1])
    second = backup(server, tmp_path / "second", *databases)
    return first, second.read_bytes()


def connection(server: Server) -> Connection:
    return Connection(server.host, server.port, server.user, server.password)


def restore_in_process(
    server: Server, where: Path | Stored, *targets: str, replace: bool = False, manifest: Any = None
) -> dict[str, str]:
    options = RestoreOptions(connection(server), targets, replace=replace)
    return restore_backup(where, None, options, Scrubber([server.password]), Deadline(120), stored_manifest=manifest)


@pytest.fixture
def between_reads(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """`between_reads(change)`: `change` runs once the restore's check is done, before its own read."""

    def install(change: Callable[[], None]) -> None:
        checked = restore_module.check_whole

        def then_changed(*args: Any, **kwargs: Any) -> Any:
            found = checked(*args, **kwargs)
            change()
            return found

        monkeypatch.setattr(restore_module, "check_whole", then_changed)

    return install


def test_a_one_database_restore_reads_once_and_commits_only_the_manifests_bytes(
    pg: PostgresServer, ledgers: tuple[str, str], tmp_path: Path, between_reads: Callable[..., None]
) -> None:
    file, other = two_backups(pg, tmp_path, ledgers[0], change=GROW)
    between_reads(lambda: pytest.fail("a restore that any failure undoes needs no check of its own first"))
    assert restore_in_process(pg, file, "checked_copy") == {ledgers[0]: "checked_copy"}  # as it is: restored
    pg.drop_database("checked_copy")
    file.write_bytes(other)  # a valid backup, but not the one its manifest describes
    with pytest.raises(RunnerError) as raised:
        restore_in_process(pg, file, "swapped_copy")
    assert raised.value.reason == "VerifyFailed"
    assert raised.value.message.startswith(f"{file.name} is not the backup its manifest describes: read ")
    assert "swapped_copy" not in pg.databases(), "its transaction rolled back, and the new database was dropped"


def test_a_one_database_restore_with_replace_leaves_the_target_as_it_was_on_a_swapped_file(
    pg: PostgresServer, ledgers: tuple[str, str], tmp_path: Path
) -> None:
    file, other = two_backups(pg, tmp_path, ledgers[0], change=GROW)
    pg.sql("CREATE DATABASE kept_whole")
    try:
        pg.sql("CREATE TABLE mine (id int); INSERT INTO mine VALUES (7)", "kept_whole")
        file.write_bytes(other)
        with pytest.raises(RunnerError) as raised:
            restore_in_process(pg, file, "kept_whole", replace=True)
        assert raised.value.reason == "VerifyFailed"
        assert pg.sql("SELECT id FROM mine", "kept_whole") == "7", "the target is the old database, untouched"
        assert not [d for d in pg.databases() if "_dbb_new_" in d], "the new database was dropped"
    finally:
        pg.drop_database("kept_whole")


def test_a_tar_member_that_changed_is_not_committed_and_those_before_it_were_checked(
    pg: PostgresServer, ledgers: tuple[str, str], tmp_path: Path, between_reads: Callable[..., None]
) -> None:
    rows = pg.sql("SELECT count(*) FROM entries", ledgers[0])
    file, other = two_backups(pg, tmp_path, *ledgers, change=GROW)
    # The tar with its first member as it was, and the other tar's second member (whose database changed): a
    # valid tar.
    swapped = _tar_with(file.read_bytes(), replaced_by=other, keep=f"databases/{ledgers[0]}.dump")
    between_reads(lambda: file.write_bytes(swapped))
    targets = (f"{ledgers[0]}=tar_first", f"{ledgers[1]}=tar_second")
    try:
        with pytest.raises(RunnerError) as raised:
            restore_in_process(pg, file, *targets)
        assert raised.value.reason == "VerifyFailed"
        changed = f"databases/{ledgers[1]}.dump"
        assert raised.value.message.startswith(f"{file.name}/{changed} changed after it was checked")
        assert "tar_second" not in pg.databases()
        # The first member was read, and held to the check's digest of it, before its COMMIT.
        assert pg.sql("SELECT count(*) FROM entries", "tar_first") == rows
    finally:
        pg.drop_database("tar_first")


def _tar_with(original: bytes, *, replaced_by: bytes, keep: str) -> bytes:
    """`original`'s members in order, each from `replaced_by` except `keep`."""
    with tarfile.open(fileobj=io.BytesIO(replaced_by)) as other:
        contents = {m.name: other.extractfile(m).read() for m in other.getmembers()}  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(original)) as tar, tarfile.open(fileobj=out, mode="w") as new:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.name == keep else contents[member.name]  # type: ignore[union-attr]
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    return out.getvalue()


def test_a_mysql_script_that_is_not_its_manifests_leaves_no_new_database(
    mariadb: MariaDBServer, my_ledger: str, tmp_path: Path, between_reads: Callable[..., None]
) -> None:
    file, other = two_backups(mariadb, tmp_path, my_ledger, change=GROW)
    between_reads(lambda: pytest.fail("a restore into a database it creates needs no check of its own first"))
    file.write_bytes(other)
    with pytest.raises(RunnerError) as raised:
        restore_in_process(mariadb, file, "my_swapped")
    assert raised.value.reason == "VerifyFailed"
    assert raised.value.message.startswith(f"{file.name} is not the backup its manifest describes")
    assert "cannot be undone" not in raised.value.message
    assert "my_swapped" not in mariadb.databases(), "the database the restore created is dropped"


def test_a_mysql_restore_into_an_existing_empty_database_checks_first(
    mariadb: MariaDBServer, my_ledger: str, tmp_path: Path, between_reads: Callable[..., None]
) -> None:
    file, other = two_backups(mariadb, tmp_path, my_ledger, change=GROW)
    mariadb.sql("CREATE DATABASE my_empty")
    try:
        between_reads(lambda: file.write_bytes(other))
        with pytest.raises(RunnerError) as raised:
            restore_in_process(mariadb, file, "my_empty")
        assert raised.value.reason == "VerifyFailed"
        assert raised.value.message.startswith(f"{file.name} changed after it was checked")
    finally:
        mariadb.drop_database("my_empty")


def test_a_mysql_restore_over_an_existing_database_says_it_cannot_be_undone(
    mariadb: MariaDBServer, my_ledger: str, tmp_path: Path, between_reads: Callable[..., None]
) -> None:
    file, other = two_backups(mariadb, tmp_path, my_ledger, change=GROW)
    mariadb.sql("CREATE DATABASE my_existing")
    try:
        between_reads(lambda: file.write_bytes(other))
        with pytest.raises(RunnerError) as raised:
            restore_in_process(mariadb, file, "my_existing", replace=True)
        assert raised.value.reason == "VerifyFailed"
        assert "a MySQL restore cannot be undone: what it wrote into 'my_existing'" in raised.value.message
        assert "my_existing" in mariadb.databases(), "a database that existed is not dropped"
    finally:
        mariadb.drop_database("my_existing")


def test_a_swapped_script_cannot_run_a_shell_command_in_the_runner(
    mariadb: MariaDBServer, my_ledger: str, tmp_path: Path
) -> None:
    file = backup(mariadb, tmp_path, my_ledger)
    marker = tmp_path / "shell-ran"
    # Without the line by which mariadb-dump (10.11.8+) asks the client for its sandbox mode: only the runner's
    # own `--sandbox` stands in the way.
    lines = gzip.decompress(file.read_bytes()).splitlines(keepends=True)
    script = b"".join(line for line in lines if b"enable the sandbox mode" not in line)
    script += f"\\! touch {marker}\n".encode()
    file.write_bytes(gzip.compress(script))  # the restore into a new database reads it once
    with pytest.raises(RunnerError) as raised:
        restore_in_process(mariadb, file, "my_shell")
    assert raised.value.reason in ("RestoreFailed", "VerifyFailed")
    assert not marker.exists()
    assert "my_shell" not in mariadb.databases()


def two_objects(server: Server, database: str, store: SeaweedFS, bucket: str) -> tuple[S3Object, bytes]:
    """A backup in `bucket`, then the bytes of a second, valid one taken after a change."""
    prefix = f"pinned-{uuid.uuid4().hex[:8]}"
    args = ["run", "--engine", engine_of(server), *connection_args(server), "--database", database]
    env = password_env(server) | store.env
    first = dbb(*args, "--output-url", f"s3://{bucket}/{prefix}", env=env)
    assert first.code == 0, first.stderr
    server.sql(GROW, database)
    second = dbb(*args, "--output-url", f"s3://{bucket}/{prefix}-other", env=env)
    assert second.code == 0, second.stderr
    client = store.client()
    other = client.get_object(Bucket=bucket, Key=second.result["file"].split("/", 3)[3])["Body"].read()
    return S3Object(client, bucket, first.result["file"].split("/", 3)[3]), other


@pytest.fixture
def my_empty(mariadb: MariaDBServer) -> Iterator[str]:
    """An empty database that exists: a MySQL restore into it is checked whole first, then read again."""
    mariadb.sql("CREATE DATABASE my_empty_target")
    try:
        yield "my_empty_target"
    finally:
        mariadb.drop_database("my_empty_target")


def test_an_object_replaced_after_the_check_is_not_restored(
    mariadb: MariaDBServer,
    my_ledger: str,
    my_empty: str,
    seaweedfs: SeaweedFS,
    between_reads: Callable[..., None],
) -> None:
    stored, other = two_objects(mariadb, my_ledger, seaweedfs, seaweedfs.bucket)
    between_reads(lambda: stored.client.put_object(Bucket=stored.bucket, Key=stored.key, Body=other))
    with pytest.raises(RunnerError) as raised:
        restore_in_process(mariadb, stored, my_empty, manifest=stored.manifest())
    assert raised.value.reason == "VerifyFailed"
    assert raised.value.message == f"s3://{stored.bucket}/{stored.key} was replaced after it was checked"
    assert mariadb.sql("SHOW TABLES", my_empty) == "", "nothing was written into it"


def test_an_object_that_is_not_its_manifests_is_not_restored(
    pg: PostgresServer, ledgers: tuple[str, str], seaweedfs: SeaweedFS
) -> None:
    stored, other = two_objects(pg, ledgers[0], seaweedfs, seaweedfs.bucket)
    manifest = stored.manifest()
    stored.client.put_object(Bucket=stored.bucket, Key=stored.key, Body=other)
    with pytest.raises(RunnerError) as raised:
        restore_in_process(pg, stored, "s3_swapped", manifest=manifest)
    assert raised.value.reason == "VerifyFailed"
    assert raised.value.message.startswith(f"{stored.name} is not the backup its manifest describes")
    assert "s3_swapped" not in pg.databases()


def test_in_a_bucket_that_keeps_versions_the_checked_version_is_restored(
    mariadb: MariaDBServer,
    my_ledger: str,
    my_empty: str,
    seaweedfs: SeaweedFS,
    between_reads: Callable[..., None],
) -> None:
    bucket = f"versions-{uuid.uuid4().hex[:8]}"
    client = seaweedfs.client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    rows = mariadb.sql("SELECT count(*) FROM entries", my_ledger)
    stored, other = two_objects(mariadb, my_ledger, seaweedfs, bucket)
    between_reads(lambda: client.put_object(Bucket=bucket, Key=stored.key, Body=other))
    assert restore_in_process(mariadb, stored, my_empty, manifest=stored.manifest()) == {my_ledger: my_empty}
    assert mariadb.sql("SELECT count(*) FROM entries", my_empty) == rows, "the version that was checked"
