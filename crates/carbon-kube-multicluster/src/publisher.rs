//! `carbon-kube cluster-score publish`: one run reads this cluster's nodes
//! and carbon snapshot, asks the policy for the cluster's score and whether
//! to publish it (hysteresis), and writes the `AddOnPlacementScore` on the
//! hub. [`publish_once`] is one run with `now` as an argument; [`run`] repeats
//! it every interval.

use std::time::Duration;

use carbon_kube_k8s::SnapshotStore;
use carbon_kube_k8s::leader::LeaderSettings;
use carbon_kube_k8s::quantity::cpu_millis;
use carbon_kube_model::{Snapshot, UnixSeconds};
use carbon_kube_policy::cluster_score::{
    ClusterScore, ClusterScoreConfig, Hysteresis, Publication, cluster_score, publish,
    zone_capacities,
};
use carbon_kube_policy::zone_map::{NodeView, RegionZoneMap, ZoneResolution, node_zone};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::metrics::PublisherMetrics;
use crate::ocm;

/// Validated settings of the publisher.
#[derive(Clone, Debug)]
pub struct PublisherSettings {
    /// Namespace of the snapshot ConfigMap in this cluster.
    pub namespace: String,
    /// Name of the snapshot ConfigMap.
    pub snapshot_configmap: String,
    /// This cluster's name: the hub namespace the score is written to.
    pub cluster_name: String,
    /// Name of the `AddOnPlacementScore`.
    pub resource_name: String,
    /// Name of the score inside it.
    pub score_name: String,
    /// How the score is computed.
    pub score: ClusterScoreConfig,
    /// When it is published.
    pub hysteresis: Hysteresis,
    /// Only nodes matching this label selector count (default: every node).
    pub node_selector: Option<String>,
    /// Region → zone map for nodes without a grid-zone label.
    pub region_zones: RegionZoneMap,
    /// Time between runs.
    pub interval: Duration,
    /// Leader election (a Lease in `namespace` of this cluster); `None`
    /// always publishes (a single replica, `--once`, tests).
    pub leader: Option<LeaderSettings>,
}

/// What went wrong in one run.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Listing this cluster's nodes failed.
    #[error("listing the nodes of this cluster: {0}")]
    ListNodes(#[source] kube::Error),
    /// Reading the score object on the hub failed.
    #[error("reading AddOnPlacementScore {namespace}/{name} on the hub: {source}")]
    Read {
        /// Hub namespace.
        namespace: String,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Creating or updating the score object failed.
    #[error(
        "writing AddOnPlacementScore {namespace}/{name} on the hub ({verb}): {source} \
         (does the namespace {namespace} exist, and is the AddOnPlacementScore CRD installed?)"
    )]
    Write {
        /// `create` or `patch status`.
        verb: &'static str,
        /// Hub namespace.
        namespace: String,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// One run's outcome.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The fresh score.
    pub score: ClusterScore,
    /// What was published.
    pub publication: Publication,
}

/// A node as the policy sees it (only what the score needs).
pub fn node_view(node: &Node) -> NodeView {
    let status = node.status.as_ref();
    let cpu = status
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("cpu"))
        .and_then(|q| cpu_millis(&q.0))
        .unwrap_or(0);
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        allocatable: carbon_kube_policy::zone_map::Resources::new(cpu, 0),
        requested: carbon_kube_policy::zone_map::Resources::default(),
    }
}

/// Nodes per list page: a large cluster's nodes are read in pages and kept
/// only as the policy's small views, never all as full objects at once.
const NODE_PAGE: u32 = 500;

/// This cluster's nodes (those matching `selector`) as policy views, read
/// `page` at a time.
pub async fn list_node_views(
    client: &kube::Client,
    selector: Option<&str>,
    page: u32,
) -> Result<Vec<NodeView>, PublishError> {
    let api = Api::<Node>::all(client.clone());
    let mut params = ListParams::default().limit(page.max(1));
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let mut views = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(PublishError::ListNodes)?;
        views.extend(page.items.iter().map(node_view));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(views),
        }
    }
}

/// Reads the snapshot; an absent, unreadable or malformed ConfigMap is an
/// empty snapshot (the score is then neutral), logged and counted.
async fn load_snapshot(
    store: &SnapshotStore,
    metrics: &PublisherMetrics,
    settings: &PublisherSettings,
) -> Snapshot {
    match store.load().await {
        Ok(Some((snapshot, errors))) => {
            for e in &errors {
                tracing::warn!(error = %e, "a zone of the carbon snapshot is unreadable; it counts as no data");
                metrics.snapshot_errors.inc("bad_zone");
            }
            snapshot
        }
        Ok(None) => {
            tracing::warn!(
                namespace = settings.namespace,
                configmap = settings.snapshot_configmap,
                "no carbon snapshot ConfigMap: the score is neutral (0)"
            );
            metrics.snapshot_errors.inc("missing");
            Snapshot::default()
        }
        Err(e) => {
            tracing::warn!(error = %e, "carbon snapshot unreadable: the score is neutral (0)");
            metrics.snapshot_errors.inc("unreadable");
            Snapshot::default()
        }
    }
}

/// One run: score this cluster (`local`) and publish on the hub (`hub`;
/// the same client when the hub is this cluster).
pub async fn publish_once(
    local: &kube::Client,
    hub: &kube::Client,
    settings: &PublisherSettings,
    metrics: &PublisherMetrics,
    now: UnixSeconds,
) -> Result<RunOutcome, PublishError> {
    let views = list_node_views(local, settings.node_selector.as_deref(), NODE_PAGE).await?;
    let zones: Vec<ZoneResolution> = views
        .iter()
        .map(|n| node_zone(n, &settings.region_zones))
        .collect();
    let capacity = zone_capacities(views.iter().zip(&zones));
    let store = SnapshotStore::new(
        local.clone(),
        &settings.namespace,
        &settings.snapshot_configmap,
    );
    let snapshot = load_snapshot(&store, metrics, settings).await;
    let score = cluster_score(&capacity, &snapshot, &settings.score, now);

    let (ns, name) = (&settings.cluster_name, &settings.resource_name);
    let api: Api<DynamicObject> = Api::namespaced_with(hub.clone(), ns, &ocm::api_resource());
    let read_err = |source| PublishError::Read {
        namespace: ns.clone(),
        name: name.clone(),
        source,
    };
    let write_err = |verb, source| PublishError::Write {
        verb,
        namespace: ns.clone(),
        name: name.clone(),
        source,
    };
    let existing = api.get_opt(name).await.map_err(read_err)?;
    // The previous value: what the object says (restart-safe); a damaged
    // status counts as nothing published.
    let (previous_status, previous) = match &existing {
        Some(obj) => {
            let status = ocm::status_of(obj).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "replacing a damaged AddOnPlacementScore status");
                ocm::Status::default()
            });
            let previous = match ocm::published(obj, &settings.score_name) {
                Ok(p) => Some(p),
                Err(ocm::ScoreError::NoScore { .. }) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring the published score");
                    None
                }
            };
            (status, previous)
        }
        None => (ocm::Status::default(), None),
    };
    let publication = publish(previous, &score, &settings.hysteresis, now);
    if publication.write {
        if existing.is_none() {
            let mut obj = DynamicObject::new(name, &ocm::api_resource()).within(ns);
            obj.metadata.labels = Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "carbon-kube".to_owned(),
                )]
                .into(),
            );
            api.create(&PostParams::default(), &obj)
                .await
                .map_err(|e| write_err("create", e))?;
        }
        let status = ocm::status_for(
            &previous_status,
            &settings.score_name,
            &publication,
            &score,
            now,
        );
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(|e| write_err("patch status", e))?;
    }
    metrics.record(&score, &publication);
    tracing::info!(
        cluster = ns,
        score = publication.value,
        fresh = score.value,
        written = publication.write,
        decision = publication.explain(),
        reason = score.explain(),
        "cluster score"
    );
    Ok(RunOutcome { score, publication })
}

/// Runs [`publish_once`] every interval until `shutdown` completes, while
/// this replica holds the leader Lease (`settings.leader`; always without
/// one). A standby publishes nothing, is ready, and takes over at once when
/// it wins the Lease. A failed run is logged and counted; the next run
/// tries again. Fails only if the election cannot be set up.
pub async fn run(
    local: kube::Client,
    hub: kube::Client,
    settings: PublisherSettings,
    metrics: PublisherMetrics,
    readiness: carbon_kube_k8s::Readiness,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    readiness.register("publisher");
    let (mut leader, lease) =
        carbon_kube_k8s::leader::elect(local.clone(), settings.leader.as_ref()).await?;
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut was_leader = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {}
            res = leader.changed() => {
                if res.is_err() {
                    tracing::error!("leader election stopped; exiting");
                    break;
                }
            }
        }
        let leads = *leader.borrow_and_update();
        metrics.leader.set(i64::from(leads));
        if was_leader != Some(leads) {
            tracing::info!(
                leader = leads,
                "{}",
                if leads {
                    "leading: publishing the cluster score"
                } else {
                    "standby: another replica publishes the cluster score"
                }
            );
            was_leader = Some(leads);
        }
        if !leads {
            readiness.set("publisher", true);
            continue;
        }
        let now = jiff::Timestamp::now().as_second();
        match publish_once(&local, &hub, &settings, &metrics, now).await {
            Ok(_) => readiness.set("publisher", true),
            Err(e) => {
                metrics.runs_failed.inc();
                tracing::error!(
                    error = format!("{e:#}"),
                    "publishing the cluster score failed"
                );
            }
        }
    }
    lease.release(leader).await;
    Ok(())
}
