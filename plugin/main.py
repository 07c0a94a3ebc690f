"""`kubectl dbb`: back up, list, restore, verify and see DatabaseBackups in one line each.

kubectl runs `kubectl-dbb` from PATH for `kubectl dbb ...` and passes every argument after `dbb` as it is, so the
connection options (`--kubeconfig`, `--context`, `-n`) are accepted before and after the command, as kubectl's are.

Exit codes: 0 done; 1 the work failed, or the API server or the plugin refused (one line on stderr, never a
traceback); 2 a usage error; 130 interrupted (what was asked for goes on in the cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from plugin import commands
from plugin.commands import Console, PluginError
from plugin.kube import KubeconfigError, Target, connect, refusal, target
from plugin.objects import RestoreRequest, parse_duration, parse_mapping, parse_point_in_time
from plugin.progress import format_seconds

T = TypeVar("T")

__all__ = ["main", "parse", "restore_request"]

EPILOG: Final = """examples:
  kubectl dbb backup nightly --wait               back up now, follow it, print the file and its size
  kubectl dbb list nightly                        the stored backups, as status records them
  kubectl dbb restore nightly --to example-db --database shop=shop_copy --wait
  kubectl dbb verify nightly --wait               check the stored backups now
  kubectl dbb status -A                           every DatabaseBackup, and what is wrong

Requests go to the API server as you, with your kubeconfig's credentials: what RBAC lets you do, you can do."""


def _connection_options(*, suppress: bool) -> argparse.ArgumentParser:
    """--kubeconfig, --context, -n: on the main parser, and again on each command (SUPPRESS there, so that a value
    given before the command is not overwritten by the command's default)."""
    options = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    options.add_argument("--kubeconfig", default=default, help="kubeconfig file (default $KUBECONFIG, ~/.kube/config)")
    options.add_argument("--context", default=default, help="kubeconfig context (default the current one)")
    options.add_argument("-n", "--namespace", default=default, help="namespace (default the context's, else default)")
    return options


def _wait_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--wait", action="store_true", help="follow it to the end, with progress; exit 1 if it fails")
    options.add_argument(
        "--timeout",
        type=_duration,
        default=None,
        help="with --wait, give up following after this long (90s, 10m, 1h30m); the work goes on",
    )
    return options


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubectl dbb",
        description="Back up, restore and verify DatabaseBackups, and see how they stand.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_connection_options(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection, waiting = _connection_options(suppress=True), _wait_options()

    # (command, help, description, follows a request, what NAME is)
    for command, summary, description, follows, name in (
        ("backup", "back up now", "Ask for a backup now.", True, "the DatabaseBackup"),
        (
            "list",
            "list stored backups",
            "The stored backups of a DatabaseBackup, newest first, as its status records them.",
            False,
            "the DatabaseBackup",
        ),
        (
            "restore",
            "restore a stored backup",
            "Create a DatabaseRestore: restore a backup of NAME into the database StatefulSet TARGET.",
            True,
            "the DatabaseBackup whose backup is restored",
        ),
        (
            "verify",
            "check the stored backups now",
            "Ask for a check of the stored backups now.",
            True,
            "the DatabaseBackup",
        ),
    ):
        parents = [connection, waiting] if follows else [connection]
        one = sub.add_parser(command, parents=parents, help=summary, description=description)
        one.add_argument("name", metavar="NAME", help=name)
        if command == "restore":
            _restore_options(one)

    status = sub.add_parser(
        "status",
        parents=[connection],
        help="every DatabaseBackup and what is wrong",
        description="A table of the DatabaseBackups of the namespace: last backup, overdue, last check, problems.",
    )
    status.add_argument("-A", "--all-namespaces", action="store_true", help="of every namespace")
    return parser.parse_args(argv)


def _restore_options(restore: argparse.ArgumentParser) -> None:
    restore.add_argument("--to", required=True, metavar="TARGET", help="the database StatefulSet to restore into")
    restore.add_argument(
        "--database",
        action="append",
        type=_mapping,
        default=[],
        metavar="FROM=TO",
        help="restore the backup's database FROM under the name TO (repeatable); others keep their names",
    )
    restore.add_argument("--replace", action="store_true", help="restore into databases that exist, replacing them")
    restore.add_argument("--file", help="the backup to restore, as `kubectl dbb list` shows it (default the newest)")
    restore.add_argument(
        "--at",
        type=_point_in_time,
        metavar="TIME",
        help="restore to this moment (RFC 3339), where the cluster offers point-in-time restore",
    )
    restore.add_argument("--name", dest="restore_name", help="the DatabaseRestore's name (default NAME-<random>)")


def restore_request(args: argparse.Namespace) -> RestoreRequest:
    return RestoreRequest(
        source=args.name,
        target=args.to,
        databases=tuple(args.database),
        replace=args.replace,
        file=args.file,
        point_in_time=args.at,
        name=args.restore_name,
    )


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse` as an argparse type: its ValueError becomes the usage error argparse prints."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return checked


_duration = _argument(parse_duration)
_mapping = _argument(parse_mapping)
_point_in_time = _argument(parse_point_in_time)


async def run(args: argparse.Namespace, console: Console) -> int:
    where = target(args.kubeconfig, args.context, args.namespace)
    api = await connect(where)
    async with api:
        timeout = getattr(args, "timeout", None)
        try:
            async with asyncio.timeout(timeout.total_seconds() if timeout else None):
                return await _dispatch(args, where, api, console)
        except TimeoutError:
            if timeout is None:
                raise
            raise PluginError(
                f"gave up waiting after {format_seconds(timeout.total_seconds())}; the work goes on in the cluster "
                "(`kubectl dbb status` shows how it stands)"
            ) from None


async def _dispatch(args: argparse.Namespace, where: Target, api: client.ApiClient, console: Console) -> int:
    namespace = where.namespace
    match args.command:
        case "backup":
            return await commands.backup(api, namespace, args.name, wait=args.wait, console=console)
        case "verify":
            return await commands.verify(api, namespace, args.name, wait=args.wait, console=console)
        case "list":
            return await commands.list_backups(api, namespace, args.name, console=console)
        case "status":
            return await commands.status(api, None if args.all_namespaces else namespace, console=console)
        case "restore":
            return await commands.restore(api, namespace, restore_request(args), wait=args.wait, console=console)
    raise PluginError(f"unknown command {args.command}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    console = Console(sys.stdout, terminal=sys.stdout.isatty())
    try:
        code = asyncio.run(run(args, console))
    except KeyboardInterrupt:
        print("interrupted; what was asked for goes on in the cluster", file=sys.stderr)
        sys.exit(130)
    except ApiException as error:
        print(refusal(error), file=sys.stderr)
        sys.exit(1)
    except (PluginError, KubeconfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        print(f"error: cannot reach the API server: {error or type(error).__name__}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)
