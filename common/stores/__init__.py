"""The BackupStore kind: its model (`model`), validation (`validation`) and who may use it, where (`access`)."""
