"""Restoring PostgreSQL globals keeps the restoring role as it is on the target server."""

from __future__ import annotations

import pytest

from runner.restore import keep_own_role

GLOBALS = (
    b"CREATE ROLE postgres;\n"
    b"ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN PASSWORD 'SCRAM-SHA-256$4096:a$b:c';\n"
    b"CREATE ROLE app;\n"
    b"ALTER ROLE app WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:d$e:f';\n"
    b"ALTER ROLE postgres_readonly WITH LOGIN;\n"
    b'ALTER ROLE "Odd ""Name""" WITH LOGIN;\n'
)


@pytest.mark.parametrize(
    ("user", "dropped"),
    [
        ("postgres", b"ALTER ROLE postgres WITH SUPERUSER"),
        ("app", b"ALTER ROLE app WITH"),
        ('Odd "Name"', b'ALTER ROLE "Odd ""Name""" WITH'),
    ],
)
def test_the_restoring_roles_alter_line_is_dropped_and_nothing_else(user: str, dropped: bytes) -> None:
    script, kept = keep_own_role(GLOBALS, user)
    assert kept
    assert dropped not in script
    assert len(script.splitlines()) == len(GLOBALS.splitlines()) - 1
    assert b"CREATE ROLE" in script


def test_a_role_with_a_longer_name_that_starts_the_same_is_left_alone() -> None:
    script, _ = keep_own_role(GLOBALS, "postgres")
    assert b"ALTER ROLE postgres_readonly WITH LOGIN;" in script


def test_a_user_absent_from_the_globals_changes_nothing() -> None:
    assert keep_own_role(GLOBALS, "nobody") == (GLOBALS, False)
