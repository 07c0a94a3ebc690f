"""Where a backup may send the database password: `spec.connection.host`.

The backup Job connects to `connection.host` with the database credentials. Left free, it would let anyone who may
create a DatabaseBackup send a Secret's password to a server of their own. So the host must be a Service of the
DatabaseBackup's own namespace (`db`, `db.shop`, `db.shop.svc`, `db.shop.svc.cluster.local`, which the webhook's
defaulting writes from the StatefulSet's `serviceName`), and that Service must exist and not be an ExternalName
(a CNAME to anywhere). Anything else (an IP, another namespace's Service, a name outside the cluster) needs the
namespace label `databases.test.io/allow-external-hosts: "true"`. Labels on a Namespace are changed with `update` on
namespaces, a cluster-scoped permission that namespace users do not have: the cluster's administrators decide, as
with Pod Security Admission's namespace labels.

Why a Service of the namespace is safe enough: a selector picks Pods of the namespace, and since Kubernetes 1.22
the `edit` and `admin` roles cannot write Endpoints or EndpointSlices, which could point a Service anywhere.

Pure functions; the lookup (`webhook.lookup`) reads the Service and the Namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ALLOW_EXTERNAL_HOSTS", "HOST_FIELD", "HostFacts", "host_problem", "own_service"]

HOST_FIELD: Final = "spec.connection.host"
ALLOW_EXTERNAL_HOSTS: Final = "databases.test.io/allow-external-hosts"


def own_service(host: str, namespace: str) -> str | None:
    """The name of the Service of `namespace` that `host` names, or None if it names none."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.rstrip(".").lower().split(".")
    if len(labels) == 1:
        return labels[0]
    if labels[1] != namespace or (len(labels) > 2 and labels[2] != "svc"):
        return None
    return labels[0]


@dataclass(frozen=True)
class HostFacts:
    """What the lookup found about one host."""

    host: str
    namespace: str
    service: str | None  # the Service of the namespace it names
    found: Mapping[str, Any] | None = None  # that Service; None if it does not exist (or was not read)
    allowed: bool = False  # the namespace carries the label that allows any host
    error: str | None = None  # a lookup failed: what happened


def host_problem(facts: HostFacts, *, skip_database_check: bool) -> tuple[str | None, str | None]:
    """(why the host is refused, a warning): at most one of them."""
    if facts.allowed:
        return None, None
    if facts.error is not None:
        return None, f"{HOST_FIELD}: could not check {facts.host!r}: {facts.error}"
    ask = f'label the namespace {ALLOW_EXTERNAL_HOSTS}="true" (cluster administrators can) to allow it'
    if facts.service is None:
        reason = (
            f'"{facts.host}" is not a Service of namespace "{facts.namespace}", and backups send the password there'
        )
        return f"{reason}: {ask}", None
    if facts.found is None:
        message = f'"{facts.host}": no Service "{facts.service}" in namespace "{facts.namespace}"'
        if skip_database_check:
            return None, f"{HOST_FIELD}: {message}"
        return message, None
    spec = facts.found.get("spec") or {}
    if spec.get("type") == "ExternalName":
        target = spec.get("externalName")
        return f'"{facts.host}": Service "{facts.service}" is an ExternalName (to "{target}"): {ask}', None
    return None, None
