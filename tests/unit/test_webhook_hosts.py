"""Where a backup may send the password: a Service of its own namespace, named in exactly one of the forms cluster DNS
answers for it, else only where the namespace's administrators allow it. The rule (common.hosts) and the webhook's
answer over HTTP, with our finder seam."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.hosts import ALLOW_EXTERNAL_HOSTS, HostFacts, host_refusal, own_service
from tests.fixtures import admission_review, databasebackup, statefulset
from tests.unit.test_webhook_http import FakeFinder, post
from webhook.metrics import Metrics
from webhook.server import make_app

ClientMaker = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.mark.parametrize(
    ("host", "service"),
    [
        ("example-db", "example-db"),
        ("example-db.shop", "example-db"),
        ("example-db.shop.svc", "example-db"),
        ("Example-DB.shop.svc.cluster.local.", "example-db"),
        ("example-db.other.svc", None),
        ("example-db.shop.example.com", None),
        ("db.example.com", None),
        ("10.0.0.7", None),
        ("::1", None),
        # Look-alikes: labels after the third are the cluster domain, exactly, or the name is not a Service's.
        ("example-db.shop.svc.attacker.example", None),
        ("example-db.shop.svc.cluster.local.attacker.example", None),
        ("example-db.shop.svc.cluster", None),
        # Numbers a resolver reads as IP addresses (2130706433 is 127.0.0.1); no Service name starts with a digit.
        ("2130706433", None),
        ("0x7f000001", None),
        ("127.1", None),
    ],
)
def test_a_host_names_a_service_of_the_namespace_or_not(host: str, service: str | None) -> None:
    assert own_service(host, "shop") == service


def test_the_cluster_domain_is_the_one_given() -> None:
    assert own_service("db.shop.svc.corp.internal", "shop", "corp.internal") == "db"
    assert own_service("db.shop.svc.cluster.local", "shop", "corp.internal") is None


def refused(facts: HostFacts) -> str | None:
    return host_refusal(facts)


def test_an_existing_service_of_the_namespace_is_fine_unless_it_points_outside() -> None:
    facts = HostFacts("db.shop.svc", "shop", "db", found={"spec": {"clusterIP": "None"}})
    assert host_refusal(facts) is None
    outside = HostFacts("db.shop.svc", "shop", "db", found={"spec": {"type": "ExternalName", "externalName": "x.io"}})
    assert refused(outside) == (
        f'"db.shop.svc": Service "db" is an ExternalName (to "x.io"): label the namespace {ALLOW_EXTERNAL_HOSTS}="true"'
        " (cluster administrators can) to allow it"
    )
    assert refused(HostFacts("db.shop.svc", "shop", "db", found=outside.found, allowed=True)) is None


def test_a_missing_service_is_refused() -> None:
    facts = HostFacts("db.shop.svc", "shop", "db")
    assert refused(facts) == '"db.shop.svc": no Service "db" in namespace "shop"'


def test_a_lookup_that_failed_refuses_and_says_to_try_again() -> None:
    facts = HostFacts("db.shop.svc", "shop", "db", error="the API server answered 503 Service Unavailable")
    assert refused(facts) == (
        'could not check "db.shop.svc": the API server answered 503 Service Unavailable; nothing was changed: try again'
    )


ATTACKER = "collector.attacker.example"


async def validate(http: TestClient[web.Request, web.Application], host: str) -> dict[str, Any]:
    obj = databasebackup(connection={"host": host})
    status, answer = await post(http, "/validate", admission_review(obj))
    assert status == 200
    response: dict[str, Any] = answer["response"]
    return response


async def test_a_host_outside_the_namespace_is_refused_naming_field_and_value(aiohttp_client: ClientMaker) -> None:
    finder = FakeFinder({("shop", "example-db"): statefulset()})
    http = await aiohttp_client(make_app(finder, Metrics(), lambda: True))
    for host in (ATTACKER, "10.1.2.3", "example-db.other.svc", "example-db.shop.svc.attacker.example", "2130706433"):
        response = await validate(http, host)
        assert response["allowed"] is False
        assert response["status"]["message"] == (
            f'spec.connection.host: "{host}" is not a Service of namespace "shop", and the password is sent '
            f'there: label the namespace {ALLOW_EXTERNAL_HOSTS}="true" (cluster administrators can) to allow it'
        )


async def test_the_namespace_label_allows_any_host(aiohttp_client: ClientMaker) -> None:
    finder = FakeFinder({("shop", "example-db"): statefulset()}, labels={"shop": {ALLOW_EXTERNAL_HOSTS: "true"}})
    http = await aiohttp_client(make_app(finder, Metrics(), lambda: True))
    assert (await validate(http, ATTACKER))["allowed"] is True


async def test_the_statefulsets_own_service_costs_one_read(aiohttp_client: ClientMaker) -> None:
    finder = FakeFinder({("shop", "example-db"): statefulset()})
    http = await aiohttp_client(make_app(finder, Metrics(), lambda: True))
    service = statefulset()["spec"]["serviceName"]
    response = await validate(http, f"{service}.shop.svc")
    assert response["allowed"] is True
    assert finder.reads == [f"service shop/{service}"]


async def test_a_service_that_cannot_be_read_in_time_is_refused_within_the_deadline(
    aiohttp_client: ClientMaker,
) -> None:
    finder = FakeFinder({("shop", "example-db"): statefulset()}, hang=frozenset({"service"}))
    http = await aiohttp_client(make_app(finder, Metrics(), lambda: True, budget=0.2))
    started = time.monotonic()
    response = await validate(http, "example-db.shop.svc")
    assert time.monotonic() - started < 5.0
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        'spec.connection.host: could not check "example-db.shop.svc": no answer from the API server within 0.2 s; '
        "nothing was changed: try again"
    )


async def test_a_skipped_database_check_does_not_skip_the_host_rule(aiohttp_client: ClientMaker) -> None:
    finder = FakeFinder({})
    http = await aiohttp_client(make_app(finder, Metrics(), lambda: True))
    obj = databasebackup(connection={"host": "2130706433"})
    obj["metadata"]["annotations"] = {"databases.test.io/skip-database-check": "true"}
    status, answer = await post(http, "/validate", admission_review(obj))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["message"].startswith(
        'spec.connection.host: "2130706433" is not a Service of namespace "shop"'
    )
