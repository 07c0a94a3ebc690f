#!/usr/bin/env bash
# Makes sure helm exists and prints its path: the chart tests (helm lint, helm template) and the e2e Helm install
# run it. Built from Go modules (hack/lib.sh, go_tool) and cached under ~/.cache keyed by version.
# Order: $HELM if it is an executable; else the cache; else build helm.sh/helm/v4/cmd/helm at HELM_VERSION.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

HELM_VERSION=${HELM_VERSION:-v4.3.2}

given_tool helm HELM && exit 0
# Without the -X flags `helm version` says only the minor version (v4.3), the default in its source.
go_tool dbb-helm helm "$HELM_VERSION" helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm \
  "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
