"""`kubectl dbb status` and `kubectl dbb list`: tables from recorded status and `now`, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from plugin.reports import EMPTY_LIST, backups_table, overdue, problems, status_table
from plugin.tables import age, table

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


def dbb(name: str = "nightly", namespace: str = "shop", schedule: str = "0 3 * * *", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": "u-1", "creationTimestamp": "2026-11-01T00:00:00Z"},
        "spec": {"databaseName": "example-db", "schedule": schedule},
        "status": status,
    }


def ready(status: str, reason: str, message: str) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": message}]


def test_a_healthy_backup_shows_its_ages_and_no_problem() -> None:
    healthy = dbb(
        lastBackupTime="2026-12-07T03:00:41Z",
        lastVerification={"time": "2026-12-07T04:30:00Z", "result": "Passed"},
        conditions=ready("True", "Scheduled", "next backup at 2026-12-08T03:00:00Z"),
    )
    assert status_table([healthy], NOW, all_namespaces=False) == (
        "NAME      DATABASE     LAST BACKUP   SCHEDULE    OVERDUE   LAST VERIFIED   PROBLEM\n"
        "nightly   example-db   6h29m         0 3 * * *             5h"
    )


def test_all_namespaces_adds_the_namespace_first_and_sorts_by_it() -> None:
    rows = [
        dbb("b", "zoo", lastBackupTime="2026-12-07T03:00:00Z"),
        dbb("a", "app", lastBackupTime="2026-12-07T03:00:00Z"),
    ]
    lines = status_table(rows, NOW, all_namespaces=True).splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [line.split()[:2] for line in lines[1:]] == [["app", "a"], ["zoo", "b"]]


JUST_AFTER_NINE = datetime(2026, 12, 7, 9, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("obj", "now", "late"),
    [
        # Due 2026-12-06T03:00 after a success the day before: 30h30m late.
        (dbb(lastBackupTime="2026-12-05T03:00:10Z"), NOW, timedelta(hours=30, minutes=30)),
        (dbb(lastBackupTime="2026-12-07T03:00:10Z"), NOW, None),  # next due tomorrow
        (dbb(lastBackupTime="2026-12-05T03:00:10Z", inProgress=True), NOW, None),  # a run is under way
        # No success yet: counted from creation (2026-11-01), the first slot the next day at 03:00.
        (dbb(), NOW, NOW - datetime(2026, 11, 1, 3, tzinfo=UTC)),
        (dbb(schedule="0 9 * * *", lastBackupTime="2026-12-06T09:00:10Z"), JUST_AFTER_NINE, None),  # the grace
        (dbb(schedule="not a schedule", lastBackupTime="2026-12-01T03:00:00Z"), NOW, None),
    ],
)
def test_overdue_counts_from_the_first_slot_after_the_last_success(
    obj: dict[str, Any], now: datetime, late: timedelta | None
) -> None:
    assert overdue(obj, now) == late


def test_a_suspended_backup_is_never_overdue_and_says_so() -> None:
    obj = dbb(lastBackupTime="2026-11-05T03:00:10Z")
    obj["spec"]["suspend"] = True
    assert overdue(obj, NOW) is None
    assert problems(obj, NOW) == ["suspended"]


def test_the_time_zone_and_window_of_the_spec_move_the_slot() -> None:
    obj = dbb(lastBackupTime="2026-12-06T08:00:00Z")
    obj["spec"] |= {"schedule": "0 3 * * *", "timeZone": "America/New_York"}  # 08:00 UTC
    assert overdue(obj, datetime(2026, 12, 7, 8, 0, 30, tzinfo=UTC)) is None
    assert overdue(obj, datetime(2026, 12, 7, 9, 0, tzinfo=UTC)) == timedelta(hours=1)


def test_problems_come_most_urgent_first() -> None:
    obj = dbb(
        phase="Failed",
        lastBackupTime="2026-12-05T03:00:10Z",
        lastFailure={"time": "2026-12-07T03:00:20Z", "reason": "DumpFailed", "message": "pg_dump: connection\nrefused"},
        consecutiveFailures=2,
        lastVerification={
            "time": "2026-12-07T04:30:00Z",
            "result": "Failed",
            "backups": [
                {"file": "/backups/a.dump", "result": "Passed"},
                {"file": "/backups/b.dump", "result": "Failed", "reason": "VerifyFailed", "message": "sha256 differs"},
            ],
        },
    )
    assert problems(obj, NOW) == [
        "DumpFailed: pg_dump: connection refused (2 runs in a row)",
        "overdue by 30h",
        "verification VerifyFailed: sha256 differs",
    ]


def test_a_configuration_that_cannot_run_and_a_cap_holding_a_run_back_are_named() -> None:
    invalid = dbb(phase="Invalid", conditions=ready("False", "InvalidSpec", "spec.schedule: " + "x" * 200))
    shown = problems(invalid, NOW)[0]
    assert shown.startswith("InvalidSpec: spec.schedule: xxx")
    assert len(shown) == 120
    assert shown.endswith("…")
    waiting = dbb(phase="Waiting", lastBackupTime="2026-12-07T03:00:00Z", waiting={"cap": "3 of 3 on store/s3"})
    assert problems(waiting, NOW) == ["Waiting: 3 of 3 on store/s3"]


def test_a_failure_followed_by_a_success_is_no_problem() -> None:
    obj = dbb(
        lastBackupTime="2026-12-07T03:10:00Z",
        lastFailure={"time": "2026-12-07T03:00:20Z", "reason": "DumpFailed", "message": "x"},
        consecutiveFailures=0,
    )
    assert problems(obj, NOW) == []


def backup(time: str, size: int, *kept: str, key: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"time": time, "file": f"/backups/db/nightly-{time}.dump", "size": size}
    found |= {"encrypted": key is not None, "keptBy": list(kept)}
    if key is not None:
        found["keyId"] = key
    return found


def test_the_list_shows_each_stored_backup_newest_first_with_what_keeps_it() -> None:
    status = {
        "backups": [
            backup("2026-12-07T03:00:10Z", 3_726_654, "latest", "daily", key="k-2026-12"),
            backup("2026-12-06T03:00:10Z", 3_700_000, "daily", "weekly", key="k-2026-11"),
            backup("2026-12-05T03:00:10Z", 512, "daily"),
        ],
        "backupsOmitted": 12,
        "lastVerification": {
            "time": "2026-12-07T04:30:00Z",
            "result": "Failed",
            "backups": [
                {"file": "/backups/db/nightly-2026-12-07T03:00:10Z.dump", "result": "Passed"},
                {
                    "file": "/backups/db/nightly-2026-12-06T03:00:10Z.dump",
                    "result": "Failed",
                    "reason": "DecryptFailed",
                },
            ],
        },
    }
    assert backups_table(status, NOW) == (
        "TIME                   SIZE       KEY         KEPT BY        VERIFIED\n"
        "2026-12-07T03:00:10Z   3.55 MiB   k-2026-12   latest,daily   Passed 5h ago\n"
        "2026-12-06T03:00:10Z   3.53 MiB   k-2026-11   daily,weekly   Failed 5h ago (DecryptFailed)\n"
        "2026-12-05T03:00:10Z   512 B      -           daily          when written\n"
        "... and 12 older backups not listed"
    )


@pytest.mark.parametrize("status", [{}, {"backups": []}, {"backups": None}, {"lastBackupTime": "2026-12-07T03:00:00Z"}])
def test_an_empty_or_absent_list_says_when_it_will_be_recorded(status: dict[str, Any]) -> None:
    assert backups_table(status, NOW) == EMPTY_LIST
    assert EMPTY_LIST == "no stored backups recorded yet; the list is recorded after the next backup run"


def test_an_encrypted_backup_without_a_key_id_says_so() -> None:
    entry = backup("2026-12-07T03:00:10Z", 1, "latest") | {"encrypted": True}
    assert "(no key id)" in backups_table({"backups": [entry]}, NOW)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        *((5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (3 * 3600 + 600, "3h10m"), (30 * 3600, "30h")),
        *((3 * 86400 + 3600, "3d1h"), (20 * 86400, "20d"), (800 * 86400, "2y")),
    ],
)
def test_ages_read_as_kubectls(seconds: int, shown: str) -> None:
    assert age(NOW - timedelta(seconds=seconds), NOW) == shown


def test_a_table_pads_columns_three_spaces_apart_and_trims_the_line_end() -> None:
    assert table(["A", "LONGER"], [["x", ""], ["wide", "y"]]) == "A      LONGER\nx\nwide   y"


def test_the_list_ends_with_how_far_a_point_in_time_restore_reaches() -> None:
    listed = {"backups": [backup("2026-12-07T03:00:10Z", 512, "latest")]}
    running = {
        "archiver": "nightly-archiver",
        "ready": True,
        "recoverableFrom": "2026-12-07T03:00:10Z",
        "recoverableUntil": "2026-12-07T08:41:55Z",
        "lagSeconds": 4.4,
        "updated": "2026-12-07T08:41:57Z",
    }
    assert backups_table(listed | {"continuous": running}, NOW).splitlines()[-1] == (
        "point in time (--at): from 2026-12-07T03:00:10Z to 2026-12-07T08:41:55Z; archive 4s behind at "
        "2026-12-07T08:41:57Z"
    )
    stopped = {"archiver": "nightly-archiver", "ready": False, "reason": "BinaryLoggingOff", "message": "set log-bin"}
    assert backups_table(listed | {"continuous": stopped}, NOW).splitlines()[-1] == (
        "point in time (--at): nothing yet (no backup since archiving began); archiver BinaryLoggingOff: set log-bin"
    )
    assert "point in time" not in backups_table(listed, NOW)
