"""The alert rules (deploy/monitoring/) under promtool: each alert fires on the series that should fire it and stays
quiet on those that must not, with the per-DatabaseBackup series produced by the reconciler's own collector
(reconciler.backup_metrics) from DatabaseBackup objects as they change over the scenario's days. So a weekly schedule
on day three, a DST night and a suspended schedule are judged by the same schedule code that runs in the cluster.

promtool's clock starts at the Unix epoch: each scenario's first instant is moved there, timestamps included.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.backup_metrics import BackupMetrics
from tests.fixtures import cached_backup as backup
from tests.fixtures import page_samples, statefulset

RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "rules.yaml"
OPERATOR = RULES.with_name("prometheusrule.yaml")
STEP = timedelta(minutes=10)

Objects = Callable[[datetime], list[dict[str, Any]]]


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: make test installs it (hack/prometheus.sh)"
    return found


def series(objects: Objects, start: datetime, hours: float) -> list[dict[str, str]]:
    """promtool input series, one sample every STEP from `start`, scraped from the collector."""
    collector = BackupMetrics()
    values: dict[str, list[str]] = {}
    steps = int(timedelta(hours=hours) / STEP) + 1
    for index in range(steps):
        now = start + index * STEP
        collector.read_from(lambda now=now: objects(now), lambda now=now: now)  # type: ignore[misc]
        for sample in page_samples(collector.exposition()):
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            value = sample.value
            if sample.name.endswith("_timestamp_seconds"):
                value -= start.timestamp()
            values.setdefault(f"{sample.name}{{{labels}}}", ["_"] * index).append(repr(value))
        for samples in values.values():
            samples.extend(["_"] * (index + 1 - len(samples)))
    return [{"series": name, "values": " ".join(samples)} for name, samples in values.items()]


def run(tests: list[dict[str, Any]], tmp_path: Path) -> None:
    for test in tests:
        test.setdefault("interval", f"{int(STEP.total_seconds())}s")
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def at(start: datetime, moment: str) -> str:
    """A promtool eval_time: `moment` as a duration since `start`."""
    return f"{int((datetime.fromisoformat(moment) - start).total_seconds())}s"


def alert(severity: str, summary: str, runbook: str, **labels: str) -> dict[str, Any]:
    """An expected alert: its labels, and its annotations as Prometheus renders them."""
    annotations = {"summary": summary, "runbook": f"docs/runbooks.md#{runbook}"}
    return {"exp_labels": {"severity": severity, **labels}, "exp_annotations": annotations}


def test_the_rules_are_valid_and_the_prometheusrule_holds_the_same_groups() -> None:
    checked = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout
    wrapped = yaml.safe_load(OPERATOR.read_text())
    assert wrapped["kind"] == "PrometheusRule"
    assert wrapped["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_each_alert_names_a_runbook_section_that_exists() -> None:
    runbooks = (RULES.parents[2] / "docs" / "runbooks.md").read_text()
    sections = {line.removeprefix("## ").strip().lower() for line in runbooks.splitlines() if line.startswith("## ")}
    rules = [r for group in yaml.safe_load(RULES.read_text())["groups"] for r in group["rules"]]
    assert len(rules) == 10
    for rule in rules:
        assert rule["annotations"]["runbook"] == f"docs/runbooks.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in sections, rule["alert"]


def test_backup_overdue_is_quiet_on_day_three_of_a_weekly_schedule_and_fires_an_hour_after_its_slot(
    tmp_path: Path,
) -> None:
    start = datetime(2026, 11, 29, tzinfo=UTC)
    weekly = backup("weekly", "0 3 * * 0", lastBackupTime="2026-11-29T03:05:00Z")
    input_series = series(lambda now: [weekly], start, 7 * 24 + 6)
    fired = alert(
        "critical",
        "DatabaseBackup shop/weekly has no backup for a slot 1h 10m 0s ago",
        "backupoverdue",
        namespace="shop",
        name="weekly",
    )
    run(
        [
            {
                "input_series": input_series,
                "alert_rule_test": [
                    {"eval_time": at(start, "2026-12-02T12:00:00+00:00"), "alertname": "BackupOverdue"},
                    {"eval_time": at(start, "2026-12-06T03:50:00+00:00"), "alertname": "BackupOverdue"},
                    {
                        "eval_time": at(start, "2026-12-06T04:10:00+00:00"),
                        "alertname": "BackupOverdue",
                        "exp_alerts": [fired],
                    },
                ],
            }
        ],
        tmp_path,
    )


def nightly_through(slots_done: list[str]) -> Objects:
    """A `30 1 * * *` America/New_York DatabaseBackup whose runs finish a minute after each slot in `slots_done`."""

    def at_time(now: datetime) -> list[dict[str, Any]]:
        finished = [s for s in slots_done if datetime.fromisoformat(s) + timedelta(minutes=1) <= now]
        last = (datetime.fromisoformat(finished[-1]) + timedelta(minutes=1)) if finished else None
        status: dict[str, Any] = {"lastBackupTime": last.strftime("%Y-%m-%dT%H:%M:%SZ")} if last else {}
        return [backup("nightly", "30 1 * * *", zone="America/New_York", **status)]

    return at_time


def test_a_25_hour_night_raises_no_alarm_and_a_missed_run_after_it_does(tmp_path: Path) -> None:
    # Clocks go back on 2026-11-01; 01:30 is 05:30 UTC before, 06:30 UTC after. A rule on "24 h since the last
    # backup" would fire from 05:31 to 06:31 on 2026-11-02.
    start = datetime(2026, 10, 31, 6, tzinfo=UTC)
    slots = ["2026-10-31T05:30:00+00:00", "2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
    quiet = series(nightly_through(slots), start, 72)
    missed = series(nightly_through(slots[:2]), start, 72)  # the run of 2026-11-02 never finishes
    checks = [
        {"eval_time": at(start, moment), "alertname": "BackupOverdue"}
        for moment in ("2026-11-02T05:50:00+00:00", "2026-11-02T06:20:00+00:00", "2026-11-02T07:40:00+00:00")
    ]
    fired = alert(
        "critical",
        "DatabaseBackup shop/nightly has no backup for a slot 1h 10m 0s ago",
        "backupoverdue",
        namespace="shop",
        name="nightly",
    )
    run(
        [
            {"input_series": quiet, "alert_rule_test": checks},
            {
                "input_series": missed,
                "alert_rule_test": [
                    {"eval_time": at(start, "2026-11-02T07:20:00+00:00"), "alertname": "BackupOverdue"},
                    {
                        "eval_time": at(start, "2026-11-02T07:40:00+00:00"),
                        "alertname": "BackupOverdue",
                        "exp_alerts": [fired],
                    },
                ],
            },
        ],
        tmp_path,
    )


def test_a_suspended_schedule_is_never_overdue(tmp_path: Path) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    paused = backup("paused", "0 2 * * *", suspend=True, lastBackupTime="2026-11-20T02:01:00Z")
    run(
        [
            {
                "input_series": series(lambda now: [paused], start, 48),
                "alert_rule_test": [{"eval_time": "47h", "alertname": "BackupOverdue"}],
            }
        ],
        tmp_path,
    )


def test_backup_failing_fires_on_a_failed_run_and_resolves_after_a_good_one(tmp_path: Path) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)

    def objects(now: datetime) -> list[dict[str, Any]]:
        status: dict[str, Any] = {"lastBackupTime": "2026-12-01T00:00:00Z"}
        if timedelta(hours=1) <= now - start < timedelta(hours=3):
            status |= {"consecutiveFailures": 1, "lastFailure": {"time": "2026-12-01T01:00:00Z"}}
        elif now - start >= timedelta(hours=3):
            status = {"lastBackupTime": "2026-12-01T03:00:00Z", "lastFailure": {"time": "2026-12-01T01:00:00Z"}}
        return [backup("hourly", "0 * * * *", **status)]

    fired = alert(
        "warning",
        "DatabaseBackup shop/hourly: 1 failed run(s) since the last good one",
        "backupfailing",
        namespace="shop",
        name="hourly",
    )
    run(
        [
            {
                "input_series": series(objects, start, 5),
                "alert_rule_test": [
                    {"eval_time": "50m", "alertname": "BackupFailing"},
                    {"eval_time": "2h", "alertname": "BackupFailing", "exp_alerts": [fired]},
                    {"eval_time": "4h", "alertname": "BackupFailing"},
                ],
            }
        ],
        tmp_path,
    )


def test_a_failed_verification_fires_and_an_old_one_turns_stale(tmp_path: Path) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    failed = backup("broken", "0 2 * * *", lastVerification={"time": "2026-11-30T23:00:00Z", "result": "Failed"})
    old = backup("old", "0 2 * * *", lastVerification={"time": "2026-11-22T12:00:00Z", "result": "Passed"})
    fresh = backup("fresh", "0 2 * * *", lastVerification={"time": "2026-11-28T12:00:00Z", "result": "Passed"})
    run(
        [
            {
                "input_series": series(lambda now: [failed, old, fresh], start, 2),
                "alert_rule_test": [
                    {
                        "eval_time": "1h",
                        "alertname": "VerificationFailed",
                        "exp_alerts": [
                            alert(
                                "critical",
                                "The last verification of shop/broken found a backup that does not restore",
                                "verificationfailed",
                                namespace="shop",
                                name="broken",
                            )
                        ],
                    },
                    {
                        # 2026-11-22T12:00 + 8 days is 2026-11-30T12:00: "old" is stale from the start, "fresh" not.
                        "eval_time": "1h",
                        "alertname": "VerificationStale",
                        "exp_alerts": [
                            alert(
                                "warning",
                                "The backups of shop/old were last proven 8d 13h 0m 0s ago",
                                "verificationstale",
                                namespace="shop",
                                name="old",
                            )
                        ],
                    },
                ],
            }
        ],
        tmp_path,
    )


def test_a_backup_less_than_half_its_usual_size_fires(tmp_path: Path) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)

    def objects(now: datetime) -> list[dict[str, Any]]:
        day = (now - start).days
        found = []
        for name, newest in (("dropped", 300_000_000), ("grown-a-little-less", 900_000_000)):
            size = newest if day >= 7 else 1_000_000_000
            finished = (start + timedelta(days=day, hours=2, minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
            found.append(backup(name, "0 2 * * *", lastBackupTime=finished, lastBackup={"size": size}))
        return found

    run(
        [
            {
                "input_series": series(objects, start, 7 * 24 + 6),
                "alert_rule_test": [
                    {"eval_time": "6d", "alertname": "BackupSizeDrop"},
                    {
                        "eval_time": "7d3h",
                        "alertname": "BackupSizeDrop",
                        "exp_alerts": [
                            alert(
                                "warning",
                                "The newest backup of shop/dropped is less than half its usual size",
                                "backupsizedrop",
                                namespace="shop",
                                name="dropped",
                            )
                        ],
                    },
                ],
            }
        ],
        tmp_path,
    )


@pytest.mark.parametrize("leader", [None, "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"])
def test_operator_down_fires_when_no_replica_leads_for_ten_minutes(leader: str | None, tmp_path: Path) -> None:
    led = [{"series": 'dbb_leader{pod="a"}', "values": "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"}]
    lost = [{"series": 'dbb_leader{pod="a"}', "values": leader}] if leader is not None else []
    run(
        [
            {
                "interval": "1m",
                "input_series": led,
                "alert_rule_test": [{"eval_time": "15m", "alertname": "OperatorDown"}],
            },
            {
                "interval": "1m",
                "input_series": lost,
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "OperatorDown"},
                    {
                        "eval_time": "15m",
                        "alertname": "OperatorDown",
                        "exp_alerts": [
                            alert(
                                "critical",
                                "No dbb-reconciler replica has led for 10 minutes: no backup is being started",
                                "operatordown",
                            )
                        ],
                    },
                ],
            },
        ],
        tmp_path,
    )


def test_the_webhook_certificate_fires_a_week_before_it_expires(tmp_path: Path) -> None:
    expiry = 10 * 86400  # promtool's clock starts at 0: the certificate ends on day 10
    run(
        [
            {
                "interval": "1h",
                "input_series": [
                    {"series": "dbb_webhook_certificate_expiry_timestamp_seconds", "values": f"{expiry}+0x240"}
                ],
                "alert_rule_test": [
                    {"eval_time": "2d", "alertname": "WebhookCertificateExpiring"},
                    {
                        "eval_time": "4d",
                        "alertname": "WebhookCertificateExpiring",
                        "exp_alerts": [
                            alert(
                                "warning",
                                "The admission webhook's serving certificate expires in 6d 0h 0m 0s",
                                "webhookcertificateexpiring",
                            )
                        ],
                    },
                ],
            }
        ],
        tmp_path,
    )


def test_a_database_without_a_running_backup_fires_after_an_hour_and_resolves_with_one(tmp_path: Path) -> None:
    start = datetime(2026, 12, 6, 12, tzinfo=UTC)
    database = statefulset("orders-db", namespace="shop")
    other = statefulset("cache", namespace="shop", image="redis:7")  # no database: never reported
    covering = backup("orders", "0 2 * * *")
    covering["spec"]["databaseName"] = "orders-db"
    collector = BackupMetrics()
    values: dict[str, list[str]] = {}
    step = timedelta(minutes=1)  # `for: 1h` needs a series without gaps (STEP is longer than the lookback)
    for index in range(int(timedelta(hours=4) / step) + 1):
        now = start + index * step
        objects = [covering] if now >= start + timedelta(hours=3) else []  # its DatabaseBackup comes at 15:00
        collector.read_from(lambda objects=objects: objects, lambda now=now: now)  # type: ignore[misc]
        collector.databases_from(lambda: [database, other])
        for sample in page_samples(collector.exposition()):
            if sample.name == "dbb_database_protected":
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                values.setdefault(f"{sample.name}{{{labels}}}", []).append(repr(sample.value))
    assert list(values) == ['dbb_database_protected{engine="PostgreSQL",namespace="shop",statefulset="orders-db"}']
    run(
        [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": " ".join(v)} for name, v in values.items()],
                "alert_rule_test": [
                    {"eval_time": "50m", "alertname": "DatabaseUnprotected"},  # pending: its owner has an hour
                    {
                        "eval_time": "2h",
                        "alertname": "DatabaseUnprotected",
                        "exp_alerts": [
                            alert(
                                "warning",
                                "Database StatefulSet shop/orders-db has no DatabaseBackup that runs",
                                "databaseunprotected",
                                namespace="shop",
                                statefulset="orders-db",
                            )
                        ],
                    },
                    {"eval_time": "3h20m", "alertname": "DatabaseUnprotected"},  # its DatabaseBackup came
                ],
            }
        ],
        tmp_path,
    )


def test_an_archive_behind_its_promise_and_an_archiver_that_stopped_fire(tmp_path: Path) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)

    def objects(now: datetime) -> list[dict[str, Any]]:
        hours = (now - start) / timedelta(hours=1)
        continuous: dict[str, Any] = {"archiver": "orders-archiver", "ready": True, "lagSeconds": 4.0}
        if 1 <= hours < 2:
            continuous["lagSeconds"] = 95.0  # maxLagSeconds 60: behind its promise
        elif hours >= 3:
            continuous = {"archiver": "orders-archiver", "ready": False, "reason": "ArchiveGap"}
        obj = backup("orders", "0 2 * * *", lastBackupTime="2026-12-01T00:00:00Z", continuous=continuous)
        obj["spec"] |= {"engine": "MySQL", "continuous": {"maxLagSeconds": 60}}
        return [obj]

    lagging = alert(
        "critical",
        "The binlog archive of shop/orders is 1m 35s behind its server",
        "archivelagging",
        namespace="shop",
        name="orders",
    )
    down = alert(
        "critical",
        "The binlog archiver of shop/orders has not run for 10 minutes",
        "archiverdown",
        namespace="shop",
        name="orders",
    )
    run(
        [
            {
                # One scrape a minute (the scenario's 10-minute steps, one a minute): `for` needs fresh samples.
                "interval": "1m",
                "input_series": series(objects, start, 5),
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "ArchiveLagging"},
                    {"eval_time": "9m", "alertname": "ArchiveLagging"},  # pending: not yet five minutes
                    {"eval_time": "11m", "alertname": "ArchiveLagging", "exp_alerts": [lagging]},
                    {"eval_time": "14m", "alertname": "ArchiveLagging"},
                    {"eval_time": "20m", "alertname": "ArchiverDown"},
                    {"eval_time": "30m", "alertname": "ArchiverDown", "exp_alerts": [down]},
                ],
            }
        ],
        tmp_path,
    )
