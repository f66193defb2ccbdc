//! Carbon-Kube's decisions, as pure functions.
//!
//! Every decision Carbon-Kube makes lives here and only here: the extender,
//! the gate controller, the simulator and the tuner all call these functions.
//! Nothing in this crate does IO, awaits, or reads a clock: `now`, the carbon
//! [`Snapshot`](carbon_kube_model::Snapshot) and plain views of nodes and pods
//! are arguments, and every decision comes back with its reason.
//!
//! - [`zone_map`]: which grid zone a node draws power from.
//! - [`placement`]: which nodes a pod may use (filter) and which it prefers (score).
//! - [`budget`]: namespace carbon budgets (period, usage, burn rate, state)
//!   and how they make deferral stricter.
//! - [`deferral`]: when a deferrable pod should be released, and in which zone.
//! - [`migration`]: whether moving a running pod to a greener zone pays, and where to.
//! - [`accounting`]: what each pod emitted (operational, idle, embodied) and its carbon-agnostic counterfactual.
//! - [`cluster_score`]: a whole cluster's carbon score (−100..100) for
//!   multi-cluster placement, with hysteresis, and Karmada weights from it.
//! - [`energy`]: the power model of a pod or job (shared with the simulator).
//! - [`overrides`]: the `carbon-kube-config` codec (placement and deferral keys, expiry).

pub mod accounting;
pub mod budget;
pub mod cluster_score;
pub mod deferral;
pub mod energy;
mod forecast_window;
pub mod migration;
pub mod overrides;
pub mod placement;
pub mod zone_map;

/// Test data: the shared public data folder (`../shared/data` beside the
/// repository), or `$CARBON_KUBE_SHARED_DATA`. Tests only read from it.
#[cfg(test)]
pub(crate) fn shared_data() -> std::path::PathBuf {
    std::env::var_os("CARBON_KUBE_SHARED_DATA").map_or_else(
        || concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data").into(),
        std::path::PathBuf::from,
    )
}
