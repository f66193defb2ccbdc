//! In-process cost of answering kube-scheduler, beside the cost of merely
//! parsing the same request (the floor), in wall-clock time (criterion).
//! See `ratio.rs` for the same comparison in thread CPU time, which a busy
//! machine disturbs less.
//!
//! For 100, 1,000, 5,000 and 15,000 nodes spread over four real grid zones
//! (2023 Electricity Maps hour), with the request kube-scheduler sends at
//! `nodeCacheCapable: true` (the recorded pod plus N node names), and with
//! full nodes (`nodeCacheCapable: false`) up to 5,000 nodes.
//!
//! Run: `cargo bench -p carbon-kube-extender --bench extender`.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use carbon_kube_extender::service::{filter, prioritize};
use common::{names_request, nodes_request, shared};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

fn bench(c: &mut Criterion) {
    for (mode, sizes) in [
        ("names", &[100usize, 1000, 5000, 15000][..]),
        ("full-nodes", &[100usize, 1000, 5000][..]),
    ] {
        let mut g = c.benchmark_group(format!("extender/{mode}"));
        g.sample_size(20);
        for &n in sizes {
            let state = shared(n);
            let body = if mode == "names" {
                names_request(n)
            } else {
                nodes_request(n)
            };
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(
                BenchmarkId::new("floor-parse-value", n),
                &body,
                |b, body| {
                    b.iter(|| serde_json::from_slice::<Value>(body).unwrap());
                },
            );
            g.bench_with_input(BenchmarkId::new("filter", n), &body, |b, body| {
                b.iter(|| filter(&state, body).unwrap());
            });
            g.bench_with_input(BenchmarkId::new("prioritize", n), &body, |b, body| {
                b.iter(|| prioritize(&state, body).unwrap());
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
