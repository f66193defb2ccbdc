#!/usr/bin/env bash
# Builds kube-scheduler-carbon: the pinned kube-scheduler with Carbon-Kube's
# framework plugin (scheduler-plugin/) linked against the Rust policy's static
# library (crates/carbon-kube-ffi), into the same cache directory as the other
# test binaries. Rebuilds when the Rust library, the Go sources or the link
# flags change (a stamp of their hashes). Used by `make k8s-bin`; see
# docs/scheduler-plugin.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

K8S_VERSION=v1.37.2
BIN="${CARBON_KUBE_K8S_BIN:-$HOME/.cache/carbon-kube/k8s/$K8S_VERSION/bin}"
mkdir -p "$BIN"

for tool in go cargo cc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: '$tool' is not on PATH (kube-scheduler-carbon needs Go >= 1.26, Rust and a C toolchain for cgo)" >&2
    exit 1
  fi
done

start=$SECONDS
(cd "$root" && cargo build --release -p carbon-kube-ffi)
target="${CARGO_TARGET_DIR:-$root/target}"
lib="$target/release/libcarbon_kube_ffi.a"
if [[ ! -f "$lib" ]]; then
  echo "error: $lib was not built" >&2
  exit 1
fi

k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
tags="selinux,notest,grpcnotrace"

want="$(
  {
    sha256sum "$lib" | cut -d' ' -f1
    (cd "$root/scheduler-plugin" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum)
    sha256sum "$root/crates/carbon-kube-ffi/include/carbon_kube_ffi.h"
    echo "tags=$tags ldflags=$ldflags"
  } | sha256sum | cut -c1-16
)"
stamp="$BIN/.kube-scheduler-carbon.version"
if [[ -x "$BIN/kube-scheduler-carbon" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "k8s-bin: kube-scheduler-carbon $K8S_VERSION already built ($want)"
  exit 0
fi

echo "k8s-bin: building kube-scheduler-carbon $K8S_VERSION ..."
export GOTOOLCHAIN=local
export CGO_ENABLED=1
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_LDFLAGS="-L$target/release ${CGO_LDFLAGS:-}"
(cd "$root/scheduler-plugin" && go build -trimpath -tags="$tags" -ldflags="$ldflags" \
  -o "$BIN/kube-scheduler-carbon.tmp" ./cmd/kube-scheduler-carbon)
mv "$BIN/kube-scheduler-carbon.tmp" "$BIN/kube-scheduler-carbon"
echo "$want" > "$stamp"
echo "k8s-bin: built kube-scheduler-carbon in $((SECONDS - start))s"
