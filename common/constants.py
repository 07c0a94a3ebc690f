"""Names fixed by the API contract (shared/DESIGN.md)."""

from typing import Final

GROUP: Final = "databases.test.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DatabaseBackup"
PLURAL: Final = "databasebackups"
SINGULAR: Final = "databasebackup"
SHORT_NAME: Final = "dbb"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# The backup volume is mounted here in every backup Job; backupPath must lie inside it.
BACKUP_ROOT: Final = "/backups"
DEFAULT_TIME_ZONE: Final = "Etc/UTC"

# Annotations and labels.
ANNOTATION_SKIP_DATABASE_CHECK: Final = f"{GROUP}/skip-database-check"
ANNOTATION_BACKUP_NOW: Final = f"{GROUP}/backup-now"
ANNOTATION_VERIFY_NOW: Final = f"{GROUP}/verify-now"
ANNOTATION_SCHEDULED_TIME: Final = f"{GROUP}/scheduled-time"
LABEL_BACKUP_NAME: Final = f"{GROUP}/databasebackup"
# What a Job of ours does: `backup` (also when the label is absent, as on Jobs from before it) or `verify`.
LABEL_RUN: Final = f"{GROUP}/run"
RUN_BACKUP: Final = "backup"
RUN_VERIFY: Final = "verify"
RUN_RELEASE_SLOT: Final = "release-slot"  # drops a PostgreSQL archiver's replication slot (reconciler.slot)
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "databasebackup-operator"

# The DatabaseRestore kind: one restore of one stored backup, run once as a Job.
RESTORE_KIND: Final = "DatabaseRestore"
RESTORE_PLURAL: Final = "databaserestores"
RESTORE_SHORT_NAME: Final = "dbr"
RESTORE_CRD_NAME: Final = f"{RESTORE_PLURAL}.{GROUP}"
LABEL_RESTORE_NAME: Final = f"{GROUP}/databaserestore"
RUN_RESTORE: Final = "restore"

# The BackupStore kind: object storage the cluster administrators approve (cluster-scoped; common.stores).
STORE_KIND: Final = "BackupStore"
STORE_PLURAL: Final = "backupstores"
STORE_CRD_NAME: Final = f"{STORE_PLURAL}.{GROUP}"

# The DatabaseBackupPolicy kind: one DatabaseBackup per database StatefulSet it selects (cluster-scoped;
# common.policies).
POLICY_KIND: Final = "DatabaseBackupPolicy"
POLICY_PLURAL: Final = "databasebackuppolicies"
POLICY_SHORT_NAME: Final = "dbbpolicy"
POLICY_CRD_NAME: Final = f"{POLICY_PLURAL}.{GROUP}"
