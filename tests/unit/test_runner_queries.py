"""verify.queries without a server: what makes a role more than a reader, how results print, who runs them."""

from __future__ import annotations

import pytest

from runner.errors import RunnerError
from runner.queries import Credential, credential_from_env, printed, require_credential, role_problems

READER = ("reader", False, False, False, False, True)


def role(name: str, *, superuser: bool = False, createrole: bool = False, itself: bool = False) -> tuple[object, ...]:
    return (name, superuser, createrole, False, False, itself)


@pytest.mark.parametrize(
    ("roles", "extensions", "problems"),
    [
        ([READER, role("pg_read_all_data")], [], []),
        ([role("reader", superuser=True, itself=True), role("pg_monitor")], [], ["is a superuser"]),
        ([READER, role("postgres", superuser=True)], [], ["can become the superuser postgres"]),
        ([role("reader", createrole=True, itself=True)], [], ["has CREATEROLE"]),
        ([READER, role("admins", createrole=True)], [], ["has CREATEROLE through role admins, which it can become"]),
        ([READER, role("pg_signal_backend")], [], ["is a member of pg_signal_backend"]),
        (
            [READER],
            ["dblink", "postgres_fdw"],
            [
                "can execute functions of dblink in database 'app', which reach other hosts",
                "can execute functions of postgres_fdw in database 'app', which reach other hosts",
            ],
        ),
    ],
)
def test_a_role_is_a_reader_only_without_any_way_beyond_reading(
    roles: list[tuple[object, ...]], extensions: list[str], problems: list[str]
) -> None:
    assert role_problems(roles, extensions, "app") == problems


def test_rows_print_as_psql_prints_them_unaligned_and_without_headers() -> None:
    assert printed([[b"1", None, b"a|b"], [b"2", b"", b"x\ny"]]) == "1||a|b\n2||x\ny\n"
    assert printed([]) == ""
    assert printed([[], []]) == ""  # rows without columns: psql prints nothing


def test_the_queries_role_comes_from_its_own_variables() -> None:
    found = credential_from_env({"QUERY_USER": "reader", "QUERY_PASSWORD": "pw", "DB_USER": "postgres"})
    assert found == Credential("reader", "pw")
    assert "pw" not in repr(found)
    assert credential_from_env({"DB_USER": "postgres", "DB_PASSWORD": "pw"}) is None
    with pytest.raises(RunnerError) as raised:
        require_credential(None, "--queries")
    assert raised.value.reason == "InvalidArguments"
    assert "QUERY_USER and QUERY_PASSWORD" in raised.value.message
