"""A DatabaseRestore to a point in time: refused at apply time unless the source archives continuously and the time
lies within what it reports (both bounds named); defaulted to the newest backup taken before that time; run as the
one restore Job with `--point-in-time`."""

from __future__ import annotations

from typing import Any

import pytest

from common.restores.defaults import restore_defaults
from common.restores.model import parse_restore_spec
from tests.fixtures import namespace_facts, statefulset
from tests.unit.test_restores import refusals, restore, source, start

FOLDER = "/backups/example-db"
BACKUPS = [f"{FOLDER}/nightly-2026120{day}T020000Z.sql.gz" for day in (3, 2, 1)]  # newest first, as status lists
MARIADB = statefulset(image="mariadb:11.8", ports=[{"name": "mysql", "containerPort": 3306}])


def archiving(continuous: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = source(
        backups=[{"file": file, "size": 1} for file in BACKUPS],
        continuous=continuous
        if continuous is not None
        else {
            "archiver": "nightly-archiver",
            "ready": True,
            "recoverableFrom": "2026-12-02T02:00:00Z",
            "recoverableUntil": "2026-12-03T09:30:00Z",
        },
    )
    obj["spec"] |= {"engine": "MySQL", "continuous": {"maxLagSeconds": 60}}
    obj["spec"]["connection"]["host"] = "example-db.shop.svc"
    return obj


def to(moment: str, **spec: Any) -> dict[str, Any]:
    return restore(pointInTime=moment, target={"databases": [{"from": "shop", "to": "shop_then"}]}, **spec)


@pytest.mark.parametrize("text", ["yesterday", "2026-12-03 10:00", "2026-12-03T10:00:00", "2026-13-03T10:00:00Z"])
def test_a_time_that_is_not_rfc3339_is_named_with_its_value(text: str) -> None:
    _, errors = parse_restore_spec(to(text)["spec"])
    assert [str(e) for e in errors] == [
        f'spec.pointInTime: "{text}" is not an RFC 3339 time such as 2026-12-07T10:00:00Z'
    ]


def test_a_time_with_an_offset_is_kept_in_utc() -> None:
    spec, _ = parse_restore_spec(to("2026-12-03T10:00:00.750+01:00")["spec"])
    assert spec is not None
    assert spec.point_in_time == "2026-12-03T09:00:00Z"


def test_a_time_outside_the_archive_is_refused_naming_both_bounds() -> None:
    for moment in ("2026-12-01T12:00:00Z", "2026-12-03T09:30:01Z"):
        assert refusals(to(moment), archiving()) == [
            f"spec.pointInTime: '{moment}' is outside what DatabaseBackup 'nightly' can restore to: "
            "from 2026-12-02T02:00:00Z to 2026-12-03T09:30:00Z"
        ]
    assert refusals(to("2026-12-03T09:30:00Z"), archiving()) == []  # the bounds are in


def test_a_source_without_continuous_archiving_or_without_bounds_yet_is_refused() -> None:
    plain = source()
    [message] = refusals(to("2026-12-01T02:30:00Z"), plain)
    assert message.startswith("spec.pointInTime: DatabaseBackup 'nightly' has no spec.continuous")
    [message] = refusals(to("2026-12-01T02:30:00Z"), archiving({"archiver": "nightly-archiver", "ready": False}))
    assert "can restore to no point in time yet" in message


def test_admission_pins_the_newest_backup_before_the_time() -> None:
    defaults = restore_defaults(to("2026-12-02T23:59:59Z")["spec"], archiving())
    assert defaults["source"] == {"file": BACKUPS[1]}  # the 2nd's, not the newest (the 3rd's, after the time)
    assert restore_defaults(restore()["spec"], archiving())["source"] == {
        "file": source()["status"]["lastBackup"]["file"]
    }


def test_a_backup_given_after_the_time_or_before_the_archive_is_refused() -> None:
    for file in (BACKUPS[0], BACKUPS[2]):
        obj = to("2026-12-02T12:00:00Z", source={"databaseBackup": "nightly", "file": file})
        [message] = refusals(obj, archiving())
        assert message.startswith(f"spec.source.file: '{file}' was not taken between 2026-12-02T02:00:00Z and ")


def test_the_restore_job_replays_up_to_the_time_from_the_backup_before_it() -> None:
    plan = start(to("2026-12-03T01:15:00Z"), source=archiving(), source_statefulset=MARIADB, target_statefulset=MARIADB)
    assert plan.create is not None, plan.status
    args = plan.create["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["dbb-backup", "restore", BACKUPS[1]]
    assert "--point-in-time=2026-12-03T01:15:00Z" in args
    assert plan.status["file"] == BACKUPS[1]


def test_the_restore_job_replays_on_a_scratch_server_of_the_database_s_own_image() -> None:
    plan = start(to("2026-12-03T01:15:00Z"), source=archiving(), source_statefulset=MARIADB, target_statefulset=MARIADB)
    pod = plan.create["spec"]["template"]["spec"]
    [scratch] = pod["initContainers"]
    assert (scratch["name"], scratch["image"], scratch["restartPolicy"]) == ("scratch-db", "mariadb:11.8", "Always")
    assert "--bind-address=127.0.0.1" in scratch["args"]  # nothing outside the Pod reaches it
    [runner] = pod["containers"]
    assert "--scratch-port=3306" in runner["args"]
    assert "--scratch-user=root" in runner["args"]
    assert "--restore-test" not in runner["args"]
    [password] = [e for e in runner["env"] if e["name"] == "SCRATCH_PASSWORD"]
    [server_password] = [e for e in scratch["env"] if e["name"] == "MARIADB_ROOT_PASSWORD"]
    assert password["value"] == server_password["value"]


def test_a_restore_without_a_point_in_time_runs_no_scratch_server() -> None:
    obj = restore(target={"databases": [{"from": "shop", "to": "shop_copy"}]})
    plan = start(obj, source=archiving(), source_statefulset=MARIADB, target_statefulset=MARIADB)
    assert plan.create is not None, plan.status
    assert "initContainers" not in plan.create["spec"]["template"]["spec"]
    assert not any(a.startswith("--scratch") for a in plan.create["spec"]["template"]["spec"]["containers"][0]["args"])


def test_replace_to_a_point_in_time_is_admitted_and_replays_on_the_scratch_server_first() -> None:
    obj = to("2026-12-02T12:00:00Z", replace=True)
    assert refusals(obj, archiving()) == []
    plan = start(obj, source=archiving(), source_statefulset=MARIADB, target_statefulset=MARIADB)
    assert plan.create is not None, plan.status
    args = plan.create["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--replace" in args
    assert "--scratch-port=3306" in args


def test_the_scratch_server_runs_the_target_s_image_when_the_source_statefulset_is_gone() -> None:
    target = statefulset(name="shop-new", image="mariadb:11.4", ports=[{"name": "mysql", "containerPort": 3306}])
    obj = to("2026-12-03T01:15:00Z")
    obj["spec"]["target"] |= {"databaseName": "shop-new", "credentialsSecret": {"name": "shop-new-credentials"}}
    plan = start(obj, source=archiving(), source_statefulset=None, target_statefulset=target)
    assert plan.create is not None, plan.status
    [scratch] = plan.create["spec"]["template"]["spec"]["initContainers"]
    assert scratch["image"] == "mariadb:11.4"


def test_replace_to_a_point_in_time_with_no_image_for_a_scratch_server_is_refused_before_any_job() -> None:
    obj = to("2026-12-02T12:00:00Z", replace=True)
    obj["spec"]["target"] = {
        "external": {"host": "db.elsewhere.example", "port": 3306},
        "credentialsSecret": {"name": "elsewhere"},
        "databases": [{"from": "shop", "to": "shop_then"}],
    }
    allowed = namespace_facts("shop", (), labels={"databases.test.io/allow-external-hosts": "true"})
    plan = start(obj, source=archiving(), source_statefulset=None, target_statefulset=None, facts=allowed)
    assert plan.create is None
    assert plan.status["phase"] == "Failed"
    assert plan.status["reason"] == "Refused", plan.status
    assert "replays on a scratch server first, and there is no image to run it" in plan.status["message"]
