"""dbb-reconciler: runs each scheduled DatabaseBackup as a Job and records the outcome in status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbb-reconciler", description="Run the DatabaseBackup reconciler.")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster config)")
    parser.add_argument("--namespace", help="watch only this namespace (default: all)")
    parser.add_argument("--executor", choices=["job", "local"], default="job", help="how backups run")
    parser.add_argument("--leader-elect", action="store_true", help="act only while holding the Lease")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser().parse_args(argv)
    print("dbb-reconciler: the reconciler is not built yet (issue: the reconciler)", file=sys.stderr)
    return 2
