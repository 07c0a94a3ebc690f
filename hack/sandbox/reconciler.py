"""The sandbox's reconciler: the production `dbb-reconciler`, built from its own parser and `serve`, with the
sandbox's executor in place of the cluster's Job controller and kubelet.

    python -m hack.sandbox.reconciler --kubeconfig K --local-backup-root DIR --local-host-alias NAME=HOST:PORT ...

Every production flag works as in `dbb-reconciler`; the two `--local-*` flags exist only here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubernetes_asyncio.client import ApiClient

from hack.sandbox.aliases import EXAMPLE, HostAlias, alias_table, parse_alias
from hack.sandbox.executor import LocalExecutor
from reconciler import main as production


def parser() -> argparse.ArgumentParser:
    options = production.parser()
    options.prog = "python -m hack.sandbox.reconciler"
    options.description = "Run the DatabaseBackup reconciler with the sandbox's local executor."
    options.add_argument(
        "--local-backup-root",
        type=Path,
        default=Path(".dev/backups"),
        help="the folder that stands for /backups (default: %(default)s)",
    )
    options.add_argument(
        "--local-host-alias",
        action="append",
        type=_host_alias,
        default=[],
        metavar="NAME=HOST:PORT",
        help="run backups of a database named NAME (a Service's DNS name, as a Job's --host) against HOST:PORT, "
        f"as cluster DNS would; repeatable (e.g. {EXAMPLE})",
    )
    return options


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    options = parser()
    args = production.parse(argv, options)
    try:
        args.host_aliases = alias_table(args.local_host_alias)
    except ValueError as error:
        options.error(f"argument --local-host-alias: {error}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = args.local_backup_root.resolve()

    def local(api: ApiClient) -> LocalExecutor:
        return LocalExecutor(api, root, host_aliases=args.host_aliases)

    return production.run(args, local)


def _host_alias(text: str) -> HostAlias:
    try:
        return parse_alias(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
