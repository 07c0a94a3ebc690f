"""BackupStores: object storage the cluster administrators approve. A store that could never work is refused when it
is applied, naming the field and the value; a namespace uses a store only where its selector lets it, and only under
its own part of the bucket."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.fields import FieldError
from common.selectors import selector_matches
from common.stores.access import resolve_store
from common.stores.model import parse_store_spec
from common.stores.validation import store_problems
from common.values import StoreReference
from tests.fixtures import admission_review, backup_store
from tests.unit.test_webhook_http import ClientMaker, FakeFinder, post
from webhook.metrics import Metrics
from webhook.server import make_app

CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


def problems(**fields: Any) -> list[str]:
    selector = fields.pop("selector", None)
    prefix = fields.pop("prefix", None)
    store = backup_store(prefix=prefix, selector=selector, **fields)
    spec, errors = parse_store_spec(store["spec"])
    if spec is not None:
        errors += store_problems(spec)
    return [str(e) for e in errors]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bucket": "Backups"}, 'spec.s3.bucket: "Backups" is not an S3 bucket name'),
        ({"bucket": "ab"}, 'spec.s3.bucket: "ab" is not an S3 bucket name'),
        ({"bucket": "10.0.0.1"}, 'spec.s3.bucket: "10.0.0.1" is not an S3 bucket name'),
        ({"bucket": "a..b"}, 'spec.s3.bucket: "a..b" is not an S3 bucket name'),
        ({"endpoint": "ftp://store"}, 'spec.s3.endpoint: "ftp://store" is not an https:// URL'),
        ({"endpoint": "https://user:pw@store"}, 'spec.s3.endpoint: "https://user:pw@store" is not an https:// URL'),
        ({"endpoint": "http://store:8333"}, 'spec.s3.endpoint: "http://store:8333" is plain http'),
        ({"region": "eu west"}, "spec.s3.region: 'eu west' must not contain spaces or control characters"),
        ({"caBundle": "not a certificate"}, "spec.s3.caBundle: is not a PEM certificate"),
        ({"serverSideEncryption": "aws:kms"}, "spec.s3.kmsKeyId: is required with serverSideEncryption aws:kms"),
        ({"kmsKeyId": "k"}, "spec.s3.kmsKeyId: goes with serverSideEncryption aws:kms only"),
        ({"prefix": "clusters/../other"}, 'spec.prefix: "clusters/../other" must be segments separated by single'),
        (
            {"selector": {"matchExpressions": [{"key": "team", "operator": "Like"}]}},
            'spec.namespaceSelector.matchExpressions[0].operator: "Like" is not one of In, NotIn, Exists, DoesNotExist',
        ),
        (
            {"selector": {"matchExpressions": [{"key": "team", "operator": "In"}]}},
            "spec.namespaceSelector.matchExpressions[0].values: must list at least one value with operator In",
        ),
    ],
)
def test_a_store_that_cannot_work_is_refused_naming_field_and_value(fields: dict[str, Any], message: str) -> None:
    found = problems(**fields)
    assert any(m.startswith(message) for m in found), found


def test_a_store_without_credentials_is_refused() -> None:
    store = backup_store()
    del store["spec"]["s3"]["credentialsSecret"]
    _, errors = parse_store_spec(store["spec"])
    assert [str(e) for e in errors] == ["spec.s3.credentialsSecret: is required"]


def test_a_good_store_passes_and_http_only_when_allowed() -> None:
    assert problems(caBundle=CA, region="eu-west-1", prefix="clusters/prod") == []
    assert problems(endpoint="http://seaweedfs.storage.svc:8333", allowInsecure=True) == []


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        (None, {}, True),
        ({}, {"a": "b"}, True),
        ({"matchLabels": {"team": "shop"}}, {"team": "shop", "x": "y"}, True),
        ({"matchLabels": {"team": "shop"}}, {"team": "crm"}, False),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, {"team": "b"}, True),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, {}, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {"team": "a"}, False),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {"team": ""}, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, {"team": ""}, False),
        # A selector this operator cannot read matches nothing: closed, not open.
        ({"matchExpressions": [{"key": "team", "operator": "Like", "values": ["a"]}]}, {"team": "a"}, False),
    ],
)
def test_a_namespace_selector_matches_as_kubernetes_does(
    selector: dict[str, Any] | None, labels: dict[str, str], matches: bool
) -> None:
    assert selector_matches(selector, labels) is matches


def resolved(reference: StoreReference, store: dict[str, Any] | None, **labels: str) -> tuple[Any, list[FieldError]]:
    return resolve_store(reference, namespace="shop", namespace_labels=labels, database_name="example-db", store=store)


def test_every_namespace_writes_under_its_own_part_of_the_bucket() -> None:
    s3, errors = resolved(StoreReference("shared"), backup_store(prefix="clusters/prod"))
    assert errors == []
    assert (s3.bucket, s3.prefix, s3.endpoint, s3.store) == (
        "backups",
        "clusters/prod/shop/example-db",
        "https://s3.storage.svc:8333",
        "shared",
    )
    s3, _ = resolved(StoreReference("shared", "/ledger/"), backup_store())
    assert s3.prefix == "shop/ledger"


def test_a_missing_or_closed_store_says_so_and_gives_no_storage() -> None:
    s3, errors = resolved(StoreReference("nope"), None)
    assert s3 is None
    assert [str(e) for e in errors] == [
        'spec.storage.s3.store: BackupStore "nope" not found (kubectl get backupstores lists those the cluster '
        "administrators made)"
    ]
    closed = backup_store(selector={"matchLabels": {"backups": "on"}})
    assert resolved(StoreReference("shared"), closed)[0] is None
    assert resolved(StoreReference("shared"), closed, backups="on")[1] == []


async def test_the_webhook_refuses_a_bad_store_and_admits_a_good_one(aiohttp_client: ClientMaker) -> None:
    app = make_app(FakeFinder(), Metrics(), lambda: True)
    http: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    kind = {"group": "databases.test.io", "version": "v1", "kind": "BackupStore"}
    bad = backup_store(endpoint="http://s3.attacker.example")
    status, answer = await post(http, "/validate-store", admission_review(bad, kind=kind))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["message"].startswith(
        'spec.s3.endpoint: "http://s3.attacker.example" is plain http'
    )
    status, answer = await post(http, "/validate-store", admission_review(backup_store(), kind=kind))
    assert answer["response"]["allowed"] is True
