"""Where the local cluster lives and how its network is laid out: one place for every path, name and address.

The whole cluster runs inside one network namespace (`NETNS`). Its node address, pod range and Service range exist
only in there; the namespace's default route points at an interface with nothing behind it, so nothing routed
inside ever leaves it. The host sees one thing: a forwarder on 127.0.0.1 that carries kubectl's connections into
the namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = os.environ.get("K8S_VERSION", "1.34.4")
NETNS = "dbb-cluster"
NODE_NAME = "dbb-node"
NODE_INTERFACE = "dbb-node0"  # a bridge without ports: the node's address, and where the default route ends
NODE_IP = "10.213.0.2"
NODE_PREFIX = 24
POD_CIDR = "10.214.0.0/24"
POD_GATEWAY = "10.214.0.1"
SERVICE_CIDR = "10.215.0.0/16"
API_SERVICE_IP = "10.215.0.1"  # the first address of the Service range: the `kubernetes` Service
DNS_SERVICE_IP = "10.215.0.10"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443
# The host side of the API server: a forwarder listening on loopback only.
HOST_API_PORT = int(os.environ.get("DBB_CLUSTER_API_PORT", "16443"))
CGROUP_ROOT = "dbb-cluster"  # under every cgroup v1 hierarchy: the daemons in system/, the Pods in kubepods/
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


@dataclass(frozen=True)
class Paths:
    """State survives nothing: `down` removes both folders; what is worth keeping lives in ~/.cache."""

    state: Path = Path(os.environ.get("DBB_CLUSTER_STATE", "/var/lib/dbb-cluster"))
    run: Path = Path(os.environ.get("DBB_CLUSTER_RUN", "/run/dbb-cluster"))

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def etcd(self) -> Path:
        return self.state / "etcd"

    @property
    def kubelet(self) -> Path:
        return self.state / "kubelet"

    @property
    def containerd_root(self) -> Path:
        return self.state / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.run / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd" / "containerd.sock"

    @property
    def cni_conf(self) -> Path:
        return self.state / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.state / "cni" / "ipam"

    @property
    def local_path(self) -> Path:
        """Where the provisioner puts each PVC's folder (a hostPath on the node, i.e. on this machine)."""
        return self.state / "local-path"

    @property
    def pod_logs(self) -> Path:
        return self.state / "pod-logs"

    @property
    def pids(self) -> Path:
        return self.run / "pids"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig for the host: it names the loopback forwarder."""
        return self.state / "kubeconfig"


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "dbb-cluster"
