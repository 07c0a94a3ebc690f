"""Reading a kind's JSON into typed values, and reporting what is wrong with it, the same way for every kind.

A parser reads with `Reader`, which records a `FieldError` for each value of the wrong shape
(`spec.suspend: must be a boolean, not "yes"`) instead of stopping at the first, so a user sees every problem in
one `kubectl apply`; `join_errors` makes them one message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

__all__ = ["FieldError", "Reader", "join_errors", "or_default", "show"]


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


E = TypeVar("E", bound=StrEnum)


T = TypeVar("T")


def or_default(value: T | None, default: T) -> T:
    return default if value is None else value


class Reader:
    """Reads typed values out of one JSON object, recording a FieldError for each one of the wrong shape."""

    def __init__(self, raw: Mapping[str, Any], path: str, errors: list[FieldError]) -> None:
        self.raw, self.path, self.errors = raw, path, errors

    def _get(self, key: str, required: bool) -> Any:
        value = self.raw.get(key)
        if value is None and required:
            self.errors.append(FieldError(f"{self.path}.{key}", "is required"))
        return value

    def _wrong(self, key: str, kind: str, value: object) -> None:
        self.errors.append(FieldError(f"{self.path}.{key}", f"must be {kind}, not {show(value)}"))

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None or isinstance(value, str):
            if required and value == "":
                self.errors.append(FieldError(f"{self.path}.{key}", "must not be empty"))
                return None
            return value
        self._wrong(key, "a string", value)
        return None

    def boolean(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is None or isinstance(value, bool):
            return value
        self._wrong(key, "a boolean (true or false)", value)
        return None

    def integer(self, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
        value = self._get(key, False)
        if value is None:
            return None
        # JSON has one number type; 3.0 is an integer, 3.5 and true are not.
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            self._wrong(key, "a whole number", value)
            return None
        number = int(value)
        if minimum is not None and number < minimum:
            self.errors.append(FieldError(f"{self.path}.{key}", f"{number} is below the minimum {minimum}"))
            return None
        if maximum is not None and number > maximum:
            self.errors.append(FieldError(f"{self.path}.{key}", f"{number} is above the maximum {maximum}"))
            return None
        return number

    def enum(self, key: str, kind: type[E]) -> E | None:
        value = self._get(key, False)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            self.errors.append(FieldError(f"{self.path}.{key}", f"{show(value)} is not one of {allowed}"))
            return None

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, list):
            self._wrong(key, "a list of strings", value)
            return None
        good = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item:
                good.append(item)
            else:
                self.errors.append(
                    FieldError(f"{self.path}.{key}[{index}]", f"must be a non-empty string, not {show(item)}")
                )
        return tuple(good)

    def objects(self, key: str) -> list[Reader]:
        """A list of objects, each read on its own (`key[i]` in errors)."""
        value = self._get(key, False)
        if value is None:
            return []
        if not isinstance(value, list):
            self._wrong(key, "a list of objects", value)
            return []
        readers = []
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                readers.append(Reader(item, f"{self.path}.{key}[{index}]", self.errors))
            else:
                self.errors.append(FieldError(f"{self.path}.{key}[{index}]", f"must be an object, not {show(item)}"))
        return readers

    def mapping(self, key: str, *, required: bool = False) -> Reader | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self._wrong(key, "an object", value)
            return None
        return Reader(value, f"{self.path}.{key}", self.errors)


def show(value: object) -> str:
    """A value as the user wrote it in YAML/JSON, shortened: `"yes"`, `5`, `[1, 2]`."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def join_errors(errors: Iterable[FieldError]) -> str:
    """All problems in one message, as a denial or a condition shows them: one problem on its own, several as a
    count and a line each (messages may contain "; " and ", " themselves)."""
    lines = [str(e) for e in errors]
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} problems:\n" + "\n".join(f"- {line}" for line in lines)
