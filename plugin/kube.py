"""The user's own connection to the cluster, as kubectl makes it: $KUBECONFIG (or --kubeconfig), --context, and the
namespace from -n or else the context's. The plugin has no identity of its own: every request carries the user's
credentials and the API server's RBAC decides.

An API error becomes one line, the way kubectl prints it (`Error from server (Forbidden): ...`), from the Status
object the API server sent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from common.kube import closing_at_once

__all__ = ["KubeconfigError", "Target", "connect", "refusal", "target"]

DEFAULT_KUBECONFIG = Path("~/.kube/config")


class KubeconfigError(Exception):
    """No usable kubeconfig, context or credentials."""


@dataclass(frozen=True)
class Target:
    """Which kubeconfig, context and namespace the commands use."""

    kubeconfig: str  # one file, or (as $KUBECONFIG) several joined by `:`
    context: str | None
    namespace: str


def target(kubeconfig: str | None, context: str | None, namespace: str | None) -> Target:
    """As kubectl chooses: --kubeconfig, else $KUBECONFIG, else ~/.kube/config; the namespace from -n, else the
    context's, else `default`."""
    paths = kubeconfig or os.environ.get("KUBECONFIG") or str(DEFAULT_KUBECONFIG.expanduser())
    if not any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p):
        raise KubeconfigError(f"no kubeconfig at {paths}: set $KUBECONFIG or pass --kubeconfig")
    try:
        contexts, current = config.list_kube_config_contexts(paths)
    except (config.ConfigException, OSError, KeyError, TypeError, ValueError) as error:
        raise KubeconfigError(f"cannot read the kubeconfig {paths}: {error}") from None
    chosen = _context(contexts, current, context)
    return Target(paths, context, namespace or chosen.get("namespace") or "default")


async def connect(where: Target) -> client.ApiClient:
    """A client with the user's own credentials."""
    try:
        api = await config.new_client_from_config(
            config_file=where.kubeconfig, context=where.context, persist_config=False
        )
    except (config.ConfigException, OSError, KeyError, TypeError, ValueError) as error:
        raise KubeconfigError(f"cannot use the kubeconfig {where.kubeconfig}: {error}") from None
    return closing_at_once(api)


def _context(contexts: list[Any], current: Any, name: str | None) -> dict[str, Any]:
    """The `context` part of the chosen context (cluster, user, namespace)."""
    if name is None:
        if not current:
            raise KubeconfigError("the kubeconfig has no current context: pass --context")
        found: dict[str, Any] = dict(current.get("context") or {})
        return found
    for entry in contexts:
        if entry.get("name") == name:
            chosen: dict[str, Any] = dict(entry.get("context") or {})
            return chosen
    raise KubeconfigError(f'context "{name}" not found in the kubeconfig')


def refusal(error: ApiException) -> str:
    """One line for an API error, as kubectl writes it: `Error from server (Forbidden): <the server's message>`."""
    status: dict[str, Any] = {}
    if error.body:
        try:
            found = json.loads(error.body)
        except (ValueError, TypeError):
            found = None
        if isinstance(found, dict):
            status = found
    reason = str(status.get("reason") or error.reason or "Error").split(":", 1)[0]
    message = str(status.get("message") or "")
    if not message:
        # Raised by common.kube.checked: the reason carries "<Reason>: <message>".
        head, _, rest = str(error.reason or "").partition(": ")
        message = rest or head or f"HTTP {error.status}"
    return f"Error from server ({reason}): {' '.join(message.split())}"
