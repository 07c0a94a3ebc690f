"""Where the StatefulSet comes from: the synced cache, trusted for a miss while its watch is open; the API server
only when the cache cannot know; and never past the request's deadline. The API server is faked at our own seam
(the `read` and `list_pods` calls StatefulSets makes), never over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from common.informer import Event, Informer
from tests.fixtures import admission_review, databasebackup, statefulset
from webhook.admission import parse_review
from webhook.database import StatefulSets
from webhook.lookup import Lookup
from webhook.metrics import Metrics


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

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        raise AssertionError("not used here")


async def unused(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the informer is not run in these tests")


def finder(api: FakeAPI, *, synced: bool, watching: bool, grace: float = 5.0) -> StatefulSets:
    informer = Informer(name="statefulsets", list_call=unused)
    if synced:
        informer.synced.set()
    informer.watching = watching
    return StatefulSets(informer, api.read, api.list_pods, Metrics(), watch_grace=grace)


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
