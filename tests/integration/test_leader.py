"""Leader election on a real API server: one leader at a time; a successor takes over once the lease expires, or at
once after a release; a leader whose Lease is taken, or who is cut off from the API server, stops.

Timing asserts are loose on purpose (a loaded 2-core machine); the ordering ones are exact, because they compare
times one clock wrote into the Lease. Measured times are logged as `measured` (see them with `pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import pytest
import structlog
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import body, closing_at_once, raw, timeout, untrusting
from hack.harness.controlplane import ControlPlane
from reconciler.leader import LeaderElection, LeadershipLost, parse_micro_time

LEASE = "dbb-reconciler"
log = structlog.get_logger("tests.leader")
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class Timing(TypedDict):
    lease_duration: float
    renew_deadline: float
    retry_period: float


FAST = Timing(lease_duration=2.0, renew_deadline=1.5, retry_period=0.3)
# A lease far longer than a release should take: a take-over within seconds can only be the release's doing.
LONG_LEASE = Timing(lease_duration=10.0, renew_deadline=8.0, retry_period=0.3)
# A wide gap between giving up (1.5 s) and expiry (3 s), so their order shows even on a loaded machine.
WIDE_GAP = Timing(lease_duration=3.0, renew_deadline=1.5, retry_period=0.3)


# --- helpers -----------------------------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polls state that another task changes
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def background(*coroutines: Coroutine[Any, Any, None]) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run coroutines as tasks for the block; cancel and await whatever is left, so no test leaks a task."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_lease(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    leases = client.CoordinationV1Api(api)
    return await raw(leases.read_namespaced_lease(LEASE, namespace, _preload_content=False, **timeout()))


@dataclass
class Candidate:
    """A LeaderElection and the leadership changes it reported, with their monotonic times."""

    election: LeaderElection
    changes: list[tuple[bool, float]] = field(default_factory=list)

    @classmethod
    def of(cls, api: client.ApiClient, namespace: str, name: str, timing: Timing) -> Candidate:
        candidate = cls(LeaderElection(api, namespace, LEASE, f"{name}_{uuid.uuid4().hex[:8]}", **timing))
        candidate.election.on_change = lambda leading: candidate.changes.append((leading, time.monotonic()))
        return candidate

    @property
    def identity(self) -> str:
        return self.election.identity

    @property
    def leading(self) -> bool:
        return self.election.is_leader

    def changed_at(self, leading: bool) -> float:
        return next(at for value, at in self.changes if value is leading)

    async def campaign(self) -> None:
        await self.election.acquire()
        await self.election.hold()


@dataclass
class Samples:
    count: int = 0
    both: int = 0  # samples with more than one leader: must stay 0


@contextlib.asynccontextmanager
async def sampling(*candidates: Candidate, every: float = 0.05) -> AsyncIterator[Samples]:
    """Look at every candidate's is_leader every 50 ms for the whole block."""
    samples = Samples()

    async def sample() -> None:
        while True:
            samples.count += 1
            if sum(candidate.leading for candidate in candidates) > 1:
                samples.both += 1
            await asyncio.sleep(every)

    async with background(sample()):
        yield samples


@dataclass
class Partition:
    """A TCP relay to the API server that can go silent as a network partition does: connections stay open, new ones
    are accepted, and nothing gets through in either direction. The failure is real; no HTTP is faked."""

    upstream_port: int
    silent: bool = False
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.append(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self.writers.append(upstream_writer)
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if not self.silent:
                    sink.write(data)
                    await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()  # one side gone: end the other too

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def partitionable(control_plane: ControlPlane) -> AsyncIterator[tuple[Partition, client.ApiClient]]:
    """A Partition in front of the API server, and a client that talks through it."""
    partition = Partition(control_plane.api_port)
    partition.server = await asyncio.start_server(partition._relay, "127.0.0.1", 0)
    try:
        document = yaml.safe_load(control_plane.kubeconfig.read_text())
        # The serving certificate names 127.0.0.1, so TLS verifies through the relay as it does directly.
        document["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{partition.port}"
        api = closing_at_once(untrusting(await config.new_client_from_config_dict(document)))
        async with api:
            yield partition, api
    finally:
        await partition.close()


@pytest.fixture(params=[None, "Pacific/Kiritimati", "Pacific/Pago_Pago"], ids=["process-zone", "utc+14", "utc-11"])
def process_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """The process's local time zone, moved far from UTC: local time written with a `Z` would be off by hours."""
    zone: str | None = request.param
    if zone is None:
        yield None
        return
    with monkeypatch.context() as patch:
        patch.setenv("TZ", zone)
        time.tzset()
        try:
            assert datetime.now().astimezone().utcoffset() != timedelta(0)  # the zone really applies
            yield zone
        finally:
            patch.undo()
            time.tzset()


# --- one candidate -----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("process_zone")
async def test_a_candidate_acquires_and_renews_with_true_utc_times(
    api_client: client.ApiClient, namespace: str
) -> None:
    solo = Candidate.of(api_client, namespace, "solo", FAST)
    async with asyncio.timeout(10):
        await solo.election.acquire()
    assert solo.leading
    assert [leading for leading, _ in solo.changes] == [True]

    spec = (await read_lease(api_client, namespace))["spec"]
    assert spec["holderIdentity"] == solo.identity
    assert spec["leaseDurationSeconds"] == 2
    assert spec["leaseTransitions"] == 0
    for name in ("acquireTime", "renewTime"):
        assert MICRO_TIME.fullmatch(spec[name]), spec[name]
        assert abs(parse_micro_time(spec[name]) - datetime.now(UTC)) < timedelta(seconds=5), spec[name]

    async with background(solo.election.hold()):
        await until(lambda: solo.election.renewals >= 3)
        renewed = (await read_lease(api_client, namespace))["spec"]
        assert solo.leading
    assert parse_micro_time(renewed["renewTime"]) > parse_micro_time(spec["renewTime"])
    assert abs(parse_micro_time(renewed["renewTime"]) - datetime.now(UTC)) < timedelta(seconds=5)
    assert renewed["acquireTime"] == spec["acquireTime"]
    assert renewed["leaseTransitions"] == 0
    await solo.election.release()


async def test_release_leaves_the_lease_vacant_with_a_one_second_lease(
    api_client: client.ApiClient, namespace: str
) -> None:
    solo = Candidate.of(api_client, namespace, "solo", FAST)
    async with asyncio.timeout(10):
        await solo.election.acquire()
    await solo.election.release()
    assert not solo.leading
    assert [leading for leading, _ in solo.changes] == [True, False]
    spec = (await read_lease(api_client, namespace))["spec"]
    assert spec.get("holderIdentity") is None
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0

    await solo.election.release()  # a second release finds nothing of ours: no write, no second notice
    assert [leading for leading, _ in solo.changes] == [True, False]
    assert (await read_lease(api_client, namespace))["spec"] == spec


async def test_a_release_while_still_holding_ends_hold_without_a_comeback(
    api_client: client.ApiClient, namespace: str
) -> None:
    solo = Candidate.of(api_client, namespace, "solo", FAST)
    async with asyncio.timeout(10):
        await solo.election.acquire()
    async with background(solo.election.hold()) as (holding,):
        # Renewals and the release race over the same Lease; whichever writes second gets 409 and reads again.
        for _ in range(5):
            await asyncio.sleep(FAST["retry_period"] / 5)
        await solo.election.release()
        with pytest.raises(LeadershipLost, match="released"):
            async with asyncio.timeout(10):
                await holding
    assert not solo.leading
    assert [leading for leading, _ in solo.changes] == [True, False]
    assert (await read_lease(api_client, namespace))["spec"].get("holderIdentity") is None


# --- two candidates ----------------------------------------------------------------------------------------------


async def test_one_leader_at_a_time_and_a_take_over_once_the_lease_expires(
    api_client: client.ApiClient, namespace: str
) -> None:
    first = Candidate.of(api_client, namespace, "first", FAST)
    second = Candidate.of(api_client, namespace, "second", FAST)
    async with sampling(first, second) as samples, background(first.campaign()) as (first_task,):
        await until(lambda: first.leading)
        async with background(second.campaign()):
            # The second keeps trying, the first keeps renewing: five of each, counted, not waited for.
            renewals = first.election.renewals
            await until(lambda: second.election.attempts >= 5 and first.election.renewals >= renewals + 5)
            assert first.leading
            assert second.changes == []

            first_task.cancel()  # a crash: no release
            with contextlib.suppress(asyncio.CancelledError):
                await first_task
            stopped = time.monotonic()
            last_renewal = parse_micro_time((await read_lease(api_client, namespace))["spec"]["renewTime"])
            await until(lambda: second.leading, seconds=15)
            take_over = second.changed_at(True) - stopped

    spec = (await read_lease(api_client, namespace))["spec"]
    assert spec["holderIdentity"] == second.identity
    assert spec["leaseTransitions"] == 1
    # Exact, whatever the load: the successor's acquireTime is past the first's last renewal plus the lease.
    assert parse_micro_time(spec["acquireTime"]) - last_renewal > timedelta(seconds=FAST["lease_duration"])
    assert samples.both == 0
    assert samples.count > 20  # it really sampled throughout
    assert take_over < FAST["lease_duration"] + 5
    log.info("measured", what="take_over_after_expiry_seconds", seconds=round(take_over, 3))


async def test_after_a_release_the_other_candidate_takes_over_at_once(
    api_client: client.ApiClient, namespace: str
) -> None:
    first = Candidate.of(api_client, namespace, "first", LONG_LEASE)
    second = Candidate.of(api_client, namespace, "second", LONG_LEASE)
    async with sampling(first, second) as samples, background(first.campaign()) as (first_task,):
        await until(lambda: first.leading)
        async with background(second.campaign()):
            await until(lambda: second.election.attempts >= 3)  # three looks at a Lease that is held
            assert first.leading
            assert second.changes == []

            first_task.cancel()  # graceful shutdown: stop the work, then release
            with contextlib.suppress(asyncio.CancelledError):
                await first_task
            releasing = time.monotonic()
            await first.election.release()
            await until(lambda: second.leading, seconds=LONG_LEASE["lease_duration"] - 2)
            take_over = second.changed_at(True) - releasing

    assert [leading for leading, _ in first.changes] == [True, False]
    spec = (await read_lease(api_client, namespace))["spec"]
    assert spec["holderIdentity"] == second.identity
    assert spec["leaseTransitions"] == 1
    assert samples.both == 0
    assert take_over < LONG_LEASE["lease_duration"] / 2  # expiry would have taken 10 s
    log.info("measured", what="take_over_after_release_seconds", seconds=round(take_over, 3))


# --- losing the Lease --------------------------------------------------------------------------------------------


async def overwrite_holder(api: client.ApiClient, namespace: str, holder: str) -> None:
    """Replace the Lease with one naming another holder, freshly renewed, as another writer would."""
    leases = client.CoordinationV1Api(api)
    while True:
        lease = await read_lease(api, namespace)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease["spec"].update(holderIdentity=holder, acquireTime=now, renewTime=now)
        try:
            await raw(
                leases.replace_namespaced_lease(LEASE, namespace, body(lease), _preload_content=False, **timeout())
            )
            return
        except ApiException as error:
            if error.status != 409:  # the leader renewed in between: read again
                raise


async def test_a_leader_whose_lease_is_overwritten_stops_promptly(api_client: client.ApiClient, namespace: str) -> None:
    leader = Candidate.of(api_client, namespace, "leader", FAST)
    async with asyncio.timeout(10):
        await leader.election.acquire()
    async with background(leader.election.hold()) as (holding,):
        await until(lambda: leader.election.renewals >= 2)
        await overwrite_holder(api_client, namespace, "intruder")
        overwritten = time.monotonic()
        with pytest.raises(LeadershipLost, match="intruder"):
            async with asyncio.timeout(10):
                await holding
    lost_after = leader.changed_at(False) - overwritten

    assert not leader.leading
    assert [leading for leading, _ in leader.changes] == [True, False]
    assert lost_after < FAST["retry_period"] + 3
    log.info("measured", what="lost_after_overwrite_seconds", seconds=round(lost_after, 3))
    await leader.election.release()  # not ours any more: left alone
    assert (await read_lease(api_client, namespace))["spec"]["holderIdentity"] == "intruder"


async def test_a_leader_cut_off_from_the_api_server_stops_before_another_takes_over(
    control_plane: ControlPlane, api_client: client.ApiClient, namespace: str
) -> None:
    async with partitionable(control_plane) as (partition, far_api):
        far = Candidate.of(far_api, namespace, "far", WIDE_GAP)
        near = Candidate.of(api_client, namespace, "near", WIDE_GAP)
        async with sampling(far, near) as samples, background(far.campaign()) as (far_task,):
            await until(lambda: far.leading)
            async with background(near.campaign()):
                # Both at work through the relay and beside it: the far one renews, the near one finds it held.
                renewals = far.election.renewals
                await until(lambda: near.election.attempts >= 3 and far.election.renewals >= renewals + 3)
                assert far.leading

                partition.silent = True
                cut = time.monotonic()
                with pytest.raises(LeadershipLost, match="could not renew"):
                    async with asyncio.timeout(15):
                        await far_task
                await until(lambda: near.leading, seconds=15)

    gave_up = far.changed_at(False) - cut
    took_over = near.changed_at(True) - cut
    assert far.changed_at(False) < near.changed_at(True)
    assert samples.both == 0
    assert gave_up < WIDE_GAP["renew_deadline"] + 3
    assert took_over < WIDE_GAP["lease_duration"] + 5
    log.info("measured", what="gave_up_after_partition_seconds", seconds=round(gave_up, 3))
    log.info("measured", what="taken_over_after_partition_seconds", seconds=round(took_over, 3))
