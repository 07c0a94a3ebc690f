"""What the caBundle trusts while the webhook's CA changes: decided from the Secret, the published bundle and what
each replica reports serving."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from certs.pki import KeyPair, issue, new_ca
from webhook.rotation import (
    ROTATED_AT,
    SERVING,
    Material,
    bundle_patch,
    certificates,
    change,
    fingerprint,
    hand_over,
    published_cas,
    reports,
    settled,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ROTATED = NOW - timedelta(minutes=1)
OLD, CURRENT, NEWEST = (new_ca(f"ca-{n}", now=NOW - timedelta(days=30)) for n in ("old", "current", "newest"))
EXPIRED = new_ca("ca-expired", days=10, now=NOW - timedelta(days=20))


def material(ca: KeyPair, previous: tuple[KeyPair, ...] = (), rotated_at: datetime | None = None) -> Material:
    leaf = issue(ca, "dbb-webhook.dbb-system.svc", hosts=["dbb-webhook.dbb-system.svc"], now=NOW)
    files = {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem, "tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}
    return Material(files, tuple(p.cert_pem for p in previous), rotated_at)


def test_certificates_splits_a_bundle_once_each_in_order_and_skips_what_does_not_parse() -> None:
    garbage = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    bundle = b"a comment\n" + CURRENT.cert_pem + garbage + OLD.cert_pem.replace(b"\n", b"\r\n") + CURRENT.cert_pem
    assert certificates(bundle) == (CURRENT.cert_pem, OLD.cert_pem)
    assert certificates(b"") == ()


def test_the_previous_ca_is_trusted_beside_the_current_one_until_the_rotation_settles() -> None:
    rotated = material(CURRENT, (OLD,), ROTATED)
    assert rotated.trusted() == (CURRENT.cert_pem, OLD.cert_pem)
    assert rotated.bundle() == CURRENT.cert_pem + OLD.cert_pem
    assert rotated.settle().trusted() == (CURRENT.cert_pem,)
    assert rotated.settle().annotations() == {}


def serving(*pods: str, certificate: bytes) -> dict[str, str]:
    return dict.fromkeys(pods, fingerprint(certificate))


def test_a_rotation_settles_only_when_every_routed_replica_serves_the_current_certificate() -> None:
    rotated = material(CURRENT, (OLD,), ROTATED)
    new, old = rotated.files["tls.crt"], material(OLD).files["tls.crt"]
    assert not settled(rotated, {**serving("a", certificate=new), **serving("b", certificate=old)}, ["a", "b"])
    assert not settled(rotated, serving("a", certificate=new), ["a", "b"])  # b has said nothing yet
    assert settled(rotated, serving("a", "b", certificate=new), ["a", "b"])
    # A replica the Service does not route to receives no admission request, whatever it serves.
    assert settled(rotated, {**serving("a", certificate=new), **serving("gone", certificate=old)}, ["a"])


def test_the_replicas_reports_are_read_from_their_annotations() -> None:
    secret = {"metadata": {"annotations": {SERVING + "web-1": "abc", ROTATED_AT: "2026-11-27T11:59:00Z"}}}
    assert reports(secret) == {"web-1": "abc"}
    assert reports({"metadata": {}}) == {}


def test_the_secret_round_trips_with_the_previous_cas_and_the_rotation_time() -> None:
    rotated = material(CURRENT, (OLD, NEWEST), ROTATED)
    secret: dict[str, Any] = {"metadata": {"annotations": rotated.annotations()}, "data": rotated.secret_data()}
    assert secret["metadata"]["annotations"] == {ROTATED_AT: "2026-11-27T11:59:00Z"}
    assert base64.b64decode(secret["data"]["ca-previous.crt"]) == OLD.cert_pem + NEWEST.cert_pem
    assert Material.from_secret(secret) == rotated


def test_a_secret_without_previous_cas_has_no_previous_key_and_no_annotation() -> None:
    plain = material(CURRENT)
    assert sorted(plain.secret_data()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert plain.annotations() == {}
    assert Material.from_secret({"metadata": {}, "data": plain.secret_data()}) == plain


@pytest.mark.parametrize("annotation", [None, "", "yesterday", "2026-11-27T11:59:00"], ids=repr)
def test_previous_cas_without_a_readable_rotation_time_are_still_trusted(annotation: str | None) -> None:
    data = {**material(CURRENT).secret_data(), "ca-previous.crt": base64.b64encode(OLD.cert_pem).decode()}
    annotations = {} if annotation is None else {ROTATED_AT: annotation}
    stored = Material.from_secret({"metadata": {"annotations": annotations}, "data": data})
    assert stored.trusted() == (CURRENT.cert_pem, OLD.cert_pem)


def test_a_first_start_records_no_previous_ca() -> None:
    fresh = material(CURRENT)
    assert hand_over(fresh, None, published=(), served=(), now=NOW) == fresh


def test_a_new_ca_not_yet_published_records_what_is_published_and_served_as_previous() -> None:
    # The Secret was deleted: the new CA replaces the one the bundle trusts and this replica serves.
    fresh = material(NEWEST)
    handed = hand_over(fresh, None, published=[CURRENT.cert_pem], served=[OLD.cert_pem], now=NOW)
    assert handed.previous == (CURRENT.cert_pem, OLD.cert_pem)
    assert handed.rotated_at == NOW
    assert handed.files == fresh.files


def test_a_ca_renewed_in_place_records_the_stored_ca_as_previous() -> None:
    stored = material(CURRENT)
    renewed = material(NEWEST)
    handed = hand_over(renewed, stored, published=[CURRENT.cert_pem], served=[CURRENT.cert_pem], now=NOW)
    assert handed.previous == (CURRENT.cert_pem,)


def test_a_second_rotation_before_the_first_settled_keeps_trusting_every_earlier_ca() -> None:
    stored = material(CURRENT, (OLD,), ROTATED)
    handed = hand_over(
        material(NEWEST), None, published=stored.trusted(), served=[CURRENT.cert_pem], now=NOW + timedelta(seconds=1)
    )
    assert handed.trusted() == (NEWEST.cert_pem, CURRENT.cert_pem, OLD.cert_pem)


def test_a_settled_rotation_whose_old_ca_is_still_published_starts_no_new_one() -> None:
    # Once settled the bundle still holds the old CA until this sync replaces it: that is not a rotation.
    stored = material(CURRENT, (OLD,), ROTATED).settle()
    later = NOW + timedelta(days=1)
    candidate = hand_over(
        stored, stored, published=[CURRENT.cert_pem, OLD.cert_pem], served=[CURRENT.cert_pem], now=later
    )
    assert candidate == stored
    assert candidate.trusted() == (CURRENT.cert_pem,)


def test_a_bundle_edited_away_during_a_rotation_keeps_the_rotation_running() -> None:
    stored = material(CURRENT, (OLD,), ROTATED)
    assert hand_over(stored, stored, published=(), served=[CURRENT.cert_pem], now=NOW) == stored


def test_a_secret_replaced_by_hand_keeps_the_ca_still_served_trusted() -> None:
    replaced = material(NEWEST)
    handed = hand_over(replaced, replaced, published=[CURRENT.cert_pem], served=[CURRENT.cert_pem], now=NOW)
    assert handed.trusted() == (NEWEST.cert_pem, CURRENT.cert_pem)


def test_expired_cas_are_not_carried_over() -> None:
    handed = hand_over(material(NEWEST), None, published=[EXPIRED.cert_pem, CURRENT.cert_pem], served=(), now=NOW)
    assert handed.previous == (CURRENT.cert_pem,)


@pytest.mark.parametrize(
    ("stored", "candidate", "expected"),
    [
        pytest.param(None, material(CURRENT), "created", id="a first Secret"),
        pytest.param(None, material(NEWEST, (CURRENT,), NOW), "rotated", id="a deleted Secret"),
        pytest.param(material(CURRENT), material(NEWEST, (CURRENT,), NOW), "rotated", id="a renewed CA"),
        pytest.param(material(CURRENT), material(CURRENT), "renewed", id="a renewed serving certificate"),
        pytest.param(material(CURRENT, (OLD,), NOW), material(CURRENT), "settled", id="every replica moved on"),
    ],
)
def test_each_change_of_the_secret_has_a_name(stored: Material | None, candidate: Material, expected: str) -> None:
    assert change(stored, candidate) == expected


def test_only_the_previous_cas_changing_is_a_rotation_too() -> None:
    replaced = material(NEWEST)
    assert change(replaced, Material(replaced.files, (CURRENT.cert_pem,), NOW)) == "rotated"


def configuration(*bundles: str | None) -> dict[str, Any]:
    hooks: list[dict[str, Any]] = []
    for index, bundle in enumerate(bundles):
        client_config: dict[str, Any] = {"service": {"name": "dbb-webhook"}}
        if bundle is not None:
            client_config["caBundle"] = bundle
        hooks.append({"name": f"hook-{index}.test.io", "clientConfig": client_config})
    return {"metadata": {"name": "dbb-webhook", "resourceVersion": "42"}, "webhooks": hooks}


def encoded(*cas: KeyPair) -> str:
    return base64.b64encode(b"".join(ca.cert_pem for ca in cas)).decode()


def test_the_published_cas_are_every_ca_of_every_webhook_once() -> None:
    found = published_cas(
        [configuration(encoded(CURRENT, OLD), None, "not base64!"), configuration(encoded(OLD), encoded(NEWEST))]
    )
    assert found == (CURRENT.cert_pem, OLD.cert_pem, NEWEST.cert_pem)


def test_a_bundle_already_in_place_needs_no_patch() -> None:
    bundle = CURRENT.cert_pem + OLD.cert_pem
    assert bundle_patch(configuration(encoded(CURRENT, OLD), encoded(CURRENT, OLD)), bundle) is None


def test_the_patch_sets_only_the_webhooks_that_lack_the_bundle_and_is_guarded_by_the_resource_version() -> None:
    patch = bundle_patch(configuration(encoded(CURRENT), None, encoded(CURRENT, OLD)), CURRENT.cert_pem + OLD.cert_pem)
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "webhooks": [
            {"name": "hook-0.test.io", "clientConfig": {"caBundle": encoded(CURRENT, OLD)}},
            {"name": "hook-1.test.io", "clientConfig": {"caBundle": encoded(CURRENT, OLD)}},
        ],
    }
