"""`dbb-backup run --output-url s3://bucket/prefix`: the same backup as into a folder, streamed into a bucket.

The steps, and how they differ from a folder's (backup.py):
1. The bucket is checked (it exists, the credentials reach it) and this name's incomplete uploads older than a day
   (runs that were killed) are aborted; `--stale-upload-age 0` aborts all of them, for an owner whose runs never
   overlap (concurrencyPolicy Forbid or Replace), so that a killed run's upload goes with the next run.
2. The server: as for a folder (the connection and password check, then `all` resolved).
3. The dump streams into one multipart upload (objectstore.MultipartUpload): nothing is written to local disk, and
   memory stays bounded whatever the size. The object exists only once the upload completes.
4. With `--verify` the object is read back and checked as `dbb-backup verify` checks a file; one that fails is
   deleted.
5. The manifest `<object>.json`, last: a backup without its manifest does not exist for any reader, so a run that
   dies after step 3 leaves an object nobody counts (the next run of the owner removes it, as an orphan).
6. Retention: this owner's verified backups under the prefix, as in a folder.

Several PostgreSQL databases (or `all`) make a tar, whose members need their sizes first (see backup.py): into a
bucket that would mean spooling to local disk, which this path never does. Such a backup is refused for now; one
object per database plus a manifest of the set is the layout that will replace the tar here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import structlog
from botocore.config import Config

from reconciler.runner.backup import RunOptions, describe, dump_stream, kind_of, resolve_target, same_owner
from reconciler.runner.compression import Sink, Source
from reconciler.runner.crypto import Encryptor
from reconciler.runner.errors import RunnerError, Scrubber
from reconciler.runner.layout import TAR, extension
from reconciler.runner.manifest import Manifest, Owner
from reconciler.runner.naming import MANIFEST_SUFFIX, BackupName, parse_backup_name, retention_plan
from reconciler.runner.objectstore import (
    MultipartUpload,
    S3Location,
    abort_stale_uploads,
    check_bucket,
    error_code,
    list_keys,
    storage_error,
)
from reconciler.runner.process import Deadline
from reconciler.runner.verify import verify_backup

__all__ = ["S3Object", "S3Settings", "run_backup_s3", "s3_client"]

log = structlog.get_logger("dbb-backup")


@dataclass(frozen=True)
class S3Settings:
    path_style: bool = False
    sse: str | None = None  # AES256 | aws:kms
    kms_key_id: str | None = None

    def object_arguments(self) -> dict[str, str]:
        """What every object we write carries: its server-side encryption."""
        found = {"ServerSideEncryption": self.sse} if self.sse else {}
        return found | ({"SSEKMSKeyId": self.kms_key_id} if self.kms_key_id else {})


def s3_client(settings: S3Settings = S3Settings()) -> Any:
    """boto3's client from the standard AWS variables (keys, AWS_REGION, AWS_ENDPOINT_URL, AWS_CA_BUNDLE)."""
    config = Config(s3={"addressing_style": "path"}) if settings.path_style else None
    return boto3.client("s3", config=config)


@dataclass(frozen=True)
class S3Object:
    """A stored backup in a bucket (layout.Stored)."""

    client: Any
    bucket: str
    key: str

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def manifest(self) -> Manifest | None:
        """Its manifest (`<key>.json`), None if it has none; a manifest that cannot be read fails verification."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key + MANIFEST_SUFFIX)["Body"]
        except Exception as error:
            if error_code(error) in ("NoSuchKey", "404"):
                return None
            raise storage_error(error, f"s3://{self.bucket}/{self.key}{MANIFEST_SUFFIX}") from None
        try:
            return Manifest.from_json(body.read().decode("utf-8"))
        except ValueError as error:
            raise RunnerError(
                "VerifyFailed", f"unreadable manifest of s3://{self.bucket}/{self.key}: {error}"
            ) from None

    @contextlib.contextmanager
    def open(self) -> Iterator[Source]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"]
        except Exception as error:
            raise storage_error(error, f"s3://{self.bucket}/{self.key}") from None
        try:
            yield body
        finally:
            body.close()


def run_backup_s3(
    options: RunOptions,
    location: S3Location,
    scrub: Scrubber,
    deadline: Deadline,
    *,
    settings: S3Settings = S3Settings(),
    client: Any = None,
) -> tuple[str, Manifest]:
    client = client if client is not None else s3_client(settings)
    started, clock = datetime.now(UTC), time.monotonic()
    check_bucket(client, location.bucket)
    stale = timedelta(seconds=options.stale_upload_age)
    abort_stale_uploads(client, location.bucket, location.key(f"{options.name}-"), older_than=stale)
    target = resolve_target(options, scrub)
    kind = kind_of(options.engine, target)
    if kind == TAR:
        raise RunnerError(
            "InvalidArguments",
            "several PostgreSQL databases (or all) cannot yet be backed up to S3: give one --database per run",
        )
    log.info("backup started", engine=options.engine.value, databases=target.databases, object=location.url(""))
    ext = extension(options.engine, kind, options.compression, encrypted=options.key is not None)
    name = BackupName.new(options.name, started, ext)
    key = location.key(name.file)
    with MultipartUpload(client, location.bucket, key, extra=settings.object_arguments()) as out:
        encryptor = Encryptor(options.key, out) if options.key is not None else None
        head: Sink = encryptor if encryptor is not None else out
        dump_stream(options, target, kind, head, scrub, deadline)
        if encryptor is not None:
            encryptor.close()
        deadline.check()
        out.close()
    manifest = describe(options, target, name, kind, [], out.size, out.sha256.hexdigest(), started, clock)
    stored = S3Object(client, location.bucket, key)
    if options.verify:
        try:
            restore = options.connection if options.restore_test else None
            verify_backup(stored, options.key, scrub, deadline, manifest=manifest, restore_connection=restore)
        except RunnerError:
            client.delete_object(Bucket=location.bucket, Key=key)
            log.error("the new backup failed verification and was deleted", object=location.url(name.file))
            raise
    deadline.check()
    try:
        client.put_object(
            Bucket=location.bucket,
            Key=key + MANIFEST_SUFFIX,
            Body=manifest.to_json().encode(),
            **settings.object_arguments(),
        )
    except Exception as error:
        raise storage_error(error, location.url(name.manifest)) from None
    log.info("backup written", object=location.url(name.file), size=out.size, sha256=manifest.sha256)
    if options.keep_last:
        prune_s3(client, location, options.name, options.keep_last, options.owner, protect=name.file)
    return location.url(name.file), manifest


def prune_s3(
    client: Any, location: S3Location, prefix: str, keep_last: int, owner: Owner | None, protect: str
) -> list[str]:
    """Retention in a bucket: the folder's rules (naming.retention_plan), over the objects under the prefix."""
    names = _names(client, location, prefix)
    owned: dict[str, bool] = {}
    for name in names:
        if parse_backup_name(prefix, name) is None or name + MANIFEST_SUFFIX not in names:
            continue
        manifest = _manifest(client, location, name)
        if manifest is not None and same_owner(manifest.owner, owner):
            owned[name] = manifest.verified
    plan = retention_plan(names, prefix, keep_last, owned, protect=protect)
    for name in plan:
        try:
            client.delete_object(Bucket=location.bucket, Key=location.key(name))
        except Exception as error:
            raise storage_error(error, location.url(name)) from None
        log.info("old backup deleted", object=location.url(name), keep_last=keep_last)
    return plan


def _names(client: Any, location: S3Location, prefix: str) -> list[str]:
    return [key.rsplit("/", 1)[-1] for key in list_keys(client, location.bucket, location.key(prefix))]


def _manifest(client: Any, location: S3Location, name: str) -> Manifest | None:
    try:
        body = client.get_object(Bucket=location.bucket, Key=location.key(name + MANIFEST_SUFFIX))["Body"]
        return Manifest.from_json(body.read().decode("utf-8"))
    except Exception:
        return None  # unreadable: nobody's, as in a folder
