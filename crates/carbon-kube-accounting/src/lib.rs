//! Carbon accounting: what each namespace and workload emits.
//!
//! `carbon-kube accounting` is a leader-elected controller. Every tick it
//! accounts each running pod over the interval since the previous tick with
//! `carbon_kube_policy::accounting` (energy from Kepler or the Cloud Carbon
//! Footprint model × the grid intensity of the node's zone, the pod's share
//! of node idle power, its embodied share per the SCI specification, and the
//! carbon-agnostic counterfactual of deferred and placed pods), exports
//! per-namespace/workload Prometheus counters and publishes the usage
//! document budgets read (ConfigMap `carbon-kube-accounting`).
//! `carbon-kube report` reads that document back.
//!
//! - [`controller`]: caches, leader election, the tick, the ConfigMap;
//! - [`view`]: pods and nodes to the policy's plain views, workloads;
//! - [`kepler`]: Kepler's per-pod joules from a Prometheus query endpoint;
//! - [`usage`]: pods' CPU usage from the resource metrics API (metrics-server);
//! - [`metrics`]: the counters, with bounded label cardinality;
//! - [`report`]: `carbon-kube report` (table, JSON, CSV).
//!
//! Nothing here decides how much a pod emitted: that is the policy crate's job.

pub mod args;
pub mod controller;
pub mod kepler;
pub mod metrics;
pub mod report;
pub mod usage;
pub mod view;

use std::sync::Arc;

use anyhow::Context as _;
use carbon_kube_k8s::{Readiness, health_router, serve_until, shutdown_signal};
use carbon_kube_model::UnixSeconds;
use prometheus_client::registry::Registry;

pub use args::{Args, ReportArgs};

/// The current time as unix seconds; injected so tests control it.
pub type Clock = Arc<dyn Fn() -> UnixSeconds + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_second())
}

/// Runs `carbon-kube accounting` until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings = args.settings()?;
    tracing::info!(
        tick = ?settings.tick,
        publish_interval = ?settings.publish_interval,
        kepler = settings.kepler.as_ref().map(|k| k.url.to_string()),
        "starting the accounting controller"
    );
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let mut registry = Registry::default();
    let metrics =
        metrics::AccountingMetrics::register(&mut registry, settings.max_workloads_per_namespace);
    let readiness = Readiness::default();
    let health = health_router(Arc::new(registry), readiness.clone());
    let health_task = tokio::spawn(serve_until(args.health_listen, health, shutdown_signal()));
    let result = controller::run_accounting(
        client,
        settings,
        metrics,
        readiness,
        system_clock(),
        shutdown_signal(),
    )
    .await;
    health_task.abort();
    result
}
