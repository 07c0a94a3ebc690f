#!/usr/bin/env bash
# Makes sure SeaweedFS's `weed` exists and prints its path: the S3-compatible object store the tests start on
# loopback (tests/objectstore.py). Built from Go modules, as hack/envtest.sh builds the control plane, and cached
# under ~/.cache keyed by version: a second run costs nothing.
#
# Order: $WEED if it is an executable; else the cache; else build github.com/seaweedfs/seaweedfs/weed at
# SEAWEEDFS_VERSION. SeaweedFS tags its releases as 3.x and 4.x, which Go's module rules do not accept for a module
# without a /vN suffix, so the module proxy lists it only as a pseudo-version of a commit: that is the version here.
# Progress goes to stderr, only the path to stdout.
set -euo pipefail

SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}

if [ -n "${WEED:-}" ]; then
  if [ -x "$WEED" ]; then echo "$WEED"; exit 0; fi
  echo "seaweedfs: WEED=$WEED is not an executable; using the cache" >&2
fi

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/dbb-seaweedfs
dest=$cache_root/$SEAWEEDFS_VERSION/weed
if [ -x "$dest" ]; then echo "$dest"; exit 0; fi

command -v go >/dev/null || { echo "seaweedfs: go is needed to build weed; install Go 1.24+" >&2; exit 1; }
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [ -x "$dest" ]; then echo "$dest"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "seaweedfs: building weed $SEAWEEDFS_VERSION from Go modules" >&2
cd "$work"
go mod init dbb.local/seaweedfs >/dev/null 2>&1
go get "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" >&2
go build -trimpath -ldflags "-s -w" -o "$work/weed" github.com/seaweedfs/seaweedfs/weed >&2
"$work/weed" version >&2
mkdir -p "$(dirname "$dest")"
mv "$work/weed" "$dest.tmp" && mv "$dest.tmp" "$dest"
echo "seaweedfs: built in $(( $(date +%s) - start ))s into $dest" >&2
echo "$dest"
