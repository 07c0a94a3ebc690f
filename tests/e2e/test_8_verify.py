"""Scheduled verification on a real cluster, per engine: a DatabaseBackup with `verify.schedule` and `restoreTest`
gets a check Job on its own slot, whose restricted Pod mounts the backup PVC read-only, has no database credentials,
restores into a scratch server of the database's own image beside it (a native sidecar on 127.0.0.1), and reports
through its termination message. A file then changed on the PVC by another Pod is named by the next check
(verify-now), in status, the Verified condition and a Warning Event, and stays where it is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from common.constants import ANNOTATION_VERIFY_NOW, LABEL_BACKUP_NAME, LABEL_RUN, RUN_BACKUP
from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for
from tests.e2e.pods import read_pvc
from tests.e2e.test_2_backup import termination_message

NAMESPACE = "e2e-verify"
ENGINES = [("postgresql", "17"), ("mariadb", "11.8")]
# One byte in the middle of the file flipped in place, by a Pod of the operator's image (it has Python).
FLIP = (
    "python3 -c \"import sys; p = sys.argv[1]; d = bytearray(open(p, 'rb').read()); "
    "d[len(d) // 2] ^= 1; open(p, 'wb').write(d)\""
)


@pytest.fixture(scope="module")
def servers(kube: Kube, deployed: str) -> Iterator[dict[str, databases.Database]]:
    with databases.namespace(kube, NAMESPACE):
        found = {
            engine: databases.Database(engine, version, f"{engine}-verify-db", NAMESPACE, f"{engine}-verify-password")
            for engine, version in ENGINES
        }
        for db in found.values():
            databases.deploy(kube, db)
        for db in found.values():
            databases.wait_ready(kube, db)
            databases.seed(kube, db, rows=200, orders=500)
        # verify.queries run as a role that can only read, never as the backup's superuser (docs/security.md).
        reader = found["postgresql"]
        databases.sql(
            kube, reader, f"CREATE ROLE reader LOGIN PASSWORD '{READER_PASSWORD}'; GRANT pg_read_all_data TO reader"
        )
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "reader-credentials", "namespace": NAMESPACE},
                "stringData": {"username": "reader", "password": READER_PASSWORD},
            }
        )
        yield found


# verify.queries, PostgreSQL only (refused for MySQL: its dump snapshot cannot be shared), as a read-only role.
READER_PASSWORD = "e2e-reader-password"
QUERIES: dict[str, dict[str, Any]] = {
    "postgresql": {
        "queries": [{"name": "orders", "database": "app", "sql": "SELECT count(*), sum(amount) FROM orders"}],
        "queryCredentialsSecret": {"name": "reader-credentials"},
    },
}


def verification(kube: Kube, owner: str, result: str, after: str | None = None) -> dict[str, Any]:
    """Waits for a lastVerification with `result`, from a Job other than `after`."""

    def found() -> dict[str, Any] | None:
        last: dict[str, Any] | None = kube.get("dbb", owner, NAMESPACE).get("status", {}).get("lastVerification")
        return last if last and last["job"] != after and last["result"] == result else None

    return wait_for(f"a check with result {result}", found, 300)


@pytest.mark.parametrize("engine", [e for e, _ in ENGINES])
def test_a_scheduled_check_records_its_drill_and_a_changed_file_is_named(
    kube: Kube, servers: dict[str, databases.Database], engine: str
) -> None:
    db = servers[engine]
    owner = f"{engine}-verified"
    kube.apply(
        databases.databasebackup(
            owner,
            db,
            "0 0 1 1 *",
            backup_now="first",
            verify={"schedule": "*/1 * * * *", "backups": 2, "restoreTest": True, **QUERIES.get(engine, {})},
        )
    )
    backup = wait_for(
        "the first backup",
        lambda: kube.get("dbb", owner, NAMESPACE).get("status", {}).get("lastBackup"),
        300,
    )
    # The run's own restore test went to a scratch server beside it in the backup Job's Pod, not to the database.
    [run] = [
        j
        for j in kube.items("jobs", NAMESPACE, f"{LABEL_BACKUP_NAME}={owner},{LABEL_RUN}={RUN_BACKUP}")
        if j["status"].get("succeeded")
    ]
    [scratch] = run["spec"]["template"]["spec"]["initContainers"]
    assert (scratch["name"], scratch["image"]) == ("scratch-db", db.image)
    assert "--scratch-port" in " ".join(run["spec"]["template"]["spec"]["containers"][0]["args"])
    # A scheduled check, on its own slot: it may have run before the backup (nothing to check), so wait for Passed.
    passed = verification(kube, owner, "Passed")
    assert passed["job"].startswith(f"{owner}-v")
    assert "-vnow-" not in passed["job"]
    [checked] = passed["backups"]
    assert (checked["file"], checked["result"]) == (backup["file"], "Passed")
    assert checked["restoreSeconds"] > 0  # the restore drill's time, kept with its verdict
    # The restore test ran in the scratch server beside the check, as its termination message says.
    message = termination_message(kube, NAMESPACE, passed["job"])
    assert [c["restoreTested"] for c in message["checked"]] == [True], message
    # ... and is evidence in status: the drill, with what it compared.
    drill = kube.get("dbb", owner, NAMESPACE)["status"]["restoreDrills"][0]
    assert (drill["file"], drill["result"], drill["job"]) == (backup["file"], "Passed", passed["job"])
    assert drill["seconds"] == checked["restoreSeconds"]
    assert drill["tables"] >= 1
    assert drill["rows"] >= drill["tables"]
    # PostgreSQL: the query recorded in the dump's snapshot gave the same result in the scratch server.
    assert [c.get("queries", 0) for c in message["checked"]] == [len(QUERIES.get(engine, {}).get("queries", []))]

    job = kube.get("job", passed["job"], NAMESPACE)
    assert job["metadata"]["labels"][LABEL_BACKUP_NAME] == owner
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:3] == ["dbb-backup", "check", f"/backups/{db.name}"]
    # Writable for its one write, the drill record beside each backup it restored (runner/drills.py).
    assert {"name": "backups", "mountPath": "/backups"} in container["volumeMounts"]
    # Its only credential is the scratch server's throwaway one: nothing of the database's Secret, no host.
    assert [e["name"] for e in container["env"]] == ["DB_PASSWORD"]
    assert not any(a.startswith("--host") for a in container["args"])
    [scratch] = pod["initContainers"]
    assert (scratch["image"], scratch["restartPolicy"]) == (db.image, "Always")
    assert db.password not in json.dumps(job)

    # The drill's full record, beside the backup on the volume (the check's one write).
    record = read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"cat {backup['file']}.drills.jsonl")
    recorded = [json.loads(line) for line in record.splitlines() if line.startswith("{")]
    assert any(d["result"] == "Passed" and d["restoreSeconds"] == checked["restoreSeconds"] for d in recorded), record
    read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"{FLIP} {backup['file']}")
    patch = {"metadata": {"annotations": {ANNOTATION_VERIFY_NOW: "after-the-flip"}}}
    kube("patch", "dbb", owner, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch))
    failed = verification(kube, owner, "Failed", after=passed["job"])
    [verdict] = [b for b in failed["backups"] if b["file"] == backup["file"]]
    assert verdict["reason"] == "VerifyFailed", failed
    status = kube.get("dbb", owner, NAMESPACE)["status"]
    verified = next(c for c in status["conditions"] if c["type"] == "Verified")
    assert (verified["status"], verified["reason"]) == ("False", "VerifyFailed")
    assert backup["file"] in verified["message"]
    warnings = [e for e in kube.events(NAMESPACE, owner) if e["reason"] == "VerificationFailed"]
    assert warnings, kube.events(NAMESPACE, owner)
    assert warnings[0]["type"] == "Warning"
    # Nothing deleted: the damaged file and its manifest are still on the volume.
    listing = read_pvc(kube, NAMESPACE, f"{db.name}-backups", f"ls /backups/{db.name}")
    name = backup["file"].rsplit("/", 1)[-1]
    assert name in listing.split()
    assert f"{name}.json" in listing.split()
    kube("delete", "dbb", owner, "-n", NAMESPACE)  # no more checks every minute for the rest of the suite
