//! Shared test fixtures: real Electricity Maps hours, nodes in zones, and a
//! shared state built like the service builds it.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use carbon_kube_extender::metrics::Metrics;
use carbon_kube_extender::state::Shared;
use carbon_kube_k8s::Readiness;
use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_policy::placement::{PlacementConfig, PlacementConfigRaw};
use carbon_kube_policy::zone_map::{NodeView, RegionZoneMap, Resources};
use prometheus_client::registry::Registry;

pub const GIB: i64 = 1 << 30;

use carbon_kube_sim::trace::{Column, read_em_csv};
pub use carbon_kube_testkit::shared_data;

/// `(unix time, direct g/kWh)` for every hour of 2023 in `zone`, read by the
/// simulator's Electricity Maps reader.
pub fn year(zone: &str) -> Vec<(i64, f64)> {
    let path = shared_data().join(format!(
        "carbon_intensity/electricitymaps_hourly/{zone}_2023_hourly.csv"
    ));
    let series = read_em_csv(&path, Column::Direct).unwrap_or_else(|e| panic!("{e}"));
    (series.start..).step_by(3600).zip(series.values).collect()
}

/// Snapshot of `zones` at hour `i`.
pub fn snapshot_at(zones: &[(&str, &[(i64, f64)])], i: usize) -> Snapshot {
    let mut s = Snapshot::default();
    for (zone, hours) in zones {
        let (t, v) = hours[i];
        s.zones.insert(
            ZoneId::parse(zone).unwrap(),
            ZoneRecord::new(
                CarbonIntensity::new(v).unwrap(),
                t,
                Source::new(Source::ELECTRICITY_MAPS),
            ),
        );
    }
    s
}

/// The first hour of 2023 where DE is under 200 g/kWh and Texas over 300.
pub fn green_de_dirty_texas() -> (Snapshot, i64, f64, f64) {
    let de = year("DE");
    let tx = year("US-TEX-ERCO");
    let i = (0..de.len())
        .find(|&i| de[i].1 < 200.0 && tx[i].1 > 300.0)
        .unwrap();
    (
        snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tx)], i),
        de[i].0 + 120,
        de[i].1,
        tx[i].1,
    )
}

pub fn node(name: &str, zone: &str) -> NodeView {
    NodeView {
        name: name.into(),
        labels: [(keys::LABEL_GRID_ZONE.to_owned(), zone.to_owned())].into(),
        provider_id: None,
        allocatable: Resources::new(8000, 32 * GIB),
        requested: Resources::default(),
    }
}

/// Shared state at a fixed time with the given snapshot and nodes.
pub fn shared(snapshot: Snapshot, now: i64, nodes: Vec<NodeView>) -> (Arc<Shared>, Arc<Registry>) {
    shared_with(
        snapshot,
        Arc::new(move || now),
        nodes,
        PlacementConfigRaw::default(),
    )
}

pub fn shared_with(
    snapshot: Snapshot,
    clock: carbon_kube_extender::state::Clock,
    nodes: Vec<NodeView>,
    base: PlacementConfigRaw,
) -> (Arc<Shared>, Arc<Registry>) {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let cfg = base.validate_over(&PlacementConfig::default(), "").unwrap();
    let shared = Shared::new(
        base,
        cfg,
        RegionZoneMap::default(),
        metrics,
        Readiness::default(),
        clock,
    );
    shared
        .cluster_mut()
        .replace_nodes(nodes, &RegionZoneMap::default());
    shared.set_snapshot(snapshot);
    (Arc::new(shared), Arc::new(registry))
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}
