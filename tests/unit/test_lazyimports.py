"""kubernetes-asyncio's generated classes import on first use (common/lazyimports.py): in a fresh interpreter that
imports `common` first, as both entry points do, the operator's modules load without the ~750 models, and what we
use (API classes, models by name for deserialising, submodules) still works."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_operator_loads_without_every_model_and_what_it_uses_still_imports() -> None:
    script = textwrap.dedent(
        """
        import sys
        import reconciler.main, webhook.main
        from kubernetes_asyncio import client, config
        from kubernetes_asyncio.client.exceptions import ApiException
        models = [m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models.")]
        print(len(models))
        assert client.BatchV1Api.__name__ == "BatchV1Api"
        import asyncio

        async def deserialised():
            async with client.ApiClient() as api:
                return api._ApiClient__deserialize({"kind": "Status", "code": 404}, "V1Status")

        status = asyncio.run(deserialised())
        assert type(status).__name__ == "V1Status" and status.code == 404, status
        assert issubclass(ApiException, Exception) and callable(config.load_incluster_config)
        print("ok", type(sys.modules["kubernetes_asyncio.client"]).__name__)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, verdict = done.stdout.split("\n", 1)
    assert int(count) < 20, f"{count} model modules imported at start"
    assert verdict.strip() == "ok module"
