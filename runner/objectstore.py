"""A backup streamed into S3-compatible object storage: one multipart upload, memory bounded whatever the size.

    dump tool stdout ─▶ compressor ─▶ encryptor ─▶ MultipartUpload (sha256, size) ─▶ parts of PART_SIZE, IN_FLIGHT
                                                                                     at a time ─▶ one object

Why multipart, and these numbers: a dump's size is known only at its end, so a single PUT would have to spool it to
disk or memory first. A multipart upload takes the stream in parts (S3's minimum is 5 MiB for every part but the
last; 8 MiB here), each uploaded while the next one fills. Memory is at most IN_FLIGHT parts being sent (each perhaps
held twice: ours and the HTTP layer's) plus the one being filled, under 48 MiB, for a 1 GB dump as for a 100 GB
one. S3 allows 10,000 parts: 8 MiB parts cover 78 GiB, and a larger dump needs a larger `part_size`. Each part
carries its own SHA-256 (`x-amz-checksum-sha256`), which the store checks on arrival, and the whole object's
SHA-256 is computed on the way for the manifest.

Atomicity: the object exists for no reader until `complete_multipart_upload`, which only `close` calls, after the
last byte. Leaving the `with` block any other way (an error, SIGTERM) aborts the upload, so the store drops its
parts. A run killed outright (SIGKILL, OOM) leaves an incomplete upload, invisible to readers; the next run of the
same owner aborts those older than a day (`abort_stale_uploads`), and a bucket lifecycle rule
(AbortIncompleteMultipartUpload) is the backstop an administrator can add.

The client is boto3's: it reads the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
AWS_ENDPOINT_URL, AWS_CA_BUNDLE), so workload identity can replace the keys without a change here; a store's CA
may also come as PEM text in S3_CA_BUNDLE_PEM (`s3backup.ca_bundle_from_env`). No error message carries a
credential: botocore's messages name the operation, the code and the bucket, never the keys.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Self

import structlog
from botocore.exceptions import SSLError

from runner import progress
from runner.errors import Reason, RunnerError

__all__ = [
    "IN_FLIGHT",
    "PART_SIZE",
    "MultipartUpload",
    "S3Location",
    "abort_stale_uploads",
    "check_bucket",
    "error_code",
    "list_keys",
    "storage_error",
]

log = structlog.get_logger("dbb-backup")

PART_SIZE: Final = 8 << 20
IN_FLIGHT: Final = 2
MIN_PART: Final = 5 << 20
MAX_PARTS: Final = 10_000


@dataclass(frozen=True)
class S3Location:
    """`s3://bucket/prefix`: where a run's objects go (`<prefix>/<backup name>`)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"{url!r} is not an s3://bucket/prefix URL")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"{url!r} names no bucket")
        prefix = prefix.strip("/")
        if ".." in prefix.split("/"):
            raise RunnerError(Reason.INVALID_ARGUMENTS, f"{url!r}: the prefix must not contain '..'")
        return cls(bucket, prefix)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"


def check_bucket(client: Any, bucket: str) -> None:
    """The bucket exists and these credentials reach it: asked before the dump, as the database connection is, so
    that a typo fails the run at once and clearly (some stores accept an upload into a bucket that does not exist,
    and fail only at its end)."""
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as error:
        code = error_code(error)
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
        if code in ("404", "NoSuchBucket"):
            raise RunnerError(
                Reason.STORAGE_ERROR, f"s3://{bucket} at {endpoint}: NoSuchBucket: no such bucket"
            ) from None
        if code in ("403", "AccessDenied"):
            raise RunnerError(Reason.AUTHENTICATION_FAILED, f"s3://{bucket} at {endpoint}: access denied") from None
        raise storage_error(error, f"s3://{bucket}", endpoint) from None


def error_code(error: Exception) -> str:
    """The S3 error code of a client failure ("NoSuchKey", "404", ...), "" for a failure without one."""
    response = getattr(error, "response", None)
    return str(((response if isinstance(response, dict) else {}).get("Error") or {}).get("Code", ""))


def list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under `prefix`, across pages."""
    keys: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [str(o["Key"]) for o in page.get("Contents") or []]
    except Exception as error:
        raise storage_error(error, f"s3://{bucket}/{prefix}") from None
    return keys


def storage_error(error: Exception, where: str, endpoint: str | None = None) -> RunnerError:
    """A client failure as a RunnerError naming the object (or bucket) and the endpoint, never a credential."""
    at = f" at {endpoint}" if endpoint else ""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        details = response.get("Error") or {}
        code, message = details.get("Code", "?"), details.get("Message", "")
        reason = Reason.AUTHENTICATION_FAILED if code in _AUTH_CODES else Reason.STORAGE_ERROR
        return RunnerError(reason, f"{where}{at}: {code}{': ' + message if message else ''}")
    # A certificate that AWS_CA_BUNDLE (or the system's CAs) does not vouch for: as for a database, TlsFailed.
    reason = Reason.TLS_FAILED if isinstance(error, SSLError) else Reason.STORAGE_ERROR
    return RunnerError(reason, f"{where}{at}: {type(error).__name__}: {error}")


_AUTH_CODES: Final = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"})


class MultipartUpload:
    """A sink (`write`, `close`) that streams into one object. Use as a context manager: leaving the block without
    `close` having completed the upload aborts it."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        part_size: int = PART_SIZE,
        in_flight: int = IN_FLIGHT,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """`extra`: more arguments for the upload's creation (ServerSideEncryption, SSEKMSKeyId, Metadata)."""
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (S3's minimum)")
        self._client, self.bucket, self.key = client, bucket, key
        self._part_size, self._in_flight = part_size, in_flight
        self._buffer = bytearray()
        self._pending: set[Future[dict[str, Any]]] = set()
        self._parts: list[dict[str, Any]] = []
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="s3-part")
        self._upload_id: str | None = None
        self._extra = dict(extra or {})
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.completed = False

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def __enter__(self) -> Self:
        try:
            created = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ChecksumAlgorithm="SHA256", **self._extra
            )
        except Exception as error:
            raise storage_error(error, self.where, self._endpoint()) from None
        self._upload_id = str(created["UploadId"])
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if not self.completed and self._upload_id is not None:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
                log.info("incomplete upload aborted", object=self.where)
            except Exception as error:  # the store may be what failed; the next run's cleanup tries again
                log.warning("could not abort the upload", object=self.where, error=storage_error(error, "").message)

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        progress.advance(len(data))
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            self._send(bytes(self._buffer[: self._part_size]))
            del self._buffer[: self._part_size]
        return len(data)

    def close(self) -> None:
        """The last part, then the upload completed: only now does the object exist."""
        if self._buffer or (not self._parts and not self._pending):
            self._send(bytes(self._buffer))
            self._buffer.clear()
        self._collect(wait_for_all=True)
        parts = sorted(self._parts, key=lambda p: int(p["PartNumber"]))
        try:
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
            )
        except Exception as error:
            raise storage_error(error, self.where, self._endpoint()) from None
        self.completed = True

    def _send(self, data: bytes) -> None:
        number = len(self._parts) + len(self._pending) + 1
        if number > MAX_PARTS:
            raise RunnerError(Reason.STORAGE_ERROR, f"{self.where}: more than {MAX_PARTS} parts; raise the part size")
        while len(self._pending) >= self._in_flight:
            self._collect(wait_for_all=False)
        self._pending.add(self._pool.submit(self._upload_part, number, data))

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        answer = self._client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=checksum,
        )
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}

    def _collect(self, *, wait_for_all: bool) -> None:
        if not self._pending:
            return
        done, self._pending = wait(self._pending, return_when=ALL_COMPLETED if wait_for_all else FIRST_COMPLETED)
        for future in done:
            try:
                self._parts.append(future.result())
            except RunnerError:
                raise
            except Exception as error:
                raise storage_error(error, self.where, self._endpoint()) from None

    def _endpoint(self) -> str | None:
        meta = getattr(self._client, "meta", None)
        return getattr(meta, "endpoint_url", None)


def abort_stale_uploads(
    client: Any,
    bucket: str,
    prefix: str,
    ours: Callable[[str], bool],
    older_than: timedelta = timedelta(days=1),
) -> list[str]:
    """Aborts the incomplete uploads under `prefix` whose key is `ours` and that started more than `older_than` ago
    (runs that were killed). Younger ones may belong to a run still going (concurrencyPolicy Allow). A key prefix
    alone does not make an upload ours: `app-` is also the start of `app-2-…`, another owner's. Returns their keys."""
    now, aborted = datetime.now(UTC), []
    try:
        listed = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    except Exception as error:
        raise storage_error(error, f"s3://{bucket}/{prefix}") from None
    for upload in listed.get("Uploads") or []:
        if not ours(str(upload["Key"])) or now - upload["Initiated"] < older_than:
            continue
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        except Exception as error:
            log.warning("could not abort a stale upload", key=upload["Key"], error=storage_error(error, "").message)
            continue
        aborted.append(str(upload["Key"]))
        log.info("aborted the incomplete upload of a run that was killed", key=upload["Key"])
    return aborted
