//! The extender's metrics:
//!
//! - `carbon_kube_scheduler_decisions_total{verb,outcome}`: one per request;
//!   `outcome` is `applied` (carbon decided), `failed_open` (no zone under the
//!   threshold: all kept), `rejected` (`onNoGreenNode: reject`), `opted_out`,
//!   `no_data` (no fresh data: neutral), `bad_request` or `error`.
//! - `carbon_kube_scheduler_latency_seconds{verb}`: request handling time.
//! - `carbon_kube_scheduler_nodes_cached`, `carbon_kube_scheduler_pods_tracked`.
//! - `carbon_kube_scheduler_config_errors_total`: rejected runtime overrides.
//! - `carbon_kube_scheduler_snapshot_errors_total{error}`: problems in the
//!   snapshot ConfigMap: `unreadable` (not a snapshot at all: the previous
//!   one is kept), `bad_zone` (one zone ignored, the others used); counted
//!   by `carbon_kube_k8s::SnapshotErrors`, the reader the gate controller
//!   and the migrator share.
//! - `carbon_kube_scheduler_events_total{result}`: Events written on pods.
//! - `carbon_kube_carbon_intensity_current{zone,source}` and
//!   `carbon_kube_carbon_data_age_seconds{zone}` (shared with every component).

use std::sync::atomic::AtomicI64;

use carbon_kube_k8s::{SnapshotErrors, SnapshotGauges};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels `{verb, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `filter` or `prioritize`.
    pub verb: &'static str,
    /// See the module documentation.
    pub outcome: &'static str,
}

/// Labels `{verb}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// `filter` or `prioritize`.
    pub verb: &'static str,
}

/// Labels `{setting}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettingLabels {
    /// Setting name.
    pub setting: &'static str,
}

/// Labels `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `written` or `failed`.
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The extender's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Decisions by verb and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Latency by verb.
    pub latency: Family<VerbLabels, Histogram, fn() -> Histogram>,
    /// Nodes in the cache.
    pub nodes_cached: Gauge<i64, AtomicI64>,
    /// Bound pods tracked.
    pub pods_tracked: Gauge<i64, AtomicI64>,
    /// Rejected runtime overrides.
    pub config_errors: Counter,
    /// Problems in the snapshot ConfigMap, counted by the reader every
    /// component shares (`carbon_kube_k8s::SnapshotErrors`).
    pub snapshot_errors: SnapshotErrors,
    /// Events written.
    pub events: Family<ResultLabels, Counter>,
    /// Effective settings.
    pub settings: Family<SettingLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Snapshot gauges.
    pub snapshot: SnapshotGauges,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            decisions: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            nodes_cached: Gauge::default(),
            pods_tracked: Gauge::default(),
            config_errors: Counter::default(),
            snapshot_errors: SnapshotErrors::register(
                registry,
                "carbon_kube_scheduler_snapshot_errors",
            ),
            events: Family::default(),
            settings: Family::default(),
            snapshot: SnapshotGauges::register(registry),
        };
        registry.register(
            "carbon_kube_scheduler_decisions",
            "Extender decisions by verb and outcome",
            m.decisions.clone(),
        );
        registry.register(
            "carbon_kube_scheduler_latency_seconds",
            "Time to answer a filter or prioritize request, seconds",
            m.latency.clone(),
        );
        registry.register(
            "carbon_kube_scheduler_nodes_cached",
            "Nodes in the extender's node cache",
            m.nodes_cached.clone(),
        );
        registry.register(
            "carbon_kube_scheduler_pods_tracked",
            "Bound pods whose requests the extender sums per node",
            m.pods_tracked.clone(),
        );
        registry.register(
            "carbon_kube_scheduler_config_errors",
            "Runtime overrides from the carbon-kube-config ConfigMap that were rejected",
            m.config_errors.clone(),
        );
        registry.register(
            "carbon_kube_scheduler_events",
            "Kubernetes Events written on pods whose placement carbon changed",
            m.events.clone(),
        );
        registry.register(
            "carbon_kube_scheduler_settings",
            "Effective placement settings (threshold in g/kWh, threshold_mode 0 absolute 1 clusterPercentile 2 forecastPercentile, threshold_percentile, weights, max data age in seconds, fail_open 1 or 0, stale_neutral, estimated_neutral)",
            m.settings.clone(),
        );
        m
    }

    /// Exports the effective settings.
    pub fn observe_settings(&self, cfg: &carbon_kube_policy::placement::PlacementConfig) {
        use carbon_kube_policy::placement::{
            EstimatedData, OnNoGreenNode, StaleData, ThresholdMode,
        };
        #[allow(clippy::cast_precision_loss)]
        let values = [
            ("threshold", cfg.threshold.g_per_kwh()),
            (
                "threshold_mode",
                match cfg.threshold_mode {
                    ThresholdMode::Absolute => 0.0,
                    ThresholdMode::ClusterPercentile => 1.0,
                    ThresholdMode::ForecastPercentile => 2.0,
                },
            ),
            ("threshold_percentile", cfg.threshold_percentile),
            ("carbon_weight", f64::from(cfg.carbon_weight)),
            ("performance_weight", f64::from(cfg.performance_weight)),
            ("max_data_age_seconds", cfg.max_data_age_seconds as f64),
            (
                "fail_open",
                f64::from(u8::from(cfg.on_no_green_node == OnNoGreenNode::FailOpen)),
            ),
            (
                "stale_neutral",
                f64::from(u8::from(cfg.stale_data == StaleData::Neutral)),
            ),
            (
                "estimated_neutral",
                f64::from(u8::from(cfg.estimated_data == EstimatedData::Neutral)),
            ),
        ];
        for (setting, v) in values {
            self.settings
                .get_or_create(&SettingLabels { setting })
                .set(v);
        }
    }

    /// Counts a decision.
    pub fn decision(&self, verb: &'static str, outcome: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { verb, outcome })
            .inc();
    }

    /// Records a request's latency.
    pub fn observe_latency(&self, verb: &'static str, seconds: f64) {
        self.latency
            .get_or_create(&VerbLabels { verb })
            .observe(seconds);
    }
}
