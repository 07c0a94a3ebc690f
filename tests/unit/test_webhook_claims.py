"""The backup volume is never a database's own data: a claim of the volumeClaimTemplates of any StatefulSet of the
namespace, or one their Pods mount; and a lookup that fails refuses."""

from __future__ import annotations

from typing import Any

import pytest

from common.volumes import claim_refusal, data_claim_reason
from tests.fixtures import admission_review, databasebackup, statefulset
from webhook.backups import Database, backup_claim, database_to_check, validate_request
from webhook.reviews import parse_review

FIELD = "spec.storage.persistentVolumeClaim.claimName"


def database_with_volumes(**spec: Any) -> dict[str, Any]:
    sts = statefulset()
    sts["metadata"]["uid"] = "sts-uid"
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}, {"metadata": {"name": "wal"}}]
    sts["spec"]["template"]["spec"]["volumes"] = [
        {"name": "shared", "persistentVolumeClaim": {"claimName": "example-db-shared"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    sts["spec"].update(spec)
    return sts


def judged(claim: str, pods: dict[str, tuple[str, ...]] | None = None, **options: Any) -> dict[str, Any]:
    obj = databasebackup(storage={"persistentVolumeClaim": {"claimName": claim}})
    options.setdefault("statefulsets", (database_with_volumes(),))
    database = Database("shop", "example-db", database_with_volumes(), pods=pods, **options)
    return dict(validate_request(parse_review(admission_review(obj)), database))


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        ("data-example-db-0", 'a data volume of StatefulSet "example-db" (its volumeClaimTemplate "data")'),
        ("wal-example-db-2", 'a data volume of StatefulSet "example-db" (its volumeClaimTemplate "wal")'),
        # A scale-down keeps the claims of the Pods it removed: still the database's data.
        ("data-example-db-17", 'a data volume of StatefulSet "example-db" (its volumeClaimTemplate "data")'),
        ("example-db-shared", 'mounted by every Pod of StatefulSet "example-db" (its Pod template)'),
    ],
)
def test_a_claim_of_the_database_is_refused_naming_the_field_and_value(claim: str, reason: str) -> None:
    response = judged(claim)
    assert response["allowed"] is False
    assert response["status"]["message"] == f'{FIELD}: "{claim}" is {reason}; backups need a claim of their own'


@pytest.mark.parametrize(
    "claim", ["example-db-backups", "data-example-db", "data-example-db-x", "data-other-db-0", "xdata-example-db-0"]
)
def test_other_claims_pass(claim: str) -> None:
    assert data_claim_reason(database_with_volumes(), claim) is None
    assert judged(claim, pods={})["allowed"] is True


def test_a_claim_an_older_pod_still_mounts_is_refused() -> None:
    response = judged("old-data", pods={"example-db-1": ("old-data",), "example-db-0": ("data-example-db-0",)})
    assert response["status"]["message"] == (
        f'{FIELD}: "old-data" is mounted by Pod "example-db-1" of a StatefulSet; backups need a claim of their own'
    )


def test_the_data_of_another_statefulset_of_the_namespace_is_refused_too() -> None:
    other = database_with_volumes()
    other["metadata"]["name"] = "ledger-db"
    response = judged("data-ledger-db-0", statefulsets=(database_with_volumes(), other))
    assert response["status"]["message"] == (
        f'{FIELD}: "data-ledger-db-0" is a data volume of StatefulSet "ledger-db" (its volumeClaimTemplate "data"); '
        "backups need a claim of their own"
    )
    assert claim_refusal("data-ledger-db-0", [database_with_volumes()]) is None


def test_statefulsets_and_pods_that_cannot_be_read_refuse_and_say_to_try_again() -> None:
    response = judged("example-db-backups", volumes_error="no answer from the API server within 2 s")
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        f'{FIELD}: could not read the StatefulSets and Pods of namespace "shop": no answer from the API server within '
        "2 s; nothing was changed: try again"
    )


def test_the_default_claim_is_the_one_checked_when_storage_is_left_out() -> None:
    assert backup_claim({"databaseName": "example-db"}) == "example-db-backups"
    assert backup_claim({"databaseName": "example-db", "storage": {"persistentVolumeClaim": {"claimName": "x"}}}) == "x"
    assert backup_claim({"databaseName": "example-db", "storage": {}}) is None


def test_an_update_that_changes_only_the_claim_is_checked_but_never_refused_for_a_missing_database() -> None:
    old = databasebackup(storage={"persistentVolumeClaim": {"claimName": "a"}})
    new = databasebackup(storage={"persistentVolumeClaim": {"claimName": "data-example-db-0"}})
    changed = parse_review(admission_review(new, operation="UPDATE", old=old))
    assert database_to_check(changed) == ("shop", "example-db")
    assert validate_request(changed, Database("shop", "example-db", database_with_volumes()))["allowed"] is False
    assert validate_request(changed, Database("shop", "example-db", None))["allowed"] is True
    unchanged = parse_review(admission_review(new, operation="UPDATE", old=new))
    assert database_to_check(unchanged) is None
