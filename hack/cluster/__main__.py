"""python -m hack.cluster up|down|load|kubeconfig"""

from __future__ import annotations

import argparse
import sys
import time

from hack.cluster import cluster
from hack.cluster.config import Paths


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.cluster", description=cluster.__doc__)
    parser.add_argument("command", choices=["up", "down", "load", "kubeconfig"])
    args = parser.parse_args()
    paths = Paths()
    started = time.monotonic()
    try:
        if args.command == "up":
            timings = cluster.up(paths)
            print("\nstep times:")
            for name, seconds in timings:
                print(f"  {seconds:7.1f}s  {name}")
            print(f"  {time.monotonic() - started:7.1f}s  total\n")
            print(f"export KUBECONFIG={paths.kubeconfig}")
        elif args.command == "down":
            cluster.down(paths)
            print(f"cluster-down: {time.monotonic() - started:.1f}s")
        elif args.command == "load":
            # As shell assignments: `make e2e` evaluates them.
            for variable, reference in cluster.load(paths).items():
                print(f"export {variable}={reference}")
        else:
            print(paths.kubeconfig)
    except cluster.ClusterError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
