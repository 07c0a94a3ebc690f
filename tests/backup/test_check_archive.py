"""`dbb-backup check --prove-archive` against real servers: a MariaDB with binary logging whose backups and binlog
archive are checked, and a plain MariaDB as the check's scratch server, where the older backup plus the replayed
archive must equal the newest backup, table by table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hack.harness.databases import MariaDBServer
from tests.backup.cli import Outcome, backup, dbb, password_env, wait_for
from tests.backup.test_pitr_mariadb import BINLOG, archiving
from tests.backup.test_retention_and_verify import next_second

UID = "0b5e7c1e-0000-4000-8000-00000000a24c"


@pytest.fixture(scope="module")
def source() -> Iterator[MariaDBServer]:
    """The database's server, with binary logging on as point-in-time recovery needs it."""
    with MariaDBServer.start(settings=BINLOG) as server:
        yield server


def ledger(server: MariaDBServer, database: str) -> None:
    """`database` with two tables and some rows."""
    server.sql(
        f"CREATE DATABASE {database};"
        f"CREATE TABLE {database}.accounts (id int PRIMARY KEY, name varchar(40));"
        f"CREATE TABLE {database}.entries (id int PRIMARY KEY, account int, amount decimal(10, 2), note text);"
        f"INSERT INTO {database}.accounts VALUES (1, 'cash'), (2, 'bank');"
        f"INSERT INTO {database}.entries VALUES (1, 1, 10.50, 'opening'), (2, 2, 99.99, NULL)"
    )


def owned(server: MariaDBServer, folder: Path, database: str) -> Path:
    """A backup of `database` by the owner the check is given, named after the database (as is its archive)."""
    flags = {"name": database, "owner": f"ns/{database}", "owner_uid": UID, "verify": None}
    made = backup(server, folder, database, **flags)
    next_second(made.name)  # the next backup gets a name of its own
    return made


def manifest(file: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(file.with_name(file.name + ".json").read_text())
    return loaded


def coordinates(file: Path) -> tuple[str, int]:
    binlog = manifest(file)["binlog"]
    assert isinstance(binlog, dict)
    return binlog["file"], binlog["position"]


def archived_to(folder: Path, database: str, binlog: str, position: int) -> bool:
    """Whether the archive holds `binlog` up to `position`, closed or open."""
    for name in (f"{binlog}.json", f"{binlog}.partial.json"):
        path = folder / f"{database}-binlog" / name
        if path.exists() and json.loads(path.read_text())["binlogSize"] >= position:
            return True
    return False


def two_backups_with_writes_between(
    server: MariaDBServer, folder: Path, database: str, between: str = "", undefaulted: str = ""
) -> tuple[Path, Path]:
    """An older and a newer backup of a fresh `database`, archived all along: between them inserts, updates, deletes
    and a new table across a binlog rotation (and `between`, any more SQL, and `undefaulted`, SQL run in a session
    without a default database); writes after the newer one too, which the
    proof must not replay. Written in sessions whose default database is `database`, as an application's are: the
    replay takes the statements of that database (engines.mysql_binlog_replay_argv)."""
    ledger(server, database)
    with archiving(server, folder, 1, database):
        older = owned(server, folder, database)
        server.sql(
            f"INSERT INTO {database}.entries VALUES (3, 1, -4.25, 'coffee'), (4, 2, 1200.00, 'salary');"
            f"UPDATE {database}.entries SET note = 'opening balance' WHERE id = 1;"
            f"DELETE FROM {database}.accounts WHERE id = 2; INSERT INTO {database}.accounts VALUES (3, 'card')",
            database,
        )
        server.sql("FLUSH BINARY LOGS")
        server.sql(
            f"CREATE TABLE {database}.budgets (month char(7) PRIMARY KEY, total decimal(10, 2));"
            f"INSERT INTO {database}.budgets VALUES ('2026-12', 800.00);"
            f"UPDATE {database}.entries SET amount = amount * 2 WHERE account = 1;" + between,
            database,
        )
        if undefaulted:
            server.sql(undefaulted)
        newer = owned(server, folder, database)
        server.sql(f"INSERT INTO {database}.entries VALUES (5, 3, 7.00, 'after the newest backup')", database)
        binlog, position = server.sql("SHOW MASTER STATUS").split("\t")[:2]
        wait_for(lambda: archived_to(folder, database, binlog, int(position)), "the archive to reach the last write")
    return older, newer


def prove(folder: Path, scratch: MariaDBServer, *flags: str) -> Outcome:
    """The scheduled check with its restore test in `scratch` (its password in DB_PASSWORD, as the Job sets it)."""
    where = ["--scratch-port", str(scratch.port), "--scratch-user", scratch.user]
    args = ["check", str(folder), "--owner-uid", UID, "--restore-test", *where, "--prove-archive", *flags]
    return dbb(*args, env=password_env(scratch), timeout=300)


def assert_scratch_left_clean(scratch: MariaDBServer, database: str) -> None:
    assert database not in scratch.databases()
    assert f"{database}_dbb_proof" not in scratch.databases()


def test_the_check_proves_that_the_archive_turns_the_older_backup_into_the_newest(
    source: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    older, newer = two_backups_with_writes_between(source, tmp_path, "ledger")
    first, _ = coordinates(older)
    last, _ = coordinates(newer)
    assert first != last, "the writes between the backups span a binlog rotation"

    outcome = prove(tmp_path, mariadb)

    assert outcome.code == 0, outcome.stderr
    assert outcome.result["status"] == "Verified"
    end = datetime.fromisoformat(str(manifest(newer)["end"])).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert outcome.result["archive"] == {
        "proven": True,
        "from": older.name,
        "to": newer.name,
        "until": end,
        "binlogs": [first, last],
        "tables": 3,
    }
    assert_scratch_left_clean(mariadb, "ledger")
    assert mariadb.password not in outcome.stdout + outcome.stderr


def test_an_archive_kept_elsewhere_is_named_with_binlog_archive(
    source: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    backups, elsewhere = tmp_path / "backups", tmp_path / "elsewhere"
    backups.mkdir()
    older, newer = two_backups_with_writes_between(source, backups, "ledger_moved")
    elsewhere.mkdir()
    (backups / "ledger_moved-binlog").rename(elsewhere / "ledger_moved-binlog")

    beside = prove(backups, mariadb)
    named = prove(backups, mariadb, "--binlog-archive", str(elsewhere / "ledger_moved-binlog"))

    # Beside the backups there is no archive now: nothing to prove, and no failure.
    assert beside.code == 0, beside.stderr
    assert beside.result["archive"]["proven"] is False
    assert beside.result["archive"]["why"].startswith(
        f"the archive at {backups / 'ledger_moved-binlog'} does not reach"
    )
    assert named.code == 0, named.stderr
    assert (named.result["archive"]["from"], named.result["archive"]["to"]) == (older.name, newer.name)
    assert_scratch_left_clean(mariadb, "ledger_moved")


@pytest.mark.parametrize(
    ("harm", "reason", "said"),
    [
        ("damaged", "VerifyFailed", "does not decompress"),
        ("missing", "ArchiveGap", "is gone"),
    ],
)
def test_a_damaged_or_missing_archived_binlog_fails_the_check_and_leaves_no_scratch_database(
    source: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path, harm: str, reason: str, said: str
) -> None:
    database = f"ledger_{harm}"
    older, _ = two_backups_with_writes_between(source, tmp_path, database)
    first, _ = coordinates(older)
    entry = json.loads((tmp_path / f"{database}-binlog" / f"{first}.json").read_text())
    stored = tmp_path / f"{database}-binlog" / entry["object"]
    if harm == "damaged":
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
    else:
        stored.unlink()

    outcome = prove(tmp_path, mariadb)

    assert outcome.code == 1
    result = outcome.result
    assert (result["status"], result["reason"]) == ("Failed", reason)
    assert entry["object"] in result["message"]
    assert said in result["message"]
    assert result["archive"] == {"proven": False, "reason": reason, "message": result["message"]}
    assert outcome.reason_line == f"dbb-backup: {reason}: {result['message']}"
    assert [c["result"] for c in result["checked"]] == ["Passed"], "the backups themselves are fine"
    assert_scratch_left_clean(mariadb, database)
    assert mariadb.password not in outcome.stdout + outcome.stderr


@pytest.mark.parametrize(
    ("unlogged", "differs"),
    [
        ("INSERT INTO {db}.entries VALUES (90, 1, 1.00, 'off the binlog')", "has 4 rows replayed, 5 in"),
        ("UPDATE {db}.entries SET note = 'off the binlog' WHERE id = 2", "has the same 4 rows, but other contents"),
    ],
)
def test_an_archive_that_does_not_reproduce_the_newest_backup_is_an_archive_mismatch(
    source: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path, unlogged: str, differs: str
) -> None:
    database = "ledger_unlogged_" + unlogged.split()[0].lower()
    # Written with binary logging off for the session: the newest backup has it, the archive never saw it.
    between = f"SET sql_log_bin = 0; {unlogged.format(db=database)}; SET sql_log_bin = 1"
    older, newer = two_backups_with_writes_between(source, tmp_path, database, between)

    outcome = prove(tmp_path, mariadb)

    assert outcome.code == 1
    result = outcome.result
    assert (result["status"], result["reason"]) == ("Failed", "ArchiveMismatch")
    assert result["message"].startswith(f"the archive replayed from {older.name} does not reproduce {newer.name}: ")
    assert f"table 'entries' {differs}" in result["message"]
    assert outcome.reason_line == f"dbb-backup: ArchiveMismatch: {result['message']}"
    assert_scratch_left_clean(mariadb, database)


def test_with_only_one_backup_there_is_nothing_to_prove_yet_and_the_check_passes(
    source: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    ledger(source, "ledger_single")
    with archiving(source, tmp_path, 1, "ledger_single"):
        only = owned(source, tmp_path, "ledger_single")

    outcome = prove(tmp_path, mariadb)

    assert outcome.code == 0, outcome.stderr
    assert outcome.result["status"] == "Verified"
    assert outcome.result["archive"] == {
        "proven": False,
        "why": f"{only.name} is the only backup of 'ledger_single' yet: a proof needs an older one too",
    }
    assert_scratch_left_clean(mariadb, "ledger_single")


def test_prove_archive_needs_a_restore_test(tmp_path: Path, mariadb: MariaDBServer) -> None:
    outcome = dbb("check", str(tmp_path), "--owner-uid", UID, "--prove-archive", env=password_env(mariadb))

    assert outcome.code == 1
    assert outcome.reason_line == (
        "dbb-backup: InvalidArguments: --prove-archive needs --restore-test (and its scratch server) for "
        "MySQL/MariaDB, or --pg-bin or --replay-dir for PostgreSQL"
    )


def test_a_statement_the_replay_would_leave_out_fails_the_proof_before_anything_is_restored(
    source: MariaDBServer, mariadb: MariaDBServer, tmp_path: Path
) -> None:
    database = "ledger_undefaulted"
    # Run with no default database: the replay, which takes the statements of sessions whose default is the
    # database, would leave it out.
    undefaulted = f"ALTER TABLE {database}.accounts ADD COLUMN closed date"
    two_backups_with_writes_between(source, tmp_path, database, undefaulted=undefaulted)

    outcome = prove(tmp_path, mariadb)

    assert outcome.code == 1
    result = outcome.result
    assert (result["status"], result["reason"]) == ("Failed", "RestoreFailed")
    assert "ran while another database (or none) was the default" in result["message"]
    assert "ADD COLUMN closed" in result["message"]
    assert_scratch_left_clean(mariadb, database)
