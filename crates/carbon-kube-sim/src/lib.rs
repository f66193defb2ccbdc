//! Carbon-Kube's simulator: what would Carbon-Kube save, on real grid data?
//!
//! A discrete-event simulation of a cluster (zones with nodes and CPU/memory
//! capacity) running a workload of jobs, with hourly carbon-intensity traces
//! per zone. Every carbon-aware decision comes from `carbon-kube-policy`, the
//! same functions the extender and the gate controller call; the simulator
//! only builds the views those functions see (nodes, pods, a carbon snapshot
//! built from a *forecast*, never the actual trace) and keeps the books.
//!
//! It does not talk to Kubernetes, does not model kube-scheduler's plugins
//! beyond "spread by free capacity", and does not pause running jobs; the
//! `carbon-kube+migrate` policy moves running jobs between zones through
//! `carbon_kube_policy::migration`, the migrator's rule (see
//! `docs/simulator.md` for every limitation).

pub mod carbon_model;
pub mod energy;
pub mod engine;
pub mod error;
pub mod forecast;
pub mod oracle;
pub mod plot;
pub mod report;
pub mod run;
pub mod trace;
pub mod workload;

pub use error::{Result, SimError};
pub use run::{Args, run, simulate};

/// Environment variable that points at the shared public data folder.
pub const SHARED_DATA_ENV: &str = "CARBON_KUBE_SHARED_DATA";

/// The shared public data folder (`../shared/data` next to the repository),
/// or `$CARBON_KUBE_SHARED_DATA` when set. Tests and benchmarks read real data
/// from here; nothing in it is copied into the repository.
pub fn shared_data_dir() -> std::path::PathBuf {
    match std::env::var_os(SHARED_DATA_ENV) {
        Some(p) => p.into(),
        None => concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data").into(),
    }
}
