"""Leader election decides from the Lease, our identity and the time alone: who may take the Lease, what a take-over,
a renewal and a release write, and that every time written is truly UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from kubernetes_asyncio import client

from reconciler.leader import (
    LeaderElection,
    LeaseSpec,
    Record,
    Standing,
    claim,
    expiry,
    format_micro_time,
    lease_seconds,
    parse_micro_time,
    released,
    renewal,
    renewal_overdue,
    standing,
)

ME = "reconciler-a_1234abcd"
OTHER = "reconciler-b_5678ef90"
LEASE = 15  # seconds, as the Lease says
DEFAULT = timedelta(seconds=LEASE)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def acquired_at() -> datetime:
    return utc("2026-11-27T09:00:00")


def renewed_at() -> datetime:
    return utc("2026-11-27T10:00:00")


def well_within_the_lease() -> datetime:
    return renewed_at() + timedelta(seconds=5)


def at_expiry() -> datetime:
    return renewed_at() + timedelta(seconds=LEASE)


def just_after_expiry() -> datetime:
    return at_expiry() + timedelta(microseconds=1)


def long_after_expiry() -> datetime:
    return renewed_at() + timedelta(hours=1)


def lease(holder: str | None, **spec: Any) -> dict[str, Any]:
    """A Lease as the API server returns it, renewed at renewed_at() unless told otherwise."""
    fields: dict[str, Any] = {
        "holderIdentity": holder,
        "leaseDurationSeconds": LEASE,
        "acquireTime": "2026-11-27T09:00:00.000000Z",
        "renewTime": "2026-11-27T10:00:00.000000Z",
        "leaseTransitions": 3,
    }
    fields.update(spec)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": fields}


def record(holder: str | None, **spec: Any) -> Record:
    return Record.of(lease(holder, **spec))


# --- reading a Lease ---------------------------------------------------------------------------------------------


def test_a_lease_is_parsed_into_aware_utc_times() -> None:
    parsed = record(OTHER)
    assert parsed == Record(holder=OTHER, duration=DEFAULT, acquired=acquired_at(), renewed=renewed_at(), transitions=3)


def test_a_lease_without_a_spec_is_vacant_and_timeless() -> None:
    assert Record.of({"metadata": {"name": "l"}}) == Record(
        holder="", duration=None, acquired=None, renewed=None, transitions=0
    )


# --- who may take it ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease_record", "now", "expected"),
    [
        pytest.param(record(None), well_within_the_lease(), Standing.VACANT, id="released: no holder"),
        pytest.param(record(""), well_within_the_lease(), Standing.VACANT, id="empty holder"),
        pytest.param(record(ME), long_after_expiry(), Standing.MINE, id="ours, however late"),
        pytest.param(record(OTHER), well_within_the_lease(), Standing.HELD, id="another's, renewed recently"),
        pytest.param(record(OTHER), at_expiry(), Standing.HELD, id="another's, at the instant of expiry"),
        pytest.param(record(OTHER), just_after_expiry(), Standing.EXPIRED, id="another's, just after expiry"),
        pytest.param(
            record(OTHER, leaseDurationSeconds=60),
            just_after_expiry(),
            Standing.HELD,
            id="the Lease's own duration counts, not ours",
        ),
        pytest.param(
            record(OTHER, leaseDurationSeconds=None),
            just_after_expiry(),
            Standing.EXPIRED,
            id="without a duration, ours stands in",
        ),
        pytest.param(
            record(OTHER, renewTime=None, acquireTime="2026-11-27T10:00:00.000000Z"),
            well_within_the_lease(),
            Standing.HELD,
            id="never renewed: judged from acquireTime",
        ),
        pytest.param(
            record(OTHER, renewTime=None, acquireTime=None),
            well_within_the_lease(),
            Standing.EXPIRED,
            id="no times at all: nothing shows it is alive",
        ),
        pytest.param(
            record(OTHER, renewTime="2026-11-27T23:59:50.000000+14:00"),
            well_within_the_lease(),
            Standing.HELD,
            id="an offset time is the same instant in UTC",
        ),
    ],
)
def test_standing(lease_record: Record, now: datetime, expected: Standing) -> None:
    assert standing(lease_record, ME, now, DEFAULT) is expected


def test_expiry_is_the_last_renewal_plus_the_leases_duration() -> None:
    assert expiry(record(OTHER), timedelta(seconds=999)) == at_expiry()
    assert expiry(record(OTHER, renewTime=None, acquireTime=None), DEFAULT) is None


# --- what a claim writes -----------------------------------------------------------------------------------------


def spec_of(holder: str | None, *, acquired: datetime, renewed: datetime, transitions: int, seconds: int) -> LeaseSpec:
    return LeaseSpec(
        holderIdentity=holder,
        leaseDurationSeconds=seconds,
        acquireTime=format_micro_time(acquired),
        renewTime=format_micro_time(renewed),
        leaseTransitions=transitions,
    )


@pytest.mark.parametrize(
    ("lease_record", "now", "expected"),
    [
        pytest.param(
            None,
            well_within_the_lease(),
            spec_of(ME, acquired=well_within_the_lease(), renewed=well_within_the_lease(), transitions=0, seconds=10),
            id="no Lease yet: create it, no transitions",
        ),
        pytest.param(record(OTHER), well_within_the_lease(), None, id="another's, renewed recently: wait"),
        pytest.param(record(OTHER), at_expiry(), None, id="another's, at the instant of expiry: wait"),
        pytest.param(
            record(OTHER),
            just_after_expiry(),
            spec_of(ME, acquired=just_after_expiry(), renewed=just_after_expiry(), transitions=4, seconds=10),
            id="another's, expired: take over, one more transition",
        ),
        pytest.param(
            record(None, leaseDurationSeconds=1),
            well_within_the_lease(),
            spec_of(ME, acquired=well_within_the_lease(), renewed=well_within_the_lease(), transitions=4, seconds=10),
            id="released: take over at once",
        ),
        pytest.param(
            record(ME),
            long_after_expiry(),
            spec_of(ME, acquired=acquired_at(), renewed=long_after_expiry(), transitions=3, seconds=10),
            id="ours already: renew, keeping acquireTime and transitions",
        ),
    ],
)
def test_claim(lease_record: Record | None, now: datetime, expected: LeaseSpec | None) -> None:
    assert claim(lease_record, ME, now, 10) == expected


# --- what the holder writes --------------------------------------------------------------------------------------


def test_a_renewal_moves_only_renew_time_and_duration() -> None:
    assert renewal(record(ME), ME, well_within_the_lease(), 20) == spec_of(
        ME, acquired=acquired_at(), renewed=well_within_the_lease(), transitions=3, seconds=20
    )


@pytest.mark.parametrize(
    "lease_record",
    [
        pytest.param(record(OTHER), id="another holder"),
        pytest.param(record(OTHER, renewTime="2020-01-01T00:00:00.000000Z"), id="another holder, long expired"),
        pytest.param(record(None), id="vacant: someone released it for us"),
    ],
)
def test_a_lost_lease_is_never_renewed(lease_record: Record) -> None:
    assert renewal(lease_record, ME, well_within_the_lease(), LEASE) is None


def test_a_release_leaves_no_holder_and_a_one_second_lease() -> None:
    assert released(record(ME), well_within_the_lease()) == spec_of(
        None, acquired=well_within_the_lease(), renewed=well_within_the_lease(), transitions=3, seconds=1
    )


@pytest.mark.parametrize(
    ("now", "overdue"),
    [
        pytest.param(renewed_at(), False, id="just renewed"),
        pytest.param(renewed_at() + timedelta(seconds=9.999999), False, id="just before the deadline"),
        pytest.param(renewed_at() + timedelta(seconds=10), True, id="at the deadline"),
        pytest.param(renewed_at() - timedelta(seconds=30), False, id="the clock stepped back"),
    ],
)
def test_renewal_overdue(now: datetime, overdue: bool) -> None:
    assert renewal_overdue(renewed_at(), now, timedelta(seconds=10)) is overdue


# --- times -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(utc("2026-11-27T10:00:00.123456"), "2026-11-27T10:00:00.123456Z", id="utc"),
        pytest.param(utc("2026-11-27T10:00:00"), "2026-11-27T10:00:00.000000Z", id="whole seconds keep six digits"),
        pytest.param(
            datetime(2026, 11, 28, 0, 0, 0, 123456, tzinfo=ZoneInfo("Pacific/Kiritimati")),
            "2026-11-27T10:00:00.123456Z",
            id="UTC+14 is converted, not relabelled",
        ),
        pytest.param(
            datetime(2026, 11, 26, 23, 0, 0, tzinfo=ZoneInfo("Pacific/Pago_Pago")),
            "2026-11-27T10:00:00.000000Z",
            id="UTC-11 is converted, not relabelled",
        ),
    ],
)
def test_micro_time_is_written_in_utc(moment: datetime, text: str) -> None:
    assert format_micro_time(moment) == text
    assert parse_micro_time(text) == moment


def test_a_naive_time_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_micro_time(datetime(2026, 11, 27, 10, 0, 0))  # naive: the point of the test


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T10:00:00.123456Z",
        "2026-11-27T10:00:00.123456789Z",  # RFC 3339 with nanoseconds: truncated to what datetime holds
        "2026-11-28T00:00:00.123456+14:00",
    ],
)
def test_parsed_times_are_aware_utc(text: str) -> None:
    moment = parse_micro_time(text)
    assert moment.tzinfo is UTC
    assert moment == utc("2026-11-27T10:00:00.123456")


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="without a zone"):
        parse_micro_time("2026-11-27T10:00:00.123456")


@pytest.mark.parametrize(("duration", "seconds"), [(15.0, 15), (2.5, 3), (0.2, 1)])
def test_lease_seconds_round_up(duration: float, seconds: int) -> None:
    assert lease_seconds(duration) == seconds


# --- configuration -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "lease_duration", "renew_deadline", "retry_period"),
    [
        pytest.param("", 15.0, 10.0, 2.0, id="empty identity"),
        pytest.param(ME, 10.0, 10.0, 2.0, id="deadline not before expiry"),
        pytest.param(ME, 15.0, 2.0, 2.0, id="no retry before the deadline"),
        pytest.param(ME, 15.0, 10.0, 0.0, id="no retry period"),
    ],
)
def test_unsafe_settings_are_refused(
    identity: str, lease_duration: float, renew_deadline: float, retry_period: float
) -> None:
    with pytest.raises(ValueError, match=r"identity|retry_period"):
        LeaderElection(
            cast(client.ApiClient, None), "ns", "lease", identity, lease_duration, renew_deadline, retry_period
        )


def test_a_new_candidate_is_not_the_leader() -> None:
    election = LeaderElection(cast(client.ApiClient, None), "ns", "lease", ME, clock=well_within_the_lease)
    assert not election.is_leader
