"""DatabaseBackupPolicies: a template judged as a DatabaseBackup's spec would be, and the plan that keeps one
DatabaseBackup per selected database: hand-written ones win, the oldest policy wins, and what leaves is deleted."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.names import MAX_NAME_LENGTH
from common.policies.model import parse_policy_spec
from common.policies.render import ANNOTATION_TEMPLATE, LABEL_POLICY, backup_name, digest
from hack.harness.controlplane import CRD_FILE, POLICY_CRD_FILE
from reconciler.policy_plan import MAX_LISTED, plan
from tests.fixtures import admission_review, statefulset
from tests.unit.test_webhook_http import ClientMaker, FakeFinder, post
from webhook.metrics import Metrics
from webhook.server import make_app

TEMPLATE = {"schedule": "0 1 * * *", "window": "4h"}


def policy(
    name: str = "nightly",
    *,
    namespaces: dict[str, Any] | None = None,
    selector: dict[str, Any] | None = None,
    template: dict[str, Any] | None = TEMPLATE,
    created: str = "2026-01-01T00:00:00Z",
    generation: int = 1,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if namespaces is not None:
        spec["namespaceSelector"] = namespaces
    if selector is not None:
        spec["selector"] = selector
    if template is not None:
        spec["template"] = {"spec": dict(template)}
    return {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseBackupPolicy",
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created, "generation": generation},
        "spec": spec,
    }


def database(name: str, namespace: str = "shop", labels: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    sts = statefulset(name, namespace, **kw)
    sts["metadata"]["labels"] = labels or {}
    return sts


def problems(spec: dict[str, Any]) -> list[str]:
    return [str(e) for e in parse_policy_spec(spec)[1]]


# --- admission ------------------------------------------------------------------------------------------------


def test_a_template_is_judged_as_a_databasebackup_spec_naming_the_field_under_the_template() -> None:
    assert problems({"template": {"spec": {"schedule": "61 * * * *"}}}) == [
        'spec.template.spec.schedule: "61 * * * *" minute 61 is out of range 0-59'
    ]
    assert problems({"template": {"spec": {"schedule": "@daily", "window": "30h"}}})[0].startswith(
        "spec.template.spec.window: "
    )
    assert problems({"template": {"spec": {"schedule": "@daily", "compression": "Rar"}}}) == [
        'spec.template.spec.compression: "Rar" is not one of Gzip, Zstd, None'
    ]


def test_a_template_may_not_name_the_database() -> None:
    assert problems({"template": {"spec": {"schedule": "@daily", "databaseName": "orders"}}}) == [
        "spec.template.spec.databaseName: is set by the policy, to each StatefulSet it selects: remove it from the "
        "template"
    ]


def test_selectors_must_be_readable_and_a_policy_without_a_template_only_reports() -> None:
    bad = {"matchExpressions": [{"key": "tier", "operator": "Near"}]}
    assert problems({"selector": bad}) == [
        'spec.selector.matchExpressions[0].operator: "Near" is not one of In, NotIn, Exists, DoesNotExist'
    ]
    assert problems({"namespaceSelector": {"matchLabels": {"a": 1}}}) == [
        'spec.namespaceSelector.matchLabels: must map label names to strings, not {"a": 1}'
    ]
    spec, errors = parse_policy_spec({"namespaceSelector": {"matchLabels": {"backup": "on"}}})
    assert errors == []
    assert spec is not None
    assert spec.template is None


async def test_the_webhook_refuses_a_bad_policy_and_admits_a_good_one(aiohttp_client: ClientMaker) -> None:
    http: TestClient[web.Request, web.Application] = await aiohttp_client(
        make_app(FakeFinder(), Metrics(), lambda: True)
    )
    kind = {"group": "databases.test.io", "version": "v1", "kind": "DatabaseBackupPolicy"}
    bad = policy(template={"schedule": "@daily", "retention": {"keepLast": 0}})
    status, answer = await post(http, "/validate-policy", admission_review(bad, kind=kind))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["message"] == "spec.template.spec.retention.keepLast: 0 is below the minimum 1"
    status, answer = await post(http, "/validate-policy", admission_review(policy(), kind=kind))
    assert answer["response"]["allowed"] is True


def test_the_template_schema_is_the_databasebackup_spec_without_its_database() -> None:
    backup = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    documents = [d for d in yaml.safe_load_all(POLICY_CRD_FILE.read_text()) if d]
    template = documents[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    expected = dict(backup["properties"]["spec"])
    expected["properties"] = {k: v for k, v in expected["properties"].items() if k != "databaseName"}
    expected["required"] = [r for r in expected["required"] if r != "databaseName"]
    got = dict(template["template"]["properties"]["spec"])
    assert {k: v for k, v in got.items() if k != "description"} == {
        k: v for k, v in expected.items() if k != "description"
    }


# --- names ----------------------------------------------------------------------------------------------------


def test_a_name_is_the_pair_or_a_stable_shortening_of_it() -> None:
    assert backup_name("orders", "nightly") == "orders-nightly"
    long = backup_name("a" * 40, "policy-with-a-long-name")
    assert len(long) <= MAX_NAME_LENGTH
    assert long == backup_name("a" * 40, "policy-with-a-long-name")
    assert long != backup_name("a" * 40, "policy-with-a-long-namf")


# --- the plan -------------------------------------------------------------------------------------------------


def made(name: str, namespace: str, database_name: str, by: str, **extra: Any) -> dict[str, Any]:
    spec, _ = parse_policy_spec(policy(by)["spec"])
    assert spec is not None
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": "7",
            "labels": {LABEL_POLICY: by},
            "annotations": {ANNOTATION_TEMPLATE: digest(spec)},
        },
        "spec": {"databaseName": database_name, **extra.pop("spec", {})},
        **extra,
    }


def by_hand(name: str, namespace: str, database_name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"databaseName": database_name, **spec}}


NAMESPACES = {"shop": {"backup": "on"}, "lab": {}}


def test_each_selected_database_gets_one_databasebackup_from_the_template() -> None:
    databases = [
        database("orders", labels={"tier": "prod"}),
        database("scratch", labels={"tier": "dev"}),
        database("cache", labels={"tier": "prod"}, image="redis:7"),  # not a database we back up
        database("other", "lab", labels={"tier": "prod"}),  # its namespace is not selected
    ]
    chosen = policy(namespaces={"matchLabels": {"backup": "on"}}, selector={"matchLabels": {"tier": "prod"}})
    decided = plan([chosen], NAMESPACES, databases, [], {})
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in decided.create] == [("shop", "orders-nightly")]
    created = decided.create[0]
    assert created["spec"] == {**TEMPLATE, "databaseName": "orders"}
    assert created["metadata"]["labels"][LABEL_POLICY] == "nightly"
    assert created["metadata"]["ownerReferences"][0]["uid"] == "uid-nightly"
    status = decided.status["nightly"]
    assert (status["selected"], status["covered"], status["unprotected"]) == (1, 0, 1)
    assert status["databases"] == [{"namespace": "shop", "statefulset": "orders", "problem": "no DatabaseBackup"}]


def test_a_databasebackup_written_by_hand_wins_and_the_policys_own_goes() -> None:
    ours = made("orders-nightly", "shop", "orders", "nightly")
    hand = by_hand("orders-hourly", "shop", "orders", schedule="@hourly")
    decided = plan([policy()], NAMESPACES, [database("orders")], [ours, hand], {})
    assert decided.create == []
    assert decided.delete == [("shop", "orders-nightly")]
    status = decided.status["nightly"]
    assert (status["selected"], status["covered"], status["coveredByHand"]) == (1, 1, 1)
    assert status["databases"] == [
        {"namespace": "shop", "statefulset": "orders", "coveredBy": "Hand", "databaseBackup": "orders-hourly"}
    ]


def test_the_oldest_policy_keeps_the_databasebackup_and_the_younger_counts_it() -> None:
    old = policy("aaa-old", created="2026-01-01T00:00:00Z")
    young = policy("zzz-young", created="2026-02-01T00:00:00Z")
    decided = plan([young, old], NAMESPACES, [database("orders")], [], {})
    assert [o["metadata"]["name"] for o in decided.create] == ["orders-aaa-old"]
    existing = made("orders-zzz-young", "shop", "orders", "zzz-young")
    decided = plan([young, old], NAMESPACES, [database("orders")], [existing], {})
    assert decided.delete == [("shop", "orders-zzz-young")]


def test_what_leaves_a_policy_loses_its_databasebackup_and_an_unreadable_policy_changes_nothing() -> None:
    gone = made("old-nightly", "shop", "old", "nightly")  # its StatefulSet is gone
    orphan = made("orders-deleted", "shop", "orders", "deleted")  # its policy is gone
    kept = made("orders-nightly", "shop", "orders", "nightly")
    decided = plan([policy()], NAMESPACES, [database("orders")], [gone, orphan, kept], {})
    assert sorted(decided.delete) == [("shop", "old-nightly"), ("shop", "orders-deleted")]
    assert decided.create == []
    assert decided.update == []
    broken = policy()
    broken["spec"]["template"]["spec"]["schedule"] = "not cron"
    decided = plan([broken], NAMESPACES, [], [gone, kept], {})
    assert decided.delete == []
    assert decided.create == []
    assert decided.status["nightly"]["conditions"][0]["reason"] == "Invalid"
    assert "spec.template.spec.schedule" in decided.status["nightly"]["conditions"][0]["message"]


def test_a_changed_template_is_written_again_and_an_unchanged_one_is_not() -> None:
    current = made("orders-nightly", "shop", "orders", "nightly")
    assert plan([policy()], NAMESPACES, [database("orders")], [current], {}).update == []
    changed = policy(template={"schedule": "0 3 * * *"})
    decided = plan([changed], NAMESPACES, [database("orders")], [current], {})
    assert [(o["spec"], version) for o, version in decided.update] == [
        ({"schedule": "0 3 * * *", "databaseName": "orders"}, "7")
    ]


def test_a_refused_databasebackup_is_failing_with_the_webhooks_words_and_not_asked_again() -> None:
    message = 'spec.storage.s3.store: BackupStore "nope" not found'
    decided = plan([policy()], NAMESPACES, [database("orders")], [], {("shop", "orders"): message})
    assert decided.create == []
    status = decided.status["nightly"]
    assert (status["failing"], status["unprotected"]) == (1, 1)
    assert status["databases"] == [{"namespace": "shop", "statefulset": "orders", "problem": message}]
    assert status["conditions"][0]["status"] == "False"


def test_a_failing_or_suspended_databasebackup_is_named_and_the_list_is_bounded() -> None:
    failing = made("a-nightly", "shop", "a", "nightly", status={"phase": "Failed", "lastFailure": {"message": "x"}})
    suspended = by_hand("b-mine", "shop", "b", suspend=True)
    decided = plan([policy()], NAMESPACES, [database("a"), database("b")], [failing, suspended], {})
    status = decided.status["nightly"]
    assert (status["covered"], status["failing"], status["unprotected"]) == (1, 1, 1)
    assert [(d["statefulset"], d["problem"]) for d in status["databases"]] == [("b", "suspended"), ("a", "x")]
    many = [database(f"db{i:03}") for i in range(MAX_LISTED + 10)]
    report = plan([policy(template=None)], NAMESPACES, many, [], {})
    assert report.create == []
    assert report.status["nightly"]["unprotected"] == MAX_LISTED + 10
    assert len(report.status["nightly"]["databases"]) == MAX_LISTED
    assert report.status["nightly"]["conditions"][0]["reason"] == "ReportOnly"


@pytest.mark.parametrize("labels", [{"tier": "prod"}, {}])
def test_a_namespace_the_reconciler_does_not_see_is_never_selected(labels: dict[str, str]) -> None:
    decided = plan([policy()], {}, [database("orders", labels=labels)], [], {})
    assert decided.create == []
    assert decided.status["nightly"]["selected"] == 0
