//! What requests read: the node cache (with each node's zone resolved once
//! and its requested resources summed from the pods bound to it), the carbon
//! snapshot and the placement settings. Background tasks write them; request
//! handlers only read.

use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use carbon_kube_k8s::Readiness;
use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId};
use carbon_kube_policy::placement::{DecisionSummary, PlacementConfig, PlacementConfigRaw};
use carbon_kube_policy::zone_map::{NodeView, RegionZoneMap, Resources, ZoneResolution, node_zone};

use crate::metrics::Metrics;

/// A node as cached: its view and its resolved zone.
#[derive(Clone, Debug)]
pub struct CachedNode {
    /// The node (with `requested` kept up to date from the pod watch).
    pub view: NodeView,
    /// Its zone, shared by every cached node with the same resolution (see
    /// [`NodeCache`]).
    pub zone: Arc<ZoneResolution>,
}

/// The cached nodes, laid out for the request path: the nodes sit in one
/// dense vector (a request reads every candidate's zone and resources, so
/// they should not be scattered over a hash table of large entries), found by
/// name through a small index, and nodes with the same zone resolution share
/// one copy of it, so the policy's per-node zone comparison reads memory that
/// stays in cache and mostly compares pointers.
#[derive(Debug, Default)]
pub struct NodeCache {
    /// The nodes, in no particular order.
    slots: Vec<CachedNode>,
    /// Slot of each node, by name.
    index: HashMap<Box<str>, usize>,
    /// The distinct zone resolutions in use (and some no longer in use until
    /// the next prune).
    zones: Vec<Arc<ZoneResolution>>,
    /// Length of `zones` after the last prune.
    zones_pruned_len: usize,
}

impl NodeCache {
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The node named `name`.
    pub fn get(&self, name: &str) -> Option<&CachedNode> {
        self.slot_of(name).and_then(|i| self.slots.get(i))
    }

    /// The slot of the node named `name`, for [`NodeCache::slot`].
    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The node in slot `i` (from [`NodeCache::slot_of`]; slots change when
    /// nodes are added or removed).
    pub fn slot(&self, i: usize) -> Option<&CachedNode> {
        self.slots.get(i)
    }

    /// Every node, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &CachedNode> {
        self.slots.iter()
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut CachedNode> {
        let i = self.slot_of(name)?;
        self.slots.get_mut(i)
    }

    /// The shared copy of `zone`.
    fn intern(&mut self, zone: ZoneResolution) -> Arc<ZoneResolution> {
        if let Some(z) = self.zones.iter().find(|z| ***z == zone) {
            return z.clone();
        }
        // Forget resolutions no node uses any more once they could be many.
        if self.zones.len() >= 2 * self.zones_pruned_len + 64 {
            self.zones.retain(|z| Arc::strong_count(z) > 1);
            self.zones_pruned_len = self.zones.len();
        }
        let z = Arc::new(zone);
        self.zones.push(z.clone());
        z
    }

    fn insert(&mut self, view: NodeView, zone: ZoneResolution) {
        let node = CachedNode {
            zone: self.intern(zone),
            view,
        };
        if let Some(i) = self.slot_of(&node.view.name)
            && let Some(slot) = self.slots.get_mut(i)
        {
            *slot = node;
            return;
        }
        self.index
            .insert(node.view.name.as_str().into(), self.slots.len());
        self.slots.push(node);
    }

    fn remove(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        if i >= self.slots.len() {
            return;
        }
        self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i)
            && let Some(slot) = self.index.get_mut(moved.view.name.as_str())
        {
            *slot = i;
        }
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
        self.zones.clear();
        self.zones_pruned_len = 0;
    }

    fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
        self.index.reserve(additional);
    }
}

/// A bound pod's contribution to its node's requested resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundPod {
    /// Node it is bound to.
    pub node: Arc<str>,
    /// Its requests.
    pub requests: Resources,
}

/// Nodes and the pods bound to them.
#[derive(Debug, Default)]
pub struct Cluster {
    /// The cached nodes.
    pub nodes: NodeCache,
    /// Bound pods by UID.
    pods: HashMap<String, BoundPod>,
    /// Requested resources by node name, including nodes not cached yet.
    requested: HashMap<Arc<str>, Resources>,
}

impl Cluster {
    /// Adds or updates a node, keeping its requested resources.
    pub fn upsert_node(&mut self, mut view: NodeView, map: &RegionZoneMap) {
        view.requested = self
            .requested
            .get(view.name.as_str())
            .copied()
            .unwrap_or_default();
        let zone = node_zone(&view, map);
        self.nodes.insert(view, zone);
    }

    /// Removes a node.
    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// Replaces every node (after a relist).
    pub fn replace_nodes(&mut self, views: Vec<NodeView>, map: &RegionZoneMap) {
        self.nodes.clear();
        self.nodes.reserve(views.len());
        for v in views {
            self.upsert_node(v, map);
        }
    }

    fn add_requested(&mut self, node: &Arc<str>, r: Resources, sign: i64) {
        let signed = Resources::new(r.cpu_millis * sign, r.memory_bytes * sign);
        let total = self.requested.entry(node.clone()).or_default();
        *total = total.saturating_add(signed);
        let total = *total;
        if total == Resources::default() {
            self.requested.remove(node);
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.view.requested = total;
        }
    }

    /// Records that pod `uid` is bound to `node` with `requests`.
    pub fn upsert_pod(&mut self, uid: &str, node: &str, requests: Resources) {
        if let Some(old) = self.pods.get(uid) {
            if &*old.node == node && old.requests == requests {
                return;
            }
            self.remove_pod(uid);
        }
        let node: Arc<str> = match self.requested.get_key_value(node) {
            Some((k, _)) => k.clone(),
            None => Arc::from(node),
        };
        self.add_requested(&node, requests, 1);
        self.pods
            .insert(uid.to_owned(), BoundPod { node, requests });
    }

    /// Forgets pod `uid` (deleted, finished or unbound).
    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            self.add_requested(&old.node, old.requests, -1);
        }
    }

    /// Replaces every pod (after a relist).
    pub fn replace_pods(&mut self, pods: Vec<(String, String, Resources)>) {
        self.pods.clear();
        self.requested.clear();
        for n in &mut self.nodes.slots {
            n.view.requested = Resources::default();
        }
        for (uid, node, r) in pods {
            self.upsert_pod(&uid, &node, r);
        }
    }

    /// Number of bound pods tracked.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Requested resources on a node (zero when unknown).
    pub fn requested_on(&self, node: &str) -> Resources {
        self.requested.get(node).copied().unwrap_or_default()
    }

    /// Zone of a cached node.
    pub fn zone_of(&self, node: &str) -> Option<&ZoneId> {
        self.nodes.get(node).and_then(|n| n.zone.zone.as_ref())
    }
}

/// What carbon decided for one pod, kept until the pod is bound.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// The summary of filter and score decisions.
    pub summary: DecisionSummary,
    /// The filter failed open: no candidate zone was below the threshold.
    pub failed_open: Option<String>,
}

/// Clock used by the handlers (overridable in tests).
pub type Clock = Arc<dyn Fn() -> UnixSeconds + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    })
}

/// Everything the handlers and background tasks share.
pub struct Shared {
    /// Nodes and bound pods.
    pub cluster: RwLock<Cluster>,
    /// The carbon snapshot.
    pub snapshot: RwLock<Arc<Snapshot>>,
    /// Settings from flags and the config file.
    pub base_config: PlacementConfigRaw,
    /// Effective settings (base with the runtime overrides laid on top).
    pub config: RwLock<Arc<PlacementConfig>>,
    /// `validUntil` of the override in force, if it has one: past it, the
    /// settings fall back to the base ([`Shared::expire_overrides`]).
    pub override_valid_until: RwLock<Option<UnixSeconds>>,
    /// Operator region → zone map.
    pub region_map: RegionZoneMap,
    /// Decisions awaiting the pod's binding, by pod UID.
    pub decisions: moka::sync::Cache<String, Arc<Decision>>,
    /// Whether decisions are kept for Events.
    pub record_decisions: bool,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness checks.
    pub readiness: Readiness,
    /// The clock.
    pub clock: Clock,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the data is still consistent
    // because writers only swap whole values or update counters.
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Shared state with the given base settings.
    pub fn new(
        base_config: PlacementConfigRaw,
        config: PlacementConfig,
        region_map: RegionZoneMap,
        metrics: Metrics,
        readiness: Readiness,
        clock: Clock,
    ) -> Self {
        metrics.observe_settings(&config);
        Self {
            cluster: RwLock::new(Cluster::default()),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            base_config,
            config: RwLock::new(Arc::new(config)),
            override_valid_until: RwLock::new(None),
            region_map,
            decisions: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
            record_decisions: true,
            metrics,
            readiness,
            clock,
        }
    }

    /// Falls back to the base settings once the override in force has
    /// passed its `validUntil`. Returns whether it did.
    pub fn expire_overrides(&self, now: UnixSeconds) -> bool {
        let until = *read(&self.override_valid_until);
        if until.is_none_or(|t| now <= t) {
            return false;
        }
        *write(&self.override_valid_until) = None;
        match self
            .base_config
            .validate_over(&PlacementConfig::default(), "")
        {
            Ok(cfg) => {
                tracing::info!(
                    valid_until = until,
                    "carbon-kube-config override expired (validUntil); back to the static settings"
                );
                self.set_config(cfg);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "static settings invalid; keeping the expired override");
                false
            }
        }
    }

    /// Read access to the cluster cache.
    pub fn cluster(&self) -> RwLockReadGuard<'_, Cluster> {
        read(&self.cluster)
    }

    /// Write access to the cluster cache.
    pub fn cluster_mut(&self) -> RwLockWriteGuard<'_, Cluster> {
        write(&self.cluster)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        read(&self.snapshot).clone()
    }

    /// Replaces the snapshot and updates the data gauges.
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        let now = (self.clock)();
        self.metrics.snapshot.observe(&snapshot, now);
        *write(&self.snapshot) = Arc::new(snapshot);
    }

    /// The effective settings.
    pub fn config(&self) -> Arc<PlacementConfig> {
        read(&self.config).clone()
    }

    /// Replaces the effective settings.
    pub fn set_config(&self, cfg: PlacementConfig) {
        self.metrics.observe_settings(&cfg);
        *write(&self.config) = Arc::new(cfg);
    }

    /// Now, from the clock.
    pub fn now(&self) -> UnixSeconds {
        (self.clock)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node<'c>(c: &'c Cluster, name: &str) -> &'c NodeView {
        &c.nodes.get(name).expect("cached").view
    }

    #[test]
    fn requested_follows_pods_in_any_order() {
        let mut c = Cluster::default();
        let map = RegionZoneMap::default();
        c.upsert_pod("a", "n1", Resources::new(500, 100));
        c.upsert_node(
            NodeView {
                name: "n1".into(),
                ..NodeView::default()
            },
            &map,
        );
        assert_eq!(node(&c, "n1").requested, Resources::new(500, 100));
        c.upsert_pod("b", "n1", Resources::new(250, 50));
        assert_eq!(node(&c, "n1").requested, Resources::new(750, 150));
        c.upsert_pod("a", "n2", Resources::new(500, 100));
        assert_eq!(node(&c, "n1").requested, Resources::new(250, 50));
        assert_eq!(c.requested_on("n2"), Resources::new(500, 100));
        c.remove_pod("b");
        c.remove_pod("b");
        assert_eq!(node(&c, "n1").requested, Resources::default());
        c.replace_pods(vec![("x".into(), "n1".into(), Resources::new(1, 1))]);
        assert_eq!(node(&c, "n1").requested, Resources::new(1, 1));
        assert_eq!(c.requested_on("n2"), Resources::default());
        assert_eq!(c.pod_count(), 1);
    }

    fn labelled(name: &str, zone: &str) -> NodeView {
        NodeView {
            name: name.into(),
            labels: [(
                carbon_kube_model::keys::LABEL_GRID_ZONE.to_owned(),
                zone.to_owned(),
            )]
            .into(),
            ..NodeView::default()
        }
    }

    #[test]
    fn node_cache_finds_nodes_after_updates_and_removals() {
        let mut c = Cluster::default();
        let map = RegionZoneMap::default();
        for (n, z) in [("a", "DE"), ("b", "GB"), ("c", "DE"), ("d", "FR")] {
            c.upsert_node(labelled(n, z), &map);
        }
        c.upsert_node(labelled("b", "DE"), &map);
        assert_eq!(c.nodes.len(), 4);
        c.remove_node("a");
        c.remove_node("a");
        c.remove_node("zz");
        assert_eq!(c.nodes.len(), 3);
        assert!(c.nodes.get("a").is_none());
        for (n, z) in [("b", "DE"), ("c", "DE"), ("d", "FR")] {
            let node = c.nodes.get(n).expect("cached");
            assert_eq!(node.view.name, n);
            assert_eq!(c.zone_of(n).map(ZoneId::as_str), Some(z));
            let slot = c.nodes.slot_of(n).expect("indexed");
            assert_eq!(c.nodes.slot(slot).map(|s| s.view.name.as_str()), Some(n));
        }
        // Same resolution, one shared copy.
        let (b, cc) = (c.nodes.get("b"), c.nodes.get("c"));
        assert!(Arc::ptr_eq(
            &b.expect("cached").zone,
            &cc.expect("cached").zone
        ));
        assert_eq!(c.nodes.iter().count(), 3);
        c.replace_nodes(vec![labelled("e", "GB")], &map);
        assert_eq!(c.nodes.len(), 1);
        assert!(c.nodes.get("b").is_none());
        assert_eq!(c.zone_of("e").map(ZoneId::as_str), Some("GB"));
    }

    #[test]
    fn unused_zone_resolutions_are_pruned() {
        let mut c = Cluster::default();
        let map = RegionZoneMap::default();
        // One node relabelled through many zones keeps few resolutions.
        for i in 0..1000 {
            c.upsert_node(labelled("n", &format!("Z{i}")), &map);
        }
        assert!(c.nodes.zones.len() <= 130, "{}", c.nodes.zones.len());
        assert_eq!(c.zone_of("n").map(ZoneId::as_str), Some("Z999"));
    }
}
