"""The record of a backup's restore drills (runner.drills): one JSON object per line, oldest first, bounded."""

from __future__ import annotations

import json

from runner.drills import MAX_DRILLS, appended, parse


def test_a_drill_is_appended_as_one_line_after_the_others() -> None:
    first = appended("", {"time": "2026-12-01T00:00:00Z", "result": "Passed"})
    second = appended(first.decode(), {"time": "2026-12-08T00:00:00Z", "result": "Failed"})
    assert second.startswith(first)
    assert [d["result"] for d in parse(second.decode())] == ["Passed", "Failed"]
    assert second.decode().count("\n") == 2


def test_the_oldest_drills_go_beyond_the_bound_and_lines_that_are_no_drill_are_dropped() -> None:
    text = "".join(json.dumps({"n": n}) + "\n" for n in range(MAX_DRILLS))
    text = "not json\n[1, 2]\n" + text
    record = appended(text, {"n": MAX_DRILLS}).decode()
    numbers = [d["n"] for d in parse(record)]
    assert numbers == list(range(1, MAX_DRILLS + 1))
    assert "not json" not in record
