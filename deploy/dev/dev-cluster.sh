#!/usr/bin/env bash
# `make dev-cluster`: local control plane, kwok nodes in three grid zones,
# the carbon-kube kube-scheduler with the extender, a snapshot from a local
# file (DEV_SNAPSHOT, default ./dev-snapshot.json). Prints a kubeconfig.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo run --release -p carbon-kube-extender --example dev_cluster
