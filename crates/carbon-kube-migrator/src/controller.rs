//! The migrator: caches, leader election and the cycle.
//!
//! Every replica keeps caches (reflectors) of pods, nodes, namespaces,
//! ReplicaSets and the `carbon-intensity-data` ConfigMap, and reads the
//! `migration.*` overrides of `carbon-kube-config` ([`crate::overrides`]),
//! laid over the flags at the start of each cycle. Only the replica
//! holding the `Lease` acts. A cycle runs every `--interval` and whenever a
//! new snapshot arrives:
//!
//! 1. **finish** what a previous leader started: a move written on an owner
//!    but not confirmed evicted is completed for the same pod (or marked
//!    done if the pod is gone), never repeated for another pod;
//! 2. **measure landings**: once a replacement of a moved pod is bound, its
//!    zone is compared with the planned one
//!    (`carbon_kube_migration_landings_total{result}`);
//! 3. **decide**: for each running, eligible pod
//!    (`carbon_kube_policy::migration::eligibility`), the nodes it could be
//!    recreated on (selector, required affinity, taints) go to
//!    `carbon_kube_policy::migration::decide_migration` with the snapshot,
//!    the energy model and the owner's recent moves;
//! 4. **act**: moves, best net saving first, within the caps, each recorded
//!    on the owner first, then evicted through the [`Evictor`].
//!
//! The state that matters lives on the owners (see [`crate::state`]); in
//! memory there are only the caches, an overlay of this replica's own recent
//! owner writes until the cache catches up, and the last skip reason per pod
//! (to write one `MigrationSkipped` Event per change, not per cycle).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use carbon_kube_k8s::node_match::pod_fits_node;
use carbon_kube_k8s::{Readiness, SnapshotErrors};
use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId, keys};
use carbon_kube_policy::energy::EnergyModel;
use carbon_kube_policy::migration::{
    MigrationConfig, MigrationDecision, MigrationPlan, MigrationRequest, MoveHistory,
    decide_migration, eligibility,
};
use carbon_kube_policy::placement::{Candidate, PlacementConfig};
use carbon_kube_policy::zone_map::RegionZoneMap;
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::Resource as _;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::Clock;
use crate::caps::{CapsConfig, CycleCaps};
use crate::evict::{Evicted, Evictor};
use crate::metrics::MigratorMetrics;
use crate::overrides::{
    OverrideSink, OverrideState, SettingSource, effective_migration, watch_overrides,
};
use crate::state::{Landing, MoveRecord, OwnerState};
use crate::view::{
    NodeEntry, Owner, deadline, expected_remaining, job_recreates, last_checkpoint, node_entries,
    owner, pod_facts, pod_view, started_at, trim_pod, zone_selector,
};

/// Field manager of the migrator's writes.
pub const FIELD_MANAGER: &str = "carbon-kube-migrator";

pub use carbon_kube_k8s::leader::LeaderSettings;

/// Everything the migrator needs besides clients.
#[derive(Clone, Debug)]
pub struct MigratorSettings {
    /// The migration rule's settings.
    pub migration: MigrationConfig,
    /// The placement settings the target filter uses (as the extender).
    pub placement: PlacementConfig,
    /// Pod power model.
    pub energy: EnergyModel,
    /// Caps.
    pub caps: CapsConfig,
    /// Longest wait between cycles.
    pub interval: Duration,
    /// Shortest wait between cycles (a burst of snapshots makes one cycle).
    pub min_interval: Duration,
    /// A replacement not bound this long after the eviction counts as
    /// `not_seen`, seconds.
    pub landing_timeout_seconds: i64,
    /// Namespace of the snapshot ConfigMap.
    pub snapshot_namespace: String,
    /// Name of the snapshot ConfigMap.
    pub snapshot_name: String,
    /// The operator's region → zone map.
    pub region_map: RegionZoneMap,
    /// Decide and log, but evict and write nothing.
    pub dry_run: bool,
    /// Write Events on pods.
    pub events: bool,
    /// Leader election; `None` acts at once (single replica, tests).
    pub leader: Option<LeaderSettings>,
    /// Only pods in this namespace (default: every namespace).
    pub pod_namespace: Option<String>,
    /// Trim cached pods to what the migrator reads
    /// ([`crate::view::trim_pod`]); off only to measure what it saves (the
    /// scale bench).
    pub trim_pods: bool,
    /// The runtime overrides ConfigMap (`carbon-kube-config`, in
    /// `snapshot_namespace`) whose `migration.*` keys go over `migration`
    /// until their `validUntil`; `None` reads none.
    pub overrides_configmap: Option<String>,
}

impl Default for MigratorSettings {
    fn default() -> Self {
        Self {
            migration: MigrationConfig::default(),
            placement: PlacementConfig::default(),
            energy: EnergyModel::default(),
            caps: CapsConfig::default(),
            interval: Duration::from_secs(300),
            min_interval: Duration::from_secs(1),
            landing_timeout_seconds: 600,
            snapshot_namespace: keys::DEFAULT_NAMESPACE.to_owned(),
            snapshot_name: keys::SNAPSHOT_CONFIGMAP.to_owned(),
            region_map: RegionZoneMap::default(),
            dry_run: false,
            events: true,
            leader: None,
            pod_namespace: None,
            overrides_configmap: Some(keys::CONFIG_CONFIGMAP.to_owned()),
            trim_pods: true,
        }
    }
}

#[derive(Default)]
struct SnapshotState {
    snapshot: Arc<Snapshot>,
    generation: u64,
}

struct Caches {
    pods: Store<Pod>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    replicasets: Store<ReplicaSet>,
    snapshot: Arc<RwLock<SnapshotState>>,
    /// Wakes the cycle loop: a new snapshot or a new override.
    new_snapshot: Arc<Notify>,
}

/// Caches `api`'s objects, each passed through `modify` first (managed
/// fields are dropped from every object; pods are trimmed further, see
/// [`crate::view::trim_pod`]).
async fn reflect<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    readiness: Readiness,
    name: &'static str,
    modify: impl FnMut(&mut K) + Send + 'static,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(modify),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::InitDone) => readiness.set(name, true),
            Ok(_) => {}
            Err(e) => tracing::warn!(cache = name, error = %e, "watch failed; retrying"),
        }
    }
}

/// Keeps the latest good snapshot; a malformed or deleted ConfigMap keeps
/// the last good one, whose records then go stale by age (and nothing moves).
/// Bad zones and unreadable ConfigMaps are logged and counted
/// (`carbon_kube_migrator_snapshot_errors_total{error}`).
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
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                if let Some(s) = errors.read(&cm) {
                    let mut st = state.write().unwrap_or_else(|e| e.into_inner());
                    st.snapshot = Arc::new(s);
                    st.generation += 1;
                }
                changed.notify_one();
            }
            Ok(watcher::Event::Delete(_)) => tracing::warn!(
                %namespace, %name,
                "snapshot ConfigMap deleted; keeping the last good snapshot until it goes stale"
            ),
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => readiness.set("snapshot", true),
            Err(e) => tracing::warn!(error = %e, "snapshot watch failed; retrying"),
        }
    }
}

/// An owner and its migration state, as read this cycle.
#[derive(Clone, Debug)]
struct OwnerEntry {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    resource_version: Option<String>,
    replicas: u32,
    state: OwnerState,
    /// The annotation as last read or written (a conflict is retried only
    /// if nobody else changed it).
    base: Option<String>,
}

impl OwnerEntry {
    fn from_meta(kind: &str, meta: &ObjectMeta, replicas: Option<i32>) -> Option<Self> {
        let raw = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::ANNOTATION_MIGRATIONS));
        let state = OwnerState::parse(raw.map(String::as_str)).unwrap_or_else(|e| {
            tracing::warn!(
                owner = %format!("{kind}/{}", meta.name.as_deref().unwrap_or_default()),
                error = %e,
                "unreadable {} annotation; treating as empty",
                keys::ANNOTATION_MIGRATIONS
            );
            OwnerState::default()
        });
        Some(Self {
            kind: kind.to_owned(),
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            resource_version: meta.resource_version.clone(),
            replicas: u32::try_from(replicas.unwrap_or(1)).unwrap_or(1),
            state,
            base: raw.cloned(),
        })
    }

    fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Events written as `carbon-kube-migrator`, in the background.
#[derive(Clone)]
struct Events {
    recorder: Option<Recorder>,
}

impl Events {
    fn emit(&self, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        let reference = pod.object_ref(&());
        let mut note = note;
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing an Event failed");
            }
        });
    }
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The cycle's state.
struct Migrator {
    client: kube::Client,
    settings: MigratorSettings,
    metrics: MigratorMetrics,
    clock: Clock,
    caches: Caches,
    evictor: Evictor,
    events: Events,
    /// This replica's recent owner writes, by owner uid: (written at, entry).
    overlay: HashMap<String, (Instant, OwnerEntry)>,
    /// Last skip label per pod uid (one Event per change).
    last_skip: HashMap<String, &'static str>,
    /// The `migration.*` override read from `carbon-kube-config`, if any.
    overrides: OverrideState,
    /// The migration settings of the last cycle and their source (logged
    /// when they change).
    in_force: Option<(MigrationConfig, SettingSource)>,
}

impl Migrator {
    /// The migration settings for a cycle at `now`: the flags, with the
    /// override on top until it expires. Logs and exports them when they
    /// (or their source) change.
    fn migration_in_force(&mut self, now: UnixSeconds) -> MigrationConfig {
        let (cfg, source) = {
            let o = self.overrides.read().unwrap_or_else(|e| e.into_inner());
            effective_migration(&self.settings.migration, o.as_ref(), now)
        };
        if self.in_force.as_ref() != Some(&(cfg.clone(), source)) {
            tracing::info!(
                source = source.as_str(),
                margin = cfg.margin,
                min_dwell_seconds = cfg.min_dwell_seconds,
                min_net_saving_grams = cfg.min_net_saving_grams,
                min_improvement_g_per_kwh = cfg.min_improvement_g_per_kwh,
                "migration settings in force"
            );
            self.metrics.overrides.observe(&cfg, source);
            self.in_force = Some((cfg.clone(), source));
        }
        cfg
    }

    /// Writes the owner's state (guarded by its resourceVersion). Updates
    /// the entry's resourceVersion on success.
    async fn write_owner(&mut self, o: &mut OwnerEntry) -> Result<(), kube::Error> {
        let now = (self.clock)();
        o.state
            .forget_before(now, self.settings.migration.owner_memory_seconds.max(3600));
        if self.settings.dry_run {
            return Ok(());
        }
        let value = o.state.to_json();
        let c = self.client.clone();
        let mut attempt = 0;
        let meta = loop {
            attempt += 1;
            // The label is there exactly while a replacement is awaited:
            // the gate webhook watches only labelled owners (null removes it).
            let pending = o.state.awaits_landing().then_some("true");
            let patch = json!({
                "metadata": {
                    "resourceVersion": o.resource_version,
                    "annotations": { keys::ANNOTATION_MIGRATIONS: value },
                    "labels": { keys::LABEL_MIGRATION_PENDING: pending }
                }
            });
            match patch_meta(&c, &o.kind, &o.namespace, &o.name, &patch).await {
                Ok(meta) => break meta,
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 3 => {
                    // The owner changed (status, scale): retry on the fresh
                    // version if our annotation is as we left it.
                    let fresh = get_meta(&c, &o.kind, &o.namespace, &o.name).await?;
                    let current = fresh
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(keys::ANNOTATION_MIGRATIONS))
                        .cloned();
                    if current != o.base {
                        self.overlay.remove(&o.uid);
                        return Err(kube::Error::Api(s));
                    }
                    o.resource_version = fresh.resource_version;
                }
                Err(e) => {
                    self.overlay.remove(&o.uid);
                    return Err(e);
                }
            }
        };
        o.base = Some(value);
        o.resource_version = meta.resource_version;
        self.overlay
            .insert(o.uid.clone(), (Instant::now(), o.clone()));
        Ok(())
    }

    /// The owner of `pod`, with its state: ReplicaSets from the cache,
    /// StatefulSets and Jobs read once per cycle. Also whether a Job would
    /// recreate the pod.
    async fn owner_entry(
        &self,
        o: &Owner,
        namespace: &str,
        fetched: &mut HashMap<String, Option<(OwnerEntry, bool)>>,
    ) -> Option<(OwnerEntry, bool)> {
        if let Some((at, e)) = self.overlay.get(&o.uid)
            && at.elapsed() < Duration::from_secs(30)
        {
            let recreates = fetched
                .get(&o.uid)
                .and_then(|x| x.as_ref().map(|(_, r)| *r))
                .unwrap_or(true);
            return Some((e.clone(), recreates));
        }
        if let Some(x) = fetched.get(&o.uid) {
            return x.clone();
        }
        let c = self.client.clone();
        let found = match o.kind.as_str() {
            "ReplicaSet" => self
                .caches
                .replicasets
                .state()
                .iter()
                .find(|rs| rs.metadata.uid.as_deref() == Some(o.uid.as_str()))
                .and_then(|rs| OwnerEntry::from_meta("ReplicaSet", &rs.metadata, rs.spec.replicas))
                .map(|e| (e, true)),
            "StatefulSet" => Api::<StatefulSet>::namespaced(c, namespace)
                .get_opt(&o.name)
                .await
                .ok()
                .flatten()
                .and_then(|s| OwnerEntry::from_meta("StatefulSet", &s.metadata, s.spec.replicas))
                .map(|e| (e, true)),
            "Job" => Api::<Job>::namespaced(c, namespace)
                .get_opt(&o.name)
                .await
                .ok()
                .flatten()
                .and_then(|j| {
                    let recreates = job_recreates(&j);
                    OwnerEntry::from_meta(
                        "Job",
                        &j.metadata,
                        j.spec.as_ref().and_then(|s| s.parallelism),
                    )
                    .map(|e| (e, recreates))
                }),
            _ => None,
        };
        let found = found.filter(|(e, _)| e.uid == o.uid);
        fetched.insert(o.uid.clone(), found.clone());
        found
    }

    async fn cycle(&mut self, leader: &watch::Receiver<bool>) {
        let now = (self.clock)();
        let migration = self.migration_in_force(now);
        self.overlay
            .retain(|_, (at, _)| at.elapsed() < Duration::from_secs(30));
        let snapshot = self
            .caches
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot
            .clone();
        let pods = self.caches.pods.state();
        let nodes = node_entries(
            self.caches.nodes.state().iter().map(|n| &**n),
            pods.iter().map(|p| &**p),
            &self.settings.region_map,
        );
        let namespaces: HashMap<String, BTreeMap<String, String>> = self
            .caches
            .namespaces
            .state()
            .iter()
            .filter_map(|n| {
                Some((
                    n.metadata.name.clone()?,
                    n.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect();
        let mut fetched: HashMap<String, Option<(OwnerEntry, bool)>> = HashMap::new();
        // Owners with state: every ReplicaSet with the annotation, plus the
        // owners of pods met below.
        let mut owners: HashMap<String, OwnerEntry> = HashMap::new();
        for rs in self.caches.replicasets.state() {
            let has = rs
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(keys::ANNOTATION_MIGRATIONS));
            if has
                && let Some(uid) = rs.metadata.uid.clone()
                && let Some(o) = owner_of_uid(&uid, &rs.metadata, rs.spec.replicas)
            {
                let o = self.overlay.get(&uid).map_or(o, |(_, e)| e.clone());
                owners.insert(uid, o);
            }
        }
        // The pods' owners (StatefulSets and Jobs are read here).
        let mut pod_owner: HashMap<String, (String, bool)> = HashMap::new();
        for p in &pods {
            let Some(o) = owner(p) else { continue };
            if !matches!(o.kind.as_str(), "ReplicaSet" | "StatefulSet" | "Job") {
                continue;
            }
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            // Only opted-in pods' StatefulSets and Jobs are worth a read.
            if o.kind != "ReplicaSet" {
                let f = pod_facts(p, namespaces.get(&ns), true);
                if !(f.opted_in || f.stateful_opt_in) {
                    continue;
                }
            }
            if let Some((e, recreates)) = self.owner_entry(&o, &ns, &mut fetched).await {
                pod_owner.insert(
                    p.metadata.uid.clone().unwrap_or_default(),
                    (e.uid.clone(), recreates),
                );
                owners.entry(e.uid.clone()).or_insert(e);
            }
        }
        if !*leader.borrow() {
            return;
        }
        // 1 and 2: finish pending moves, measure landings.
        let uids: Vec<String> = owners.keys().cloned().collect();
        for uid in &uids {
            let Some(mut o) = owners.get(uid).cloned() else {
                continue;
            };
            if self.settle(&mut o, &pods, &nodes, now).await {
                owners.insert(uid.clone(), o);
            }
        }
        // 3: decide.
        let hour_ago = now - 3600;
        let past_hour: usize = owners.values().map(|o| o.state.moves_since(hour_ago)).sum();
        let mut caps = CycleCaps::new(
            self.settings.caps,
            u32::try_from(past_hour).unwrap_or(u32::MAX),
        );
        let mut moves: Vec<(Arc<Pod>, String, MigrationPlan)> = Vec::new();
        for p in &pods {
            let puid = p.metadata.uid.clone().unwrap_or_default();
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let (owner_uid, recreates) = pod_owner.get(&puid).cloned().unwrap_or_default();
            let facts = pod_facts(p, namespaces.get(&ns), recreates);
            let Ok(kind) = eligibility(&facts) else {
                continue;
            };
            let Some(o) = owners.get(&owner_uid) else {
                continue;
            };
            // A pod is never evicted twice (a pending or accepted move of it
            // is being settled).
            if o.state.moves.iter().any(|m| m.uid == puid) {
                continue;
            }
            let Some(spec) = p.spec.as_ref() else {
                continue;
            };
            let node_name = spec.node_name.clone().unwrap_or_default();
            let Some(current) = nodes.get(&node_name) else {
                continue;
            };
            let history = crate::state::history(&o.state);
            let matching: Vec<&NodeEntry> = nodes
                .values()
                .filter(|n| pod_fits_node(spec, &n.facts()))
                .collect();
            let candidates: Vec<Candidate<'_>> = matching
                .iter()
                .map(|n| Candidate {
                    node: &n.view,
                    zone: &n.zone,
                })
                .collect();
            let view = pod_view(p);
            let req = MigrationRequest {
                now,
                pod: &view,
                kind,
                started_at: started_at(p).unwrap_or(now),
                last_checkpoint: last_checkpoint(p),
                expected_remaining_seconds: expected_remaining(p, now),
                deadline: deadline(p),
                current_node: &node_name,
                current_zone: current.zone.zone.as_ref(),
                candidates: &candidates,
                history: MoveHistory {
                    pod_last_moved: None,
                    owner_moves: &history,
                    owner_replicas: o.replicas,
                },
            };
            let decision = decide_migration(
                &req,
                &snapshot,
                &self.settings.placement,
                &self.settings.energy,
                &migration,
            );
            match decision {
                MigrationDecision::Migrate(plan) => moves.push((p.clone(), owner_uid, plan)),
                MigrationDecision::Skip { .. } => {
                    let label = decision.metric_label();
                    self.metrics.migration(label);
                    let text = decision.explain();
                    tracing::debug!(pod = %pod_key(p), result = label, "{text}");
                    self.skip_event(p, label, text);
                }
            }
        }
        // 4: act, best net saving first.
        moves.sort_by(|a, b| b.2.numbers.net_grams().total_cmp(&a.2.numbers.net_grams()));
        for (p, owner_uid, plan) in moves {
            if !*leader.borrow() {
                return;
            }
            let Some(mut o) = owners.get(&owner_uid).cloned() else {
                continue;
            };
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let in_flight = u32::try_from(o.state.in_flight()).unwrap_or(u32::MAX);
            if let Err(cap) = caps.check(&node, &ns, &o.key(), o.replicas, in_flight) {
                self.metrics.migration("capped");
                let text = format!(
                    "stays for now: {} (would {})",
                    cap,
                    MigrationDecision::Migrate(plan.clone()).explain()
                );
                tracing::info!(pod = %pod_key(&p), result = "capped", "{text}");
                self.skip_event(&p, "capped", text);
                continue;
            }
            caps.record(&node, &ns, &o.key());
            let moved = self.migrate(&p, &mut o, &plan, &nodes, now).await;
            if !moved {
                caps.unrecord(&node, &ns, &o.key());
            }
            owners.insert(owner_uid, o);
        }
        self.metrics.cycles.inc();
    }

    fn skip_event(&mut self, p: &Pod, label: &'static str, text: String) {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if self.last_skip.get(&uid) == Some(&label) {
            return;
        }
        self.last_skip.insert(uid, label);
        if !self.settings.dry_run {
            // Events are aggregated by (reason, action): one action per kind
            // of skip keeps each kind's note, with a count.
            self.events.emit(
                p,
                EventType::Normal,
                "MigrationSkipped",
                skip_action(label),
                text,
            );
        }
    }

    /// Records the move on the owner, evicts, and confirms or withdraws the
    /// record. Returns whether the pod was evicted.
    async fn migrate(
        &mut self,
        p: &Arc<Pod>,
        o: &mut OwnerEntry,
        plan: &MigrationPlan,
        nodes: &HashMap<String, NodeEntry>,
        now: UnixSeconds,
    ) -> bool {
        let key = pod_key(p);
        let text = MigrationDecision::Migrate(plan.clone()).explain();
        if self.evictor.dry_run() {
            self.metrics.migration("dry_run");
            tracing::info!(pod = %key, result = "dry_run", "dry run: {text}");
            return true;
        }
        let numbers = &plan.numbers;
        let record = MoveRecord {
            at: now,
            pod: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
            from: numbers
                .source_zone
                .clone()
                .unwrap_or_else(|| plan.target_zone.clone()),
            to: plan.target_zone.clone(),
            nodes: plan.target_nodes.iter().take(5).cloned().collect(),
            // The reservation the gate webhook reads: the target zone's node
            // labels, until the replacement counts as not seen.
            zone_selector: zone_selector(&plan.target_zone, nodes.values()),
            reserve_until: Some(now + self.settings.landing_timeout_seconds),
            net_grams: numbers.net_grams(),
            evicted: false,
            landed: None,
        };
        o.state.moves.push(record);
        if let Err(e) = self.write_owner(o).await {
            o.state.moves.pop();
            self.metrics.migration("failed");
            tracing::warn!(pod = %key, owner = %o.key(), error = %e, "recording the move on the owner failed; retrying next cycle");
            return false;
        }
        self.evict_recorded(p, o, Some(&text)).await
    }

    /// Evicts the pod of the owner's pending record and confirms or
    /// withdraws the record.
    async fn evict_recorded(&mut self, p: &Pod, o: &mut OwnerEntry, text: Option<&str>) -> bool {
        let key = pod_key(p);
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let outcome = self.evictor.evict(p).await;
        let idx = o
            .state
            .moves
            .iter()
            .rposition(|m| m.uid == uid && !m.evicted);
        let text = text.map_or_else(
            || {
                idx.and_then(|i| o.state.moves.get(i))
                    .map_or_else(String::new, |m| {
                        format!(
                            "move {} → {} (finishing a move recorded before a restart)",
                            m.from, m.to
                        )
                    })
            },
            str::to_owned,
        );
        let evicted = match &outcome {
            Evicted::Done => {
                if let Some(i) = idx {
                    o.state.moves[i].evicted = true;
                    self.metrics
                        .expected_savings_grams
                        .inc_by(o.state.moves[i].net_grams.max(0.0));
                }
                self.metrics.migration("migrated");
                tracing::info!(pod = %key, result = "migrated", "{text}");
                self.events
                    .emit(p, EventType::Normal, "Migrated", "Evict", text.clone());
                true
            }
            Evicted::BlockedByBudget(msg) => {
                self.metrics.migration("blocked_pdb");
                let note = format!(
                    "eviction refused by a PodDisruptionBudget ({msg}); retried next cycle: {text}"
                );
                tracing::info!(pod = %key, result = "blocked_pdb", "{note}");
                self.skip_event(p, "blocked_pdb", note);
                false
            }
            Evicted::Gone => {
                tracing::debug!(pod = %key, "pod gone before its eviction");
                false
            }
            Evicted::DryRun => true,
            Evicted::Failed(e) => {
                self.metrics.migration("failed");
                tracing::warn!(pod = %key, error = %e, "eviction failed without a clear answer (it may have gone through); the move stays recorded as pending and the next cycle settles it");
                false
            }
        };
        // A refused eviction (PDB) or a pod that was gone before it is no
        // move: its record goes. A failure without an answer (the connection
        // dropped, the API server restarted) may have evicted the pod: the
        // record stays pending, and the next cycle evicts the same pod again
        // if it still exists or marks the move evicted if it is gone, so no
        // eviction goes unrecorded and no pod is evicted twice.
        let unknown = matches!(outcome, Evicted::Failed(_));
        if !evicted
            && !unknown
            && let Some(i) = idx
        {
            o.state.moves.remove(i);
        }
        if let Err(e) = self.write_owner(o).await {
            tracing::warn!(owner = %o.key(), error = %e, "updating the owner's migration record failed; the next cycle settles it");
        }
        evicted
    }

    /// Finishes a pending move and records landings. Returns whether the
    /// owner changed.
    async fn settle(
        &mut self,
        o: &mut OwnerEntry,
        pods: &[Arc<Pod>],
        nodes: &HashMap<String, NodeEntry>,
        now: UnixSeconds,
    ) -> bool {
        let mut changed = false;
        if let Some(pending) = o.state.pending().cloned() {
            let live = pods
                .iter()
                .find(|p| p.metadata.uid.as_deref() == Some(pending.uid.as_str()));
            match live {
                Some(p) if p.metadata.deletion_timestamp.is_none() => {
                    tracing::info!(pod = %pod_key(p), owner = %o.key(), "finishing a move recorded before a restart");
                    let p = p.clone();
                    self.evict_recorded(&p, o, None).await;
                    return true;
                }
                _ => {
                    // Gone or terminating: the eviction went through.
                    if let Some(m) = o.state.moves.iter_mut().find(|m| m.uid == pending.uid) {
                        m.evicted = true;
                    }
                    changed = true;
                }
            }
        }
        // Replacements the gate webhook steered name the move they replace
        // (`carbon-kube.io/replaces`): that pod is the move's replacement,
        // and no other move's. Without one, the first pod of the owner
        // created after the move and bound.
        let replaces = |p: &Pod| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(keys::ANNOTATION_REPLACES))
                .cloned()
        };
        let claimed: Vec<String> = o.state.moves.iter().map(|m| m.uid.clone()).collect();
        for i in 0..o.state.moves.len() {
            let m = &o.state.moves[i];
            if !m.evicted || m.landed.is_some() {
                continue;
            }
            let bound = |p: &&Arc<Pod>| {
                p.metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|r| r.uid == o.uid)
                    && p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_some_and(|n| !n.is_empty())
            };
            let steered = pods
                .iter()
                .filter(bound)
                .find(|p| replaces(p).as_deref() == Some(m.uid.as_str()));
            let replacement = steered.or_else(|| {
                pods.iter()
                    .filter(bound)
                    .filter(|p| {
                        p.metadata
                            .creation_timestamp
                            .as_ref()
                            .is_some_and(|t| t.0.as_second() >= m.at)
                            && replaces(p).is_none_or(|u| !claimed.contains(&u))
                    })
                    .min_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            let landed = match replacement {
                Some(p) => {
                    let node = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .unwrap_or_default();
                    let zone: Option<&ZoneId> = nodes.get(node).and_then(|n| n.zone.zone.as_ref());
                    let l = if zone == Some(&m.to) {
                        Landing::Planned
                    } else {
                        Landing::Elsewhere
                    };
                    let how = if steered.is_some() {
                        "steered there by the gate webhook"
                    } else {
                        "not steered"
                    };
                    tracing::info!(pod = %pod_key(p), owner = %o.key(), planned = %m.to, node, landed = l.as_str(), steered = steered.is_some(), "replacement of a migrated pod bound");
                    if !self.settings.dry_run {
                        let zone =
                            zone.map_or_else(|| "an unknown zone".to_owned(), ToString::to_string);
                        let note = match l {
                            Landing::Planned => format!(
                                "replaces {} (moved {} → {}): landed on {node} in {zone} as planned ({how})",
                                m.pod, m.from, m.to
                            ),
                            _ => format!(
                                "replaces {} (moved {} → {}): landed on {node} in {zone}, not in the planned zone ({how})",
                                m.pod, m.from, m.to
                            ),
                        };
                        self.events
                            .emit(p, EventType::Normal, "MigrationLanded", "Land", note);
                    }
                    Some(l)
                }
                None if now - m.at > self.settings.landing_timeout_seconds => {
                    Some(Landing::NotSeen)
                }
                None => None,
            };
            if let Some(l) = landed {
                self.metrics.landing(l.as_str());
                o.state.moves[i].landed = Some(l);
                changed = true;
            }
        }
        if changed && let Err(e) = self.write_owner(o).await {
            tracing::warn!(owner = %o.key(), error = %e, "updating the owner's migration record failed; retrying next cycle");
        }
        changed
    }
}

/// The Event action of a skip (Events with the same reason and action are
/// merged into one series, keeping the first note).
fn skip_action(label: &str) -> &'static str {
    match label {
        "blocked_pdb" => "Evict",
        "capped" => "Cap",
        "skipped_dwell" => "Dwell",
        "skipped_stale_data" => "CheckData",
        "skipped_no_target" => "FindTarget",
        "skipped_not_worth_it" => "WeighCost",
        "skipped_ping_pong" => "AvoidPingPong",
        "skipped_deadline" => "CheckDeadline",
        _ => "Decide",
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Merge-patches an owner (ReplicaSet, StatefulSet or Job); returns its metadata.
async fn patch_meta(
    c: &kube::Client,
    kind: &str,
    ns: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<ObjectMeta, kube::Error> {
    let pp = patch_params();
    let c = c.clone();
    match kind {
        "ReplicaSet" => Api::<ReplicaSet>::namespaced(c, ns)
            .patch(name, &pp, &Patch::Merge(patch))
            .await
            .map(|x| x.metadata),
        "StatefulSet" => Api::<StatefulSet>::namespaced(c, ns)
            .patch(name, &pp, &Patch::Merge(patch))
            .await
            .map(|x| x.metadata),
        _ => Api::<Job>::namespaced(c, ns)
            .patch(name, &pp, &Patch::Merge(patch))
            .await
            .map(|x| x.metadata),
    }
}

/// Reads an owner's metadata.
async fn get_meta(
    c: &kube::Client,
    kind: &str,
    ns: &str,
    name: &str,
) -> Result<ObjectMeta, kube::Error> {
    let c = c.clone();
    match kind {
        "ReplicaSet" => Api::<ReplicaSet>::namespaced(c, ns)
            .get(name)
            .await
            .map(|x| x.metadata),
        "StatefulSet" => Api::<StatefulSet>::namespaced(c, ns)
            .get(name)
            .await
            .map(|x| x.metadata),
        _ => Api::<Job>::namespaced(c, ns)
            .get(name)
            .await
            .map(|x| x.metadata),
    }
}

/// Managed fields are never read: not cached.
fn drop_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

fn owner_of_uid(uid: &str, meta: &ObjectMeta, replicas: Option<i32>) -> Option<OwnerEntry> {
    OwnerEntry::from_meta("ReplicaSet", meta, replicas).filter(|e| e.uid == uid)
}

/// Runs the migrator until `shutdown` resolves. `evict_client` must not
/// retry HTTP 429 by itself (see [`Evictor::new`]).
pub async fn run_migrator(
    client: kube::Client,
    evict_client: kube::Client,
    settings: MigratorSettings,
    metrics: MigratorMetrics,
    readiness: Readiness,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    for name in ["pods", "nodes", "namespaces", "replicasets", "snapshot"] {
        readiness.register(name);
    }
    if settings.overrides_configmap.is_some() {
        readiness.register("overrides");
    }
    let new_snapshot = Arc::new(Notify::new());
    let (pods, pod_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let (namespaces, ns_writer) = reflector::store();
    let (replicasets, rs_writer) = reflector::store();
    let snapshot = Arc::new(RwLock::new(SnapshotState::default()));
    let (pod_api, rs_api) = match &settings.pod_namespace {
        Some(ns) => (
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<ReplicaSet>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<Pod>::all(client.clone()),
            Api::<ReplicaSet>::all(client.clone()),
        ),
    };
    let mut tasks = vec![
        tokio::spawn(reflect(
            pod_api,
            pod_writer,
            readiness.clone(),
            "pods",
            if settings.trim_pods {
                trim_pod as fn(&mut Pod)
            } else {
                |_: &mut Pod| {}
            },
        )),
        tokio::spawn(reflect(
            Api::<Node>::all(client.clone()),
            node_writer,
            readiness.clone(),
            "nodes",
            drop_managed_fields::<Node>,
        )),
        tokio::spawn(reflect(
            Api::<Namespace>::all(client.clone()),
            ns_writer,
            readiness.clone(),
            "namespaces",
            drop_managed_fields::<Namespace>,
        )),
        tokio::spawn(reflect(
            rs_api,
            rs_writer,
            readiness.clone(),
            "replicasets",
            drop_managed_fields::<ReplicaSet>,
        )),
        tokio::spawn(watch_snapshot(
            client.clone(),
            settings.snapshot_namespace.clone(),
            settings.snapshot_name.clone(),
            snapshot.clone(),
            readiness.clone(),
            new_snapshot.clone(),
            metrics.snapshot_errors.clone(),
        )),
    ];
    let overrides = OverrideState::default();
    if let Some(name) = &settings.overrides_configmap {
        tasks.push(tokio::spawn(watch_overrides(
            client.clone(),
            settings.snapshot_namespace.clone(),
            name.clone(),
            settings.migration.clone(),
            OverrideSink {
                state: overrides.clone(),
                readiness: readiness.clone(),
                metrics: metrics.overrides.clone(),
                changed: new_snapshot.clone(),
            },
        )));
    }
    let (mut leader, lease) =
        carbon_kube_k8s::leader::elect(client.clone(), settings.leader.as_ref()).await?;
    let mut m = Migrator {
        evictor: Evictor::new(evict_client, settings.dry_run),
        events: Events {
            recorder: (settings.events && !settings.dry_run)
                .then(|| Recorder::new(client.clone(), FIELD_MANAGER.into())),
        },
        client,
        metrics,
        clock,
        caches: Caches {
            pods,
            nodes,
            namespaces,
            replicasets,
            snapshot,
            new_snapshot,
        },
        overlay: HashMap::new(),
        last_skip: HashMap::new(),
        overrides,
        in_force: None,
        settings,
    };
    tokio::pin!(shutdown);
    let mut was_leader = false;
    let mut next = Instant::now();
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {},
            () = m.caches.new_snapshot.notified() => {},
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
            m.overlay.clear();
        }
        m.metrics.leader.set(i64::from(is_leader));
        if !is_leader || !readiness.waiting().is_empty() {
            next = Instant::now() + Duration::from_millis(500);
            continue;
        }
        m.cycle(&leader).await;
        next = Instant::now() + m.settings.interval;
        tokio::time::sleep(m.settings.min_interval).await;
    }
    lease.release(leader).await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}
