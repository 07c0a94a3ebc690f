"""Host aliases of the local executor: `--local-host-alias NAME=HOST:PORT` as the sandbox reconciler reads it, and
the runner's argv of a real backup Job pointed at the alias, as cluster DNS would point the Job's Pod."""

from __future__ import annotations

from typing import Any

import pytest

from common.backups.model import parse_spec
from hack.sandbox.aliases import HostAlias, alias_table, apply_aliases, parse_alias
from hack.sandbox.executor import _expand
from hack.sandbox.reconciler import parse
from reconciler import main as production
from reconciler.arguments import runner_arguments

SANDBOX = "example-db.demo.svc=127.0.0.1:54321"


@pytest.mark.parametrize(
    ("text", "alias"),
    [
        (SANDBOX, HostAlias("example-db.demo.svc", "127.0.0.1", 54321)),
        ("Example-DB.Demo.SVC.=127.0.0.1:5432", HostAlias("example-db.demo.svc", "127.0.0.1", 5432)),
        ("example-db.demo.svc.cluster.local=localhost:5432", HostAlias("example-db.demo.svc", "localhost", 5432)),
        ("mariadb.shop.svc=[::1]:3306", HostAlias("mariadb.shop.svc", "::1", 3306)),
        ("db=10.0.0.7:65535", HostAlias("db", "10.0.0.7", 65535)),
    ],
)
def test_an_alias_is_read_as_a_canonical_name_and_a_host_and_port(text: str, alias: HostAlias) -> None:
    assert parse_alias(text) == alias


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("example-db.demo.svc", "is not NAME=HOST:PORT"),
        ("example-db.demo.svc=127.0.0.1", "is not NAME=HOST:PORT"),
        ("=127.0.0.1:5432", "is not a DNS name"),
        ("example_db.demo.svc=127.0.0.1:5432", "is not a DNS name"),
        ("example-db..svc=127.0.0.1:5432", "is not a DNS name"),
        ("example-db.demo.svc=:5432", "is not a host name or address"),
        ("example-db.demo.svc=a b:5432", "is not a host name or address"),
        ("example-db.demo.svc=::1:5432", "IPv6 address in brackets"),
        ("example-db.demo.svc=127.0.0.1:0", "is not a number from 1 to 65535"),
        ("example-db.demo.svc=127.0.0.1:65536", "is not a number from 1 to 65535"),
        ("example-db.demo.svc=127.0.0.1:postgres", "is not a number from 1 to 65535"),
    ],
)
def test_a_malformed_alias_is_refused_with_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_alias(text)


def test_one_name_given_two_targets_is_refused_but_the_same_alias_twice_is_not() -> None:
    same = [parse_alias(SANDBOX), parse_alias("EXAMPLE-DB.demo.svc.cluster.local.=127.0.0.1:54321")]
    assert alias_table(same) == {"example-db.demo.svc": parse_alias(SANDBOX)}
    with pytest.raises(ValueError, match=r"example-db.demo.svc is given twice, as 127.0.0.1:54321 and as \[::1\]:5"):
        alias_table([parse_alias(SANDBOX), parse_alias("example-db.demo.svc=[::1]:5")])


def job_argv(host: str, port: int | None) -> list[str]:
    """The runner's args exactly as jobs.py writes them into a backup Job."""
    connection: dict[str, Any] = {"host": host} | ({"port": port} if port is not None else {})
    spec, errors = parse_spec(
        {"databaseName": "example-db", "schedule": "@daily", "engine": "PostgreSQL", "connection": connection}
    )
    assert spec is not None, errors
    return runner_arguments(spec, {"metadata": {"name": "nightly", "namespace": "demo", "uid": "uid-1"}})


def endpoint(argv: list[str]) -> tuple[list[str], list[str]]:
    return [a for a in argv if a.startswith("--host=")], [a for a in argv if a.startswith("--port=")]


@pytest.mark.parametrize(
    ("host", "port", "aliases", "expected"),
    [
        # The webhook's default, the sandbox's alias.
        ("example-db.demo.svc", 5432, [SANDBOX], ("127.0.0.1", 54321)),
        ("Example-DB.demo.SVC", 5432, [SANDBOX], ("127.0.0.1", 54321)),
        ("example-db.demo.svc.", 5432, [SANDBOX], ("127.0.0.1", 54321)),
        ("example-db.demo.svc.cluster.local", 5432, [SANDBOX], ("127.0.0.1", 54321)),
        ("example-db.demo.svc.cluster.local.", 5432, [SANDBOX], ("127.0.0.1", 54321)),
        # No port in the Job (the engine's default): the alias's port is added.
        ("example-db.demo.svc", None, [SANDBOX], ("127.0.0.1", 54321)),
        ("mariadb.shop.svc", 3306, [SANDBOX, "mariadb.shop.svc=[::1]:3307"], ("::1", 3307)),
    ],
)
def test_a_job_naming_an_aliased_service_runs_against_the_alias(
    host: str, port: int | None, aliases: list[str], expected: tuple[str, int]
) -> None:
    argv = job_argv(host, port)

    rewritten, used = apply_aliases(argv, alias_table(map(parse_alias, aliases)))

    assert used is not None
    assert endpoint(rewritten) == ([f"--host={expected[0]}"], [f"--port={expected[1]}"])
    unrelated = [a for a in argv if not a.startswith(("--host=", "--port="))]
    assert [a for a in rewritten if not a.startswith(("--host=", "--port="))] == unrelated


@pytest.mark.parametrize(
    ("host", "aliases"),
    [
        ("example-db.shop.svc", [SANDBOX]),  # another namespace
        ("example-db", [SANDBOX]),  # a short name is not the alias's name
        ("127.0.0.1", [SANDBOX]),
        ("example-db.demo.svc", []),
    ],
)
def test_a_job_naming_no_aliased_service_runs_unchanged(host: str, aliases: list[str]) -> None:
    argv = job_argv(host, 5432)

    assert apply_aliases(argv, alias_table(map(parse_alias, aliases))) == (argv, None)


@pytest.mark.parametrize(
    "argv",
    [
        ["--local-host-alias", SANDBOX],
        ["--local-backup-root", "/tmp/backups"],
        ["--executor", "local"],
    ],
)
def test_the_production_reconciler_has_no_sandbox_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        production.parse(argv)

    assert exited.value.code == 2
    assert "unrecognized arguments: " + " ".join(argv) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--local-host-alias", "example-db.demo.svc"], "is not NAME=HOST:PORT"),
        (["--local-host-alias", SANDBOX, "--local-host-alias", "example-db.demo.svc=h:1"], "given twice"),
    ],
)
def test_the_sandbox_reconciler_refuses_an_alias_it_cannot_use_naming_the_option(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv)

    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("python -m hack.sandbox.reconciler: error: argument --local-host-alias: "), error
    assert says in error


def test_the_sandbox_reconciler_takes_repeated_aliases_and_every_production_flag() -> None:
    args = parse(["--local-host-alias", SANDBOX, "--local-host-alias", "db.shop.svc=h:1", "--namespace", "shop"])

    assert args.host_aliases == {
        "example-db.demo.svc": HostAlias("example-db.demo.svc", "127.0.0.1", 54321),
        "db.shop.svc": HostAlias("db.shop.svc", "h", 1),
    }
    assert args.namespace == ["shop"]
    assert parse([]).host_aliases == {}


@pytest.mark.parametrize(
    ("argument", "expanded"),
    [
        ("--user=$(DB_USER)", "--user=alice"),
        ("--database=$$(DB_PASSWORD)", "--database=$(DB_PASSWORD)"),
        ("--x=$$$(DB_USER)", "--x=$alice"),
        ("--x=$(UNSET)", "--x=$(UNSET)"),
        ("--x=a$b", "--x=a$b"),
    ],
)
def test_the_local_executor_expands_arguments_as_the_kubelet_does(argument: str, expanded: str) -> None:
    assert _expand(argument, {"DB_USER": "alice", "DB_PASSWORD": "secret"}) == expanded
