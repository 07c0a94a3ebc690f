"""Point-in-time recovery on a real cluster, as a user sees it: a MariaDB StatefulSet with binary logging, a
DatabaseBackup with `spec.continuous` whose archiver (a Deployment of the operator's, under the restricted Pod
Security Standard) streams the binlogs to the backup PVC, `status.continuous` and its column, and a DatabaseRestore
with `pointInTime` at a whole second between two sets of numbered writes: every row before it is restored, none
after. And the precondition a user must meet: a server without binary logging is named, with what to set."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.backups.model import backup_time
from common.constants import ANNOTATION_BACKUP_NOW, ANNOTATION_VERIFY_NOW
from common.schedule import parse_time, rfc3339
from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pitr import continuous, first_restorable, server_now, wide_column, written_rows
from tests.e2e.pods import read_pvc

NAMESPACE = "e2e-pitr"
MAX_LAG = 10
# What a server needs for the archiver: the binlog, an id of its own, and row events (runner/archive.py).
BINARY_LOGGING = ("--log-bin=mysql-bin", "--server-id=1", "--binlog-format=ROW")
RFC3339 = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"
YEARLY = "0 0 1 1 *"  # never fires during the suite: the only backups are the backup-now ones


@pytest.fixture(scope="module")
def servers(kube: Kube, deployed: str) -> Iterator[dict[str, databases.Database]]:
    """Two MariaDB 11.8 servers, started at once: one with binary logging, one without (the default)."""
    with databases.namespace(kube, NAMESPACE):
        found = {
            "binlog": databases.Database("mariadb", "11.8", "maria-binlog", NAMESPACE, "pitr-binlog-password"),
            "plain": databases.Database("mariadb", "11.8", "maria-plain", NAMESPACE, "pitr-plain-password"),
        }
        databases.deploy(kube, found["binlog"], server_args=BINARY_LOGGING)
        databases.deploy(kube, found["plain"])
        for db in found.values():
            databases.wait_ready(kube, db)
        yield found


def restore(name: str, owner: str, db: databases.Database, point: str, to: str) -> dict[str, Any]:
    return {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseRestore",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "source": {"databaseBackup": owner},
            "target": {"databaseName": db.name, "databases": [{"from": "app", "to": to}]},
            "pointInTime": point,
        },
    }


def test_a_databaserestore_reaches_a_second_between_two_writes(
    kube: Kube, servers: dict[str, databases.Database]
) -> None:
    db = servers["binlog"]
    databases.sql(kube, db, "CREATE TABLE journal (id int PRIMARY KEY, at datetime(6))")
    ids = itertools.count(1)

    def write(count: int) -> list[int]:
        """`count` numbered rows, one statement (and one kubectl exec) each, stamped in UTC."""
        done = []
        for _ in range(count):
            done.append(next(ids))
            databases.sql(kube, db, f"SET time_zone = '+00:00'; INSERT INTO journal VALUES ({done[-1]}, NOW(6))")
        return done

    owner = "pitr"
    kube.apply(
        databases.databasebackup(
            owner,
            db,
            YEARLY,
            backup_now="first",
            connection={"databases": ["app"]},
            continuous={"maxLagSeconds": MAX_LAG},
        )
    )

    backup, since, first = first_restorable(kube, NAMESPACE, owner, write)

    before = first + write(5)
    written = written_rows(kube, db, "app")
    point = (max(written[i] for i in before) + timedelta(seconds=1)).replace(microsecond=0)
    # The rows after are written once the server's own clock has passed the point: no sleep decides which side
    # of it a row falls on.
    wait_for(f"the server's clock past {rfc3339(point)}", lambda: server_now(kube, db) >= point, 60, 0.2)
    after = write(5)
    written = written_rows(kube, db, "app")
    assert max(written[i] for i in before) < point <= min(written[i] for i in after), written
    last = max(written.values()).replace(microsecond=0)

    def archived_past_the_writes() -> dict[str, Any] | None:
        found = continuous(kube, NAMESPACE, owner)
        until = parse_time(found.get("recoverableUntil"))
        return found if until is not None and until >= last else None

    status = wait_for(f"recoverableUntil at or after {rfc3339(last)}", archived_past_the_writes, 180)
    assert status["ready"] is True, status
    assert "reason" not in status, status
    assert status["recoverableFrom"] == since, status
    assert since < rfc3339(point), status  # RFC 3339 in UTC to the second: text order is time order
    assert status["lagSeconds"] >= 0, status
    print(f"status.continuous after the writes: {status}")

    # The column a user reads (`-o wide`), read between two reads of the object: an archive that moved on in
    # between shows one of them.
    shown = wide_column(kube, NAMESPACE, "dbb", owner, "RECOVERABLE UNTIL")
    assert shown in (status["recoverableUntil"], continuous(kube, NAMESPACE, owner)["recoverableUntil"]), shown

    # The archive is on the backup PVC, beside the backups: a closed or open binlog with its index entry.
    listing = read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"ls -A /backups/{db.name}/{owner}-binlog/").split()
    assert any(re.fullmatch(r"mysql-bin\.\d{6}(\.partial)?\.json", f) for f in listing), listing
    assert any(re.fullmatch(r"mysql-bin\.\d{6}(\.partial)?\.zst", f) for f in listing), listing

    # A time past the archive is refused at apply time, naming both bounds.
    beyond = rfc3339(last + timedelta(hours=1))
    refused = kube.try_apply(restore("pitr-too-late", owner, db, beyond, "app_never"))
    assert refused.returncode != 0, refused.stdout
    bounds = re.search(
        f"outside what DatabaseBackup '{owner}' can restore to: from {RFC3339} to {RFC3339}", refused.stderr
    )
    assert bounds is not None, refused.stderr
    assert bounds.group(1) == status["recoverableFrom"], refused.stderr
    said_until = parse_time(bounds.group(2))
    assert said_until is not None, refused.stderr
    assert said_until >= last, refused.stderr
    assert not kube.exists("dbr", "pitr-too-late", NAMESPACE)

    moment = rfc3339(point)
    name = "pitr-then"
    kube.apply(restore(name, owner, db, moment, "app_then"))
    assert kube.get("dbr", name, NAMESPACE)["spec"]["source"]["file"] == backup["file"]

    def finished() -> dict[str, Any] | None:
        found: dict[str, Any] = kube.get("dbr", name, NAMESPACE).get("status", {})
        return found if found.get("phase") in ("Succeeded", "Failed") else None

    restored = wait_for(f"DatabaseRestore {name} to finish", finished, 600)
    assert restored["phase"] == "Succeeded", restored
    assert restored["replayedUntil"] == moment, restored
    assert restored["databases"] == [{"source": "app", "target": "app_then", "result": "Restored"}], restored
    # Every row before the point (written_rows showed them all before it), none after it.
    assert sorted(written_rows(kube, db, "app_then")) == sorted(before)
    # The source is untouched: every row, before and after.
    assert sorted(written_rows(kube, db, "app")) == sorted(before + after)
    assert db.password not in json.dumps(kube.items("jobs", NAMESPACE))


def test_a_server_without_binary_logging_is_named_with_what_to_set(
    kube: Kube, servers: dict[str, databases.Database]
) -> None:
    db = servers["plain"]
    owner = "no-binlog"
    kube.apply(
        databases.databasebackup(
            owner, db, YEARLY, connection={"databases": ["app"]}, continuous={"maxLagSeconds": MAX_LAG}
        )
    )
    status = wait_for(
        "status.continuous.reason",
        lambda: (found := continuous(kube, NAMESPACE, owner)).get("reason") and found,
        300,
    )
    print(f"status.continuous without binary logging: {status}")
    assert status["reason"] == "BinaryLoggingOff", status
    assert status.get("ready") is not True, status
    for setting in ("log-bin", "server-id", "binlog-format=ROW"):
        assert setting in status["message"], status
    assert "recoverableUntil" not in status, status

    # Nothing to restore to: a pointInTime restore is refused at apply time and says why.
    refused = kube.try_apply(restore("no-binlog-then", owner, db, rfc3339(datetime.now(UTC)), "app_then"))
    assert refused.returncode != 0, refused.stdout
    assert "can restore to no point in time yet" in refused.stderr, refused.stderr


def patch_annotation(kube: Kube, owner: str, annotation: str, value: str) -> None:
    patch = json.dumps({"metadata": {"annotations": {annotation: value}}})
    kube("patch", "dbb", owner, "-n", NAMESPACE, "--type=merge", "-p", patch)


def test_a_check_proves_the_archive_by_rebuilding_the_newest_backup(
    kube: Kube, servers: dict[str, databases.Database]
) -> None:
    """With a restore test, a check of a continuous DatabaseBackup restores the older backup in its scratch server
    (a sidecar of the check's Pod, the database's own image), replays the archive to the newer backup's binlog
    position, and compares every table with the newer backup: `status.lastVerification.archive`. A second
    archiver on the same server (another database) runs beside the first: each has a replica id of its own."""
    db = servers["binlog"]
    databases.sql(kube, db, "CREATE DATABASE ledger")
    databases.sql(
        kube,
        db,
        "CREATE TABLE entries (id int PRIMARY KEY, at datetime(6)); INSERT INTO entries VALUES (1, NOW(6))",
        "ledger",
    )
    owner = "proof"
    kube.apply(
        databases.databasebackup(
            owner,
            db,
            YEARLY,
            backup_now="first",
            connection={"databases": ["ledger"]},
            continuous={"maxLagSeconds": MAX_LAG},
            verify={"restoreTest": True},
        )
    )

    def backed_up(previous: str | None) -> str | None:
        status = kube.get("dbb", owner, NAMESPACE).get("status", {})
        assert status.get("phase") != "Failed", status.get("lastFailure")
        file = (status.get("lastBackup") or {}).get("file")
        return str(file) if file and file != previous else None

    first = wait_for("the first backup", lambda: backed_up(None), 300)
    databases.sql(
        kube,
        db,
        "INSERT INTO entries VALUES (2, NOW(6)), (3, NOW(6)); UPDATE entries SET id = 10 WHERE id = 1",
        "ledger",
    )
    patch_annotation(kube, owner, ANNOTATION_BACKUP_NOW, "second")
    second = wait_for("the second backup", lambda: backed_up(first), 300)
    taken = parse_time(backup_time(second))
    assert taken is not None

    def archived_past_it() -> bool:
        reach = parse_time(continuous(kube, NAMESPACE, owner).get("recoverableUntil"))
        return reach is not None and reach > taken + timedelta(seconds=2)

    wait_for("the archive past the second backup", archived_past_it, 180)
    assert continuous(kube, NAMESPACE, "pitr").get("ready") is True, "the first archiver of this server still runs"
    patch_annotation(kube, owner, ANNOTATION_VERIFY_NOW, "prove")

    def verified() -> dict[str, Any] | None:
        found: dict[str, Any] | None = kube.get("dbb", owner, NAMESPACE).get("status", {}).get("lastVerification")
        return found

    verification = wait_for("the check", verified, 300)
    print(f"status.lastVerification: {verification}")
    assert verification["result"] == "Passed", verification
    proof = verification["archive"]
    assert proof["proven"] is True, proof
    assert (proof["from"].rsplit("/", 1)[-1], proof["to"].rsplit("/", 1)[-1]) == (
        first.rsplit("/", 1)[-1],
        second.rsplit("/", 1)[-1],
    )
    assert proof["tables"] == 1
