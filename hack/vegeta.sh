#!/usr/bin/env bash
# Makes sure vegeta (github.com/tsenart/vegeta, an open-loop HTTP load generator written in Go) exists and prints its
# path: the webhook benchmark drives its fixed-rate latency run with it, so the client is not the Python under test.
# Built from Go modules (hack/lib.sh, go_tool) and cached under ~/.cache keyed by version.
# Order: $VEGETA if it is an executable; else the cache; else build.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

VEGETA_VERSION=${VEGETA_VERSION:-v12.13.0}

given_tool vegeta VEGETA && exit 0
go_tool dbb-vegeta vegeta "$VEGETA_VERSION" github.com/tsenart/vegeta/v12 github.com/tsenart/vegeta/v12
