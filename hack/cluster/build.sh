#!/usr/bin/env bash
# Builds every binary the local cluster runs, from Go modules, and prints the folder that holds them:
#   etcd, kube-apiserver, kubectl            (hack/envtest.sh's cache, shared with the test suite)
#   kube-controller-manager, kube-scheduler, kubelet, kube-proxy   (the same wrapper-module trick, same version)
#   coredns, local-path-provisioner, pause  (the cluster's DNS, its PVC provisioner, containerd's sandbox process)
# Each binary is built once into ~/.cache/dbb-cluster/bin-<versions>/ (atomically: a half-built file never has its
# final name); a second run only checks. Progress goes to stderr, the folder to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
source "$here/../lib.sh"

K8S_VERSION=${K8S_VERSION:-1.34.4}
COREDNS_VERSION=${COREDNS_VERSION:-1.15.0}
LOCAL_PATH_VERSION=${LOCAL_PATH_VERSION:-0.0.30}

envtest=$(K8S_VERSION=$K8S_VERSION bash "$here/../envtest.sh")
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/dbb-cluster
dest=$cache_root/bin-k8s-v$K8S_VERSION-coredns-v$COREDNS_VERSION-lpp-v$LOCAL_PATH_VERSION
k8s_binaries=(kube-controller-manager kube-scheduler kubelet kube-proxy)
all=(etcd kube-apiserver kubectl "${k8s_binaries[@]}" coredns local-path-provisioner pause)
complete() { local b; for b in "${all[@]}"; do [ -x "$dest/$b" ] || return 1; done; }
if complete; then echo "$dest"; exit 0; fi

mkdir -p "$dest"
exec 9>"$cache_root/.lock"
flock 9
if complete; then echo "$dest"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
# install NAME FILE: put a finished binary in place under its final name.
install_binary() { cp "$2" "$dest/.$1.tmp" && mv "$dest/.$1.tmp" "$dest/$1"; }

for b in etcd kube-apiserver kubectl; do [ -x "$dest/$b" ] || install_binary "$b" "$envtest/$b"; done

missing=()
for b in "${k8s_binaries[@]}"; do [ -x "$dest/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cluster: building ${missing[*]} v$K8S_VERSION from Go modules" >&2
  mkdir -p "$work/k8s" && cd "$work/k8s"
  k8s_wrapper_module "$K8S_VERSION"
  for b in "${missing[@]}"; do go get "k8s.io/kubernetes/cmd/$b@v$K8S_VERSION" >&2; done
  flags=$(k8s_version_ldflags "$K8S_VERSION")
  for b in "${missing[@]}"; do
    go build -trimpath -o "$work/$b" -ldflags "-s -w $flags" "k8s.io/kubernetes/cmd/$b" >&2
    install_binary "$b" "$work/$b"
  done
fi

# go_main NAME MODULE@VERSION PACKAGE [LDFLAGS]: build a main package of a published module from a module of ours.
go_main() {
  local name=$1 module=$2 package=$3 ldflags=${4:-}
  [ -x "$dest/$name" ] && return 0
  echo "cluster: building $name ($module) from Go modules" >&2
  mkdir -p "$work/$name" && cd "$work/$name"
  go mod init "dbb.local/$name" >/dev/null 2>&1
  go get "$module" >&2
  go build -trimpath -o "$work/$name/$name" -ldflags "-s -w $ldflags" "$package" >&2
  install_binary "$name" "$work/$name/$name"
}
go_main coredns "github.com/coredns/coredns@v$COREDNS_VERSION" github.com/coredns/coredns
go_main local-path-provisioner "github.com/rancher/local-path-provisioner@v$LOCAL_PATH_VERSION" \
  github.com/rancher/local-path-provisioner "-X main.VERSION=v$LOCAL_PATH_VERSION"

if [ ! -x "$dest/pause" ]; then
  mkdir -p "$work/pause" && cp "$here/pause/main.go" "$work/pause/" && cd "$work/pause"
  go mod init dbb.local/pause >/dev/null 2>&1
  go build -trimpath -o "$work/pause/pause" -ldflags "-s -w" . >&2
  install_binary pause "$work/pause/pause"
fi

complete
echo "cluster: binaries ready in $(( $(date +%s) - start ))s in $dest" >&2
echo "$dest"
