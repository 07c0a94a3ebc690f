"""What the webhook's /readyz says: every problem by name, and a failing certificate keeper reported at once but
taking the replica out of service only once its certificate is about to expire or it has failed for long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from webhook.readiness import NEAR_EXPIRY, STALLED, TOLERANCE, KeeperStatus, Report, keeper_report, report

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
A_YEAR_LEFT = NOW + timedelta(days=365)
FORBIDDEN = "cannot update Secret dbb-system/dbb-webhook-tls: 403 Forbidden"


def failing_since(span: timedelta, failure: str | None = FORBIDDEN) -> KeeperStatus:
    """A keeper whose last success was `span` ago, and which has failed since."""
    status = KeeperStatus()
    status.succeeded(NOW - span)
    if failure is not None:
        status.failed(failure)
    return status


def test_a_keeper_that_syncs_adds_nothing() -> None:
    assert keeper_report(failing_since(timedelta(seconds=8), None), A_YEAR_LEFT, NOW) == Report()


@pytest.mark.parametrize("span", [timedelta(seconds=0), timedelta(minutes=10), TOLERANCE - timedelta(seconds=1)])
def test_a_failure_shorter_than_the_tolerance_is_shown_but_keeps_the_replica_ready(span: timedelta) -> None:
    verdict = keeper_report(failing_since(span), A_YEAR_LEFT, NOW)
    assert verdict.ready
    (warning,) = verdict.warnings
    assert FORBIDDEN in warning


def test_a_keeper_failing_for_the_tolerance_takes_the_replica_out_of_service() -> None:
    verdict = keeper_report(failing_since(TOLERANCE), A_YEAR_LEFT, NOW)
    assert not verdict.ready
    (problem,) = verdict.problems
    assert FORBIDDEN in problem
    assert "last success 60 min ago" in problem


def test_the_tolerance_is_the_callers_choice() -> None:
    assert keeper_report(failing_since(timedelta(seconds=5)), A_YEAR_LEFT, NOW, tolerance=timedelta(seconds=5)).problems


@pytest.mark.parametrize("left", [NEAR_EXPIRY, timedelta(hours=1), timedelta(seconds=-1)])
def test_a_served_certificate_near_expiry_takes_the_replica_out_even_when_the_keeper_just_synced(
    left: timedelta,
) -> None:
    verdict = keeper_report(failing_since(timedelta(seconds=1), None), NOW + left, NOW)
    assert not verdict.ready
    assert "expires at" in verdict.problems[0]


def test_a_day_and_a_second_left_is_not_near_expiry() -> None:
    verdict = keeper_report(failing_since(timedelta(seconds=1), None), NOW + NEAR_EXPIRY + timedelta(seconds=1), NOW)
    assert verdict.ready


def test_a_keeper_whose_loop_stopped_without_a_word_is_noticed_by_the_time_since_its_last_success() -> None:
    assert keeper_report(failing_since(STALLED, None), A_YEAR_LEFT, NOW).ready
    stalled = keeper_report(failing_since(STALLED + timedelta(seconds=1), None), A_YEAR_LEFT, NOW)
    assert stalled.ready
    assert "completes no sync" in stalled.warnings[0]
    assert not keeper_report(failing_since(TOLERANCE, None), A_YEAR_LEFT, NOW).ready


def test_a_keeper_that_never_synced_is_not_ready() -> None:
    assert not keeper_report(KeeperStatus(), A_YEAR_LEFT, NOW).ready


def test_each_problem_is_named_and_the_keepers_warning_follows() -> None:
    keeper = keeper_report(failing_since(timedelta(minutes=3)), A_YEAR_LEFT, NOW)
    whole = report(draining=False, certificate_loaded=False, cache_synced=False, tasks_down=["informer"], keeper=keeper)
    assert whole.problems == (
        "no certificate loaded",
        "the StatefulSet cache has not synced yet",
        "background task informer is down, restarting",
    )
    assert whole.text().splitlines()[1].startswith("warning: certificate keeper failing: " + FORBIDDEN)


def test_a_ready_replica_says_ok_and_nothing_else() -> None:
    ready = report(draining=False, certificate_loaded=True, cache_synced=True, tasks_down=[])
    assert ready.text() == "ok"
    assert report(draining=True, certificate_loaded=True, cache_synced=True, tasks_down=[]).text() == (
        "not ready: shutting down"
    )
