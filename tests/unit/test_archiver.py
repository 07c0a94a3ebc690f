"""Continuous archiving, the pure parts: `spec.continuous` read and judged, the archiver's Deployment the plan asks
for (its access exactly a backup run's, restricted, no Secret in it), and `status.continuous` made from the
archiver's untrusted answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.backups.model import ContinuousStatus, DatabaseBackupStatus, LastBackup, StoredBackup, parse_spec
from common.backups.validation import validate
from common.values import Engine
from reconciler.archiver import (
    ANNOTATION_TEMPLATE,
    archiver_deployment,
    continuous_status,
    is_current,
    replay_starts,
)
from tests.fixtures import namespace_facts, statefulset
from tests.unit.test_plan import NS, RESULT, at, backup, decide_at, job, just_after_ten

MARIADB = statefulset(
    namespace=NS,
    image="mariadb:11.8",
    env=[{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "root"}}}],
    ports=[{"name": "mysql", "containerPort": 3306}],
)
SECRET = "s3cr3t-never-shown"


def archiving(**spec: Any) -> dict[str, Any]:
    return backup(continuous={"maxLagSeconds": 30, **spec})


def plan_for(obj: dict[str, Any]) -> Any:
    return decide_at(obj, just_after_ten(), statefulset=MARIADB, facts=namespace_facts(NS, (MARIADB,)))


def test_a_continuous_backup_gets_one_restricted_archiver_with_a_runs_access() -> None:
    obj = archiving()
    deployment = plan_for(obj).archiver
    assert deployment is not None
    assert deployment["metadata"]["name"] == "nightly-archiver"
    assert deployment["metadata"]["ownerReferences"][0] | {"uid": "?"} == {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseBackup",
        "name": "nightly",
        "uid": "?",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    spec = deployment["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})  # never two on one archive
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    args = container["args"]
    assert args[:3] == ["dbb-backup", "archive", "--engine=mysql"]
    assert "--max-lag=30" in args
    assert "--status-port=8080" in args
    assert "--name=nightly" in args
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "status"}
    # The password reaches it as the kubelet resolves it, never as a value the Deployment holds.
    password = next(e for e in container["env"] if e["name"] == "DB_PASSWORD")
    assert "valueFrom" in password
    assert "value" not in password
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_the_archiver_never_gets_the_verification_queries_role() -> None:
    queries = {"queries": [{"name": "n", "sql": "SELECT 1"}], "queryCredentialsSecret": {"name": "reader"}}
    obj = backup(engine="PostgreSQL", verify=queries)  # any engine: the role is left out of every archiver
    obj["spec"]["continuous"] = {}
    spec, errors = parse_spec({**obj["spec"], "engine": "MySQL"})
    assert spec is not None
    assert not errors
    assert spec.continuous is not None
    assert spec.continuous.max_lag_seconds == 60
    deployment = archiver_deployment(obj, _resolved(spec), _runner())
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"QUERY_USER", "QUERY_PASSWORD"}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"continuous": None}, "turned off"),
        ({"suspend": True}, "suspended"),
        ({"connection": {"host": "elsewhere.example.com"}}, "a host the trust rules refuse"),
    ],
)
def test_no_archiver_runs_when(change: dict[str, Any], why: str) -> None:
    obj = archiving()
    obj["spec"].update(change)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    assert plan_for(obj).archiver is None, why


def test_the_template_digest_tells_a_changed_spec_and_a_foreign_owner() -> None:
    first = plan_for(archiving()).archiver
    again = plan_for(archiving()).archiver
    changed = plan_for(archiving(maxLagSeconds=45)).archiver
    assert is_current(again, first)
    assert not is_current(changed, first)
    assert not is_current(None, first)
    foreign = json.loads(json.dumps(first))
    foreign["metadata"]["ownerReferences"][0]["uid"] = "another"
    assert not is_current(foreign, first)
    assert (
        first["metadata"]["annotations"][ANNOTATION_TEMPLATE] != changed["metadata"]["annotations"][ANNOTATION_TEMPLATE]
    )


@pytest.mark.parametrize(
    ("continuous", "field", "text"),
    [
        ({"maxLagSeconds": 5}, "spec.continuous.maxLagSeconds", "5"),
        ({"maxLagSeconds": "60"}, "spec.continuous.maxLagSeconds", '"60"'),
        ({"window": "7x"}, "spec.continuous.window", '"7x"'),
    ],
)
def test_a_bad_continuous_field_is_named_with_its_value(continuous: dict[str, Any], field: str, text: str) -> None:
    _, errors = parse_spec(archiving(**continuous)["spec"])
    assert any(e.path == field and text in e.message for e in errors), errors


def test_postgresql_archives_its_wal_and_its_runs_take_the_base_backups_replays_start_from() -> None:
    obj = backup(engine="PostgreSQL", continuous={"maxLagSeconds": 30, "window": "7d"})
    postgres = statefulset(namespace=NS)
    plan = decide_at(obj, just_after_ten(), statefulset=postgres, facts=namespace_facts(NS, (postgres,)))
    assert plan.archiver is not None
    args = plan.archiver["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["dbb-backup", "archive", "--engine=postgresql"]
    assert "--max-lag=30" in args
    (run,) = plan.create
    run_args = run["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--base-backup", "--prune-wal", "--wal-window=7d"} <= set(run_args)
    assert not any(a.startswith(("--prune-binlogs", "--binlog-window")) for a in run_args)
    spec, _ = parse_spec({**obj["spec"], "engine": "PostgreSQL"})
    assert spec is not None
    assert not validate("nightly", spec)


def last_backup(*times: str, base_backup_time: str | None = None, oldest: str | None = None) -> LastBackup:
    """A run's status.lastBackup: backups kept at `times` (newest last), and a base backup if given (and the end of
    the oldest kept, `oldest`)."""
    kept = tuple(
        StoredBackup(file=f"/backups/db/nightly-{t}.sql.gz", size=1, key_id=None, kept_by=("last",)) for t in times
    )
    base = "/backups/db/nightly-20261207T110000Z.base.tar.zst" if base_backup_time else None
    return LastBackup(
        file="f", size=1, sha256="s", duration="1s", completion_time="t", stored=kept,
        base_backup=base, base_backup_time=base_backup_time, oldest_base_backup_time=oldest,
    )  # fmt: skip


def stored(*times: str) -> tuple[str, ...]:
    """Where a MySQL restore can start replaying from, with backups kept at `times`."""
    return replay_starts(last_backup(*times), wal=False)


def test_a_postgresql_replay_starts_only_from_the_newest_base_backup_s_end() -> None:
    answer = {"recoverableFrom": "2026-12-07T09:30:00Z", "recoverableUntil": "2026-12-07T12:00:41Z", "reason": None}
    last = last_backup("20261207T100000Z", "20261207T110000Z", base_backup_time="2026-12-07T11:00:07Z")
    starts = replay_starts(last, wal=True)
    assert starts == ("2026-12-07T11:00:07Z",)  # the dumps cannot start a WAL replay
    assert continuous_status("a", answer, starts, None, wal=True).recoverable_from == "2026-12-07T11:00:07Z"
    # The archive's first segment was known complete only after the base backup ended: its WAL is still there.
    later = {**answer, "recoverableFrom": "2026-12-07T11:00:09Z"}
    assert continuous_status("a", later, starts, None, wal=True).recoverable_from == "2026-12-07T11:00:07Z"
    assert continuous_status("a", later, starts, None).recoverable_from is None  # a binlog's first event is a bound
    # Past a gap, nothing replays from before it.
    gapped = {**later, "gapAt": "2026-12-07T11:30:00Z"}
    assert continuous_status("a", gapped, starts, None, wal=True).recoverable_from is None
    # No base backup yet: nothing to restore to a point from, whatever dumps there are.
    no_base = replay_starts(last_backup("20261207T100000Z"), wal=True)
    assert continuous_status("a", answer, no_base, None, wal=True) == (
        ContinuousStatus(archiver="a", ready=True, recoverable_until="2026-12-07T12:00:41Z")
    )


def test_a_postgresql_replay_can_start_from_the_oldest_base_backup_retention_kept() -> None:
    answer = {"recoverableFrom": "2026-12-07T09:30:00Z", "recoverableUntil": "2026-12-07T12:00:41Z", "reason": None}
    last = last_backup(base_backup_time="2026-12-07T11:00:07Z", oldest="2026-12-07T10:00:05Z")
    starts = replay_starts(last, wal=True)
    assert starts == ("2026-12-07T10:00:05Z", "2026-12-07T11:00:07Z")
    assert continuous_status("a", answer, starts, None, wal=True).recoverable_from == "2026-12-07T10:00:05Z"


def test_the_run_s_oldest_kept_base_backup_goes_into_the_last_backup_when_it_makes_sense() -> None:
    obj = backup(engine="PostgreSQL", continuous={})
    obj["status"] = {"lastScheduleTime": "2026-11-27T10:00:00Z"}
    done = job(obj, "2026-11-27T10:00:00", "Succeeded", finished="2026-11-27T10:01:13Z")
    base = {"file": "/x/n-20261127T100000Z.base.tar.zst", "time": "2026-11-27T10:00:41Z"}
    for oldest, kept in [
        ({"file": "n-20261126T100000Z.base.tar.zst", "time": "2026-11-26T10:00:40.5Z"}, "2026-11-26T10:00:41Z"),
        ({"file": "n-20261126T100000Z.base.tar.zst", "time": "2026-11-28T10:00:00Z"}, None),  # after the newest
        ({"time": "never"}, None),
        ("a string", None),
    ]:
        result = {**RESULT, "baseBackup": base, "walRetention": {"oldestBaseBackup": oldest}}
        messages = {done["metadata"]["name"]: json.dumps(result)}
        plan = decide_at(obj, at("2026-11-27T10:01:14"), [done], termination_messages=messages)
        assert plan.status is not None
        assert plan.status["lastBackup"]["baseBackup"].get("oldestTime") == kept, oldest
        status = DatabaseBackupStatus.from_dict(plan.status).last_backup
        assert status is not None
        assert status.oldest_base_backup_time == kept


def test_recoverable_from_is_the_oldest_backup_the_archive_covers() -> None:
    answer = {
        "recoverableFrom": "2026-12-07T09:30:00Z",
        "recoverableUntil": "2026-12-07T12:00:41Z",
        "lagSeconds": 3.25,
        "updated": "2026-12-07T12:00:42Z",
        "reason": None,
    }
    kept = stored("20261207T090000Z", "20261207T100000Z", "20261207T110000Z")
    status = continuous_status("nightly-archiver", answer, kept, None)
    # The 09:00 backup is older than the archive: a replay from it would need binlogs the archive lacks.
    assert status.recoverable_from == "2026-12-07T10:00:00Z"
    assert status.recoverable_until == "2026-12-07T12:00:41Z"
    assert (status.ready, status.lag_seconds, status.reason) == (True, 3.2, "")
    assert continuous_status("nightly-archiver", answer, stored("20261207T090000Z"), None).recoverable_from is None


def test_an_archivers_answer_is_untrusted_input() -> None:
    answer = {
        "recoverableFrom": 12,
        "recoverableUntil": "x" * 1000,
        "lagSeconds": True,
        "reason": "<script>",
        "message": "m" * 5000,
        "updated": ["2026"],
        "extra": {"nested": SECRET},
    }
    status = continuous_status("a", answer, stored("20261207T100000Z"), None)
    assert status == ContinuousStatus(archiver="a", ready=False, reason="Failed", message="m" * 500)
    assert SECRET not in json.dumps(status.to_dict())


def test_an_archiver_that_stops_answering_keeps_its_last_bounds_and_is_not_ready() -> None:
    before = ContinuousStatus(
        archiver="a", ready=True, recoverable_from="2026-12-07T10:00:00Z", recoverable_until="2026-12-07T12:00:00Z"
    )
    after = continuous_status("a", None, (), before)
    assert (after.ready, after.recoverable_from, after.recoverable_until) == (
        False,
        "2026-12-07T10:00:00Z",
        "2026-12-07T12:00:00Z",
    )
    assert "does not answer" in after.message
    assert ContinuousStatus.from_dict(after.to_dict()) == after


def _resolved(spec: Any) -> Any:
    from dataclasses import replace

    from common.backups.defaults import default_spec

    raw = default_spec(
        {"databaseName": "example-db", "schedule": "0 * * * *", "continuous": {}},
        namespace=NS,
        statefulset=MARIADB,
    )
    base, _ = parse_spec(raw)
    assert base is not None
    return replace(spec, connection=base.connection, engine=Engine.MYSQL)


def _runner() -> Any:
    from reconciler.jobs import RunnerSettings

    return RunnerSettings(image="registry.example/dbb:1.0")


def test_a_gap_in_a_postgresql_archive_is_called_a_gap_in_its_wal() -> None:
    obj = archiving()
    obj["spec"]["schedule"] = "0 0 1 1 *"
    obj["status"] = {"continuous": {"archiver": "nightly-archiver", "ready": True, "gapAt": "2026-11-27T09:59:00Z"}}
    postgres = statefulset(namespace=NS)
    plan = decide_at(obj, just_after_ten(), statefulset=postgres, facts=namespace_facts(NS, (postgres,)))
    [job] = plan.create
    assert job["metadata"]["annotations"]["databases.test.io/backup-now"] == "archive-gap-2026-11-27T09:59:00Z"
    assert "after a gap in the WAL archive" in plan.events[0].message


def test_an_archiver_that_ended_says_why_from_its_termination_message() -> None:
    ended = {
        "status": "Failed",
        "reason": "ArchiveGap",
        "message": "binlog mysql-bin.000007 was purged before it was archived",
    }
    first = continuous_status("a", None, (), None, ended)
    assert (first.ready, first.reason, first.message) == (False, "ArchiveGap", ended["message"])
    before = ContinuousStatus(archiver="a", ready=True, recoverable_until="2026-12-07T12:00:00Z")
    later = continuous_status("a", None, (), before, {"status": "Failed", "reason": "Whatever", "message": 7})
    assert (later.reason, later.recoverable_until) == ("Failed", "2026-12-07T12:00:00Z")
    assert later.message == "the archiver does not answer"  # a message that is not text is not shown


def test_a_gap_in_the_archive_starts_one_backup_at_once_and_moves_recoverable_from() -> None:
    gap = "2026-11-27T09:59:00Z"
    obj = archiving()
    obj["spec"]["schedule"] = "0 0 1 1 *"  # no slot due: the gap's own run
    obj["status"] = {
        "lastBackupTime": "2026-11-27T09:00:00Z",
        "lastBackupNowRequest": "by-hand",
        "continuous": {"archiver": "nightly-archiver", "ready": True, "gapAt": gap},
    }
    plan = plan_for(obj)
    [job] = plan.create
    assert job["metadata"]["annotations"]["databases.test.io/backup-now"] == f"archive-gap-{gap}"
    assert "after a gap in the binlog archive" in plan.events[0].message
    # The Job's name is the lock: the next look, with the Job there, starts nothing more.
    again = decide_at(obj, just_after_ten(), jobs=[job], statefulset=MARIADB, facts=namespace_facts(NS, (MARIADB,)))
    assert again.create == ()
    assert again.status is not None
    assert again.status["lastBackupNowRequest"] == "by-hand"  # the annotation's memory is untouched
    # A backup since the gap owes nothing.
    obj["status"]["lastBackupTime"] = "2026-11-27T09:59:30Z"
    assert plan_for(obj).create == ()
    # Nothing replays across the gap: the archive counts from it.
    answer = {"recoverableFrom": "2026-11-27T08:00:00Z", "recoverableUntil": "2026-11-27T10:30:00Z", "gapAt": gap}
    kept = stored("20261127T090000Z", "20261127T100000Z")
    status = continuous_status("nightly-archiver", answer, kept, None)
    assert (status.recoverable_from, status.gap_at) == ("2026-11-27T10:00:00Z", gap)


def test_the_status_patch_removes_what_the_new_report_no_longer_says() -> None:
    report = ContinuousStatus(archiver="a", ready=True, lag_seconds=1.0)
    patch = report.to_patch()
    assert patch["message"] is None  # "has not answered yet" goes once it has
    assert patch["reason"] is None
    assert set(patch) == set(ContinuousStatus(archiver="a", message="m", reason="r", gap_at="t", updated="u",
        recoverable_from="f", recoverable_until="u", lag_seconds=1.0).to_dict())  # fmt: skip


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        ({"file": "/backups/example-db/nightly-20261127T100000Z.base.tar.zst", "time": "2026-11-27T10:00:41.2Z"},
         {"file": "/backups/example-db/nightly-20261127T100000Z.base.tar.zst", "time": "2026-11-27T10:00:42Z"}),
        ({"file": "/x.base.tar.zst", "time": "2026-11-27T10:00:41Z"},
         {"file": "/x.base.tar.zst", "time": "2026-11-27T10:00:41Z"}),
        ({"file": "/x.base.tar.zst", "time": "yesterday"}, None),
        ({"file": 7, "time": "2026-11-27T10:00:41Z"}, None),
        ("a string", None),
    ],
)  # fmt: skip
def test_the_run_s_base_backup_goes_into_the_last_backup_its_end_rounded_up(said: Any, kept: Any) -> None:
    obj = backup(engine="PostgreSQL", continuous={})
    obj["status"] = {"lastScheduleTime": "2026-11-27T10:00:00Z"}
    done = job(obj, "2026-11-27T10:00:00", "Succeeded", finished="2026-11-27T10:01:13Z")
    messages = {done["metadata"]["name"]: json.dumps({**RESULT, "baseBackup": said})}
    plan = decide_at(obj, at("2026-11-27T10:01:14"), [done], termination_messages=messages)
    assert plan.status is not None
    assert plan.status["lastBackup"].get("baseBackup") == kept
    status = DatabaseBackupStatus.from_dict(plan.status).last_backup
    assert status is not None
    assert status.base_backup_time == (kept or {}).get("time")
