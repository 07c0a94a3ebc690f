"""What the point-in-time e2e tests share: reading `status.continuous` and `-o wide` columns, the numbered rows
and the server's clock, and a continuous DatabaseBackup's first backup followed up to its first restorable
second."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from common.backups.model import backup_time
from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for


def continuous(kube: Kube, namespace: str, owner: str) -> dict[str, Any]:
    found: dict[str, Any] = kube.get("dbb", owner, namespace).get("status", {}).get("continuous") or {}
    return found


def written_rows(kube: Kube, db: databases.Database, database: str = "app") -> dict[int, datetime]:
    """{row id: when it was written}: NOW(6) in UTC, the statement's start, which its binlog event carries (in
    whole seconds)."""
    lines = databases.sql(kube, db, "SELECT id, at FROM journal ORDER BY id", database).splitlines()
    return {int(i): datetime.fromisoformat(at).replace(tzinfo=UTC) for i, at in (line.split("\t") for line in lines)}


def server_now(kube: Kube, db: databases.Database) -> datetime:
    return datetime.fromisoformat(databases.sql(kube, db, "SELECT UTC_TIMESTAMP(6)").strip()).replace(tzinfo=UTC)


def wide_column(kube: Kube, namespace: str, kind: str, name: str, column: str) -> str:
    """One column of `kubectl get KIND NAME -o wide`, found by where its header starts (headers hold spaces)."""
    header, row = kube("get", kind, name, "-n", namespace, "-o", "wide").splitlines()
    start = header.index(column)
    return row[start:].split()[0]


def first_backup(kube: Kube, namespace: str, owner: str, what: str = "the first backup") -> dict[str, Any]:
    """status.lastBackup once the DatabaseBackup has one (a failed run fails the wait at once)."""

    def backed_up() -> dict[str, Any] | None:
        status = kube.get("dbb", owner, namespace).get("status", {})
        assert status.get("phase") != "Failed", status.get("lastFailure")
        last: dict[str, Any] | None = status.get("lastBackup")
        return last if last and last.get("sha256") else None

    found: dict[str, Any] = wait_for(what, backed_up, 300)
    return found


def first_restorable(
    kube: Kube, namespace: str, owner: str, write: Callable[[int], list[int]]
) -> tuple[dict[str, str], str, list[int]]:
    """A continuous DatabaseBackup asked to back up now, followed until a second after its first backup is
    restorable: (its lastBackup, status.continuous.recoverableFrom, the row written after the backup)."""

    backup = first_backup(kube, namespace, owner)

    # The archiver's Pod passed the namespace's restricted Pod Security (a refused Pod is never created).
    def available() -> bool:
        conditions = kube.get("deployment", f"{owner}-archiver", namespace).get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    wait_for("the archiver Deployment to be Available", available, 300)

    def ready_status() -> dict[str, Any] | None:
        found = continuous(kube, namespace, owner)
        return found if found.get("ready") is True else None

    ready = wait_for("status.continuous ready", ready_status, 180)
    print(f"status.continuous once the archiver runs: {ready}")
    assert ready["archiver"] == f"{owner}-archiver"
    # Nothing left from before it answered ("the archiver has not answered yet").
    assert "reason" not in ready, ready
    assert "message" not in ready, ready

    # recoverableFrom is the oldest backup the archive reaches past: it needs an archived event after the backup.
    first = write(1)

    def recoverable_from() -> str | None:
        found = continuous(kube, namespace, owner)
        return str(found["recoverableFrom"]) if found.get("ready") is True and found.get("recoverableFrom") else None

    since = wait_for("status.continuous.recoverableFrom", recoverable_from, 180)
    assert since == backup_time(backup["file"]), (since, backup)
    return backup, since, first
