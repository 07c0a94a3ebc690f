"""A DatabaseRestore to a point in time from a PostgreSQL source that archives WAL: admitted inside the archive's
bounds, refused with the field and value when there is no base backup, a dump is named, or the databases to take
from the whole-server base backup are not named; run as one Job whose replay server is the source's own image,
started by a fixed script on what the runner unpacks, never holding a credential."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from common.restores.defaults import restore_defaults
from reconciler.jobs import RunnerSettings, restore_job_name
from reconciler.replayserver import REPLAY_DIR, SUPERVISOR
from reconciler.restore_plan import RestoreWorld, decide_restore
from tests.fixtures import namespace_facts, statefulset
from tests.unit.test_restores import NOW, job_with, refusals, restore, source, start

FOLDER = "/backups/example-db"
BASE = f"{FOLDER}/nightly-20261203T020000Z.base.tar.zst"
DUMP = f"{FOLDER}/nightly-20261203T020000Z.sql.gz"
POSTGRES = statefulset(image="postgres:17")


def archiving(**last: Any) -> dict[str, Any]:
    obj = source(
        backups=[{"file": DUMP, "size": 1}],
        continuous={
            "archiver": "nightly-archiver",
            "ready": True,
            "recoverableFrom": "2026-12-03T02:00:07Z",
            "recoverableUntil": "2026-12-03T09:30:00Z",
        },
    )
    obj["spec"]["continuous"] = {"maxLagSeconds": 60}
    obj["status"]["lastBackup"] = {"file": DUMP, "sha256": "ab" * 32, **last}
    obj["status"]["lastBackup"].setdefault("baseBackup", {"file": BASE, "time": "2026-12-03T02:00:07Z"})
    return obj


def to(moment: str, **spec: Any) -> dict[str, Any]:
    return restore(pointInTime=moment, target={"databases": [{"from": "shop", "to": "shop_then"}]}, **spec)


def test_a_point_inside_the_archive_is_admitted_and_no_dump_is_pinned() -> None:
    assert refusals(to("2026-12-03T05:00:00Z"), archiving()) == []
    defaults = restore_defaults(to("2026-12-03T05:00:00Z")["spec"], archiving())
    assert "source" not in defaults  # the runner picks the base backup: a dump cannot start a WAL replay


def test_a_point_outside_the_archive_is_refused_naming_both_bounds() -> None:
    assert refusals(to("2026-12-03T02:00:06Z"), archiving()) == [
        "spec.pointInTime: '2026-12-03T02:00:06Z' is outside what DatabaseBackup 'nightly' can restore to: "
        "from 2026-12-03T02:00:07Z to 2026-12-03T09:30:00Z"
    ]


def test_no_base_backup_a_dump_given_or_no_databases_named_are_refused_with_the_field() -> None:
    without = archiving(baseBackup={})
    del without["status"]["lastBackup"]["baseBackup"]
    [message] = refusals(to("2026-12-03T05:00:00Z"), without)
    assert message.startswith("spec.pointInTime: DatabaseBackup 'nightly' has no base backup yet")

    dump = to("2026-12-03T05:00:00Z", source={"databaseBackup": "nightly", "file": DUMP})
    [message] = refusals(dump, archiving())
    assert message.startswith(f"spec.source.file: '{DUMP}' is a dump, and a WAL replay starts from a base backup")

    every = archiving()
    every["spec"]["connection"]["databases"] = []
    [message] = refusals(restore(pointInTime="2026-12-03T05:00:00Z", replace=True), every)
    assert message.startswith("spec.target.databases: empty, and DatabaseBackup 'nightly' backs up every database")


def test_the_job_replays_on_the_source_s_image_started_by_the_fixed_script() -> None:
    plan = start(to("2026-12-03T05:00:00Z"), source=archiving(), source_statefulset=POSTGRES)
    assert plan.create is not None, plan.status
    pod = plan.create["spec"]["template"]["spec"]
    [runner] = pod["containers"]
    assert runner["args"][:3] == ["dbb-backup", "restore", BASE]
    for argument in ("--point-in-time=2026-12-03T05:00:00Z", "--pick-base-backup", f"--replay-dir={REPLAY_DIR}"):
        assert argument in runner["args"]
    assert "--database=shop=shop_then" in runner["args"]
    assert not any(a.startswith("--scratch-port") for a in runner["args"])
    [server] = pod["initContainers"]
    assert (server["name"], server["image"], server["restartPolicy"]) == ("replay-db", "postgres:17", "Always")
    # The kubelet turns `$$` back into `$`: what runs is the script, word for word, and nothing from the spec.
    command = [part.replace("$$", "$") for part in server["command"]]
    assert command == ["/bin/sh", "-c", SUPERVISOR, "supervisor", REPLAY_DIR]
    assert "args" not in server
    assert "env" not in server
    # The Pod's user for both (PostgreSQL starts only on a data directory its own user owns).
    assert "runAsUser" not in server["securityContext"]
    assert "runAsUser" not in runner.get("securityContext", {})
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert mounts["replay"] == REPLAY_DIR
    assert {"name": "replay", "mountPath": REPLAY_DIR} in runner["volumeMounts"]
    assert plan.status["file"] == BASE


def test_without_a_postgresql_image_to_replay_on_the_restore_is_refused_before_any_job() -> None:
    obj = to("2026-12-03T05:00:00Z")
    obj["spec"]["target"] = {
        "external": {"host": "db.elsewhere.example", "port": 5432},
        "credentialsSecret": {"name": "elsewhere"},
        "databases": [{"from": "shop", "to": "shop_then"}],
    }
    allowed = namespace_facts("shop", (), labels={"databases.test.io/allow-external-hosts": "true"})
    plan = start(obj, source=archiving(), source_statefulset=None, target_statefulset=None, facts=allowed)
    assert plan.create is None
    assert (plan.status["phase"], plan.status["reason"]) == ("Failed", "Refused"), plan.status
    assert "replays the WAL on a server started from a base backup, and there is no image" in plan.status["message"]


def test_the_script_runs_what_start_files_say_word_for_word_and_ends_on_done(tmp_path: Path) -> None:
    """The supervisor under a real /bin/sh, with a `postgres` of our own on PATH that prints its arguments: an
    argument with spaces, quotes and `$(...)` reaches it as one word, unexpanded; `stop.N` ends it; `done` ends
    the script only as far as starting goes: it waits for the kubelet's SIGTERM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "postgres"
    # Like postgres, it sets its own SIGINT handler: a background job of a shell starts with SIGINT ignored.
    fake.write_text(
        f"#!{sys.executable}\nimport signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: sys.exit(3))\n"
        "print(*(f'[{a}]' for a in sys.argv[1:]), sep='\\n', flush=True)\n"
        "time.sleep(600)\n"
    )
    fake.chmod(0o755)
    folder = tmp_path / "replay"
    folder.mkdir()
    process = subprocess.Popen(
        ["/bin/sh", "-c", SUPERVISOR, "supervisor", str(folder)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}
    )
    try:
        (folder / "start.1.tmp").write_text("-c\nrecovery_target_time=2026-12-03 05:00:00+00\n$(touch pwned) 'x'\n")
        (folder / "start.1.tmp").rename(folder / "start.1")
        log = folder / "postgres.log"
        _wait(lambda: log.exists() and log.read_text().count("[") == 3)
        assert log.read_text().splitlines() == [
            "[-c]",
            "[recovery_target_time=2026-12-03 05:00:00+00]",
            "[$(touch pwned) 'x']",
        ]
        (folder / "stop.1").touch()
        _wait(lambda: (folder / "exited.1").exists())
        assert (folder / "exited.1").read_text().strip() == "3"  # its SIGINT handler ran
        (folder / "done").touch()
        (folder / "start.2").write_text("-c\nnever\n")  # after done: nothing starts any more
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=2)  # a sidecar that exits by itself is restarted: it waits for the kubelet
        process.terminate()  # the kubelet's SIGTERM, once the runner has ended
        assert process.wait(timeout=10) == 0
        assert log.read_text().count("[") == 3
        assert not (folder / "pwned").exists()
    finally:
        process.kill()
        process.wait()


def _wait(condition: Any, deadline: float = 30.0) -> None:
    until = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < until, "condition not met in time"
        time.sleep(0.05)


def test_status_names_the_base_backup_the_restore_picked_if_it_is_beside_the_one_named() -> None:
    obj = to("2026-12-03T05:00:00Z")
    obj["status"] = {"phase": "Running", "job": restore_job_name("back-to-tuesday", "restore-uid"), "file": BASE}
    older = f"{FOLDER}/nightly-20261202T020000Z.base.tar.zst"
    for used, shown in [
        (older, older),
        ("/backups/elsewhere/nightly-20261202T020000Z.base.tar.zst", BASE),  # not beside it: a lie is not shown
        (f"{FOLDER}/../x.base.tar.zst", BASE),
        (7, BASE),
    ]:
        result = {"status": "Restored", "file": used, "databases": {"shop": "shop_then"}}
        job, message = job_with("Complete", result)
        world = RestoreWorld(obj=obj, now=NOW, job=job, termination_message=message)
        plan = decide_restore(world, RunnerSettings(image="dbb:test"))
        assert plan.status is not None
        assert plan.status["file"] == shown, used
