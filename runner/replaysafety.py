"""Whether a binlog replay under another database name is safe: the statements in it that name the source database.

A point-in-time restore into a database of another name (`--database shop=shop_then`) replays the source's binlog
events through `mariadb-binlog --database=shop --rewrite-db=shop->shop_then`. The tool renames the database of row
events and of each statement's default database (`USE`), but not a name written in a statement's text: replayed,
`ALTER TABLE shop.orders ...` or `DROP DATABASE shop` would change `shop` itself, on the server restored into, which
may be the production server. So the decoded SQL is read first, and a statement that names the source database
refuses the restore before anything is touched.

What is read: the tool's SQL text, outside `#` comment lines and the base64 of `BINLOG '...'` blocks (row events,
whose database the tool renames). What counts as naming the database: `shop.` or `` `shop`. `` as a qualifier, and
`DATABASE shop` / `SCHEMA shop` (create, drop, alter, use inside a statement), compared without regard to case, as a
server with `lower_case_table_names` would. A literal that happens to read `shop.` is refused too: a refusal costs a
restore under the same name elsewhere; a miss could change production.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = ["statements_naming"]

EXCERPT: Final = 120  # characters of an offending statement a refusal quotes


def statements_naming(lines: Iterable[str], database: str) -> Iterator[str]:
    """Each statement of the decoded SQL `lines` that names `database` in its text, shortened to EXCERPT."""
    name = re.escape(database)
    bare = rf"(?<![\w$`]){name}(?![\w$])"
    quoted = rf"`{name}`"
    naming = re.compile(
        rf"(?:{quoted}|{bare})\s*\.|\b(?:DATABASE|SCHEMA)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?:{quoted}|{bare})",
        re.IGNORECASE,
    )
    in_binlog = False
    statement: list[str] = []
    for line in lines:
        if in_binlog:
            in_binlog = not line.startswith("'")  # the block's closing `'/*!*/;`
            continue
        if line.startswith("BINLOG '"):
            in_binlog = line.rstrip() == "BINLOG '"  # else the whole block is on this line
            continue
        if line.startswith("#"):
            continue
        statement.append(line.strip())
        if line.rstrip().endswith(";"):  # the tool ends each statement with `/*!*/;` (or `;`)
            yield from _named(" ".join(statement), naming)
            statement = []
    yield from _named(" ".join(statement), naming)


def _named(text: str, naming: re.Pattern[str]) -> Iterator[str]:
    text = text.strip()
    if text and naming.search(text):
        yield text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"
