//! Migration: a carbon-aware descheduler that moves running pods only when
//! it pays, and never loops.
//!
//! `carbon-kube migrator` is leader-elected. Every cycle (and on every new
//! carbon snapshot) it asks `carbon_kube_policy::migration` one question per
//! running, opted-in pod: would moving it to the best feasible zone save
//! more carbon than the move costs? If so, within the caps, it records the
//! move on the pod's owner and evicts the pod through the Eviction API
//! ([`evict`]); the owner's controller recreates it, and the scheduler (with
//! Carbon-Kube's extender) places the replacement, whose zone is compared
//! with the plan.
//!
//! - [`controller`]: caches, leader election, the cycle;
//! - [`evict`]: the one guarded eviction actuator;
//! - [`caps`]: per node, namespace, owner, cycle and hour;
//! - [`state`]: the restart-safe state on owners;
//! - [`view`]: Kubernetes objects to the policy's plain views;
//! - [`metrics`]: `carbon_kube_migrations_total{result}` and friends;
//! - [`overrides`]: the `migration.*` keys of `carbon-kube-config` (what the
//!   tuner publishes) laid over the flags until they expire.
//!
//! Nothing here decides whether a move pays: that is the policy crate's job.

pub mod args;
pub mod caps;
pub mod controller;
pub mod evict;
pub mod metrics;
pub mod overrides;
pub mod state;
pub mod view;

use std::sync::Arc;

use anyhow::Context as _;
use carbon_kube_k8s::{Readiness, health_router, serve_until, shutdown_signal};
use carbon_kube_model::UnixSeconds;
use prometheus_client::registry::Registry;

pub use args::Args;

/// The current time as unix seconds; injected so tests control it.
pub type Clock = Arc<dyn Fn() -> UnixSeconds + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_second())
}

/// Runs `carbon-kube migrator` until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings = args.settings()?;
    tracing::info!(
        dry_run = settings.dry_run,
        caps = ?settings.caps,
        migration = ?settings.migration,
        interval = ?settings.interval,
        "starting the migrator"
    );
    let config = kube::Config::infer()
        .await
        .context("reading the Kubernetes client configuration")?;
    let client = kube::Client::try_from(config.clone()).context("connecting to Kubernetes")?;
    // Evictions: no built-in 429 retry (a PDB-blocked eviction is an answer).
    let mut no_retry = config;
    no_retry.default_retry = false;
    let evict_client = kube::Client::try_from(no_retry).context("building the eviction client")?;
    let mut registry = Registry::default();
    let metrics = metrics::MigratorMetrics::register(&mut registry);
    let readiness = Readiness::default();
    let health = health_router(Arc::new(registry), readiness.clone());
    let health_task = tokio::spawn(serve_until(args.health_listen, health, shutdown_signal()));
    let result = controller::run_migrator(
        client,
        evict_client,
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
