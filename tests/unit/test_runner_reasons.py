"""The runner's failure reasons: one enum, and the table in runner/errors.py that documents it, held together; and
every reason the runner names in its code is a member (a reason spelled as a loose string cannot drift again)."""

from __future__ import annotations

import re
from pathlib import Path

import runner.errors
from runner.errors import Reason

RUNNER = Path(runner.errors.__file__).parent


def test_the_reason_table_lists_exactly_the_enums_members() -> None:
    documented = re.findall(r"^\| `(\w+)` \|", runner.errors.__doc__ or "", re.MULTILINE)
    assert documented == [reason.value for reason in Reason]


def test_no_runner_module_spells_a_reason_as_a_string() -> None:
    spelled = re.compile(r'"(' + "|".join(reason.value for reason in Reason) + r')"')
    for path in sorted(RUNNER.glob("*.py")):
        code = path.read_text()
        if path.name == "errors.py":
            code = code.split("class Reason(StrEnum):", 1)[0]  # the table and the enum's own values
            code = re.sub(r'"""[\s\S]*?"""', "", code)
        assert not spelled.findall(code), f"{path.name} spells a reason as a string: use Reason"
