//! The tuner's run status: what `carbon-kube tune` records in the
//! `carbon-kube-tuner` ConfigMap (key [`TUNER_STATUS_KEY`]) after every
//! successful run, and what a long-running component reads back to export
//! it as Prometheus gauges (`carbon_rl_tuner_*`). A CronJob is never scraped;
//! this one codec is the path from the tuner's run to Prometheus.
//!
//! Pure data: the tuner builds it, `carbon-kube-k8s` reads it.

use serde::{Deserialize, Serialize};

use crate::UnixSeconds;

/// ConfigMap the tuner always writes: the setting it proposes (what it
/// publishes, or would publish in shadow mode) and its run status.
pub const TUNER_CONFIGMAP: &str = "carbon-kube-tuner";
/// Key of the [`TunerStatus`] JSON inside [`TUNER_CONFIGMAP`].
pub const TUNER_STATUS_KEY: &str = "tunerStatus";

/// One successful tuner run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunerStatus {
    /// When the run finished (unix seconds).
    pub finished_at: UnixSeconds,
    /// `shadow` or `active`.
    pub mode: String,
    /// The CronJob schedule the run belongs to (cron syntax), when known:
    /// readers derive the expected interval between runs from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The optimiser whose setting was proposed (best training reward).
    pub chosen: String,
    /// The proposed setting beat the current one on validation by the margin.
    pub promoted: bool,
    /// The setting was written into `carbon-kube-config` (active and promoted).
    pub published: bool,
    /// Why it was (not) promoted, one sentence.
    #[serde(default)]
    pub reason: String,
    /// Each optimiser's best setting, and the current setting (`current`).
    pub optimisers: Vec<OptimiserResult>,
}

/// One optimiser's result in a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptimiserResult {
    /// `current`, `grid`, `cma-es`, `ppo`, ...
    pub optimiser: String,
    /// Mean episode reward on the training episodes.
    pub train_reward: f64,
    /// Mean relative saving against the carbon-agnostic baseline, training.
    pub train_saving_ratio: f64,
    /// Mean episode reward on the validation episodes (trained zones).
    pub validation_reward: f64,
    /// Mean relative saving on the validation episodes (trained zones).
    pub validation_saving_ratio: f64,
    /// Deadline misses on the validation episodes (trained zones).
    pub validation_deadline_misses: u64,
    /// The baseline's deadline misses on the same episodes.
    pub validation_baseline_misses: u64,
    /// Mean relative saving on the validation episodes of unseen zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_saving_ratio: Option<f64>,
    /// Mean episode reward on the validation episodes of unseen zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_reward: Option<f64>,
    /// CPU seconds the optimiser spent training.
    pub cpu_seconds: f64,
    /// Settings it evaluated.
    pub evaluations: u64,
}

/// A status that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{TUNER_CONFIGMAP} key {TUNER_STATUS_KEY}: {0}")]
pub struct TunerStatusError(String);

impl TunerStatus {
    /// The status as the ConfigMap value.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the ConfigMap value, naming the field that is wrong.
    pub fn from_json(text: &str) -> Result<Self, TunerStatusError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| TunerStatusError(format!("{}: {}", e.path(), e.inner())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_and_a_bad_one_names_its_field() {
        let s = TunerStatus {
            finished_at: 1_800_000_000,
            mode: "shadow".into(),
            schedule: Some("0 */6 * * *".into()),
            chosen: "cma-es".into(),
            promoted: true,
            published: false,
            reason: "beats it".into(),
            optimisers: vec![OptimiserResult {
                optimiser: "cma-es".into(),
                validation_saving_ratio: 0.12,
                unseen_saving_ratio: Some(0.08),
                ..OptimiserResult::default()
            }],
        };
        assert_eq!(TunerStatus::from_json(&s.to_json()).unwrap(), s);
        let e = TunerStatus::from_json(r#"{"finishedAt":"soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tunerStatus: finishedAt"), "{e}");
    }
}
