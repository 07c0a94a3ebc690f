"""The DatabaseBackupPolicy kind: its model and validation (`model`) and the DatabaseBackup it keeps for each
database it selects (`render`)."""
