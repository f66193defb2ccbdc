#!/usr/bin/env bash
# Builds the pinned Kubernetes test binaries (kube-apiserver, kube-scheduler,
# kube-controller-manager, etcd, kwok, helm) from their Go modules into a cache
# directory outside the repository. Skips any binary already built for the
# pinned version. Used by `make k8s-bin`; see docs/testing.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0

BIN="${CARBON_KUBE_K8S_BIN:-$HOME/.cache/carbon-kube/k8s/$K8S_VERSION/bin}"
mkdir -p "$BIN"

export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"

if ! command -v go >/dev/null 2>&1; then
  echo "error: 'go' is not on PATH; install Go >= 1.26 (see README, Prerequisites)" >&2
  exit 1
fi

k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# build NAME MODULE_DIR PACKAGE VERSION TAGS LDFLAGS
build() {
  local name=$1 dir=$2 pkg=$3 version=$4 tags=$5 ldflags=$6
  local stamp="$BIN/.$name.version"
  # The stamp covers the link flags too: changing a -X version rebuilds.
  local want="$pkg@$version tags=$tags ldflags=$(printf '%s' "$ldflags" | sha256sum | cut -c1-12)"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "k8s-bin: $name $version already built"
    return 0
  fi
  local start=$SECONDS
  echo "k8s-bin: building $name $version ..."
  (cd "$here/$dir" && go build -trimpath -tags="$tags" -ldflags="$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  echo "$want" > "$stamp"
  echo "k8s-bin: built $name in $((SECONDS - start))s"
}

total=$SECONDS
k8s_tags="selinux,notest,grpcnotrace"
build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$K8S_VERSION" "$k8s_tags" "$k8s_ldflags"
build kube-scheduler kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$K8S_VERSION" "$k8s_tags" "$k8s_ldflags"
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$K8S_VERSION" "$k8s_tags" "$k8s_ldflags"
build etcd etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "" "-s -w"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" "" \
  "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION"
# The Kubernetes version helm assumes without --kube-version (`helm template`,
# `helm lint`): real helm releases set it from the client-go they are built
# with (client-go v0.N -> 1.N); without it helm reports v1.20, which fails the
# chart's `kubeVersion: >=1.29`.
helm_k8s_minor="$(cd "$here/helm" && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_k8s_minor"
done
build helm helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "" "$helm_ldflags"
echo "k8s-bin: all binaries in $BIN ($((SECONDS - total))s, $(du -sh "$BIN" | cut -f1))"
