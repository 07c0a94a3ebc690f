"""The scrubber replaces a secret where it stands as a whole value, never inside a longer word, and the log path
scrubs every value before the line is rendered as JSON (whose escapes would hide a secret holding `"` or `\\`)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from runner.errors import REDACTED, Scrubber
from runner.logs import configure_logging


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("expected", "expected"),
        ("the server expected e", f"the server expected {REDACTED}"),
        ("password=e", f"password={REDACTED}"),
        ("'e'", f"'{REDACTED}'"),
        ("e", REDACTED),
        ("user e: ok", f"user {REDACTED}: ok"),
        ("ée", "ée"),  # a letter of another script is a letter too
        ("e2e", "e2e"),
        ("snake_e_case", f"snake_{REDACTED}_case"),  # an underscore is no letter or digit
    ],
)
def test_a_one_letter_secret_is_scrubbed_only_where_it_stands_alone(text: str, expected: str) -> None:
    assert Scrubber(["e"])(text) == expected


def test_a_secret_whose_edges_are_no_letters_is_scrubbed_wherever_it_stands() -> None:
    scrub = Scrubber(["-x-", "ab!"])
    assert scrub("a-x-b") == f"a{REDACTED}b"
    assert scrub("ab!c") == f"{REDACTED}c"  # its last character is no letter: nothing after it can extend it
    assert scrub("cab!") == "cab!"  # its first is: "cab!" is another word


def test_a_longer_secret_inside_a_longer_word_is_left_as_it_is_and_scrubbed_where_whole() -> None:
    scrub = Scrubber(["s3cret"])
    assert scrub("s3crets and s3cret and xs3cret") == f"s3crets and {REDACTED} and xs3cret"


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    yield capsys
    structlog.reset_defaults()


@pytest.mark.parametrize("secret", ['pa"ss', "back\\slash", 'both"\\', "tab\there", "new\nline"])
def test_a_logged_secret_that_json_escapes_is_scrubbed_before_rendering(
    logged: pytest.CaptureFixture[str], secret: str
) -> None:
    configure_logging(Scrubber([secret]))
    log = structlog.get_logger("test")
    log.info("connect failed", error=f"auth for {secret} refused", nested={"items": [secret, 3]}, count=2)
    line = logged.readouterr().err
    rendered = json.loads(line)
    assert rendered["error"] == f"auth for {REDACTED} refused"
    assert rendered["nested"] == {"items": [REDACTED, 3]}
    assert rendered["count"] == 2
    assert secret not in line
    assert json.dumps(secret)[1:-1] not in line


def test_an_object_logged_by_mistake_is_scrubbed_as_its_text(logged: pytest.CaptureFixture[str]) -> None:
    configure_logging(Scrubber(['q"uote']))
    structlog.get_logger("test").warning("oops", value=ValueError('q"uote'))
    assert json.loads(logged.readouterr().err)["value"] == REDACTED
