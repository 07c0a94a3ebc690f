"""A DatabaseRestore to a point in time: refused at apply time unless the source archives continuously and the time
lies within what it reports (both bounds named); defaulted to the newest backup taken before that time; run as the
one restore Job with `--point-in-time`."""

from __future__ import annotations

from typing import Any

import pytest

from common.restores.defaults import restore_defaults
from common.restores.model import parse_restore_spec
from tests.fixtures import statefulset
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


def test_a_point_in_time_restore_never_replaces_a_database() -> None:
    [message] = refusals(to("2026-12-02T12:00:00Z", replace=True), archiving())
    assert message.startswith(
        "spec.replace: true, but a point-in-time restore goes into a database that does not exist"
    )
