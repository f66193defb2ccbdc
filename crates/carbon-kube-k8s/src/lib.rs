//! Kubernetes and serving glue shared by Carbon-Kube's components.
//!
//! - [`snapshot_store`]: the `carbon-intensity-data` ConfigMap, read and written safely.
//! - [`config_watch`]: one named ConfigMap watched into a callback (runtime overrides).
//! - [`serve`]: `/metrics`, `/healthz` and `/readyz` for every long-running component.
//! - [`telemetry`]: logging and TLS provider setup.
//! - [`node_match`]: Kubernetes' node selection semantics and a pod's effective requests.
//! - [`leader`]: leader election for the controllers (a Lease, or always the leader).
//! - [`quantity`]: resource quantities as CPU millicores and memory bytes.
//! - [`tuner`]: the tuner's run results as `carbon_rl_tuner_*` gauges, and its ConfigMap writes.
//!
//! Decisions do not live here: see `carbon-kube-policy`.

pub mod config_watch;
pub mod leader;
pub mod metrics;
pub mod node_match;
pub mod quantity;
pub mod serve;
pub mod snapshot_store;
pub mod telemetry;
pub mod tuner;

pub use metrics::{SnapshotErrors, SnapshotGauges};
pub use serve::{Readiness, health_router, serve_until, shutdown_signal};
pub use snapshot_store::{SnapshotStore, StoreError, snapshot_from_configmap};
