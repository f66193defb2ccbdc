//! Namespace carbon budgets in the gate controller (`--budgets`, off by
//! default).
//!
//! The controller watches the Namespaces (their `carbon-kube.io/budget-*`
//! annotations) and the accounting controller's usage document (ConfigMap
//! `carbon-kube-accounting`, key `usage.json`). On every pass it assesses
//! each namespace with a budget
//! (`carbon_kube_policy::budget::assess`), exports the figures as
//! `carbon_kube_budget_*` gauges, and hands each gated pod its namespace's
//! [`BudgetPressure`]: the release planner then holds deferrable work of a
//! namespace at risk or over budget for greener windows, never past its
//! latest start. Plans the budget made stricter get the reason `budget` and
//! a `DeferredForBudget` Event naming the namespace's figures.
//!
//! Fails open: until the namespaces and the document are read, when the
//! document is missing, unreadable or older than `--budget-max-usage-age`,
//! or when a namespace's annotations are bad, the namespace's pods are
//! planned as without a budget (and `carbon_kube_budget_state` is −1).
//! Neither watch holds the controller's readiness.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use carbon_kube_model::UnixSeconds;
use carbon_kube_model::accounting::{USAGE_KEY, UsageDocument};
use carbon_kube_policy::budget::{
    BudgetConfig, BudgetError, BudgetPressure, BudgetStatus, UsageUnavailable, assess, parse_budget,
};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

/// Where the controller reads usage from, and how it assesses budgets.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSettings {
    /// Namespace of the usage ConfigMap (the accounting controller's).
    pub usage_namespace: String,
    /// Name of the usage ConfigMap.
    pub usage_configmap: String,
    /// Assessment tunables (maximum usage age, burn window).
    pub config: BudgetConfig,
}

/// The latest good usage document, if any.
pub type UsageState = Arc<RwLock<Option<UsageDocument>>>;

/// One namespace's budget at one pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Assessment {
    /// Assessed against fresh usage.
    Assessed(BudgetStatus),
    /// A budget, but no fresh usage: no effect.
    Unavailable(UsageUnavailable),
    /// Bad budget annotations: no budget, every problem named.
    Invalid(Vec<BudgetError>),
}

impl Assessment {
    /// What it does to the namespace's deferrable pods.
    pub fn pressure(&self) -> BudgetPressure {
        match self {
            Self::Assessed(s) => s.pressure(),
            Self::Unavailable(_) | Self::Invalid(_) => BudgetPressure::None,
        }
    }

    /// The value of `carbon_kube_budget_state`: 0 under, 1 at risk, 2
    /// exhausted, −1 not assessed (no fresh usage, or bad annotations).
    pub fn state_value(&self) -> i64 {
        match self {
            Self::Assessed(s) => s.state.metric_value(),
            Self::Unavailable(_) | Self::Invalid(_) => -1,
        }
    }

    /// One sentence for logs and Events.
    pub fn explain(&self, namespace: &str) -> String {
        match self {
            Self::Assessed(s) => s.explain(namespace),
            Self::Unavailable(why) => {
                format!("namespace {namespace}'s carbon budget is not applied: {why} (fail open)")
            }
            Self::Invalid(errors) => format!(
                "namespace {namespace} has no carbon budget: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Every namespace with budget annotations, assessed at `now`. Namespaces
/// without them are absent (no budget, no effect); a bad one never affects
/// the others.
pub fn assess_namespaces<'a>(
    namespaces: impl IntoIterator<Item = (&'a str, Option<&'a BTreeMap<String, String>>)>,
    usage: Option<&UsageDocument>,
    now: UnixSeconds,
    cfg: &BudgetConfig,
) -> BTreeMap<String, Assessment> {
    let empty = BTreeMap::new();
    namespaces
        .into_iter()
        .filter_map(|(name, annotations)| {
            let a = match parse_budget(annotations.unwrap_or(&empty)) {
                Ok(None) => return None,
                Ok(Some(budget)) => match assess(name, &budget, usage, now, cfg) {
                    Ok(s) => Assessment::Assessed(s),
                    Err(why) => Assessment::Unavailable(why),
                },
                Err(errors) => Assessment::Invalid(errors),
            };
            Some((name.to_owned(), a))
        })
        .collect()
}

/// Assesses the namespaces in the reflector's store.
pub fn assess_store(
    store: &Store<Namespace>,
    usage: &UsageState,
    now: UnixSeconds,
    cfg: &BudgetConfig,
) -> BTreeMap<String, Assessment> {
    let namespaces = store.state();
    let usage = usage.read().unwrap_or_else(|e| e.into_inner());
    assess_namespaces(
        namespaces
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.annotations.as_ref()))),
        usage.as_ref(),
        now,
        cfg,
    )
}

/// Reads the usage document from the ConfigMap's data.
pub fn usage_from_configmap(cm: &ConfigMap) -> Result<UsageDocument, String> {
    let raw = cm
        .data
        .as_ref()
        .and_then(|d| d.get(USAGE_KEY))
        .ok_or_else(|| format!("no key {USAGE_KEY}"))?;
    serde_json::from_str(raw).map_err(|e| format!("key {USAGE_KEY}: {e}"))
}

/// Keeps the latest good usage document in `state`. An unreadable or
/// deleted ConfigMap keeps the last good one: it goes stale by age, and the
/// budgets then have no effect.
pub async fn watch_usage(
    client: kube::Client,
    namespace: String,
    name: String,
    state: UsageState,
    changed: Arc<Notify>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                match usage_from_configmap(&cm) {
                    Ok(doc) => *state.write().unwrap_or_else(|e| e.into_inner()) = Some(doc),
                    Err(e) => tracing::warn!(
                        %namespace, %name, error = %e,
                        "usage document unreadable; keeping the last good one until it goes stale"
                    ),
                }
            }
            Ok(watcher::Event::Delete(_)) => tracing::warn!(
                %namespace, %name,
                "usage ConfigMap deleted; keeping the last document until it goes stale"
            ),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => tracing::warn!(error = %e, "usage watch failed; retrying"),
        }
        changed.notify_one();
    }
}

/// Reflects the Namespaces (only `only`, when the controller watches one
/// namespace) for their budget annotations, trimmed to their metadata.
pub async fn reflect_namespaces(
    client: kube::Client,
    only: Option<String>,
    writer: reflector::store::Writer<Namespace>,
    changed: Arc<Notify>,
) {
    let cfg = match &only {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let trim = |n: &mut Namespace| {
        n.metadata.managed_fields = None;
        n.spec = None;
        n.status = None;
    };
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Namespace>::all(client), cfg).modify(trim),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        if let Err(e) = ev {
            tracing::warn!(error = %e, "namespace watch failed (budgets not applied meanwhile); retrying");
        }
        changed.notify_one();
    }
}

/// Logs each namespace's assessment when its state or problems change
/// (not on every pass).
pub fn log_changes(
    previous: &BTreeMap<String, Assessment>,
    current: &BTreeMap<String, Assessment>,
) {
    fn kind(a: &Assessment) -> String {
        match a {
            Assessment::Assessed(s) => s.state.as_str().to_owned(),
            Assessment::Unavailable(_) => "unavailable".to_owned(),
            Assessment::Invalid(e) => format!("invalid {e:?}"),
        }
    }
    for (ns, a) in current {
        if previous.get(ns).map(kind) == Some(kind(a)) {
            continue;
        }
        match a {
            Assessment::Invalid(_) => tracing::warn!(namespace = %ns, "{}", a.explain(ns)),
            _ => tracing::info!(namespace = %ns, state = a.state_value(), "{}", a.explain(ns)),
        }
    }
    for ns in previous.keys().filter(|ns| !current.contains_key(*ns)) {
        tracing::info!(namespace = %ns, "namespace no longer has a carbon budget");
    }
}

/// Label set of the budget gauges: the namespace the budget belongs to
/// (`budget_namespace`, so it never collides with the scrape target's
/// `namespace`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// The namespace with the budget.
    pub budget_namespace: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The `carbon_kube_budget_*` gauges, one series per namespace with a budget.
#[derive(Clone, Default)]
pub struct BudgetMetrics {
    /// `carbon_kube_budget_grams`: the budget per period.
    pub grams: Family<BudgetLabels, FloatGauge>,
    /// `carbon_kube_budget_used_grams`: used in the current period.
    pub used_grams: Family<BudgetLabels, FloatGauge>,
    /// `carbon_kube_budget_burn_rate_grams_per_hour`: over the burn window.
    pub burn_rate: Family<BudgetLabels, FloatGauge>,
    /// `carbon_kube_budget_exhaustion_seconds`: until the projected
    /// exhaustion (0 when exhausted, +Inf while nothing burns).
    pub exhaustion_seconds: Family<BudgetLabels, FloatGauge>,
    /// `carbon_kube_budget_state`: 0 under, 1 at risk, 2 exhausted, −1 not assessed.
    pub state: Family<BudgetLabels, Gauge>,
}

impl BudgetMetrics {
    /// Registers the gauges in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "carbon_kube_budget_grams",
            "Namespace carbon budget per period, grams CO2eq (annotation carbon-kube.io/budget-grams)",
            m.grams.clone(),
        );
        registry.register(
            "carbon_kube_budget_used_grams",
            "Grams CO2eq the namespace used in the current budget period (operational, idle share and embodied)",
            m.used_grams.clone(),
        );
        registry.register(
            "carbon_kube_budget_burn_rate_grams_per_hour",
            "Grams CO2eq per hour the namespace emitted over the burn window (its current UTC day and the days before)",
            m.burn_rate.clone(),
        );
        registry.register(
            "carbon_kube_budget_exhaustion_seconds",
            "Seconds until the namespace's budget is projected to run out at its burn rate (0 when exhausted, +Inf while nothing burns)",
            m.exhaustion_seconds.clone(),
        );
        registry.register(
            "carbon_kube_budget_state",
            "Namespace budget state: 0 under, 1 at risk (projected to run out before the period ends), 2 exhausted, -1 not assessed (no fresh usage data or bad annotations)",
            m.state.clone(),
        );
        m
    }

    /// Replaces the series with this pass's assessments.
    pub fn update(&self, assessments: &BTreeMap<String, Assessment>, now: UnixSeconds) {
        self.clear();
        for (ns, a) in assessments {
            let l = BudgetLabels {
                budget_namespace: ns.clone(),
            };
            self.state.get_or_create(&l).set(a.state_value());
            let Assessment::Assessed(s) = a else {
                continue;
            };
            self.grams.get_or_create(&l).set(s.budget.grams);
            self.used_grams.get_or_create(&l).set(s.used_grams);
            self.burn_rate
                .get_or_create(&l)
                .set(s.burn_rate_grams_per_hour);
            self.exhaustion_seconds.get_or_create(&l).set(
                s.seconds_to_exhaustion(now)
                    .map_or(f64::INFINITY, |t| t as f64),
            );
        }
    }

    /// Drops every series (a replica that stops leading exports none).
    pub fn clear(&self) {
        self.grams.clear();
        self.used_grams.clear();
        self.burn_rate.clear();
        self.exhaustion_seconds.clear();
        self.state.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_model::accounting::{
        ANNOTATION_BUDGET_GRAMS, ANNOTATION_BUDGET_PERIOD, DayUsage,
    };
    use carbon_kube_policy::budget::BudgetState;

    const NOW: i64 = 1_796_000_000; // 2026-11-30 01:33:20 UTC

    fn ann(grams: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ANNOTATION_BUDGET_GRAMS.to_owned(), grams.to_owned()),
            (ANNOTATION_BUDGET_PERIOD.to_owned(), "day".to_owned()),
        ])
    }

    fn usage(generated_at: i64) -> UsageDocument {
        let day = |g: f64| {
            vec![DayUsage {
                day_start: NOW.div_euclid(86_400) * 86_400,
                operational_grams: g,
                ..DayUsage::default()
            }]
        };
        UsageDocument {
            generated_at,
            namespaces: BTreeMap::from([
                ("over".to_owned(), day(500.0)),
                ("under".to_owned(), day(1.0)),
                ("bad".to_owned(), day(1e9)),
            ]),
        }
    }

    #[test]
    fn each_namespace_is_assessed_alone_and_a_bad_one_harms_no_other() {
        let over = ann("100");
        let under = ann("1000000");
        let bad = ann("a lot");
        let list = [
            ("over", Some(&over)),
            ("under", Some(&under)),
            ("bad", Some(&bad)),
            ("plain", None),
        ];
        let doc = usage(NOW - 60);
        let a = assess_namespaces(list, Some(&doc), NOW, &BudgetConfig::default());
        assert_eq!(a.len(), 3, "namespaces without a budget are left out");
        assert_eq!(a["over"].pressure(), BudgetPressure::Exhausted);
        assert_eq!(
            a["over"].state_value(),
            BudgetState::Exhausted.metric_value()
        );
        assert_eq!(a["under"].pressure(), BudgetPressure::None);
        assert_eq!(a["under"].state_value(), 0);
        assert_eq!(a["bad"].pressure(), BudgetPressure::None);
        assert_eq!(a["bad"].state_value(), -1);
        assert!(
            a["bad"].explain("bad").contains("\"a lot\""),
            "{:?}",
            a["bad"]
        );
        // Stale usage: no effect anywhere.
        let stale = usage(NOW - 2 * 3600);
        let a = assess_namespaces(list, Some(&stale), NOW, &BudgetConfig::default());
        assert_eq!(a["over"].pressure(), BudgetPressure::None);
        assert_eq!(a["over"].state_value(), -1);
        assert!(a["over"].explain("over").contains("fail open"));
        let a = assess_namespaces(list, None, NOW, &BudgetConfig::default());
        assert_eq!(a["over"].pressure(), BudgetPressure::None);
    }

    #[test]
    fn gauges_follow_the_assessments() {
        let over = ann("100");
        let bad = ann("-1");
        let doc = usage(NOW - 60);
        let a = assess_namespaces(
            [("over", Some(&over)), ("bad", Some(&bad))],
            Some(&doc),
            NOW,
            &BudgetConfig::default(),
        );
        let mut registry = Registry::default();
        let m = BudgetMetrics::register(&mut registry);
        m.update(&a, NOW);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "carbon_kube_budget_grams{budget_namespace=\"over\"} 100.0",
            "carbon_kube_budget_used_grams{budget_namespace=\"over\"} 500.0",
            "carbon_kube_budget_exhaustion_seconds{budget_namespace=\"over\"} 0.0",
            "carbon_kube_budget_state{budget_namespace=\"over\"} 2",
            "carbon_kube_budget_state{budget_namespace=\"bad\"} -1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("carbon_kube_budget_grams{budget_namespace=\"bad\"}"));
        m.clear();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("budget_namespace"), "{text}");
    }

    #[test]
    fn the_document_is_read_from_its_key_and_bad_json_is_named() {
        let mut cm = ConfigMap::default();
        assert!(usage_from_configmap(&cm).unwrap_err().contains(USAGE_KEY));
        cm.data = Some(BTreeMap::from([(USAGE_KEY.to_owned(), "{".to_owned())]));
        assert!(
            usage_from_configmap(&cm)
                .unwrap_err()
                .starts_with("key usage.json")
        );
        let doc = usage(NOW);
        cm.data = Some(BTreeMap::from([(
            USAGE_KEY.to_owned(),
            serde_json::to_string(&doc).unwrap(),
        )]));
        assert_eq!(usage_from_configmap(&cm).unwrap(), doc);
    }
}
