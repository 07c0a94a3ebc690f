"""`python -m hack.sandbox run|up|down|status` (what `make run`, `make dev-up` and `make dev-down` call)."""

from __future__ import annotations

import argparse
import sys

from hack.sandbox import control
from hack.sandbox.paths import ENV_VAR, DevDir


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hack.sandbox",
        description="The whole operator on this machine, on 127.0.0.1: a control plane, the webhook, the reconciler "
        f"(running backups itself), PostgreSQL with sample data, and the samples. State in .dev/ (or ${ENV_VAR}).",
    )
    parser.add_argument(
        "command",
        choices=["run", "up", "down", "status"],
        help="run: in the foreground until Ctrl-C; up: in the background; down: stop it; status: what runs",
    )
    # Set by `up` for the supervisor it starts: the same `run`, telling the user `make dev-down` rather than Ctrl-C.
    parser.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    dev = DevDir.from_env()
    if args.command == "run":
        return control.run(dev, detached=args.detached)
    if args.command == "up":
        return control.up(dev)
    if args.command == "down":
        return control.down(dev)
    return control.status(dev)


if __name__ == "__main__":
    sys.exit(main())
