//! One reconcile pass over the gated pods: for each, plan its release, keep
//! its plan, or release it now, and say why. No IO: the controller passes
//! the pods, nodes, snapshot and `now`, and carries out the actions.
//!
//! Per pod, in order of creation:
//!
//! 1. `carbon-kube.io/release-now` (or `carbon-kube.io/opt-out: "true"`) →
//!    release, reason `manual`.
//! 2. No or invalid deferral annotations → release at once, reason
//!    `invalid`, with every problem named (never stuck).
//! 3. The latest start (deadline − expected duration − the planner's safety
//!    margin) has come → release, reason `deadline`, whatever the data says.
//! 4. A stored plan (annotation `carbon-kube.io/release-plan`) that is due →
//!    release with the plan's reason.
//! 5. No stored plan, or a re-plan pass (the snapshot changed): plan with
//!    `carbon_kube_policy::deferral::plan_release` over the zones the pod
//!    may run in, against the capacity promised to the other plans; a due
//!    plan releases now, a new plan is stored, and a standing plan is
//!    replaced only when `should_revise` says so (hysteresis).
//!
//! The promised-capacity ledger is rebuilt on every pass from the plans
//! stored on the pods, so a restarted controller sees exactly what the last
//! one promised.

use std::collections::BTreeMap;

use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId, keys};
use carbon_kube_policy::budget::BudgetPressure;
use carbon_kube_policy::deferral::{
    Booking, CapacityLedger, DeferralConfig, DeferralRequest, ReleasePlan, ReleaseReason, fmt_utc,
    plan_release, should_revise,
};
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::spec::{DeferralSpec, SpecDefaults, SpecOutcome, describe_problems, read_spec};
use crate::zones::{Eligibility, NodeEntry, eligible_zones, pod_cpu_millis};
use carbon_kube_policy::zone_map::Resources;

/// Pod annotation holding the stored plan (JSON), written by the controller.
pub const ANNOTATION_RELEASE_PLAN: &str = "carbon-kube.io/release-plan";
/// Pod annotation with the time the controller released the pod (RFC 3339).
pub const ANNOTATION_RELEASED_AT: &str = "carbon-kube.io/released-at";

/// A plan as stored on the pod: the planner's answer plus what is needed to
/// rebuild the capacity ledger after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPlan {
    /// The planner's answer.
    #[serde(flatten)]
    pub plan: ReleasePlan,
    /// When the plan was made.
    pub planned_at: UnixSeconds,
    /// CPU promised in the window, millicores.
    pub cpu_millis: u64,
    /// Expected run time the plan assumed, seconds.
    pub duration_seconds: i64,
}

impl StoredPlan {
    /// Reads the stored plan from a pod's annotations; `None` when absent or
    /// unreadable (the pod is then planned again).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Self> {
        serde_json::from_str(annotations.get(ANNOTATION_RELEASE_PLAN)?).ok()
    }

    /// The annotations that store this plan.
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                ANNOTATION_RELEASE_PLAN.to_owned(),
                serde_json::to_string(self).unwrap_or_default(),
            ),
            (
                keys::ANNOTATION_PLANNED_RELEASE.to_owned(),
                crate::spec::format_time(self.plan.release_at),
            ),
        ])
    }

    /// The zone the plan holds room in, while it holds the pod (a green
    /// window, or waiting for room).
    fn promises(&self, now: UnixSeconds) -> Option<&ZoneId> {
        self.plan
            .promises_room(now)
            .then_some(self.plan.zone.as_ref())
            .flatten()
    }

    fn requests(&self) -> Resources {
        Resources::new(i64::try_from(self.cpu_millis).unwrap_or(i64::MAX), 0)
    }
}

/// What the reconciler needs to know about one gated pod.
#[derive(Clone, Debug, PartialEq)]
pub struct GatedPod {
    /// `namespace/name`.
    pub key: String,
    /// When it was created.
    pub created: UnixSeconds,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// CPU it requests, millicores.
    pub cpu_millis: u64,
    /// The zones it may run in.
    pub eligibility: Eligibility,
    /// How its namespace's carbon budget bears on its plan (set by the
    /// controller with `--budgets`; none otherwise).
    pub budget: BudgetPressure,
}

impl GatedPod {
    /// Reads a pod against the current nodes. A pod without a creation time
    /// (never from the API server) counts as created at `now`.
    pub fn from_pod(pod: &Pod, nodes: &[NodeEntry], now: UnixSeconds) -> Self {
        Self {
            key: format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(now, |t| t.0.as_second()),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            cpu_millis: pod_cpu_millis(pod),
            eligibility: eligible_zones(pod, nodes),
            budget: BudgetPressure::None,
        }
    }
}

/// Why a pod is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseCause {
    /// The planner's reason (green window, now is best, deadline, no data).
    Planned(ReleaseReason),
    /// A person asked (`release-now` or `opt-out`).
    Manual,
    /// The annotations are missing or wrong.
    Invalid,
}

impl ReleaseCause {
    /// The `reason` label of `carbon_kube_gate_releases_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Planned(r) => r.metric_label(),
            Self::Manual => "manual",
            Self::Invalid => "invalid",
        }
    }

    /// The value written to `carbon-kube.io/release-reason`.
    pub fn annotation_value(self) -> &'static str {
        match self {
            Self::Planned(r) => r.as_str(),
            Self::Manual => "manual",
            Self::Invalid => "invalid",
        }
    }
}

/// What to do with one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Store a plan on the pod (new or revised) and leave it gated.
    Plan {
        /// Index into the pods passed to [`reconcile`].
        pod: usize,
        /// The plan.
        stored: StoredPlan,
        /// Whether it replaces a standing plan.
        revised: bool,
        /// One sentence for the Event.
        message: String,
    },
    /// Remove the gate now.
    Release {
        /// Index into the pods passed to [`reconcile`].
        pod: usize,
        /// Why.
        cause: ReleaseCause,
        /// The zone to steer the pod to, if the plan chose one.
        zone: Option<ZoneId>,
        /// The plan the release follows, if any (for savings).
        plan: Option<StoredPlan>,
        /// The pod's latest start (for ordering; `i64::MIN` when unknown).
        latest_start: UnixSeconds,
        /// Past the hard margin before the latest start: not paced.
        urgent: bool,
        /// The nodes where the ledger has room for the pod's run from now
        /// without breaking what runs there or was promised to a more urgent
        /// pod, tightest fit first, at most [`MAX_PREFERRED_NODES`]; its run
        /// is booked on the first. The controller prefers them (a preferred
        /// node affinity), so kube-scheduler does not put the pod into room
        /// another plan counts on. Empty for manual and invalid releases and
        /// when no node has room.
        nodes: Vec<String>,
        /// One sentence for the Event.
        message: String,
    },
}

/// At most this many nodes are preferred for a released pod (one preferred
/// node-affinity term each: a `metadata.name` field selector takes one value).
pub const MAX_PREFERRED_NODES: usize = 8;

impl Action {
    /// The index of the pod the action is about.
    pub fn pod(&self) -> usize {
        match self {
            Self::Plan { pod, .. } | Self::Release { pod, .. } => *pod,
        }
    }
}

/// Reconciler settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconcileConfig {
    /// The planner's settings.
    pub deferral: DeferralConfig,
    /// Defaults for annotations.
    pub spec: SpecDefaults,
    /// Within this many seconds of the latest start, releases skip pacing.
    pub hard_deadline_margin_seconds: i64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            deferral: DeferralConfig::default(),
            spec: SpecDefaults::default(),
            hard_deadline_margin_seconds: 60,
        }
    }
}

/// The latest start of a gated pod, as [`reconcile`] reads it from the
/// deferral annotations (deadline − expected duration, after the
/// `--max-deferral` cap); `None` for a pod without a valid request (it is
/// released at once).
pub fn latest_start(pod: &GatedPod, defaults: &SpecDefaults) -> Option<UnixSeconds> {
    match read_spec(&pod.annotations, pod.created, defaults) {
        SpecOutcome::Valid(spec) => Some(spec.latest_start()),
        SpecOutcome::NotRequested | SpecOutcome::Invalid(_) => None,
    }
}

/// How many gated pods have their latest start at most `window_seconds`
/// after `now`, or already past: the value of
/// `carbon_kube_deferred_pods_near_deadline`. Pods without a valid request
/// are not counted (they are released at once).
pub fn count_near_deadline(
    pods: &[GatedPod],
    now: UnixSeconds,
    window_seconds: i64,
    defaults: &SpecDefaults,
) -> usize {
    let limit = now.saturating_add(window_seconds.max(0));
    pods.iter()
        .filter_map(|p| latest_start(p, defaults))
        .filter(|latest| *latest <= limit)
        .count()
}

/// The planning grid: the finest forecast step in the snapshot (1 s to 1 h),
/// one hour without forecasts.
pub fn slot_seconds(snapshot: &Snapshot) -> i64 {
    snapshot
        .zones
        .values()
        .filter_map(|r| r.forecast.as_ref())
        .map(|f| i64::from(f.step_seconds))
        .filter(|s| *s > 0)
        .min()
        .unwrap_or(3600)
        .clamp(1, 3600)
}

/// The capacity ledger: every schedulable node of a known zone with its
/// allocatable CPU, the work running on it (`running`: until its expected
/// end when Carbon-Kube released it, for good otherwise), and, with
/// `with_plans`, the promises of the plans stored on the gated pods, booked
/// most urgent (earliest latest start) first, so a plan that no longer fits
/// is a less urgent one. Returns the ledger and each pod's booking (by index
/// into `pods`).
pub fn ledger(
    pods: &[GatedPod],
    nodes: &[NodeEntry],
    running: &[RunningPod],
    slot: i64,
    now: UnixSeconds,
    with_plans: (bool, &SpecDefaults),
) -> (CapacityLedger, Vec<Option<Booking>>) {
    let mut l = CapacityLedger::new(slot);
    let mut zone_of: BTreeMap<&str, &ZoneId> = BTreeMap::new();
    for n in nodes.iter().filter(|n| !n.unschedulable) {
        if let Some(z) = &n.zone {
            let cpu = i64::try_from(n.cpu_millis).unwrap_or(i64::MAX);
            l.add_node(z.clone(), &n.name, Resources::new(cpu, i64::MAX));
            zone_of.insert(n.name.as_str(), z);
        }
    }
    for r in running {
        if let Some(z) = zone_of.get(r.node.as_str()) {
            let cpu = i64::try_from(r.cpu_millis).unwrap_or(i64::MAX);
            let until = r.expected_end.filter(|end| *end > now);
            if r.expected_end.is_none() || until.is_some() {
                l.occupy(z, &r.node, now, until, Resources::new(cpu, 0));
            }
        }
    }
    let mut bookings = vec![None; pods.len()];
    let (with_plans, defaults) = with_plans;
    if !with_plans {
        l.forget_before(now);
        return (l, bookings);
    }
    let mut stored: Vec<(UnixSeconds, usize, StoredPlan)> = pods
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let s = StoredPlan::from_annotations(&p.annotations)?;
            let latest = latest_start(p, defaults).unwrap_or(i64::MIN);
            s.promises(now).is_some().then_some((latest, i, s))
        })
        .collect();
    stored.sort_by_key(|(t, i, _)| (*t, *i));
    for (_, i, s) in stored {
        if let Some(z) = s.promises(now) {
            bookings[i] = Some(l.promise(
                z,
                s.plan.release_at,
                s.duration_seconds,
                s.requests(),
                s.plan.latest_start,
                &pods[i].eligibility.nodes,
            ));
        }
    }
    l.forget_before(now);
    (l, bookings)
}

/// A pod bound to a node, as the ledger counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningPod {
    /// The node it runs on.
    pub node: String,
    /// CPU it requests, millicores.
    pub cpu_millis: u64,
    /// When it is expected to end: its release time plus the expected
    /// duration it was planned with, for pods Carbon-Kube released; `None`
    /// (for good) for everything else.
    pub expected_end: Option<UnixSeconds>,
}

impl RunningPod {
    /// Reads a pod bound to a node; `None` when it is not bound. A pod this
    /// controller released (`carbon-kube.io/released-at` and a stored plan)
    /// is expected to end its planned run after its release; any other pod
    /// holds its room for good.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let node = pod.spec.as_ref()?.node_name.clone()?;
        let annotations = pod.metadata.annotations.as_ref();
        let expected_end = annotations.and_then(|a| {
            let released = crate::spec::parse_time(a.get(ANNOTATION_RELEASED_AT)?).ok()?;
            let plan = StoredPlan::from_annotations(a)?;
            Some(released.saturating_add(plan.duration_seconds.max(1)))
        });
        Some(Self {
            node,
            cpu_millis: pod_cpu_millis(pod),
            expected_end,
        })
    }
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| {
        let v = v.trim();
        !v.eq_ignore_ascii_case("false") && v != "0"
    })
}

/// Plans or releases every gated pod. `replan`: revisit standing plans (the
/// snapshot changed). Releases come first in the result, most urgent first.
pub fn reconcile(
    pods: &[GatedPod],
    snapshot: &Snapshot,
    nodes: &[NodeEntry],
    running: &[RunningPod],
    now: UnixSeconds,
    cfg: &ReconcileConfig,
    replan: bool,
) -> Vec<Action> {
    let slot = slot_seconds(snapshot);
    // A re-plan pass starts from the running work alone and plans every pod
    // most urgent first, so the pod whose latest start comes first gets the
    // room (standing plans are kept where they still fit); between re-plans
    // the stored plans are booked most urgent first, and a plan that no
    // longer fits is planned again.
    let (mut ledger, mut bookings) = ledger(pods, nodes, running, slot, now, (!replan, &cfg.spec));
    let mut order: Vec<(UnixSeconds, usize)> = (0..pods.len())
        .map(|i| (latest_start(&pods[i], &cfg.spec).unwrap_or(i64::MIN), i))
        .collect();
    order.sort_by(|a, b| {
        (a.0, pods[a.1].created, &pods[a.1].key).cmp(&(b.0, pods[b.1].created, &pods[b.1].key))
    });
    let mut actions = Vec::new();
    for (_, i) in order {
        let booking = bookings[i].take();
        let pass = Pass {
            snapshot,
            now,
            cfg,
            replan,
        };
        if let Some(a) = reconcile_one(i, &pods[i], &pass, &mut ledger, booking) {
            actions.push(a);
        }
    }
    actions.sort_by_key(|a| match a {
        Action::Release {
            urgent,
            latest_start,
            ..
        } => (0, !*urgent, *latest_start),
        Action::Plan { .. } => (1, true, 0),
    });
    actions
}

fn release(
    pod: usize,
    cause: ReleaseCause,
    plan: Option<StoredPlan>,
    latest_start: UnixSeconds,
    urgent: bool,
    message: String,
) -> Action {
    Action::Release {
        pod,
        cause,
        zone: plan.as_ref().and_then(|p| p.plan.zone.clone()),
        plan,
        latest_start,
        urgent,
        nodes: Vec::new(),
        message,
    }
}

/// Books the run of a pod released now in the ledger, so that the pods
/// planned after it in the same pass do not count on its room, and records
/// on the action the nodes with room for it (see [`Action::Release`]).
///
/// The planned zone is tried first, then the pod's other zones. A deadline
/// release with no free room anywhere takes room promised to less urgent
/// pods (their plans no longer fit and are made again); other releases take
/// only free room.
/// When no node has room the run is still booked (on the node with the most
/// room), so the ledger never under-counts, and no node is preferred.
fn book_release(
    mut action: Action,
    pod: &GatedPod,
    booking: Option<Booking>,
    ledger: &mut CapacityLedger,
    now: UnixSeconds,
    duration_seconds: i64,
) -> Action {
    let Action::Release {
        cause,
        zone,
        latest_start,
        nodes,
        ..
    } = &mut action
    else {
        return action;
    };
    if let Some(b) = &booking {
        ledger.withdraw(b);
    }
    let need = Resources::new(i64::try_from(pod.cpu_millis).unwrap_or(i64::MAX), 0);
    let zones: Vec<&ZoneId> = zone
        .iter()
        .chain(
            pod.eligibility
                .zones
                .iter()
                .filter(|z| Some(*z) != zone.as_ref()),
        )
        .collect();
    // Free room first; a deadline release then takes room promised to less
    // urgent pods.
    let deadline = *cause == ReleaseCause::Planned(ReleaseReason::Deadline);
    let urgencies = [None, deadline.then_some(*latest_start)];
    let mut book_in = zones.first().map(|z| (*z).clone());
    'search: for urgency in urgencies.iter().take(if deadline { 2 } else { 1 }) {
        for z in &zones {
            let room = ledger.nodes_with_room(
                z,
                &pod.eligibility.nodes,
                now,
                duration_seconds,
                need,
                *urgency,
            );
            if !room.is_empty() {
                *nodes = room;
                book_in = Some((*z).clone());
                break 'search;
            }
        }
    }
    if let Some(z) = book_in {
        let allowed = if nodes.is_empty() {
            pod.eligibility.nodes.clone()
        } else {
            vec![nodes[0].clone()]
        };
        let _ = ledger.promise(&z, now, duration_seconds, need, *latest_start, &allowed);
    }
    nodes.truncate(MAX_PREFERRED_NODES);
    action
}

/// What one reconcile pass plans with.
struct Pass<'a> {
    snapshot: &'a Snapshot,
    now: UnixSeconds,
    cfg: &'a ReconcileConfig,
    replan: bool,
}

fn reconcile_one(
    i: usize,
    pod: &GatedPod,
    pass: &Pass<'_>,
    ledger: &mut CapacityLedger,
    booking: Option<Booking>,
) -> Option<Action> {
    let Pass {
        snapshot,
        now,
        cfg,
        replan,
    } = *pass;
    let a = &pod.annotations;
    if truthy(a.get(keys::ANNOTATION_RELEASE_NOW)) {
        return Some(release(
            i,
            ReleaseCause::Manual,
            None,
            i64::MIN,
            false,
            format!("released by hand ({})", keys::ANNOTATION_RELEASE_NOW),
        ));
    }
    if a.get(keys::ANNOTATION_OPT_OUT)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Some(release(
            i,
            ReleaseCause::Manual,
            None,
            i64::MIN,
            false,
            format!(
                "released: the pod opted out ({}=true)",
                keys::ANNOTATION_OPT_OUT
            ),
        ));
    }
    let spec = match read_spec(a, pod.created, &cfg.spec) {
        SpecOutcome::Valid(s) => s,
        SpecOutcome::NotRequested => {
            return Some(release(
                i,
                ReleaseCause::Invalid,
                None,
                i64::MIN,
                false,
                format!(
                    "released at once: the pod carries the {} gate but neither {} nor {}, so there is no deadline to plan against",
                    keys::SCHEDULING_GATE,
                    keys::ANNOTATION_DEADLINE,
                    keys::ANNOTATION_MAX_DELAY
                ),
            ));
        }
        SpecOutcome::Invalid(problems) => {
            return Some(release(
                i,
                ReleaseCause::Invalid,
                None,
                i64::MIN,
                false,
                format!(
                    "released at once: invalid deferral annotations: {}",
                    describe_problems(&problems)
                ),
            ));
        }
    };
    let latest = spec.latest_start();
    let urgent = now >= latest - cfg.hard_deadline_margin_seconds.max(0);
    let stored = StoredPlan::from_annotations(a).filter(|s| s.plan.deadline == spec.deadline);
    let duration = spec.expected_duration_seconds;
    if now >= latest - cfg.deferral.start_safety_seconds.max(0) {
        let a = release(
            i,
            ReleaseCause::Planned(ReleaseReason::Deadline),
            stored,
            latest,
            urgent,
            deadline_message(&spec),
        );
        return Some(book_release(a, pod, booking, ledger, now, duration));
    }
    if let Some(s) = &stored
        && s.plan.is_due(now)
    {
        let a = release(
            i,
            ReleaseCause::Planned(s.plan.reason),
            Some(s.clone()),
            latest,
            urgent,
            due_message(s),
        );
        return Some(book_release(a, pod, booking, ledger, now, duration));
    }
    // A standing plan is kept between re-plan passes while its room still
    // holds; one that can no longer be honoured is planned again.
    let held_for_room = stored
        .as_ref()
        .is_some_and(|s| s.plan.reason == ReleaseReason::NoRoom);
    if stored.is_some() && !replan && !held_for_room && booking.as_ref().is_none_or(Booking::fits) {
        return None;
    }
    if pod.eligibility.zones.is_empty() {
        return Some(release(
            i,
            ReleaseCause::Planned(ReleaseReason::NoData),
            None,
            latest,
            urgent,
            format!(
                "released now: none of the {} nodes this pod may run on has a known grid zone (fail open)",
                pod.eligibility.matching_nodes
            ),
        ));
    }
    let broken = booking.as_ref().is_some_and(|b| !b.fits());
    if let Some(b) = &booking {
        ledger.withdraw(b);
    }
    let req = DeferralRequest {
        now,
        deadline: spec.deadline,
        expected_duration_seconds: duration,
        zones: &pod.eligibility.zones,
        requests: Resources::new(i64::try_from(pod.cpu_millis).unwrap_or(i64::MAX), 0),
        nodes: &pod.eligibility.nodes,
        budget: pod.budget,
    };
    let fresh = plan_release(&req, snapshot, ledger, &cfg.deferral);
    let fresh = StoredPlan {
        plan: fresh,
        planned_at: now,
        cpu_millis: pod.cpu_millis,
        duration_seconds: duration,
    };
    if fresh.plan.is_due(now) {
        let message = fresh.plan.explain();
        let a = release(
            i,
            ReleaseCause::Planned(fresh.plan.reason),
            Some(fresh),
            latest,
            urgent,
            message,
        );
        return Some(book_release(a, pod, None, ledger, now, duration));
    }
    let keep = match &stored {
        Some(s)
            if !broken && !held_for_room && !should_revise(&s.plan, &fresh.plan, &cfg.deferral) =>
        {
            Some(s.clone())
        }
        _ => None,
    };
    if let Some(s) = keep {
        let z = s.promises(now)?;
        let b = ledger.promise(
            z,
            s.plan.release_at,
            s.duration_seconds,
            s.requests(),
            s.plan.latest_start,
            &pod.eligibility.nodes,
        );
        if b.fits() {
            return None;
        }
        // The standing plan's room went to a more urgent pod: take the fresh one.
        ledger.withdraw(&b);
    }
    if let Some(z) = fresh.promises(now) {
        ledger.promise(
            z,
            fresh.plan.release_at,
            duration,
            fresh.requests(),
            fresh.plan.latest_start,
            &pod.eligibility.nodes,
        );
    }
    let mut message = fresh.plan.explain();
    if spec.capped {
        message.push_str(" (deadline capped by the controller's --max-deferral)");
    }
    Some(Action::Plan {
        pod: i,
        revised: stored.is_some(),
        stored: fresh,
        message,
    })
}

fn deadline_message(spec: &DeferralSpec) -> String {
    format!(
        "released for its deadline {}: latest start {} (expected run {} s) reached",
        fmt_utc(spec.deadline),
        fmt_utc(spec.latest_start()),
        spec.expected_duration_seconds
    )
}

fn due_message(s: &StoredPlan) -> String {
    let fig = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
    let zone = s
        .plan
        .zone
        .as_ref()
        .map_or_else(String::new, |z| format!(" in {z}"));
    match s.plan.reason {
        ReleaseReason::GreenWindow | ReleaseReason::Budget => format!(
            "released in its green window{zone}{}: forecast {} g/kWh vs {} when planned at {}; deadline {}",
            if s.plan.reason == ReleaseReason::Budget {
                " (held for the namespace's carbon budget)"
            } else {
                ""
            },
            fig(s.plan.expected_g_per_kwh),
            fig(s.plan.now_g_per_kwh),
            fmt_utc(s.planned_at),
            fmt_utc(s.plan.deadline)
        ),
        _ => s.plan.explain(),
    }
}

#[cfg(test)]
mod tests;
