//! `carbon-kube cluster-score karmada`: static cluster weights of opted-in
//! Karmada `PropagationPolicy` objects (`policy.karmada.io/v1alpha1`) from
//! the member clusters' carbon scores.
//!
//! **Where the scores come from.** Each member cluster runs
//! `carbon-kube cluster-score publish --cluster-name NAME` with the Karmada
//! control plane (or any API server both can reach that has the
//! `AddOnPlacementScore` CRD) as its hub, so member `NAME`'s score is the
//! `AddOnPlacementScore` `carbon-kube` in namespace `NAME` there: the layout
//! OCM uses, so one publisher serves both. The adapter lists those objects
//! once per run. A member without one, with an expired one, or with one it
//! cannot read is weighed as neutral ([`static_weight`]`(None)`), logged and
//! counted; it never stops the other members or policies.
//!
//! **What it changes.** Only policies (`PropagationPolicy`, and
//! `ClusterPropagationPolicy` unless `--watch-namespace` is set) annotated
//! `carbon-kube.io/carbon-weights: "true"`. Their target clusters are the
//! policy's `spec.placement.clusterAffinity.clusterNames`, else the clusters
//! named in its current `staticWeightList`, else every member with a score
//! object. The adapter sets `spec.placement.replicaScheduling` to
//! `Divided` / `Weighted` with one `staticWeightList` entry per target
//! cluster (weight = score + 101) and removes `dynamicWeight`; it writes
//! only when the weights differ from the policy's, with the annotation
//! `carbon-kube.io/carbon-weights-reason` saying why. Cluster affinity and
//! everything else in the policy are left alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use carbon_kube_model::{UnixSeconds, keys};
use carbon_kube_policy::cluster_score::{score_in_force, static_weight};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};

use crate::metrics::KarmadaMetrics;
use crate::ocm;

/// The `PropagationPolicy` kind as a dynamic resource.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.karmada.io", "v1alpha1", "PropagationPolicy"),
        "propagationpolicies",
    )
}

/// The `ClusterPropagationPolicy` kind (cluster-scoped) as a dynamic resource.
pub fn cluster_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy.karmada.io", "v1alpha1", "ClusterPropagationPolicy"),
        "clusterpropagationpolicies",
    )
}

/// Validated settings of the adapter.
#[derive(Clone, Debug)]
pub struct KarmadaSettings {
    /// Name of the members' `AddOnPlacementScore` objects.
    pub resource_name: String,
    /// Score name inside them.
    pub score_name: String,
    /// Only policies in this namespace (default: every namespace).
    pub watch_namespace: Option<String>,
    /// Time between runs.
    pub interval: Duration,
}

/// A member cluster's score as the adapter found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// A score in force.
    Score(i32),
    /// No score object for the cluster.
    Missing,
    /// The score object's `validUntil` has passed.
    Expired,
    /// The score object could not be read (the reason).
    Invalid(String),
}

impl SourceState {
    /// The score to weigh with, `None` for neutral.
    pub const fn score(&self) -> Option<i32> {
        match self {
            Self::Score(s) => Some(*s),
            _ => None,
        }
    }

    /// The metric label.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Score(_) => "ok",
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// Every member's score from the listed `AddOnPlacementScore` objects (the
/// namespace is the cluster's name); objects with another name are ignored.
pub fn score_sources(
    objects: &[DynamicObject],
    settings: &KarmadaSettings,
    now: UnixSeconds,
) -> BTreeMap<String, SourceState> {
    objects
        .iter()
        .filter(|o| o.metadata.name.as_deref() == Some(settings.resource_name.as_str()))
        .filter_map(|o| {
            let cluster = o.metadata.namespace.clone()?;
            let state = match ocm::published(o, &settings.score_name) {
                Ok(p) => {
                    score_in_force(Some(p), now).map_or(SourceState::Expired, SourceState::Score)
                }
                Err(e) => SourceState::Invalid(e.to_string()),
            };
            Some((cluster, state))
        })
        .collect()
}

/// Whether a policy opted in; `Err` with the value when the annotation is
/// neither `true` nor `false`.
pub fn opted_in(policy: &DynamicObject) -> Result<bool, String> {
    match policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::KARMADA_CARBON_WEIGHTS))
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" || v.is_empty() => Ok(false),
        Some(v) => Err(v),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The policy's `staticWeightList` as (cluster names, weight) pairs.
pub fn current_weights(policy: &DynamicObject) -> Vec<(Vec<String>, i64)> {
    policy.data["spec"]["placement"]["replicaScheduling"]["weightPreference"]["staticWeightList"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        strings(&e["targetCluster"]["clusterNames"]),
                        e["weight"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The clusters a policy's weights cover (see the module documentation).
pub fn target_clusters(
    policy: &DynamicObject,
    sources: &BTreeMap<String, SourceState>,
) -> Vec<String> {
    let mut clusters =
        strings(&policy.data["spec"]["placement"]["clusterAffinity"]["clusterNames"]);
    if clusters.is_empty() {
        clusters = current_weights(policy)
            .into_iter()
            .flat_map(|(c, _)| c)
            .collect();
    }
    if clusters.is_empty() {
        clusters = sources.keys().cloned().collect();
    }
    clusters.sort();
    clusters.dedup();
    clusters
}

/// Each target cluster's weight and the state it came from.
pub fn desired_weights(
    clusters: &[String],
    sources: &BTreeMap<String, SourceState>,
) -> Vec<(String, i64, SourceState)> {
    clusters
        .iter()
        .map(|c| {
            let state = sources.get(c).cloned().unwrap_or(SourceState::Missing);
            (c.clone(), static_weight(state.score()), state)
        })
        .collect()
}

/// `a +38 → 139; b missing → 101 (neutral)`.
pub fn explain(weights: &[(String, i64, SourceState)]) -> String {
    let mut s = String::from("carbon weights (score + 101): ");
    for (i, (cluster, weight, state)) in weights.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        let _ = match state {
            SourceState::Score(v) => write!(s, "{cluster} {v:+} → {weight}"),
            SourceState::Missing => write!(s, "{cluster} has no score → {weight} (neutral)"),
            SourceState::Expired => write!(s, "{cluster} score expired → {weight} (neutral)"),
            SourceState::Invalid(e) => {
                write!(s, "{cluster} score unreadable ({e}) → {weight} (neutral)")
            }
        };
    }
    s
}

/// What happened to one opted-in policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// `namespace/name`.
    pub policy: String,
    /// `updated`, `unchanged`, `skipped` or `failed`.
    pub result: &'static str,
    /// Why.
    pub message: String,
}

/// What went wrong listing.
#[derive(Debug, thiserror::Error)]
pub enum KarmadaError {
    /// Listing the policies failed.
    #[error("listing PropagationPolicies (is Karmada's policy.karmada.io CRD installed?): {0}")]
    ListPolicies(#[source] kube::Error),
    /// Listing the scores failed.
    #[error(
        "listing AddOnPlacementScores (is the cluster.open-cluster-management.io CRD installed?): {0}"
    )]
    ListScores(#[source] kube::Error),
}

/// One run over every opted-in policy.
pub async fn reconcile_once(
    client: &kube::Client,
    settings: &KarmadaSettings,
    metrics: &KarmadaMetrics,
    now: UnixSeconds,
) -> Result<Vec<PolicyOutcome>, KarmadaError> {
    let scores: Api<DynamicObject> = Api::all_with(client.clone(), &ocm::api_resource());
    let by_name =
        ListParams::default().fields(&format!("metadata.name={}", settings.resource_name));
    let score_objects = scores
        .list(&by_name)
        .await
        .map_err(KarmadaError::ListScores)?;
    let sources = score_sources(&score_objects.items, settings, now);
    for (cluster, state) in &sources {
        if let SourceState::Invalid(e) = state {
            tracing::warn!(
                cluster,
                error = e,
                "member score unreadable: weighed as neutral"
            );
        }
    }
    let policies: Api<DynamicObject> = match &settings.watch_namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &api_resource()),
        None => Api::all_with(client.clone(), &api_resource()),
    };
    let mut items = policies
        .list(&ListParams::default())
        .await
        .map_err(KarmadaError::ListPolicies)?
        .items;
    // ClusterPropagationPolicies too, unless limited to one namespace; a
    // control plane without their CRD simply has none.
    if settings.watch_namespace.is_none() {
        let cluster: Api<DynamicObject> = Api::all_with(client.clone(), &cluster_api_resource());
        match cluster.list(&ListParams::default()).await {
            Ok(list) => items.extend(list.items),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::debug!("no ClusterPropagationPolicy kind on this control plane");
            }
            Err(e) => return Err(KarmadaError::ListPolicies(e)),
        }
    }
    let mut outcomes = Vec::new();
    for policy in &items {
        let namespace = policy.metadata.namespace.clone();
        let ns = namespace.clone().unwrap_or_default();
        let name = policy.metadata.name.clone().unwrap_or_default();
        let id = match &namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => format!("ClusterPropagationPolicy/{name}"),
        };
        match opted_in(policy) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(value) => {
                tracing::warn!(
                    policy = id,
                    value,
                    "{} must be \"true\" or \"false\": policy left alone",
                    keys::KARMADA_CARBON_WEIGHTS
                );
                metrics.policy("skipped");
                outcomes.push(PolicyOutcome {
                    policy: id,
                    result: "skipped",
                    message: format!(
                        "annotation {}={value:?} is not true or false",
                        keys::KARMADA_CARBON_WEIGHTS
                    ),
                });
                continue;
            }
        }
        let clusters = target_clusters(policy, &sources);
        if clusters.is_empty() {
            metrics.policy("skipped");
            outcomes.push(PolicyOutcome {
                policy: id,
                result: "skipped",
                message: "no target clusters: no clusterAffinity.clusterNames, no staticWeightList and no member scores".into(),
            });
            continue;
        }
        let weights = desired_weights(&clusters, &sources);
        for (_, _, state) in &weights {
            metrics.source(state.label());
        }
        let message = explain(&weights);
        let wanted: Vec<(Vec<String>, i64)> = weights
            .iter()
            .map(|(c, w, _)| (vec![c.clone()], *w))
            .collect();
        let rs = &policy.data["spec"]["placement"]["replicaScheduling"];
        let already = current_weights(policy) == wanted
            && rs["replicaSchedulingType"] == "Divided"
            && rs["replicaDivisionPreference"] == "Weighted"
            && rs["weightPreference"]["dynamicWeight"].is_null();
        if already {
            metrics.policy("unchanged");
            outcomes.push(PolicyOutcome {
                policy: id,
                result: "unchanged",
                message,
            });
            continue;
        }
        let list: Vec<Value> = wanted
            .iter()
            .map(|(c, w)| json!({"targetCluster": {"clusterNames": c}, "weight": w}))
            .collect();
        let patch = json!({
            "metadata": {"annotations": {keys::ANNOTATION_CARBON_WEIGHTS_REASON: message}},
            "spec": {"placement": {"replicaScheduling": {
                "replicaSchedulingType": "Divided",
                "replicaDivisionPreference": "Weighted",
                "weightPreference": {"staticWeightList": list, "dynamicWeight": null},
            }}},
        });
        let api: Api<DynamicObject> = if namespace.is_some() {
            Api::namespaced_with(client.clone(), &ns, &api_resource())
        } else {
            Api::all_with(client.clone(), &cluster_api_resource())
        };
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(policy = id, reason = message, "carbon weights updated");
                metrics.policy("updated");
                outcomes.push(PolicyOutcome {
                    policy: id,
                    result: "updated",
                    message,
                });
            }
            Err(e) => {
                tracing::error!(policy = id, error = %e, "updating the carbon weights failed");
                metrics.policy("failed");
                outcomes.push(PolicyOutcome {
                    policy: id,
                    result: "failed",
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(outcomes)
}

/// Runs [`reconcile_once`] every interval until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    settings: KarmadaSettings,
    metrics: KarmadaMetrics,
    readiness: carbon_kube_k8s::Readiness,
    shutdown: impl std::future::Future<Output = ()>,
) {
    readiness.register("karmada");
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        let now = jiff::Timestamp::now().as_second();
        match reconcile_once(&client, &settings, &metrics, now).await {
            Ok(_) => readiness.set("karmada", true),
            Err(e) => {
                metrics.runs_failed.inc();
                tracing::error!(error = format!("{e:#}"), "the Karmada weight run failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> KarmadaSettings {
        KarmadaSettings {
            resource_name: "carbon-kube".into(),
            score_name: "carbonScore".into(),
            watch_namespace: None,
            interval: Duration::from_secs(60),
        }
    }

    fn score(cluster: &str, status: Value) -> DynamicObject {
        let mut o = DynamicObject::new("carbon-kube", &ocm::api_resource()).within(cluster);
        o.data = json!({ "status": status });
        o
    }

    #[test]
    fn one_bad_source_is_neutral_and_the_others_count() {
        let now = 1_800_000_000;
        let objs = [
            score(
                "a",
                json!({"scores": [{"name": "carbonScore", "value": 60}], "validUntil": ocm::format_time(now + 60)}),
            ),
            score(
                "b",
                json!({"scores": [{"name": "carbonScore", "value": 90}], "validUntil": ocm::format_time(now - 1)}),
            ),
            score(
                "c",
                json!({"scores": [{"name": "somethingElse", "value": 10}]}),
            ),
            score(
                "d",
                json!({"scores": [{"name": "carbonScore", "value": -30}], "validUntil": null}),
            ),
        ];
        let sources = score_sources(&objs, &settings(), now);
        assert_eq!(sources["a"], SourceState::Score(60));
        assert_eq!(sources["b"], SourceState::Expired);
        assert!(matches!(sources["c"], SourceState::Invalid(_)));
        assert_eq!(sources["d"], SourceState::Score(-30));
        let clusters: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let weights = desired_weights(&clusters, &sources);
        let w: Vec<i64> = weights.iter().map(|(_, w, _)| *w).collect();
        assert_eq!(w, [161, 101, 101, 71, 101]);
        let text = explain(&weights);
        assert!(text.contains("a +60 → 161"), "{text}");
        assert!(text.contains("e has no score → 101 (neutral)"), "{text}");
    }

    #[test]
    fn targets_come_from_affinity_then_weights_then_scores() {
        let sources: BTreeMap<String, SourceState> =
            [("x".to_owned(), SourceState::Missing)].into();
        let mut p = DynamicObject::new("p", &api_resource()).within("ns");
        p.data =
            json!({"spec": {"placement": {"clusterAffinity": {"clusterNames": ["m2", "m1"]}}}});
        assert_eq!(target_clusters(&p, &sources), ["m1", "m2"]);
        p.data = json!({"spec": {"placement": {"replicaScheduling": {"weightPreference": {"staticWeightList": [
            {"targetCluster": {"clusterNames": ["w1"]}, "weight": 3}]}}}}});
        assert_eq!(target_clusters(&p, &sources), ["w1"]);
        assert_eq!(current_weights(&p), [(vec!["w1".to_owned()], 3)]);
        p.data = json!({"spec": {}});
        assert_eq!(target_clusters(&p, &sources), ["x"]);
        p.metadata.annotations =
            Some([(keys::KARMADA_CARBON_WEIGHTS.to_owned(), "yes".to_owned())].into());
        assert_eq!(opted_in(&p), Err("yes".to_owned()));
    }
}
