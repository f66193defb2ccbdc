//! The safe core behind the C ABI: a [`Policy`] handle holding the carbon
//! snapshot, the placement settings and the interned node zones, answering
//! one filter and one score call per pod with `carbon-kube-policy`'s
//! [`filter_nodes`] and [`score_nodes`] over every candidate at once.
//!
//! Nothing here decides anything: it converts the plugin's plain inputs into
//! the policy's views and the policy's outcomes into plain outputs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use carbon_kube_model::{Snapshot, UnixSeconds};
use carbon_kube_policy::placement::{
    Candidate, DecisionSummary, FilterOutcome, NoGreenNode, NotApplied, PlacementConfig,
    PlacementConfigRaw, PodView, filter_nodes, score_nodes,
};
use carbon_kube_policy::zone_map::{
    NodeView, RegionZoneMap, Resources, UnknownZone, ZoneResolution, node_zone,
};
use serde::{Deserialize, Serialize};

/// Zone handle of a node the plugin has not resolved (neutral).
pub const ZONE_NOT_SEEN: u32 = 0;

/// Decisions kept for pods not bound yet, at most (then the oldest half goes).
const MAX_DECISIONS: usize = 20_000;

/// The plugin's settings (the plugin args of the `KubeSchedulerConfiguration`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyArgs {
    /// Base placement settings; the `carbon-kube-config` ConfigMap's keys go on top.
    #[serde(default)]
    pub placement: PlacementConfigRaw,
    /// The operator's region → zone map (`aws/us-east-1: US-MIDA-PJM`).
    #[serde(default)]
    pub region_zones: BTreeMap<String, String>,
}

/// A node as the plugin sees it when it changes: what its zone depends on.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInput {
    /// Node name (for explanations only).
    #[serde(default)]
    pub name: String,
    /// Node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `spec.providerID`.
    #[serde(default)]
    pub provider_id: Option<String>,
}

/// The pod being scheduled.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInput {
    /// `metadata.uid`: the key of the decision kept until the pod is bound.
    #[serde(default)]
    pub uid: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Annotations (the plugin sends only `carbon-kube.io/*`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Requested CPU, millicores (kube-scheduler's own pod request sum).
    #[serde(default)]
    pub cpu_millis: i64,
    /// Requested memory, bytes.
    #[serde(default)]
    pub memory_bytes: i64,
}

impl PodInput {
    fn view(&self) -> PodView {
        PodView {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            annotations: self.annotations.clone(),
            requests: Resources::new(self.cpu_millis, self.memory_bytes),
        }
    }
}

/// One candidate node of a call: its zone handle (from [`Policy::node_zone`])
/// and its resources as kube-scheduler accounts them this cycle.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CkNode {
    /// Zone handle; [`ZONE_NOT_SEEN`] (or any unknown handle) is neutral.
    pub zone: u32,
    /// Allocatable CPU, millicores.
    pub allocatable_cpu_millis: i64,
    /// Allocatable memory, bytes.
    pub allocatable_memory_bytes: i64,
    /// CPU requested by the pods on the node, millicores.
    pub requested_cpu_millis: i64,
    /// Memory requested by the pods on the node, bytes.
    pub requested_memory_bytes: i64,
}

/// What a filter call reports besides the per-node verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterReport {
    /// The decision's outcome, as in `carbon_kube_scheduler_decisions_total`:
    /// `applied`, `failed_open`, `rejected`, `opted_out` or `no_data`.
    pub outcome: &'static str,
    /// Failure messages; a node whose verdict is `k > 0` failed with
    /// `messages[k - 1]`.
    pub messages: Vec<String>,
    /// One line explaining the decision, for the debug log.
    pub summary: String,
    /// Pod annotations that were present but unreadable.
    pub annotation_errors: Vec<String>,
}

/// What a score call reports besides the scores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreReport {
    /// `applied`, `opted_out` or `no_data`.
    pub outcome: &'static str,
    /// Why the best node got its score, for the debug log.
    pub best: String,
}

/// The Event to write once the pod is bound, when carbon decided its zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LandingEvent {
    /// `CarbonAwarePlacement` or `CarbonThresholdFailedOpen`.
    pub reason: &'static str,
    /// The Event's note (without the node, which the caller appends).
    pub note: String,
}

/// What a snapshot update reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotReport {
    /// Zones loaded.
    pub zones: usize,
    /// Zones ignored, with why.
    pub ignored: Vec<String>,
    /// Each zone's current value, for the carbon-data gauges.
    pub records: Vec<ZoneValue>,
}

/// One zone of the snapshot, as the carbon-data gauges show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZoneValue {
    /// Zone id.
    pub zone: String,
    /// Data source.
    pub source: String,
    /// Intensity, g/kWh.
    pub g_per_kwh: f64,
    /// When it was measured, Unix seconds.
    pub timestamp: UnixSeconds,
}

#[derive(Clone, Debug, Default)]
struct Decision {
    summary: DecisionSummary,
    failed_open: Option<String>,
    at: UnixSeconds,
}

/// The policy handle.
#[derive(Debug)]
pub struct Policy {
    base: PlacementConfigRaw,
    region_map: RegionZoneMap,
    snapshot: RwLock<Arc<Snapshot>>,
    config: RwLock<Arc<PlacementConfig>>,
    /// Distinct zone resolutions; a node's zone handle is its index here.
    zones: RwLock<Vec<ZoneResolution>>,
    decisions: Mutex<HashMap<String, Decision>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Policy {
    /// A handle from the plugin args (JSON of [`PolicyArgs`]); reports every
    /// invalid field with its path.
    pub fn new(args_json: &str) -> Result<Self, String> {
        let args: PolicyArgs = if args_json.trim().is_empty() {
            PolicyArgs::default()
        } else {
            serde_json::from_str(args_json).map_err(|e| format!("plugin args: {e}"))?
        };
        let config = args
            .placement
            .validate_over(&PlacementConfig::default(), "args.placement.")
            .map_err(|e| format!("invalid plugin args: {e}"))?;
        let region_map = RegionZoneMap::from_entries(
            args.region_zones
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|errors| {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("invalid plugin args: args.{}", all.join("; args."))
        })?;
        Ok(Self {
            base: args.placement,
            region_map,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            config: RwLock::new(Arc::new(config)),
            zones: RwLock::new(vec![ZoneResolution::unknown(UnknownZone::NotSeen)]),
            decisions: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the snapshot with the content of the snapshot ConfigMap's key
    /// (`None` or empty: the ConfigMap is absent, carbon is not applied). A
    /// snapshot that is not JSON is rejected and the previous one stays;
    /// bad zones are skipped and reported.
    pub fn set_snapshot(&self, json: Option<&str>) -> Result<SnapshotReport, String> {
        let snapshot = match json.filter(|j| !j.trim().is_empty()) {
            None => (Snapshot::default(), Vec::new()),
            Some(j) => Snapshot::parse_lenient(j).map_err(|e| format!("snapshot: {e}"))?,
        };
        let report = SnapshotReport {
            zones: snapshot.0.zones.len(),
            ignored: snapshot.1.iter().map(ToString::to_string).collect(),
            records: snapshot
                .0
                .zones
                .iter()
                .map(|(z, r)| ZoneValue {
                    zone: z.as_str().to_owned(),
                    source: r.source.to_string(),
                    g_per_kwh: r.carbon_intensity.g_per_kwh(),
                    timestamp: r.timestamp,
                })
                .collect(),
        };
        *write(&self.snapshot) = Arc::new(snapshot.0);
        Ok(report)
    }

    /// Applies the `carbon-kube-config` ConfigMap's data over the plugin
    /// args (`None`: the ConfigMap is absent, the args alone apply). A bad
    /// override is rejected whole and the previous settings stay.
    pub fn set_config(&self, data: Option<&BTreeMap<String, String>>) -> Result<(), String> {
        let empty = BTreeMap::new();
        let prefix = "ConfigMap carbon-kube-config: ";
        let (raw, _unknown) = PlacementConfigRaw::from_string_map(data.unwrap_or(&empty), prefix)
            .map_err(|e| e.to_string())?;
        let cfg = self
            .base
            .clone()
            .overlay(&raw)
            .validate_over(&PlacementConfig::default(), prefix)
            .map_err(|e| e.to_string())?;
        *write(&self.config) = Arc::new(cfg);
        Ok(())
    }

    /// The effective settings.
    pub fn config(&self) -> Arc<PlacementConfig> {
        read(&self.config).clone()
    }

    /// Resolves a node's zone (call when the node is added or its labels or
    /// provider id change) and returns its zone handle. Nodes with the same
    /// resolution share a handle.
    pub fn node_zone(&self, node: &NodeInput) -> u32 {
        let view = NodeView {
            name: node.name.clone(),
            labels: node.labels.clone(),
            provider_id: node.provider_id.clone(),
            ..NodeView::default()
        };
        let zone = node_zone(&view, &self.region_map);
        if let Some(i) = read(&self.zones).iter().position(|z| *z == zone) {
            return u32::try_from(i).unwrap_or(ZONE_NOT_SEEN);
        }
        let mut zones = write(&self.zones);
        let i = match zones.iter().position(|z| *z == zone) {
            Some(i) => i,
            None => {
                zones.push(zone);
                zones.len() - 1
            }
        };
        u32::try_from(i).unwrap_or(ZONE_NOT_SEEN)
    }

    /// The zone id of a handle (`None`: unknown zone).
    pub fn zone_name(&self, handle: u32) -> Option<String> {
        let zones = read(&self.zones);
        let z = zones.get(usize::try_from(handle).ok()?)?;
        z.zone.as_ref().map(|z| z.as_str().to_owned())
    }

    /// Filters the candidates: `verdicts[i]` is 0 when node `i` passes, or
    /// `k > 0` when it fails with `report.messages[k - 1]`.
    ///
    /// # Panics
    /// Never on input: `verdicts` shorter than `nodes` is an error.
    pub fn filter(
        &self,
        pod: &PodInput,
        nodes: &[CkNode],
        now: UnixSeconds,
        verdicts: &mut [u32],
    ) -> Result<FilterReport, String> {
        self.filter_explaining(pod, nodes, now, verdicts, true)
    }

    /// [`Policy::filter`]; with `explain` false the report's `summary` (a
    /// line for the debug log) is left empty, so that it is formatted only
    /// when it will be logged. The decision and the failure messages are
    /// the same.
    pub fn filter_explaining(
        &self,
        pod: &PodInput,
        nodes: &[CkNode],
        now: UnixSeconds,
        verdicts: &mut [u32],
        explain: bool,
    ) -> Result<FilterReport, String> {
        if verdicts.len() < nodes.len() {
            return Err("verdict buffer shorter than the node list".into());
        }
        let snapshot = read(&self.snapshot).clone();
        let cfg = self.config();
        let zones = read(&self.zones);
        let views = views(nodes);
        let candidates = candidates(nodes, &views, &zones);
        let view = pod.view();
        let outcome = filter_nodes(&view, &candidates, &snapshot, &cfg, now);
        let mut message_of_zone: Vec<u32> = vec![0; outcome.zones.len()];
        let mut messages = Vec::new();
        for (slot, v) in verdicts.iter_mut().zip(&outcome.verdicts) {
            *slot = if v.verdict.passes() {
                0
            } else {
                let k = &mut message_of_zone[v.zone];
                if *k == 0 {
                    messages.push(outcome.zone_failure_message(v.zone));
                    *k = u32::try_from(messages.len()).unwrap_or(u32::MAX);
                }
                *k
            };
        }
        let report = FilterReport {
            outcome: filter_outcome_label(&outcome),
            messages,
            summary: if explain {
                outcome.summary()
            } else {
                String::new()
            },
            annotation_errors: outcome
                .pod
                .annotation_errors
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        let mut summary = DecisionSummary::default();
        if summary.record_filter(&outcome) {
            let failed_open = match outcome.no_green_node {
                Some(NoGreenNode::FailedOpen { cleanest_zone }) => Some(format!(
                    "no candidate zone is at or below the threshold of {}; scheduled anyway (failing open; cleanest candidate: {})",
                    outcome.pod.threshold, outcome.zones[cleanest_zone]
                )),
                _ => None,
            };
            self.record(&pod.uid, now, |d| {
                d.summary = summary;
                d.failed_open = failed_open;
            });
        }
        Ok(report)
    }

    /// Scores the candidates 0–10 into `scores`.
    pub fn score(
        &self,
        pod: &PodInput,
        nodes: &[CkNode],
        now: UnixSeconds,
        scores: &mut [u8],
    ) -> Result<ScoreReport, String> {
        self.score_explaining(pod, nodes, now, scores, true)
    }

    /// [`Policy::score`]; with `explain` false the report's `best` (a line
    /// for the debug log) is left empty. The scores are the same.
    pub fn score_explaining(
        &self,
        pod: &PodInput,
        nodes: &[CkNode],
        now: UnixSeconds,
        scores: &mut [u8],
        explain: bool,
    ) -> Result<ScoreReport, String> {
        if scores.len() < nodes.len() {
            return Err("score buffer shorter than the node list".into());
        }
        let snapshot = read(&self.snapshot).clone();
        let cfg = self.config();
        let zones = read(&self.zones);
        let views = views(nodes);
        let candidates = candidates(nodes, &views, &zones);
        let view = pod.view();
        let outcome = score_nodes(&view, &candidates, &snapshot, &cfg, now);
        for (slot, s) in scores.iter_mut().zip(&outcome.scores) {
            *slot = s.score;
        }
        let outcome_label = match outcome.not_applied {
            Some(NotApplied::OptedOut) => "opted_out",
            Some(_) => "no_data",
            None => "applied",
        };
        let best = if explain {
            outcome
                .scores
                .iter()
                .enumerate()
                .max_by_key(|(_, s)| s.score)
                .map(|(i, _)| outcome.reason(i))
                .unwrap_or_default()
        } else {
            String::new()
        };
        if outcome.not_applied.is_none() {
            self.record(&pod.uid, now, |d| {
                d.summary.record_scores(&outcome);
            });
        }
        Ok(ScoreReport {
            outcome: outcome_label,
            best,
        })
    }

    /// Once the pod is bound to a node of zone handle `zone`: the Event to
    /// write, when carbon decided where it landed. Forgets the pod.
    pub fn landing(&self, uid: &str, zone: u32) -> Option<LandingEvent> {
        let decision = self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid)?;
        let zones = read(&self.zones);
        let zone_id = usize::try_from(zone)
            .ok()
            .and_then(|i| zones.get(i))
            .and_then(|z| z.zone.as_ref());
        match decision.summary.landing(zone_id) {
            Some(l) => Some(LandingEvent {
                reason: "CarbonAwarePlacement",
                note: l.to_string(),
            }),
            None => decision.failed_open.map(|note| LandingEvent {
                reason: "CarbonThresholdFailedOpen",
                note,
            }),
        }
    }

    /// Forgets a pod's decision (it was deleted or failed to bind).
    pub fn forget(&self, uid: &str) {
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
    }

    fn record(&self, uid: &str, now: UnixSeconds, update: impl FnOnce(&mut Decision)) {
        if uid.is_empty() {
            return;
        }
        let mut decisions = self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if decisions.len() >= MAX_DECISIONS && !decisions.contains_key(uid) {
            // Pods that never bound: drop the older half.
            let mut ages: Vec<UnixSeconds> = decisions.values().map(|d| d.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            decisions.retain(|_, d| d.at > cut);
        }
        let d = decisions.entry(uid.to_owned()).or_default();
        d.at = now;
        update(d);
    }
}

/// The policy's node views: only resources (names and labels are not read
/// by the decisions; the zone comes resolved), so no allocation per node.
fn views(nodes: &[CkNode]) -> Vec<NodeView> {
    nodes
        .iter()
        .map(|n| NodeView {
            allocatable: Resources::new(n.allocatable_cpu_millis, n.allocatable_memory_bytes),
            requested: Resources::new(n.requested_cpu_millis, n.requested_memory_bytes),
            ..NodeView::default()
        })
        .collect()
}

fn candidates<'a>(
    nodes: &[CkNode],
    views: &'a [NodeView],
    zones: &'a [ZoneResolution],
) -> Vec<Candidate<'a>> {
    let not_seen = &zones[ZONE_NOT_SEEN as usize];
    nodes
        .iter()
        .zip(views)
        .map(|(n, node)| Candidate {
            node,
            zone: usize::try_from(n.zone)
                .ok()
                .and_then(|i| zones.get(i))
                .unwrap_or(not_seen),
        })
        .collect()
}

/// The outcome label, as the extender's `carbon_kube_scheduler_decisions_total`.
fn filter_outcome_label(outcome: &FilterOutcome<'_>) -> &'static str {
    match (outcome.not_applied, outcome.no_green_node) {
        (Some(NotApplied::OptedOut), _) => "opted_out",
        (Some(_), _) => "no_data",
        (None, Some(NoGreenNode::FailedOpen { .. })) => "failed_open",
        (None, Some(NoGreenNode::Rejected { .. })) => "rejected",
        (None, None) => "applied",
    }
}
