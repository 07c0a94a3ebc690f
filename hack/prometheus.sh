#!/usr/bin/env bash
# Makes sure Prometheus and promtool (Debian's `prometheus` package) are installed: the alert rules are checked and
# unit-tested with promtool, and the tests start their own Prometheus in a temporary folder on 127.0.0.1 (the
# packaged service is never started). Progress goes to stderr.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

apt_install prometheus
for tool in prometheus promtool; do
  command -v "$tool" >/dev/null || {
    echo "prometheus: $tool still missing after install" >&2
    exit 1
  }
done
