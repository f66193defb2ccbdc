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
//! Printed: setup time, CPU seconds per cycle (mean of `SCALE_CYCLES`, 3,
//! after the first), wall seconds per cycle, pods evaluated per CPU second,
//! and the process's resident memory before the migrator started and after
//! the cycles (the difference is the migrator's caches and working set).
//!
//! Run: `cargo bench -p carbon-kube-migrator --bench scale`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use carbon_kube_k8s::Readiness;
use carbon_kube_migrator::controller::{MigratorSettings, run_migrator};
use carbon_kube_migrator::metrics::MigratorMetrics;
use carbon_kube_migrator::system_clock;
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{ControlPlane, ControlPlaneOptions, nodes_in_zone};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use prometheus_client::registry::Registry;
use serde_json::json;

const REPLICAS: usize = 100;

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

        // The migrator, on its own thread and single-threaded runtime.
        let rss_before = rss_mib();
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
        while watch.cycles.get() < 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first_cycle = t0.elapsed().as_secs_f64();
        let cpu_first = thread_cpu_seconds(&tid);
        let t1 = Instant::now();
        while watch.cycles.get() < 1 + cycles as u64 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wall = t1.elapsed().as_secs_f64();
        let cpu = thread_cpu_seconds(&tid) - cpu_first;
        let rss_after = rss_mib();
        let done = watch.cycles.get() - 1;
        let per_cycle = cpu / done as f64;
        println!(
            "scale: first cycle (watch sync + pass) after {first_cycle:.1} s, {cpu_first:.2} CPU s"
        );
        println!(
            "scale: {done} further cycles: {per_cycle:.2} CPU s per cycle, {:.2} wall s per cycle \
             (1 s interval between cycles), {:.0} pods evaluated per CPU second",
            wall / done as f64,
            pods as f64 / per_cycle
        );
        println!(
            "scale: RSS {rss_before:.0} MiB before the migrator, {rss_after:.0} MiB after ({:.0} MiB added)",
            rss_after - rss_before
        );
        let _ = stop_tx.send(());
        thread.join().unwrap();
    });
}
