//! Helpers shared by the benches: a node cache of N nodes over four real
//! grid zones and the request kube-scheduler sends for them.

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use std::sync::Arc;

use carbon_kube_extender::metrics::Metrics;
use carbon_kube_extender::state::Shared;
use carbon_kube_k8s::Readiness;
use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_policy::placement::{PlacementConfig, PlacementConfigRaw};
use carbon_kube_policy::zone_map::{NodeView, RegionZoneMap, Resources};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

pub const ZONES: [&str; 4] = ["DE", "GB", "US-TEX-ERCO", "US-CAL-CISO"];
pub const NOW: i64 = 1_700_000_000;

use carbon_kube_sim::trace::{Column, read_em_csv};
use carbon_kube_testkit::shared_data;

/// Hour 12 of 2023-06-01 for each zone, measured 5 minutes before NOW.
fn real_snapshot() -> Snapshot {
    let hour = (31 + 28 + 31 + 30 + 31) * 24 + 12;
    let mut s = Snapshot::default();
    for z in ZONES {
        let path = shared_data().join(format!(
            "carbon_intensity/electricitymaps_hourly/{z}_2023_hourly.csv"
        ));
        let v = read_em_csv(&path, Column::Direct).unwrap().values[hour];
        s.zones.insert(
            ZoneId::parse(z).unwrap(),
            ZoneRecord::new(
                CarbonIntensity::new(v).unwrap(),
                NOW - 300,
                Source::new(Source::ELECTRICITY_MAPS),
            ),
        );
    }
    s
}

pub fn node_name(i: usize) -> String {
    format!(
        "pool-a-{}-node-{i:05}",
        ZONES[i % ZONES.len()].to_ascii_lowercase()
    )
}

pub fn full_node(i: usize) -> Value {
    // The shape of a kwok node as kube-scheduler sends it.
    let recorded: Value = serde_json::from_str(&fixture("recorded-filter-nodes.json")).unwrap();
    let mut n = recorded["Nodes"]["items"][0].clone();
    n["metadata"]["name"] = json!(node_name(i));
    n["metadata"]["labels"][keys::LABEL_GRID_ZONE] = json!(ZONES[i % ZONES.len()]);
    n
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub fn shared(n: usize) -> Arc<Shared> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let shared = Shared::new(
        PlacementConfigRaw::default(),
        PlacementConfig::default(),
        RegionZoneMap::default(),
        metrics,
        Readiness::default(),
        Arc::new(|| NOW),
    );
    let nodes = (0..n)
        .map(|i| NodeView {
            name: node_name(i),
            labels: [
                (
                    keys::LABEL_GRID_ZONE.to_owned(),
                    ZONES[i % ZONES.len()].to_owned(),
                ),
                ("kubernetes.io/hostname".to_owned(), node_name(i)),
            ]
            .into(),
            provider_id: None,
            allocatable: Resources::new(8000, 32 << 30),
            requested: Resources::default(),
        })
        .collect();
    shared
        .cluster_mut()
        .replace_nodes(nodes, &RegionZoneMap::default());
    shared.set_snapshot(real_snapshot());
    Arc::new(shared)
}

/// The request kube-scheduler sends for `n` nodes by name.
pub fn names_request(n: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("recorded-filter-names.json")).unwrap();
    v["NodeNames"] = json!((0..n).map(node_name).collect::<Vec<_>>());
    serde_json::to_vec(&v).unwrap()
}

pub fn nodes_request(n: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("recorded-filter-nodes.json")).unwrap();
    v["Nodes"]["items"] = json!((0..n).map(full_node).collect::<Vec<_>>());
    serde_json::to_vec(&v).unwrap()
}
