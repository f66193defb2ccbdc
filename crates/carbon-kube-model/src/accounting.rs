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

/// Label on every ConfigMap of the accounting documents, value the shard's
/// index (`"0"`, `"1"`, ...): `kubectl get configmap -l
/// carbon-kube.io/accounting-shard -o json` lists them all.
pub const ACCOUNTING_SHARD_LABEL: &str = "carbon-kube.io/accounting-shard";
/// Annotation on shard 0 (the [`ACCOUNTING_CONFIGMAP`] itself): how many
/// shards the documents are split across (absent: one). Readers get shards
/// `1..N` by name ([`shard_name`]); the controller writes them before shard 0.
pub const ANNOTATION_ACCOUNTING_SHARDS: &str = "carbon-kube.io/accounting-shards";
/// Most shards the accounting documents may use (the chart grants access to
/// these names only).
pub const MAX_ACCOUNTING_SHARDS: usize = 16;

/// Name of shard `index` of the accounting ConfigMap `base`: `base` itself
/// for shard 0, `base-<index>` after.
pub fn shard_name(base: &str, index: usize) -> String {
    if index == 0 {
        base.to_owned()
    } else {
        format!("{base}-{index}")
    }
}

/// The shard count a shard-0 annotation value says (absent, bad or 0: 1),
/// at most [`MAX_ACCOUNTING_SHARDS`].
pub fn shard_count(annotation: Option<&str>) -> usize {
    annotation
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_ACCOUNTING_SHARDS)
}

/// Merges the per-namespace maps of shards written as `(generated_at, map)`:
/// every namespace once, from the newest shard that has it (a namespace
/// moving between shards during a write is never counted twice).
pub fn merge_namespaces<T>(
    shards: impl IntoIterator<Item = (UnixSeconds, BTreeMap<String, T>)>,
) -> BTreeMap<String, T> {
    let mut out: BTreeMap<String, (UnixSeconds, T)> = BTreeMap::new();
    for (at, map) in shards {
        for (ns, v) in map {
            match out.get(&ns) {
                Some((seen, _)) if *seen >= at => {}
                _ => {
                    out.insert(ns, (at, v));
                }
            }
        }
    }
    out.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

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

/// The document in [`ACCOUNTING_CONFIGMAP`] / [`USAGE_KEY`] (and, with
/// many namespaces, in its shards: see [`UsageDocument::merge_shards`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDocument {
    /// When the controller last wrote it (unix seconds).
    pub generated_at: UnixSeconds,
    /// Per namespace, its days in ascending order, at most
    /// [`USAGE_HISTORY_DAYS`] of them.
    pub namespaces: BTreeMap<String, Vec<DayUsage>>,
}

impl UsageDocument {
    /// One document from the shards' documents: every namespace once (from
    /// the newest shard listing it), written at the *oldest* shard's time, so
    /// a shard that stopped being written makes the whole document stale
    /// (budgets then fail open) rather than half of it silently old.
    pub fn merge_shards(shards: impl IntoIterator<Item = Self>) -> Self {
        let mut generated_at = None::<UnixSeconds>;
        let namespaces = merge_namespaces(shards.into_iter().map(|d| {
            generated_at = Some(generated_at.map_or(d.generated_at, |g| g.min(d.generated_at)));
            (d.generated_at, d.namespaces)
        }));
        Self {
            generated_at: generated_at.unwrap_or_default(),
            namespaces,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(g: f64) -> Vec<DayUsage> {
        vec![DayUsage {
            day_start: 86_400,
            operational_grams: g,
            ..DayUsage::default()
        }]
    }

    #[test]
    fn shards_merge_into_one_document_each_namespace_once() {
        let a = UsageDocument {
            generated_at: 200,
            namespaces: BTreeMap::from([("a".into(), day(1.0)), ("moved".into(), day(2.0))]),
        };
        // Written before `a` in the same publish: its copy of `moved` is older.
        let b = UsageDocument {
            generated_at: 100,
            namespaces: BTreeMap::from([("b".into(), day(3.0)), ("moved".into(), day(9.0))]),
        };
        let m = UsageDocument::merge_shards([b, a]);
        assert_eq!(m.generated_at, 100, "the oldest shard's time");
        assert_eq!(m.namespaces.len(), 3);
        assert_eq!(
            m.namespaces["moved"][0].operational_grams, 2.0,
            "the newest copy"
        );
        assert_eq!(m.namespaces["b"][0].operational_grams, 3.0);
    }

    #[test]
    fn shard_names_and_counts() {
        assert_eq!(
            shard_name(ACCOUNTING_CONFIGMAP, 0),
            "carbon-kube-accounting"
        );
        assert_eq!(
            shard_name(ACCOUNTING_CONFIGMAP, 3),
            "carbon-kube-accounting-3"
        );
        assert_eq!(shard_count(None), 1);
        assert_eq!(shard_count(Some("4")), 4);
        assert_eq!(shard_count(Some("0")), 1);
        assert_eq!(shard_count(Some("lots")), 1);
        assert_eq!(shard_count(Some("1000")), MAX_ACCOUNTING_SHARDS);
    }
}
