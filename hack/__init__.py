"""Developer tooling that is Python rather than shell: `python -m hack.sandbox` (the local sandbox)."""
