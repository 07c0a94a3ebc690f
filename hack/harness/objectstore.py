"""A real S3-compatible object store for the tests: SeaweedFS (`weed server` with its S3 gateway) on loopback, built
from Go modules by hack/seaweedfs.sh and cached. Its own data folder, ports, keys and bucket per session.

Server-side encryption with store-managed keys (SSE-S3, `AES256`) is on; SSE-KMS is not (it needs a KMS).

Every port is given explicitly (master, volume, filer and S3, each with its gRPC port; the Iceberg and Lance
endpoints off): SeaweedFS otherwise derives gRPC ports as port + 10000 and listens on fixed defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from hack.harness.databases import free_port

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY = "AKIDTESTSEAWEED"
SECRET_KEY = "s3cret-Key-for-tests-never-shown"  # the test store's own key


def weed() -> str:
    return subprocess.run(
        ["bash", str(ROOT / "hack" / "seaweedfs.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class SeaweedFS:
    folder: Path
    process: subprocess.Popen[bytes]
    endpoint: str
    bucket: str = "backups"
    log: Path = field(default_factory=Path)
    argv: list[str] = field(default_factory=list)
    ca: Path | None = None  # with TLS: the CA that signed the S3 gateway's certificate

    @classmethod
    @contextlib.contextmanager
    def start(cls, folder: Path, *, tls: tuple[bytes, bytes, bytes] | None = None) -> Iterator[SeaweedFS]:
        """`tls`: (certificate, key, CA certificate) PEM for the S3 gateway, which then speaks only HTTPS."""
        data = folder / "data"  # an earlier store's, if the folder is reused: its buckets and objects stay
        data.mkdir(parents=True, exist_ok=True)
        config = folder / "s3.json"
        identity = {"name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        grpc = {name: free_port() for name in ports}
        argv = [weed(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3"]
        argv += [f"-{name}.port={port}" for name, port in ports.items()]
        argv += [f"-{name}.port.grpc={port}" for name, port in grpc.items()]
        argv += ["-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}", "-master.telemetry=false"]
        argv += ["-volume.max=0", "-master.volumeSizeLimitMB=256", "-volume.preStopSeconds=0"]
        scheme, ca = "http", None
        if tls is not None:
            cert, key, ca = folder / "s3.crt", folder / "s3.key", folder / "ca.crt"
            for path, pem in zip((cert, key, ca), tls, strict=True):
                path.write_bytes(pem)
            argv += [f"-s3.cert.file={cert}", f"-s3.key.file={key}"]
            scheme = "https"
        log = folder / "weed.log"
        endpoint = f"{scheme}://127.0.0.1:{ports['s3']}"
        store = cls(folder, _launch(argv, log), endpoint, log=log, argv=argv, ca=ca)
        try:
            store.wait_ready()
            try:
                store.client().create_bucket(Bucket=store.bucket)
            except store.client().exceptions.BucketAlreadyOwnedByYou:
                pass
            yield store
        finally:
            store.stop()

    @property
    def credentials(self) -> dict[str, str]:
        """The store's access keys, under the names a DatabaseBackup's credentials Secret uses by default."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables, as the backup Job sets them."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        } | ({"AWS_CA_BUNDLE": str(self.ca)} if self.ca else {})

    def client(self, **overrides: Any) -> Any:
        settings = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region_name": "us-east-1",
            "config": Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
            "verify": str(self.ca) if self.ca else None,
        } | overrides
        return boto3.client("s3", **settings)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the S3 gateway answers a signed request (the master, volume and filer come up before it)."""
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            assert self.process.poll() is None, f"weed exited: {self.log.read_text()[-2000:]}"
            try:
                client.list_buckets()
                return
            except Exception:
                assert time.monotonic() < deadline, f"SeaweedFS not ready in {timeout}s: {self.log.read_text()[-2000:]}"
                time.sleep(0.2)

    def kill(self) -> None:
        """The store stops at once, as a crashed or unreachable one does: no request is answered any more."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        """The same store again: same data, ports, keys and buckets."""
        self.stop()
        self.process = _launch(self.argv, self.log)
        self.wait_ready()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds: the volume server stops at once (-volume.preStopSeconds=0) and
        every object is on disk by then, but weed's filer keeps retrying to flush its own event log to the stopped
        volume server for 15 s before it exits."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(str(o["Key"]) for o in listed.get("Contents") or [])

    def uploads(self, prefix: str = "") -> list[str]:
        listed = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return sorted(str(u["Key"]) for u in listed.get("Uploads") or [])


def _launch(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    # SSE-S3 (ServerSideEncryption AES256) needs a key-encryption key: any string, from which SeaweedFS derives one.
    env = os.environ | {"WEED_S3_SSE_KEY": "test-store-key-encryption-key"}
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
