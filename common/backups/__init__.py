"""The DatabaseBackup kind: its model (`model`), defaults (`defaults`) and the meaning of its values (`validation`)."""
