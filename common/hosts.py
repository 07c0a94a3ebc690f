"""Where a DatabaseBackup or DatabaseRestore may send database credentials: one rule for every host a runner
connects to (`spec.connection.host`, a DatabaseRestore's `spec.target.external.host`, the Service a target
StatefulSet names).

A runner connects to the host with a Secret's password. Left free, a host would let anyone who may create these
objects send that password to a server of their own. So a host must name a Service of the object's own namespace in
exactly one of the forms cluster DNS answers for it: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` or
`<svc>.<ns>.svc.<cluster domain>` (a trailing dot and upper case allowed). Nothing else is read as a Service: not
`<svc>.<ns>.svc.attacker.example`, not an IP address in any notation (`2130706433` is 127.0.0.1 to a resolver). That
Service must exist and not be an ExternalName (a CNAME to anywhere). Anything else (an IP, another namespace's
Service, a name outside the cluster) needs the namespace label `databases.test.io/allow-external-hosts: "true"`.
Labels on a Namespace are changed with `update` on namespaces, a cluster-scoped permission that namespace users do not
have: the cluster's administrators decide, as with Pod Security Admission's namespace labels.

Why a Service of the namespace is safe enough: a selector picks Pods of the namespace, and since Kubernetes 1.22 the
`edit` and `admin` roles cannot write Endpoints or EndpointSlices, which could point a Service anywhere.

A lookup that fails refuses (the webhook's answer says to retry), and the reconciler applies the same rule from its
caches before every Job, so a Service that later becomes an ExternalName, or a label that is removed, stops the next
run. Pure functions; the callers read the Service and the Namespace.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ALLOW_EXTERNAL_HOSTS",
    "DEFAULT_CLUSTER_DOMAIN",
    "HostFacts",
    "add_cluster_domain_flag",
    "host_refusal",
    "own_service",
]

ALLOW_EXTERNAL_HOSTS: Final = "databases.test.io/allow-external-hosts"
DEFAULT_CLUSTER_DOMAIN: Final = "cluster.local"
# A Service's name is a DNS-1035 label: it starts with a letter, so no all-digit name can be one.
_SERVICE: Final = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def own_service(host: str, namespace: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> str | None:
    """The name of the Service of `namespace` that `host` names, or None if it names none."""
    labels = host.lower().removesuffix(".").split(".")
    service, rest = labels[0], labels[1:]
    if not _SERVICE.fullmatch(service):
        return None
    domain = cluster_domain.lower().strip(".").split(".")
    if rest in ([], [namespace], [namespace, "svc"], [namespace, "svc", *domain]):
        return service
    return None


@dataclass(frozen=True)
class HostFacts:
    """What a lookup found about one host."""

    host: str
    namespace: str
    service: str | None  # the Service of the namespace it names (own_service)
    found: Mapping[str, Any] | None = None  # that Service; None if it does not exist (or was not read)
    allowed: bool = False  # the namespace carries the label that allows any host
    error: str | None = None  # a lookup failed: what happened


def host_refusal(facts: HostFacts) -> str | None:
    """Why the credentials may not go to this host, or None if they may."""
    if facts.allowed:
        return None
    if facts.error is not None:
        return f'could not check "{facts.host}": {facts.error}; nothing was changed: try again'
    ask = f'label the namespace {ALLOW_EXTERNAL_HOSTS}="true" (cluster administrators can) to allow it'
    if facts.service is None:
        return (
            f'"{facts.host}" is not a Service of namespace "{facts.namespace}", and the password is sent there: {ask}'
        )
    if facts.found is None:
        return f'"{facts.host}": no Service "{facts.service}" in namespace "{facts.namespace}"'
    spec = facts.found.get("spec") or {}
    if spec.get("type") == "ExternalName":
        target = spec.get("externalName")
        return f'"{facts.host}": Service "{facts.service}" is an ExternalName (to "{target}"): {ask}'
    return None


def add_cluster_domain_flag(parser: argparse.ArgumentParser) -> None:
    """`--cluster-domain`, which the webhook and the reconciler must both be given alike: the last part of
    `<svc>.<ns>.svc.<cluster domain>`."""
    parser.add_argument(
        "--cluster-domain",
        default=DEFAULT_CLUSTER_DOMAIN,
        help="the cluster's DNS domain, for hosts written <svc>.<ns>.svc.<domain> (default: %(default)s)",
    )
