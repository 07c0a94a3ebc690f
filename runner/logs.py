"""Structured logs to stderr: one JSON object a line, a fixed message plus key/values, secrets scrubbed.

Scrubbed twice. Every value is scrubbed before the line is rendered: JSON escapes `"` and `\\` (and control
characters), so a secret that holds one of them no longer stands in the rendered line as it is, and scrubbing only
that line would miss it. Then the rendered line is scrubbed again, as a last line of defence for whatever the
renderer adds of its own (a key, an object's repr). Messages are built from scrubbed tool stderr already, but a
value logged by mistake must not leak either.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from runner.errors import Scrubber

__all__ = ["configure_logging", "scrubbed"]


def scrubbed(value: Any, scrub: Scrubber) -> Any:
    """`value` with every string in it scrubbed, through dicts, lists and tuples. Numbers, booleans and None stay as
    they are; anything else becomes its scrubbed str (the renderer would print its repr)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {scrubbed(k, scrub): scrubbed(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrubbed(v, scrub) for v in value]
    return scrub(str(value))


def configure_logging(scrub: Scrubber, *, level: int = logging.INFO) -> None:
    json_renderer = structlog.processors.JSONRenderer(ensure_ascii=False)

    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        line = json_renderer(logger, name, {key: scrubbed(value, scrub) for key, value in event.items()})
        return scrub(line if isinstance(line, str) else line.decode())

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
