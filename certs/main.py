"""dbb-certs: write ca.crt, tls.crt and tls.key (plus ca.key) for the webhook Service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from certs.serving import ensure_serving_certificate, service_hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dbb-certs",
        description="Make (or renew) a CA and a serving certificate for a Service. Valid files are kept; "
        "a certificate that expires within 30 days, or lacks a name, is renewed.",
    )
    parser.add_argument("--service", default="dbb-webhook", help="Service name (default: %(default)s)")
    parser.add_argument("--namespace", default="dbb-system", help="Service namespace (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("certs-out"), help="folder to write (default: %(default)s)")
    parser.add_argument("--host", action="append", default=[], help="an extra DNS name or IP address (repeatable)")
    parser.add_argument("--days", type=int, default=365, help="serving certificate lifetime (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.days <= 30:
        parser.error(f"--days: {args.days} must be more than the 30-day renewal margin")
    hosts = service_hosts(args.service, args.namespace, args.host)
    outcome = ensure_serving_certificate(
        args.out, hosts, common_name=f"{args.service}.{args.namespace}.svc", days=args.days
    )
    state = "renewed" if outcome.certificate_renewed else "kept"
    print(
        f"{args.out}: certificate {state} (CA {'new' if outcome.ca_renewed else 'kept'}), "
        f"valid until {outcome.not_after:%Y-%m-%dT%H:%M:%SZ}, names: {', '.join(outcome.hosts)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
