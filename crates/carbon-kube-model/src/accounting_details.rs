//! The accounting controller's second document, beside the
//! [`UsageDocument`](crate::accounting::UsageDocument) budgets read: what
//! `carbon-kube report` needs on top of it. Same ConfigMap
//! ([`ACCOUNTING_CONFIGMAP`](crate::accounting::ACCOUNTING_CONFIGMAP)), key
//! [`DETAILS_KEY`].
//!
//! Per namespace and UTC day: the part of the operational grams computed
//! from marginal signals, measured versus modelled energy, and the savings
//! against the carbon-agnostic counterfactual of pods Carbon-Kube deferred or
//! placed. Per day: the node idle power and embodied emissions no pod
//! requested (unallocated). Per zone: an hourly intensity history, so the
//! counterfactual of a pod deferred before a restart can still be computed.
//!
//! Pure data; every field past `generatedAt` defaults when absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixSeconds;
use crate::accounting::DayUsage;

/// Key of the [`DetailsDocument`] JSON inside the accounting ConfigMap.
pub const DETAILS_KEY: &str = "details.json";

/// Savings of one kind (deferral or placement) for a namespace on one day:
/// the grams the same pods emitted and the grams a carbon-agnostic scheduler
/// would have caused with the same energy (operational + idle share).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Savings {
    /// Grams CO2eq the pods emitted (operational + idle share).
    pub actual_grams: f64,
    /// Grams CO2eq of the same energy under the counterfactual.
    pub counterfactual_grams: f64,
    /// Pod-intervals counted (one per pod per accounting tick).
    pub intervals: u64,
}

impl Savings {
    /// Counterfactual minus actual: positive when Carbon-Kube saved carbon.
    pub fn saved_grams(&self) -> f64 {
        self.counterfactual_grams - self.actual_grams
    }

    /// Adds another figure to this one.
    pub fn add(&mut self, other: &Savings) {
        self.actual_grams += other.actual_grams;
        self.counterfactual_grams += other.counterfactual_grams;
        self.intervals += other.intervals;
    }
}

/// One namespace's details over one UTC day.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DayDetails {
    /// Start of the UTC day (unix seconds, a multiple of 86 400).
    pub day_start: UnixSeconds,
    /// Part of the day's operational + idle grams computed from a marginal
    /// signal (zones whose snapshot record is marginal, e.g. WattTime).
    pub marginal_grams: f64,
    /// Energy measured by Kepler, joules.
    pub measured_joules: f64,
    /// Energy modelled (Cloud Carbon Footprint model), joules.
    pub modelled_joules: f64,
    /// Energy on nodes whose zone had no intensity (no grams counted), joules.
    pub unknown_intensity_joules: f64,
    /// Deferred pods: intensity at creation (carbon-agnostic start) versus at run.
    pub deferred: Savings,
    /// Placed pods: the cluster's capacity-weighted mean intensity versus the
    /// chosen node's zone.
    pub placed: Savings,
}

/// One hour of a zone's intensity as the controller saw it: the integral of
/// g/kWh over the seconds observed, and those seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HourIntensity {
    /// Start of the hour (unix seconds, a multiple of 3 600).
    pub hour_start: UnixSeconds,
    /// Sum of g/kWh × seconds observed in the hour.
    pub g_per_kwh_seconds: f64,
    /// Seconds observed in the hour.
    pub seconds: f64,
}

impl HourIntensity {
    /// The hour's mean intensity, g/kWh, if anything was observed.
    pub fn mean(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.g_per_kwh_seconds / self.seconds)
    }
}

/// The document in the accounting ConfigMap, key [`DETAILS_KEY`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DetailsDocument {
    /// When the controller last wrote it (unix seconds).
    pub generated_at: UnixSeconds,
    /// Per namespace, its days in ascending order (at most
    /// [`USAGE_HISTORY_DAYS`](crate::accounting::USAGE_HISTORY_DAYS)).
    pub namespaces: BTreeMap<String, Vec<DayDetails>>,
    /// Per day, node idle power and embodied emissions not requested by any
    /// pod (capacity nobody reserved), in ascending order.
    pub unallocated: Vec<DayUsage>,
    /// Per zone, the hourly intensities seen, ascending, bounded.
    pub zone_history: BTreeMap<String, Vec<HourIntensity>>,
}

impl DetailsDocument {
    /// One document from the shards' documents: every namespace once (from
    /// the newest shard listing it); the cluster-wide parts (`unallocated`,
    /// `zone_history`) from the newest shard that has them (shard 0 carries
    /// them); written at the oldest shard's time.
    pub fn merge_shards(shards: impl IntoIterator<Item = Self>) -> Self {
        let mut shards: Vec<Self> = shards.into_iter().collect();
        shards.sort_by_key(|d| std::cmp::Reverse(d.generated_at));
        let generated_at = shards
            .iter()
            .map(|d| d.generated_at)
            .min()
            .unwrap_or_default();
        let unallocated = shards
            .iter_mut()
            .find(|d| !d.unallocated.is_empty())
            .map(|d| std::mem::take(&mut d.unallocated))
            .unwrap_or_default();
        let zone_history = shards
            .iter_mut()
            .find(|d| !d.zone_history.is_empty())
            .map(|d| std::mem::take(&mut d.zone_history))
            .unwrap_or_default();
        let namespaces = crate::accounting::merge_namespaces(
            shards.into_iter().map(|d| (d.generated_at, d.namespaces)),
        );
        Self {
            generated_at,
            namespaces,
            unallocated,
            zone_history,
        }
    }
}
