"""Benchmarks, run by `make bench` (never by `make test`). Each `bench_*.py` module has `main() -> str`, which
measures its subject against a baseline measured in the same run and returns a Markdown section; `results.py`
writes it into RESULTS.md between markers, so running one benchmark updates only its own section."""
