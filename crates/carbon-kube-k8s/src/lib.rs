//! Kubernetes and serving glue shared by Carbon-Kube's components.
//!
//! - [`snapshot_store`]: the `carbon-intensity-data` ConfigMap, read and written safely.
//! - [`serve`]: `/metrics`, `/healthz` and `/readyz` for every long-running component.
//! - [`telemetry`]: logging and TLS provider setup.
//!
//! Decisions do not live here: see `carbon-kube-policy`.

pub mod metrics;
pub mod serve;
pub mod snapshot_store;
pub mod telemetry;

pub use metrics::SnapshotGauges;
pub use serve::{Readiness, health_router, serve_until, shutdown_signal};
pub use snapshot_store::{SnapshotStore, StoreError, snapshot_from_configmap};
