# DatabaseBackup operator. `make test` is all a fresh machine needs; `make run` starts the operator locally.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

# --- setup ---------------------------------------------------------------------------------------------------

$(STAMP): pyproject.toml hack/bootstrap.sh
	bash hack/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv with the package and its test tools

.PHONY: envtest
envtest: ## Make sure kube-apiserver, etcd and kubectl exist; print their folder (KUBEBUILDER_ASSETS)
	@bash hack/envtest.sh

# --- checks --------------------------------------------------------------------------------------------------

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict and the import layers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: fmt
fmt: $(STAMP) ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: test
test: $(STAMP) ## Everything: install what is missing, lint, then the whole suite on a real control plane
	bash hack/databases.sh
	bash hack/prometheus.sh
	@assets=$$(bash hack/envtest.sh) && echo "KUBEBUILDER_ASSETS=$$assets"
	@weed=$$(bash hack/seaweedfs.sh) && echo "WEED=$$weed (SeaweedFS, the S3-compatible store the tests start)"
	@helm=$$(bash hack/helm.sh) && echo "HELM=$$helm (the chart tests: helm lint, helm template)"
	$(MAKE) --no-print-directory lint
	KUBEBUILDER_ASSETS=$$(bash hack/envtest.sh) HELM=$$(bash hack/helm.sh) \
	  $(BIN)/python -m pytest -W error --ignore=tests/e2e $(PYTEST_ARGS)

.PHONY: unit
unit: $(STAMP) ## Only the tests that need no cluster and no database
	HELM=$$(bash hack/helm.sh) $(BIN)/python -m pytest -W error tests/unit $(PYTEST_ARGS)

.PHONY: bench
bench: $(STAMP) ## Benchmarks against same-run baselines; writes tests/bench/RESULTS.md (BENCH=name to pick one)
	bash hack/databases.sh
	KUBEBUILDER_ASSETS=$$(bash hack/envtest.sh) $(BIN)/python -m tests.bench $(BENCH)

# --- the operator on this machine -----------------------------------------------------------------------------

SANDBOX := $(BIN)/python -m hack.sandbox

.PHONY: run
run: $(STAMP) ## The reconciler against KUBECONFIG if a cluster answers, else the whole local sandbox (Ctrl-C stops)
	@if [ -n "$$KUBECONFIG" ] && kubectl version --request-timeout=3s >/dev/null 2>&1; then \
	  echo "Cluster at \$$KUBECONFIG: installing the CRD and running the reconciler here (Ctrl-C stops)."; \
	  echo "The webhook is not run: a cluster's API server cannot reach it here. Deploy it with make deploy."; \
	  $(BIN)/dbb-certs --service dbb-reconciler --host 127.0.0.1 --out .dev/reconciler-tls >/dev/null && \
	  kubectl apply --server-side -f deploy/crd/ && \
	  exec $(BIN)/dbb-reconciler --kubeconfig "$$KUBECONFIG" --cert-dir .dev/reconciler-tls; \
	else \
	  bash hack/databases.sh && exec $(SANDBOX) run; \
	fi

.PHONY: dev-up
dev-up: $(STAMP) ## The local sandbox in the background: control plane, webhook, reconciler, PostgreSQL, samples
	bash hack/databases.sh
	$(SANDBOX) up

.PHONY: dev-down
dev-down: ## Stop the background sandbox (backups in .dev/backups stay); never rebuilds anything
	$(SANDBOX) down

.PHONY: dev-status
dev-status: ## Is the background sandbox running?
	-@$(SANDBOX) status

# --- a real single-node cluster on this machine (Linux, root) ------------------------------------------------

CLUSTER := $(BIN)/python -m hack.cluster

.PHONY: cluster-up
cluster-up: $(STAMP) ## A real single-node Kubernetes cluster in its own network namespace; prints its kubeconfig
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: $(STAMP) ## Stop the local cluster: no process, mount, network namespace or veth is left
	$(CLUSTER) down

# With E2E_KUBECONFIG (and E2E_IMG, an image that cluster can pull), any cluster; else the local one, into which the
# operator image is built and loaded first.
.PHONY: e2e
e2e: $(STAMP) ## The end-to-end suite: deploy with make deploy, then real backups, restores, failures, undeploy
	@assets=$$(bash hack/envtest.sh) && export KUBEBUILDER_ASSETS=$$assets PATH="$$assets:$$PATH" && \
	export HELM=$$(bash hack/helm.sh) && \
	if [ -z "$$E2E_KUBECONFIG" ]; then \
	  export E2E_KUBECONFIG=$$($(CLUSTER) kubeconfig) && images=$$($(CLUSTER) load) && eval "$$images"; \
	fi && \
	echo "e2e: cluster $$E2E_KUBECONFIG, image $$E2E_IMG" && \
	$(BIN)/python -m pytest -W error tests/e2e $(PYTEST_ARGS)

# --- cluster -------------------------------------------------------------------------------------------------

IMG ?= databasebackup-operator:latest
DEPLOY_DIR ?= deploy/
CONTAINER_TOOL ?= docker

.PHONY: install
install: ## Install the CRD into the current cluster (KUBECONFIG)
	kubectl apply --server-side -f deploy/crd/

.PHONY: uninstall
uninstall: ## Remove the CRD (and with it every DatabaseBackup) from the current cluster
	kubectl delete --ignore-not-found -f deploy/crd/

# sed, not kustomize's images: the reconciler also names the image in DBB_RUNNER_IMAGE (for its backup Jobs).
.PHONY: deploy
deploy: ## Deploy the whole operator from deploy/ to the current cluster (IMG=registry/name:tag; DEPLOY_DIR=overlays/namespaced for the namespaced install)
	kubectl kustomize $(DEPLOY_DIR) | sed 's|databasebackup-operator:latest|$(IMG)|g' | kubectl apply --server-side -f -

.PHONY: undeploy
undeploy: ## Remove the operator, its namespace and the CRD (with every DatabaseBackup) from the current cluster
	kubectl delete --ignore-not-found -k $(DEPLOY_DIR)

CHART := charts/databasebackup-operator

.PHONY: chart-lint
chart-lint: ## helm lint and helm template of the Helm chart (helm built from Go modules on first use)
	@helm=$$(bash hack/helm.sh) && $$helm lint --strict $(CHART) && \
	  $$helm template dbb $(CHART) --namespace dbb-system --include-crds >/dev/null && echo "helm template: ok"

# Helm installs crds/ verbatim and never upgrades it: the chart carries copies of deploy/crd/, which tests/unit/
# test_chart.py keeps equal.
.PHONY: chart-crds
chart-crds: ## Copy deploy/crd/*.yaml into the chart's crds/ (after a CRD change)
	cp deploy/crd/*.yaml $(CHART)/crds/

.PHONY: docker-build
docker-build: ## Build the image (IMG=registry/name:tag); needs a container engine
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image (IMG=registry/name:tag)
	$(CONTAINER_TOOL) push $(IMG)
