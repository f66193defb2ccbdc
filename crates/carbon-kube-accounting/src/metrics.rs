//! Prometheus metrics of the accounting controller.
//!
//! Label cardinality is bounded: `namespace` by the cluster's namespaces,
//! `workload_kind`/`workload` by the owners (Deployment, StatefulSet,
//! DaemonSet, CronJob, Job, bare Pod) capped per namespace by
//! `--max-workloads-per-namespace` (the rest is counted under
//! `workload="_other"`), `scope` (3), `quality` (2), `signal` (2).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;

use carbon_kube_model::Signal;
use carbon_kube_model::accounting::DataQuality;
use carbon_kube_policy::accounting::{IntervalAccount, Workload};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Workload name used past the per-namespace cap.
pub const OTHER_WORKLOAD: &str = "_other";

/// Labels of the emission counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EmissionLabels {
    /// Namespace.
    pub namespace: String,
    /// Workload kind.
    pub workload_kind: String,
    /// Workload name.
    pub workload: String,
    /// `operational`, `idle` or `embodied`.
    pub scope: String,
    /// `measured` or `modelled`.
    pub quality: String,
    /// `average` or `marginal`: the signal of the intensity used.
    pub signal: String,
}

/// Labels of the energy counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnergyLabels {
    /// Namespace.
    pub namespace: String,
    /// Workload kind.
    pub workload_kind: String,
    /// Workload name.
    pub workload: String,
    /// `operational` or `idle`.
    pub scope: String,
    /// `measured` or `modelled`.
    pub quality: String,
}

/// Labels of the counterfactual counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SavingsLabels {
    /// Namespace.
    pub namespace: String,
    /// `deferred` or `placed`.
    pub kind: String,
}

/// One `scope` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `idle` or `embodied`.
    pub scope: String,
}

/// One `document` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DocumentLabels {
    /// `usage` or `details`.
    pub document: String,
}

/// One `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `error`.
    pub outcome: String,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// The controller's metrics.
#[derive(Clone)]
pub struct AccountingMetrics {
    /// `carbon_kube_accounting_emissions_grams_total`.
    pub emissions: Family<EmissionLabels, FloatCounter>,
    /// `carbon_kube_accounting_energy_joules_total`.
    pub energy: Family<EnergyLabels, FloatCounter>,
    /// `carbon_kube_accounting_counterfactual_grams_total{namespace,kind}`.
    pub counterfactual: Family<SavingsLabels, FloatCounter>,
    /// `carbon_kube_accounting_counterfactual_actual_grams_total{namespace,kind}`.
    pub counterfactual_actual: Family<SavingsLabels, FloatCounter>,
    /// `carbon_kube_accounting_unallocated_grams_total{scope}`.
    pub unallocated: Family<ScopeLabels, FloatCounter>,
    /// `carbon_kube_accounting_unknown_intensity_joules_total`.
    pub unknown_intensity_joules: FloatCounter,
    /// `carbon_kube_accounting_stale_intensity_pods_total`.
    pub stale_intensity: Counter,
    /// `carbon_kube_accounting_kepler_queries_total{outcome}`.
    pub kepler_queries: Family<OutcomeLabels, Counter>,
    /// `carbon_kube_accounting_publishes_total{outcome}`.
    pub publishes: Family<OutcomeLabels, Counter>,
    /// `carbon_kube_accounting_ticks_total`.
    pub ticks: Counter,
    /// `carbon_kube_accounting_trimmed_days_total{document}`.
    pub trimmed_days: Family<DocumentLabels, Counter>,
    /// `carbon_kube_accounting_pods`.
    pub pods: Gauge,
    /// `carbon_kube_accounting_leader`.
    pub leader: Gauge,
    cap: usize,
    workloads: HashMap<String, HashSet<Workload>>,
}

impl AccountingMetrics {
    /// Registers the metrics; at most `max_workloads_per_namespace`
    /// workloads per namespace get their own series.
    pub fn register(registry: &mut Registry, max_workloads_per_namespace: usize) -> Self {
        let m = Self {
            emissions: Family::default(),
            energy: Family::default(),
            counterfactual: Family::default(),
            counterfactual_actual: Family::default(),
            unallocated: Family::default(),
            unknown_intensity_joules: FloatCounter::default(),
            stale_intensity: Counter::default(),
            kepler_queries: Family::default(),
            publishes: Family::default(),
            ticks: Counter::default(),
            trimmed_days: Family::default(),
            pods: Gauge::default(),
            leader: Gauge::default(),
            cap: max_workloads_per_namespace.max(1),
            workloads: HashMap::new(),
        };
        let r = registry;
        r.register(
            "carbon_kube_accounting_emissions_grams",
            "Emissions attributed to workloads, grams CO2eq, by scope (operational, idle share, embodied), energy quality and intensity signal",
            m.emissions.clone(),
        );
        r.register(
            "carbon_kube_accounting_energy_joules",
            "Energy attributed to workloads, joules, by scope (operational = own energy, idle = share of node idle power) and quality",
            m.energy.clone(),
        );
        r.register(
            "carbon_kube_accounting_counterfactual_grams",
            "Grams CO2eq the same energy would have caused under carbon-agnostic scheduling, for pods Carbon-Kube deferred or placed",
            m.counterfactual.clone(),
        );
        r.register(
            "carbon_kube_accounting_counterfactual_actual_grams",
            "Grams CO2eq those same pods emitted (operational + idle share); savings = counterfactual - this",
            m.counterfactual_actual.clone(),
        );
        r.register(
            "carbon_kube_accounting_unallocated_grams",
            "Node idle power and embodied emissions no pod requested, grams CO2eq",
            m.unallocated.clone(),
        );
        r.register(
            "carbon_kube_accounting_unknown_intensity_joules",
            "Energy on nodes whose grid zone had no intensity (no grams counted), joules",
            m.unknown_intensity_joules.clone(),
        );
        r.register(
            "carbon_kube_accounting_stale_intensity_pods",
            "Pod intervals accounted with an intensity older than --max-data-age",
            m.stale_intensity.clone(),
        );
        r.register(
            "carbon_kube_accounting_kepler_queries",
            "Queries for Kepler's per-pod joules, by outcome",
            m.kepler_queries.clone(),
        );
        r.register(
            "carbon_kube_accounting_publishes",
            "Writes of the carbon-kube-accounting ConfigMap, by outcome",
            m.publishes.clone(),
        );
        r.register(
            "carbon_kube_accounting_ticks",
            "Accounting intervals completed",
            m.ticks.clone(),
        );
        r.register(
            "carbon_kube_accounting_trimmed_days",
            "Days dropped from the accounting documents to keep the ConfigMap under its size limit, by document",
            m.trimmed_days.clone(),
        );
        r.register(
            "carbon_kube_accounting_pods",
            "Pods accounted in the last interval",
            m.pods.clone(),
        );
        r.register(
            "carbon_kube_accounting_leader",
            "1 if this replica holds the lease and accounts",
            m.leader.clone(),
        );
        for o in ["ok", "error"] {
            let l = OutcomeLabels {
                outcome: o.to_owned(),
            };
            let _ = m.publishes.get_or_create(&l);
            let _ = m.kepler_queries.get_or_create(&l);
        }
        for s in ["idle", "embodied"] {
            let _ = m.unallocated.get_or_create(&ScopeLabels {
                scope: s.to_owned(),
            });
        }
        m
    }

    /// The workload's series labels: itself, or `_other` past the cap.
    fn bounded(&mut self, namespace: &str, w: &Workload) -> (String, String) {
        let seen = self.workloads.entry(namespace.to_owned()).or_default();
        if seen.contains(w) || seen.len() < self.cap {
            seen.insert(w.clone());
            (w.kind.clone(), w.name.clone())
        } else {
            (w.kind.clone(), OTHER_WORKLOAD.to_owned())
        }
    }

    /// Adds one interval's accounting to the counters.
    pub fn observe(&mut self, account: &IntervalAccount) {
        self.pods
            .set(i64::try_from(account.pods.len()).unwrap_or(i64::MAX));
        for p in &account.pods {
            let (kind, name) = self.bounded(&p.namespace, &p.workload);
            let quality = quality_label(p.quality);
            let energy = |scope: &str, q: &str| EnergyLabels {
                namespace: p.namespace.clone(),
                workload_kind: kind.clone(),
                workload: name.clone(),
                scope: scope.to_owned(),
                quality: q.to_owned(),
            };
            self.energy
                .get_or_create(&energy("operational", quality))
                .inc_by(p.energy_joules);
            self.energy
                .get_or_create(&energy("idle", "modelled"))
                .inc_by(p.idle_joules);
            let signal = match p.intensity.map(|i| i.signal) {
                Some(Signal::Marginal) => "marginal",
                _ => "average",
            };
            let grams = |scope: &str, q: &str| EmissionLabels {
                namespace: p.namespace.clone(),
                workload_kind: kind.clone(),
                workload: name.clone(),
                scope: scope.to_owned(),
                quality: q.to_owned(),
                signal: signal.to_owned(),
            };
            match p.intensity {
                Some(i) => {
                    self.emissions
                        .get_or_create(&grams("operational", quality))
                        .inc_by(p.operational_grams);
                    self.emissions
                        .get_or_create(&grams("idle", "modelled"))
                        .inc_by(p.idle_grams);
                    if i.stale {
                        self.stale_intensity.inc();
                    }
                }
                None => {
                    self.unknown_intensity_joules
                        .inc_by(p.energy_joules + p.idle_joules);
                }
            }
            self.emissions
                .get_or_create(&grams("embodied", "modelled"))
                .inc_by(p.embodied_grams);
            for (kind, s) in [
                ("deferred", &p.savings.deferred),
                ("placed", &p.savings.placed),
            ] {
                if let Some(s) = s {
                    let l = SavingsLabels {
                        namespace: p.namespace.clone(),
                        kind: kind.to_owned(),
                    };
                    self.counterfactual
                        .get_or_create(&l)
                        .inc_by(s.counterfactual_grams.max(0.0));
                    self.counterfactual_actual
                        .get_or_create(&l)
                        .inc_by(s.actual_grams.max(0.0));
                }
            }
        }
        for n in &account.unallocated {
            let scope = |s: &str| ScopeLabels {
                scope: s.to_owned(),
            };
            self.unallocated
                .get_or_create(&scope("idle"))
                .inc_by(n.idle_grams);
            self.unallocated
                .get_or_create(&scope("embodied"))
                .inc_by(n.embodied_grams);
        }
        self.ticks.inc();
    }

    /// Counts one Kepler query.
    pub fn kepler_query(&self, ok: bool) {
        self.kepler_queries
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// Counts one day dropped from `document`.
    pub fn trimmed(&self, document: &str) {
        self.trimmed_days
            .get_or_create(&DocumentLabels {
                document: document.to_owned(),
            })
            .inc();
    }

    /// Counts one ConfigMap write.
    pub fn publish(&self, ok: bool) {
        self.publishes
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }
}

/// The metric label of a quality.
pub fn quality_label(q: DataQuality) -> &'static str {
    match q {
        DataQuality::Measured => "measured",
        DataQuality::Modelled => "modelled",
    }
}
