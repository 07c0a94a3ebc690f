"""`kubectl dbb`'s command line, what it writes, and how an API error reaches the user: one line, as kubectl's."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import API_VERSION, RESTORE_KIND
from plugin.kube import KubeconfigError, refusal, target
from plugin.main import parse, restore_request
from plugin.objects import (
    RestoreRequest,
    parse_duration,
    parse_mapping,
    parse_point_in_time,
    request_value,
    restore_object,
)

FORBIDDEN = (
    'databaserestores.databases.test.io is forbidden: User "alice" cannot create resource "databaserestores" '
    'in API group "databases.test.io" in the namespace "shop"'
)


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "shop", "--context", "prod", "backup", "nightly", "--wait", "--timeout", "10m"],
        ["backup", "nightly", "-n", "shop", "--context", "prod", "--wait", "--timeout", "10m"],
        ["--context", "prod", "backup", "--namespace", "shop", "--timeout=600", "nightly", "--wait"],
    ],
)
def test_connection_options_are_taken_before_and_after_the_command_as_kubectl_takes_them(argv: list[str]) -> None:
    args = parse(argv)
    assert (args.command, args.name, args.namespace, args.context, args.kubeconfig) == (
        "backup",
        "nightly",
        "shop",
        "prod",
        None,
    )
    assert (args.wait, args.timeout) == (True, timedelta(minutes=10))


def test_without_options_the_namespace_and_context_are_left_to_the_kubeconfig() -> None:
    args = parse(["status"])
    assert (args.namespace, args.context, args.kubeconfig, args.all_namespaces) == (None, None, None, False)
    assert parse(["status", "-A"]).all_namespaces


def test_restore_maps_every_option_onto_a_databaserestore() -> None:
    args = parse(
        [
            *("restore", "nightly", "--to", "copy-db", "--database", "shop=shop_copy", "--database", "crm=crm_copy"),
            *("--replace", "--file", "/backups/example-db/nightly-20261207T091500Z.dump", "--wait"),
        ]
    )
    request = restore_request(args)
    assert restore_object(request) == {
        "apiVersion": API_VERSION,
        "kind": RESTORE_KIND,
        "metadata": {"generateName": "nightly-"},
        "spec": {
            "source": {"databaseBackup": "nightly", "file": "/backups/example-db/nightly-20261207T091500Z.dump"},
            "target": {
                "databaseName": "copy-db",
                "databases": [{"from": "shop", "to": "shop_copy"}, {"from": "crm", "to": "crm_copy"}],
            },
            "replace": True,
        },
    }


def test_a_minimal_restore_names_only_source_and_target_and_may_be_named() -> None:
    request = RestoreRequest(
        source="nightly", target="example-db", name="shop-back", point_in_time="2026-12-07T09:00:00Z"
    )
    assert restore_object(request) == {
        "apiVersion": API_VERSION,
        "kind": RESTORE_KIND,
        "metadata": {"name": "shop-back"},
        "spec": {
            "source": {"databaseBackup": "nightly"},
            "target": {"databaseName": "example-db"},
            "pointInTime": "2026-12-07T09:00:00Z",
        },
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["restore", "nightly"], "the following arguments are required: --to"),
        (["restore", "nightly", "--to", "db", "--database", "shop"], "'shop' is not FROM=TO"),
        (["restore", "nightly", "--to", "db", "--database", "shop=a;b"], "'a;b' is not a database name"),
        (["restore", "nightly", "--to", "db", "--at", "yesterday"], "'yesterday' is not an RFC 3339 time"),
        (["restore", "nightly", "--to", "db", "--at", "2026-12-07T09:00:00"], "has no time zone"),
        (["backup", "nightly", "--timeout", "soon"], "'soon' is not a duration"),
        (["backup"], "the following arguments are required: NAME"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_a_usage_error_exits_2_with_what_is_wrong(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("45", 45), ("2h", 7200)])
def test_timeouts_are_written_as_go_durations_or_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_a_point_in_time_is_sent_as_utc() -> None:
    assert parse_point_in_time("2026-12-07T10:30:00+01:00") == "2026-12-07T09:30:00Z"
    assert parse_mapping("shop=shop_restored") == ("shop", "shop_restored")


def test_each_request_value_is_new_to_the_microsecond() -> None:
    first = datetime(2026, 12, 7, 9, 13, 43, 123456, tzinfo=UTC)
    assert request_value(first) == "2026-12-07T09:13:43.123456Z"
    assert request_value(first + timedelta(microseconds=1)) != request_value(first)


def test_the_api_servers_refusal_is_one_line_as_kubectl_prints_it() -> None:
    error = ApiException(status=403, reason="Forbidden")
    status = {"kind": "Status", "status": "Failure", "message": FORBIDDEN, "reason": "Forbidden", "code": 403}
    error.body = json.dumps(status).encode()
    assert refusal(error) == f"Error from server (Forbidden): {FORBIDDEN}"


def test_a_refusal_read_without_preloading_carries_the_same_line() -> None:
    # common.kube.checked puts "<reason>: <message>" into the exception's reason and leaves no body.
    assert refusal(ApiException(status=403, reason=f"Forbidden: {FORBIDDEN}")) == (
        f"Error from server (Forbidden): {FORBIDDEN}"
    )
    assert refusal(ApiException(status=502, reason="Bad Gateway")) == "Error from server (Bad Gateway): Bad Gateway"


def test_a_multi_line_message_stays_one_line() -> None:
    error = ApiException(status=400, reason="BadRequest")
    error.body = json.dumps({"reason": "BadRequest", "message": "first\nsecond"}).encode()
    assert refusal(error) == "Error from server (BadRequest): first second"


def kubeconfig(folder: Path, namespace: str | None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "here", "context": context}, {"name": "there", "context": {**context, "namespace": "x"}}],
        "current-context": "here",
    }
    path = folder / "config"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_namespace_comes_from_the_flag_else_the_context_else_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, "shop")))
    assert target(None, None, None).namespace == "shop"
    assert target(None, "there", None).namespace == "x"
    assert target(None, None, "crm").namespace == "crm"
    assert target(str(kubeconfig(tmp_path, None)), None, None).namespace == "default"


def test_a_missing_kubeconfig_or_context_is_said_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    with pytest.raises(KubeconfigError, match=r"no kubeconfig at .*nowhere: set \$KUBECONFIG or pass --kubeconfig"):
        target(None, None, None)
    with pytest.raises(KubeconfigError, match='context "elsewhere" not found in the kubeconfig'):
        target(str(kubeconfig(tmp_path, None)), "elsewhere", None)


def test_kubectl_dbb_is_installed_beside_python_and_prints_help() -> None:
    # kubectl finds plugins on PATH by the name kubectl-<plugin>.
    path = Path(sys.executable).parent / "kubectl-dbb"
    result = subprocess.run([path, "--help"], capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kubectl dbb ")
    for command in ("backup", "list", "restore", "verify", "status"):
        assert f"    {command} " in result.stdout
