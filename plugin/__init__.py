"""`kubectl dbb`: a kubectl plugin for DatabaseBackups, run with the user's own kubeconfig and rights.

- `plugin.main`: the command line.
- `plugin.commands`: each command, its requests to the API server.
- `plugin.follow`, `plugin.logs`: following a request to its end, and the progress its Job's log reports.
- Pure parts: `plugin.objects` (what is written), `plugin.outcomes` (where a request stands), `plugin.reports`
  (the tables), `plugin.progress` (progress lines), `plugin.tables`, `plugin.shapes`.
"""
