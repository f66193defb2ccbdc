//! The score publisher at scale: `SCALE_NODES` (5,000) static Ready nodes in
//! ten grid zones on a real kube-apiserver (the testkit's control plane, API
//! server only), a snapshot of those zones with 72-hour forecasts, and the
//! real `AddOnPlacementScore` CRD. Printed: setup time, then for
//! `SCALE_RUNS` (5) runs of `publish_once` (list the nodes in pages of 500,
//! read the snapshot, score, read and write the score object) the wall time
//! per run, and the time of the pure score alone (`cluster_score` over the
//! nodes' capacities, mean of 1,000 calls).
//!
//! Run: `cargo bench -p carbon-kube-multicluster --bench scale` (make k8s-bin first).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_multicluster::metrics::PublisherMetrics;
use carbon_kube_multicluster::ocm;
use carbon_kube_multicluster::publisher::{PublisherSettings, publish_once};
use carbon_kube_policy::cluster_score::{
    ClusterScoreConfig, Hysteresis, cluster_score, zone_capacities,
};
use carbon_kube_policy::zone_map::{RegionZoneMap, node_zone};
use carbon_kube_testkit::{Binaries, ControlPlane, ControlPlaneOptions, nodes_in_zone};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const ZONES: [&str; 10] = [
    "DE",
    "FR",
    "GB",
    "PL",
    "ES",
    "IT-NO",
    "NL",
    "SE-SE3",
    "US-CAL-CISO",
    "US-TEX-ERCO",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let nodes = env("SCALE_NODES", 5_000);
    let runs = env("SCALE_RUNS", 5);
    let t = Instant::now();
    let cp = ControlPlane::start(ControlPlaneOptions::api_server_only())
        .await
        .unwrap();
    let client = cp.client().await.unwrap();
    let ns = cp.test_namespace("scale").await.unwrap();

    // The AddOnPlacementScore CRD.
    let path = Binaries::default_dir()
        .join("../crds/0000_05_clusters.open-cluster-management.io_addonplacementscores.crd.yaml");
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let scores: Api<DynamicObject> = Api::all_with(client.clone(), &ocm::api_resource());
    while scores.list(&ListParams::default().limit(1)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The nodes, 16 creations in flight.
    let per_zone = nodes / ZONES.len();
    let mut all: Vec<Node> = Vec::new();
    for (i, z) in ZONES.iter().enumerate() {
        all.extend(
            nodes_in_zone("region", format!("zone-{i}"))
                .with_label(keys::LABEL_GRID_ZONE, *z)
                .with_cpu("32")
                .count(per_zone)
                .static_ready()
                .build(ns.node_pool(), i * per_zone),
        );
    }
    let api: Api<Node> = Api::all(client.clone());
    use futures::StreamExt as _;
    futures::stream::iter(all)
        .map(|n| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &n).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;

    // The snapshot: every zone fresh, with a 72-hour forecast.
    let now = jiff::Timestamp::now().as_second();
    let mut snapshot = Snapshot::default();
    for (i, z) in ZONES.iter().enumerate() {
        let base = 50.0 + 60.0 * i as f64;
        let mut r = ZoneRecord::new(
            CarbonIntensity::new(base).unwrap(),
            now - 60,
            Source::new(Source::ELECTRICITY_MAPS),
        );
        r.forecast = Some(Forecast {
            start: now - now % 3600,
            step_seconds: 3600,
            values: (0..72)
                .map(|h| CarbonIntensity::new(base + (h % 24) as f64).unwrap())
                .collect(),
        });
        snapshot.zones.insert(ZoneId::parse(z).unwrap(), r);
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": keys::SNAPSHOT_CONFIGMAP},
        "data": {keys::SNAPSHOT_KEY: snapshot.to_json()}});
    Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .patch(
            keys::SNAPSHOT_CONFIGMAP,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(cm),
        )
        .await
        .unwrap();
    println!(
        "setup: {nodes} nodes in {} zones, {:.1} s",
        ZONES.len(),
        t.elapsed().as_secs_f64()
    );

    let settings = PublisherSettings {
        namespace: ns.name().to_owned(),
        snapshot_configmap: keys::SNAPSHOT_CONFIGMAP.to_owned(),
        cluster_name: ns.name().to_owned(),
        resource_name: ocm::DEFAULT_RESOURCE_NAME.to_owned(),
        score_name: ocm::DEFAULT_SCORE_NAME.to_owned(),
        score: ClusterScoreConfig::default(),
        hysteresis: Hysteresis::for_interval(300, 5),
        node_selector: None,
        region_zones: RegionZoneMap::default(),
        interval: Duration::from_secs(300),
        leader: None,
    };
    let metrics = PublisherMetrics::default();
    let mut walls = Vec::new();
    for run in 0..runs {
        let t = Instant::now();
        let out = publish_once(
            &client,
            &client,
            &settings,
            &metrics,
            now + 300 * run as i64,
        )
        .await
        .unwrap();
        walls.push(t.elapsed().as_secs_f64());
        println!(
            "run {run}: {:.3} s, score {} ({}), written {}",
            walls[walls.len() - 1],
            out.publication.value,
            out.score.zones.len(),
            out.publication.write
        );
    }
    walls.sort_by(f64::total_cmp);
    println!(
        "publish_once at {nodes} nodes: median {:.3} s, min {:.3} s, max {:.3} s over {runs} runs",
        walls[walls.len() / 2],
        walls[0],
        walls[walls.len() - 1]
    );

    // The pure score over the same capacities.
    let views = carbon_kube_multicluster::publisher::list_node_views(&client, None, 500)
        .await
        .unwrap();
    let map = RegionZoneMap::default();
    let zones: Vec<_> = views.iter().map(|n| node_zone(n, &map)).collect();
    let t = Instant::now();
    let capacity = zone_capacities(views.iter().zip(&zones));
    let capacity_time = t.elapsed();
    let t = Instant::now();
    let calls = 1_000;
    let mut sum = 0i64;
    for i in 0..calls {
        sum += i64::from(cluster_score(&capacity, &snapshot, &settings.score, now + i).value);
    }
    let per_call = t.elapsed() / calls as u32;
    println!(
        "zone_capacities over {} nodes: {:.3} ms; cluster_score over {} zones: {:.1} µs per call (checksum {sum})",
        views.len(),
        capacity_time.as_secs_f64() * 1e3,
        capacity.len(),
        per_call.as_secs_f64() * 1e6
    );
    cp.stop();
}
