#!/usr/bin/env bash
# `make run-scheduler`: the extender against the current kubeconfig, on
# 127.0.0.1:8888, reading ConfigMaps carbon-intensity-data and
# carbon-kube-config from namespace ${CARBON_KUBE_NAMESPACE:-carbon-kube}.
# Point a kube-scheduler at it with deploy/scheduler/kube-scheduler-config.yaml.
# Extra arguments go to `carbon-kube extender` (e.g. --snapshot-file FILE).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec cargo run --release -p carbon-kube -- --debug extender --listen "${EXTENDER_LISTEN:-127.0.0.1:8888}" "$@"
