"""Per-DatabaseBackup series, read from the cache at scrape time (reconciler.backup_metrics)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from prometheus_client import generate_latest

from common.schedule import parse_schedule
from reconciler.backup_metrics import BackupMetrics
from reconciler.metrics import Metrics
from tests.fixtures import cached_backup, page_samples, statefulset


def backup(
    name: str = "nightly", *, schedule: str = "0 2 * * *", zone: str | None = None, **status: Any
) -> dict[str, Any]:
    return cached_backup(name, schedule, zone=zone, created="2026-11-01T00:00:00Z", **status)


def scrape(objects: list[dict[str, Any]], now: str) -> dict[tuple[str, str], float]:
    """{(series name, name label): value} of one scrape at `now`."""
    collector = BackupMetrics()
    collector.read_from(lambda: objects, lambda: datetime.fromisoformat(now).astimezone(UTC))
    return {(sample.name, sample.labels["name"]): sample.value for sample in page_samples(collector.exposition())}


def overdue(obj: dict[str, Any], now: str) -> float:
    return scrape([obj], now)[("dbb_backup_overdue_seconds", obj["metadata"]["name"])]


def test_a_weekly_schedule_is_not_late_on_day_three_and_late_by_the_second_after_its_slot() -> None:
    weekly = backup(schedule="0 3 * * 0", lastBackupTime="2026-11-29T03:05:00Z")
    assert overdue(weekly, "2026-12-02T12:00:00Z") == 0
    assert overdue(weekly, "2026-12-06T02:59:59Z") == 0
    assert overdue(weekly, "2026-12-06T04:00:00Z") == 3600


def test_the_slot_is_read_in_the_objects_own_time_zone() -> None:
    eastern = backup(zone="America/New_York", lastBackupTime="2026-12-05T07:10:00Z")  # 02:10 EST
    assert overdue(eastern, "2026-12-06T06:59:00Z") == 0
    assert overdue(eastern, "2026-12-06T07:30:00Z") == 1800  # 02:00 EST is 07:00 UTC


def test_a_25_hour_night_raises_no_alarm_and_a_23_hour_one_is_caught_at_the_jump() -> None:
    # Clocks go back on 2026-11-01: after the backup at 01:36 EDT, the next 01:30 is 25 hours later, not 24.
    back = backup(schedule="30 1 * * *", zone="America/New_York", lastBackupTime="2026-11-01T05:36:00Z")
    assert overdue(back, "2026-11-02T06:00:00Z") == 0  # 24 h 24 min after the last backup: not late
    assert overdue(back, "2026-11-02T06:40:00Z") == 600  # 01:30 EST is 06:30 UTC
    # Clocks go forward on 2026-03-08: 02:30 does not exist, and the slot fires at the jump, 07:00 UTC.
    forward = backup(schedule="30 2 * * *", zone="America/New_York", lastBackupTime="2026-03-07T07:35:00Z")
    assert overdue(forward, "2026-03-08T06:59:00Z") == 0
    assert overdue(forward, "2026-03-08T07:20:00Z") == 1200


def test_a_backup_that_never_succeeded_is_owed_from_its_creation_and_a_suspended_one_nothing() -> None:
    never = backup()
    assert overdue(never, "2026-11-01T02:00:30Z") == 30
    never["spec"]["suspend"] = True
    series = scrape([never], "2026-12-01T00:00:00Z")
    assert series[("dbb_backup_overdue_seconds", "nightly")] == 0
    assert series[("dbb_backup_suspended", "nightly")] == 1


def test_each_status_field_becomes_its_series_and_a_deleted_object_takes_them_along() -> None:
    status: dict[str, Any] = {
        "lastBackupTime": "2026-12-06T02:01:05Z",
        "lastBackup": {"file": "/backups/x.dump.gz", "size": 4096, "duration": "1m5s", "kept": 7, "keptBytes": 28672},
        "lastFailure": {"time": "2026-12-05T02:00:40Z", "reason": "DumpFailed", "message": "x"},
        "consecutiveFailures": 0,
        "nextBackupTime": "2026-12-07T02:00:00Z",
        "lastVerification": {"time": "2026-12-06T04:00:00Z", "result": "Failed", "job": "j"},
        "restoreDrills": [
            {"time": "2026-12-06T04:00:00Z", "file": "x", "result": "Passed", "seconds": 42.5},
            {"time": "2026-12-05T04:00:00Z", "file": "y", "result": "Failed", "seconds": 7.0},
        ],
    }
    series = scrape([backup(**status), backup("other")], "2026-12-06T12:00:00Z")
    assert series[("dbb_backup_last_success_timestamp_seconds", "nightly")] == 1796522465
    assert series[("dbb_backup_last_failure_timestamp_seconds", "nightly")] == 1796436040
    assert series[("dbb_backup_next_timestamp_seconds", "nightly")] == 1796608800
    assert series[("dbb_backup_last_size_bytes", "nightly")] == 4096
    assert series[("dbb_backup_last_duration_seconds", "nightly")] == 65
    assert series[("dbb_backup_kept", "nightly")] == 7
    assert series[("dbb_backup_kept_bytes", "nightly")] == 28672
    assert series[("dbb_backup_consecutive_failures", "nightly")] == 0
    assert series[("dbb_verification_last_passed", "nightly")] == 0
    assert series[("dbb_restore_drill_last_duration_seconds", "nightly")] == 42.5  # the newest drill
    assert series[("dbb_restore_drill_last_passed", "nightly")] == 1
    assert series[("dbb_restore_drill_last_timestamp_seconds", "nightly")] == 1796529600
    assert series[("dbb_backup_info", "nightly")] == 1
    assert ("dbb_backup_last_success_timestamp_seconds", "other") not in series  # never succeeded: no series
    assert {name for name, who in scrape([backup("other")], "2026-12-06T12:00:00Z") if who == "nightly"} == set()


def restore(name: str, source: str, phase: str, finished: str, seconds: float | None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "completionTime": finished}
    if seconds is not None:
        status["restoreSeconds"] = seconds
    metadata = {"name": name, "namespace": "shop", "uid": f"uid-{name}"}
    return {"metadata": metadata, "spec": {"source": {"databaseBackup": source}}, "status": status}


def test_a_succeeded_databaserestore_newer_than_the_last_check_is_the_last_restore_drill() -> None:
    drilled = backup(restoreDrills=[{"time": "2026-12-06T04:00:00Z", "file": "x", "result": "Failed", "seconds": 9.0}])
    restores = [
        restore("older", "nightly", "Succeeded", "2026-12-05T10:00:00Z", 300.0),  # before the check: not the last
        restore("newest", "nightly", "Succeeded", "2026-12-06T10:00:00Z", 61.5),
        restore("failed", "nightly", "Failed", "2026-12-06T11:00:00Z", None),  # no measured restore
        restore("elsewhere", "other", "Succeeded", "2026-12-06T11:30:00Z", 5.0),
        restore("other-namespace", "nightly", "Succeeded", "2026-12-06T11:40:00Z", 6.0),
    ]
    restores[-1]["metadata"]["namespace"] = "staging"  # a DatabaseBackup of the same name, elsewhere
    collector = BackupMetrics()
    collector.read_from(lambda: [drilled], lambda: datetime(2026, 12, 6, 12, tzinfo=UTC))
    collector.restores_from(lambda: restores)
    series = {(s.name, s.labels["name"]): s.value for s in page_samples(collector.exposition())}
    assert series[("dbb_restore_drill_last_duration_seconds", "nightly")] == 61.5
    assert series[("dbb_restore_drill_last_timestamp_seconds", "nightly")] == 1796551200
    assert series[("dbb_restore_drill_last_passed", "nightly")] == 1
    # Without that restore, the check's drill, failed, is the last one.
    collector.restores_from(lambda: restores[:1])
    series = {(s.name, s.labels["name"]): s.value for s in page_samples(collector.exposition())}
    assert series[("dbb_restore_drill_last_duration_seconds", "nightly")] == 9.0
    assert series[("dbb_restore_drill_last_passed", "nightly")] == 0


def test_the_page_follows_the_registrys_and_carries_engine_and_storage_on_the_info_series_only() -> None:
    metrics = Metrics()
    pieces = list(metrics.exposition())
    assert pieces[0] == generate_latest(metrics.registry)  # the operator-wide series first
    assert not [s for s in page_samples(pieces) if "name" in s.labels]  # a standby: no cache, no series of one
    metrics.backups.read_from(lambda: [backup()], lambda: datetime(2026, 12, 6, tzinfo=UTC))
    text = b"".join(metrics.exposition()).decode()
    assert (
        'dbb_backup_info{name="nightly",namespace="shop",engine="PostgreSQL",schedule="0 2 * * *",'
        'storage="persistentVolumeClaim",time_zone="Etc/UTC",window=""} 1.0'
    ) in text
    assert "# TYPE dbb_backup_overdue_seconds gauge" in text
    assert 'dbb_backup_overdue_seconds{name="nightly",namespace="shop"}' in text


def test_label_values_are_escaped_and_a_large_page_comes_in_pieces() -> None:
    odd = backup(schedule='0 2 * * *"\\\n')
    collector = BackupMetrics()
    collector.read_from(
        lambda: [odd, *(backup(f"b{i}") for i in range(2500))], lambda: datetime(2026, 12, 6, tzinfo=UTC)
    )
    pieces = list(collector.exposition())
    assert len(pieces) > 11  # more than one piece per family
    [info] = [s for s in page_samples(pieces) if s.name == "dbb_backup_info" and s.labels["name"] == "nightly"]
    assert info.labels["schedule"] == '0 2 * * *"\\\n'


def test_objects_sharing_a_schedule_owe_exactly_the_slot_the_schedule_gives_each() -> None:
    """The spans a scrape keeps per schedule (`BackupMetrics._first_slot_after`) answer as the schedule itself does,
    for last backups scattered over two years, DST nights included, in any order."""
    rng = random.Random(7)
    schedules = [("30 1 * * *", "America/New_York"), ("0 3 * * 0", "Europe/Berlin"), ("*/15 * * * *", "Etc/UTC")]
    schedules.append(("30 2 * * *", "Australia/Lord_Howe"))
    collector = BackupMetrics()
    start = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    for _ in range(3000):
        schedule, zone = rng.choice(schedules)
        moment = datetime.fromtimestamp(start + rng.uniform(0, 2 * 365 * 86400), UTC)
        if rng.random() < 0.5:  # many objects finish in the same few minutes after a slot
            moment = moment.replace(minute=rng.choice((0, 30)) + rng.randrange(3), second=rng.randrange(60))
        since = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        expected = parse_schedule(schedule, zone).next_after(moment.replace(microsecond=0)).timestamp()
        assert collector._first_slot_after(schedule, zone, since) == expected, (schedule, zone, since)


def test_every_database_statefulset_is_reported_protected_or_not_and_other_statefulsets_not_at_all() -> None:
    backed_up = backup("nightly")  # spec.databaseName example-db, in shop
    backed_up["spec"]["databaseName"] = "orders-db"
    paused = backup("paused")
    paused["spec"] |= {"databaseName": "ledger-db", "suspend": True}
    databases = [
        statefulset("orders-db"),
        statefulset("ledger-db", image="mariadb:11.8"),  # its only DatabaseBackup is suspended
        statefulset("forgotten-db", image="mysql:8.4"),
        statefulset("cache", image="redis:7"),  # not a database we back up
        statefulset("orders-db", namespace="staging"),  # the same name elsewhere: not covered by shop's
    ]
    collector = BackupMetrics()
    collector.read_from(lambda: [backed_up, paused], lambda: datetime(2026, 12, 6, tzinfo=UTC))
    collector.databases_from(lambda: databases)
    found = {
        (s.labels["namespace"], s.labels["statefulset"], s.labels["engine"]): s.value
        for s in page_samples(collector.exposition())
        if s.name == "dbb_database_protected"
    }
    assert found == {
        ("shop", "orders-db", "PostgreSQL"): 1,
        ("shop", "ledger-db", "MySQL"): 0,
        ("shop", "forgotten-db", "MySQL"): 0,
        ("staging", "orders-db", "PostgreSQL"): 0,
    }


def test_each_namespaces_controller_adds_its_cache_and_a_scrape_reads_them_all() -> None:
    """`--namespace a --namespace b` runs a controller per namespace, each with its own cache."""
    collector = BackupMetrics()
    clock = lambda: datetime(2026, 12, 6, tzinfo=UTC)  # noqa: E731
    first, second = backup("nightly"), backup("hourly")
    second["metadata"]["namespace"] = "staging"
    collector.read_from(lambda: [first], clock, part="shop")
    collector.read_from(lambda: [second], clock, part="staging")
    found = {(s.labels["namespace"], s.labels["name"]) for s in page_samples(collector.exposition())}
    assert found == {("shop", "nightly"), ("staging", "hourly")}
