"""spec.verify.queries: what the webhook and the reconciler accept, and what the run is told."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.backups.model import parse_spec
from common.backups.validation import validate
from reconciler.arguments import runner_arguments

OWNER = {"metadata": {"name": "nightly", "namespace": "demo", "uid": "uid-1"}}


READER = {"name": "ledger-reader"}


def spec_with(
    queries: Any, *, engine: str = "PostgreSQL", databases: list[str] | None = None, reader: Any = READER
) -> dict[str, Any]:
    connection: dict[str, Any] = {"host": "example-db"}
    if databases is not None:
        connection["databases"] = databases
    verify: dict[str, Any] = {"queries": queries}
    if reader is not None:
        verify["queryCredentialsSecret"] = reader
    return {
        "databaseName": "example-db",
        "schedule": "@daily",
        "engine": engine,
        "connection": connection,
        "verify": verify,
    }


def problems(raw: dict[str, Any]) -> list[str]:
    spec, errors = parse_spec(raw)
    found = [str(e) for e in errors]
    if spec is not None:
        found += [str(e) for e in validate("nightly", spec)]
    return found


def test_the_run_gets_each_query_with_its_database() -> None:
    totals = "SELECT count(*), sum(total) FROM orders WHERE note <> '$(HOME)'"
    spec, errors = parse_spec(
        spec_with(
            [{"name": "totals", "sql": totals}, {"name": "one", "sql": "SELECT 1", "database": "shop"}],
            databases=["shop"],
        )
    )
    assert spec is not None, errors
    assert validate("nightly", spec) == ()
    (argument,) = [a for a in runner_arguments(spec, OWNER) if a.startswith("--queries=")]
    # The kubelet would expand $(HOME): the argument escapes it as $$(HOME), which it turns back into $(HOME).
    assert json.loads(argument.removeprefix("--queries=").replace("$$(", "$(")) == [
        {"name": "totals", "database": "shop", "sql": totals},
        {"name": "one", "database": "shop", "sql": "SELECT 1"},
    ]


def test_queries_run_as_their_own_role_never_with_the_backups_credentials() -> None:
    raw = spec_with([{"name": "one", "sql": "SELECT 1"}], databases=["shop"], reader=None)
    assert problems(raw) == [
        "spec.verify.queryCredentialsSecret: is required with queries: the Secret of a role that can only read (not a "
        "superuser: see docs/security.md), which the queries run as; they never run with the backup's own credentials"
    ]


def test_no_queries_no_argument() -> None:
    spec, _ = parse_spec({**spec_with([]), "verify": {"restoreTest": True}})
    assert spec is not None
    assert not [a for a in runner_arguments(spec, OWNER) if a.startswith("--queries")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            spec_with([{"name": "n", "sql": "SELECT 1", "database": "shop"}], engine="MySQL", databases=["shop"]),
            "spec.verify.queries: are for PostgreSQL only; the engine is MySQL, whose dump snapshot (mysqldump "
            "--single-transaction) cannot be shared, so a result recorded beside the dump could differ from the dump",
        ),
        (
            spec_with([{"name": "n", "sql": "SELECT 1"}]),
            "spec.verify.queries[0].database: is required: the backup covers several databases, or all",
        ),
        (
            spec_with([{"name": "n", "sql": "SELECT 1", "database": "crm"}], databases=["shop", "billing"]),
            'spec.verify.queries[0].database: "crm" is not backed up (spec.connection.databases: billing, shop)',
        ),
        (
            spec_with([{"name": "Totals", "sql": "SELECT 1"}], databases=["shop"]),
            'spec.verify.queries[0].name: "Totals" is not a query name: at most 63 lower-case letters, digits and '
            '"-", starting and ending with a letter or digit',
        ),
        (
            spec_with([{"name": "n", "sql": "SELECT 1"}, {"name": "n", "sql": "SELECT 2"}], databases=["shop"]),
            'spec.verify.queries[1].name: "n" names another query too',
        ),
        (spec_with([{"name": "n", "sql": "  "}], databases=["shop"]), "spec.verify.queries[0].sql: must not be empty"),
        (spec_with([{"name": "n"}], databases=["shop"]), "spec.verify.queries[0].sql: is required"),
        (spec_with(["SELECT 1"], databases=["shop"]), 'spec.verify.queries[0]: must be an object, not "SELECT 1"'),
        (spec_with("SELECT 1", databases=["shop"]), 'spec.verify.queries: must be a list of objects, not "SELECT 1"'),
        (
            spec_with([{"name": "n", "sql": "x" * 4097}], databases=["shop"]),
            "spec.verify.queries[0].sql: 4097 characters; at most 4096",
        ),
    ],
)
def test_a_wrong_query_is_named_with_its_field(raw: dict[str, Any], expected: str) -> None:
    assert problems(raw) == [expected]


def test_with_all_a_query_names_its_database_and_any_is_accepted() -> None:
    assert problems(spec_with([{"name": "n", "sql": "SELECT 1", "database": "crm"}], databases=["all"])) == []
    assert problems(spec_with([{"name": "n", "sql": "SELECT 1", "database": "crm"}])) == []
