"""The backup runner: `dbb-backup`, inside each backup Job."""
