"""`basepick.choose_base`: which base backup a restore to a point starts from with --pick-base-backup, and the
refusal when none ended before the point; `naming.base_prefix`, the name prefix it looks beside."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from runner.basebackup import BaseManifest
from runner.basepick import choose_base
from runner.errors import Reason, RunnerError
from runner.manifest import Owner
from runner.naming import base_prefix
from tests.unit.test_runner_pgpitr import manifest

OURS = Owner("shop", "nightly", "uid-1")
MONDAY = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def base(day: int, owner: Owner | None = OURS) -> tuple[str, BaseManifest]:
    """The base backup that ended `day` days after MONDAY (its name from its start, a minute earlier)."""
    end = MONDAY + timedelta(days=day)
    file = f"app-{(end - timedelta(minutes=1)).strftime('%Y%m%dT%H%M%SZ')}.base.tar.zst"
    return file, replace(manifest(), file=file, end=end.isoformat(), owner=owner)


def test_the_newest_base_backup_that_ended_before_the_point_is_chosen() -> None:
    shelf = dict([base(0), base(1), base(2)])

    chosen = choose_base("app", shelf, MONDAY + timedelta(days=1, hours=5), ("shop", "nightly"))

    assert chosen == base(1)[0]


def test_a_base_backup_ending_exactly_at_the_point_is_chosen() -> None:
    assert choose_base("app", dict([base(0), base(1)]), MONDAY + timedelta(days=1), None) == base(1)[0]


def test_another_owner_s_or_an_unreadable_base_backup_is_never_chosen() -> None:
    theirs, unreadable = base(2, Owner("shop", "other", "uid-2")), (base(3)[0], None)
    shelf = dict([base(1), theirs, unreadable])

    chosen = choose_base("app", shelf, MONDAY + timedelta(days=4), ("shop", "nightly"))

    assert chosen == base(1)[0]
    assert choose_base("app", shelf, MONDAY + timedelta(days=4), None) == theirs[0], "without --owner, any"


def test_a_point_before_every_base_backup_s_end_is_refused_naming_the_oldest() -> None:
    shelf = dict([base(2), base(1)])

    with pytest.raises(RunnerError) as refused:
        choose_base("app", shelf, MONDAY, ("shop", "nightly"))

    assert refused.value.reason is Reason.INVALID_ARGUMENTS
    oldest = base(1)
    assert refused.value.message == (
        "--point-in-time 2026-12-07T10:00:00Z is before every base backup of shop/nightly named app-* ended (the "
        f"oldest, {oldest[0]}, ended {oldest[1].end}): choose a later time"
    )


def test_no_base_backup_of_the_owner_is_refused() -> None:
    with pytest.raises(RunnerError, match="no base backup of shop/nightly named app-"):
        choose_base("app", dict([base(1, None)]), MONDAY + timedelta(days=3), ("shop", "nightly"))


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("app-20261207T100000Z.base.tar.zst", "app"),
        ("app-2-20261207T100000Z.base.tar.zst.enc", "app-2"),
        ("app-20261207T100000Z.base.tar.zst.json", None),
        ("app-20261207T100000Z.dump", None),
    ],
)
def test_a_base_backup_s_name_prefix_is_what_precedes_its_time(name: str, prefix: str | None) -> None:
    assert base_prefix(name) == prefix
