#!/usr/bin/env bash
# The Debian packages the local cluster needs: the container runtime (containerd 1.6, runc), the CNI plugins
# (bridge, host-local, loopback, portmap), what kube-proxy and kubelet call (iptables, conntrack, ...), and the
# image tools (debootstrap, buildah). Installing containerd starts no service we use: the cluster runs its own.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/../lib.sh"
apt_install containerd runc containernetworking-plugins iptables conntrack ethtool socat iproute2 kmod \
  util-linux mount debootstrap buildah podman skopeo
