//! The migrator's CPU and memory at scale: `SCALE_NODES` (5,000) nodes and
//! `SCALE_PODS` (50,000) running, opted-in ReplicaSet pods on a real
//! kube-apiserver (the testkit's control plane, API server only: the bench
//! writes the objects and the pods' Running status itself, as kubelets
//! would; nodes are the testkit's recorded kwok node shape, static Ready).
//!
//! Half the nodes are in DE (450 g/kWh), half in FR (50 g/kWh); every pod
//! runs in DE, so every pod goes the whole way through the rule (dwell
//! passed, fresh data, target search over every node, cost); the migrator
//! runs in dry run (nothing is evicted, so every cycle sees the same pods)
//! without Events. It runs in this process on its own thread with a
//! single-threaded runtime, so that thread's CPU time (`/proc`) is the
//! migrator's: its watches, caches and cycles.
//!
//! Printed: setup time; then the heap a cache of every pod takes, as the
//! migrator caches them (trimmed, `view::trim_pod`) and as whole objects,
//! side by side; then, for each migrator variant (`SCALE_VARIANTS`,
//! default `untrimmed,trimmed`: the migrator with whole pods in its cache,
//! as before the trimming, and as it runs now), run one after the other on
//! the same objects: CPU seconds per cycle (mean of `SCALE_CYCLES`, 3,
//! after the first), wall seconds per cycle, pods evaluated per CPU second,
//! bytes and allocations per cycle, the live heap after the cycles and its
//! peak during them (sampled every 20 ms), and the process's resident
//! memory before and after. The heap figures come from counting every
//! allocation (`stats_alloc`, process-wide; the rest of the process is idle
//! meanwhile); resident memory also holds what the allocator keeps.
//!
//! Run: `cargo bench -p carbon-kube-migrator --bench scale`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::alloc::System;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use carbon_kube_k8s::Readiness;
use carbon_kube_migrator::controller::{MigratorSettings, run_migrator};
use carbon_kube_migrator::metrics::MigratorMetrics;
use carbon_kube_migrator::system_clock;
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::hostile::{INSTRUMENTED_SYSTEM, StatsAlloc};
use carbon_kube_testkit::{ControlPlane, ControlPlaneOptions, nodes_in_zone};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use prometheus_client::registry::Registry;
use serde_json::json;

const REPLICAS: usize = 100;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap of the process, MiB (allocated − freed; the counters include
/// what reallocations grow and shrink).
fn heap_mib() -> f64 {
    let s = GLOBAL.stats();
    #[allow(clippy::cast_precision_loss)]
    let live = s.bytes_allocated as f64 - s.bytes_deallocated as f64;
    live / (1024.0 * 1024.0)
}

/// A reflector cache of every pod of `api`, each passed through `modify`,
/// as the migrator builds it; returns the store once the first list is in.
async fn pod_cache(api: Api<Pod>, modify: fn(&mut Pod)) -> reflector::Store<Pod> {
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(modify),
    );
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        if matches!(ev, Ok(watcher::Event::InitDone)) {
            break;
        }
    }
    store
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn record(g: f64) -> ZoneRecord {
    let t = now();
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(g).unwrap(),
        t,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    r.forecast = Some(Forecast {
        start: t.div_euclid(3600) * 3600,
        step_seconds: 3600,
        values: vec![CarbonIntensity::new(g).unwrap(); 72],
    });
    r
}

/// CPU seconds (user + system) of one thread of this process.
fn thread_cpu_seconds(tid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return 0.0;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum::<f64>() / 100.0
    })
}

/// Resident memory of this process, MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    carbon_kube_k8s::telemetry::install_crypto_provider();
    let nodes = env("SCALE_NODES", 5000);
    let pods = env("SCALE_PODS", 50_000);
    let cycles = env("SCALE_CYCLES", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let t = Instant::now();
        let cp = ControlPlane::start(ControlPlaneOptions::api_server_only())
            .await
            .unwrap();
        let ns = cp.test_namespace("scale").await.unwrap();
        for (i, zone) in ["DE", "FR"].iter().enumerate() {
            ns.create_nodes(
                &nodes_in_zone(format!("region-{i}"), format!("region-{i}-a"))
                    .named(zone.to_ascii_lowercase())
                    .count(nodes / 2)
                    .with_label(keys::LABEL_GRID_ZONE, *zone)
                    .with_cpu("32")
                    .with_memory("128Gi")
                    .with_pods(110)
                    .static_ready(),
            )
            .await
            .unwrap();
        }
        let node_names: Vec<String> = Api::<k8s_openapi::api::core::v1::Node>::all(ns.client())
            .list(&kube::api::ListParams::default().labels(&format!("{}=DE", keys::LABEL_GRID_ZONE)))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(!node_names.is_empty());
        let mut s = Snapshot::default();
        s.zones.insert(ZoneId::parse("DE").unwrap(), record(450.0));
        s.zones.insert(ZoneId::parse("FR").unwrap(), record(50.0));
        ns.api::<ConfigMap>()
            .create(
                &PostParams::default(),
                &ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(keys::SNAPSHOT_CONFIGMAP.into()),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(keys::SNAPSHOT_KEY.to_owned(), s.to_json())])),
                    ..ConfigMap::default()
                },
            )
            .await
            .unwrap();
        // ReplicaSets (no controller runs: the bench writes their pods).
        let container: Container = serde_json::from_value(json!({
            "name": "app",
            "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        }))
        .unwrap();
        let rs_api = ns.api::<ReplicaSet>();
        let sets = pods.div_ceil(REPLICAS);
        let owners: Vec<(String, String)> = stream::iter(0..sets)
            .map(|i| {
                let rs_api = rs_api.clone();
                let container = container.clone();
                async move {
                    let rs: ReplicaSet = serde_json::from_value(json!({
                        "metadata": {"name": format!("app-{i}")},
                        "spec": {
                            "replicas": REPLICAS,
                            "selector": {"matchLabels": {"app": format!("app-{i}")}},
                            "template": {
                                "metadata": {"labels": {"app": format!("app-{i}")}},
                                "spec": {"containers": [container]},
                            },
                        },
                    }))
                    .unwrap();
                    let made = rs_api.create(&PostParams::default(), &rs).await.unwrap();
                    (made.metadata.name.unwrap(), made.metadata.uid.unwrap())
                }
            })
            .buffered(16)
            .collect()
            .await;
        // The pods, bound to DE nodes, then Running since two hours ago.
        let pod_api = ns.api::<Pod>();
        let started = jiff::Timestamp::from_second(now() - 7200).unwrap();
        let made = stream::iter(0..pods)
            .map(|i| {
                let pod_api = pod_api.clone();
                let (rs, uid) = owners[i / REPLICAS].clone();
                let node = node_names[i % node_names.len()].clone();
                let container = container.clone();
                async move {
                    let name = format!("{rs}-{i}");
                    let pod = Pod {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            labels: Some(BTreeMap::from([("app".to_owned(), rs.clone())])),
                            annotations: Some(BTreeMap::from([(
                                keys::MIGRATE.to_owned(),
                                "true".to_owned(),
                            )])),
                            owner_references: Some(vec![OwnerReference {
                                api_version: "apps/v1".into(),
                                kind: "ReplicaSet".into(),
                                name: rs,
                                uid,
                                controller: Some(true),
                                block_owner_deletion: Some(true),
                            }]),
                            ..ObjectMeta::default()
                        },
                        spec: Some(PodSpec {
                            node_name: Some(node),
                            containers: vec![container],
                            ..PodSpec::default()
                        }),
                        ..Pod::default()
                    };
                    pod_api.create(&PostParams::default(), &pod).await.unwrap();
                    let status = json!({"status": {
                        "phase": "Running",
                        "startTime": Time(started),
                        "conditions": [{"type": "Ready", "status": "True"}],
                    }});
                    pod_api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(32)
            .count()
            .await;
        println!(
            "scale: control plane, {nodes} nodes, {sets} ReplicaSets and {made} running pods ready in {:.0} s",
            t.elapsed().as_secs_f64()
        );

        // The cache alone: every pod, whole and trimmed, side by side.
        let mut cache_mib = Vec::new();
        for (label, modify) in [
            ("whole", (|_: &mut Pod| {}) as fn(&mut Pod)),
            ("trimmed", carbon_kube_migrator::view::trim_pod as fn(&mut Pod)),
        ] {
            let before = heap_mib();
            let store = pod_cache(ns.api::<Pod>(), modify).await;
            let n = store.state().len();
            let added = heap_mib() - before;
            drop(store);
            println!(
                "scale: cache of {n} {label} pods: {added:.0} MiB of heap ({:.1} KiB per pod)",
                added * 1024.0 / n.max(1) as f64
            );
            cache_mib.push(added);
        }
        if let [whole, trimmed] = cache_mib[..] {
            println!("scale: trimmed / whole cache: {:.3}", trimmed / whole);
        }

        let variants = std::env::var("SCALE_VARIANTS").unwrap_or_else(|_| "untrimmed,trimmed".into());
        let mut results: Vec<(String, f64, f64, f64)> = Vec::new();
        for variant in variants.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let (cpu, peak, live) = run_variant(&ns, variant, cycles, pods).await;
            results.push((variant.to_owned(), cpu, peak, live));
        }
        if let [(a, cpu_a, peak_a, live_a), (b, cpu_b, peak_b, live_b)] = &results[..] {
            println!(
                "scale: {b} / {a}: CPU per cycle {:.3}, peak heap {:.3}, live heap after the cycles {:.3}",
                cpu_b / cpu_a,
                peak_b / peak_a,
                live_b / live_a
            );
        }
    });
}

/// Runs the migrator (`variant`: `trimmed`, or `untrimmed` for whole pods
/// in its cache) for a first cycle and `cycles` more; prints and returns
/// (CPU s per cycle, peak heap MiB added, live heap MiB added after).
async fn run_variant(
    ns: &carbon_kube_testkit::TestNamespace,
    variant: &str,
    cycles: usize,
    pods: usize,
) -> (f64, f64, f64) {
    {
        // The migrator, on its own thread and single-threaded runtime.
        let rss_before = rss_mib();
        let heap_before = heap_mib();
        let mut registry = Registry::default();
        let metrics = MigratorMetrics::register(&mut registry);
        let watch = metrics.clone();
        let client = ns.client();
        let settings = MigratorSettings {
            snapshot_namespace: ns.name().to_owned(),
            pod_namespace: Some(ns.name().to_owned()),
            interval: Duration::from_secs(1),
            min_interval: Duration::from_secs(1),
            dry_run: true,
            events: false,
            trim_pods: variant != "untrimmed",
            ..MigratorSettings::default()
        };
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let tid = std::fs::read_link("/proc/thread-self")
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            tid_tx.send(tid).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let stop = async {
                    let _ = stop_rx.await;
                };
                run_migrator(
                    client.clone(),
                    client,
                    settings,
                    metrics,
                    Readiness::default(),
                    system_clock(),
                    stop,
                )
                .await
                .unwrap();
            });
        });
        let tid = tid_rx.recv().unwrap();
        let t0 = Instant::now();
        // The first cycle (caches synced, first pass).
        let mut peak_first = 0.0_f64;
        while watch.cycles.get() < 1 {
            peak_first = peak_first.max(heap_mib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first_cycle = t0.elapsed().as_secs_f64();
        let cpu_first = thread_cpu_seconds(&tid);
        let t1 = Instant::now();
        let start = GLOBAL.stats();
        let mut peak = 0.0_f64;
        while watch.cycles.get() < 1 + cycles as u64 {
            peak = peak.max(heap_mib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let end = GLOBAL.stats();
        let wall = t1.elapsed().as_secs_f64();
        let cpu = thread_cpu_seconds(&tid) - cpu_first;
        let rss_after = rss_mib();
        let live = heap_mib() - heap_before;
        let done = watch.cycles.get() - 1;
        let per_cycle = cpu / done as f64;
        let allocs = (end.allocations + end.reallocations - start.allocations - start.reallocations)
            as f64
            / done as f64;
        let bytes = (end.bytes_allocated - start.bytes_allocated) as f64 / done as f64;
        println!(
            "scale [{variant}]: first cycle (watch sync + pass) after {first_cycle:.1} s, {cpu_first:.2} CPU s"
        );
        println!(
            "scale [{variant}]: {done} further cycles: {per_cycle:.2} CPU s per cycle, {:.2} wall s per cycle \
             (1 s interval between cycles), {:.0} pods evaluated per CPU second",
            wall / done as f64,
            pods as f64 / per_cycle
        );
        println!(
            "scale [{variant}]: per cycle {:.0} allocations ({:.0} per pod), {:.0} MiB allocated ({:.1} KiB per pod)",
            allocs,
            allocs / pods as f64,
            bytes / 1048576.0,
            bytes / 1024.0 / pods as f64
        );
        println!(
            "scale [{variant}]: heap added by the migrator: peak {:.0} MiB in the first cycle, {:.0} MiB in the others, {live:.0} MiB live after them ({:.1} KiB per pod)",
            peak_first - heap_before,
            peak - heap_before,
            live * 1024.0 / pods as f64
        );
        println!(
            "scale [{variant}]: RSS {rss_before:.0} MiB before the migrator, {rss_after:.0} MiB after ({:.0} MiB added)",
            rss_after - rss_before
        );
        let _ = stop_tx.send(());
        thread.join().unwrap();
        (per_cycle, (peak.max(peak_first) - heap_before), live)
    }
}
