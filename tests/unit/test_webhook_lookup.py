"""Where the StatefulSet comes from: the synced cache, trusted for a miss while its watch is open; the API server
only when the cache cannot know; and never past the request's deadline. The API server is faked at our own seam
(the `read` and `list_pods` calls StatefulSets makes), never over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from common.informer import Event, Informer
from tests.fixtures import admission_review, databasebackup, statefulset
from webhook.database import StatefulSets
from webhook.lookup import Lookup
from webhook.metrics import Metrics
from webhook.reviews import parse_review


class FakeAPI:
    """The live GET and the Pod list: counted; `hang` never answers."""

    def __init__(self, *, hang: bool = False, found: dict[str, Any] | None = None) -> None:
        self.hang, self.found = hang, found
        self.reads: list[tuple[str, str]] = []

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((namespace, name))
        if self.hang:
            await asyncio.Event().wait()
        return self.found

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        return []

    async def list_statefulsets(self, namespace: str) -> list[dict[str, Any]]:
        return []


async def unused(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the informer is not run in these tests")


def finder(api: FakeAPI, *, synced: bool, watching: bool, grace: float = 5.0) -> StatefulSets:
    informer = Informer(name="statefulsets", list_call=unused)
    if synced:
        informer.synced.set()
    informer.watching = watching
    return StatefulSets(
        informer, api.read, api.list_pods, Metrics(), watch_grace=grace, list_statefulsets=api.list_statefulsets
    )


async def test_a_miss_in_a_synced_cache_whose_watch_is_open_is_not_found_without_asking_the_api_server() -> None:
    api = FakeAPI(found=statefulset())
    found = await finder(api, synced=True, watching=True, grace=0.05).find("shop", "example-db")
    assert found.statefulset is None
    assert found.error is None
    assert api.reads == []


async def test_a_statefulset_whose_watch_event_comes_during_the_grace_is_found_without_asking() -> None:
    api = FakeAPI()
    statefulsets = finder(api, synced=True, watching=True)
    lookup = asyncio.create_task(statefulsets.find("shop", "example-db"))
    await asyncio.sleep(0)  # the lookup is waiting on the watch now
    sts = statefulset()
    statefulsets.informer.store[("shop", "example-db")] = sts
    assert statefulsets.informer.handler is not None
    statefulsets.informer.handler(Event("ADDED", sts))
    found = await asyncio.wait_for(lookup, 30)
    assert found.statefulset is sts
    assert api.reads == []


async def test_before_the_first_sync_or_while_the_watch_is_down_a_miss_asks_the_api_server() -> None:
    for synced, watching in ((False, False), (True, False)):
        api = FakeAPI(found=statefulset())
        found = await finder(api, synced=synced, watching=watching).find("shop", "example-db")
        assert found.statefulset is not None
        assert api.reads == [("shop", "example-db")]


async def test_an_api_server_that_never_answers_gives_could_not_check_within_the_budget() -> None:
    api = FakeAPI(hang=True)
    lookup = Lookup(finder(api, synced=False, watching=False), budget=0.1)
    request = parse_review(admission_review(databasebackup()))
    found = await asyncio.wait_for(lookup.for_validation(request), 30)
    assert found is not None
    assert found.error == "no answer from the API server within 0.1 s"
    assert api.reads == [("shop", "example-db")]


class GatedAPI(FakeAPI):
    """Reads that answer only when the test opens the gate; one failure can be queued."""

    def __init__(self) -> None:
        super().__init__(found=statefulset())
        self.gate = asyncio.Event()
        self.fail: Exception | None = None

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((namespace, name))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.found


async def test_admissions_that_need_the_same_read_while_it_is_on_the_way_share_it_and_it_is_counted_once() -> None:
    api = GatedAPI()
    statefulsets = finder(api, synced=False, watching=False)
    lookups = [asyncio.create_task(statefulsets.find("shop", "example-db")) for _ in range(5)]
    other = asyncio.create_task(statefulsets.find("shop", "other-db"))
    await asyncio.sleep(0)
    api.gate.set()
    found = await asyncio.wait_for(asyncio.gather(*lookups, other), 30)
    assert all(database.statefulset is api.found for database in found)
    assert sorted(api.reads) == [("shop", "example-db"), ("shop", "other-db")]
    counted = statefulsets._metrics.kube_requests.labels("cache-miss")._value.get()
    assert counted == 2
    # Nothing is kept once answered: the next admission reads again.
    await statefulsets.find("shop", "example-db")
    assert len(api.reads) == 3


async def test_a_waiter_whose_deadline_passes_leaves_the_shared_read_to_the_others_and_failures_reach_each() -> None:
    api = GatedAPI()
    statefulsets = finder(api, synced=False, watching=False)
    impatient = asyncio.create_task(statefulsets.find("shop", "example-db"))
    patient = asyncio.create_task(statefulsets.find("shop", "example-db"))
    await asyncio.sleep(0)
    impatient.cancel()
    api.gate.set()
    assert (await asyncio.wait_for(patient, 30)).statefulset is api.found
    assert impatient.cancelled()
    api.fail, api.gate = TimeoutError(), asyncio.Event()
    failing = [asyncio.create_task(statefulsets.find("shop", "example-db")) for _ in range(2)]
    await asyncio.sleep(0)
    api.gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*failing), 30)
    assert [a.error for a in answers] == ["no answer from the API server (TimeoutError)"] * 2
    assert len(api.reads) == 2
