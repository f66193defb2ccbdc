# syntax=docker/dockerfile:1
# The one Carbon-Kube image: a static `carbon-kube` binary (poller, extender,
# gates webhook and controller, simulator) and a static `kube-scheduler-carbon`
# (kube-scheduler with the CarbonKube framework plugin, for
# `scheduler.mode: plugin`; docs/scheduler-plugin.md) on a distroless base,
# running as the non-root user 65532. Build: `make build-images` (docker or
# podman).

ARG RUST_VERSION=1.95
ARG GO_VERSION=1.26
ARG ALPINE_VERSION=3.22
ARG K8S_VERSION=v1.37.2

# --- build: a static musl binary (rustls with ring, no OpenSSL, no glibc).
FROM rust:${RUST_VERSION}-alpine${ALPINE_VERSION} AS build
# musl-dev is pinned by the Alpine release above (its version follows it).
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p carbon-kube -p carbon-kube-ffi \
 && install -D -m 0755 target/release/carbon-kube /out/carbon-kube \
 && install -D -m 0644 target/release/libcarbon_kube_ffi.a /out/lib/libcarbon_kube_ffi.a \
 && /out/carbon-kube --version

# --- plugin: kube-scheduler-carbon, cgo against the policy's static library
# (musl, like the Rust build), linked statically.
FROM golang:${GO_VERSION}-alpine${ALPINE_VERSION} AS plugin
ARG K8S_VERSION
# build-base is pinned by the Alpine release above.
# hadolint ignore=DL3018
RUN apk add --no-cache build-base
WORKDIR /src
COPY crates/carbon-kube-ffi/include ./crates/carbon-kube-ffi/include
COPY scheduler-plugin ./scheduler-plugin
COPY --from=build /out/lib/libcarbon_kube_ffi.a ./target/release/libcarbon_kube_ffi.a
WORKDIR /src/scheduler-plugin
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    minor="${K8S_VERSION#v1.}" && minor="${minor%%.*}" \
 && v="-X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}" \
 && CGO_ENABLED=1 go build -trimpath -tags=selinux,notest,grpcnotrace \
      -ldflags="-s -w ${v} -linkmode external -extldflags -static" \
      -o /out/kube-scheduler-carbon ./cmd/kube-scheduler-carbon \
 && /out/kube-scheduler-carbon --version

# --- runtime: CA certificates and tzdata, no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="carbon-kube" \
      org.opencontainers.image.description="Carbon-aware scheduling for Kubernetes" \
      org.opencontainers.image.source="https://github.com/carbon-kube/carbon-kube" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/carbon-kube /usr/local/bin/carbon-kube
COPY --from=plugin /out/kube-scheduler-carbon /usr/local/bin/kube-scheduler-carbon
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/carbon-kube"]
CMD ["--help"]
