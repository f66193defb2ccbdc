//! The tuner's run results on `/metrics`, and the tuner's ConfigMap writes.
//!
//! `carbon-kube tune` runs as a CronJob, which Prometheus never scrapes. So
//! the tuner records every successful run in the `carbon-kube-tuner`
//! ConfigMap (codec: [`carbon_kube_model::tuner::TunerStatus`]) and a
//! long-running component (the gate controller) watches that ConfigMap and
//! exports it as the `carbon_rl_tuner_*` gauges ([`TunerGauges`]). No
//! Pushgateway, no new Service: the numbers live in the cluster beside the
//! setting they explain, and survive a restart of the exporter.
//!
//! What this module does not do: decide anything about the tuned settings
//! (the tuner and `carbon-kube-policy` do), or read `carbon-kube-config`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use carbon_kube_model::UnixSeconds;
use carbon_kube_model::tuner::{TUNER_CONFIGMAP, TUNER_STATUS_KEY, TunerStatus};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type FloatGauge = Gauge<f64, AtomicU64>;

/// Labels `{optimiser}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OptimiserLabels {
    /// `current` (the static setting), `grid`, `cma-es`, `ppo`, ...
    pub optimiser: String,
}

/// Labels `{optimiser, period}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeriodLabels {
    /// The optimiser.
    pub optimiser: String,
    /// `train`, `validation` (trained zones) or `unseen` (validation, unseen zones).
    pub period: String,
}

/// Labels `{optimiser, zones}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZonesLabels {
    /// The optimiser.
    pub optimiser: String,
    /// `trained` (the zones tuned on) or `unseen` (never tuned on).
    pub zones: String,
}

/// The `carbon_rl_tuner_*` gauges: the last successful tuner run.
#[derive(Clone, Default)]
pub struct TunerGauges {
    last_success: FloatGauge,
    interval: FloatGauge,
    promoted: Gauge,
    published: Gauge,
    active: Gauge,
    chosen: Family<OptimiserLabels, Gauge>,
    reward: Family<PeriodLabels, FloatGauge>,
    train_saving: Family<OptimiserLabels, FloatGauge>,
    validation_saving: Family<ZonesLabels, FloatGauge>,
    misses: Family<OptimiserLabels, Gauge>,
    baseline_misses: Gauge,
    cpu: Family<OptimiserLabels, FloatGauge>,
    errors: Counter,
}

impl TunerGauges {
    /// Creates the gauges and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let g = Self::default();
        let r = registry;
        r.register(
            "carbon_rl_tuner_last_success_timestamp_seconds",
            "When the last successful tuner run finished, unix seconds",
            g.last_success.clone(),
        );
        r.register(
            "carbon_rl_tuner_schedule_interval_seconds",
            "Interval between the tuner's scheduled runs after the last one (from its CronJob schedule), seconds",
            g.interval.clone(),
        );
        r.register(
            "carbon_rl_tuner_promoted",
            "1 if the last run's setting beat the current one on validation by the margin on every seed",
            g.promoted.clone(),
        );
        r.register(
            "carbon_rl_tuner_published",
            "1 if the last run wrote its setting into carbon-kube-config (active mode and promoted)",
            g.published.clone(),
        );
        r.register(
            "carbon_rl_tuner_active",
            "1 if the tuner runs in active mode (publishes), 0 in shadow mode",
            g.active.clone(),
        );
        r.register(
            "carbon_rl_tuner_chosen",
            "1 for the optimiser whose setting the last run proposed (best training reward)",
            g.chosen.clone(),
        );
        r.register(
            "carbon_rl_tuner_reward_average",
            "Mean episode reward (saving minus the deadline-miss penalty) by optimiser and period (train, validation, unseen)",
            g.reward.clone(),
        );
        r.register(
            "carbon_rl_tuner_train_saving_ratio",
            "Mean relative carbon saving against the carbon-agnostic baseline on the training episodes",
            g.train_saving.clone(),
        );
        r.register(
            "carbon_rl_tuner_validation_saving_ratio",
            "Mean relative carbon saving on the validation episodes (a later period), in the trained or unseen zones",
            g.validation_saving.clone(),
        );
        r.register(
            "carbon_rl_tuner_validation_deadline_misses",
            "Deadline misses on the validation episodes (trained zones), by optimiser",
            g.misses.clone(),
        );
        r.register(
            "carbon_rl_tuner_validation_baseline_deadline_misses",
            "Deadline misses of the carbon-agnostic baseline on the same validation episodes",
            g.baseline_misses.clone(),
        );
        r.register(
            "carbon_rl_tuner_training_cpu_seconds",
            "CPU seconds each optimiser spent training in the last run",
            g.cpu.clone(),
        );
        r.register(
            "carbon_rl_tuner_status_errors",
            "Tuner statuses in the carbon-kube-tuner ConfigMap that could not be read (the previous values stay)",
            g.errors.clone(),
        );
        g
    }

    /// Sets the gauges from one run's status; the previous run's series go.
    pub fn observe(&self, status: &TunerStatus) {
        self.clear();
        // Unix seconds are far below 2^53: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        self.last_success.set(status.finished_at as f64);
        if let Some(interval) = status
            .schedule
            .as_deref()
            .and_then(|s| schedule_interval_seconds(s, status.finished_at))
        {
            #[allow(clippy::cast_precision_loss)]
            self.interval.set(interval as f64);
        }
        self.promoted.set(i64::from(status.promoted));
        self.published.set(i64::from(status.published));
        self.active.set(i64::from(status.mode == "active"));
        for row in &status.optimisers {
            let o = || row.optimiser.clone();
            let reward = |period: &str, v: f64| {
                self.reward
                    .get_or_create(&PeriodLabels {
                        optimiser: o(),
                        period: period.to_owned(),
                    })
                    .set(v);
            };
            reward("train", row.train_reward);
            reward("validation", row.validation_reward);
            if let Some(v) = row.unseen_reward {
                reward("unseen", v);
            }
            let by = OptimiserLabels { optimiser: o() };
            self.train_saving
                .get_or_create(&by)
                .set(row.train_saving_ratio);
            let saving = |zones: &str, v: f64| {
                self.validation_saving
                    .get_or_create(&ZonesLabels {
                        optimiser: o(),
                        zones: zones.to_owned(),
                    })
                    .set(v);
            };
            saving("trained", row.validation_saving_ratio);
            if let Some(v) = row.unseen_saving_ratio {
                saving("unseen", v);
            }
            self.misses
                .get_or_create(&by)
                .set(i64::try_from(row.validation_deadline_misses).unwrap_or(i64::MAX));
            self.baseline_misses
                .set(i64::try_from(row.validation_baseline_misses).unwrap_or(i64::MAX));
            self.cpu.get_or_create(&by).set(row.cpu_seconds);
            if row.optimiser != "current" {
                self.chosen
                    .get_or_create(&by)
                    .set(i64::from(row.optimiser == status.chosen));
            }
        }
    }

    /// Forgets the last run (the ConfigMap was deleted).
    pub fn clear(&self) {
        self.last_success.set(0.0);
        self.interval.set(0.0);
        self.promoted.set(0);
        self.published.set(0);
        self.active.set(0);
        self.baseline_misses.set(0);
        self.chosen.clear();
        self.reward.clear();
        self.train_saving.clear();
        self.validation_saving.clear();
        self.misses.clear();
        self.cpu.clear();
    }

    /// Reads one version of the ConfigMap's data into the gauges. A missing
    /// or unreadable status is counted and logged; the gauges keep the
    /// previous run.
    pub fn observe_configmap(&self, data: Option<&BTreeMap<String, String>>) {
        let Some(text) = data.and_then(|d| d.get(TUNER_STATUS_KEY)) else {
            tracing::warn!(
                configmap = TUNER_CONFIGMAP,
                key = TUNER_STATUS_KEY,
                "the tuner's ConfigMap has no status; keeping the previous values"
            );
            self.errors.inc();
            return;
        };
        match TunerStatus::from_json(text) {
            Ok(status) => self.observe(&status),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable tuner status; keeping the previous values");
                self.errors.inc();
            }
        }
    }
}

/// Seconds between the first two runs of `schedule` (cron, UTC) after
/// `after`; `None` for a schedule that does not parse.
pub fn schedule_interval_seconds(schedule: &str, after: UnixSeconds) -> Option<i64> {
    let cron: croner::Cron = schedule.parse().ok()?;
    let start = jiff::Timestamp::from_second(after)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC);
    let first = cron.find_next_occurrence(&start, false).ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    Some(second.timestamp().as_second() - first.timestamp().as_second())
}

/// Watches the tuner's ConfigMap (`carbon-kube-tuner` in `namespace`) into
/// `gauges` until the task is dropped. Needs get/list/watch on that one
/// ConfigMap.
pub async fn watch_tuner_status(client: kube::Client, namespace: String, gauges: TunerGauges) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={TUNER_CONFIGMAP}"));
    let stream = watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                gauges.observe_configmap(cm.data.as_ref());
            }
            Ok(watcher::Event::Delete(_)) => gauges.clear(),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => tracing::warn!(error = %e, "tuner status watch failed; retrying"),
        }
    }
}

/// Writes `cm` (named, in its namespace): creates it, or replaces the
/// existing one (get, then update with its resourceVersion). Needs
/// get/create/update on that ConfigMap.
pub async fn write_configmap(client: kube::Client, mut cm: ConfigMap) -> kube::Result<ConfigMap> {
    let namespace = cm.metadata.namespace.clone().unwrap_or_default();
    let name = cm.metadata.name.clone().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let pp = PostParams {
        field_manager: Some("carbon-kube-tuner".to_owned()),
        ..PostParams::default()
    };
    match api.get_opt(&name).await? {
        None => api.create(&pp, &cm).await,
        Some(old) => {
            cm.metadata.resource_version = old.metadata.resource_version;
            api.replace(&name, &pp, &cm).await
        }
    }
}

/// [`write_configmap`] for a ConfigMap given as JSON (the tuner builds its
/// ConfigMaps without a Kubernetes client); logs what it wrote.
pub async fn write_configmap_json(
    client: kube::Client,
    cm: &serde_json::Value,
) -> anyhow::Result<()> {
    let cm: ConfigMap = serde_json::from_value(cm.clone())
        .map_err(|e| anyhow::anyhow!("the tuner built an invalid ConfigMap: {e}"))?;
    let (namespace, name) = (
        cm.metadata.namespace.clone().unwrap_or_default(),
        cm.metadata.name.clone().unwrap_or_default(),
    );
    write_configmap(client, cm)
        .await
        .map_err(|e| anyhow::anyhow!("writing ConfigMap {namespace}/{name}: {e}"))?;
    tracing::info!(%namespace, %name, "wrote the tuner's ConfigMap");
    Ok(())
}

/// A client from `kubeconfig`, or from the default discovery (in-cluster
/// first, then `$KUBECONFIG` / `~/.kube/config`) when `None`.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let Some(path) = kubeconfig else {
        return kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to Kubernetes: {e}"));
    };
    let file = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
    kube::Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_model::tuner::OptimiserResult;

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    fn status(optimisers: &[&str]) -> TunerStatus {
        TunerStatus {
            finished_at: 1_800_000_000,
            mode: "shadow".into(),
            schedule: Some("0 */6 * * *".into()),
            chosen: optimisers
                .last()
                .map(|s| (*s).to_owned())
                .unwrap_or_default(),
            promoted: true,
            published: false,
            reason: String::new(),
            optimisers: optimisers
                .iter()
                .map(|o| OptimiserResult {
                    optimiser: (*o).to_owned(),
                    validation_saving_ratio: 0.25,
                    unseen_saving_ratio: Some(0.125),
                    unseen_reward: Some(0.1),
                    validation_deadline_misses: 3,
                    ..OptimiserResult::default()
                })
                .collect(),
        }
    }

    #[test]
    fn a_run_becomes_gauges_and_the_next_run_replaces_them() {
        let mut registry = Registry::default();
        let g = TunerGauges::register(&mut registry);
        g.observe(&status(&["current", "grid", "cma-es"]));
        let text = encode(&registry);
        for line in [
            "carbon_rl_tuner_last_success_timestamp_seconds 1800000000.0",
            "carbon_rl_tuner_schedule_interval_seconds 21600.0",
            "carbon_rl_tuner_promoted 1",
            "carbon_rl_tuner_active 0",
            r#"carbon_rl_tuner_validation_saving_ratio{optimiser="grid",zones="trained"} 0.25"#,
            r#"carbon_rl_tuner_validation_saving_ratio{optimiser="grid",zones="unseen"} 0.125"#,
            r#"carbon_rl_tuner_reward_average{optimiser="cma-es",period="unseen"} 0.1"#,
            r#"carbon_rl_tuner_chosen{optimiser="cma-es"} 1"#,
            r#"carbon_rl_tuner_chosen{optimiser="grid"} 0"#,
            r#"carbon_rl_tuner_validation_deadline_misses{optimiser="current"} 3"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains(r#"carbon_rl_tuner_chosen{optimiser="current"}"#));
        g.observe(&status(&["current", "ppo"]));
        let text = encode(&registry);
        assert!(!text.contains(r#"optimiser="grid""#), "{text}");
        assert!(text.contains(r#"carbon_rl_tuner_chosen{optimiser="ppo"} 1"#));
    }

    #[test]
    fn an_unreadable_status_is_counted_and_keeps_the_last_run() {
        let mut registry = Registry::default();
        let g = TunerGauges::register(&mut registry);
        g.observe(&status(&["current", "grid"]));
        let bad: BTreeMap<String, String> = [(
            TUNER_STATUS_KEY.to_owned(),
            "{\"finishedAt\": \"x\"}".to_owned(),
        )]
        .into();
        g.observe_configmap(Some(&bad));
        g.observe_configmap(None);
        let text = encode(&registry);
        assert!(
            text.contains("carbon_rl_tuner_status_errors_total 2"),
            "{text}"
        );
        assert!(text.contains("carbon_rl_tuner_last_success_timestamp_seconds 1800000000.0"));
    }

    #[test]
    fn the_interval_comes_from_the_schedule() {
        // 2027-01-15T08:00:00Z, on the hour.
        let t = 1_800_000_000;
        assert_eq!(schedule_interval_seconds("0 */6 * * *", t), Some(21_600));
        assert_eq!(schedule_interval_seconds("30 3 * * *", t), Some(86_400));
        assert_eq!(schedule_interval_seconds("every six hours", t), None);
    }
}
