"""The contract across the process boundary: every command line the reconciler builds for a Job is one the runner's
own parser accepts, meaning what the reconciler meant. The reconciler writes the arguments (reconciler.arguments), the
kubelet expands them (`$$` to `$`), the runner parses them (runner.main.parser): a flag renamed on one side only, or
a value the parser reads otherwise, fails here."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from reconciler.backup_plan import World, decide_deleting
from runner.main import parser
from tests.fixtures import backup_store, namespace_facts, statefulset
from tests.unit.test_plan import NS, RUNNER, backup, decide_at, just_after_ten
from tests.unit.test_restores import restore, start
from tests.unit.test_restores import source as restore_source
from tests.unit.test_restores_pitr import MARIADB, archiving, to
from tests.unit.test_restores_pitr_postgres import archiving as pg_archiving
from tests.unit.test_restores_pitr_postgres import to as pg_to

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
STORE = backup_store(forcePathStyle=True, serverSideEncryption="aws:kms", kmsKeyId="arn:aws:kms:k", caBundle=CA)
TLS = {"mode": "VerifyFull", "ca": {"secretKeyRef": {"name": "db-tls", "key": "ca.crt"}}, "requireScram": True}
QUERIES = {
    "queries": [{"name": "totals", "sql": "SELECT count(*) FROM orders WHERE note <> '$(HOME)'"}],
    "queryCredentialsSecret": {"name": "reader"},
}

SPECS: dict[str, dict[str, Any]] = {
    "the defaults": {},
    "a user name, a port, two databases": {"connection": {"username": "backup", "port": 6432, "databases": ["a", "b"]}},
    "every database, zstd, encrypted": {
        "connection": {"databases": ["all"]},
        "compression": "Zstd",
        "encryption": {"keySecret": {"name": "backup-key"}},
    },
    "TLS verified, SCRAM only": {"connection": {"tls": TLS}},
    "a restore test in a scratch server": {"verify": {"restoreTest": True}},
    "queries with a $(VAR) in their SQL": {"connection": {"databases": ["shop"]}, "verify": QUERIES},
    "to a store, overlapping runs": {"storage": {"s3": {"store": "shared"}}, "concurrencyPolicy": "Allow"},
    "to a store, a backup path with $": {"storage": {"s3": {"store": "shared", "prefix": "a$b"}}},
    "retention by calendar, in a time zone": {
        "timeZone": "Europe/Berlin",
        "retention": {
            "keepLast": 3,
            "keepDaily": 7,
            "keepWeekly": 4,
            "keepMonthly": 12,
            "keepYearly": 2,
            "maxAge": "400d",
        },
    },
    "scheduled checks with a restore test": {
        "schedule": "0 0 1 1 *",
        "verify": {"schedule": "* * * * *", "restoreTest": True, "backups": 3},
        "encryption": {"keySecret": {"name": "backup-key"}},
    },
}


def kubelet(argument: str) -> str:
    """What the kubelet passes on for an argument with no `$(VAR)` it knows: `$$` becomes `$`."""
    return re.sub(r"\$\$", "$", argument)


def runner_argv(job: dict[str, Any]) -> list[str]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    args = [kubelet(a) for a in container["args"]]
    assert args[0] == "dbb-backup"
    return args[1:]


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_every_backup_and_check_job_parses_as_the_runner_reads_it(spec: dict[str, Any]) -> None:
    facts = namespace_facts(NS, stores={"shared": STORE})
    plan = decide_at(backup(**spec), just_after_ten(), facts=facts)
    assert plan.create, plan.status
    for job in plan.create:
        argv = runner_argv(job)
        parsed = parser().parse_args(argv)
        assert parsed.command in ("run", "check")
        if parsed.command == "run":
            assert parsed.name == "nightly"
            assert parsed.owner == f"{NS}/nightly"
            assert parsed.verify is True
        if parsed.command == "run" and "queries" in (spec.get("verify") or {}):
            assert "$(HOME)" in parsed.queries  # the kubelet gives the runner the SQL as written
        if parsed.command == "run" and "retention" in spec:
            kept = (parsed.keep_last, parsed.keep_daily, parsed.keep_weekly, parsed.keep_monthly, parsed.keep_yearly)
            assert kept == (3, 7, 4, 12, 2)
            assert parsed.max_age == timedelta(days=400)
            assert str(parsed.time_zone) == "Europe/Berlin"
        if parsed.command == "run" and "storage" in spec:
            assert parsed.output_url.startswith(f"s3://backups/{NS}/")
            assert parsed.s3_path_style is True
            assert (parsed.s3_sse, parsed.s3_sse_kms_key_id) == ("aws:kms", "arn:aws:kms:k")


def test_every_restore_job_parses_as_the_runner_reads_it() -> None:
    external = {
        "external": {"host": "db.shop.svc", "port": 6432, "tls": {"mode": "Require"}},
        "credentialsSecret": {"name": "other"},
    }
    cases = [
        restore(target={"databases": [{"from": "shop", "to": "shop_copy"}]}, noOwner=True),
        restore(target={"databaseName": "staging-db"}, replace=True),
        restore(target=external),
    ]
    other = statefulset("staging-db")
    services = {name: {"spec": {"clusterIP": "None"}} for name in ("example-db", "staging-db", "db")}
    facts = namespace_facts("shop", (statefulset(), other), services=services)
    for obj in cases:
        plan = start(obj, target_statefulset=other if "staging-db" in str(obj) else statefulset(), facts=facts)
        assert plan.create is not None, plan.status
        parsed = parser().parse_args(runner_argv(plan.create))
        assert parsed.command == "restore"
        assert parsed.file == restore_source()["status"]["lastBackup"]["file"]
        assert parsed.owner == "shop/nightly"


def test_a_point_in_time_restore_job_parses_with_its_scratch_server() -> None:
    plan = start(to("2026-12-03T01:15:00Z", replace=True), source=archiving(), source_statefulset=MARIADB)
    assert plan.create is not None, plan.status
    parsed = parser().parse_args(runner_argv(plan.create))
    assert (parsed.point_in_time, parsed.replace) == ("2026-12-03T01:15:00Z", True)
    assert (parsed.scratch_host, parsed.scratch_port, parsed.scratch_user) == ("127.0.0.1", 3306, "root")


def test_a_postgresql_point_in_time_restore_job_parses_with_its_replay_server() -> None:
    source = pg_archiving()
    plan = start(pg_to("2026-12-03T05:00:00Z"), source=source, source_statefulset=statefulset(image="postgres:17"))
    assert plan.create is not None, plan.status
    parsed = parser().parse_args(runner_argv(plan.create))
    assert (parsed.file, parsed.point_in_time) == (
        source["status"]["lastBackup"]["baseBackup"]["file"],
        "2026-12-03T05:00:00Z",
    )
    assert (parsed.pick_base_backup, str(parsed.replay_dir), parsed.database) == (True, "/replay", ["shop=shop_then"])


def test_a_postgresql_check_that_proves_the_wal_archive_parses_as_the_runner_reads_it() -> None:
    postgres = statefulset(namespace=NS, image="postgres:17")
    verify = {"schedule": "* * * * *", "restoreTest": True}
    obj = backup(schedule="0 0 1 1 *", engine="PostgreSQL", continuous={"maxLagSeconds": 20}, verify=verify)
    plan = decide_at(obj, just_after_ten(), statefulset=postgres, facts=namespace_facts(NS, (postgres,)))
    [check] = [j for j in plan.create if runner_argv(j)[0] == "check"]
    parsed = parser().parse_args(runner_argv(check))
    assert (parsed.prove_archive, str(parsed.replay_dir), parsed.pg_bin) == (True, "/replay", None)


def test_a_check_that_proves_the_archive_parses_as_the_runner_reads_it() -> None:
    mariadb = statefulset(namespace=NS, image="mariadb:11.8", ports=[{"name": "mysql", "containerPort": 3306}])
    verify = {"schedule": "* * * * *", "restoreTest": True}
    obj = backup(schedule="0 0 1 1 *", continuous={"maxLagSeconds": 20}, verify=verify)
    plan = decide_at(obj, just_after_ten(), statefulset=mariadb, facts=namespace_facts(NS, (mariadb,)))
    [check] = [j for j in plan.create if runner_argv(j)[0] == "check"]
    parsed = parser().parse_args(runner_argv(check))
    assert (parsed.prove_archive, parsed.restore_test, parsed.scratch_port) == (True, True, 3306)


ARCHIVING: dict[str, dict[str, Any]] = {
    "to the volume": {},
    "a user name, a port, TLS verified": {
        "connection": {"username": "backup", "port": 3307, "tls": {**TLS, "requireScram": False}}
    },
    "to a store": {"storage": {"s3": {"store": "shared"}}},
    "encrypted": {"encryption": {"keySecret": {"name": "backup-key", "key": "2026-12"}}},
}


@pytest.mark.parametrize("spec", ARCHIVING.values(), ids=ARCHIVING.keys())
def test_every_archiver_parses_as_the_runner_reads_it(spec: dict[str, Any]) -> None:
    mariadb = statefulset(namespace=NS, image="mariadb:11.8", ports=[{"name": "mysql", "containerPort": 3306}])
    facts = namespace_facts(NS, (mariadb,), stores={"shared": STORE})
    obj = backup(continuous={"maxLagSeconds": 20, "window": "7d"}, **spec)
    plan = decide_at(obj, just_after_ten(), statefulset=mariadb, facts=facts)
    assert plan.archiver is not None, plan.status
    # Its backup runs prune the archive: binlogs no kept backup replays from, the window's backups kept.
    [run] = [parser().parse_args(runner_argv(job)) for job in plan.create]
    assert (run.command, run.prune_binlogs, run.binlog_window) == ("run", True, timedelta(days=7))
    parsed = parser().parse_args(runner_argv(plan.archiver))
    assert parsed.command == "archive"
    assert (parsed.engine, parsed.name, parsed.max_lag, parsed.status_port) == ("mysql", "nightly", 20.0, 8080)
    assert parsed.host == f"example-db.{NS}.svc"
    if "storage" in spec:
        assert parsed.output_url == f"s3://backups/{NS}/example-db"
        assert (parsed.s3_path_style, parsed.s3_sse) == (True, "aws:kms")
    else:
        assert str(parsed.output_dir) == "/backups/example-db"
    if "connection" in spec:
        assert (parsed.user, parsed.port, parsed.tls_mode) == ("backup", 3307, "verify-full")
    if "encryption" in spec:
        assert str(parsed.encryption_key_file).endswith("/encryption/2026-12")


def postgres_world() -> dict[str, Any]:
    """A PostgreSQL StatefulSet, and a namespace with it and the shared store."""
    postgres = statefulset(namespace=NS)
    return {"statefulset": postgres, "facts": namespace_facts(NS, (postgres,), stores={"shared": STORE})}


@pytest.mark.parametrize("spec", ARCHIVING.values(), ids=ARCHIVING.keys())
def test_every_postgresql_archiver_and_its_runs_parse_as_the_runner_reads_them(spec: dict[str, Any]) -> None:
    obj = backup(engine="PostgreSQL", continuous={"maxLagSeconds": 20, "window": "7d"}, **spec)
    plan = decide_at(obj, just_after_ten(), **postgres_world())
    assert plan.archiver is not None, plan.status
    # Its runs take the base backups replays start from, and prune them and the WAL they no longer need.
    [run] = [parser().parse_args(runner_argv(job)) for job in plan.create]
    assert (run.command, run.engine, run.base_backup, run.prune_wal) == ("run", "postgresql", True, True)
    assert (run.wal_window, run.prune_binlogs) == (timedelta(days=7), False)
    parsed = parser().parse_args(runner_argv(plan.archiver))
    assert (parsed.command, parsed.engine, parsed.name, parsed.max_lag) == ("archive", "postgresql", "nightly", 20.0)
    if "encryption" in spec:
        assert str(parsed.encryption_key_file).endswith("/encryption/2026-12")


@pytest.mark.parametrize("spec", ARCHIVING.values(), ids=ARCHIVING.keys())
def test_the_job_that_drops_a_slot_parses_as_the_runner_reads_it(spec: dict[str, Any]) -> None:
    obj = backup(engine="PostgreSQL", continuous={}, **spec)
    obj["metadata"] |= {
        "finalizers": ["databases.test.io/replication-slot"],
        "deletionTimestamp": "2026-11-27T10:00:00Z",
    }
    world = World(obj=obj, jobs=[], now=just_after_ten(), **postgres_world())
    job = decide_deleting(world, RUNNER).create
    assert job is not None
    parsed = parser().parse_args(runner_argv(job))
    assert (parsed.command, parsed.engine, parsed.drop_slot, parsed.name) == ("archive", "postgresql", True, "nightly")
    assert parsed.host == f"example-db.{NS}.svc"
    if "connection" in spec:
        assert (parsed.user, parsed.port, parsed.tls_mode) == ("backup", 3307, "verify-full")
    assert parsed.encryption_key_file is None
