//! The poller's own metrics.

use carbon_kube_k8s::metrics::ZoneLabels;
use carbon_kube_model::UnixSeconds;
use carbon_kube_signals::ZoneFetch;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::cycle::{PollReport, ZoneOutcome};

/// Labels `{provider, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Provider name (`electricity_maps`, `watttime`, ...).
    pub provider: String,
    /// Outcome label of the attempt (`success`, `error_transient`, ...).
    pub outcome: String,
}

/// Metrics of the poll cycles.
#[derive(Clone, Default)]
pub struct PollerMetrics {
    requests: Family<RequestLabels, Counter>,
    last_success: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
}

impl PollerMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "carbon_kube_poller_requests",
            "Provider requests made by the poller, by provider and outcome",
            m.requests.clone(),
        );
        registry.register(
            "carbon_kube_poller_last_success_timestamp_seconds",
            "Unix time of the last poll that got fresh data for the zone",
            m.last_success.clone(),
        );
        m
    }

    /// Counts every provider attempt.
    pub fn observe_fetches(&self, fetches: &[ZoneFetch]) {
        for attempt in fetches.iter().flat_map(|f| &f.attempts) {
            self.requests
                .get_or_create(&RequestLabels {
                    provider: attempt.provider.to_owned(),
                    outcome: attempt.outcome.as_label().to_owned(),
                })
                .inc();
        }
    }

    /// Records which zones got fresh data.
    pub fn observe_report(&self, report: &PollReport, now: UnixSeconds) {
        for (zone, outcome) in &report.zones {
            if matches!(
                outcome,
                ZoneOutcome::Updated { .. } | ZoneOutcome::KeptBetter { .. }
            ) {
                // Unix times are far below 2^53: exact in f64.
                #[allow(clippy::cast_precision_loss)]
                self.last_success
                    .get_or_create(&ZoneLabels {
                        zone: zone.to_string(),
                    })
                    .set(now as f64);
            }
        }
    }
}
