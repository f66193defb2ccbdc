//! The HTTP service: `POST /filter`, `POST /prioritize`, plus `/metrics`,
//! `/healthz` and `/readyz`. Built by [`app`] so tests drive it with
//! `oneshot` requests and no socket.
//!
//! Handlers never wait on the network: they read the node cache, the
//! snapshot and the settings that background tasks keep up to date. A body
//! that is not an extender request gets HTTP 400 with the parser's message;
//! an internal failure (including a panic) gets HTTP 500 for that request
//! only. kube-scheduler treats both as an extender error, which an
//! `ignorable: true` extender turns into "schedule without the extender".

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use carbon_kube_k8s::health_router;
use carbon_kube_policy::placement::{
    Candidate, FilterOutcome, NoGreenNode, NotApplied, PodView, filter_nodes, score_nodes,
};
use carbon_kube_policy::zone_map::{NodeView, UnknownZone, ZoneResolution, node_zone};
use prometheus_client::registry::Registry;
use serde_json::value::RawValue;

use crate::state::{Cluster, Decision, Shared};
use crate::wire::{
    ExtenderArgs, FilterResult, Name, PairMap, RawNodeList, WireNode, write_filter_names,
    write_host_priorities,
};

/// The largest request accepted: 15,000 full nodes are about 60 MB.
pub const MAX_BODY_BYTES: usize = 256 << 20;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not an extender request (HTTP 400).
    #[error("bad extender request: {0}")]
    BadRequest(String),
    /// Something failed inside the extender (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            // Client faults are not our errors: debug only.
            Self::BadRequest(m) => {
                tracing::debug!(error = %m, "rejected a malformed extender request");
                (StatusCode::BAD_REQUEST, self.to_string()).into_response()
            }
            Self::Internal(m) => {
                tracing::error!(error = %m, "extender request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the extender's log",
                )
                    .into_response()
            }
        }
    }
}

/// The extender's router: the two verbs plus the health and metrics routes.
pub fn app(shared: Arc<Shared>, registry: Arc<Registry>) -> Router {
    let readiness = shared.readiness.clone();
    Router::new()
        .route("/filter", post(filter_handler))
        .route("/prioritize", post(prioritize_handler))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
        .merge(health_router(registry, readiness))
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn filter_handler(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    timed(&shared, "filter", || filter(&shared, &body))
}

async fn prioritize_handler(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    timed(&shared, "prioritize", || prioritize(&shared, &body))
}

fn timed(
    shared: &Shared,
    verb: &'static str,
    f: impl FnOnce() -> Result<(Vec<u8>, &'static str), ApiError>,
) -> Response {
    let start = Instant::now();
    let result = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            Err(ApiError::Internal(format!(
                "{verb} handler panicked: {msg}"
            )))
        }
    };
    shared
        .metrics
        .observe_latency(verb, start.elapsed().as_secs_f64());
    match result {
        Ok((body, outcome)) => {
            shared.metrics.decision(verb, outcome);
            json_response(body)
        }
        Err(e) => {
            let outcome = match e {
                ApiError::BadRequest(_) => "bad_request",
                ApiError::Internal(_) => "error",
            };
            shared.metrics.decision(verb, outcome);
            e.into_response()
        }
    }
}

fn parse(body: &[u8]) -> Result<(ExtenderArgs<'_>, PodView), ApiError> {
    let args: ExtenderArgs<'_> = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body is not an ExtenderArgs JSON object (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    let pod = args
        .pod
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("request has no Pod".into()))?
        .to_view()
        .map_err(|e| ApiError::BadRequest(format!("Pod.{e}")))?;
    Ok((args, pod))
}

/// Full nodes from the request, parsed, with `requested` from the pod cache.
fn full_nodes(
    items: &[&RawValue],
    cluster: &Cluster,
    shared: &Shared,
) -> Result<Vec<(NodeView, ZoneResolution)>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let wire: WireNode = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::BadRequest(format!("Nodes.items[{i}]: {e}")))?;
            let mut view = wire
                .to_view()
                .map_err(|e| ApiError::BadRequest(format!("Nodes.items[{i}].{e}")))?;
            view.requested = cluster.requested_on(&view.name);
            let zone = match cluster.nodes.get(&view.name) {
                Some(c)
                    if c.view.labels == view.labels && c.view.provider_id == view.provider_id =>
                {
                    ZoneResolution::clone(&c.zone)
                }
                _ => node_zone(&view, &shared.region_map),
            };
            Ok((view, zone))
        })
        .collect()
}

/// Candidates for node names, in request order: the cached nodes, and
/// neutral stand-ins (put in `unseen`, with the requests of pods already
/// bound to them) for names the cache has not seen yet.
fn name_candidates<'c>(
    names: &[Name<'_>],
    cluster: &'c Cluster,
    unseen: &'c mut Vec<(NodeView, ZoneResolution)>,
) -> Vec<Candidate<'c>> {
    let cached = |n: &Name<'_>| {
        cluster.nodes.get(n.0.as_ref()).map(|c| Candidate {
            node: &c.view,
            zone: &c.zone,
        })
    };
    // Usually every name is cached: one pass, one lookup each.
    if let Some(all) = names.iter().map(cached).collect::<Option<Vec<_>>>() {
        return all;
    }
    *unseen = names
        .iter()
        .filter(|n| cached(n).is_none())
        .map(|n| {
            (
                NodeView {
                    name: n.0.clone().into_owned(),
                    requested: cluster.requested_on(n.0.as_ref()),
                    ..NodeView::default()
                },
                ZoneResolution::unknown(UnknownZone::NotSeen),
            )
        })
        .collect();
    let unseen: &'c Vec<_> = unseen;
    let mut next_unseen = unseen.iter();
    names
        .iter()
        .filter_map(|n| {
            cached(n).or_else(|| {
                next_unseen
                    .next()
                    .map(|(node, zone)| Candidate { node, zone })
            })
        })
        .collect()
}

fn filter_outcome_label(outcome: &FilterOutcome<'_>) -> &'static str {
    match (outcome.not_applied, outcome.no_green_node) {
        (Some(NotApplied::OptedOut), _) => "opted_out",
        (Some(_), _) => "no_data",
        (None, Some(NoGreenNode::FailedOpen { .. })) => "failed_open",
        (None, Some(NoGreenNode::Rejected { .. })) => "rejected",
        (None, None) => "applied",
    }
}

fn pod_key(args: &ExtenderArgs<'_>, pod: &PodView) -> String {
    args.pod
        .as_ref()
        .and_then(|p| p.uid())
        .map_or_else(|| format!("{}/{}", pod.namespace, pod.name), str::to_owned)
}

fn record_decision(
    shared: &Shared,
    key: String,
    pod: &PodView,
    update: impl FnOnce(&mut Decision) -> bool,
) {
    if !shared.record_decisions {
        return;
    }
    let mut d = shared
        .decisions
        .get(&key)
        .map(|d| (*d).clone())
        .unwrap_or_else(|| Decision {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            ..Decision::default()
        });
    if update(&mut d) {
        shared.decisions.insert(key, Arc::new(d));
    }
}

/// The filtered-out nodes whose reasons go back to kube-scheduler: all of
/// them when no node passed, none otherwise.
///
/// kube-scheduler reads `FailedAndUnresolvableNodes` only into the diagnosis
/// of a pod that no node fits (its `FailedScheduling` Event and condition,
/// and preemption's choice of nodes). When at least one node passes, the pod
/// is placed on one of them and the per-node reasons are discarded unread,
/// while decoding them (one map entry per dirty node, hundreds per pod) is
/// the largest part of what the extender costs kube-scheduler's CPU
/// (BENCHMARKS.md, end to end). The reason still reaches the pod's Event, the
/// debug log and the decision metrics.
fn reported_failures<'o>(
    outcome: &'o FilterOutcome<'_>,
    none_passed: bool,
) -> impl Iterator<Item = usize> + 'o {
    outcome.failed().filter(move |_| none_passed)
}

/// Handles a filter request body; returns the response body and the outcome
/// label.
pub fn filter(shared: &Shared, body: &[u8]) -> Result<(Vec<u8>, &'static str), ApiError> {
    let (args, pod) = parse(body)?;
    let snapshot = shared.snapshot();
    let cfg = shared.config();
    let now = shared.now();
    let cluster = shared.cluster();
    let (out, label, decision): (Vec<u8>, &'static str, _);
    if let Some(names) = &args.node_names {
        let mut unseen = Vec::new();
        let candidates = name_candidates(names, &cluster, &mut unseen);
        let outcome = filter_nodes(&pod, &candidates, &snapshot, &cfg, now);
        let messages: Vec<String> = (0..outcome.zones.len())
            .map(|z| outcome.zone_failure_message(z))
            .collect();
        let none_passed = outcome.passed().next().is_none();
        let failed = reported_failures(&outcome, none_passed).map(|i| {
            (
                names[i].0.as_ref(),
                messages[outcome.verdicts[i].zone].as_str(),
            )
        });
        let mut buf = Vec::with_capacity(response_capacity(body, names.len()));
        write_filter_names(
            &mut buf,
            outcome.passed().map(|i| names[i].0.as_ref()),
            failed,
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        out = buf;
        label = filter_outcome_label(&outcome);
        log_filter(&pod, &outcome);
        decision = summarize_filter(&outcome);
    } else if let Some(items) = args.nodes.as_ref().and_then(|n| n.items.as_ref()) {
        let nodes = full_nodes(items, &cluster, shared)?;
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|(node, zone)| Candidate { node, zone })
            .collect();
        let outcome = filter_nodes(&pod, &candidates, &snapshot, &cfg, now);
        let messages: Vec<String> = (0..outcome.zones.len())
            .map(|z| outcome.zone_failure_message(z))
            .collect();
        let passed: Vec<&RawValue> = outcome.passed().map(|i| items[i]).collect();
        let failed: Vec<(&str, &str)> = reported_failures(&outcome, passed.is_empty())
            .map(|i| {
                (
                    nodes[i].0.name.as_str(),
                    messages[outcome.verdicts[i].zone].as_str(),
                )
            })
            .collect();
        let result = FilterResult {
            nodes: Some(RawNodeList(&passed)),
            node_names: None,
            failed_nodes: PairMap(&[]),
            failed_and_unresolvable: PairMap(&failed),
            error: "",
        };
        out = serde_json::to_vec(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
        label = filter_outcome_label(&outcome);
        log_filter(&pod, &outcome);
        decision = summarize_filter(&outcome);
    } else {
        return Err(ApiError::BadRequest(
            "request has neither Nodes nor NodeNames".into(),
        ));
    }
    drop(cluster);
    if let Some((summary, failed_open)) = decision {
        record_decision(shared, pod_key(&args, &pod), &pod, |d| {
            d.summary = summary;
            d.failed_open = failed_open;
            true
        });
    }
    Ok((out, label))
}

type FilterSummary = Option<(
    carbon_kube_policy::placement::DecisionSummary,
    Option<String>,
)>;

fn summarize_filter(outcome: &FilterOutcome<'_>) -> FilterSummary {
    let mut s = carbon_kube_policy::placement::DecisionSummary::default();
    if !s.record_filter(outcome) {
        return None;
    }
    let failed_open = match outcome.no_green_node {
        Some(NoGreenNode::FailedOpen { cleanest_zone }) => Some(format!(
            "no candidate zone is at or below the threshold of {}; scheduled anyway (failing open; cleanest candidate: {})",
            outcome.rule, outcome.zones[cleanest_zone]
        )),
        _ => None,
    };
    Some((s, failed_open))
}

fn log_filter(pod: &PodView, outcome: &FilterOutcome<'_>) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            pod = %format_args!("{}/{}", pod.namespace, pod.name),
            decision = %outcome.summary(),
            "filter"
        );
    }
    for e in &outcome.pod.annotation_errors {
        tracing::info!(pod = %format_args!("{}/{}", pod.namespace, pod.name), "{e}");
    }
}

/// Room for an answer about `nodes` nodes: about the request's size (which
/// holds every name) plus the keys and punctuation around each name.
fn response_capacity(body: &[u8], nodes: usize) -> usize {
    body.len().saturating_add(nodes.saturating_mul(24))
}

/// The candidates' names, in candidate order.
enum Hosts<'a> {
    /// From the request's `NodeNames`.
    Names(&'a [Name<'a>]),
    /// From the request's full nodes.
    Full(&'a [(NodeView, ZoneResolution)]),
}

impl Hosts<'_> {
    fn get(&self, i: usize) -> &str {
        match self {
            Self::Names(n) => n.get(i).map_or("", |n| n.0.as_ref()),
            Self::Full(f) => f.get(i).map_or("", |(n, _)| n.name.as_str()),
        }
    }
}

/// Handles a prioritize request body; returns the response body and the
/// outcome label.
pub fn prioritize(shared: &Shared, body: &[u8]) -> Result<(Vec<u8>, &'static str), ApiError> {
    let (args, pod) = parse(body)?;
    let snapshot = shared.snapshot();
    let cfg = shared.config();
    let now = shared.now();
    let cluster = shared.cluster();
    let full;
    let mut unseen = Vec::new();
    let (candidates, hosts) = if let Some(names) = &args.node_names {
        (
            name_candidates(names, &cluster, &mut unseen),
            Hosts::Names(names),
        )
    } else if let Some(items) = args.nodes.as_ref().and_then(|n| n.items.as_ref()) {
        full = full_nodes(items, &cluster, shared)?;
        (
            full.iter()
                .map(|(node, zone)| Candidate { node, zone })
                .collect(),
            Hosts::Full(&full),
        )
    } else {
        return Err(ApiError::BadRequest(
            "request has neither Nodes nor NodeNames".into(),
        ));
    };
    let outcome = score_nodes(&pod, &candidates, &snapshot, &cfg, now);
    let mut out = Vec::with_capacity(response_capacity(body, candidates.len()));
    let scores = outcome.scores.iter().map(|s| i64::from(s.score));
    match hosts {
        Hosts::Names(n) => {
            write_host_priorities(&mut out, n.iter().map(|n| n.0.as_ref()).zip(scores))
        }
        Hosts::Full(f) => {
            write_host_priorities(&mut out, f.iter().map(|(n, _)| n.name.as_str()).zip(scores))
        }
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let label = match outcome.not_applied {
        Some(NotApplied::OptedOut) => "opted_out",
        Some(_) => "no_data",
        None => "applied",
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        let best = outcome
            .scores
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.score)
            .map(|(i, _)| format!("{}: {}", hosts.get(i), outcome.reason(i)));
        tracing::debug!(
            pod = %format_args!("{}/{}", pod.namespace, pod.name),
            nodes = candidates.len(),
            best = best.as_deref().unwrap_or("none"),
            "prioritize"
        );
    }
    let mut summary = carbon_kube_policy::placement::DecisionSummary::default();
    let applied = summary.record_scores(&outcome);
    drop(cluster);
    if applied {
        record_decision(shared, pod_key(&args, &pod), &pod, |d| {
            merge_scores(&mut d.summary, &summary);
            true
        });
    }
    Ok((out, label))
}

// The score summary was built while the node cache was locked; merge it into
// the pod's decision without holding the lock.
fn merge_scores(
    into: &mut carbon_kube_policy::placement::DecisionSummary,
    from: &carbon_kube_policy::placement::DecisionSummary,
) {
    for z in &from.zones {
        match into.zones.iter_mut().find(|e| e.zone == z.zone) {
            Some(e) => {
                e.best_performance = z.best_performance;
                if z.intensity.is_some() {
                    e.intensity = z.intensity;
                }
            }
            None => into.zones.push(z.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use carbon_kube_model::keys;
    use carbon_kube_policy::zone_map::{RegionZoneMap, Resources};

    use super::*;

    #[test]
    fn names_the_cache_has_not_seen_are_neutral_in_request_order() {
        let mut cluster = Cluster::default();
        let map = RegionZoneMap::default();
        for n in ["a", "c"] {
            cluster.upsert_node(
                NodeView {
                    name: n.into(),
                    labels: [(keys::LABEL_GRID_ZONE.to_owned(), "DE".to_owned())].into(),
                    ..NodeView::default()
                },
                &map,
            );
        }
        cluster.upsert_pod("p", "d", Resources::new(100, 1));
        let names: Vec<Name<'_>> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|n| Name(Cow::Borrowed(n)))
            .collect();
        let mut unseen = Vec::new();
        let got: Vec<_> = name_candidates(&names, &cluster, &mut unseen)
            .iter()
            .map(|c| {
                (
                    c.node.name.clone(),
                    c.zone.zone.as_ref().map(|z| z.as_str().to_owned()),
                    c.node.requested,
                )
            })
            .collect();
        let de = Some("DE".to_owned());
        assert_eq!(
            got,
            [
                ("a".to_owned(), de.clone(), Resources::default()),
                ("b".to_owned(), None, Resources::default()),
                ("c".to_owned(), de, Resources::default()),
                ("d".to_owned(), None, Resources::new(100, 1)),
            ]
        );
        let mut unseen = Vec::new();
        assert_eq!(name_candidates(&names[..1], &cluster, &mut unseen).len(), 1);
        assert!(unseen.is_empty());
    }
}
