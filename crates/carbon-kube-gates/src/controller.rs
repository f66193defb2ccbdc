//! The gate controller: caches, leader election and the pass loop.
//!
//! Every replica keeps three caches (reflectors): unscheduled pods
//! (`spec.nodeName=`), nodes, and the `carbon-intensity-data` ConfigMap. Only
//! the replica holding the `Lease` acts. A pass, at most every `--tick` and
//! whenever a cache changes, reads the gated pods, asks
//! [`crate::reconcile::reconcile`] what to do, then
//!
//! - releases (most urgent first) through the [`Actuator`], paced, with an
//!   Event, metrics and the affinity for the planned zone;
//! - stores new or revised plans on the pods (annotations) with an Event.
//!
//! The only state that matters lives on the pods; in memory there is just an
//! overlay of the controller's own recent writes until the cache catches up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use carbon_kube_k8s::{Readiness, SnapshotErrors};
use carbon_kube_model::{Snapshot, UnixSeconds};
use carbon_kube_policy::deferral::ReleaseReason;
use carbon_kube_policy::zone_map::RegionZoneMap;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, Patch};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::Clock;
use crate::actuator::{
    Actuator, Events, Pace, PacingConfig, ReleaseRequest, Released, patch_params,
    release_annotations,
};
use crate::admission::has_gate;
use crate::budgets::{self, Assessment, BudgetSettings, UsageState};
use crate::metrics::ControllerMetrics;
use crate::overrides::{OverrideState, effective_deferral, watch_overrides};
use crate::reconcile::{
    Action, GatedPod, ReconcileConfig, ReleaseCause, RunningPod, StoredPlan, count_near_deadline,
    reconcile,
};
use crate::zones::{
    AffinityMode, NodeEntry, affinity_for_zone, node_entry, prefer_nodes, zone_terms,
};

pub use carbon_kube_k8s::leader::LeaderSettings;

/// Everything the controller needs besides a client.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Planner and annotation settings.
    pub reconcile: ReconcileConfig,
    /// How released pods are steered to the planned zone.
    pub affinity: AffinityMode,
    /// Release pacing.
    pub pacing: PacingConfig,
    /// Longest wait between passes.
    pub tick: Duration,
    /// Shortest wait between passes.
    pub min_pass_interval: Duration,
    /// Standing plans are revisited at least this often (and whenever the
    /// snapshot changes).
    pub replan_every: Duration,
    /// Longest a pass waits on pacing before re-reading the caches.
    pub max_pass: Duration,
    /// Watts per requested vCPU, for the savings estimate.
    pub watts_per_cpu: f64,
    /// Gated pods whose latest start is this close (seconds), or past, count
    /// in `carbon_kube_deferred_pods_near_deadline`.
    pub near_deadline_seconds: i64,
    /// Namespace of the snapshot ConfigMap.
    pub snapshot_namespace: String,
    /// Name of the snapshot ConfigMap.
    pub snapshot_name: String,
    /// The operator's region → zone map.
    pub region_map: RegionZoneMap,
    /// Log instead of writing.
    pub dry_run: bool,
    /// Write Events on pods.
    pub events: bool,
    /// Leader election; `None` acts at once (single replica, tests).
    pub leader: Option<LeaderSettings>,
    /// Only pods in this namespace (default: every namespace).
    pub pod_namespace: Option<String>,
    /// ConfigMap (in `snapshot_namespace`) whose `deferral.*` keys override
    /// the deferral settings until its `validUntil`; `None`: flags only.
    pub overrides_configmap: Option<String>,
    /// Namespace carbon budgets (`--budgets`); `None`: off.
    pub budgets: Option<BudgetSettings>,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            reconcile: ReconcileConfig::default(),
            affinity: AffinityMode::default(),
            pacing: PacingConfig::default(),
            tick: Duration::from_secs(1),
            min_pass_interval: Duration::from_millis(200),
            replan_every: Duration::from_secs(300),
            max_pass: Duration::from_secs(2),
            watts_per_cpu: 2.12,
            near_deadline_seconds: 600,
            snapshot_namespace: carbon_kube_model::keys::DEFAULT_NAMESPACE.to_owned(),
            snapshot_name: carbon_kube_model::keys::SNAPSHOT_CONFIGMAP.to_owned(),
            region_map: RegionZoneMap::default(),
            dry_run: false,
            events: true,
            leader: None,
            pod_namespace: None,
            overrides_configmap: Some(carbon_kube_model::keys::CONFIG_CONFIGMAP.to_owned()),
            budgets: None,
        }
    }
}

#[derive(Default)]
struct SnapshotState {
    snapshot: Arc<Snapshot>,
    generation: u64,
}

/// The controller's caches, filled by background watches.
struct Caches {
    pods: Store<Pod>,
    /// Pods bound to nodes (trimmed to what the ledger reads): the room
    /// they take is not available to deferred pods.
    bound: Store<Pod>,
    nodes: Store<Node>,
    snapshot: Arc<RwLock<SnapshotState>>,
    changed: Arc<Notify>,
}

enum Overlay {
    Released,
    Updated(Arc<Pod>),
}

/// Expected grams saved by a green-window release: intensity difference
/// (planned-at-creation vs the window) × energy of the expected run.
pub fn expected_savings_grams(plan: &StoredPlan, watts_per_cpu: f64) -> f64 {
    if plan.plan.reason != ReleaseReason::GreenWindow {
        return 0.0;
    }
    let (Some(now), Some(window)) = (plan.plan.now_g_per_kwh, plan.plan.expected_g_per_kwh) else {
        return 0.0;
    };
    let cores = plan.cpu_millis.max(100) as f64 / 1000.0;
    let kwh = cores * watts_per_cpu * plan.duration_seconds as f64 / 3600.0 / 1000.0;
    ((now - window) * kwh).max(0.0)
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn rv(p: &Pod) -> String {
    p.metadata.resource_version.clone().unwrap_or_default()
}

async fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    writer: reflector::store::Writer<K>,
    readiness: Readiness,
    name: &'static str,
    changed: Arc<Notify>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = reflector::reflector(writer, watcher(api, cfg)).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::InitDone) => readiness.set(name, true),
            Ok(_) => {}
            Err(e) => tracing::warn!(cache = name, error = %e, "watch failed; retrying"),
        }
        changed.notify_one();
    }
}

/// Caches the pods bound to nodes that still hold room (not finished),
/// trimmed to what [`RunningPod::from_pod`] reads, so 50,000 pods cost a few
/// MiB. It does not wake the pass loop: the ledger reads it on each pass.
async fn reflect_bound(api: Api<Pod>, writer: reflector::store::Writer<Pod>, readiness: Readiness) {
    let cfg = watcher::Config::default()
        .fields("spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed");
    let stream =
        reflector::reflector(writer, watcher(api, cfg).modify(trim_bound_pod)).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::InitDone) => readiness.set("bound-pods", true),
            Ok(_) => {}
            Err(e) => tracing::warn!(cache = "bound-pods", error = %e, "watch failed; retrying"),
        }
    }
}

/// Drops everything of a bound pod but its name, node, annotations and
/// container requests.
fn trim_bound_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.labels = None;
    p.metadata.owner_references = None;
    p.status = None;
    if let Some(spec) = p.spec.as_mut() {
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            c.env = None;
            c.env_from = None;
            c.command = None;
            c.args = None;
            c.volume_mounts = None;
            c.ports = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
        }
    }
}

/// Keeps the latest good snapshot. A malformed or deleted ConfigMap keeps
/// the last good one: its records go stale by age, and the planner then
/// fails open. Bad zones and unreadable ConfigMaps are logged and counted
/// (`carbon_kube_gates_snapshot_errors_total{error}`).
async fn watch_snapshot(
    client: kube::Client,
    namespace: String,
    name: String,
    state: Arc<RwLock<SnapshotState>>,
    readiness: Readiness,
    changed: Arc<Notify>,
    errors: SnapshotErrors,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    let set = |s: Snapshot| {
        let mut st = state.write().unwrap_or_else(|e| e.into_inner());
        st.snapshot = Arc::new(s);
        st.generation += 1;
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                if let Some(s) = errors.read(&cm) {
                    set(s);
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!(%namespace, %name, "snapshot ConfigMap deleted; keeping the last good snapshot until it goes stale");
            }
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => readiness.set("snapshot", true),
            Err(e) => tracing::warn!(error = %e, "snapshot watch failed; retrying"),
        }
        changed.notify_one();
    }
}

/// The pass loop's state.
struct Reconciler {
    client: kube::Client,
    settings: ControllerSettings,
    metrics: ControllerMetrics,
    clock: Clock,
    caches: Caches,
    actuator: Actuator,
    events: Events,
    overlay: HashMap<String, (String, Overlay)>,
    last_generation: Option<u64>,
    last_replan: Option<Instant>,
    /// Runtime overrides (see [`crate::overrides`]) and the flags' deferral
    /// settings they are laid over.
    overrides: OverrideState,
    base_deferral: carbon_kube_policy::deferral::DeferralConfig,
    overrides_applied: Option<bool>,
    /// With `--budgets`: the Namespaces (budget annotations), the usage
    /// document, and the last pass's assessments.
    budget_namespaces: Option<Store<Namespace>>,
    usage: UsageState,
    assessments: std::collections::BTreeMap<String, Assessment>,
}

impl Reconciler {
    /// Sets this pass's deferral settings: the flags, or the override until
    /// its `validUntil`.
    fn apply_overrides(&mut self, now: UnixSeconds) {
        let state = self.overrides.read().unwrap_or_else(|e| e.into_inner());
        let (deferral, applied) = effective_deferral(&self.base_deferral, state.as_ref(), now);
        if self.overrides_applied != Some(applied) {
            tracing::info!(
                applied,
                ?deferral,
                "deferral settings: {}",
                if applied { "runtime override" } else { "flags" }
            );
            self.overrides_applied = Some(applied);
        }
        drop(state);
        self.settings.reconcile.deferral = deferral;
    }

    /// With `--budgets`: assesses every namespace's budget, exports the
    /// gauges, and gives each gated pod its namespace's pressure. Without
    /// fresh usage or namespaces, every pod plans as without a budget.
    fn apply_budgets(&mut self, pods: &[Arc<Pod>], facts: &mut [GatedPod], now: UnixSeconds) {
        let (Some(b), Some(store)) = (&self.settings.budgets, &self.budget_namespaces) else {
            return;
        };
        let current = budgets::assess_store(store, &self.usage, now, &b.config);
        budgets::log_changes(&self.assessments, &current);
        self.metrics.budgets.update(&current, now);
        for (p, f) in pods.iter().zip(facts.iter_mut()) {
            if let Some(a) = p
                .metadata
                .namespace
                .as_deref()
                .and_then(|ns| current.get(ns))
            {
                f.budget = a.pressure();
            }
        }
        self.assessments = current;
    }

    /// A plan the budget made stricter says so, with the namespace's figures.
    fn budget_note(&self, pod: &Pod, plan: &StoredPlan) -> Option<String> {
        if plan.plan.reason != ReleaseReason::Budget {
            return None;
        }
        let ns = pod.metadata.namespace.as_deref()?;
        Some(self.assessments.get(ns)?.explain(ns))
    }

    fn gated_pods(&mut self) -> Vec<Arc<Pod>> {
        let state = self.caches.pods.state();
        let current: HashMap<String, String> = state.iter().map(|p| (uid(p), rv(p))).collect();
        self.overlay
            .retain(|u, (old_rv, _)| current.get(u).is_some_and(|r| r == old_rv));
        state
            .into_iter()
            .filter_map(|p| match self.overlay.get(&uid(&p)) {
                Some((_, Overlay::Released)) => None,
                Some((_, Overlay::Updated(np))) => Some(np.clone()),
                None => Some(p),
            })
            .filter(|p| p.metadata.deletion_timestamp.is_none() && has_gate(p))
            .collect()
    }

    async fn pass(&mut self, leader: &watch::Receiver<bool>) {
        let now = (self.clock)();
        self.apply_overrides(now);
        let nodes: Vec<NodeEntry> = self
            .caches
            .nodes
            .state()
            .iter()
            .map(|n| node_entry(n, &self.settings.region_map))
            .collect();
        let pods = self.gated_pods();
        self.metrics.deferred_pods.set(pods.len() as i64);
        let running: Vec<RunningPod> = self
            .caches
            .bound
            .state()
            .iter()
            .filter_map(|p| RunningPod::from_pod(p))
            .collect();
        let (snapshot, generation) = {
            let st = self
                .caches
                .snapshot
                .read()
                .unwrap_or_else(|e| e.into_inner());
            (st.snapshot.clone(), st.generation)
        };
        let replan = self.last_generation != Some(generation)
            || self
                .last_replan
                .is_none_or(|t| t.elapsed() >= self.settings.replan_every);
        let mut facts: Vec<GatedPod> = pods
            .iter()
            .map(|p| GatedPod::from_pod(p, &nodes, now))
            .collect();
        self.apply_budgets(&pods, &mut facts, now);
        self.metrics.near_deadline.set(count_near_deadline(
            &facts,
            now,
            self.settings.near_deadline_seconds,
            &self.settings.reconcile.spec,
        ) as i64);
        let actions = reconcile(
            &facts,
            &snapshot,
            &nodes,
            &running,
            now,
            &self.settings.reconcile,
            replan,
        );
        if replan {
            self.last_generation = Some(generation);
            self.last_replan = Some(Instant::now());
        }
        let started = Instant::now();
        let mut plans = Vec::new();
        let mut cluster_busy = false;
        for action in actions {
            match action {
                Action::Plan { .. } => plans.push(action),
                Action::Release { .. } if cluster_busy => {}
                Action::Release {
                    pod,
                    cause,
                    zone,
                    plan,
                    urgent,
                    nodes: room,
                    message,
                    ..
                } => {
                    if !*leader.borrow() {
                        return;
                    }
                    let p = pods[pod].clone();
                    let target = Target {
                        zone: zone.as_ref(),
                        room: &room,
                    };
                    let outcome = self
                        .release(
                            &p,
                            cause,
                            target,
                            plan.as_ref(),
                            urgent,
                            &message,
                            &nodes,
                            started,
                        )
                        .await;
                    if outcome == Some(Pace::ClusterBusy(Duration::ZERO)) {
                        cluster_busy = true;
                    }
                }
            }
        }
        if !plans.is_empty() && *leader.borrow() {
            self.store_plans(&pods, plans).await;
        }
    }

    /// Returns `Some(ClusterBusy(0))` when the pass should stop releasing.
    #[allow(clippy::too_many_arguments)]
    async fn release(
        &mut self,
        pod: &Arc<Pod>,
        cause: ReleaseCause,
        target: Target<'_>,
        plan: Option<&StoredPlan>,
        urgent: bool,
        message: &str,
        nodes: &[NodeEntry],
        started: Instant,
    ) -> Option<Pace> {
        let zone = target.zone;
        let steer = matches!(
            cause,
            ReleaseCause::Planned(
                ReleaseReason::GreenWindow | ReleaseReason::NowIsBest | ReleaseReason::Budget
            )
        );
        let current = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let zone_affinity = zone.filter(|_| steer).and_then(|z| {
            affinity_for_zone(current, &zone_terms(z, nodes), self.settings.affinity)
        });
        // Prefer the nodes where the ledger has room for the run, so the pod
        // does not land in room promised to a more urgent pod.
        let pinned = if self.settings.affinity == AffinityMode::None {
            None
        } else {
            let base = zone_affinity.as_ref().map(|(a, _)| a).or(current);
            prefer_nodes(base, target.room)
        };
        let mut steer_note = zone_affinity
            .as_ref()
            .map_or_else(String::new, |(_, mode)| {
                format!(
                    " ({} node affinity for {})",
                    match mode {
                        AffinityMode::Required => "required",
                        _ => "preferred",
                    },
                    zone.map_or("unknown", |z| z.as_str())
                )
            });
        if pinned.is_some() {
            steer_note.push_str(&format!(
                " (preferring the node{} with room for its run: {})",
                if target.room.len() == 1 { "" } else { "s" },
                target.room.join(", ")
            ));
        }
        let affinity = pinned.or_else(|| zone_affinity.map(|(a, _)| a));
        let zone_key = zone.map_or("unknown", |z| z.as_str()).to_owned();
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        loop {
            let released_at = jiff::Timestamp::now()
                .round(jiff::Unit::Millisecond)
                .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string());
            let req = ReleaseRequest {
                pod,
                affinity: affinity.as_ref(),
                annotations: release_annotations(cause.annotation_value(), &released_at),
                zone_key: &zone_key,
                urgent,
            };
            match self.actuator.release(req).await {
                Ok(Released::Done(_)) => {
                    self.overlay.insert(uid(pod), (rv(pod), Overlay::Released));
                    self.metrics.release(cause.metric_label());
                    if let Some(created) = pod.metadata.creation_timestamp.as_ref() {
                        let waited = (self.clock)() - created.0.as_second();
                        self.metrics.deferral_seconds.observe(waited.max(0) as f64);
                    }
                    if let Some(p) = plan {
                        let g = expected_savings_grams(p, self.settings.watts_per_cpu);
                        if g > 0.0 && cause == ReleaseCause::Planned(ReleaseReason::GreenWindow) {
                            self.metrics.expected_savings_grams.inc_by(g);
                        }
                    }
                    let (type_, reason) = match cause {
                        ReleaseCause::Invalid => (EventType::Warning, "InvalidDeferral"),
                        _ => (EventType::Normal, "Released"),
                    };
                    tracing::info!(pod = %key, reason = cause.metric_label(), zone = %zone_key, "{message}");
                    self.events.emit(
                        pod,
                        type_,
                        reason,
                        "Release",
                        format!("{message}{steer_note}"),
                    );
                    return None;
                }
                Ok(Released::DryRun) => {
                    tracing::info!(pod = %key, reason = cause.metric_label(), "dry run: {message}");
                    self.overlay.insert(uid(pod), (rv(pod), Overlay::Released));
                    return None;
                }
                Ok(Released::Paced(Pace::ClusterBusy(wait))) => {
                    if started.elapsed() + wait > self.settings.max_pass {
                        return Some(Pace::ClusterBusy(Duration::ZERO));
                    }
                    tokio::time::sleep(wait).await;
                }
                Ok(Released::Paced(p)) => return Some(p),
                Ok(Released::Conflict(why)) => {
                    tracing::debug!(pod = %key, %why, "release conflict; retrying on the next pass");
                    return None;
                }
                Err(e) => {
                    self.metrics.release_errors.inc();
                    tracing::warn!(pod = %key, error = %e, "release failed; retrying on the next pass");
                    return None;
                }
            }
        }
    }

    async fn store_plans(&mut self, pods: &[Arc<Pod>], plans: Vec<Action>) {
        let client = self.client.clone();
        let dry_run = self.settings.dry_run;
        let writes = plans.into_iter().filter_map(|a| match a {
            Action::Plan {
                pod,
                stored,
                revised,
                message,
            } => {
                let p = pods[pod].clone();
                let budget = self.budget_note(&p, &stored);
                let message = match &budget {
                    Some(note) => format!("{message}; {note}"),
                    None => message,
                };
                Some((p, stored, (revised, budget.is_some()), message))
            }
            Action::Release { .. } => None,
        });
        let results: Vec<_> = futures::stream::iter(writes)
            .map(|(pod, stored, revised, message)| {
                let client = client.clone();
                async move {
                    let annotations = stored.to_annotations();
                    if dry_run {
                        let mut p = (*pod).clone();
                        p.metadata
                            .annotations
                            .get_or_insert_with(Default::default)
                            .extend(annotations);
                        return (pod, Ok(p), revised, message);
                    }
                    let api: Api<Pod> = Api::namespaced(
                        client,
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                    );
                    let patch = json!({ "metadata": { "annotations": annotations } });
                    let r = api
                        .patch(
                            pod.metadata.name.as_deref().unwrap_or_default(),
                            &patch_params(),
                            &Patch::Merge(&patch),
                        )
                        .await;
                    (pod, r, revised, message)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (pod, result, (revised, budget), message) in results {
            match result {
                Ok(updated) => {
                    self.overlay
                        .insert(uid(&pod), (rv(&pod), Overlay::Updated(Arc::new(updated))));
                    self.metrics
                        .plan(if revised { "revised" } else { "planned" });
                    tracing::info!(
                        pod = %format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.name.as_deref().unwrap_or_default()),
                        revised,
                        "{message}"
                    );
                    if !dry_run {
                        self.events.emit(
                            &pod,
                            EventType::Normal,
                            match (budget, revised) {
                                (true, _) => "DeferredForBudget",
                                (false, true) => "DeferralRevised",
                                (false, false) => "Deferred",
                            },
                            "Plan",
                            message,
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "storing a plan failed; retrying on the next pass")
                }
            }
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run_controller(
    client: kube::Client,
    settings: ControllerSettings,
    metrics: ControllerMetrics,
    readiness: Readiness,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    for name in ["pods", "bound-pods", "nodes", "snapshot"] {
        readiness.register(name);
    }
    let changed = Arc::new(Notify::new());
    let (pods, pod_writer) = reflector::store();
    let (bound, bound_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let snapshot = Arc::new(RwLock::new(SnapshotState::default()));
    let tasks = vec![
        tokio::spawn(reflect(
            match &settings.pod_namespace {
                Some(ns) => Api::<Pod>::namespaced(client.clone(), ns),
                None => Api::<Pod>::all(client.clone()),
            },
            watcher::Config::default().fields("spec.nodeName="),
            pod_writer,
            readiness.clone(),
            "pods",
            changed.clone(),
        )),
        tokio::spawn(reflect_bound(
            Api::<Pod>::all(client.clone()),
            bound_writer,
            readiness.clone(),
        )),
        tokio::spawn(reflect(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            node_writer,
            readiness.clone(),
            "nodes",
            changed.clone(),
        )),
        tokio::spawn(watch_snapshot(
            client.clone(),
            settings.snapshot_namespace.clone(),
            settings.snapshot_name.clone(),
            snapshot.clone(),
            readiness.clone(),
            changed.clone(),
            metrics.snapshot_errors.clone(),
        )),
    ];
    let overrides: OverrideState = Arc::default();
    let mut tasks = tasks;
    // Not a readiness check: until the override is read (or if it cannot be,
    // e.g. without RBAC for it), the flags apply. Fail open.
    if let Some(name) = &settings.overrides_configmap {
        tasks.push(tokio::spawn(watch_overrides(
            client.clone(),
            settings.snapshot_namespace.clone(),
            name.clone(),
            settings.reconcile.deferral.clone(),
            overrides.clone(),
            readiness.clone(),
            changed.clone(),
        )));
    }
    // Budgets: neither watch holds readiness; until both are read (or if
    // they cannot be), pods plan as without a budget. Fail open.
    let usage: UsageState = Arc::default();
    let budget_namespaces = settings.budgets.as_ref().map(|b| {
        let (store, writer) = reflector::store();
        tasks.push(tokio::spawn(budgets::reflect_namespaces(
            client.clone(),
            settings.pod_namespace.clone(),
            writer,
            changed.clone(),
        )));
        tasks.push(tokio::spawn(budgets::watch_usage(
            client.clone(),
            b.usage_namespace.clone(),
            b.usage_configmap.clone(),
            usage.clone(),
            changed.clone(),
        )));
        store
    });
    let (mut leader, lease) =
        carbon_kube_k8s::leader::elect(client.clone(), settings.leader.as_ref()).await?;
    let mut r = Reconciler {
        actuator: Actuator::new(client.clone(), &settings.pacing, settings.dry_run),
        events: Events::new((settings.events && !settings.dry_run).then(|| client.clone())),
        client,
        metrics,
        clock,
        caches: Caches {
            pods,
            bound,
            nodes,
            snapshot,
            changed,
        },
        overlay: HashMap::new(),
        last_generation: None,
        last_replan: None,
        overrides,
        base_deferral: settings.reconcile.deferral.clone(),
        overrides_applied: None,
        budget_namespaces,
        usage,
        assessments: std::collections::BTreeMap::new(),
        settings,
    };
    tokio::pin!(shutdown);
    let mut was_leader = false;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(r.settings.tick) => {},
            () = r.caches.changed.notified() => {},
            res = leader.changed() => {
                if res.is_err() {
                    tracing::error!("leader election stopped; exiting");
                    break;
                }
            },
        }
        let is_leader = *leader.borrow();
        if is_leader != was_leader {
            tracing::info!(leader = is_leader, "leadership changed");
            was_leader = is_leader;
            r.overlay.clear();
        }
        r.metrics.leader.set(i64::from(is_leader));
        if !is_leader {
            // Only the leader counts; a former leader must not keep alerting.
            r.metrics.near_deadline.set(0);
            r.metrics.budgets.clear();
        }
        if !is_leader || !readiness.waiting().is_empty() {
            continue;
        }
        r.pass(&leader).await;
        tokio::time::sleep(r.settings.min_pass_interval).await;
    }
    lease.release(leader).await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Where a release sends its pod: the planned zone (steered to for green
/// windows and now-is-best releases) and the nodes where the ledger has room
/// for its run (preferred for every planned release).
#[derive(Clone, Copy, Debug)]
struct Target<'a> {
    zone: Option<&'a carbon_kube_model::ZoneId>,
    room: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_model::ZoneId;
    use carbon_kube_policy::deferral::ReleasePlan;

    fn plan(reason: ReleaseReason, now: f64, window: f64) -> StoredPlan {
        StoredPlan {
            plan: ReleasePlan {
                release_at: 100,
                zone: Some(ZoneId::parse("DE").unwrap()),
                reason,
                latest_start: 1000,
                deadline: 2000,
                expected_g_per_kwh: Some(window),
                now_g_per_kwh: Some(now),
            },
            planned_at: 0,
            cpu_millis: 4000,
            duration_seconds: 7200,
        }
    }

    #[test]
    fn savings_are_intensity_difference_times_estimated_energy() {
        // 4 vCPU x 2.5 W x 2 h = 20 Wh = 0.02 kWh; 300 - 100 g/kWh -> 4 g.
        let g = expected_savings_grams(&plan(ReleaseReason::GreenWindow, 300.0, 100.0), 2.5);
        assert!((g - 4.0).abs() < 1e-9, "{g}");
        assert_eq!(
            expected_savings_grams(&plan(ReleaseReason::NowIsBest, 300.0, 100.0), 2.5),
            0.0
        );
        assert_eq!(
            expected_savings_grams(&plan(ReleaseReason::GreenWindow, 100.0, 300.0), 2.5),
            0.0
        );
    }
}
