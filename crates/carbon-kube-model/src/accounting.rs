//! Carbon accounting: the usage document the accounting controller
//! (`carbon-kube accounting`) publishes in the [`ACCOUNTING_CONFIGMAP`]
//! ConfigMap (key [`USAGE_KEY`]), and the namespace budget keys. The gate
//! controller reads the document back to apply namespace budgets; the same
//! figures are exported as Prometheus counters by the accounting controller.
//!
//! Pure data: per namespace and per UTC day, the grams of CO2eq attributed
//! to the namespace's pods (operational = energy × the grid intensity of the
//! node's zone over the same interval; idle = the namespace's share of node
//! idle/system power; embodied = the SCI `M` term), with a data-quality label.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixSeconds;

/// ConfigMap the accounting controller writes, in its own namespace.
pub const ACCOUNTING_CONFIGMAP: &str = "carbon-kube-accounting";
/// Key of the [`UsageDocument`] JSON inside [`ACCOUNTING_CONFIGMAP`].
pub const USAGE_KEY: &str = "usage.json";
/// Days of history the usage document keeps (covers a calendar month).
pub const USAGE_HISTORY_DAYS: usize = 35;

/// Namespace annotation: the namespace's carbon budget, grams of CO2eq per
/// budget period (a positive decimal number, e.g. `"25000"`).
pub const ANNOTATION_BUDGET_GRAMS: &str = "carbon-kube.io/budget-grams";
/// Namespace annotation: the budget period, `day`, `week` (ISO week, from
/// Monday 00:00 UTC) or `month` (calendar month, UTC). Default `month`.
pub const ANNOTATION_BUDGET_PERIOD: &str = "carbon-kube.io/budget-period";

/// How a figure was obtained.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DataQuality {
    /// Energy measured (Kepler's per-pod joules) for every pod in the figure.
    Measured,
    /// Energy modelled (Cloud Carbon Footprint model) for some or all pods.
    #[default]
    Modelled,
}

/// One namespace's usage over one UTC day.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayUsage {
    /// Start of the UTC day (unix seconds, a multiple of 86 400).
    pub day_start: UnixSeconds,
    /// Energy attributed to the namespace's pods, joules.
    pub energy_joules: f64,
    /// Operational emissions of the pods' own energy, grams CO2eq.
    pub operational_grams: f64,
    /// The namespace's share of node idle/system power, grams CO2eq.
    pub idle_grams: f64,
    /// Embodied emissions (SCI `M`), grams CO2eq.
    pub embodied_grams: f64,
    /// Modelled if any contribution that day was modelled.
    pub quality: DataQuality,
}

impl DayUsage {
    /// Operational (own + idle share) plus embodied grams: what a budget counts.
    pub fn total_grams(&self) -> f64 {
        self.operational_grams + self.idle_grams + self.embodied_grams
    }
}

/// The document in [`ACCOUNTING_CONFIGMAP`] / [`USAGE_KEY`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDocument {
    /// When the controller last wrote it (unix seconds).
    pub generated_at: UnixSeconds,
    /// Per namespace, its days in ascending order, at most
    /// [`USAGE_HISTORY_DAYS`] of them.
    pub namespaces: BTreeMap<String, Vec<DayUsage>>,
}
