"""Leader election on a coordination.k8s.io/v1 Lease: only the replica holding the Lease reconciles.

    election = LeaderElection(api, namespace, "dbb-reconciler", identity=f"{hostname}_{uuid4().hex[:8]}")
    await election.acquire()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(election.hold())  # raises LeadershipLost: the group cancels the work
            group.create_task(reconcile())
    finally:
        await election.release()

The protocol is client-go's (`tools/leaderelection`):
- a candidate takes the Lease when it has no holder, or when `renewTime + leaseDurationSeconds < now` by its own clock;
- the holder renews every `retry_period`, and gives up (LeadershipLost) once `renew_deadline` has passed since its last
  successful renewal: before `lease_duration`, so it has stopped before anyone else may take over;
- every write carries the resourceVersion it was decided on, so of two candidates deciding at once only one write
  lands; the other gets 409, reads again and decides again;
- `release()` clears the holder and shortens the lease to 1 s (client-go's ReleaseOnCancel): a successor need not
  wait out the lease.

Why not `kubernetes_asyncio.leaderelection`: it writes renewTime as local time with a `Z` (outside UTC, the others
misjudge expiry by hours) and returns after losing the lease instead of telling the work to stop.

Expiry is judged from the holder's renewTime by the candidate's clock, so it assumes clocks agree to well within
`lease_duration - renew_deadline`.

The decisions are the pure functions below, of (Lease, identity, now); LeaderElection does the I/O around them.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypedDict

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import body, raw, timeout

__all__ = [
    "LeaderElection",
    "LeadershipLost",
    "LeaseSpec",
    "Record",
    "Standing",
    "claim",
    "expiry",
    "format_micro_time",
    "lease_seconds",
    "parse_micro_time",
    "released",
    "renewal",
    "renewal_overdue",
    "standing",
]

log = structlog.get_logger("reconciler.leader")

# Writes that lose a race (409) are decided again at once, a few times, before waiting a retry period: a Lease that
# keeps changing under us is someone else's busy Lease, not ours to fight for.
_CONFLICT_RETRIES: Final = 3
# Failures worth retrying: the API server's answers, the network, our own request timeouts, unreadable bodies.
_TRANSIENT: Final = (ApiException, aiohttp.ClientError, TimeoutError, OSError, ValueError)


class LeadershipLost(Exception):
    """We no longer hold the Lease (or cannot show that we do): stop all work that needs it."""


# --- the Lease, parsed -------------------------------------------------------------------------------------------


class LeaseSpec(TypedDict, total=False):
    """coordination.k8s.io/v1 LeaseSpec, the fields leader election writes."""

    holderIdentity: str | None
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


@dataclass(frozen=True)
class Record:
    """What a Lease says about its holder."""

    holder: str  # "" when nobody holds it
    duration: timedelta | None
    acquired: datetime | None
    renewed: datetime | None
    transitions: int = 0

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        seconds = spec.get("leaseDurationSeconds")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=timedelta(seconds=int(seconds)) if seconds is not None else None,
            acquired=_optional_time(spec.get("acquireTime")),
            renewed=_optional_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def format_micro_time(moment: datetime) -> str:
    """A MicroTime as the API server writes it: UTC, six fraction digits, `Z`. A naive datetime is refused rather
    than guessed at: guessing local time as UTC is exactly the bug of the stock helper."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a naive datetime has no place in a Lease: {moment!r}")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> datetime:
    """A MicroTime (or any RFC 3339 time) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"a Lease time without a zone: {text!r}")
    return moment.astimezone(UTC)


def _optional_time(value: object) -> datetime | None:
    return parse_micro_time(str(value)) if value else None


def lease_seconds(lease_duration: float) -> int:
    """leaseDurationSeconds is whole seconds: round up, so others never wait less than we meant."""
    return max(1, math.ceil(lease_duration))


# --- the decisions -------------------------------------------------------------------------------------------------


class Standing(enum.Enum):
    MINE = "mine"
    VACANT = "vacant"  # no holder: released, or written by hand without one
    EXPIRED = "expired"  # a holder that stopped renewing
    HELD = "held"  # another holder, still within its lease


def expiry(record: Record, default_duration: timedelta) -> datetime | None:
    """When the holder's lease runs out; None when the Lease carries no time to judge by. The Lease's own duration
    counts (it is what the holder promised to renew within); ours only stands in when it has none."""
    last = record.renewed or record.acquired
    if last is None:
        return None
    return last + (record.duration if record.duration is not None else default_duration)


def standing(record: Record, identity: str, now: datetime, default_duration: timedelta) -> Standing:
    if not record.holder:
        return Standing.VACANT
    if record.holder == identity:
        return Standing.MINE
    ends = expiry(record, default_duration)
    # Strictly past the end, as client-go: at the very instant of expiry the holder may still be renewing.
    if ends is None or ends < now:
        return Standing.EXPIRED
    return Standing.HELD


def claim(record: Record | None, identity: str, now: datetime, seconds: int) -> LeaseSpec | None:
    """The spec that makes (or keeps) `identity` the holder, or None while someone else validly holds the Lease.
    `record` is None when there is no Lease yet."""
    if record is None:
        return _holder_spec(identity, seconds, acquired=now, renewed=now, transitions=0)
    match standing(record, identity, now, timedelta(seconds=seconds)):
        case Standing.MINE:
            return renewal(record, identity, now, seconds)
        case Standing.VACANT | Standing.EXPIRED:
            # A new holder: a new acquireTime, and one more transition (client-go counts a take-over from nobody too).
            return _holder_spec(identity, seconds, acquired=now, renewed=now, transitions=record.transitions + 1)
        case Standing.HELD:
            return None


def renewal(record: Record, identity: str, now: datetime, seconds: int) -> LeaseSpec | None:
    """The holder's renewal, or None when the Lease is no longer ours. A holder never re-takes a Lease it lost, even an
    expired or vacant one: its work has to stop first, and acquire() again decides afresh."""
    if record.holder != identity:
        return None
    return _holder_spec(identity, seconds, acquired=record.acquired or now, renewed=now, transitions=record.transitions)


def released(record: Record, now: datetime) -> LeaseSpec:
    """client-go's ReleaseOnCancel: no holder and a 1 s lease, so the next candidate takes over at its next try."""
    return LeaseSpec(
        holderIdentity=None,
        leaseDurationSeconds=1,
        acquireTime=format_micro_time(now),
        renewTime=format_micro_time(now),
        leaseTransitions=record.transitions,
    )


def renewal_overdue(renewed: datetime, now: datetime, renew_deadline: timedelta) -> bool:
    """True once the holder has gone `renew_deadline` without a renewal: it must assume the Lease is lost."""
    return now - renewed >= renew_deadline


def _holder_spec(identity: str, seconds: int, *, acquired: datetime, renewed: datetime, transitions: int) -> LeaseSpec:
    return LeaseSpec(
        holderIdentity=identity,
        leaseDurationSeconds=seconds,
        acquireTime=format_micro_time(acquired),
        renewTime=format_micro_time(renewed),
        leaseTransitions=transitions,
    )


# --- the I/O -----------------------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LeaderElection:
    """One candidate for one Lease. See the module docstring for the protocol and the intended use."""

    api: client.ApiClient
    namespace: str
    name: str  # Lease name, e.g. "dbb-reconciler"
    identity: str  # e.g. f"{hostname}_{uuid4().hex[:8]}"
    lease_duration: float = 15.0  # seconds another candidate waits after the last renew before taking over
    renew_deadline: float = 10.0  # the leader gives up if it could not renew for this long
    retry_period: float = 2.0  # how often candidates try / the leader renews
    clock: Callable[[], datetime] = _utc_now  # injected for tests
    on_change: Callable[[bool], None] | None = None  # called with True on acquire, False on loss/release
    # What this candidate has done, for whoever watches it (tests wait for these, never for time): the Lease read and
    # judged by acquire(), taken or not, and renewals written.
    attempts: int = field(default=0, init=False)
    renewals: int = field(default=0, init=False)
    # The Lease as our last successful write returned it: renewals write on top of its resourceVersion without
    # reading first; a 409 then says someone else wrote, and only then do we read.
    _lease: dict[str, Any] | None = field(default=None, init=False, repr=False)
    # The renewTime of our last successful write as holder; None while we do not hold the Lease.
    _renewed: datetime | None = field(default=None, init=False, repr=False)
    # When the API server last answered a read or write of the Lease (a 404 on read counts): a standby that sees
    # the Lease is a healthy follower; one that cannot could not take over if the leader went.
    _seen: datetime | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("identity must not be empty: an empty holderIdentity means a vacant Lease")
        # The holder must give up before anyone may take over, and must get at least one retry before giving up.
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "need 0 < retry_period < renew_deadline < lease_duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )

    @property
    def is_leader(self) -> bool:
        # Lapses by itself at renew_deadline, whether or not hold() is running to notice: after that, another
        # candidate may be about to take over.
        renewed = self._renewed
        return renewed is not None and not renewal_overdue(renewed, self.clock(), self._renew_deadline)

    @property
    def in_contact(self) -> bool:
        """Whether the Lease was read or written within `renew_deadline`: true of a leader that renews and of a
        standby that watches the holder; false of either once the API server stops answering."""
        seen = self._seen
        return seen is not None and not renewal_overdue(seen, self.clock(), self._renew_deadline)

    async def acquire(self) -> None:
        """Return once we hold the Lease (creating it if absent). Retries every retry_period, for ever."""
        log.info("lease wanted", lease=self._key, identity=self.identity)
        while True:
            try:
                if await self._try_claim():
                    break
            except _TRANSIENT as error:
                log.warning("lease acquire failed", lease=self._key, error=_describe(error))
            # Jitter as client-go's (factor 1.2): candidates started together drift apart.
            await asyncio.sleep(self.retry_period * random.uniform(1.0, 1.2))  # noqa: S311
        log.info("lease acquired", lease=self._key, identity=self.identity)
        self._notify(True)

    async def hold(self) -> None:
        """Renew every retry_period. Never returns normally: raises LeadershipLost when renewal failed for
        renew_deadline, when the Lease names another holder (or was deleted), or after release(). Cancelling it
        stops renewing but keeps the Lease until it expires (is_leader turns False at renew_deadline): release()
        hands it over at once."""
        if self._renewed is None:
            raise LeadershipLost("hold() without the Lease: acquire() it first")
        try:
            while True:
                await asyncio.sleep(self.retry_period)
                await self._renew()
        except LeadershipLost as lost:
            log.warning("leadership lost", lease=self._key, identity=self.identity, reason=str(lost))
            self._step_down()
            self._lease = None
            raise

    async def release(self) -> None:
        """On graceful shutdown, after the work has stopped: if we hold the Lease, leave it vacant with a 1 s lease so
        another candidate takes over at once. Best effort and bounded by renew_deadline: if it fails, the Lease
        simply expires."""
        # Stop claiming leadership before the write: once it lands, a successor may start at once.
        self._step_down()
        try:
            async with asyncio.timeout(self.renew_deadline):
                await self._write_release()
        except _TRANSIENT as error:
            log.warning("lease release failed", lease=self._key, error=_describe(error))
        finally:
            self._lease = None

    # --- steps ---------------------------------------------------------------------------------------------------

    async def _try_claim(self) -> bool:
        """One attempt to become (or stay) the holder; False while another holder's lease runs."""
        for _ in range(_CONFLICT_RETRIES):
            lease = await self._read()
            record = Record.of(lease) if lease is not None else None
            now = self.clock()
            spec = claim(record, self.identity, now, self._seconds)
            self.attempts += 1
            if spec is None:
                assert record is not None  # only an existing Lease can be someone else's
                log.debug("lease held", lease=self._key, holder=record.holder, renewed=_iso(record.renewed))
                return False
            try:
                self._lease = await (self._create(spec) if lease is None else self._replace(lease, spec))
            except ApiException as error:
                # 409: another candidate wrote (or created) first. 404 on replace: deleted since we read. Either
                # way, read again and decide again.
                if error.status == 409 or (error.status == 404 and lease is not None):
                    continue
                raise
            self._renewed = now
            return True
        return False

    async def _renew(self) -> None:
        """Renew, retrying until renew_deadline has passed since the last successful renewal."""
        if self._renewed is None:
            raise LeadershipLost("released")
        deadline = self._renewed + self._renew_deadline
        while True:
            left = (deadline - self.clock()).total_seconds()
            if left <= 0:
                raise LeadershipLost(f"could not renew the Lease for {self.renew_deadline}s")
            try:
                # A request that hangs must not keep us "leading" past the deadline.
                async with asyncio.timeout(left):
                    await self._write_renewal()
                return
            except _TRANSIENT as error:
                log.warning("lease renewal failed", lease=self._key, error=_describe(error), seconds_left=left)
            await asyncio.sleep(min(self.retry_period, max(0.0, (deadline - self.clock()).total_seconds())))

    async def _write_renewal(self) -> None:
        lease = self._lease
        for _ in range(_CONFLICT_RETRIES):
            if lease is None:
                raise LeadershipLost("the Lease was deleted")
            record = Record.of(lease)
            now = self.clock()
            spec = renewal(record, self.identity, now, self._seconds)
            if spec is None:
                # A vacant Lease was released: by us (release() raced this renewal) or for us (by hand).
                raise LeadershipLost(f"the Lease is held by {record.holder}" if record.holder else "released")
            try:
                self._lease = await self._replace(lease, spec)
                self.renewals += 1
                # A release() that ran while this write was on its way has the last word: no comeback.
                if self._renewed is not None:
                    self._renewed = now
                return
            except ApiException as error:
                if error.status == 404:
                    raise LeadershipLost("the Lease was deleted") from None
                if error.status != 409:
                    raise
            # Someone else wrote the Lease since our last write: see who holds it now.
            lease = await self._read()
        raise ApiException(status=409, reason="the Lease kept changing under us")

    async def _write_release(self) -> None:
        lease = self._lease
        for _ in range(_CONFLICT_RETRIES):
            if lease is None:
                lease = await self._read()
                if lease is None:
                    return
            record = Record.of(lease)
            if record.holder != self.identity:
                return  # not ours (any more): nothing to release
            try:
                await self._replace(lease, released(record, self.clock()))
                log.info("lease released", lease=self._key, identity=self.identity)
                return
            except ApiException as error:
                if error.status == 404:
                    return
                if error.status != 409:
                    raise
            lease = None  # our copy was stale: read again

    # --- the API -------------------------------------------------------------------------------------------------

    async def _read(self) -> dict[str, Any] | None:
        try:
            lease = await raw(
                self._leases.read_namespaced_lease(self.name, self.namespace, _preload_content=False, **self._timeout)
            )
        except ApiException as error:
            if error.status == 404:
                self._seen = self.clock()
                return None
            raise
        self._seen = self.clock()
        return lease

    async def _create(self, spec: LeaseSpec) -> dict[str, Any]:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": dict(spec),
        }
        created = await raw(
            self._leases.create_namespaced_lease(self.namespace, body(lease), _preload_content=False, **self._timeout)
        )
        self._seen = self.clock()
        return created

    async def _replace(self, lease: Mapping[str, Any], spec: LeaseSpec) -> dict[str, Any]:
        # The metadata we read carries the resourceVersion that makes this write conditional. managedFields stay
        # out: left unset, the server keeps its own. Spec fields we do not write (e.g. preferredHolder) are kept.
        metadata = {key: value for key, value in lease["metadata"].items() if key != "managedFields"}
        replacement = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {**(lease.get("spec") or {}), **spec},
        }
        replaced = await raw(
            self._leases.replace_namespaced_lease(
                self.name, self.namespace, body(replacement), _preload_content=False, **self._timeout
            )
        )
        self._seen = self.clock()
        return replaced

    # --- small parts ---------------------------------------------------------------------------------------------

    @property
    def _leases(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self.api)

    @property
    def _timeout(self) -> dict[str, Any]:
        # No single request may outlast the renew deadline; hold() bounds renewals more tightly still.
        return timeout(connect=min(5.0, self.renew_deadline), read=self.renew_deadline)

    @property
    def _seconds(self) -> int:
        return lease_seconds(self.lease_duration)

    @property
    def _renew_deadline(self) -> timedelta:
        return timedelta(seconds=self.renew_deadline)

    @property
    def _key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _step_down(self) -> None:
        """No longer the leader; tell on_change once, however many ways we learn of it."""
        was_leader = self._renewed is not None
        self._renewed = None
        if was_leader:
            self._notify(False)

    def _notify(self, leading: bool) -> None:
        if self.on_change is not None:
            self.on_change(leading)


def _iso(moment: datetime | None) -> str | None:
    return format_micro_time(moment) if moment is not None else None


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__)[:300]
