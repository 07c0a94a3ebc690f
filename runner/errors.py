"""Why a run failed, as the reconciler reports it, and the scrubbing that keeps secrets out of every message.

Every failure the runner can explain is a `RunnerError` with a `reason` (a `Reason`: the CamelCase word the reconciler
copies to `status.lastFailure.reason`) and a one-line `message`. Reasons (tests/unit/test_runner_reasons.py holds this
table and the enum together):

| reason | when |
|---|---|
| `InvalidArguments` | a flag or the key file is unusable; nothing was contacted |
| `AuthenticationFailed` | the server refused the user or password |
| `TlsFailed` | `--tls-mode` could not be met: no TLS, or only TLS, or a certificate not from the CA or the host's |
| `ScramRequired` | `--require-scram`, and the server asked for the password in clear or as MD5; it was not sent |
| `Unreachable` | no server answered at host:port (refused, unknown host, connect timeout) |
| `DatabaseNotFound` | a `--database` does not exist on the server |
| `ClientTooOld` | pg_dump is older than the server (it refuses to dump it); `--require-scram` with libpq < 16 |
| `DumpFailed` | the dump tool exited non-zero or was killed |
| `Timeout` | `--timeout` ran out; the dump tool was killed (`archive --drop-slot`: the slot stayed active) |
| `DiskFull` | the output folder ran out of space (or quota) |
| `StorageError` | any other error writing the output folder |
| `Interrupted` | SIGTERM or SIGINT (the Job's deadline, a deleted Pod) |
| `VerifyFailed` | the backup is not what its manifest says, or not structurally whole |
| `BackupMissing` | `check`: a backup's manifest is there, its file (or a member of its set) is gone |
| `DecryptFailed` | wrong key, or an encrypted file that was altered or cut short |
| `KeyMissing` | `check`: a kept backup needs a key (by its id and fingerprint) that the keys given no longer hold |
| `TargetExists` | a restore's target database exists, and `--replace` was not given; nothing was changed |
| `ForeignBackup` | `restore --owner`: the backup's manifest names another owner (or none); nothing was touched |
| `RestoreFailed` | the restore tool failed |
| `QueryFailed` | a `verify.queries` query failed: its name, SQLSTATE and condition, never the server's message |
| `UnsafeQueryRole` | the queries' role (QUERY_USER) can do more than read; the message says what; nothing was dumped |
| `BinaryLoggingOff` | `archive`: the server has binary logging off; the message says what to set |
| `ArchiveGap` | `archive`: a binlog (or WAL) was purged from the server before it was archived; the message names it |
| `ArchiveMismatch` | `check --prove-archive`: an older backup plus the archive replayed to a newer one differ from it |
| `WalLevelMinimal` | `archive --engine postgresql`: the server's wal_level is minimal; the message says what to set |
| `ReplicationNotAllowed` | `archive --engine postgresql`: no REPLICATION attribute, or no replication line in pg_hba |
| `InternalError` | a bug: an exception the runner did not expect; its type and message, scrubbed |
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Final
from urllib.parse import quote

__all__ = ["Reason", "RunnerError", "Scrubber", "one_line"]

REDACTED: Final = "[REDACTED]"
# Tool stderr can be long (a failing pg_restore lists every error); the termination message has 4096 bytes in all.
MAX_MESSAGE: Final = 1500


class Reason(StrEnum):
    """Why a run failed: the table above, one member each."""

    INVALID_ARGUMENTS = "InvalidArguments"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    TLS_FAILED = "TlsFailed"
    SCRAM_REQUIRED = "ScramRequired"
    UNREACHABLE = "Unreachable"
    DATABASE_NOT_FOUND = "DatabaseNotFound"
    CLIENT_TOO_OLD = "ClientTooOld"
    DUMP_FAILED = "DumpFailed"
    TIMEOUT = "Timeout"
    DISK_FULL = "DiskFull"
    STORAGE_ERROR = "StorageError"
    INTERRUPTED = "Interrupted"
    VERIFY_FAILED = "VerifyFailed"
    BACKUP_MISSING = "BackupMissing"
    DECRYPT_FAILED = "DecryptFailed"
    KEY_MISSING = "KeyMissing"
    TARGET_EXISTS = "TargetExists"
    FOREIGN_BACKUP = "ForeignBackup"
    RESTORE_FAILED = "RestoreFailed"
    QUERY_FAILED = "QueryFailed"
    UNSAFE_QUERY_ROLE = "UnsafeQueryRole"
    BINARY_LOGGING_OFF = "BinaryLoggingOff"
    ARCHIVE_GAP = "ArchiveGap"
    ARCHIVE_MISMATCH = "ArchiveMismatch"
    WAL_LEVEL_MINIMAL = "WalLevelMinimal"
    REPLICATION_NOT_ALLOWED = "ReplicationNotAllowed"
    INTERNAL_ERROR = "InternalError"


class RunnerError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Scrubber:
    """Replaces each secret (and its URL-quoted form, which connection strings use) with [REDACTED] where it stands
    as a whole value, not inside a longer word.

    A secret whose first (last) character is a letter or digit is replaced only where no letter or digit stands
    before (after) it: a one-letter password `e` is scrubbed from `password=e`, `'e'` and `e`, and leaves
    "expected" alone, which would otherwise read "[REDACTED]xp[REDACTED]cted" and say which letter it is. An edge
    that is not a letter or digit needs no boundary: nothing around it can make it part of a word."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret that contains another is replaced whole. Very short secrets are still
        # scrubbed: a one-letter password in a message is a leaked password.
        variants = {v for s in secrets if s for v in (s, quote(s, safe=""))}
        ordered = sorted(variants, key=len, reverse=True)
        self._pattern = re.compile("|".join(_whole(v) for v in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern else text


_ALNUM: Final = r"[^\W_]"  # a letter or digit, in any script


def _whole(secret: str) -> str:
    """A pattern for `secret` that does not match inside a longer word (see Scrubber)."""
    before = f"(?<!{_ALNUM})" if secret[0].isalnum() else ""
    after = f"(?!{_ALNUM})" if secret[-1].isalnum() else ""
    return before + re.escape(secret) + after


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """Tool stderr as one line: lines joined with ' | ', tabs and runs of spaces squeezed, cut at `limit` from the end
    (the last lines of a tool's stderr say why it stopped)."""
    parts = [" ".join(line.split()) for line in text.splitlines()]
    joined = " | ".join(p for p in parts if p)
    return joined if len(joined) <= limit else "…" + joined[-(limit - 1) :]
