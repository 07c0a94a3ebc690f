"""DatabaseRestore: what admission refuses and defaults, the one Job a restore runs, and what its outcome becomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from common.constants import API_VERSION, RESTORE_KIND
from common.restores.defaults import restore_defaults
from common.restores.model import parse_restore_spec
from common.restores.validation import judge
from reconciler.jobs import RunnerSettings, restore_job_name
from reconciler.restore_plan import RestoreWorld, decide_restore
from tests.fixtures import backup_store, databasebackup, namespace_facts, statefulset

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
FILE = "/backups/example-db/nightly-20261201T020000Z.dump.gz"


def source(**status: Any) -> dict[str, Any]:
    obj = databasebackup(
        backupPath="/backups/example-db",
        engine="PostgreSQL",
        connection={
            "host": "example-db.shop.svc",
            "databases": ["shop"],
            "credentialsSecret": {"name": "example-db-credentials", "usernameKey": "username"},
        },
        storage={"persistentVolumeClaim": {"claimName": "example-db-backups"}},
    )
    obj["metadata"]["uid"] = "source-uid"
    obj["status"] = {"lastBackup": {"file": FILE, "sha256": "ab" * 32}, **status}
    return obj


def restore(name: str = "back-to-tuesday", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": RESTORE_KIND,
        "metadata": {"name": name, "namespace": "shop", "uid": "restore-uid", "generation": 1},
        "spec": {"source": {"databaseBackup": "nightly"}, **spec},
    }


def refusals(obj: dict[str, Any], found: dict[str, Any] | None, target_found: bool | None = True) -> list[str]:
    spec, errors = parse_restore_spec(obj["spec"])
    assert spec is not None, errors
    return [str(e) for e in judge(spec, "shop", found, target_found)]


def test_a_source_that_does_not_exist_is_named_with_its_namespace() -> None:
    assert refusals(restore(), None) == [
        "spec.source.databaseBackup: DatabaseBackup 'nightly' not found in namespace 'shop'"
    ]


def test_a_source_without_a_backup_is_refused() -> None:
    empty = source()
    empty["status"] = {}
    [message] = refusals(restore(target={"databases": [{"from": "shop", "to": "copy"}]}), empty)
    assert message.startswith("spec.source.databaseBackup: DatabaseBackup 'nightly' has no backup yet")


def test_restoring_onto_the_protected_database_needs_replace() -> None:
    [message] = refusals(restore(), source())
    assert message.startswith("spec.replace: false, and the restore would overwrite 'shop' on StatefulSet 'example-db'")
    assert refusals(restore(replace=True), source()) == []
    assert refusals(restore(target={"databases": [{"from": "shop", "to": "shop_copy"}]}), source()) == []


def test_a_file_elsewhere_a_damaged_file_and_a_missing_target_are_each_named() -> None:
    damaged = source(lastVerification={"backups": [{"file": FILE, "result": "Failed", "reason": "VerifyFailed"}]})
    mapped = {"databases": [{"from": "shop", "to": "copy"}]}
    assert refusals(restore(target=mapped, source={"databaseBackup": "nightly", "file": "/etc/passwd"}), source()) == [
        "spec.source.file: '/etc/passwd' is not a backup of DatabaseBackup 'nightly', which writes under "
        "'/backups/example-db'"
    ]
    elsewhere = restore(target=mapped, source={"databaseBackup": "nightly", "file": "/backups/other-db/x.dump"})
    [message] = refusals(elsewhere, source())
    assert message.startswith("spec.source.file: '/backups/other-db/x.dump' is not a backup of")
    [message] = refusals(restore(target=mapped), damaged)
    assert message.startswith(f"spec.source.file: '{FILE}' failed its last check (VerifyFailed)")
    [message] = refusals(restore(target={**mapped, "databaseName": "gone-db"}), source(), target_found=False)
    assert message == "spec.target.databaseName: StatefulSet 'gone-db' not found in namespace 'shop'"
    [message] = refusals(restore(target={"databases": [{"from": "other", "to": "copy"}]}, replace=True), source())
    assert message.startswith("spec.target.databases[0].from: 'other' is not in the backup")


def test_admission_pins_the_newest_backup_and_the_source_database() -> None:
    assert restore_defaults(restore()["spec"], source()) == {
        "source": {"file": FILE},
        "target": {"databaseName": "example-db"},
    }
    given = restore(source={"databaseBackup": "nightly", "file": "/backups/example-db/x"}, target={"databaseName": "b"})
    assert restore_defaults(given["spec"], source()) == {}


def start(obj: dict[str, Any], **world: Any) -> Any:
    found = {"source": source(), "source_statefulset": statefulset(), "target_statefulset": statefulset(), **world}
    statefulsets = tuple(s for s in (found["source_statefulset"], found["target_statefulset"]) if s is not None)
    found.setdefault("facts", namespace_facts("shop", statefulsets))
    return decide_restore(RestoreWorld(obj=obj, now=NOW, **found), RunnerSettings(image="dbb:test"))


def test_a_restore_runs_as_one_job_never_retried_with_the_volume_read_only_and_no_secret_in_argv() -> None:
    plan = start(restore(target={"databases": [{"from": "shop", "to": "shop_copy"}]}))
    job = plan.create
    assert job["metadata"]["name"] == restore_job_name("back-to-tuesday", "restore-uid")
    assert job["spec"]["backoffLimit"] == 0
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (RESTORE_KIND, "restore-uid", True)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:3] == ["dbb-backup", "restore", FILE]
    assert "--database=shop=shop_copy" in container["args"]
    assert "--owner=shop/nightly" in container["args"]  # the runner refuses a backup of another owner
    assert "--replace" not in container["args"]
    assert "--host=example-db.shop.svc" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "example-db-credentials", "key": "password"}
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "backups"]
    assert mount["readOnly"] is True
    assert plan.status["phase"] == "Pending"
    assert plan.status["job"] == job["metadata"]["name"]
    assert [e.reason for e in plan.events] == ["RestoreStarted"]


def test_another_statefulset_is_reached_through_its_own_service_and_secret() -> None:
    other = statefulset("staging-db")
    plan = start(
        restore(target={"databaseName": "staging-db"}, replace=True),
        target_statefulset=other,
    )
    [container] = plan.create["spec"]["template"]["spec"]["containers"]
    assert "--host=staging-db.shop.svc" in container["args"]
    assert "--replace" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "staging-db-credentials"
    mariadb = statefulset("maria", image="mariadb:11", env=[{"name": "MARIADB_ROOT_PASSWORD", "value": "x"}])
    refused = start(restore(target={"databaseName": "maria"}), target_statefulset=mariadb)
    assert refused.create is None
    assert refused.status["phase"] == "Failed"
    assert refused.status["reason"] == "TargetUnusable"


def _user(plan: Any) -> tuple[str | None, str | None]:
    """(--user, the Secret key DB_USER reads) of the restore's Job."""
    [container] = plan.create["spec"]["template"]["spec"]["containers"]
    users = [a.removeprefix("--user=") for a in container["args"] if a.startswith("--user=")]
    env = {e["name"]: e for e in container["env"]}
    key = env["DB_USER"]["valueFrom"]["secretKeyRef"]["key"] if "DB_USER" in env else None
    return (users[0] if users else None), key


def test_a_secret_named_with_only_its_password_key_takes_the_user_its_statefulset_runs_with() -> None:
    maria_env = [
        {
            "name": "MARIADB_ROOT_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "maria-credentials", "key": "root-password"}},
        }
    ]
    maria = statefulset("maria", image="mariadb:11", env=maria_env)
    named = {"name": "maria-credentials", "passwordKey": "root-password"}
    target = {"databaseName": "maria", "credentialsSecret": named}
    mysql = source()
    mysql["spec"]["engine"] = "MySQL"
    plan = start(restore(target=target, replace=True), source=mysql, target_statefulset=maria)
    assert _user(plan) == ("root", None)
    postgres_env = [
        {"name": "POSTGRES_USER", "valueFrom": {"secretKeyRef": {"name": "pg-credentials", "key": "user"}}},
        {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "pg-credentials", "key": "pw"}}},
    ]
    postgres = statefulset("pg", env=postgres_env)
    target = {"databaseName": "pg", "credentialsSecret": {"name": "pg-credentials", "passwordKey": "pw"}}
    assert _user(start(restore(target=target, replace=True), target_statefulset=postgres)) == (None, "user")
    # Restoring onto the source's own StatefulSet: the same rule.
    reads = {"secretKeyRef": {"name": "example-db-credentials", "key": "pw"}}
    plain = statefulset(env=[{"name": "POSTGRES_PASSWORD", "valueFrom": reads}])
    own = {"credentialsSecret": {"name": "example-db-credentials", "passwordKey": "pw"}}
    found = start(restore(target=own, replace=True), source_statefulset=plain, target_statefulset=plain)
    assert _user(found) == ("postgres", None)


def test_a_username_key_given_or_another_secret_is_taken_as_written() -> None:
    given = {"name": "example-db-credentials", "usernameKey": "login", "passwordKey": "password"}
    assert _user(start(restore(target={"credentialsSecret": given}, replace=True))) == (None, "login")
    other = {"name": "restore-admin", "passwordKey": "password"}
    assert _user(start(restore(target={"credentialsSecret": other}, replace=True))) == (None, "username")


def job_with(state: str, message: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    condition = {"type": state, "status": "True", "lastTransitionTime": "2026-12-01T03:02:00Z"}
    status: dict[str, Any] = {"startTime": "2026-12-01T03:00:05Z", "conditions": [condition]}
    if state == "Complete":
        status["completionTime"] = "2026-12-01T03:02:00Z"
    job = {"metadata": {"name": restore_job_name("back-to-tuesday", "restore-uid")}, "status": status}
    return job, json.dumps(message) if message else None


def test_a_finished_job_becomes_the_final_status_and_nothing_runs_again() -> None:
    obj = restore(target={"databases": [{"from": "shop", "to": "shop_copy"}]})
    obj["status"] = {"phase": "Pending", "job": restore_job_name("back-to-tuesday", "restore-uid"), "file": FILE}
    result = {
        "status": "Restored",
        "file": FILE,
        "sha256": "ab" * 32,
        "databases": {"shop": "shop_copy"},
        "restoreSeconds": 74.3,
    }
    job, message = job_with("Complete", result)
    plan = decide_restore(
        RestoreWorld(obj=obj, now=NOW, job=job, termination_message=message), RunnerSettings(image="dbb:test")
    )
    assert plan.status is not None
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["sha256"] == "ab" * 32
    assert plan.status["restoreSeconds"] == 74.3  # the evidence of how long a restore takes
    assert plan.status["databases"] == [{"source": "shop", "target": "shop_copy", "result": "Restored"}]
    assert plan.status["completionTime"] == "2026-12-01T03:02:00Z"
    assert [e.reason for e in plan.events] == ["Restored"]
    obj["status"] = plan.status
    again = decide_restore(RestoreWorld(obj=obj, now=NOW), RunnerSettings(image="dbb:test"))
    assert (again.create, again.status, again.events) == (None, None, ())


def test_a_failed_job_names_the_runners_reason_and_a_deleted_job_fails_the_restore() -> None:
    obj = restore(replace=True)
    obj["status"] = {"phase": "Running", "job": restore_job_name("back-to-tuesday", "restore-uid")}
    failure = {"status": "Failed", "reason": "TargetExists", "message": "database 'shop' exists on the server"}
    job, message = job_with("Failed", failure)
    plan = decide_restore(
        RestoreWorld(obj=obj, now=NOW, job=job, termination_message=message), RunnerSettings(image="dbb:test")
    )
    assert plan.status is not None
    assert (plan.status["phase"], plan.status["reason"]) == ("Failed", "TargetExists")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "RestoreFailed")]
    gone = decide_restore(RestoreWorld(obj=obj, now=NOW), RunnerSettings(image="dbb:test"))
    assert gone.status is not None
    assert (gone.status["phase"], gone.status["reason"]) == ("Failed", "JobDeleted")


def test_from_a_backup_of_all_only_postgresql_with_a_mapping_may_restore_beside_the_originals() -> None:
    everything = source()
    everything["spec"]["connection"]["databases"] = ["all"]
    mapped = {"databases": [{"from": "shop", "to": "shop_copy"}]}
    [message] = refusals(restore(), everything)
    assert "every database the backup holds" in message
    assert refusals(restore(target=mapped), everything) == []  # pg_restore of a set restores only what is named
    everything["spec"]["engine"] = "MySQL"  # a MySQL script restores every database in it, the named ones renamed
    [message] = refusals(restore(target=mapped), everything)
    assert "every database the backup holds" in message


def test_a_restore_from_a_bucket_gets_the_keys_by_secret_reference_and_mounts_no_volume() -> None:
    url = "s3://backups/shop/example-db/nightly-20261201T020000Z.dump.enc"
    bucket = source()
    bucket["spec"]["storage"] = {"s3": {"store": "shared", "prefix": "example-db"}}
    bucket["spec"]["encryption"] = {"keySecret": {"name": "backup-key"}}
    bucket["status"] = {"lastBackup": {"file": url, "url": url}}
    store = backup_store(endpoint="https://s3.internal:8333", forcePathStyle=True)
    facts = namespace_facts("shop", stores={"shared": store})
    plan = start(restore(target={"databases": [{"from": "shop", "to": "shop_copy"}]}), source=bucket, facts=facts)
    assert plan.create is not None, plan.status
    pod = plan.create["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:3] == ["dbb-backup", "restore", url]
    assert "--s3-path-style" in container["args"]
    assert "--key-dir=/var/run/secrets/databases.test.io/encryption" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://s3.internal:8333"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "backups" not in volumes
    assert volumes["encryption-key"]["secret"]["secretName"] == "backup-key"
    assert not [a for a in container["args"] if "s3-keys" in a or "backup-key" in a]


def test_a_restore_from_a_store_no_longer_open_to_the_namespace_or_of_another_prefix_is_refused() -> None:
    url = "s3://backups/shop/example-db/nightly-20261201T020000Z.dump.enc"
    bucket = source()
    bucket["spec"]["storage"] = {"s3": {"store": "shared", "prefix": "example-db"}}
    bucket["status"] = {"lastBackup": {"file": url, "url": url}}
    obj = restore(target={"databases": [{"from": "shop", "to": "shop_copy"}]})
    closed = backup_store(selector={"matchLabels": {"backups": "on"}})
    plan = start(obj, source=bucket, facts=namespace_facts("shop", stores={"shared": closed}))
    assert plan.create is None
    assert (plan.status["phase"], plan.status["reason"]) == ("Failed", "Refused")
    assert plan.status["message"] == (
        'spec.source.databaseBackup: its storage: BackupStore "shared" is not open to namespace "shop" (its '
        "namespaceSelector)"
    )
    # A file of another namespace's part of the bucket (or below the source's prefix: another owner's) is refused.
    for other in ("s3://backups/crm/example-db/x.dump", "s3://backups/shop/example-db/deeper/x.dump"):
        obj["spec"]["source"]["file"] = other
        plan = start(obj, source=bucket, facts=namespace_facts("shop", stores={"shared": backup_store()}))
        assert plan.create is None
        assert plan.status["message"].startswith(f"spec.source.file: '{other}' is not a backup of DatabaseBackup")


EXTERNAL = {
    "external": {
        "host": "rebuilt.db.example.net",
        "port": 6432,
        "tls": {"mode": "VerifyFull", "ca": {"configMapKeyRef": {"name": "db-ca", "key": "ca.crt"}}},
    },
    "credentialsSecret": {"name": "rebuilt-credentials"},
}


def test_an_external_server_is_reached_at_its_host_with_its_secret_and_its_ca() -> None:
    obj = restore(target=EXTERNAL)
    assert restore_defaults(obj["spec"], source()) == {"source": {"file": FILE}}  # no StatefulSet pinned
    # No StatefulSet to find, and no replace needed: only the server knows its databases; the restore asks it.
    assert refusals(obj, source(), target_found=None) == []
    refused = start(obj, target_statefulset=None)
    assert refused.create is None
    assert refused.status["message"] == (
        'spec.target.external.host: "rebuilt.db.example.net" is not a Service of namespace "shop", and the password '
        'is sent there: label the namespace databases.test.io/allow-external-hosts="true" (cluster administrators '
        "can) to allow it"
    )
    allowed = namespace_facts("shop", labels={"databases.test.io/allow-external-hosts": "true"})
    plan = start(obj, target_statefulset=None, facts=allowed)
    pod = plan.create["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert "--host=rebuilt.db.example.net" in args
    assert "--port=6432" in args
    assert "--tls-mode=verify-full" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "rebuilt-credentials", "key": "password"}
    assert env["DB_USER"]["valueFrom"]["secretKeyRef"] == {"name": "rebuilt-credentials", "key": "username"}
    [ca] = [v for v in pod["volumes"] if v["name"] == "tls-ca"]
    assert ca["configMap"]["name"] == "db-ca"
    assert plan.status["target"] == "rebuilt.db.example.net:6432"
    assert plan.events[0].message.endswith("into rebuilt.db.example.net:6432")


def test_an_external_target_without_credentials_or_beside_a_statefulset_is_refused_by_field() -> None:
    cases = {
        "no secret": (
            {"external": {"host": "db.example.net"}},
            [
                "spec.target.credentialsSecret: is required with external: the Secret with the user name and password "
                "for that server"
            ],
        ),
        "both": ({**EXTERNAL, "databaseName": "example-db"}, ["spec.target: give databaseName or external, not both"]),
        "bad host": (
            {**EXTERNAL, "external": {"host": "db example"}},
            ["spec.target.external.host: 'db example' is not a DNS name or an IP address"],
        ),
        "ca without VerifyFull": (
            {
                **EXTERNAL,
                "external": {
                    "host": "db",
                    "tls": {"mode": "Require", "ca": {"configMapKeyRef": {"name": "db-ca", "key": "ca.crt"}}},
                },
            },
            ["spec.target.external.tls.ca: is used only with mode VerifyFull, not Require: leave it out"],
        ),
    }
    for name, (target, expected) in cases.items():
        spec, errors = parse_restore_spec(restore(target=target)["spec"])
        assert spec is None, name
        assert [str(e) for e in errors] == expected, name
