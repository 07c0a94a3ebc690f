"""dbb-backup: the backup runner inside each backup Job."""

from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbb-backup", description="Back up, verify, restore or decrypt.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="dump, compress, checksum, publish atomically, prune and verify")
    commands.add_parser("verify", help="check a backup file against its manifest")
    commands.add_parser("restore", help="restore a backup file into a database")
    commands.add_parser("decrypt", help="decrypt an encrypted backup file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser().parse_args(argv)
    print("dbb-backup: the runner is not built yet (issue: the backup runner)", file=sys.stderr)
    return 2
