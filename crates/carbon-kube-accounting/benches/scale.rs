//! The accounting controller's cost at scale: `SCALE_NODES` (5,000) nodes
//! and `SCALE_PODS` (50,000) running pods, through the same
//! [`Accountant::tick`] the controller runs every `--tick` (pods and nodes to
//! views, zone intensities, the policy's `account_interval`, the counters,
//! the usage and details documents) and the ConfigMap it writes.
//!
//! The objects are built in memory (what the reflectors hold): 500
//! namespaces of 100 pods, 10 Deployments of 10 replicas each (5,000
//! workloads), every tenth pod deferred and every fifth carbon-placed; the
//! nodes are split over six zones of a snapshot with forecasts. The watch
//! and cache cost of 50,000 pods is not in these figures: it is the same
//! reflector cost the migrator's scale bench measures against a real API
//! server.
//!
//! Printed: CPU seconds per tick (process CPU time from `/proc`, single
//! thread; mean of `SCALE_TICKS`, 5, after the first, which only starts the
//! interval), pods per CPU second, the time to encode `/metrics`, the number
//! of series and the size of the `/metrics` text, the size of the ConfigMap's
//! data, and resident memory before the objects, after them, and after the
//! ticks.
//!
//! Run: `cargo bench -p carbon-kube-accounting --bench scale`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use carbon_kube_accounting::controller::{Accountant, AccountingSettings};
use carbon_kube_accounting::metrics::AccountingMetrics;
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use k8s_openapi::api::core::v1::{Node, Pod};
use prometheus_client::registry::Registry;
use serde_json::json;

const ZONES: [(&str, f64); 6] = [
    ("DE", 350.0),
    ("FR", 50.0),
    ("GB", 150.0),
    ("PL", 650.0),
    ("SE", 30.0),
    ("US-CAL-CISO", 220.0),
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn node(i: usize) -> Node {
    let zone = ZONES[i % ZONES.len()].0;
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:05}"), "labels": {
            keys::LABEL_GRID_ZONE: zone, "kubernetes.io/hostname": format!("node-{i:05}"),
            "topology.kubernetes.io/region": "r", "topology.kubernetes.io/zone": "z"}},
        "spec": {"providerID": format!("kwok://node-{i:05}")},
        "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                   "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"}}
    }))
    .unwrap()
}

fn pod(i: usize, nodes: usize, now: i64) -> Pod {
    let ns = format!("team-{:03}", i / 100);
    let deployment = format!("app-{}", (i / 10) % 10);
    let hash = "5d8f7c9b4";
    let mut annotations = BTreeMap::new();
    if i.is_multiple_of(10) {
        let released = jiff::Timestamp::from_second(now - 600).unwrap().to_string();
        annotations.insert(keys::ANNOTATION_RELEASED_AT.to_owned(), released);
    }
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{deployment}-{hash}-{i:05}"), "namespace": ns,
            "uid": format!("uid-{i}"),
            "creationTimestamp": jiff::Timestamp::from_second(now - 3600).unwrap().to_string(),
            "labels": {"app": deployment, "pod-template-hash": hash},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{deployment}-{hash}"), "uid": "rs", "controller": true}]
        },
        "spec": {
            "nodeName": format!("node-{:05}", i % nodes),
            "schedulerName": if i.is_multiple_of(5) { keys::SCHEDULER_NAME } else { "default-scheduler" },
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                              "limits": {"cpu": "1", "memory": "1Gi"}}}]
        },
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

fn snapshot(now: i64) -> Snapshot {
    let mut s = Snapshot::default();
    for (z, g) in ZONES {
        let mut r = ZoneRecord::new(
            CarbonIntensity::new(g).unwrap(),
            now,
            Source::new(Source::ELECTRICITY_MAPS),
        );
        r.forecast = Some(Forecast {
            start: now.div_euclid(3600) * 3600,
            step_seconds: 3600,
            values: (0..72)
                .map(|h| CarbonIntensity::new(g * (1.0 + 0.2 * f64::from(h % 5))).unwrap())
                .collect(),
        });
        s.zones.insert(ZoneId::parse(z).unwrap(), r);
    }
    s
}

fn main() {
    let n_nodes = env("SCALE_NODES", 5_000);
    let n_pods = env("SCALE_PODS", 50_000);
    let ticks = env("SCALE_TICKS", 5).max(1);
    let now = jiff::Timestamp::now().as_second();
    let rss_start = rss_mib();
    let t = Instant::now();
    let nodes: Vec<Node> = (0..n_nodes).map(node).collect();
    let pods: Vec<Pod> = (0..n_pods).map(|i| pod(i, n_nodes, now)).collect();
    let snap = snapshot(now);
    let rss_objects = rss_mib();
    println!(
        "accounting scale: {n_nodes} nodes, {n_pods} pods, {} zones; objects built in {:.1} s",
        ZONES.len(),
        t.elapsed().as_secs_f64()
    );

    let mut registry = Registry::default();
    let metrics = AccountingMetrics::register(&mut registry, 100);
    let mut acc = Accountant::new(AccountingSettings::default(), metrics);
    let measured = HashMap::new();
    // The first tick only starts the interval.
    assert!(
        acc.tick(pods.iter(), nodes.iter(), &snap, &measured, now)
            .is_none()
    );
    let mut cpu = Vec::with_capacity(ticks);
    let mut accounted = 0;
    for k in 1..=ticks {
        let before = process_cpu_seconds();
        let a = acc
            .tick(
                pods.iter(),
                nodes.iter(),
                &snap,
                &measured,
                now + 60 * k as i64,
            )
            .unwrap();
        cpu.push(process_cpu_seconds() - before);
        accounted = a.pods.len();
    }
    let mean_cpu = cpu.iter().sum::<f64>() / cpu.len() as f64;
    let t = Instant::now();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let encode_s = t.elapsed().as_secs_f64();
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let maps = acc.configmaps();
    let cm_bytes: usize = maps
        .iter()
        .filter_map(|cm| cm.data.as_ref())
        .map(|d| d.values().map(String::len).sum::<usize>())
        .sum();
    let rss_end = rss_mib();
    println!(
        "  CPU per tick: {mean_cpu:.3} s (ticks: {})  ->  {:.0} pods per CPU second",
        cpu.iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        accounted as f64 / mean_cpu.max(1e-9)
    );
    println!(
        "  /metrics: {series} series, {:.1} MiB of text, encoded in {encode_s:.2} s",
        text.len() as f64 / 1_048_576.0
    );
    println!(
        "  ConfigMap data (usage + details): {:.1} KiB for {} namespaces",
        cm_bytes as f64 / 1024.0,
        acc.usage.namespaces.len()
    );
    println!(
        "  RSS: {rss_start:.0} MiB at start, {rss_objects:.0} MiB with the objects, {rss_end:.0} MiB after the ticks (+{:.0} MiB for the accounting state)",
        rss_end - rss_objects
    );
}
