"""Which archived binlogs `run --prune-binlogs` deletes (runner.archiveprune.prunable): none a kept backup needs,
never the open one, and the gap records no replay can cross any more."""

from __future__ import annotations

import json
from dataclasses import replace

from runner.archiveprune import Pruned, prunable
from runner.archivestore import Entry, Gap
from runner.binlog import Coordinates
from runner.manifest import Manifest
from tests.unit.test_runner_binlog import MANIFEST


def entry(name: str, *, closed: bool = True) -> Entry:
    return Entry(name, name + (".zst" if closed else ".partial.zst"), closed, None, None, 100, 50, "ab")


def backup_at(file: str | None) -> Manifest:
    written = Manifest.from_json(json.dumps(MANIFEST))
    return replace(written, binlog=Coordinates(file, 4, None) if file else None)


INDEX = {n: entry(n) for n in ("b.000002", "b.000003", "b.000004", "b.000005")} | {
    "b.000006": entry("b.000006", closed=False)
}


def test_binlogs_wholly_before_the_oldest_kept_backup_s_go_and_the_rest_stay() -> None:
    oldest, entries, gaps = prunable(INDEX, [], [backup_at("b.000005"), backup_at("b.000004"), backup_at(None)])

    assert oldest == "b.000004"
    assert [e.file for e in entries] == ["b.000002", "b.000003"]
    assert gaps == []


def test_the_open_binlog_and_everything_stay_without_a_kept_backup_with_coordinates() -> None:
    assert prunable(INDEX, [], [backup_at(None)]) == (None, [], [])
    assert [e.file for e in prunable(INDEX, [], [backup_at("b.000009")])[1]] == [
        "b.000002",
        "b.000003",
        "b.000004",
        "b.000005",
    ]


def test_a_gap_before_the_oldest_kept_backup_goes_with_the_partial_it_lists_and_a_later_one_stays() -> None:
    gapped = {"b.000002": entry("b.000002", closed=False), "b.000004": entry("b.000004"), "b.000005": entry("b.000005")}
    old = Gap(None, "b.000002", "b.000003", "b.000004", "2026-12-07T10:00:00Z")
    new = Gap("b.000004", "b.000005", "b.000005", "b.000006", "2026-12-07T11:00:00Z")

    oldest, entries, gaps = prunable(gapped, [old, new], [backup_at("b.000004")])

    assert oldest == "b.000004"
    assert [e.file for e in entries] == ["b.000002"]
    assert gaps == [old]
    assert Pruned(("b.000002",), 50, oldest).result() == {"pruned": 1, "prunedBytes": 50, "keptFrom": "b.000004"}
