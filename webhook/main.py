"""dbb-webhook: serves the admission webhook over TLS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbb-webhook", description="Serve the DatabaseBackup admission webhook.")
    parser.add_argument("--port", type=int, default=8443, help="HTTPS port (default: %(default)s)")
    parser.add_argument("--cert-dir", type=Path, default=Path("/tls"), help="folder with tls.crt and tls.key")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster config)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser().parse_args(argv)
    print("dbb-webhook: the admission server is not built yet (issue: the admission webhook)", file=sys.stderr)
    return 2
