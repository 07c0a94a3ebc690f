"""Tables as kubectl prints them: upper-case headers, columns left-aligned and three spaces apart, `<none>`-free
(an empty cell stays empty), and ages in kubectl's short form (`45s`, `12m`, `3h10m`, `5d`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

__all__ = ["age", "duration", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for column, cell in enumerate(row):
            widths[column] = max(widths[column], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def age(then: datetime | None, now: datetime) -> str:
    """How long ago, as kubectl's AGE column (k8s.io/apimachinery's HumanDuration, shortened the same way)."""
    if then is None:
        return ""
    return duration(now - then)


# kubectl's HumanDuration: below each limit (in seconds), the span in the unit, with the next smaller unit's rest
# where the limit says so; above the last, years.
_STEPS = (
    (120, 1, None),
    (600, 60, 1),
    (3 * 3600, 60, None),
    (8 * 3600, 3600, 60),
    (48 * 3600, 3600, None),
    (8 * 86400, 86400, 3600),
    (2 * 365 * 86400, 86400, None),
)
_UNITS = {1: "s", 60: "m", 3600: "h", 86400: "d"}


def duration(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    for limit, unit, rest_unit in _STEPS:
        if seconds < limit:
            whole, rest = divmod(seconds, unit)
            shown = f"{whole}{_UNITS[unit]}"
            if rest_unit is not None and rest // rest_unit:
                shown += f"{rest // rest_unit}{_UNITS[rest_unit]}"
            return shown
    return f"{seconds // (365 * 86400)}y"
