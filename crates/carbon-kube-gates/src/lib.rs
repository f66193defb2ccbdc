//! Temporal shifting: deferrable pods wait behind a scheduling gate for a
//! green window.
//!
//! Two components, one binary subcommand each:
//!
//! - the **webhook** (`carbon-kube gates webhook`): a mutating admission
//!   webhook that adds the `carbon-kube.io/green-window` scheduling gate to
//!   pods that opt in ([`admission`] decides, [`webhook`] serves HTTPS);
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

pub mod admission;
pub mod spec;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;

use carbon_kube_model::UnixSeconds;

pub mod metrics;
pub mod webhook;

/// The current time as unix seconds; injected so tests control it.
pub type Clock = Arc<dyn Fn() -> UnixSeconds + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_second())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
