//! Prometheus metrics of the webhook and the controller.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set with one `decision` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The decision.
    pub decision: String,
}

/// Label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason.
    pub reason: String,
}

/// Label set with one `action` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action.
    pub action: String,
}

/// The webhook's metrics.
#[derive(Clone)]
pub struct WebhookMetrics {
    /// `carbon_kube_gates_webhook_decisions_total{decision}`.
    pub decisions: Family<DecisionLabels, Counter>,
    /// `carbon_kube_gates_webhook_errors_total`: unreadable reviews.
    pub errors: Counter,
}

impl WebhookMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            decisions: Family::default(),
            errors: Counter::default(),
        };
        registry.register(
            "carbon_kube_gates_webhook_decisions",
            "Pods seen by the gates webhook, by decision (gate_pod, gate_namespace, skip_*)",
            m.decisions.clone(),
        );
        registry.register(
            "carbon_kube_gates_webhook_errors",
            "Admission reviews the gates webhook could not read",
            m.errors.clone(),
        );
        m
    }

    /// Counts one decision.
    pub fn decision(&self, label: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: label.to_owned(),
            })
            .inc();
    }
}

/// Buckets of `carbon_kube_deferral_seconds`: 1 min to 2 days.
pub const DEFERRAL_BUCKETS: [f64; 12] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 28_800.0, 43_200.0, 86_400.0, 129_600.0,
    172_800.0,
];

/// The controller's metrics.
#[derive(Clone)]
pub struct ControllerMetrics {
    /// `carbon_kube_deferred_pods`: pods behind the gate now.
    pub deferred_pods: Gauge,
    /// `carbon_kube_deferred_pods_near_deadline`: gated pods whose latest
    /// start is within `--near-deadline`, or past.
    pub near_deadline: Gauge,
    /// `carbon_kube_deferral_seconds`: time from creation to release.
    pub deferral_seconds: Histogram,
    /// `carbon_kube_gate_releases_total{reason}`.
    pub releases: Family<ReasonLabels, Counter>,
    /// `carbon_kube_deferral_expected_savings_grams_total`.
    pub expected_savings_grams: Counter<f64, AtomicU64>,
    /// `carbon_kube_gate_release_errors_total`: release patches that failed.
    pub release_errors: Counter,
    /// `carbon_kube_gate_plans_total{action}` (`planned`, `revised`).
    pub plans: Family<ActionLabels, Counter>,
    /// `carbon_kube_gates_leader`: 1 while this replica leads.
    pub leader: Gauge,
    /// `carbon_kube_budget_*{budget_namespace}`: namespace budgets (`--budgets`).
    pub budgets: crate::budgets::BudgetMetrics,
    /// `carbon_kube_gates_snapshot_errors_total{error}` (`unreadable`,
    /// `bad_zone`): problems in the snapshot ConfigMap.
    pub snapshot_errors: carbon_kube_k8s::SnapshotErrors,
}

impl ControllerMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            deferred_pods: Gauge::default(),
            near_deadline: Gauge::default(),
            deferral_seconds: Histogram::new(DEFERRAL_BUCKETS),
            releases: Family::default(),
            expected_savings_grams: Counter::default(),
            release_errors: Counter::default(),
            plans: Family::default(),
            leader: Gauge::default(),
            budgets: crate::budgets::BudgetMetrics::register(registry),
            snapshot_errors: carbon_kube_k8s::SnapshotErrors::register(
                registry,
                "carbon_kube_gates_snapshot_errors",
            ),
        };
        registry.register(
            "carbon_kube_deferred_pods",
            "Pods waiting behind the carbon-kube.io/green-window scheduling gate",
            m.deferred_pods.clone(),
        );
        registry.register(
            "carbon_kube_deferred_pods_near_deadline",
            "Gated pods whose latest start is within --near-deadline (default 10m) or already past",
            m.near_deadline.clone(),
        );
        registry.register(
            "carbon_kube_deferral_seconds",
            "Time from a deferred pod's creation to its release, seconds",
            m.deferral_seconds.clone(),
        );
        registry.register(
            "carbon_kube_gate_releases",
            "Gate releases by reason (green_window, deadline, no_data, manual, invalid)",
            m.releases.clone(),
        );
        registry.register(
            "carbon_kube_deferral_expected_savings_grams",
            "Expected CO2eq saved by deferral, grams (forecast at the release vs releasing at creation; estimated energy)",
            m.expected_savings_grams.clone(),
        );
        registry.register(
            "carbon_kube_gate_release_errors",
            "Gate release patches that failed (retried on the next pass)",
            m.release_errors.clone(),
        );
        registry.register(
            "carbon_kube_gate_plans",
            "Release plans written on pods, by action (planned, revised)",
            m.plans.clone(),
        );
        registry.register(
            "carbon_kube_gates_leader",
            "1 while this controller replica holds the leader lease",
            m.leader.clone(),
        );
        m
    }

    /// Counts one release.
    pub fn release(&self, reason: &str) {
        self.releases
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one plan action.
    pub fn plan(&self, action: &str) {
        self.plans
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
    }
}
