//! Prometheus metrics of the score publisher and the Karmada adapter.

use carbon_kube_policy::cluster_score::{ClusterScore, Publication, PublishReason};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason.
    pub reason: &'static str,
}

/// A label set with one `error` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error.
    pub error: &'static str,
}

/// A label set with one `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The result.
    pub result: &'static str,
}

/// The counter of snapshot problems, by kind.
#[derive(Clone, Debug, Default)]
pub struct SnapshotProblems(Family<ErrorLabels, Counter>);

impl SnapshotProblems {
    /// Counts one problem (`missing`, `unreadable`, `bad_zone`).
    pub fn inc(&self, error: &'static str) {
        self.0.get_or_create(&ErrorLabels { error }).inc();
    }

    /// The count so far.
    pub fn get(&self, error: &'static str) -> u64 {
        self.0.get_or_create(&ErrorLabels { error }).get()
    }
}

/// The score publisher's metrics.
#[derive(Clone, Debug, Default)]
pub struct PublisherMetrics {
    /// `carbon_kube_cluster_score`: the published value (−100..100).
    pub published: Gauge,
    /// `carbon_kube_cluster_score_fresh`: the latest computed value, before
    /// hysteresis.
    pub fresh: Gauge,
    /// `carbon_kube_cluster_score_coverage_ratio`: share of the cluster's
    /// CPU whose zone had fresh data.
    pub coverage: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `carbon_kube_cluster_score_decisions_total{reason}`: `first`,
    /// `moved`, `data_missing`, `expired`, `renewed`, `held`.
    pub decisions: Family<ReasonLabels, Counter>,
    /// `carbon_kube_cluster_score_snapshot_errors_total{error}`.
    pub snapshot_errors: SnapshotProblems,
    /// `carbon_kube_cluster_score_runs_failed_total`.
    pub runs_failed: Counter,
    /// `carbon_kube_cluster_score_leader`: 1 while this replica holds the
    /// leader Lease (and publishes).
    pub leader: Gauge,
}

/// The metric label of a publish decision.
pub const fn reason_label(reason: PublishReason) -> &'static str {
    match reason {
        PublishReason::First => "first",
        PublishReason::Moved { .. } => "moved",
        PublishReason::DataMissing { .. } => "data_missing",
        PublishReason::Expired { .. } => "expired",
        PublishReason::Renewed => "renewed",
        PublishReason::Held => "held",
    }
}

impl PublisherMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "carbon_kube_cluster_score",
            "The cluster's published carbon score (-100..100, 0 neutral)",
            m.published.clone(),
        );
        registry.register(
            "carbon_kube_cluster_score_fresh",
            "The cluster's latest computed carbon score, before hysteresis",
            m.fresh.clone(),
        );
        registry.register(
            "carbon_kube_cluster_score_coverage_ratio",
            "Share of the cluster's allocatable CPU whose grid zone had fresh carbon data",
            m.coverage.clone(),
        );
        registry.register(
            "carbon_kube_cluster_score_decisions",
            "Publish decisions by reason (first, moved, data_missing, expired, renewed, held)",
            m.decisions.clone(),
        );
        registry.register(
            "carbon_kube_cluster_score_snapshot_errors",
            "Problems reading the carbon snapshot (missing, unreadable, bad_zone); the score is then neutral for the zones concerned",
            m.snapshot_errors.0.clone(),
        );
        registry.register(
            "carbon_kube_cluster_score_runs_failed",
            "Runs that could not read the nodes or write the score",
            m.runs_failed.clone(),
        );
        registry.register(
            "carbon_kube_cluster_score_leader",
            "1 while this publisher replica holds the leader Lease (only the leader publishes)",
            m.leader.clone(),
        );
        m
    }

    /// Records one run.
    pub fn record(&self, score: &ClusterScore, publication: &Publication) {
        self.published.set(i64::from(publication.value));
        self.fresh.set(i64::from(score.value));
        self.coverage.set(score.coverage);
        self.decisions
            .get_or_create(&ReasonLabels {
                reason: reason_label(publication.reason),
            })
            .inc();
    }
}

/// The Karmada adapter's metrics.
#[derive(Clone, Debug, Default)]
pub struct KarmadaMetrics {
    /// `carbon_kube_karmada_policies_total{result}`: per opted-in policy per
    /// run: `updated`, `unchanged`, `skipped` (nothing to weigh), `failed`.
    pub policies: Family<ResultLabels, Counter>,
    /// `carbon_kube_karmada_score_sources_total{result}`: per target cluster
    /// of each opted-in policy per run: `ok`, `missing`, `expired`,
    /// `invalid` (the last three weigh the cluster as neutral).
    pub sources: Family<ResultLabels, Counter>,
    /// `carbon_kube_karmada_runs_failed_total`.
    pub runs_failed: Counter,
}

impl KarmadaMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "carbon_kube_karmada_policies",
            "Opted-in PropagationPolicies per run by result (updated, unchanged, skipped, failed)",
            m.policies.clone(),
        );
        registry.register(
            "carbon_kube_karmada_score_sources",
            "Target clusters of opted-in policies per run by the state of their score (ok, missing, expired, invalid; all but ok weigh as neutral)",
            m.sources.clone(),
        );
        registry.register(
            "carbon_kube_karmada_runs_failed",
            "Runs that could not list the policies or the scores",
            m.runs_failed.clone(),
        );
        m
    }

    /// Counts one policy result.
    pub fn policy(&self, result: &'static str) {
        self.policies.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts one score source result.
    pub fn source(&self, result: &'static str) {
        self.sources.get_or_create(&ResultLabels { result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use carbon_kube_policy::cluster_score::{
        ClusterScore, ClusterScoreConfig, Hysteresis, cluster_score, publish,
    };
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn both_registries_expose_their_series() {
        let mut registry = Registry::default();
        let publisher = PublisherMetrics::register(&mut registry);
        let karmada = KarmadaMetrics::register(&mut registry);
        let score: ClusterScore = cluster_score(
            &[],
            &carbon_kube_model::Snapshot::default(),
            &ClusterScoreConfig::default(),
            1_800_000_000,
        );
        let p = publish(
            None,
            &score,
            &Hysteresis::for_interval(300, 5),
            1_800_000_000,
        );
        publisher.record(&score, &p);
        publisher.snapshot_errors.inc("missing");
        karmada.policy("updated");
        karmada.source("expired");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "carbon_kube_cluster_score 0",
            "carbon_kube_cluster_score_coverage_ratio 0.0",
            "carbon_kube_cluster_score_decisions_total{reason=\"first\"} 1",
            "carbon_kube_cluster_score_snapshot_errors_total{error=\"missing\"} 1",
            "carbon_kube_karmada_policies_total{result=\"updated\"} 1",
            "carbon_kube_karmada_score_sources_total{result=\"expired\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
