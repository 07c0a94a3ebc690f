#!/usr/bin/env bash
# Makes sure SeaweedFS's `weed` exists and prints its path: the S3-compatible object store the tests start on
# loopback (hack/harness/objectstore.py). Built from Go modules, as hack/envtest.sh builds the control plane, and cached
# under ~/.cache keyed by version: a second run costs nothing.
#
# Order: $WEED if it is an executable; else the cache; else build github.com/seaweedfs/seaweedfs/weed at
# SEAWEEDFS_VERSION. SeaweedFS tags its releases as 3.x and 4.x, which Go's module rules do not accept for a module
# without a /vN suffix, so the module proxy lists it only as a pseudo-version of a commit: that is the version here.
# Progress goes to stderr, only the path to stdout (hack/lib.sh, go_tool).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}

given_tool seaweedfs WEED && exit 0

go_tool dbb-seaweedfs weed "$SEAWEEDFS_VERSION" github.com/seaweedfs/seaweedfs github.com/seaweedfs/seaweedfs/weed
