"""An S3-compatible object store inside the cluster for the e2e suite: SeaweedFS (`weed server` with its S3 gateway)
as a Deployment of the locally built scratch image (E2E_SEAWEEDFS_IMG, which `make e2e` takes from
`python -m hack.cluster load`), behind a Service, with one identity and one bucket.

The store runs as the databases do, under the restricted Pod Security Standard: non-root, read-only root, no
capabilities. Its data is an emptyDir (it lives as long as the test module's namespace), and every port is given
explicitly: only the S3 gateway listens on the Pod's address; master, volume server and filer (and their gRPC ports,
whose filer IAM service takes no credentials) listen on loopback. Telemetry is off: nothing leaves the cluster.

The image holds nothing but `weed`, so whatever needs a client (creating the bucket, listing and verifying backups)
runs in a short-lived Pod of the operator's image, which has boto3 and `dbb-backup`, with the keys from the Secret.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from tests.e2e.kube import Kube, wait_for
from tests.e2e.pods import run_pod

S3_PORT = 8333
# Each of SeaweedFS's servers and its gRPC port; without them it derives gRPC ports as port + 10000.
LOOPBACK_PORTS = {"master": (9333, 19333), "volume": (8080, 18080), "filer": (8888, 18888)}
REGION = "us-east-1"

# The client the suite runs in a Pod of the operator's image: `create BUCKET TIMEOUT` creates the bucket once the
# gateway and the filer behind it answer (a gateway that has just come up refuses until the filer has registered
# with the master, so it retries until its deadline); `keys BUCKET PREFIX` prints every key under PREFIX as JSON.
S3_CLIENT = """
import json, sys, time
import boto3
from botocore.config import Config
client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
command, bucket = sys.argv[1:3]
if command == "keys":
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[3])
    print(json.dumps(sorted(o["Key"] for page in pages for o in page.get("Contents", []))))
    sys.exit()
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        client.create_bucket(Bucket=bucket)
        break
    except client.exceptions.BucketAlreadyOwnedByYou:
        break
    except Exception as error:
        if time.monotonic() > deadline:
            raise
        print("not yet:", type(error).__name__, flush=True)
        time.sleep(1)
print("created", bucket)
"""


def image() -> str:
    value = os.environ.get("E2E_SEAWEEDFS_IMG")
    assert value, (
        "E2E_SEAWEEDFS_IMG is not set: `make e2e` takes it from `python -m hack.cluster load` (hack/cluster/images.sh "
        "builds dbb.local/seaweedfs from hack/seaweedfs.sh's weed); for another cluster, set it to an image of weed"
    )
    return value


@dataclass(frozen=True)
class SeaweedFS:
    namespace: str
    access_key: str
    secret_key: str
    name: str = "seaweedfs"
    bucket: str = "backups"

    @property
    def endpoint(self) -> str:
        return f"http://{self.name}.{self.namespace}.svc:{S3_PORT}"

    @property
    def credentials_secret(self) -> str:
        """The Secret a DatabaseBackup names: the key pair under the AWS variables' names (its default keys)."""
        return f"{self.name}-credentials"

    @property
    def store_name(self) -> str:
        """The BackupStore (cluster-scoped) through which DatabaseBackups reach this bucket."""
        return f"{self.name}-{self.namespace}"

    def backup_store(self) -> dict[str, Any]:
        """The BackupStore a cluster administrator applies for this bucket, open to this namespace only."""
        s3 = {
            "bucket": self.bucket,
            "endpoint": self.endpoint,
            "region": REGION,
            "allowInsecure": True,
            "forcePathStyle": True,
            "credentialsSecret": {"name": self.credentials_secret},
        }
        selector = {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}
        return {
            "apiVersion": "databases.test.io/v1",
            "kind": "BackupStore",
            "metadata": {"name": self.store_name},
            "spec": {"s3": s3, "namespaceSelector": selector},
        }

    def storage(self, **overrides: Any) -> dict[str, Any]:
        """`spec.storage` of a DatabaseBackup that backs up to this store's bucket."""
        return {"s3": {"store": self.store_name, **overrides}}

    def env(self) -> list[dict[str, Any]]:
        """The AWS variables for a client Pod, the keys by secretKeyRef as the backup Job takes them."""
        keys = [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": self.credentials_secret, "key": name}}}
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
        return [*keys, {"name": "AWS_ENDPOINT_URL", "value": self.endpoint}, {"name": "AWS_REGION", "value": REGION}]


def manifests(store: SeaweedFS) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": store.name}
    meta = {"namespace": store.namespace, "labels": labels}
    identity = {
        "name": "e2e",
        "credentials": [{"accessKey": store.access_key, "secretKey": store.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{store.name}-config", **meta},
        "stringData": {"s3.json": json.dumps({"identities": [identity]})},
    }
    credentials = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": store.credentials_secret, **meta},
        "stringData": {"AWS_ACCESS_KEY_ID": store.access_key, "AWS_SECRET_ACCESS_KEY": store.secret_key},
    }
    args = ["server", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3.ip.bind=0.0.0.0", "-filer", "-s3"]
    for server, (port, grpc) in LOOPBACK_PORTS.items():
        args += [f"-{server}.port={port}", f"-{server}.port.grpc={grpc}"]
    args += [f"-s3.port={S3_PORT}", f"-s3.port.grpc={S3_PORT + 10000}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    args += ["-s3.config=/etc/seaweedfs/s3.json", "-master.telemetry=false"]
    # Volumes as many as the disk holds, each at most 256 MB: the default (30 GB each, 8 of them) reserves more than
    # an emptyDir on a test node has.
    args += ["-volume.max=0", "-master.volumeSizeLimitMB=256"]
    container = {
        "name": "seaweedfs",
        "image": image(),
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [{"name": "s3", "containerPort": S3_PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "s3"}, "periodSeconds": 2, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            # Its servers talk over Unix sockets in /tmp, and it logs there too.
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "config", "mountPath": "/etc/seaweedfs", "readOnly": True},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": store.name, **meta},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "emptyDir": {"sizeLimit": "2Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        {"name": "config", "secret": {"secretName": f"{store.name}-config", "defaultMode": 0o440}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": store.name, **meta},
        "spec": {"selector": labels, "ports": [{"name": "s3", "port": S3_PORT, "targetPort": "s3"}]},
    }
    return [config, credentials, deployment, service]


def deploy(kube: Kube, store: SeaweedFS) -> None:
    kube.apply(*manifests(store), store.backup_store())


def remove(kube: Kube, store: SeaweedFS) -> None:
    """The BackupStore: cluster-scoped, it outlives the namespace."""
    kube.run("delete", "backupstore", store.store_name, "--ignore-not-found")


def wait_ready(kube: Kube, store: SeaweedFS, timeout: float = 300) -> None:
    """The gateway answers its health check, then a client in the cluster creates the bucket through the Service."""

    def ready() -> bool:
        status = kube.get("deployment", store.name, store.namespace).get("status", {})
        return bool(status.get("readyReplicas") == 1)

    wait_for(f"SeaweedFS ({store.namespace}/{store.name}) ready", ready, timeout)
    output = run_pod(kube, store.namespace, client("create", store.bucket, str(timeout)), {}, env=store.env())
    assert f"created {store.bucket}" in output, output


def client(*args: str) -> list[str]:
    return ["python", "-c", S3_CLIENT, *args]


def keys(kube: Kube, store: SeaweedFS, prefix: str) -> list[str]:
    """Every key under `prefix` in the bucket, as a client in the cluster lists them."""
    output = run_pod(kube, store.namespace, client("keys", store.bucket, prefix), {}, env=store.env())
    found: list[str] = json.loads(output.strip().splitlines()[-1])
    return found


def dbb_backup(kube: Kube, store: SeaweedFS, *args: str) -> tuple[dict[str, Any], str]:
    """`dbb-backup ARGS --s3-path-style` in a Pod with the store's keys: its result line, and the Pod's whole log."""
    output = run_pod(kube, store.namespace, ["dbb-backup", *args, "--s3-path-style"], {}, env=store.env())
    line = next((line for line in output.splitlines() if line.startswith('{"status"')), None)
    assert line is not None, f"no result line from dbb-backup {' '.join(args)}:\n{output}"
    result: dict[str, Any] = json.loads(line)
    return result, output
