"""Backups restore to the same content: every row of every table, views, functions, triggers, sequences at their
values, grants and (for `all`) roles; encrypted or not; with our restore and with the databases' own tools."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.harness.content import PG_ROLE, mariadb_fingerprint, pg_fingerprint
from hack.harness.databases import MariaDBServer, PostgresServer
from tests.backup.cli import backup, connection_args, dbb, password_env, restore

COMPRESSIONS = ["gzip", "zstd", "none"]


@pytest.fixture
def scratch_names(pg: PostgresServer, mariadb: MariaDBServer) -> Iterator[list[str]]:
    """Names for restored databases, dropped on both servers afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        pg.drop_database(name)
        mariadb.drop_database(name)


def new_name(names: list[str]) -> str:
    name = f"restored_{uuid.uuid4().hex[:8]}"
    names.append(name)
    return name


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_postgresql_database_restores_to_the_same_content(
    pg: PostgresServer, backups: Path, key_file: Path, scratch_names: list[str], compression: str, encrypted: bool
) -> None:
    key = key_file if encrypted else None
    flags = {"compression": compression, "encryption_key_file": str(key) if key else None}
    file = backup(pg, backups, "shop", **{k: v for k, v in flags.items() if v})
    target = new_name(scratch_names)
    outcome = restore(pg, file, target, key=key)
    assert outcome.code == 0, outcome.stderr
    assert pg_fingerprint(pg, target) == pg_fingerprint(pg, "shop")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_mariadb_database_restores_to_the_same_content(
    mariadb: MariaDBServer,
    backups: Path,
    key_file: Path,
    scratch_names: list[str],
    compression: str,
    encrypted: bool,
) -> None:
    flags = {"compression": compression} | ({"encryption_key_file": str(key_file)} if encrypted else {})
    file = backup(mariadb, backups, "shop", **flags)
    target = new_name(scratch_names)
    outcome = restore(mariadb, file, target, key=key_file if encrypted else None)
    assert outcome.code == 0, outcome.stderr
    assert mariadb_fingerprint(mariadb, target) == mariadb_fingerprint(mariadb, "shop")


def test_the_fingerprint_sees_a_changed_row(pg: PostgresServer, backups: Path, scratch_names: list[str]) -> None:
    # Guards the guard: a round trip that lost one value must not compare equal.
    file = backup(pg, backups, "shop")
    target = new_name(scratch_names)
    assert restore(pg, file, target).code == 0
    pg.sql("UPDATE sales.blobs SET data = data || '\\x00'::bytea WHERE id = 2", target)
    assert pg_fingerprint(pg, target) != pg_fingerprint(pg, "shop")


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_several_postgresql_databases_restore_under_new_names(
    pg: PostgresServer, backups: Path, scratch_names: list[str], compression: str
) -> None:
    file = backup(pg, backups, "shop", "crm", name="pair", compression=compression)
    assert file.name.endswith(".tar")
    shop, crm = new_name(scratch_names), new_name(scratch_names)
    outcome = restore(pg, file, f"shop={shop}", f"crm={crm}")
    assert outcome.code == 0, outcome.stderr
    assert outcome.result["databases"] == {"shop": shop, "crm": crm}
    assert outcome.result["restoreSeconds"] > 0
    assert pg_fingerprint(pg, shop) == pg_fingerprint(pg, "shop")
    assert pg_fingerprint(pg, crm) == pg_fingerprint(pg, "crm")


def test_all_brings_back_every_database_and_the_roles_on_an_empty_server(
    pg: PostgresServer, pg_empty: PostgresServer, backups: Path, key_file: Path
) -> None:
    file = backup(pg, backups, "all", name="cluster", compression="zstd", encryption_key_file=str(key_file))
    # pg_empty's superuser has another password: the restore runs there as it would on a rebuilt server, and the
    # backed-up ALTER ROLE of that superuser must not lock the restore out halfway (found on a real cluster).
    outcome = restore(pg_empty, file, key=key_file)
    assert outcome.code == 0, outcome.stderr
    assert {"shop", "crm", "postgres"} <= set(outcome.result["databases"])
    role = pg_empty.sql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{PG_ROLE}'")
    assert role == "t", "the login role came back"
    for database in ("shop", "crm"):
        assert pg_fingerprint(pg_empty, database) == pg_fingerprint(pg, database)
    assert pg_empty.sql("SELECT 1") == "1", "the restoring role still logs in with its own password"


def test_several_mariadb_databases_restore_under_new_names(
    mariadb: MariaDBServer, backups: Path, scratch_names: list[str]
) -> None:
    file = backup(mariadb, backups, "shop", "crm", name="pair", compression="zstd")
    shop, crm = new_name(scratch_names), new_name(scratch_names)
    outcome = restore(mariadb, file, f"shop={shop}", f"crm={crm}")
    assert outcome.code == 0, outcome.stderr
    assert mariadb_fingerprint(mariadb, shop) == mariadb_fingerprint(mariadb, "shop")
    assert mariadb_fingerprint(mariadb, crm) == mariadb_fingerprint(mariadb, "crm")


def test_all_on_mariadb_takes_every_database_but_the_system_schemas(mariadb: MariaDBServer, backups: Path) -> None:
    outcome = dbb(
        "run", "--engine", "mysql", *connection_args(mariadb), "--database", "all", "--name", "everything",
        "--output-dir", str(backups), env=password_env(mariadb),
    )  # fmt: skip
    assert outcome.code == 0, outcome.stderr
    databases = outcome.result["databases"]
    assert {"shop", "crm"} <= set(databases)
    assert not {"mysql", "sys", "information_schema", "performance_schema"} & set(databases)


def test_a_decrypted_postgresql_backup_restores_with_pg_restore_alone(
    pg: PostgresServer, backups: Path, key_file: Path, tmp_path: Path, scratch_names: list[str]
) -> None:
    file = backup(pg, backups, "shop", encryption_key_file=str(key_file))
    plain = tmp_path / "shop.dump"
    outcome = dbb("decrypt", str(file), "--key-file", str(key_file), "-o", str(plain), env=password_env(pg))
    assert outcome.code == 0, outcome.stderr
    target = new_name(scratch_names)
    pg.sql(f"CREATE DATABASE {target}")
    subprocess.run(
        ["pg_restore", "--exit-on-error", "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-d", target, str(plain)],
        env=pg.env,
        check=True,
        capture_output=True,
    )
    assert pg_fingerprint(pg, target) == pg_fingerprint(pg, "shop")


def test_a_mariadb_backup_restores_with_gunzip_and_the_mariadb_client(
    mariadb: MariaDBServer, backups: Path, scratch_names: list[str]
) -> None:
    file = backup(mariadb, backups, "shop", compression="gzip")
    target = new_name(scratch_names)
    mariadb.sql(f"CREATE DATABASE {target}")
    client = ["mariadb", "--no-defaults", "-h", mariadb.host, "-P", str(mariadb.port), "-u", mariadb.user, target]
    with subprocess.Popen(["gunzip", "-c", str(file)], stdout=subprocess.PIPE) as gunzip:
        done = subprocess.run(client, stdin=gunzip.stdout, env=mariadb.env, check=False, capture_output=True)
    assert gunzip.returncode == 0
    assert done.returncode == 0, done.stderr
    assert mariadb_fingerprint(mariadb, target) == mariadb_fingerprint(mariadb, "shop")


# --- a restore checks the whole file first, and goes into a new database --------------------------------------


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> PostgresServer | MariaDBServer:
    found: PostgresServer | MariaDBServer = request.getfixturevalue(
        "pg" if request.param == "postgresql" else "mariadb"
    )
    return found


def test_a_flipped_byte_in_an_encrypted_backup_changes_nothing_on_the_server(
    server: PostgresServer | MariaDBServer, backups: Path, key_file: Path, scratch_names: list[str]
) -> None:
    file = backup(server, backups, "shop", compression="zstd", encryption_key_file=str(key_file))
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    target = new_name(scratch_names)
    before = server.databases()
    outcome = restore(server, file, target, key=key_file)
    assert outcome.code == 1
    assert outcome.result["reason"] == "VerifyFailed"  # the manifest's sha256, before the first byte is restored
    assert "is not the manifest's" in outcome.result["message"]
    # Without the manifest, the chunk's GCM tag catches it: still nothing restored.
    Path(str(file) + ".json").unlink()
    outcome = restore(server, file, target, key=key_file, without_manifest=True)
    assert outcome.code == 1
    assert outcome.result["reason"] == "DecryptFailed"
    assert server.databases() == before


def test_a_mariadb_restore_refuses_an_existing_database_and_replaces_it_when_asked(
    mariadb: MariaDBServer, backups: Path, scratch_names: list[str]
) -> None:
    file = backup(mariadb, backups, "shop")
    target = new_name(scratch_names)
    mariadb.sql(f"CREATE DATABASE {target}")
    mariadb.sql("CREATE TABLE mine (note TEXT); INSERT INTO mine VALUES ('mine')", target)
    outcome = restore(mariadb, file, target)
    assert outcome.code == 1
    assert outcome.result["reason"] == "TargetExists"
    assert mariadb.sql("SELECT note FROM mine", target) == "mine"
    outcome = restore(mariadb, file, target, replace=True)
    assert outcome.code == 0, outcome.stderr
    # A MySQL script replaces the tables it holds; a table it does not hold stays (see restore.py).
    assert mariadb.sql("SELECT note FROM mine", target) == "mine"
    mariadb.sql("DROP TABLE mine", target)
    assert mariadb_fingerprint(mariadb, target) == mariadb_fingerprint(mariadb, "shop")


def test_a_failed_mariadb_restore_drops_the_database_it_created(
    mariadb: MariaDBServer, backups: Path, scratch_names: list[str], tmp_path: Path
) -> None:
    file = backup(mariadb, backups, "shop", compression="none")
    # A script that fails half way (a statement the server rejects after the first tables): with --without-manifest,
    # since its manifest would refuse the changed file before the restore starts.
    text = file.read_text(encoding="utf-8", errors="surrogateescape")
    middle = text.index("CREATE TABLE", len(text) // 2)
    broken = tmp_path / file.name
    broken.write_text(
        text[:middle] + "SELECT no_such_function();\n" + text[middle:], encoding="utf-8", errors="surrogateescape"
    )
    target = new_name(scratch_names)
    outcome = restore(mariadb, broken, target, without_manifest=True)
    assert outcome.code == 1
    assert outcome.result["reason"] == "RestoreFailed"
    assert target not in mariadb.databases()
