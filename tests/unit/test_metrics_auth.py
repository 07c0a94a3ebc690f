"""The decisions of /metrics authentication, without a cluster: which headers carry a token, what a TokenReview and a
SubjectAccessReview answer means, and what we ask the authorizer. The reviews themselves run against the real API
server in tests/integration/test_metrics_auth.py."""

from __future__ import annotations

from typing import Any

import pytest

from common.metrics_auth import Identity, Verdict, access_review, bearer_token, decide_access, decide_identity

ALICE = Identity("system:serviceaccount:monitoring:prometheus", "u-1", ("system:authenticated",), {})


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer abc.def", "abc.def"),
        ("  Bearer   abc.def  ", "abc.def"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer two tokens", None),
        ("abc.def", None),
    ],
)
def test_only_a_bearer_header_carries_a_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_an_authenticated_review_names_the_user_with_groups_and_extra() -> None:
    review = {
        "status": {
            "authenticated": True,
            "user": {
                "username": ALICE.username,
                "uid": "u-1",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]},
            },
        }
    }
    assert decide_identity(review) == Identity(
        ALICE.username,
        "u-1",
        ("system:serviceaccounts", "system:authenticated"),
        {"authentication.kubernetes.io/pod-name": ["prometheus-0"]},
    )


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"authenticated": False, "error": "invalid bearer token"},
        {"authenticated": True, "user": {}},
        {"authenticated": "true", "user": {"username": "x"}},
    ],
)
def test_anything_but_an_authenticated_user_is_no_identity(status: dict[str, Any]) -> None:
    assert decide_identity({"status": status}) is None


def test_the_access_review_asks_about_exactly_that_user_and_url() -> None:
    identity = Identity("bob", "u-2", ("team",), {"scopes": ["a"]})
    assert access_review(identity, "/metrics", "get") == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "bob",
            "uid": "u-2",
            "groups": ["team"],
            "extra": {"scopes": ["a"]},
            "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
        },
    }


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ({"allowed": True}, 200),
        ({"allowed": False}, 403),
        ({}, 403),
        ({"allowed": True, "denied": True}, 403),
        ({"allowed": False, "denied": True, "reason": "no"}, 403),
    ],
)
def test_only_an_allowed_review_lets_the_scrape_in(status: dict[str, Any], code: int) -> None:
    verdict = decide_access({"status": status}, ALICE, "/metrics")
    assert verdict.status == code
    if code == 403:
        assert "databasebackup-metrics-reader" in verdict.message


def test_a_401_names_the_bearer_scheme_and_nothing_else_does() -> None:
    assert Verdict(401, "x").headers == {"WWW-Authenticate": 'Bearer realm="metrics"'}
    assert Verdict(403, "x").headers == {}
    assert Verdict(200, "ok").allowed
    assert not Verdict(503, "x").allowed
