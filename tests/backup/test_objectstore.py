"""Streaming into a real S3-compatible store (SeaweedFS on loopback): a multipart upload of bounded memory whose
object appears only when it is complete, whose every part is checksummed, and that leaves nothing behind when it
fails. Errors name the object and the endpoint, never a key."""

from __future__ import annotations

import hashlib
import tracemalloc
import uuid
from datetime import timedelta

import pytest

from hack.harness.objectstore import SECRET_KEY, SeaweedFS
from runner.errors import RunnerError
from runner.objectstore import (
    IN_FLIGHT,
    PART_SIZE,
    MultipartUpload,
    S3Location,
    abort_stale_uploads,
    check_bucket,
)


def pieces(total: int, seed: bytes) -> list[bytes]:
    """`total` bytes that do not compress, in uneven pieces (as a dump tool's pipe delivers them)."""
    block = hashlib.shake_256(seed).digest(1 << 20)
    sizes = [65536, 1 << 20, 333_333, 7 << 20]
    out: list[bytes] = []
    at = 0
    while at < total:
        size = min(sizes[len(out) % len(sizes)], total - at)
        out.append((block * (size // len(block) + 1))[:size])
        at += size
    return out


def key() -> str:
    return f"tests/{uuid.uuid4().hex}.dump"


@pytest.mark.parametrize("total", [0, 1, PART_SIZE, 3 * PART_SIZE + 12345])
def test_a_stream_becomes_one_object_with_its_sha256(seaweedfs: SeaweedFS, total: int) -> None:
    name, data = key(), pieces(total, b"round trip")
    with MultipartUpload(seaweedfs.client(), seaweedfs.bucket, name) as upload:
        for piece in data:
            upload.write(piece)
        assert seaweedfs.keys(name) == [], "no object before the upload completes"
        upload.close()
    stored = seaweedfs.client().get_object(Bucket=seaweedfs.bucket, Key=name)["Body"].read()
    assert len(stored) == total == upload.size
    assert hashlib.sha256(stored).hexdigest() == upload.sha256.hexdigest() == hashlib.sha256(b"".join(data)).hexdigest()
    assert seaweedfs.uploads(name) == []


def test_memory_stays_bounded_by_the_parts_in_flight(seaweedfs: SeaweedFS) -> None:
    name, total = key(), 24 * PART_SIZE  # 192 MiB
    block = hashlib.shake_256(b"memory").digest(1 << 20)
    tracemalloc.start()
    try:
        with MultipartUpload(seaweedfs.client(), seaweedfs.bucket, name) as upload:
            for _ in range(total // len(block)):
                upload.write(block)
            upload.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert upload.size == total
    # The part being filled and IN_FLIGHT parts being sent, each perhaps held twice: not the 192 MiB streamed.
    assert peak < (2 * IN_FLIGHT + 2) * PART_SIZE, f"peak {peak >> 20} MiB"


def test_a_stream_that_fails_leaves_no_object_and_no_upload(seaweedfs: SeaweedFS) -> None:
    name = key()

    def dump_that_dies() -> None:
        with MultipartUpload(seaweedfs.client(), seaweedfs.bucket, name) as upload:
            for piece in pieces(2 * PART_SIZE + 1000, b"fails"):
                upload.write(piece)
            raise RuntimeError("the dump tool died")

    with pytest.raises(RuntimeError):
        dump_that_dies()
    assert seaweedfs.keys(name) == []
    assert seaweedfs.uploads(name) == []


def test_wrong_keys_name_the_object_and_endpoint_and_no_secret(seaweedfs: SeaweedFS) -> None:
    client = seaweedfs.client(aws_secret_access_key="not-" + SECRET_KEY)
    with pytest.raises(RunnerError) as raised, MultipartUpload(client, seaweedfs.bucket, "tests/wrong.dump"):
        pass
    assert raised.value.reason == "AuthenticationFailed"
    assert raised.value.message.startswith(f"s3://{seaweedfs.bucket}/tests/wrong.dump at {seaweedfs.endpoint}: ")
    assert SECRET_KEY not in raised.value.message


def test_a_missing_bucket_is_a_clear_error_before_anything_is_sent(seaweedfs: SeaweedFS) -> None:
    with pytest.raises(RunnerError) as raised:
        check_bucket(seaweedfs.client(), "no-such-bucket")
    assert raised.value.reason == "StorageError"
    assert raised.value.message == f"s3://no-such-bucket at {seaweedfs.endpoint}: NoSuchBucket: no such bucket"
    check_bucket(seaweedfs.client(), seaweedfs.bucket)


def test_stale_uploads_under_the_prefix_that_are_ours_are_aborted_and_no_others(seaweedfs: SeaweedFS) -> None:
    client = seaweedfs.client()
    folder = f"stale-{uuid.uuid4().hex}"
    ours, beside, theirs = f"{folder}/a.dump", f"{folder}/b.dump", f"other-{uuid.uuid4().hex}/a.dump"
    for name in (ours, beside, theirs):
        client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=name)
    prefix = folder + "/"

    def mine(found: str) -> bool:
        return found == ours

    assert abort_stale_uploads(client, seaweedfs.bucket, prefix, mine, older_than=timedelta(days=1)) == []
    assert abort_stale_uploads(client, seaweedfs.bucket, prefix, mine, older_than=timedelta(0)) == [ours]
    assert seaweedfs.uploads(prefix) == [beside]
    assert seaweedfs.uploads(theirs) == [theirs]


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("s3://backups", S3Location("backups", "")),
        ("s3://backups/shop/nightly/", S3Location("backups", "shop/nightly")),
    ],
)
def test_an_s3_url_is_a_bucket_and_a_prefix(url: str, location: S3Location) -> None:
    assert S3Location.parse(url) == location
    assert location.url("a.dump") == url.rstrip("/") + "/a.dump"


@pytest.mark.parametrize("url", ["https://backups/x", "s3:///x", "s3://b/a/../c"])
def test_a_bad_s3_url_is_refused_by_name(url: str) -> None:
    with pytest.raises(RunnerError, match="InvalidArguments"):
        S3Location.parse(url)
