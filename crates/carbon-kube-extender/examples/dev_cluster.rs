//! `make dev-cluster`: a local control plane (etcd, kube-apiserver,
//! kube-controller-manager, kwok) with kwok nodes in three grid zones, the
//! carbon-kube kube-scheduler (the shipped configuration) with the extender,
//! and a carbon snapshot read from a local file. Prints a kubeconfig; then
//! `kubectl apply` pods with `schedulerName: carbon-kube` and watch where they
//! land. Ctrl-C stops everything.
//!
//! The snapshot file (`DEV_SNAPSHOT`, default `./dev-snapshot.json`) is
//! written at start from a real 2023 hour (Electricity Maps data in the
//! shared data directory) with today's timestamps, unless it exists; edit it
//! while running and the extender reloads it.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_sim::trace::{Column, read_em_csv};
use carbon_kube_testkit::{
    ControlPlane, ControlPlaneOptions, Extender, SchedulerConfig, nodes_in_zone, shared_data,
};
use clap::Parser;

const SHIPPED_CONFIG: &str = include_str!("../../../deploy/scheduler/kube-scheduler-config.yaml");

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: carbon_kube_extender::Args,
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// Today's hour of the day, taken from 2023-06-01 in each zone's real data.
fn real_snapshot() -> Snapshot {
    let hour_of_day = usize::try_from(now().rem_euclid(86_400) / 3600).unwrap();
    let row = (31 + 28 + 31 + 30 + 31) * 24 + hour_of_day;
    let mut s = Snapshot::default();
    for zone in ["DE", "GB", "US-TEX-ERCO"] {
        let path = shared_data().join(format!(
            "carbon_intensity/electricitymaps_hourly/{zone}_2023_hourly.csv"
        ));
        let v = read_em_csv(&path, Column::Direct)
            .unwrap_or_else(|e| panic!("{e} (set CARBON_KUBE_SHARED_DATA)"))
            .values[row];
        s.zones.insert(
            ZoneId::parse(zone).unwrap(),
            ZoneRecord::new(
                CarbonIntensity::new(v).unwrap(),
                now(),
                Source::new(Source::ELECTRICITY_MAPS),
            ),
        );
    }
    s
}

#[tokio::main]
async fn main() {
    carbon_kube_k8s::telemetry::install_crypto_provider();
    let snapshot_path =
        PathBuf::from(std::env::var("DEV_SNAPSHOT").unwrap_or_else(|_| "dev-snapshot.json".into()));
    if !snapshot_path.exists() {
        std::fs::write(&snapshot_path, real_snapshot().to_json()).unwrap();
    }
    let cp = ControlPlane::start(ControlPlaneOptions::default())
        .await
        .unwrap();
    // Logging starts once the control plane is up: the start-up polls the
    // API server until it answers, and those expected refusals would show
    // as client errors.
    carbon_kube_k8s::telemetry::init(carbon_kube_k8s::telemetry::LogFormat::Text, true);
    let client = cp.client().await.unwrap();
    let ns = cp.test_namespace("dev").await.unwrap();
    for (zone, region) in [
        ("DE", "eu-central-1"),
        ("GB", "eu-west-2"),
        ("US-TEX-ERCO", "us-south-1"),
    ] {
        ns.create_nodes(
            &nodes_in_zone(region, format!("{region}a"))
                .named(zone.to_ascii_lowercase())
                .count(2)
                .with_label(keys::LABEL_GRID_ZONE, zone),
        )
        .await
        .unwrap();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let args = Cli::parse_from([
        "extender",
        "--snapshot-file",
        snapshot_path.to_str().unwrap(),
        "--namespace",
        keys::DEFAULT_NAMESPACE,
    ])
    .args;
    tokio::spawn(carbon_kube_extender::serve(
        args,
        listener,
        Some(client),
        std::future::pending(),
    ));
    let doc: serde_json::Value = serde_saphyr::from_str(SHIPPED_CONFIG).unwrap();
    let e = &doc["extenders"][0];
    let config = SchedulerConfig::from_yaml(SHIPPED_CONFIG)
        .unwrap()
        .without_extenders()
        .with_extender(
            Extender::at(&url)
                .filter_verb("filter")
                .prioritize_verb("prioritize")
                .weight(e["weight"].as_i64().unwrap())
                .node_cache_capable(true)
                .ignorable(true)
                .http_timeout(Duration::from_secs(1)),
        );
    let scheduler = cp.start_scheduler(config).await.unwrap();
    println!();
    println!("carbon-kube dev cluster is up.");
    println!("  export KUBECONFIG={}", cp.kubeconfig_path().display());
    println!("  kubectl get nodes -L {}", keys::LABEL_GRID_ZONE);
    println!("  kubectl apply -f deploy/examples/green-batch-job.yaml");
    println!("  kubectl get pods -o wide; kubectl describe pod green-batch-job");
    println!(
        "  extender: {url}/metrics   snapshot file: {} (edit it: reloaded)",
        snapshot_path.display()
    );
    println!("  kube-scheduler log: {}", scheduler.log_path().display());
    println!("Ctrl-C stops everything.");
    let _ = tokio::signal::ctrl_c().await;
    drop(scheduler);
    cp.stop();
}
