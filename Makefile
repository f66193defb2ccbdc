# Carbon-Kube developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
K8S_VERSION := v1.37.2
export CARBON_KUBE_K8S_BIN ?= $(HOME)/.cache/carbon-kube/k8s/$(K8S_VERSION)/bin
# Where tests and benches find the public data (read-only, never copied here).
export CARBON_KUBE_SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)

# Poller defaults for `make run-poller`: the free UK Carbon Intensity API,
# written to a local file so no cluster is needed.
POLL_ZONES ?= GB
POLL_OUTPUT ?= carbon-intensity.json

.PHONY: help
help: ## Show the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the carbon-kube binary (release)
	$(CARGO) build --release -p carbon-kube

.PHONY: k8s-bin
k8s-bin: ## Build the Kubernetes test binaries and kube-scheduler-carbon, fetch promtool and the chart-test CRDs (skips what exists)
	test/k8s/build.sh
	test/k8s/build-plugin.sh
	hack/install-test-tools.sh

.PHONY: test
test: k8s-bin iac-test ## Run every test, including the real control-plane tests and the IaC proofs
	$(CARGO) test --workspace --no-fail-fast

.PHONY: iac-test
iac-test: ## Offline proofs of cdk/, terraform/gcp/, arm-templates/ (synth, lint, policy scan; docs/deploy.md)
	hack/iac-test.sh

.PHONY: lint
lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: bench
bench: k8s-bin ## Run the benchmarks (see BENCHMARKS.md for what each measures)
	$(CARGO) bench --workspace

# `make soak`: the issue-18 campaign (docs/reliability.md): hostile-input
# properties with many more cases, then the fault and secret tests, and the
# control-plane faults (apiserver restart, etcd stall, leader kill, slow etcd) repeated
# SOAK_FAULT_ROUNDS times.
SOAK_CASES ?= 20000
SOAK_FAULT_ROUNDS ?= 5

.PHONY: soak
soak: k8s-bin ## Long hostile-input runs (PROPTEST_CASES=$(SOAK_CASES)) and the fault, secret and RBAC tests (docs/reliability.md)
	PROPTEST_CASES=$(SOAK_CASES) $(CARGO) test --no-fail-fast \
		-p carbon-kube-extender --test hostile_input --test config_faults \
		-p carbon-kube-gates --test hostile_input --test config_faults \
		-p carbon-kube-k8s --test hostile_snapshot \
		-p carbon-kube-signals --test hostile_input --test failures --test secrets \
		-p carbon-kube-poller --test provider_faults
	FAULT_ROUNDS=$(SOAK_FAULT_ROUNDS) $(CARGO) test --no-fail-fast \
		-p carbon-kube-extender -p carbon-kube-gates -p carbon-kube-migrator --test faults
	$(CARGO) test -p carbon-kube --test chart each_service_account_has_exactly_the_access_it_needs
	$(CARGO) test -p carbon-kube --test cli

# `make soak-scale`: the scale soak (docs/reliability.md, BENCHMARKS.md):
# SOAK_NODES kwok nodes (5,000), SOAK_PODS pods (50,000) churned over
# SOAK_MINUTES (15) through the real kube-scheduler with the extender, the
# poller, the gate controller (SOAK_DEFERRED deferred pods, 5,000) and the
# migrator (dry run, SOAK_MIGRATE_PODS, 2,000) as processes; memory, CPU,
# lag and decisions sampled. Not part of `make test` or `make soak`.
.PHONY: soak-scale
soak-scale: k8s-bin ## Scale soak: 5,000 kwok nodes, 50,000 pods churned, every component (SOAK_NODES, SOAK_PODS, SOAK_MINUTES)
	$(CARGO) test --release -p carbon-kube --test soak

.PHONY: dev-setup
dev-setup: ## Install the tools the project uses (Rust components, Go test binaries)
	rustup component add rustfmt clippy
	$(MAKE) k8s-bin

.PHONY: run-poller
run-poller: ## Poll once (free UK API, no key needed) and write $(POLL_OUTPUT)
	$(CARGO) run --release -p carbon-kube -- poller --once --zones $(POLL_ZONES) --chain 'default=uk_carbon_intensity,static' --output $(POLL_OUTPUT)

IMAGE ?= ghcr.io/carbon-kube/carbon-kube
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
CONTAINER_ENGINE ?= $(shell command -v docker || command -v podman)

.PHONY: build-images
build-images: ## Build the carbon-kube image (needs docker or podman)
	@test -n "$(CONTAINER_ENGINE)" || { echo "error: no docker or podman on PATH" >&2; exit 1; }
	$(CONTAINER_ENGINE) build -t $(IMAGE):$(IMAGE_TAG) .

.PHONY: chart-test
chart-test: k8s-bin ## Helm chart: lint/template, real API server, RBAC, PromQL vs /metrics, promtool
	$(CARGO) test -p carbon-kube --test chart

.PHONY: run-scheduler
run-scheduler: ## Run the extender against the current kubeconfig on 127.0.0.1:8888
	deploy/dev/run-scheduler.sh

.PHONY: dev-cluster
dev-cluster: k8s-bin ## Control plane, kwok nodes in three grid zones, carbon-kube scheduler + extender, snapshot file; prints a kubeconfig
	deploy/dev/dev-cluster.sh

# `make run-rl-tuner`: tune on the shared data (train 2022, validate 2023 and
# unseen zones), write the ConfigMap it would publish (shadow mode), every
# ConfigMap of the run into $(TUNER_DIR) and the report. Local files only;
# `make run-rl-tuner TUNER_KUBECONFIG=path` also writes them to that cluster.
TUNER_OUTPUT ?= target/carbon-kube-tuner-configmap.json
TUNER_REPORT ?= target/carbon-kube-tuner-report.json
TUNER_DIR ?= target/carbon-kube-tuner
TUNER_KUBECONFIG ?=
TUNER_ARGS ?=

.PHONY: run-rl-tuner
run-rl-tuner: ## Tune the knobs on the shared data (grid search, CMA-ES, PPO), write $(TUNER_OUTPUT)
	$(CARGO) run --release -p carbon-kube -- tune --output $(TUNER_OUTPUT) --report $(TUNER_REPORT) --output-dir $(TUNER_DIR) $(if $(TUNER_KUBECONFIG),--kubeconfig $(TUNER_KUBECONFIG)) $(TUNER_ARGS)
