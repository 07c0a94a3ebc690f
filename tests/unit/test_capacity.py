"""Caps on the Jobs running at once (reconciler.capacity): never more than the cap, each run once, in slot order."""

from __future__ import annotations

import random

from reconciler.capacity import ANNOTATION_CAPS, Capacity, Caps, keys_of


def job(name: str, keys: tuple[str, ...], namespace: str = "shop") -> dict[str, object]:
    return {"metadata": {"namespace": namespace, "name": name, "annotations": {ANNOTATION_CAPS: " ".join(keys)}}}


def slot(minute: int) -> str:
    return f"2026-12-07T02:{minute:02d}:00Z"


def test_a_cluster_cap_holds_the_runs_back_and_frees_places_in_slot_order() -> None:
    capacity = Capacity(Caps(cluster=2, server=None))
    runs = {f"db-{i}": keys_of("shop", f"db-{i}", f"claim/shop/db-{i}") for i in range(5)}
    held = {name: capacity.admit(("shop", name), slot(i), ("shop", f"{name}-job"), runs[name])
            for i, name in enumerate(runs)}  # fmt: skip
    assert [n for n, blocker in held.items() if blocker is None] == ["db-0", "db-1"]
    assert held["db-2"] == "the cap of 2 running backups and checks in the cluster"
    assert capacity.running["cluster:"] == 2
    # The Job of db-0 ends: the run that waited longest (db-2) is the one to look at, and a run due later (db-9)
    # that happens to be reconciled first does not take its place.
    assert capacity.seen(job("db-0-job", runs["db-0"]), active=False) == [("shop", "db-2")]
    late = keys_of("shop", "db-9", "claim/shop/db-9")
    blocker = capacity.admit(("shop", "db-9"), slot(9), ("shop", "db-9-job"), late)
    assert blocker is not None
    assert blocker.startswith("an earlier run (shop/db-2, due 2026-12-07T02:02:00Z)")
    assert capacity.admit(("shop", "db-2"), slot(2), ("shop", "db-2-job"), runs["db-2"]) is None
    assert capacity.running["cluster:"] == 2


def test_a_reservation_and_its_job_count_once() -> None:
    capacity = Capacity(Caps(cluster=1))
    keys = keys_of("shop", "db", "claim/shop/db")
    assert capacity.admit(("shop", "a"), slot(0), ("shop", "a-1"), keys) is None
    assert capacity.admit(("shop", "a"), slot(0), ("shop", "a-1"), keys) is None  # the same run, again: counted once
    capacity.seen(job("a-1", keys), active=True)  # its watch event after the reservation
    capacity.seen(job("a-1", keys), active=True)  # and an update
    assert capacity.running["cluster:"] == 1
    capacity.seen(job("a-1", keys), active=False)
    capacity.seen(job("a-1", keys), active=False)  # finished, then deleted: given back once
    assert capacity.running["cluster:"] == 0


def test_runs_waiting_on_one_server_do_not_hold_back_the_others() -> None:
    capacity = Capacity(Caps(cluster=3, server=1))
    same = [keys_of("shop", "orders-db", f"claim/shop/{n}") for n in ("a", "b")]
    other = keys_of("shop", "ledger-db", "claim/shop/c")
    assert capacity.admit(("shop", "a"), slot(0), ("shop", "a-1"), same[0]) is None
    blocker = capacity.admit(("shop", "b"), slot(0), ("shop", "b-1"), same[1])
    assert blocker == "the cap of 1 running backup or check per database server (shop/orders-db)"
    # b waits for its server; c, due later on another server, is not behind it.
    assert capacity.admit(("shop", "c"), slot(1), ("shop", "c-1"), other) is None
    assert capacity.seen(job("a-1", same[0]), active=False) == [("shop", "b")]


def test_a_check_counts_toward_everything_but_the_server() -> None:
    capacity = Capacity(Caps(server=1))
    backup = keys_of("shop", "orders-db", "claim/shop/orders")
    check = keys_of("shop", None, "claim/shop/orders")
    assert not any(k.startswith("server:") for k in check)
    assert capacity.admit(("shop", "nightly"), slot(0), ("shop", "n-1"), backup) is None
    assert capacity.admit(("shop", "nightly"), slot(1), ("shop", "n-v1"), check) is None


def test_never_more_than_the_caps_and_every_run_once_woken_only_by_the_jobs_that_end() -> None:
    rng = random.Random(18)
    caps = Caps(cluster=4, namespace=2, server=1, storage=3)
    capacity = Capacity(caps)
    runs = {}
    for i in range(60):
        namespace = f"team-{i % 5}"
        runs[(namespace, f"db-{i}")] = (slot(i % 50), keys_of(namespace, f"server-{i % 7}", f"store/s{i % 4}"))
    pending, running, started = set(runs), set[tuple[str, str]](), list[tuple[str, str]]()
    look = set(runs)  # the reconciles due: every run at first, then only those a finished Job names
    while pending or running:
        assert look or running, f"{len(pending)} runs wait and nothing will wake them"
        for who in rng.sample(sorted(look), len(look)):  # reconciles in any order
            when, keys = runs[who]
            if capacity.admit(who, when, (who[0], f"{who[1]}-job"), keys) is None:
                pending.discard(who)
                running.add(who)
                started.append(who)
        look = set()
        for key, count in capacity.running.items():
            limit = caps.limit(key)
            assert limit is None or count <= limit, (key, count)
        assert capacity.running["cluster:"] == len(running)
        if running:
            done = rng.choice(sorted(running))
            running.discard(done)
            look = set(capacity.seen(job(f"{done[1]}-job", runs[done][1], done[0]), active=False)) & pending
    assert sorted(started) == sorted(runs), "every run started, each once"


def test_a_run_whose_time_is_each_look_keeps_its_place_and_a_passed_over_earlier_run_is_woken() -> None:
    """An on-demand run's time is the moment of each look: it keeps the place it first took in line. And a woken run
    that must let an earlier one go first names it, so that nothing is left waiting with a place free."""
    capacity = Capacity(Caps(server=1))
    keys = {n: keys_of("shop", "orders-db", f"claim/shop/{n}") for n in ("a", "b", "c")}
    assert capacity.admit(("shop", "a"), slot(0), ("shop", "a-now"), keys["a"]) is None
    assert capacity.admit(("shop", "b"), slot(1), ("shop", "b-now"), keys["b"]) is not None
    assert capacity.admit(("shop", "c"), slot(2), ("shop", "c-now"), keys["c"]) is not None
    assert capacity.admit(("shop", "b"), slot(5), ("shop", "b-now"), keys["b"]) is not None  # b looks again, later
    assert capacity.seen(job("a-now", keys["a"]), active=False) == [("shop", "b")], "b still first in line"
    # Had c looked first (a watch event of its own), b is named to go first, and c waits.
    blocker = capacity.admit(("shop", "c"), slot(9), ("shop", "c-now"), keys["c"])
    assert blocker is not None
    assert blocker.startswith("an earlier run (shop/b")
    assert capacity.woken() == [("shop", "b")]
    assert capacity.woken() == []
    assert capacity.admit(("shop", "b"), slot(9), ("shop", "b-now"), keys["b"]) is None
    assert capacity.seen(job("b-now", keys["b"]), active=False) == [("shop", "c")]
    assert capacity.admit(("shop", "c"), slot(10), ("shop", "c-now"), keys["c"]) is None
