"""The backup runner: `dbb-backup`, inside each backup Job.

Modules, from the command line down: `main` (argparse, exit codes, the result line), `backup` (the `run` steps),
`verify`, `restore`, `report` (the JSON result and the termination log), `feeds` (consumers of a decoded stream),
`layout` (file layouts and the reading chain), `stream` (the atomic output file), `compression`, `crypto`,
`manifest`, `naming` (file names, retention, temporary files), `engines` (the tools' command lines), `process`
(running them), `admin` (our few SQL statements), `errors` (failure reasons, secret scrubbing), `logs`.
The file format is documented in docs/backup-format.md.
"""
