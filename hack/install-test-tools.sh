#!/usr/bin/env bash
# Installs what the chart tests need besides the Go-built Kubernetes binaries,
# next to them ($CARBON_KUBE_K8S_BIN, default ~/.cache/carbon-kube/k8s/v1.37.2/bin):
#
#   bin/promtool   from Debian's `prometheus` package (apt-get download +
#                  dpkg -x: nothing is installed system-wide, no service starts);
#   crds/*.yaml    the real CustomResourceDefinitions of ServiceMonitor and
#                  PrometheusRule (Go module github.com/prometheus-operator/
#                  prometheus-operator) and of cert-manager's Certificate and
#                  Issuer (Go module github.com/cert-manager/cert-manager), so
#                  the test API server validates the chart's monitoring and
#                  certificate objects against their real schemas;
#                  Open Cluster Management's AddOnPlacementScore and Placement
#                  (Go module open-cluster-management.io/api) and Karmada's
#                  PropagationPolicy and ClusterPropagationPolicy (Go module
#                  github.com/karmada-io/karmada),
#                  for the multi-cluster tests (crates/carbon-kube-multicluster).
#
# helm is built by test/k8s/build.sh. Skips what is already present.
# Used by `make k8s-bin`; see docs/operations.md ("Testing the chart").
set -euo pipefail

K8S_VERSION=v1.37.2
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CERT_MANAGER_VERSION=v1.21.2
OCM_API_VERSION=v1.2.0
KARMADA_VERSION=v1.16.0

BIN="${CARBON_KUBE_K8S_BIN:-$HOME/.cache/carbon-kube/k8s/$K8S_VERSION/bin}"
CRDS="$(dirname "$BIN")/crds"
mkdir -p "$BIN" "$CRDS"

install_promtool() {
  if [[ -x "$BIN/promtool" ]]; then
    echo "test-tools: promtool already installed ($("$BIN/promtool" --version 2>&1 | head -n1))"
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; put promtool (Prometheus 2.42 or newer) into $BIN by hand" >&2
    return 1
  fi
  local work
  work="$(mktemp -d)"
  chmod 0755 "$work" # apt's sandbox user writes the download here
  # `apt-get download` needs package lists; refresh them only when the package is unknown.
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    echo "test-tools: apt-get update (package lists are missing)"
    if [[ $(id -u) -eq 0 ]]; then apt-get update -qq; else sudo apt-get update -qq; fi
  fi
  echo "test-tools: downloading Debian's prometheus package for promtool ..."
  (cd "$work" && apt-get download -qq prometheus)
  local deb
  deb="$(ls "$work"/prometheus_*.deb)"
  dpkg -x "$deb" "$work/extract"
  install -m 0755 "$work/extract/usr/bin/promtool" "$BIN/promtool"
  rm -rf "$work"
  echo "test-tools: installed $("$BIN/promtool" --version 2>&1 | head -n1) into $BIN"
}

# crd MODULE VERSION FILE...: copy CRD files out of a Go module.
crd() {
  local module=$1 version=$2
  shift 2
  local missing=()
  for f in "$@"; do [[ -f "$CRDS/$(basename "$f")" ]] || missing+=("$f"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "test-tools: CRDs of $module $version already present"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "error: 'go' is not on PATH; it fetches the CRDs (see README, Prerequisites)" >&2
    return 1
  fi
  echo "test-tools: fetching CRDs from Go module $module@$version ..."
  local dir
  dir="$(GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  for f in "${missing[@]}"; do
    install -m 0644 "$dir/$f" "$CRDS/$(basename "$f")"
  done
}

install_promtool
crd github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
  example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml
crd github.com/cert-manager/cert-manager "$CERT_MANAGER_VERSION" \
  deploy/crds/cert-manager.io_certificates.yaml \
  deploy/crds/cert-manager.io_issuers.yaml
crd open-cluster-management.io/api "$OCM_API_VERSION" \
  cluster/v1alpha1/0000_05_clusters.open-cluster-management.io_addonplacementscores.crd.yaml \
  cluster/v1beta1/0000_02_clusters.open-cluster-management.io_placements.crd.yaml
crd github.com/karmada-io/karmada "$KARMADA_VERSION" \
  charts/karmada/_crds/bases/policy/policy.karmada.io_propagationpolicies.yaml \
  charts/karmada/_crds/bases/policy/policy.karmada.io_clusterpropagationpolicies.yaml
echo "test-tools: promtool in $BIN, CRDs in $CRDS"
