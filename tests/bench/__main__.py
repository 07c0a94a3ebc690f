"""`python -m tests.bench [name ...]`: run every benchmark module (or the named ones) and update RESULTS.md."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import tests.bench
from tests.bench.results import RESULTS, revision, write_section


def main(argv: list[str]) -> int:
    names = [m.name for m in pkgutil.iter_modules(tests.bench.__path__) if m.name.startswith("bench_")]
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in argv] or sorted(names)
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(sorted(names))}", file=sys.stderr)
        return 2
    for name in wanted:
        started = time.monotonic()
        measured = revision()
        print(f"== {name} ({measured})", flush=True)
        module = importlib.import_module(f"tests.bench.{name}")
        body = module.main()
        # PART_OF: a benchmark whose figures are a part of another's section (another engine's, say).
        write_section(name.removeprefix("bench_"), body, measured=measured, part_of=getattr(module, "PART_OF", None))
        print(body, f"\n({time.monotonic() - started:.0f}s)", flush=True)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
