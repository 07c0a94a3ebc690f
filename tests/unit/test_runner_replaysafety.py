"""The statements a renamed point-in-time replay refuses: those whose text names the source database, which the
binlog tool's --rewrite-db leaves as written (runner.replaysafety)."""

from __future__ import annotations

import pytest

from runner.replaysafety import statements_naming

DECODED = """/*!50530 SET @@SESSION.PSEUDO_SLAVE_MODE=1*/;
# at 4
#261207 12:39:55 server id 1  end_log_pos 256 CRC32 0x5b0c6f3d 	Start: binlog v 4, server v 11.8.3
BINLOG '
7agWaw8BAAAA/AAAAAABAAAAAAQAMTEuOC4zLU1hcmlhREItMCtkZWIxM3UxAAAAAAAAAAAAAAAA
shop.orders would be base64 here, never SQL
'/*!*/;
# at 300
#261207 12:39:56 server id 1  end_log_pos 400 CRC32 0x1 	Query	thread_id=7	exec_time=0	error_code=0
use `shop_then`/*!*/;
SET TIMESTAMP=1765111196/*!*/;
{statement}
/*!*/;
# at 500
"""


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE shop.orders ADD COLUMN note TEXT",
        "ALTER TABLE `shop`.`orders` ADD COLUMN note TEXT",
        "ALTER TABLE `shop` . orders DROP COLUMN x",
        "DROP DATABASE shop",
        "drop schema if exists `SHOP`",
        "CREATE DATABASE IF NOT EXISTS shop",
        "INSERT INTO visits SELECT * FROM Shop.visits_old",
    ],
)
def test_a_statement_naming_the_source_database_is_found(statement: str) -> None:
    [found] = statements_naming(DECODED.format(statement=statement).splitlines(keepends=True), "shop")
    assert statement in found


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE orders ADD COLUMN note TEXT",
        "ALTER TABLE shop_then.orders ADD COLUMN note TEXT",  # the target's own name
        "CREATE TABLE shops (id INT)",
        "ALTER TABLE orders ADD COLUMN shop INT",  # a column named like the database, not a qualifier
        "CREATE TABLE myshop.t (id INT)",
    ],
)
def test_statements_that_do_not_name_it_pass(statement: str) -> None:
    assert list(statements_naming(DECODED.format(statement=statement).splitlines(keepends=True), "shop")) == []


def test_a_long_statement_is_quoted_shortened() -> None:
    statement = "ALTER TABLE shop.orders " + "ADD COLUMN c INT, " * 20 + "ADD COLUMN d INT"
    [found] = statements_naming(DECODED.format(statement=statement).splitlines(keepends=True), "shop")
    assert len(found) == 120
    assert found.endswith("…")
