"""Retention deletes only our older backups; verify catches a damaged file; the result fits the termination message;
a wrong key fails cleanly everywhere."""

from __future__ import annotations

import fcntl
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hack.harness.databases import MariaDBServer, PostgresServer
from runner import backup as backup_module
from runner.backup import RunOptions, run_backup
from runner.compression import Compression
from runner.engines import Connection, Engine
from runner.errors import Reason, RunnerError, Scrubber
from runner.manifest import Manifest, Owner
from runner.process import Deadline
from runner.retention import Policy
from runner.verify import verify_backup
from tests.backup.cli import backup, connection_args, dbb, password_env, run_args, wait_for

Server = PostgresServer | MariaDBServer


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Server:
    found: Server = request.getfixturevalue("pg" if request.param == "postgresql" else "mariadb")
    return found


OWNER: dict[str, str | None] = {"owner": "shop/nightly", "owner_uid": "uid-nightly", "verify": None}


def manifest_of(name: str, *, owner: str | None, verified: bool = True) -> str:
    """A manifest as a run writes it, for a file the test puts in place."""
    return Manifest(
        file=name,
        engine="postgresql",
        server_version="17.0",
        databases=["shop"],
        globals=False,
        layout="custom",
        size=len(name),
        sha256="0" * 64,
        compression="gzip",
        encryption="none",
        tool="pg_dump",
        host="db",
        port=5432,
        user="postgres",
        start="2020-01-01T00:00:00Z",
        end="2020-01-01T00:00:01Z",
        duration=1.0,
        verified=verified,
        owner=None if owner is None else Owner("shop", "x", owner),
    ).to_json()


def place(folder: Path, name: str, *, owner: str | None = "uid-nightly", verified: bool = True) -> None:
    (folder / name).write_text(name)
    (folder / (name + ".json")).write_text(manifest_of(name, owner=owner, verified=verified))


def next_second(name: str) -> None:
    """Waits until a new backup would not get `name`'s timestamp: a run refuses to replace a published backup."""
    wait_for(lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") not in name, "the next second")


def test_retention_keeps_the_newest_and_touches_nothing_that_is_not_ours(pg: PostgresServer, backups: Path) -> None:
    # Same prefix, but not this owner's: another DatabaseBackup's, one written before manifests named an owner, one
    # with no manifest at all, one whose manifest cannot be read.
    place(backups, "shop-20200101T010000Z.dump", owner="uid-hourly")
    place(backups, "shop-20200101T020000Z.dump", owner=None)
    (backups / "shop-20200101T030000Z.dump").write_text("no manifest")
    (backups / "shop-20200101T040000Z.dump").write_text("broken manifest")
    (backups / "shop-20200101T040000Z.dump.json").write_text("{")
    foreign = [
        "shop-old.dump",  # no timestamp
        "shopping-20200101T000000Z.dump",  # another prefix that starts like ours
        "shop-2-20200101T000000Z.dump",  # another prefix with a dash
        "shop-20200101T000000Z.dump.bak",  # not one of our extensions
        "shop-20200101T0000Z.dump",  # a short timestamp
        "notes.txt",
        ".shop-20200104T000000Z.dump.partial.keep",
    ]
    for name in foreign:
        (backups / name).write_text(name)
    untouched = sorted(p.name for p in backups.iterdir())
    for name in ["shop-20200101T000000Z.dump", "shop-20200102T000000Z.dump.zst.enc", "shop-20200103T000000Z.tar"]:
        place(backups, name)
    stale = backups / ".shop-20200105T000000Z.dump.partial"
    stale.write_text("left by a killed run")
    live = backups / ".shop-20200106T000000Z.sql.gz.partial"
    live.write_text("a run that is still writing")
    with live.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running backup holds its temporary file
        new = backup(pg, backups, "shop", keep_last="2", **OWNER)
    remaining = sorted(p.name for p in backups.iterdir())
    kept = ["shop-20200103T000000Z.tar", "shop-20200103T000000Z.tar.json", new.name, new.name + ".json", live.name]
    assert remaining == sorted([*untouched, *kept])


def test_an_unverified_backup_does_not_count_and_the_newest_verified_one_stays(
    pg: PostgresServer, backups: Path
) -> None:
    place(backups, "shop-20200101T000000Z.dump")
    place(backups, "shop-20200102T000000Z.dump", verified=False)
    new = backup(pg, backups, "shop", keep_last="2", **OWNER)  # verified (the reconciler always verifies)
    # Keep 2 verified ones: the new one and 01-01. The unverified 01-02 does not count, so 01-01 stays; and it is
    # newer than the oldest one kept, so it stays too. With keep 1, both would go.
    names = sorted(p.name for p in backups.iterdir() if not p.name.endswith(".json"))
    assert names == ["shop-20200101T000000Z.dump", "shop-20200102T000000Z.dump", new.name]
    assert json.loads(Path(str(new) + ".json").read_text())["owner"] == {
        "namespace": "shop",
        "name": "nightly",
        "uid": "uid-nightly",
        "kind": "DatabaseBackup",
    }
    next_second(new.name)
    backup(pg, backups, "shop", keep_last="1", **OWNER)
    assert not (backups / "shop-20200102T000000Z.dump").exists()
    assert not (backups / "shop-20200101T000000Z.dump").exists()


def test_two_owners_of_one_database_each_keep_their_newest(pg: PostgresServer, backups: Path) -> None:
    # As the operator runs them: the prefix is the DatabaseBackup's name, the uid its own; each keepLast 1.
    hourly: dict[str, str | None] = {"name": "hourly", "owner": "shop/hourly", "owner_uid": "uid-hourly"}
    daily: dict[str, str | None] = {"name": "daily", "owner": "shop/daily", "owner_uid": "uid-daily"}
    newest: dict[str | None, str] = {}
    for flags in (daily, hourly, hourly, daily, hourly, hourly):
        if flags["name"] in newest:  # one run a second per name (see above)
            next_second(newest[flags["name"]])
        newest[flags["name"]] = backup(pg, backups, "shop", keep_last="1", verify=None, **flags).name
    names = sorted(p.name for p in backups.iterdir())
    assert names == sorted(n for f in newest.values() for n in (f, f + ".json"))


def test_calendar_retention_keeps_one_backup_a_day_reports_why_and_list_marks_it(
    pg: PostgresServer, backups: Path
) -> None:
    # Three days of ours, two a day, and a stranger's: keep the newest of the last two days that have one.
    for stamp in ("20200101T080000Z", "20200101T200000Z", "20200102T080000Z", "20200102T200000Z"):
        place(backups, f"shop-{stamp}.dump")
    place(backups, "shop-20200102T210000Z.dump", owner="uid-someone-else")
    flags = run_args(pg, backups, "shop", keep_daily="2", time_zone="Europe/Berlin", **OWNER)
    outcome = dbb(*flags, env=password_env(pg))
    assert outcome.code == 0, outcome.stderr
    new = Path(outcome.result["file"]).name
    names = sorted(p.name for p in backups.iterdir() if not p.name.endswith(".json"))
    # Today and 2020-01-02 (its 20:00 UTC is 21:00 in Berlin, still the 2nd): the 01-01s and the 2nd's 08:00 go.
    assert names == ["shop-20200102T200000Z.dump", "shop-20200102T210000Z.dump", new]
    kept_bytes = sum(json.loads((backups / f"{n}.json").read_text())["size"] for n in names[::2])
    assert outcome.result["retention"] == {
        "kept": 2,
        "keptBytes": kept_bytes,
        "deleted": 3,
        "byRule": {"daily": 2, "newest": 1, "just written": 1},
    }
    listed = dbb(
        "list", str(backups), "--owner-uid", "uid-nightly", "--keep-daily", "2", "--time-zone", "Europe/Berlin",
        env=password_env(pg),
    )  # fmt: skip
    assert listed.code == 0, listed.stderr
    marks = {Path(b["file"]).name: b.get("keptBy") for b in listed.result["backups"]}
    assert marks == {
        "shop-20200102T200000Z.dump": ["daily"],
        "shop-20200102T210000Z.dump": None,  # another owner's: not ours to judge
        new: ["daily", "newest"],
    }
    refused = dbb("list", str(backups), "--keep-daily", "2", env=password_env(pg))
    assert refused.code != 0
    assert "give --owner-uid" in refused.result["message"]


def test_keep_last_one_keeps_the_backup_just_written(pg: PostgresServer, backups: Path) -> None:
    # A clock that went backwards makes the new backup look older than an existing one; it stays all the same.
    (backups / "shop-29990101T000000Z.dump").write_text("from the future")
    new = backup(pg, backups, "shop", keep_last="1")
    assert new.exists()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_verify_with_a_restore_test_passes_and_leaves_no_scratch_database(
    server: Server, backups: Path, key_file: Path, encrypted: bool
) -> None:
    flags = {"encryption_key_file": str(key_file)} if encrypted else {}
    file = backup(server, backups, "shop", "crm", name="pair", compression="zstd", **flags)
    before = server.databases()
    args = ["verify", str(file), "--restore-test", *connection_args(server)]
    outcome = dbb(*args, *(["--key-file", str(key_file)] if encrypted else []), env=password_env(server))
    assert outcome.code == 0, outcome.stderr
    assert outcome.result["restoreTested"] is True
    assert outcome.result["tables"]["shop"] == 4
    assert outcome.result["tables"]["crm"] == 1
    assert server.databases() == before


def test_run_with_verify_and_a_restore_test_reports_the_backup_verified(server: Server, backups: Path) -> None:
    args = run_args(server, backups, "shop", verify=None, restore_test=None)
    outcome = dbb(*args, env=password_env(server))
    assert outcome.code == 0, outcome.stderr
    assert outcome.result["verified"] is True
    assert not [d for d in server.databases() if d.startswith("dbb_verify_")]


@pytest.mark.parametrize("damage", ["flip a byte", "cut the end", "append"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_verify_rejects_a_damaged_backup(
    pg: PostgresServer, backups: Path, key_file: Path, damage: str, encrypted: bool
) -> None:
    flags = {"encryption_key_file": str(key_file)} if encrypted else {}
    file = backup(pg, backups, "shop", compression="zstd", **flags)
    data = bytearray(file.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "cut the end":
        del data[-100:]
    else:
        data += b"junk"
    file.write_bytes(bytes(data))
    key_args = ["--key-file", str(key_file)] if encrypted else []
    outcome = dbb("verify", str(file), *key_args, env=password_env(pg))
    assert outcome.code == 1
    assert outcome.reason_line.startswith("dbb-backup: VerifyFailed: ")
    # With the manifest's record out of the way, the structure check itself catches it.
    manifest = file.with_name(file.name + ".json")
    record = json.loads(manifest.read_text())
    record["size"], record["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    manifest.write_text(json.dumps(record))
    outcome = dbb("verify", str(file), *key_args, env=password_env(pg))
    assert outcome.code == 1
    assert outcome.result["reason"] in ("VerifyFailed", "DecryptFailed")


def test_a_cut_short_sql_dump_fails_the_structure_check(mariadb: MariaDBServer, backups: Path) -> None:
    file = backup(mariadb, backups, "shop", compression="none")
    text = file.read_bytes()
    cut = text[: text.rindex(b"-- Dump completed")]
    file.write_bytes(cut)
    manifest = file.with_name(file.name + ".json")
    record = json.loads(manifest.read_text())
    record["size"], record["sha256"] = len(cut), hashlib.sha256(cut).hexdigest()
    manifest.write_text(json.dumps(record))
    outcome = dbb("verify", str(file), env=password_env(mariadb))
    assert outcome.code == 1
    assert "cut short" in outcome.reason_line


@pytest.mark.parametrize("command", ["verify", "restore", "decrypt"])
def test_a_wrong_key_fails_cleanly(
    pg: PostgresServer, backups: Path, key_file: Path, other_key_file: Path, tmp_path: Path, command: str
) -> None:
    file = backup(pg, backups, "shop", encryption_key_file=str(key_file))
    out = tmp_path / "decrypted"
    args = {
        "verify": ["verify", str(file), "--key-file", str(other_key_file)],
        "restore": [
            "restore",
            str(file),
            *connection_args(pg),
            "--database",
            "never_created",
            "--key-file",
            str(other_key_file),
        ],
        "decrypt": ["decrypt", str(file), "--key-file", str(other_key_file), "-o", str(out)],
    }[command]
    outcome = dbb(*args, env=password_env(pg))
    assert outcome.code == 1
    assert outcome.reason_line == (
        "dbb-backup: DecryptFailed: wrong key: this backup was encrypted with a key that is not among those given "
        "(ids: 'other.key')"
    )
    assert not out.exists()
    assert not list(tmp_path.glob(".decrypted*"))
    assert "never_created" not in pg.databases()


def test_the_result_fits_the_termination_message_and_matches_stdout(
    pg: PostgresServer, backups: Path, tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    outcome = dbb(*run_args(pg, backups, "all", name="cluster", termination_log=str(log)), env=password_env(pg))
    assert outcome.code == 0, outcome.stderr
    written = log.read_bytes()
    assert len(written) <= 4096
    assert written.decode() == outcome.stdout
    result = outcome.result
    for key in ("file", "size", "sha256", "databases", "serverVersion", "start", "end", "duration"):
        assert key in result
    assert Path(result["file"]).stat().st_size == result["size"]
    manifest = json.loads(Path(result["file"] + ".json").read_text())
    assert manifest["sha256"] == result["sha256"]
    assert manifest["globals"] is True
    assert pg.password not in json.dumps(manifest)
    assert Path(result["file"]).stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("passes", [True, False], ids=["verified", "failed"])
def test_a_backup_has_no_final_name_and_no_manifest_until_it_verified(
    pg: PostgresServer, backups: Path, monkeypatch: pytest.MonkeyPatch, passes: bool
) -> None:
    # A SIGKILL, an OOM or a lost node during verification must leave nothing a reader could take for a backup:
    # what the folder holds while the check runs is what such a run leaves behind.
    seen: list[str] = []

    def verify_and_look(path: Path, *args: Any, **kwargs: Any) -> Any:
        seen.extend(sorted(p.name for p in backups.iterdir()))
        if not passes:
            raise RunnerError(Reason.VERIFY_FAILED, "as if the check had found a damaged file")
        return verify_backup(path, *args, **kwargs)

    monkeypatch.setattr(backup_module, "verify_backup", verify_and_look)
    options = RunOptions(
        engine=Engine.POSTGRESQL,
        connection=Connection(pg.host, pg.port, pg.user, pg.password),
        databases=["shop"],
        output_dir=backups,
        compression=Compression.GZIP,
        name="shop",
        retention=Policy(keep_last=1),
        verify=True,
    )
    if passes:
        path, manifest, _ = run_backup(options, Scrubber(), Deadline(None))
        assert manifest.verified
        assert sorted(p.name for p in backups.iterdir()) == [path.name, path.name + ".json"]
    else:
        with pytest.raises(RunnerError, match="VerifyFailed"):
            run_backup(options, Scrubber(), Deadline(None))
        assert list(backups.iterdir()) == []
    assert len(seen) == 1
    assert seen[0].startswith(".shop-")
    assert seen[0].endswith(".dump.partial")


def table_rows(server: Server, database: str) -> dict[str, int]:
    """Each base table's rows, asked of the server table by table (names as the dumps write them)."""
    if isinstance(server, PostgresServer):
        names = server.sql(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            database,
        ).splitlines()
        return {name: int(server.sql(f"SELECT count(*) FROM ONLY {name}", database)) for name in names}
    names = server.sql(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{database}' "
        "AND table_type = 'BASE TABLE'"
    ).splitlines()
    return {name: int(server.sql(f"SELECT COUNT(*) FROM `{name}`", database)) for name in names}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_the_manifest_records_each_tables_rows_as_the_dump_holds_them(
    server: Server, backups: Path, compression: str
) -> None:
    # Quotes, tabs, newlines, backslashes and binary in the data: none of it may be taken for a row.
    file = backup(server, backups, "shop", "crm", name="rows", compression=compression, verify=None)
    manifest = json.loads(file.with_name(file.name + ".json").read_text())
    assert manifest["rows"] == {"shop": table_rows(server, "shop"), "crm": table_rows(server, "crm")}
    assert manifest["rows"]["crm"] == {"public.contacts" if isinstance(server, PostgresServer) else "contacts": 200}


def test_a_restore_test_compares_each_tables_rows_with_the_manifests(server: Server, backups: Path) -> None:
    file = backup(server, backups, "shop", name="counted", verify=None)
    args = ["verify", str(file), "--restore-test", *connection_args(server)]
    passed = dbb(*args, env=password_env(server))
    assert passed.code == 0, passed.stderr

    # The manifest says the backup held one row more than the restore brings back: the restore test says which.
    manifest_file = file.with_name(file.name + ".json")
    manifest = json.loads(manifest_file.read_text())
    table = "sales.orders" if isinstance(server, PostgresServer) else "orders"
    manifest["rows"]["shop"][table] += 1
    manifest_file.write_text(json.dumps(manifest))
    failed = dbb(*args, env=password_env(server))
    assert failed.code == 1
    assert failed.result["reason"] == "VerifyFailed"
    assert failed.result["message"] == (
        f"restore test of 'shop': table {table} is 3000 rows after the restore; the backup holds 3001 rows"
    )
    assert not [d for d in server.databases() if d.startswith("dbb_verify_")]
