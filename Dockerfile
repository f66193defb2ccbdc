# syntax=docker/dockerfile:1
# The one Carbon-Kube image: a static `carbon-kube` binary (poller, extender,
# gates webhook and controller, simulator) on a distroless base, running as
# the non-root user 65532. Build: `make build-images` (docker or podman).

ARG RUST_VERSION=1.95
ARG ALPINE_VERSION=3.22

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
    cargo build --release --locked -p carbon-kube \
 && install -D -m 0755 target/release/carbon-kube /out/carbon-kube \
 && /out/carbon-kube --version

# --- runtime: CA certificates and tzdata, no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="carbon-kube" \
      org.opencontainers.image.description="Carbon-aware scheduling for Kubernetes" \
      org.opencontainers.image.source="https://github.com/carbon-kube/carbon-kube" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/carbon-kube /usr/local/bin/carbon-kube
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/carbon-kube"]
CMD ["--help"]
