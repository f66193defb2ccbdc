//! Migration: whether moving a running pod to another zone saves more carbon
//! than the move costs, and where to.
//!
//! [`decide_migration`] answers one question per running pod:
//!
//! - **saving** = (forecast average intensity of the source zone over the
//!   pod's remaining run − that of the target zone) × pod power (the
//!   simulator's [`EnergyModel`]) × remaining run (capped at
//!   [`MigrationConfig::horizon_seconds`]);
//! - **cost** = restart energy (pod power × `restartSeconds`, in the target
//!   zone) + lost work (pod power × time since the last checkpoint, redone in
//!   the target zone: all of it for Jobs without checkpoints, nothing for
//!   stateless replicas) + a fixed disruption penalty in grams;
//! - it migrates only when `saving ≥ cost × (1 + margin)` and
//!   `saving − cost ≥ minNetSavingGrams`.
//!
//! Targets are the candidate nodes (already matched to the pod's selector,
//! required affinity and taints by the caller) that have room for the pod's
//! requests ([`fits`]), that pass the same [`filter_nodes`] the extender
//! uses, in a zone other than the source with fresh data and strictly
//! greener (by `minImprovementGPerKwh`) over the run. Nodes of the chosen
//! zone come back ordered by [`score_nodes`].
//!
//! **A move never pushes a pod past its deadline**: with a deadline, the
//! replacement must finish the remaining run, the lost work and the restart
//! before it ([`SkipReason::Deadline`]); a pod with a deadline but no
//! expected remaining run is not moved.
//!
//! It never loops: a pod younger than `minDwellSeconds` (a replacement is a
//! new pod) or moved less than that ago stays ([`SkipReason::Dwell`]); a
//! zone the pod's owner moved *away from* within `ownerMemorySeconds` is not
//! a target, and an owner already moved `maxOwnerMoves` times within that
//! memory stays put ([`SkipReason::PingPong`]).
//!
//! **Stale or missing data never moves anything**: a source zone that is
//! unknown, has no record, or whose record is older than
//! `maxDataAgeSeconds` gives [`SkipReason::StaleData`]; target zones without
//! fresh data are not targets.
//!
//! Which pods may be moved at all (owner kind, opt-in, local storage,
//! system pods) is [`eligibility`], also pure.
//!
//! Pure: no IO, no clock. The migrator and the simulator call it with their
//! own `now`, snapshot and history.

use std::collections::BTreeMap;
use std::fmt;

use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId};
use serde::{Deserialize, Serialize};

use crate::energy::EnergyModel;
use crate::forecast_window::zone_view;
use crate::placement::{Candidate, PlacementConfig, PodView, filter_nodes, score_nodes};
use crate::zone_map::{NodeView, Resources};

/// Tunables of the migration rule. Serialized in camelCase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct MigrationConfig {
    /// Records older than this (or past their `valid_until`) are not used;
    /// a stale source zone means the pod stays.
    pub max_data_age_seconds: i64,
    /// The saving must exceed the cost by this fraction (0.5: saving ≥ 1.5 × cost).
    pub margin: f64,
    /// The saving minus the cost must be at least this many grams CO2e.
    pub min_net_saving_grams: f64,
    /// The target zone's average over the run must be at least this much
    /// lower than the source's, g/kWh ("strictly greener").
    pub min_improvement_g_per_kwh: f64,
    /// Time the replacement takes to start, at full pod power (image pull,
    /// warm-up), seconds: the restart energy.
    pub restart_seconds: i64,
    /// A fixed cost per move, grams CO2e (the operator's price of a disruption).
    pub disruption_penalty_grams: f64,
    /// A pod that started (or was moved) less than this ago stays.
    pub min_dwell_seconds: i64,
    /// How long an owner's moves are remembered, seconds.
    pub owner_memory_seconds: i64,
    /// An owner moved this many times per replica within the memory is not
    /// moved again.
    pub max_owner_moves: u32,
    /// Savings are counted over at most this much of the remaining run
    /// (forecasts beyond it are guesses); also the remaining run assumed for
    /// pods that announce none (long-running replicas).
    pub horizon_seconds: i64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            max_data_age_seconds: 1800,
            margin: 0.5,
            min_net_saving_grams: 1.0,
            min_improvement_g_per_kwh: 20.0,
            restart_seconds: 120,
            disruption_penalty_grams: 2.0,
            min_dwell_seconds: 3600,
            owner_memory_seconds: 6 * 3600,
            max_owner_moves: 3,
            horizon_seconds: 6 * 3600,
        }
    }
}

impl MigrationConfig {
    /// Checks ranges; returns every problem with its field name.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.max_data_age_seconds <= 0 {
            errs.push("maxDataAgeSeconds: must be positive".to_owned());
        }
        if !(self.margin >= 0.0 && self.margin.is_finite()) {
            errs.push("margin: must be a number at least 0".to_owned());
        }
        if !(self.min_net_saving_grams >= 0.0 && self.min_net_saving_grams.is_finite()) {
            errs.push("minNetSavingGrams: must be a number at least 0".to_owned());
        }
        if !(self.min_improvement_g_per_kwh >= 0.0 && self.min_improvement_g_per_kwh.is_finite()) {
            errs.push("minImprovementGPerKwh: must be a number at least 0".to_owned());
        }
        if self.restart_seconds < 0 {
            errs.push("restartSeconds: must not be negative".to_owned());
        }
        if !(self.disruption_penalty_grams >= 0.0 && self.disruption_penalty_grams.is_finite()) {
            errs.push("disruptionPenaltyGrams: must be a number at least 0".to_owned());
        }
        if self.min_dwell_seconds < 0 {
            errs.push("minDwellSeconds: must not be negative".to_owned());
        }
        if self.owner_memory_seconds < 0 {
            errs.push("ownerMemorySeconds: must not be negative".to_owned());
        }
        if self.max_owner_moves == 0 {
            errs.push("maxOwnerMoves: must be at least 1".to_owned());
        }
        if self.horizon_seconds <= 0 {
            errs.push("horizonSeconds: must be positive".to_owned());
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// How a pod's work survives a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// A replica of a ReplicaSet: nothing is lost but the restart.
    Stateless,
    /// A StatefulSet member: state is on its volume; the restart is lost.
    Stateful,
    /// A Job's pod: everything since the last checkpoint (or start) is redone.
    Batch,
}

/// What kind of object owns a pod (its controller owner reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// A ReplicaSet (usually a Deployment's).
    ReplicaSet,
    /// A StatefulSet.
    StatefulSet,
    /// A Job.
    Job,
    /// A DaemonSet.
    DaemonSet,
    /// A Node (a static pod's mirror).
    Node,
    /// Something else (a custom controller).
    Other,
}

/// The facts about a pod that decide whether it may be moved at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// The pod's namespace.
    pub namespace: String,
    /// Its controller owner's kind; `None` for a bare pod.
    pub owner: Option<OwnerKind>,
    /// The pod or its namespace opted in (`carbon-kube.io/migrate: "true"`).
    pub opted_in: bool,
    /// The pod or its namespace opted in explicitly for StatefulSet members
    /// (`carbon-kube.io/migrate: "statefulset"`).
    pub stateful_opt_in: bool,
    /// For Job pods: the Job recreates an evicted pod (its `backoffLimit`
    /// has room and its pod failure policy does not fail the Job on
    /// disruption).
    pub job_recreates: bool,
    /// A mirror pod (`kubernetes.io/config.mirror` annotation).
    pub mirror: bool,
    /// Priority class `system-cluster-critical` / `system-node-critical`, or
    /// a priority at or above 2,000,000,000.
    pub system_critical: bool,
    /// Uses node-local storage: an `emptyDir` with a size limit or on
    /// memory, a `hostPath`, or a local PersistentVolume.
    pub local_storage: bool,
    /// The pod opted out of carbon-aware decisions (`carbon-kube.io/opt-out`).
    pub opted_out: bool,
    /// The pod is not running (pending, terminating, finished).
    pub not_running: bool,
}

/// Why a pod may not be moved at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ineligible {
    /// Neither the pod nor its namespace opted in.
    NotOptedIn,
    /// The pod opted out of carbon-aware decisions.
    OptedOut,
    /// A bare pod: nothing would recreate it.
    BarePod,
    /// A DaemonSet's pod: it would come back on the same node.
    DaemonSet,
    /// A mirror or static pod.
    MirrorOrStatic,
    /// In `kube-system`.
    KubeSystem,
    /// System-critical priority.
    SystemCritical,
    /// Node-local storage would be lost.
    LocalStorage,
    /// A StatefulSet member without `carbon-kube.io/migrate: "statefulset"`.
    StatefulWithoutOptIn,
    /// A Job's pod that the Job would not recreate.
    JobWouldNotRecreate,
    /// Owned by a controller Carbon-Kube does not know.
    UnknownOwner,
    /// Not running.
    NotRunning,
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOptedIn => "not opted in (carbon-kube.io/migrate on the pod or its namespace)",
            Self::OptedOut => "opted out (carbon-kube.io/opt-out)",
            Self::BarePod => "bare pod: no controller would recreate it",
            Self::DaemonSet => "DaemonSet pod",
            Self::MirrorOrStatic => "mirror or static pod",
            Self::KubeSystem => "in kube-system",
            Self::SystemCritical => "system-critical priority",
            Self::LocalStorage => "uses node-local storage (emptyDir with sizeLimit or medium, hostPath, local volume)",
            Self::StatefulWithoutOptIn => {
                "StatefulSet pod without carbon-kube.io/migrate: \"statefulset\""
            }
            Self::JobWouldNotRecreate => "Job pod that the Job would not recreate",
            Self::UnknownOwner => "owned by a controller that is not a ReplicaSet, StatefulSet or Job",
            Self::NotRunning => "not running",
        })
    }
}

/// Whether a pod may be moved at all, and how its work survives a restart.
/// Never: DaemonSet, mirror/static, `kube-system`, system-critical,
/// local-storage, bare pods; StatefulSet members only with their own opt-in;
/// Job pods only when the Job recreates them.
pub fn eligibility(p: &PodFacts) -> Result<WorkloadKind, Ineligible> {
    if p.not_running {
        return Err(Ineligible::NotRunning);
    }
    if p.mirror || p.owner == Some(OwnerKind::Node) {
        return Err(Ineligible::MirrorOrStatic);
    }
    if p.namespace == "kube-system" {
        return Err(Ineligible::KubeSystem);
    }
    if p.system_critical {
        return Err(Ineligible::SystemCritical);
    }
    if p.opted_out {
        return Err(Ineligible::OptedOut);
    }
    if !(p.opted_in || p.stateful_opt_in) {
        return Err(Ineligible::NotOptedIn);
    }
    let kind = match p.owner {
        None => return Err(Ineligible::BarePod),
        Some(OwnerKind::DaemonSet) => return Err(Ineligible::DaemonSet),
        Some(OwnerKind::Other | OwnerKind::Node) => return Err(Ineligible::UnknownOwner),
        Some(OwnerKind::ReplicaSet) => WorkloadKind::Stateless,
        Some(OwnerKind::StatefulSet) if p.stateful_opt_in => WorkloadKind::Stateful,
        Some(OwnerKind::StatefulSet) => return Err(Ineligible::StatefulWithoutOptIn),
        Some(OwnerKind::Job) if p.job_recreates => WorkloadKind::Batch,
        Some(OwnerKind::Job) => return Err(Ineligible::JobWouldNotRecreate),
    };
    if p.local_storage {
        return Err(Ineligible::LocalStorage);
    }
    Ok(kind)
}

/// One past move of a pod of the same owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerMove {
    /// When the pod was evicted.
    pub at: UnixSeconds,
    /// The zone it left.
    pub from: ZoneId,
    /// The zone it was sent to.
    pub to: ZoneId,
}

/// What the caller remembers (from annotations on the pod and its owner).
#[derive(Clone, Copy, Debug, Default)]
pub struct MoveHistory<'a> {
    /// When this pod (or the pod it replaces) was last moved, if known.
    pub pod_last_moved: Option<UnixSeconds>,
    /// The owner's recent moves (older ones are ignored).
    pub owner_moves: &'a [OwnerMove],
    /// The owner's replicas (0 counts as 1): the owner may move
    /// `maxOwnerMoves` times per replica within its memory.
    pub owner_replicas: u32,
}

/// What the rule needs to know about one running pod.
#[derive(Clone, Copy, Debug)]
pub struct MigrationRequest<'a> {
    /// The current time.
    pub now: UnixSeconds,
    /// The pod (name, namespace, annotations, requests).
    pub pod: &'a PodView,
    /// How its work survives a restart (from [`eligibility`]).
    pub kind: WorkloadKind,
    /// When it started running.
    pub started_at: UnixSeconds,
    /// Its last checkpoint, if it reports one (Jobs).
    pub last_checkpoint: Option<UnixSeconds>,
    /// How much longer it is expected to run, seconds, if known.
    pub expected_remaining_seconds: Option<i64>,
    /// When it must have finished (`carbon-kube.io/deadline`), if it has a
    /// deadline: a move must let the replacement redo the lost work, restart
    /// and run the rest before it.
    pub deadline: Option<UnixSeconds>,
    /// The node it runs on.
    pub current_node: &'a str,
    /// The zone of that node (`None`: unknown).
    pub current_zone: Option<&'a ZoneId>,
    /// Nodes the pod could be recreated on: already matched to its selector,
    /// required affinity and taints; the rule checks room and carbon.
    pub candidates: &'a [Candidate<'a>],
    /// Past moves.
    pub history: MoveHistory<'a>,
}

/// The figures behind a decision, for Events, logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationNumbers {
    /// The zone the pod runs in.
    pub source_zone: Option<ZoneId>,
    /// Forecast average of the source zone over the counted run, g/kWh.
    pub source_g_per_kwh: Option<f64>,
    /// The best target zone considered.
    pub target_zone: Option<ZoneId>,
    /// Its forecast average over the counted run, g/kWh.
    pub target_g_per_kwh: Option<f64>,
    /// Facility power of the pod, kW.
    pub pod_kw: f64,
    /// Seconds of remaining run counted.
    pub counted_seconds: i64,
    /// Expected saving, grams CO2e.
    pub saving_grams: f64,
    /// Restart energy, grams CO2e.
    pub restart_grams: f64,
    /// Lost work redone, grams CO2e.
    pub lost_work_grams: f64,
    /// The disruption penalty, grams CO2e.
    pub disruption_grams: f64,
}

impl MigrationNumbers {
    /// Total cost of the move, grams CO2e.
    pub fn cost_grams(&self) -> f64 {
        self.restart_grams + self.lost_work_grams + self.disruption_grams
    }

    /// Saving minus cost, grams CO2e.
    pub fn net_grams(&self) -> f64 {
        self.saving_grams - self.cost_grams()
    }
}

/// How many target nodes a [`MigrationPlan`] names. A plan is held per pod
/// until the cycle acts, so naming every node of a large zone would cost
/// memory in proportion to pods × nodes (about 6 GiB at 50,000 pods moving
/// towards 2,500 nodes, measured); the migrator records the first five.
pub const MAX_TARGET_NODES: usize = 5;

/// A decided move.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationPlan {
    /// The zone to move to.
    pub target_zone: ZoneId,
    /// Nodes of that zone with room for the pod, best placement score
    /// first: at most [`MAX_TARGET_NODES`].
    pub target_nodes: Vec<String>,
    /// The figures.
    pub numbers: MigrationNumbers,
}

/// Why a pod stays.
#[derive(Clone, Debug, PartialEq)]
pub enum SkipReason {
    /// The source zone's data is missing or stale: never move on old data.
    StaleData,
    /// The source node's zone is unknown.
    UnknownZone,
    /// Started or moved less than the minimum dwell ago.
    Dwell {
        /// When it may be considered again.
        until: UnixSeconds,
    },
    /// No feasible target is strictly greener over the run (or none has room,
    /// passes the filter or has fresh data).
    NoTarget {
        /// Why, in words.
        why: String,
    },
    /// A greener target exists but the move does not pay.
    NotWorthIt,
    /// Moving would send the owner back where it came from, or it has moved
    /// too often lately.
    PingPong {
        /// The zone that was excluded, if one was.
        zone: Option<ZoneId>,
        /// The owner's moves within the memory.
        recent_moves: usize,
    },
    /// Too little run left to recoup a restart.
    EndingSoon,
    /// The replacement would finish after the pod's deadline (restart + lost
    /// work + remaining run), or the remaining run is unknown.
    Deadline {
        /// When the replacement would finish (`None`: remaining run unknown).
        would_finish: Option<UnixSeconds>,
        /// The deadline.
        deadline: UnixSeconds,
    },
}

impl SkipReason {
    /// The value of the `result` label on `carbon_kube_migrations_total`
    /// this skip counts under.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoTarget { .. } => "skipped_no_target",
            Self::StaleData | Self::UnknownZone => "skipped_stale_data",
            Self::Dwell { .. } => "skipped_dwell",
            Self::PingPong { .. } => "skipped_ping_pong",
            Self::NotWorthIt | Self::EndingSoon => "skipped_not_worth_it",
            Self::Deadline { .. } => "skipped_deadline",
        }
    }
}

/// The rule's answer for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum MigrationDecision {
    /// Move it.
    Migrate(MigrationPlan),
    /// Leave it, with the reason and whatever figures were computed.
    Skip {
        /// Why.
        reason: SkipReason,
        /// The figures so far.
        numbers: MigrationNumbers,
    },
}

impl MigrationDecision {
    /// The figures behind the decision.
    pub fn numbers(&self) -> &MigrationNumbers {
        match self {
            Self::Migrate(p) => &p.numbers,
            Self::Skip { numbers, .. } => numbers,
        }
    }

    /// The `result` label on `carbon_kube_migrations_total` (`migrated` for a move).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Migrate(_) => "migrated",
            Self::Skip { reason, .. } => reason.metric_label(),
        }
    }

    /// One sentence for an Event or a log line, with the numbers, e.g.
    /// "move DE → FR: saves 41 g over 6h (410 → 60 g/kWh at 0.020 kW) for a
    /// cost of 3 g (restart 1, lost work 0, disruption 2)".
    pub fn explain(&self) -> String {
        let n = self.numbers();
        let zone = |z: &Option<ZoneId>| z.as_ref().map_or("?".to_owned(), ToString::to_string);
        let g = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0}"));
        let figures = || {
            format!(
                "saving {:.1} g over {} ({} → {} g/kWh at {:.3} kW) against a cost of {:.1} g (restart {:.1}, lost work {:.1}, disruption {:.1})",
                n.saving_grams,
                crate::placement::HumanAge(n.counted_seconds),
                g(n.source_g_per_kwh),
                g(n.target_g_per_kwh),
                n.pod_kw,
                n.cost_grams(),
                n.restart_grams,
                n.lost_work_grams,
                n.disruption_grams
            )
        };
        match self {
            Self::Migrate(p) => format!(
                "move {} → {}: {}; target nodes {}",
                zone(&n.source_zone),
                p.target_zone,
                figures(),
                p.target_nodes.join(",")
            ),
            Self::Skip { reason, .. } => match reason {
                SkipReason::StaleData => format!(
                    "stays: carbon data for its zone {} is missing or stale (never moved on old data)",
                    zone(&n.source_zone)
                ),
                SkipReason::UnknownZone => "stays: its node's grid zone is unknown".to_owned(),
                SkipReason::Dwell { until } => format!(
                    "stays: started or moved recently; not before {}",
                    crate::deferral::fmt_utc(*until)
                ),
                SkipReason::NoTarget { why } => format!(
                    "stays in {}: no feasible strictly greener target ({why})",
                    zone(&n.source_zone)
                ),
                SkipReason::NotWorthIt => format!(
                    "stays: move {} → {} does not pay: {}",
                    zone(&n.source_zone),
                    zone(&n.target_zone),
                    figures()
                ),
                SkipReason::PingPong {
                    zone: z,
                    recent_moves,
                } => match z {
                    Some(z) => format!(
                        "stays: its owner left {z} recently ({recent_moves} moves in memory); no ping-pong"
                    ),
                    None => format!(
                        "stays: its owner moved {recent_moves} times recently (maxOwnerMoves per replica)"
                    ),
                },
                SkipReason::EndingSoon => format!(
                    "stays: only {} of its run left",
                    crate::placement::HumanAge(n.counted_seconds)
                ),
                SkipReason::Deadline {
                    would_finish,
                    deadline,
                } => match would_finish {
                    Some(t) => format!(
                        "stays: a replacement would finish at {}, after its deadline {} (restart, lost work and remaining run)",
                        crate::deferral::fmt_utc(*t),
                        crate::deferral::fmt_utc(*deadline)
                    ),
                    None => format!(
                        "stays: it has a deadline ({}) but no expected duration, so a move could miss it",
                        crate::deferral::fmt_utc(*deadline)
                    ),
                },
            },
        }
    }
}

/// Whether `node` has room for `requests` (allocatable minus requested).
pub fn fits(node: &NodeView, requests: &Resources) -> bool {
    let free = node.allocatable.saturating_sub(node.requested);
    free.cpu_millis >= requests.cpu_millis && free.memory_bytes >= requests.memory_bytes
}

/// Forecast average of `zone` over `[now, now + seconds)`, if its record is fresh.
fn run_average(
    snapshot: &Snapshot,
    zone: &ZoneId,
    now: UnixSeconds,
    seconds: i64,
    max_age: i64,
) -> Option<f64> {
    let r = snapshot.get(zone)?;
    if !r.is_fresh(now, max_age) {
        return None;
    }
    let step = r
        .forecast
        .as_ref()
        .map_or(3600, |f| i64::from(f.step_seconds))
        .max(1);
    let view = zone_view(zone, r, now, step, now + seconds);
    let slot0 = now.div_euclid(step) * step;
    Some(view.average(now - slot0, seconds, step))
}

/// Pod power, kW, from its requests (CPU as vCPUs, memory as GB).
pub fn pod_kw(energy: &EnergyModel, requests: &Resources) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let vcpus = requests.cpu_millis.max(0) as f64 / 1000.0;
    #[allow(clippy::cast_precision_loss)]
    let gb = requests.memory_bytes.max(0) as f64 / 1e9;
    energy.job_kw(vcpus, gb)
}

/// Seconds of work a move throws away: nothing for replicas, everything
/// since the last checkpoint (or the start) for a Job's pod.
pub fn lost_work_seconds(req: &MigrationRequest<'_>) -> i64 {
    match req.kind {
        WorkloadKind::Stateless | WorkloadKind::Stateful => 0,
        WorkloadKind::Batch => (req.now
            - req
                .last_checkpoint
                .unwrap_or(req.started_at)
                .max(req.started_at))
        .max(0),
    }
}

/// Decides whether to move one pod. See the module documentation.
pub fn decide_migration(
    req: &MigrationRequest<'_>,
    snapshot: &Snapshot,
    placement: &PlacementConfig,
    energy: &EnergyModel,
    cfg: &MigrationConfig,
) -> MigrationDecision {
    let now = req.now;
    let mut numbers = MigrationNumbers {
        source_zone: req.current_zone.cloned(),
        pod_kw: pod_kw(energy, &req.pod.requests),
        ..MigrationNumbers::default()
    };
    let skip = |reason, numbers| MigrationDecision::Skip { reason, numbers };
    // Hysteresis first: a young pod is never looked at again.
    let last = req
        .history
        .pod_last_moved
        .map_or(req.started_at, |m| m.max(req.started_at));
    if now - last < cfg.min_dwell_seconds {
        return skip(
            SkipReason::Dwell {
                until: last + cfg.min_dwell_seconds,
            },
            numbers,
        );
    }
    let Some(source) = req.current_zone else {
        return skip(SkipReason::UnknownZone, numbers);
    };
    let remaining = req
        .expected_remaining_seconds
        .unwrap_or(cfg.horizon_seconds)
        .min(cfg.horizon_seconds);
    numbers.counted_seconds = remaining.max(0);
    let Some(source_avg) = run_average(
        snapshot,
        source,
        now,
        remaining.max(1),
        cfg.max_data_age_seconds,
    ) else {
        return skip(SkipReason::StaleData, numbers);
    };
    numbers.source_g_per_kwh = Some(source_avg);
    if remaining <= cfg.restart_seconds {
        return skip(SkipReason::EndingSoon, numbers);
    }
    if let Some(deadline) = req.deadline {
        let would_finish = req
            .expected_remaining_seconds
            .map(|r| now + cfg.restart_seconds + lost_work_seconds(req) + r.max(0));
        if would_finish.is_none_or(|t| t > deadline) {
            return skip(
                SkipReason::Deadline {
                    would_finish,
                    deadline,
                },
                numbers,
            );
        }
    }
    // The owner's memory: zones it left recently are not targets.
    let recent: Vec<&OwnerMove> = req
        .history
        .owner_moves
        .iter()
        .filter(|m| now - m.at < cfg.owner_memory_seconds)
        .collect();
    let owner_budget = cfg.max_owner_moves as usize * req.history.owner_replicas.max(1) as usize;
    if recent.len() >= owner_budget {
        return skip(
            SkipReason::PingPong {
                zone: None,
                recent_moves: recent.len(),
            },
            numbers,
        );
    }
    // Feasible: room, another node, another zone with a zone known.
    let feasible: Vec<Candidate<'_>> = req
        .candidates
        .iter()
        .filter(|c| {
            c.node.name != req.current_node
                && c.zone.zone.as_ref().is_some_and(|z| z != source)
                && fits(c.node, &req.pod.requests)
        })
        .copied()
        .collect();
    if feasible.is_empty() {
        return skip(
            SkipReason::NoTarget {
                why: "no node in another zone matches the pod and has room for its requests"
                    .to_owned(),
            },
            numbers,
        );
    }
    // The extender's own filter: a target must pass it with carbon applied.
    let filtered = filter_nodes(req.pod, &feasible, snapshot, placement, now);
    if let Some(n) = filtered.not_applied {
        return skip(SkipReason::NoTarget { why: n.to_string() }, numbers);
    }
    let passing: Vec<Candidate<'_>> = filtered.passed().map(|i| feasible[i]).collect();
    // Per distinct zone, the forecast average over the run.
    let mut zone_avgs: BTreeMap<&ZoneId, Option<f64>> = BTreeMap::new();
    for c in &passing {
        if let Some(z) = c.zone.zone.as_ref() {
            zone_avgs.entry(z).or_insert_with(|| {
                run_average(snapshot, z, now, remaining, cfg.max_data_age_seconds)
            });
        }
    }
    let mut pingpong_zone = None;
    let mut best: Option<(&ZoneId, f64)> = None;
    for (z, avg) in &zone_avgs {
        let Some(avg) = *avg else { continue };
        if recent.iter().any(|m| &m.from == *z) {
            if avg + cfg.min_improvement_g_per_kwh <= source_avg {
                pingpong_zone = Some((*z).clone());
            }
            continue;
        }
        if best.is_none_or(|(_, b)| avg < b) {
            best = Some((z, avg));
        }
    }
    let Some((target, target_avg)) =
        best.filter(|(_, avg)| avg + cfg.min_improvement_g_per_kwh <= source_avg)
    else {
        if let Some(z) = pingpong_zone {
            return skip(
                SkipReason::PingPong {
                    zone: Some(z),
                    recent_moves: recent.len(),
                },
                numbers,
            );
        }
        if let Some((z, avg)) = best {
            numbers.target_zone = Some(z.clone());
            numbers.target_g_per_kwh = Some(avg);
        }
        let why = if zone_avgs.is_empty() {
            "no other zone passes the placement filter".to_owned()
        } else if best.is_none() {
            "no other feasible zone has fresh data".to_owned()
        } else {
            format!(
                "the best, {}, is not at least {:.0} g/kWh cleaner over the run",
                best.map_or_else(String::new, |(z, _)| z.to_string()),
                cfg.min_improvement_g_per_kwh
            )
        };
        return skip(SkipReason::NoTarget { why }, numbers);
    };
    numbers.target_zone = Some(target.clone());
    numbers.target_g_per_kwh = Some(target_avg);
    let kw = numbers.pod_kw;
    #[allow(clippy::cast_precision_loss)]
    let hours = |s: i64| s.max(0) as f64 / 3600.0;
    numbers.saving_grams = (source_avg - target_avg) * kw * hours(remaining);
    let target_now = snapshot
        .get(target)
        .map_or(target_avg, |r| r.carbon_intensity.g_per_kwh());
    numbers.restart_grams = kw * hours(cfg.restart_seconds) * target_now;
    let lost_seconds = lost_work_seconds(req);
    numbers.lost_work_grams = kw * hours(lost_seconds) * target_avg;
    numbers.disruption_grams = cfg.disruption_penalty_grams;
    let cost = numbers.cost_grams();
    if numbers.saving_grams < cost * (1.0 + cfg.margin)
        || numbers.net_grams() < cfg.min_net_saving_grams
    {
        return skip(SkipReason::NotWorthIt, numbers);
    }
    // Nodes of the target zone, best placement score first.
    let in_target: Vec<Candidate<'_>> = passing
        .iter()
        .filter(|c| c.zone.zone.as_ref() == Some(target))
        .copied()
        .collect();
    let scored = score_nodes(req.pod, &in_target, snapshot, placement, now);
    let mut order: Vec<(u8, &str)> = scored
        .scores
        .iter()
        .zip(&in_target)
        .map(|(s, c)| (s.score, c.node.name.as_str()))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    order.truncate(MAX_TARGET_NODES);
    MigrationDecision::Migrate(MigrationPlan {
        target_zone: target.clone(),
        // Collected from a borrowing iterator into a new Vec: collecting
        // `order.into_iter()` would reuse `order`'s buffer in place (same
        // element size), so every plan would keep room for every node of
        // the zone (60 KB per plan at 2,500 nodes: 2.9 GiB at 50,000
        // pods, measured by the scale bench).
        target_nodes: order.iter().map(|(_, n)| (*n).to_owned()).collect(),
        numbers,
    })
}

#[cfg(test)]
mod tests;
