"""The flags that narrow what the operator reaches: the reconciler's namespaces, and /metrics auth on both sides."""

from __future__ import annotations

import pytest

from reconciler import main as reconciler_main
from webhook import main as webhook_main


def test_each_namespace_is_watched_once_and_none_means_all() -> None:
    args = reconciler_main.parse(["--namespace=shop", "--namespace=crm", "--namespace=shop"])
    assert args.namespace == ["crm", "shop"]
    assert reconciler_main.parse([]).namespace == []


def test_an_empty_namespace_is_refused_rather_than_read_as_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        reconciler_main.parse(["--namespace="])
    assert exit_.value.code == 2
    assert "--namespace: must not be empty" in capsys.readouterr().err


def test_metrics_auth_is_on_unless_turned_off() -> None:
    assert reconciler_main.parse([]).metrics_auth is True
    assert reconciler_main.parse(["--no-metrics-auth"]).metrics_auth is False
    assert webhook_main.parser().parse_args([]).metrics_auth is True
    assert webhook_main.parser().parse_args(["--no-metrics-auth"]).metrics_auth is False
