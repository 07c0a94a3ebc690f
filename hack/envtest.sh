#!/usr/bin/env bash
# Makes sure kube-apiserver, etcd and kubectl exist and prints the folder that holds them (KUBEBUILDER_ASSETS),
# as envtest's own asset bundle does. kubectl is built at the API server's version so the tests never run into
# client/server skew; a KUBEBUILDER_ASSETS without kubectl is fine (the tests fall back to kubectl on PATH).
#
# Order: $KUBEBUILDER_ASSETS if it holds kube-apiserver and etcd; else the cache under ~/.cache keyed by version;
# else build both from the Go module proxy. Progress goes to stderr, only the folder to stdout.
#
# Why a wrapper module (hack/lib.sh, k8s_wrapper_module): `go install k8s.io/kubernetes/cmd/kube-apiserver@vX`
# cannot resolve the staging modules; a module of our own that replaces each with its published tag builds as usual.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

K8S_VERSION=${K8S_VERSION:-1.34.4}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}

have_both() { [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ]; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  if have_both "$KUBEBUILDER_ASSETS"; then echo "$KUBEBUILDER_ASSETS"; exit 0; fi
  echo "envtest: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; using the cache" >&2
fi

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/dbb-envtest
dest=$cache_root/k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION
have_all() { have_both "$1" && [ -x "$1/kubectl" ]; }
if have_all "$dest"; then echo "$dest"; exit 0; fi

command -v go >/dev/null || { echo "envtest: go is needed to build kube-apiserver and etcd; install Go 1.24+" >&2; exit 1; }
mkdir -p "$cache_root"
# One builder at a time; a second caller waits and then finds the cache filled.
exec 9>"$cache_root/.lock"
flock 9
if have_all "$dest"; then echo "$dest"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

build_apiserver() {
  mkdir -p "$work/k8s" && cd "$work/k8s"
  k8s_wrapper_module "$K8S_VERSION"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" >&2
  go get "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION" >&2
  local version_flags binary
  version_flags=$(k8s_version_ldflags "$K8S_VERSION")
  for binary in kube-apiserver kubectl; do
    # Reuse a kube-apiserver left from an earlier cache generation that had no kubectl.
    if [ "$binary" = kube-apiserver ] && [ -x "$dest/kube-apiserver" ]; then
      cp "$dest/kube-apiserver" "$work/out/"; continue
    fi
    go build -trimpath -o "$work/out/$binary" -ldflags "-s -w $version_flags" "k8s.io/kubernetes/cmd/$binary" >&2
  done
}

build_etcd() {
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init dbb.local/envtest-etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
  go build -trimpath -o "$work/out/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3 >&2
}

mkdir -p "$work/out"
echo "envtest: building kube-apiserver and kubectl v$K8S_VERSION and etcd v$ETCD_VERSION from Go modules" >&2
if [ -x "$dest/etcd" ]; then cp "$dest/etcd" "$work/out/"; else build_etcd; fi
build_apiserver
"$work/out/kube-apiserver" --version >&2
"$work/out/etcd" --version >&2
"$work/out/kubectl" version --client >&2
# Fill the cache atomically: a half-built folder never has the final name.
rm -rf "$dest.tmp" "$dest.old" && mv "$work/out" "$dest.tmp"
[ -d "$dest" ] && mv "$dest" "$dest.old"
mv "$dest.tmp" "$dest" && rm -rf "$dest.old"
echo "envtest: built in $(( $(date +%s) - start ))s into $dest" >&2
echo "$dest"
