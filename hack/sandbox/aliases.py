"""Host aliases for the local executor: what a Pod's `hostAliases` and the cluster DNS do for a Job in a cluster.

A backup Job names its database by the Service's DNS name (`--host=example-db.demo.svc`, defaulted by the webhook).
In the sandbox no cluster DNS exists, so the local executor, which plays kubelet, rewrites that name to the local
server before it runs the runner: `--local-host-alias example-db.demo.svc=127.0.0.1:5433`. An alias stands for the
whole Service, so it maps the port as well (the local server does not listen on the Service's port).

Names compare as DNS does: without regard to case, with or without the trailing dot of a fully qualified name,
and `<service>.<namespace>.svc` the same as `<service>.<namespace>.svc.cluster.local`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["HostAlias", "alias_table", "apply_aliases", "canonical_name", "parse_alias"]

CLUSTER_DOMAIN: Final = ".cluster.local"
_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
EXAMPLE: Final = "example-db.demo.svc=127.0.0.1:5432"


@dataclass(frozen=True)
class HostAlias:
    name: str  # canonical, see canonical_name
    host: str
    port: int

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def canonical_name(name: str) -> str:
    """`Example-DB.demo.svc.cluster.local.` -> `example-db.demo.svc`."""
    name = name.strip().lower().removesuffix(".")
    if name.endswith(f".svc{CLUSTER_DOMAIN}"):
        name = name.removesuffix(CLUSTER_DOMAIN)
    return name


def parse_alias(text: str) -> HostAlias:
    """`NAME=HOST:PORT` (HOST may be `[v6 address]`); ValueError with a message that says what is wrong."""
    name, equals, target = text.partition("=")
    host, colon, port = target.rpartition(":")
    if not equals or not colon:
        raise ValueError(f"{text!r} is not NAME=HOST:PORT, such as {EXAMPLE}")
    name = canonical_name(name)
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{text!r}: {name!r} is not a DNS name, such as example-db.demo.svc")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, such as [::1]:5432")
    if not host or any(c.isspace() or c in "/[]=" for c in host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port {port!r} is not a number from 1 to 65535")
    return HostAlias(name, host, int(port))


def alias_table(aliases: Iterable[HostAlias]) -> dict[str, HostAlias]:
    """By canonical name; ValueError if one name is given two different targets."""
    table: dict[str, HostAlias] = {}
    for alias in aliases:
        known = table.setdefault(alias.name, alias)
        if known != alias:
            raise ValueError(f"{alias.name} is given twice, as {known.target} and as {alias.target}")
    return table


def apply_aliases(argv: Sequence[str], table: Mapping[str, HostAlias]) -> tuple[list[str], HostAlias | None]:
    """The runner's argv with `--host=NAME` and `--port=...` pointed at NAME's alias, and the alias used (None:
    argv unchanged). A Job without `--port=` (the engine's default port) gets the alias's port added."""
    host = next((a.split("=", 1)[1] for a in argv if a.startswith("--host=")), None)
    alias = table.get(canonical_name(host)) if host is not None else None
    if alias is None:
        return list(argv), None
    rewritten = []
    for argument in argv:
        if argument.startswith("--host="):
            rewritten += [f"--host={alias.host}", f"--port={alias.port}"]
        elif not argument.startswith("--port="):
            rewritten.append(argument)
    return rewritten, alias
