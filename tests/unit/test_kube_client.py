"""The API client `common.kube.api_client` builds: its aiohttp session does not read ~/.netrc or proxy variables
before each request (aiohttp does that in a thread, per request, when a session trusts the environment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.kube import ConfigError, api_client


async def test_the_client_from_a_kubeconfig_does_not_trust_the_environment(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    api = await api_client(kubeconfig)
    async with api:
        assert api.rest_client.pool_manager.trust_env is False


async def test_a_missing_kubeconfig_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load Kubernetes configuration"):
        await api_client(tmp_path / "absent")
