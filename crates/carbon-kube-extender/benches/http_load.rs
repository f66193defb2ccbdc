//! HTTP latency and throughput of the extender at 5,000 nodes on this
//! machine: the real router on a local socket, kube-scheduler's request shape
//! (`nodeCacheCapable: true`), `CONCURRENCY` clients alternating filter and
//! prioritize like kube-scheduler does, for `SECONDS` seconds.
//!
//! Run: `cargo bench -p carbon-kube-extender --bench http_load`.
//! Client and server share the machine's cores.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

const NODES: usize = 5000;

fn main() {
    carbon_kube_k8s::telemetry::install_crypto_provider();
    let seconds: u64 = std::env::var("SECONDS_PER_RUN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let state = common::shared(NODES);
        let router = carbon_kube_extender::service::app(state, Arc::new(Registry::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let body = Arc::new(common::names_request(NODES));
        println!(
            "http_load: {NODES} nodes by name, request {} bytes, {seconds} s per run, 2 cores shared by client and server",
            body.len()
        );
        for concurrency in [1usize, 4] {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for c in 0..concurrency {
                let body = body.clone();
                tasks.push(tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut lat = Vec::new();
                    let mut i = c;
                    while Instant::now() < deadline {
                        let verb = if i % 2 == 0 { "filter" } else { "prioritize" };
                        i += 1;
                        let t = Instant::now();
                        let r = client
                            .post(format!("http://{addr}/{verb}"))
                            .header("content-type", "application/json")
                            .body(body.as_ref().clone())
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                        let _ = r.bytes().await.unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                }));
            }
            let start = Instant::now();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            let elapsed = start.elapsed().as_secs_f64();
            all.sort();
            let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
            println!(
                "http_load: concurrency {concurrency}: {} requests, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                all.len(),
                all.len() as f64 / elapsed,
                pct(0.50).as_secs_f64() * 1e3,
                pct(0.99).as_secs_f64() * 1e3,
                all.last().unwrap().as_secs_f64() * 1e3
            );
        }
    });
}
