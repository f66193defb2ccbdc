//! The extender's cost relative to parsing the request (target: at most 2x),
//! measured in thread CPU time so that other processes on a busy 2-core
//! machine disturb it less than wall-clock time. For each size: the median
//! over 15 batches of the CPU time per call of
//! `serde_json::from_slice::<Value>` (the floor), `filter` and `prioritize`
//! (parse, cache lookups, policy, response encoding).
//!
//! Run: `cargo bench -p carbon-kube-extender --bench ratio`. Arguments after
//! `--` keep only the rows whose `mode/nodes` label contains one of them
//! (`-- names/15000`), e.g. for profiling.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use carbon_kube_extender::service::{filter, prioritize};
use cpu_time::ThreadTime;
use serde_json::Value;

fn per_call(mut f: impl FnMut()) -> Duration {
    // Calibrate a batch to ~40 ms of CPU.
    let t = ThreadTime::now();
    f();
    let one = t.elapsed().max(Duration::from_micros(1));
    let iters = (Duration::from_millis(40).as_nanos() / one.as_nanos()).clamp(1, 100_000) as u32;
    let mut samples: Vec<Duration> = (0..15)
        .map(|_| {
            let t = ThreadTime::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed() / iters
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; other arguments select rows.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    println!("| request | nodes | parse floor | filter | ratio | prioritize | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (mode, sizes) in [
        ("names", &[100usize, 1000, 5000, 15000][..]),
        ("full nodes", &[100, 1000, 5000][..]),
    ] {
        for &n in sizes {
            let label = format!("{mode}/{n}");
            if !only.is_empty() && !only.iter().any(|o| label.contains(o.as_str())) {
                continue;
            }
            let state = common::shared(n);
            let body = if mode == "names" {
                common::names_request(n)
            } else {
                common::nodes_request(n)
            };
            let floor = per_call(|| {
                std::hint::black_box(serde_json::from_slice::<Value>(&body).unwrap());
            });
            let f = per_call(|| {
                std::hint::black_box(filter(&state, &body).unwrap());
            });
            let p = per_call(|| {
                std::hint::black_box(prioritize(&state, &body).unwrap());
            });
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {mode} | {n} | {:.3} ms | {:.3} ms | {:.2}x | {:.3} ms | {:.2}x |",
                ms(floor),
                ms(f),
                f.as_secs_f64() / floor.as_secs_f64(),
                ms(p),
                p.as_secs_f64() / floor.as_secs_f64()
            );
        }
    }
}
