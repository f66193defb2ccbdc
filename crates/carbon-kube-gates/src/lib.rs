//! Temporal shifting: deferrable pods wait behind a scheduling gate for a
//! green window.
//!
//! Two components, one binary subcommand each:
//!
//! - the **webhook** (`carbon-kube gates webhook`): a mutating admission
//!   webhook that adds the `carbon-kube.io/green-window` scheduling gate to
//!   pods that opt in ([`admission`] decides, [`webhook`] serves HTTPS),
//!   and, with `--steer-migrations`, steers the replacement of a pod the
//!   migrator moved to its planned zone ([`reservation`]);
//! - the **controller** (`carbon-kube gates controller`): leader-elected,
//!   watches gated pods, plans each release with
//!   `carbon_kube_policy::deferral::plan_release` ([`reconcile`]), stores the
//!   plan on the pod, and removes the gate when the window (or, at the
//!   latest, the deadline) comes, through one guarded, paced actuator
//!   ([`actuator`]).
//!
//! Deadlines are sacred and everything fails open: no data, stale data, bad
//! annotations or a long controller outage all end in a release, with a
//! reason. Nothing here decides *when* a pod is greenest: that is the policy
//! crate's job.

pub mod actuator;
pub mod admission;
pub mod args;
pub mod budgets;
pub mod controller;
pub mod overrides;
pub mod spec;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;

use anyhow::Context as _;
use carbon_kube_k8s::{Readiness, health_router, serve_until};
use carbon_kube_model::UnixSeconds;
use prometheus_client::registry::Registry;

pub use args::ControllerArgs;
pub use webhook::WebhookArgs;

/// `carbon-kube gates …`: the two deferral components.
#[derive(clap::Subcommand, Debug, Clone)]
// Parsed once at startup; boxing the controller's flags would gain nothing.
#[allow(clippy::large_enum_variant)]
pub enum GatesCommand {
    /// Serve the mutating admission webhook that puts opted-in pods behind
    /// the carbon-kube.io/green-window scheduling gate (HTTPS).
    Webhook(WebhookArgs),
    /// Run the leader-elected controller that releases gated pods in green
    /// windows, by their deadline at the latest.
    Controller(ControllerArgs),
}

/// Runs a gates subcommand until SIGTERM or Ctrl-C.
pub async fn run(cmd: GatesCommand) -> anyhow::Result<()> {
    match cmd {
        GatesCommand::Webhook(args) => webhook::run(args).await,
        GatesCommand::Controller(args) => run_controller(args).await,
    }
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    tracing::info!(
        dry_run = settings.dry_run,
        affinity = ?settings.affinity,
        pacing = ?settings.pacing,
        planner = ?settings.reconcile.deferral,
        "starting the gates controller"
    );
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let mut registry = Registry::default();
    let metrics = metrics::ControllerMetrics::register(&mut registry);
    // The tuner's runs (a CronJob, never scraped) on this /metrics.
    let tuner = carbon_kube_k8s::tuner::TunerGauges::register(&mut registry);
    let tuner_task = tokio::spawn(carbon_kube_k8s::tuner::watch_tuner_status(
        client.clone(),
        args.namespace.clone(),
        tuner,
    ));
    let readiness = Readiness::default();
    let health = health_router(Arc::new(registry), readiness.clone());
    let health_task = tokio::spawn(serve_until(args.health_listen, health, shutdown_signal()));
    let result = controller::run_controller(
        client,
        settings,
        metrics,
        readiness,
        system_clock(),
        shutdown_signal(),
    )
    .await;
    health_task.abort();
    tuner_task.abort();
    result
}

pub mod metrics;
pub mod reconcile;
pub mod reservation;
pub mod webhook;
pub mod zones;

/// The current time as unix seconds; injected so tests control it.
pub type Clock = Arc<dyn Fn() -> UnixSeconds + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_second())
}

pub use carbon_kube_k8s::shutdown_signal;
