"""Admission as plain functions: denials name each field and value, defaults are a JSONPatch that is idempotent."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from tests.fixtures import admission_review, databasebackup, statefulset
from webhook.backups import Database, database_to_check, mutate, validate_request
from webhook.patch import json_patch
from webhook.reviews import AdmissionRequest, BadReview, parse_review, review

NS = "shop"
DB = statefulset()
FOUND = Database(NS, "example-db", DB)
MISSING = Database(NS, "example-db", None)


def request(obj: dict[str, Any] | None, **options: Any) -> AdmissionRequest:
    return parse_review(admission_review(obj, **options))


def apply_patch(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """A small RFC 6902 applier for add/replace/remove on objects: enough to check what the API server would do."""
    result = copy.deepcopy(obj)
    for operation in json.loads(base64.b64decode(response["patch"])) if "patch" in response else []:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        target = result
        for part in parents:
            target = target[part]
        if operation["op"] == "remove":
            del target[last]
        else:
            assert operation["op"] == "add" or last in target
            target[last] = operation["value"]
    return result


def admit(obj: dict[str, Any], database: Database | None) -> dict[str, Any]:
    """What the API server does: mutate, apply the patch, then validate the result."""
    statefulset_found = database.statefulset if database else None
    patched = apply_patch(obj, dict(mutate(request(obj), statefulset_found)))
    return dict(validate_request(request(patched), database))


# --- the review envelope ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the body must be a JSON object (an AdmissionReview), not list"),
        ({"kind": "Pod"}, 'kind must be "AdmissionReview", not "Pod"'),
        ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1"}, 'apiVersion must be "admission.k8s'),
        ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}, "request must be an object"),
        ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}, "request.uid must be"),
        ({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 7}}, "request.uid must"),
    ],
)
def test_a_body_that_is_not_an_admission_review_is_refused(body: object, message: str) -> None:
    with pytest.raises(BadReview, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_review(body)


def test_the_response_answers_the_request_uid() -> None:
    req = request(databasebackup())
    answered = review(validate_request(req, FOUND))
    assert answered["apiVersion"] == "admission.k8s.io/v1"
    assert answered["kind"] == "AdmissionReview"
    assert answered["response"]["uid"] == req["uid"]
    assert answered["response"]["allowed"] is True


# --- validation -------------------------------------------------------------------------------------------------


def test_the_original_sample_is_allowed_without_warnings() -> None:
    response = admit(databasebackup(backupPath="/backups/example-db"), FOUND)
    assert response == {"uid": response["uid"], "allowed": True}


def test_a_bad_schedule_is_denied_with_the_field_and_the_reason() -> None:
    response = validate_request(request(databasebackup(schedule="*/5 * * *")), FOUND)
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        'spec.schedule: "*/5 * * *" has 4 fields, a schedule needs 5 (minute hour day-of-month month day-of-week)'
    )
    assert response["status"]["code"] == 422


def test_every_problem_is_in_one_message() -> None:
    obj = databasebackup(schedule="0 0 * * 7", timeZone="Mars/Olympus", backupPath="/etc", suspend="yes")
    message = validate_request(request(obj), FOUND)["status"]["message"]
    headline, *lines = message.splitlines()
    assert headline == "4 problems:"
    assert [line.removeprefix("- ").split(":")[0] for line in lines] == [
        "spec.suspend",
        "spec.timeZone",
        "spec.schedule",
        "spec.backupPath",
    ]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"apiVersion": "x", "kind": "DatabaseBackup", "metadata": {"name": "n"}}, "spec: must be an object, not null"),
        ({**databasebackup(), "spec": "daily"}, 'spec: must be an object, not "daily"'),
        (databasebackup(schedule=None), "spec.schedule: is required"),
        (databasebackup(databaseName=5), "spec.databaseName: must be a string, not 5"),
        (databasebackup(name="n" * 60), 'metadata.name: "nnnnnnnnnn'),
    ],
)
def test_a_malformed_databasebackup_is_denied_naming_the_problem(obj: dict[str, Any], message: str) -> None:
    response = validate_request(request(obj), FOUND)
    assert response["allowed"] is False
    assert message in response["status"]["message"]


def test_a_missing_database_is_denied() -> None:
    response = validate_request(request(databasebackup()), MISSING)
    assert response["status"]["message"] == 'spec.databaseName: StatefulSet "example-db" not found in namespace "shop"'


def test_the_annotation_turns_a_missing_database_into_a_warning() -> None:
    obj = databasebackup()
    obj["metadata"]["annotations"] = {"databases.test.io/skip-database-check": "true"}
    response = validate_request(request(obj), MISSING)
    assert response["allowed"] is True
    assert response["warnings"][0].startswith('spec.databaseName: StatefulSet "example-db" not found in namespace')


def test_a_database_lookup_that_failed_refuses_and_says_to_try_again() -> None:
    response = admit(databasebackup(), Database(NS, "example-db", None, "timed out"))
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        'spec.databaseName: could not check StatefulSet "example-db": timed out; nothing was changed: try again'
    )


@pytest.mark.parametrize(
    ("database", "warning"),
    [
        (Database(NS, "example-db", statefulset(ready=0)), "has no ready replica"),
        (Database(NS, "example-db", statefulset(image="mariadb:11")), "spec.engine: PostgreSQL, but StatefulSet"),
        (Database(NS, "example-db", statefulset(env=[])), "spec.connection.credentialsSecret: not set"),
        (
            Database(NS, "example-db", statefulset(env=[{"name": "POSTGRES_PASSWORD", "value": "hunter2"}])),
            "spec.connection.credentialsSecret: the database container sets POSTGRES_PASSWORD without a Secret",
        ),
    ],
)
def test_what_is_allowed_but_probably_wrong_is_a_warning(database: Database, warning: str) -> None:
    obj = databasebackup(engine="PostgreSQL")
    response = admit(obj, database)
    assert response["allowed"] is True
    assert any(warning in w for w in response["warnings"]), response["warnings"]
    assert all(len(w) <= 120 for w in response["warnings"])
    assert "hunter2" not in json.dumps(response)


def test_database_existence_is_checked_on_create_and_on_a_changed_database_name_only() -> None:
    assert database_to_check(request(databasebackup())) == (NS, "example-db")
    same = databasebackup(suspend=True)
    assert database_to_check(request(same, operation="UPDATE", old=databasebackup())) is None
    moved = databasebackup(databaseName="other-db")
    assert database_to_check(request(moved, operation="UPDATE", old=databasebackup())) == (NS, "other-db")
    assert database_to_check(request(None, operation="DELETE", old=databasebackup())) is None


def test_an_update_of_a_backup_whose_database_is_gone_is_allowed() -> None:
    response = validate_request(request(databasebackup(suspend=True), operation="UPDATE", old=databasebackup()), None)
    assert response["allowed"] is True


def test_delete_is_always_allowed() -> None:
    assert validate_request(request(None, operation="DELETE", old=databasebackup()), None)["allowed"] is True


def test_another_kind_is_denied_with_a_pointer_to_the_configuration() -> None:
    req = request({"metadata": {"name": "p"}}, kind={"group": "", "version": "v1", "kind": "Pod"})
    response = validate_request(req, None)
    assert response["allowed"] is False
    assert "this webhook admits databases.test.io DatabaseBackup objects, not /Pod" in response["status"]["message"]


def test_an_object_that_is_not_a_mapping_is_denied() -> None:
    body = admission_review(databasebackup())
    body["request"]["object"] = ["not", "an", "object"]
    assert validate_request(parse_review(body), None)["status"]["message"] == (
        "request.object: must be an object (the DatabaseBackup)"
    )


# --- defaulting -------------------------------------------------------------------------------------------------


def test_defaults_fill_what_the_spec_leaves_out() -> None:
    obj = databasebackup()
    patched = apply_patch(obj, dict(mutate(request(obj), DB)))
    assert patched["spec"] == {
        "databaseName": "example-db",
        "schedule": "*/5 * * * *",
        "backupPath": "/backups/example-db",
        "storage": {"persistentVolumeClaim": {"claimName": "example-db-backups"}},
        "engine": "PostgreSQL",
        "connection": {
            "host": "example-db.shop.svc",
            "port": 5432,
            "credentialsSecret": {"name": "example-db-credentials", "passwordKey": "password"},
            "username": "postgres",
        },
    }


def test_defaulting_is_idempotent() -> None:
    obj = databasebackup(backupPath="/backups//x/")
    once = apply_patch(obj, dict(mutate(request(obj), DB)))
    assert once["spec"]["backupPath"] == "/backups/x"
    again = mutate(request(once), DB)
    assert "patch" not in again


def test_what_the_user_wrote_is_kept() -> None:
    connection = {"host": "primary.shop.svc", "port": 6432, "credentialsSecret": {"name": "mine"}}
    obj = databasebackup(engine="PostgreSQL", connection=connection, backupPath="/backups/custom")
    patched = apply_patch(obj, dict(mutate(request(obj), DB)))
    assert patched["spec"]["connection"] == connection
    assert patched["spec"]["backupPath"] == "/backups/custom"


def test_without_the_statefulset_only_what_follows_from_the_spec_is_defaulted() -> None:
    obj = databasebackup()
    patched = apply_patch(obj, dict(mutate(request(obj), None)))
    assert set(patched["spec"]) == {"databaseName", "schedule", "backupPath", "storage"}


@pytest.mark.parametrize(
    ("container_env", "credentials", "username"),
    [
        (
            [
                {"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "m", "key": "root"}}},
            ],
            {"name": "m", "passwordKey": "root"},
            "root",
        ),
        (
            [
                {"name": "POSTGRES_USER", "valueFrom": {"secretKeyRef": {"name": "p", "key": "user"}}},
                {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "p", "key": "pw"}}},
            ],
            {"name": "p", "passwordKey": "pw", "usernameKey": "user"},
            None,
        ),
        (
            [
                {"name": "POSTGRES_USER", "value": "app"},
                {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "p", "key": "pw"}}},
            ],
            {"name": "p", "passwordKey": "pw"},
            "app",
        ),
    ],
)
def test_credentials_come_from_the_secret_the_database_container_uses(
    container_env: list[dict[str, Any]], credentials: dict[str, str], username: str | None
) -> None:
    image = "mariadb:11" if "MARIADB" in container_env[0]["name"] else "postgres:16"
    obj = databasebackup()
    patched = apply_patch(obj, dict(mutate(request(obj), statefulset(image=image, env=container_env))))
    assert patched["spec"]["connection"]["credentialsSecret"] == credentials
    assert patched["spec"]["connection"].get("username") == username


def test_mariadb_is_the_mysql_engine_on_its_standard_port() -> None:
    obj = databasebackup()
    patched = apply_patch(
        obj, dict(mutate(request(obj), statefulset(image="docker.io/bitnami/mariadb:11.4", ports=[])))
    )
    assert patched["spec"]["engine"] == "MySQL"
    assert patched["spec"]["connection"]["port"] == 3306


def test_a_malformed_object_passes_mutation_unchanged_for_validation_to_deny() -> None:
    obj = {**databasebackup(), "spec": "daily"}
    assert "patch" not in mutate(request(obj), DB)


@pytest.mark.parametrize(
    ("before", "after", "operations"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, [{"op": "replace", "path": "/a", "value": 2}]),
        ({}, {"a/b": {"c": 1}}, [{"op": "add", "path": "/a~1b", "value": {"c": 1}}]),
        ({"a": 1, "b": 2}, {"a": 1}, [{"op": "remove", "path": "/b"}]),
        ({"x": [1]}, {"x": [1, 2]}, [{"op": "replace", "path": "/x", "value": [1, 2]}]),
        ({"x": 1}, {"x": 1.0}, [{"op": "replace", "path": "/x", "value": 1.0}]),
    ],
)
def test_json_patch_is_minimal(before: Any, after: Any, operations: list[dict[str, Any]]) -> None:
    assert json_patch(before, after) == operations
