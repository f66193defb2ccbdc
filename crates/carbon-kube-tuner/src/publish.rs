//! Where a run's results go: the ConfigMaps (the `carbon-kube-tuner` status
//! and proposal, and `carbon-kube-config` when published), a local folder,
//! and the flags that send them to a cluster.
//!
//! Every successful run writes `carbon-kube-tuner`: the setting it proposes
//! (the `carbon-kube-config` keys), its run status under the key
//! `tunerStatus` (codec: [`carbon_kube_model::tuner::TunerStatus`]) and the
//! full report in the annotation `carbon-kube.io/tuner-report`. A
//! long-running component (the gate controller) exports that status as the
//! `carbon_rl_tuner_*` gauges: a CronJob is never scraped. In active mode a
//! promoted setting also goes into `carbon-kube-config`, which the extender
//! and the gate controller apply until its `validUntil`.
//!
//! This module builds and writes files; writing to the API server is the
//! binary's job (`carbon_kube_k8s::tuner::write_configmap`), so the tuner
//! crate needs no Kubernetes client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use carbon_kube_model::UnixSeconds;
use carbon_kube_model::tuner::{OptimiserResult, TUNER_STATUS_KEY, TunerStatus};

use crate::cli::Report;
use crate::output::configmap;

/// Where `carbon-kube tune` sends its ConfigMaps besides `--output`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeployArgs {
    /// Also write every ConfigMap of the run (carbon-kube-tuner, and
    /// carbon-kube-config when published) as DIR/NAME.json.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Write the ConfigMaps to the API server (in-cluster config, or
    /// $KUBECONFIG): what the chart's CronJob does. Without it (or
    /// --kubeconfig) the tuner never touches a cluster.
    #[arg(long)]
    pub apply: bool,
    /// Write the ConfigMaps to the cluster of this kubeconfig (implies --apply).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The CronJob schedule this run belongs to (cron syntax), recorded in
    /// the status so the exported `carbon_rl_tuner_schedule_interval_seconds`
    /// (and the alert on missed runs) know how often a run is due.
    #[arg(long, env = "CARBON_KUBE_TUNER_SCHEDULE", value_name = "CRON")]
    pub schedule: Option<String>,
}

impl DeployArgs {
    /// Whether to write to a cluster, and with which kubeconfig (`None`:
    /// the default discovery, in-cluster first).
    pub fn cluster(&self) -> Option<Option<&Path>> {
        match &self.kubeconfig {
            Some(path) => Some(Some(path.as_path())),
            None => self.apply.then_some(None),
        }
    }
}

/// The run status recorded in `carbon-kube-tuner`.
pub fn status(
    report: &Report,
    finished_at: UnixSeconds,
    schedule: Option<String>,
    published: bool,
) -> TunerStatus {
    TunerStatus {
        finished_at,
        mode: report.mode.to_owned(),
        schedule,
        chosen: report.chosen.clone(),
        promoted: report.promotion.promoted,
        published,
        reason: report.promotion.reason.clone(),
        optimisers: report
            .rows
            .iter()
            .map(|row| OptimiserResult {
                optimiser: row.optimiser.clone(),
                train_reward: row.train.reward,
                train_saving_ratio: row.train.saving,
                validation_reward: row.validate.reward,
                validation_saving_ratio: row.validate.saving,
                validation_deadline_misses: row.validate.deadline_misses,
                validation_baseline_misses: row.validate.baseline_misses,
                unseen_saving_ratio: row.validate_unseen.as_ref().map(|u| u.saving),
                unseen_reward: row.validate_unseen.as_ref().map(|u| u.reward),
                cpu_seconds: row.cpu_seconds,
                evaluations: u64::try_from(row.evaluations).unwrap_or(u64::MAX),
            })
            .collect(),
    }
}

/// The ConfigMaps of a run, the one `--output` gets first: `carbon-kube-config`
/// (active and promoted) then `carbon-kube-tuner`, or `carbon-kube-tuner`
/// alone. `data` is the proposed setting (the `carbon-kube-config` keys).
pub fn configmaps(
    namespace: &str,
    data: &BTreeMap<String, String>,
    active: bool,
    report: &Report,
    report_json: &str,
    finished_at: UnixSeconds,
    schedule: Option<String>,
) -> Vec<serde_json::Value> {
    let published = active && report.promotion.promoted;
    let mut tuner_data = data.clone();
    tuner_data.insert(
        TUNER_STATUS_KEY.to_owned(),
        status(report, finished_at, schedule, published).to_json(),
    );
    let tuner = configmap(namespace, tuner_data, false, false, report_json);
    if published {
        vec![
            configmap(namespace, data.clone(), true, true, report_json),
            tuner,
        ]
    } else {
        vec![tuner]
    }
}

/// Writes each ConfigMap as `dir/NAME.json` (creating `dir`).
pub fn write_dir(dir: &Path, maps: &[serde_json::Value]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    maps.iter()
        .map(|cm| {
            let name = cm["metadata"]["name"].as_str().unwrap_or("configmap");
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(cm)? + "\n")
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(path)
        })
        .collect()
}
