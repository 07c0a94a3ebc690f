"""What each cluster process is: its command line and the files it reads. Pure: paths in, argv and file text out."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from hack.cluster import config
from hack.cluster.config import Paths


@dataclass(frozen=True)
class Component:
    name: str
    argv: tuple[str, ...]


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "dbb", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "dbb", "context": {"cluster": "dbb", "user": user}}],
        "current-context": "dbb",
    }
    return yaml.safe_dump(document, sort_keys=False)


def containerd_config(paths: Paths, sandbox_image: str) -> str:
    """containerd 1.6 (Debian's), CRI v1. Everything of ours lives under our own root, state and socket, so a
    containerd the host may run is untouched. Two settings this VM needs (both found the hard way): it refuses a
    negative oom_score_adj, so CRI must not ask for one; and the sandbox image is a local one."""
    return f"""version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.containerd_state}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.state}/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{paths.run}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{config.CNI_BIN_DIR}"
    conf_dir = "{paths.cni_conf}"
"""


def cni_config(paths: Paths) -> str:
    """One bridge for every Pod, masquerading nothing that stays inside; host-local addresses in our own folder."""
    document = {
        "cniVersion": "1.0.0",
        "name": "dbb",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": config.POD_CIDR, "gateway": config.POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(document, indent=2)


def kubelet_config(paths: Paths) -> str:
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(paths.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        # This machine: no systemd, cgroup v1 (supported, in maintenance, since 1.31: say so explicitly).
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{config.CGROUP_ROOT}",
        "failCgroupV1": False,
        "failSwapOn": False,
        # The VM refuses negative oom_score_adj values (runc then dies with "can't get final child's PID").
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "clusterDNS": [config.DNS_SERVICE_IP],
        "clusterDomain": config.CLUSTER_DOMAIN,
        "resolvConf": str(paths.state / "resolv.conf"),
        "podLogsDir": str(paths.pod_logs),
        # A developer's disk may be fuller than a cluster node's: evict only when it is really full.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "staticPodPath": "",
        "registerNode": True,
        "maxPods": 60,
        "shutdownGracePeriod": "0s",
    }
    return yaml.safe_dump(document, sort_keys=False)


def kube_proxy_config(paths: Paths) -> str:
    document = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.state / "kube-proxy.kubeconfig")},
        "mode": "iptables",
        "clusterCIDR": config.POD_CIDR,
        "hostnameOverride": config.NODE_NAME,
        "bindAddress": config.NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # conntrack limits are host-wide sysctls: leave them as they are.
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "oomScoreAdj": 0,
    }
    return yaml.safe_dump(document, sort_keys=False)


def components(paths: Paths, binaries: Path) -> list[Component]:
    pki = paths.pki
    return [
        Component(
            "containerd",
            ("containerd", "--config", str(paths.state / "containerd.toml")),
        ),
        Component(
            "etcd",
            (
                str(binaries / "etcd"),
                "--name=dbb",
                f"--data-dir={paths.etcd}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=dbb=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ),
        ),
        Component(
            "kube-apiserver",
            (
                str(binaries / "kube-apiserver"),
                "--etcd-servers=http://127.0.0.1:2379",
                f"--advertise-address={config.NODE_IP}",
                "--bind-address=0.0.0.0",
                f"--secure-port={config.API_PORT}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={config.SERVICE_CIDR}",
                f"--service-account-issuer=https://kubernetes.default.svc.{config.CLUSTER_DOMAIN}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--event-ttl=2h",
            ),
        ),
        Component(
            "kube-controller-manager",
            (
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={paths.state / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={paths.state / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={paths.state / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={config.SERVICE_CIDR}",
                "--profiling=false",
            ),
        ),
        Component(
            "kube-scheduler",
            (
                str(binaries / "kube-scheduler"),
                f"--kubeconfig={paths.state / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={paths.state / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={paths.state / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--profiling=false",
            ),
        ),
        Component(
            "kubelet",
            (
                str(binaries / "kubelet"),
                f"--config={paths.state / 'kubelet.yaml'}",
                f"--kubeconfig={paths.state / 'kubelet.kubeconfig'}",
                f"--root-dir={paths.kubelet}",
                f"--cert-dir={paths.kubelet / 'pki'}",
                f"--node-ip={config.NODE_IP}",
                f"--hostname-override={config.NODE_NAME}",
            ),
        ),
        Component(
            "kube-proxy",
            (str(binaries / "kube-proxy"), f"--config={paths.state / 'kube-proxy.yaml'}"),
        ),
    ]
