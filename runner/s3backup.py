"""`dbb-backup run --output-url s3://bucket/prefix`: the same backup as into a folder, streamed into a bucket.

The steps, and how they differ from a folder's (backup.py):
1. The bucket is checked (it exists, the credentials reach it). Then what killed runs left: this name's incomplete
   uploads older than a day are aborted (a key is this name's by the whole backup name, `own_key`: `app-2-…` is
   not `app`'s), and this owner's backups without a manifest older than a day (a run that died after an upload
   completed) are deleted; `--stale-upload-age 0` takes all of them, for an owner whose runs
   never overlap (concurrencyPolicy Forbid or Replace), so that a killed run's leftovers go with the next run.
2. The server: as for a folder (the connection and password check, then `all` resolved).
3. The dump streams into one multipart upload (objectstore.MultipartUpload): nothing is written to local disk, and
   memory stays bounded whatever the size. The object exists only once the upload completes. Every object carries
   its owner's uid as user metadata (OWNER_METADATA), which is how step 1 knows its own orphans.
4. With `--verify` the object is read back and checked as `dbb-backup verify` checks a file; one that fails is
   deleted.
5. The manifest `<object>.json`, last: a backup without its manifest does not exist for any reader, so a run that
   dies after step 3 leaves an object nobody counts, which step 1 of a later run deletes.
6. Retention: this owner's verified backups under the prefix, as in a folder.

Several PostgreSQL databases (or `all`) make a set (`<name>-<UTC>.set[.enc]`) instead of a folder's tar, whose
members would need their sizes first, that is, spooling to disk: the set is no object of its own but one object per
member under `<set>/` (`globals.sql…`, `databases/<db>.dump…`, each encrypted on its own with --key-file), each
streamed like a single backup, and its manifest `<set>.json` lists each member's size and sha256 (see
`docs/backup-format.md`). Verify, restore, list and retention read a set as they read a tar.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from runner import progress
from runner.backup import (
    RunOptions,
    Target,
    describe,
    dump_stream,
    kind_of,
    member_dumps,
    record_queries,
    resolve_target,
    same_owner,
    verify_new,
)
from runner.binlog import Coordinates
from runner.compression import Sink, Source
from runner.crypto import Encryptor
from runner.errors import Reason, RunnerError, Scrubber
from runner.layout import SET, TAR, extension
from runner.manifest import Manifest, Member, Owner, set_digest
from runner.naming import ENCRYPTED_SUFFIX, MANIFEST_SUFFIX, BackupName, parse_backup_name, parse_stored_name
from runner.objectstore import (
    MultipartUpload,
    S3Location,
    abort_stale_uploads,
    check_bucket,
    error_code,
    list_keys,
    storage_error,
)
from runner.process import Deadline
from runner.retention import Plan, Policy, plan

__all__ = ["CA_BUNDLE_VARIABLE", "S3Object", "S3Settings", "ca_bundle_from_env", "run_backup_s3", "s3_client"]

log = structlog.get_logger("dbb-backup")

# User metadata on every object a run writes (x-amz-meta-dbb-owner-uid): whose it is, before its manifest exists.
OWNER_METADATA: Final = "dbb-owner-uid"
# The approved object store's CA certificate, PEM text (public), as the Job's env carries it.
CA_BUNDLE_VARIABLE: Final = "S3_CA_BUNDLE_PEM"
CATALOG_READS: Final = 60  # without retention rules: the newest manifests a run reads, to list what is stored
_PEM_CERTIFICATE: Final = "-----BEGIN CERTIFICATE-----"


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
    """boto3's client from the standard AWS variables (keys, AWS_REGION, AWS_ENDPOINT_URL, AWS_CA_BUNDLE), with the
    CA of S3_CA_BUNDLE_PEM when it is set (`ca_bundle_from_env`)."""
    ca_bundle_from_env()
    config = Config(s3={"addressing_style": "path"}) if settings.path_style else None
    try:
        return boto3.client("s3", config=config)
    except BotoCoreError as error:  # the settings themselves: an empty AWS_CA_BUNDLE, an unknown region format
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"S3 client settings (AWS_* variables): {error}") from None


def ca_bundle_from_env(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """S3_CA_BUNDLE_PEM, when set, written to a private file (0600, under TMPDIR or /tmp: an emptyDir in the Job)
    that AWS_CA_BUNDLE then names, for boto3, which reads a CA bundle only from a file; removed when the runner
    exits. It takes the place of an AWS_CA_BUNDLE already set: the reconciler passes the approved store's CA this
    way. The file; None when unset."""
    environ = os.environ if environ is None else environ
    pem = environ.get(CA_BUNDLE_VARIABLE, "")
    if not pem:
        return None
    if _PEM_CERTIFICATE not in pem:
        raise RunnerError(Reason.INVALID_ARGUMENTS, f"{CA_BUNDLE_VARIABLE} holds no PEM certificate")
    current = environ.get("AWS_CA_BUNDLE")
    if current and Path(current).is_file() and Path(current).read_text(errors="replace") == pem:
        return Path(current)  # written by an earlier client of this run
    folder = environ.get("TMPDIR") or "/tmp"  # noqa: S108 - the Job's private emptyDir; mkstemp makes the file 0600
    try:
        descriptor, name = tempfile.mkstemp(prefix="dbb-s3-ca-", suffix=".pem", dir=folder)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(pem)
    except OSError as error:
        raise RunnerError(
            Reason.STORAGE_ERROR, f"cannot write {CA_BUNDLE_VARIABLE} to {folder}: {error.strerror}"
        ) from None
    atexit.register(_remove, Path(name))
    environ["AWS_CA_BUNDLE"] = name
    return Path(name)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


@dataclass(frozen=True)
class S3Object:
    """A stored backup in a bucket (layout.Stored).

    Every read of an object after its first is pinned to what the first one read: its ETag (sent as If-Match) and,
    in a bucket that keeps versions, its VersionId. A verify and a restore read an object several times (its
    checksum, its structure, the restore itself); an object replaced in between then fails the later read
    (`VerifyFailed`), or, pinned to its version, is read as it was checked."""

    client: Any
    bucket: str
    key: str
    # Per key (the object's and its members'): the GetObject arguments that pin later reads.
    pins: dict[str, dict[str, str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def member(self, name: str) -> S3Object:
        return S3Object(self.client, self.bucket, f"{self.key}/{name}", self.pins)

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
                Reason.VERIFY_FAILED, f"unreadable manifest of s3://{self.bucket}/{self.key}: {error}"
            ) from None

    @contextlib.contextmanager
    def open(self) -> Iterator[Source]:
        where = f"s3://{self.bucket}/{self.key}"
        pinned = self.pins.get(self.key)
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key, **(pinned or {}))
        except Exception as error:
            if pinned is not None and error_code(error) in ("PreconditionFailed", "412"):
                raise RunnerError(Reason.VERIFY_FAILED, f"{where} was replaced after it was checked") from None
            raise storage_error(error, where) from None
        if pinned is None:
            self.pins[self.key] = pin(answer)
        body = answer["Body"]
        try:
            yield body
        finally:
            body.close()


def pin(answer: dict[str, Any]) -> dict[str, str]:
    """GetObject arguments that read again exactly what `answer` (a GetObject's) returned: If-Match its ETag, and its
    VersionId where the bucket keeps versions ("null" is the version of an unversioned object: not one to ask for)."""
    found = {"IfMatch": str(answer["ETag"])} if answer.get("ETag") else {}
    version = answer.get("VersionId")
    return found | ({"VersionId": str(version)} if version and version != "null" else {})


def run_backup_s3(
    options: RunOptions,
    location: S3Location,
    scrub: Scrubber,
    deadline: Deadline,
    *,
    settings: S3Settings = S3Settings(),
    client: Any = None,
) -> tuple[str, Manifest, Plan]:
    client = client if client is not None else s3_client(settings)
    started, clock = datetime.now(UTC), time.monotonic()
    check_bucket(client, location.bucket)
    stale = timedelta(seconds=options.stale_upload_age)
    ours = partial(own_key, location, options.name)
    abort_stale_uploads(client, location.bucket, location.key(f"{options.name}-"), ours, older_than=stale)
    remove_orphans_s3(client, location, options.name, options.owner, older_than=stale)
    target = resolve_target(options, scrub)
    kind = SET if kind_of(options.engine, target) == TAR else kind_of(options.engine, target)
    log.info("backup started", engine=options.engine.value, databases=target.databases, object=location.url(""))
    name = BackupName.new(
        options.name, started, extension(options.engine, kind, options.compression, encrypted=options.key is not None)
    )
    key = location.key(name.file)
    # The owner's uid on every object: what lets a later run recognise its own orphans (remove_orphans_s3).
    extra: dict[str, Any] = settings.object_arguments()
    if options.owner is not None:
        extra["Metadata"] = {OWNER_METADATA: options.owner.uid}
    found: list[Coordinates | None] = []  # the dump's binlog coordinates (MySQL, runner.binlog)
    with record_queries(options, target, scrub, deadline) as recorded, progress.phase("dump", file=name.file):
        target = replace(target, snapshots=recorded.ids)
        if kind == SET:
            members = _upload_set(options, target, client, location.bucket, key, extra, scrub, deadline)
            size, sha256 = sum(m.size or 0 for m in members), set_digest(members)
        else:
            out = _upload(
                options,
                client,
                location.bucket,
                key,
                extra,
                deadline,
                lambda head: found.append(dump_stream(options, target, kind, head, scrub, deadline)),
            )
            members, size, sha256 = [], out.size, out.sha256.hexdigest()
    manifest = describe(options, target, name, kind, members, size, sha256, started, clock)
    manifest = replace(manifest, queries=recorded.results, binlog=found[0] if found else None)
    stored = S3Object(client, location.bucket, key)
    if options.verify:
        try:
            manifest = verify_new(stored, manifest, options, scrub, deadline)
        except RunnerError:
            _delete_backup(client, location, name.file)
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
    log.info("backup written", object=location.url(name.file), size=size, sha256=manifest.sha256)
    kept = prune_s3(client, location, options.name, options.retention, options.owner, protect=name.file)
    return location.url(name.file), manifest, kept


def _upload(
    options: RunOptions,
    client: Any,
    bucket: str,
    key: str,
    extra: dict[str, Any],
    deadline: Deadline,
    write: Callable[[Sink], None],
) -> MultipartUpload:
    """One object: `write` streams the payload into it, encrypted on the way with --key-file. Complete on return."""
    with MultipartUpload(client, bucket, key, extra=extra) as out:
        encryptor = Encryptor(options.key.secret, out) if options.key is not None else None
        write(encryptor if encryptor is not None else out)
        if encryptor is not None:
            encryptor.close()
        deadline.check()
        out.close()
    return out


def _upload_set(
    options: RunOptions,
    target: Target,
    client: Any,
    bucket: str,
    key: str,
    extra: dict[str, Any],
    scrub: Scrubber,
    deadline: Deadline,
) -> list[Member]:
    """Several PostgreSQL databases: one object per member under `<set>/` (the tar's members, each encrypted on its
    own), so that nothing is spooled. A run that fails takes the members it completed with it."""
    members: list[Member] = []
    suffix = ENCRYPTED_SUFFIX if options.key is not None else ""
    try:
        for work in member_dumps(options, target):
            member = work.name + suffix
            out = _upload(
                options,
                client,
                bucket,
                f"{key}/{member}",
                extra,
                deadline,
                partial(work.dump, options, scrub=scrub, deadline=deadline),
            )
            members.append(Member(member, work.database, out.size, out.sha256.hexdigest()))
            log.info("database dumped", database=work.database or "(globals)", member=member, size=out.size)
    except BaseException:
        for done in members:
            with contextlib.suppress(Exception):  # the store may be what failed: a later run removes orphans
                client.delete_object(Bucket=bucket, Key=f"{key}/{done.name}")
        raise
    return members


def prune_s3(client: Any, location: S3Location, prefix: str, policy: Policy, owner: Owner | None, protect: str) -> Plan:
    """Retention in a bucket: the folder's rules (runner.retention), over the backups under the prefix."""
    grouped = _backups(client, location, prefix)
    names = sorted(n for n in grouped if parse_backup_name(prefix, n) is not None and n + MANIFEST_SUFFIX in grouped)
    if not policy.any:
        # Nothing is deleted; only the newest are read, for the run's list of stored backups.
        names = names[-CATALOG_READS:]
    manifests: dict[str, Manifest] = {}
    for name in names:
        manifest = _manifest(client, location, name)
        if manifest is not None and same_owner(manifest.owner, owner):
            manifests[name] = manifest
    owned = {name: manifest.verified for name, manifest in manifests.items()}
    sizes = {name: manifest.size for name, manifest in manifests.items()}
    decided = plan(grouped, prefix, policy, owned, now=datetime.now(UTC), protect=protect, sizes=sizes)
    for name in decided.delete:
        _delete_keys(client, location, grouped[name])
        log.info("old backup deleted", object=location.url(name))
    return decided.listed(manifests)


def remove_orphans_s3(
    client: Any, location: S3Location, prefix: str, owner: Owner | None, older_than: timedelta
) -> list[str]:
    """This owner's backups (and base backups) without a manifest, older than `older_than`: a run that died after an
    upload completed (during its verification, between a set's members, or before a base backup's manifest). No
    reader counts them; this deletes them. An object is this owner's by the uid it carries (OWNER_METADATA), so
    nothing of another owner, or of a run by hand, is touched; `older_than` spares a run still verifying
    (concurrencyPolicy Allow), as for stale uploads."""
    if owner is None:
        return []
    grouped, now, removed = _backups(client, location, prefix), datetime.now(UTC), []
    for name, keys in sorted(grouped.items()):
        if parse_stored_name(prefix, name) is None or name + MANIFEST_SUFFIX in grouped:
            continue
        try:
            head = client.head_object(Bucket=location.bucket, Key=keys[0])
        except Exception as error:
            raise storage_error(error, f"s3://{location.bucket}/{keys[0]}") from None
        if (head.get("Metadata") or {}).get(OWNER_METADATA) != owner.uid or now - head["LastModified"] < older_than:
            continue
        _delete_keys(client, location, keys)
        removed.append(name)
        log.info("removed a backup whose run died before its manifest", object=location.url(name))
    return removed


def own_key(location: S3Location, prefix: str, key: str) -> bool:
    """`key` is a backup of `prefix` (the owner's name), a member of one of its sets, or one of its base backups
    (`run --base-backup`), by the whole name: not another owner's whose name merely starts the same (`app-2-…` for
    `app`)."""
    base = location.key("")
    name = key.removeprefix(base).split("/", 1)[0]
    return key.startswith(base) and parse_stored_name(prefix, name) is not None


def _backups(client: Any, location: S3Location, prefix: str) -> dict[str, list[str]]:
    """{name: its keys} under the prefix: a backup or manifest is one key, a set the keys of its members."""
    grouped: dict[str, list[str]] = {}
    base = location.key("")
    for key in list_keys(client, location.bucket, location.key(prefix)):
        grouped.setdefault(key.removeprefix(base).split("/", 1)[0], []).append(key)
    return grouped


def _delete_backup(client: Any, location: S3Location, name: str) -> None:
    """A backup's object, or a set's members."""
    key = location.key(name)
    found = list_keys(client, location.bucket, key)
    _delete_keys(client, location, [k for k in found if k == key or k.startswith(key + "/")])


def _delete_keys(client: Any, location: S3Location, keys: list[str]) -> None:
    for key in keys:
        try:
            client.delete_object(Bucket=location.bucket, Key=key)
        except Exception as error:
            raise storage_error(error, f"s3://{location.bucket}/{key}") from None


def _manifest(client: Any, location: S3Location, name: str) -> Manifest | None:
    try:
        body = client.get_object(Bucket=location.bucket, Key=location.key(name + MANIFEST_SUFFIX))["Body"]
        return Manifest.from_json(body.read().decode("utf-8"))
    except Exception:
        return None  # unreadable: nobody's, as in a folder
