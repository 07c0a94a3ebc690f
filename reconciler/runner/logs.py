"""Structured logs to stderr: one JSON object a line, a fixed message plus key/values, secrets scrubbed.

The scrubber runs on every rendered line, as a last line of defence: messages are built from scrubbed tool stderr
already, but a value logged by mistake must not leak either.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from reconciler.runner.errors import Scrubber

__all__ = ["configure_logging"]


def configure_logging(scrub: Scrubber, *, level: int = logging.INFO) -> None:
    json_renderer = structlog.processors.JSONRenderer(ensure_ascii=False)

    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        line = json_renderer(logger, name, event)
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
