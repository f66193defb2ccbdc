//! The discrete-event loop: jobs arrive, are released (now or later, by the
//! strategy), are placed on a node with room (or wait until one frees up),
//! run for their duration and finish. Emissions are energy times the *actual*
//! intensity of the node's zone over the hours the job ran; decisions only
//! ever see the forecast.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId};
use carbon_kube_policy::deferral::{
    Booking, CapacityLedger, DeferralConfig, DeferralRequest, ReleasePlan, ReleaseReason,
    plan_release, should_revise,
};
use carbon_kube_policy::placement::{
    Candidate, PlacementConfig, PodView, filter_nodes, score_nodes,
};
use carbon_kube_policy::zone_map::{NodeView, Resources, ZoneResolution, ZoneVia};
use serde::Serialize;

use crate::forecast::ForecastView;
use crate::trace::{HOUR, TraceSet};
use crate::workload::{ClusterSpec, Job};

mod epochs;
mod migrate;
pub use epochs::{EpochView, Retuner};
pub use migrate::MigrationOutcome;

/// A strategy to compare.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Carbon-agnostic: start at arrival, spread by free capacity.
    Baseline,
    /// Carbon-Kube: spatial (placement filter + score) and/or temporal
    /// (deferral planner with margin and capacity ledger).
    CarbonKube {
        /// Use the placement policy.
        spatial: bool,
        /// Use the deferral planner.
        temporal: bool,
    },
    /// Hold a job until its zone's current intensity is at or below the
    /// threshold, or the latest start (Compute Gardener's behaviour).
    ThresholdHold {
        /// g/kWh.
        threshold: f64,
    },
    /// Start at arrival in the zone with the lowest current intensity that
    /// has room (Karmada carbon operator's behaviour).
    GreenestZoneNow,
    /// Start each job at the start of the window with the lowest forecast
    /// average over its run before its deadline, in its zone, ignoring
    /// forecast error and other jobs ("Let's Wait Awhile").
    BestWindow,
}

/// A named strategy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Name in reports.
    pub name: String,
    /// What it does.
    pub strategy: Strategy,
    /// Also move running jobs between zones when
    /// `carbon_kube_policy::migration` says the move pays (see `migrate`).
    pub migrate: bool,
}

/// Carbon-Kube's tunables, as the simulator passes them to the policy crate.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Placement (threshold, weights).
    pub placement: PlacementConfig,
    /// Deferral planner.
    pub deferral: DeferralConfig,
    /// The migration rule (policies with `migrate`).
    pub migration: carbon_kube_policy::migration::MigrationConfig,
    /// Interruptible jobs keep their work up to their last checkpoint, one
    /// every this many seconds of progress, when moved; other jobs lose all
    /// the work of the run they are moved from.
    pub checkpoint_seconds: i64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            placement: PlacementConfig {
                // The simulator publishes a snapshot every hour.
                max_data_age_seconds: 2 * HOUR,
                ..PlacementConfig::default()
            },
            deferral: DeferralConfig::default(),
            migration: carbon_kube_policy::migration::MigrationConfig {
                max_data_age_seconds: 2 * HOUR,
                ..Default::default()
            },
            checkpoint_seconds: HOUR,
        }
    }
}

/// One zone's share of a policy's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ZoneOutcome {
    /// Zone.
    pub zone: String,
    /// kgCO2eq.
    pub kg_co2: f64,
    /// kWh.
    pub energy_kwh: f64,
    /// Jobs that ran there.
    pub jobs: u64,
    /// vCPU-hours run there.
    pub cpu_hours: f64,
}

/// What one policy did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// Policy name.
    pub policy: String,
    /// Total emissions, kgCO2eq.
    pub kg_co2: f64,
    /// Total energy, kWh.
    pub energy_kwh: f64,
    /// Jobs finished after their deadline.
    pub deadline_misses: u64,
    /// Of those, jobs the carbon-agnostic baseline finished in time: misses
    /// this policy's decisions caused (deferral or placement). Filled in by
    /// [`Outcome::split_misses`].
    pub deadline_misses_caused: u64,
    /// Of those, jobs the baseline missed too: capacity the cluster lacked
    /// whatever the policy.
    pub deadline_misses_capacity: u64,
    /// Ids of the jobs that missed their deadline.
    #[serde(skip)]
    pub missed_jobs: Vec<u32>,
    /// Mean start − arrival, hours.
    pub mean_delay_hours: f64,
    /// 95th percentile of start − arrival, hours.
    pub p95_delay_hours: f64,
    /// Most jobs released (made schedulable) within one clock hour.
    pub peak_releases_per_hour: u64,
    /// Jobs held back at least once.
    pub deferred_jobs: u64,
    /// Jobs that waited for room after release.
    pub queued_jobs: u64,
    /// Plans made again because a more urgent run took the room they were
    /// promised (temporal Carbon-Kube only).
    #[serde(default)]
    pub broken_promises: u64,
    /// Release reasons of the deferral planner (carbon-kube temporal only).
    pub release_reasons: BTreeMap<String, u64>,
    /// Per zone.
    pub zones: Vec<ZoneOutcome>,
    /// Emissions per simulated hour, kg (for the cumulative plot).
    #[serde(skip)]
    pub hourly_kg: Vec<f64>,
    /// vCPUs in use per zone per hour (for the plot).
    #[serde(skip)]
    pub hourly_cpu: Vec<Vec<f32>>,
    /// What moving running jobs did (policies with `migrate` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationOutcome>,
}

impl Outcome {
    /// Splits this policy's deadline misses by cause against the
    /// carbon-agnostic baseline's: a miss of a job the baseline also missed
    /// is capacity the cluster lacked; any other miss was caused by this
    /// policy's decisions.
    pub fn split_misses(&mut self, baseline: &Outcome) {
        let base: std::collections::HashSet<u32> = baseline.missed_jobs.iter().copied().collect();
        let shared = self.missed_jobs.iter().filter(|j| base.contains(j)).count() as u64;
        self.deadline_misses_capacity = shared;
        self.deadline_misses_caused = self.deadline_misses - shared;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Finish = 0,
    Tick = 1,
    Release = 2,
    Arrival = 3,
    /// A decision epoch of a retuned run (`epochs`).
    Retune = 4,
}

#[derive(Clone, Debug, Default)]
struct JobState {
    released: Option<UnixSeconds>,
    started: Option<UnixSeconds>,
    node: usize,
    home: Option<usize>,
    preferred: Option<usize>,
    plan: Option<ReleasePlan>,
    /// The plan's promise in the capacity ledger.
    booking: Option<Booking>,
    revisions: u8,
    held: bool,
    /// Moves of the running job (policies with `migrate`).
    moves: migrate::JobMoves,
}

/// Everything a run needs, shared by all policies.
pub struct World<'a> {
    /// Actual traces.
    pub traces: &'a TraceSet,
    /// The cluster.
    pub cluster: &'a ClusterSpec,
    /// The jobs, sorted by arrival.
    pub jobs: &'a [Job],
    /// What policies see.
    pub forecast: ForecastView<'a>,
    /// Carbon-Kube's settings.
    pub tuning: Tuning,
    /// Zone index in the traces of each cluster zone.
    zone_trace: Vec<usize>,
}

impl<'a> World<'a> {
    /// Builds a world; fails if a cluster zone has no trace.
    pub fn new(
        traces: &'a TraceSet,
        cluster: &'a ClusterSpec,
        jobs: &'a [Job],
        forecast: ForecastView<'a>,
        tuning: Tuning,
    ) -> crate::Result<Self> {
        let mut zone_trace = Vec::new();
        for z in &cluster.zones {
            let i = traces.zone_index(&z.zone).ok_or_else(|| {
                crate::SimError::Inconsistent(format!(
                    "cluster zone {} has no carbon trace (traces: {})",
                    z.zone,
                    traces
                        .zones
                        .iter()
                        .map(|t| t.zone.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            zone_trace.push(i);
        }
        Ok(Self {
            traces,
            cluster,
            jobs,
            forecast,
            tuning,
            zone_trace,
        })
    }

    /// Index into the traces of cluster zone `z`.
    pub fn trace_of(&self, z: usize) -> usize {
        self.zone_trace[z]
    }

    /// Facility power of job `j` in cluster zone `z`, kW.
    pub fn job_kw(&self, j: &Job, z: usize) -> f64 {
        self.cluster.zones[z]
            .energy
            .job_kw(j.vcpus(), j.memory_gb())
    }

    /// Actual intensity of cluster zone `z` in hour `h` (the trace mean past the end).
    pub fn actual(&self, z: usize, h: i64) -> f64 {
        let v = &self.traces.zones[self.zone_trace[z]].values;
        usize::try_from(h)
            .ok()
            .and_then(|h| v.get(h).copied())
            .unwrap_or_else(|| v.iter().sum::<f64>() / v.len().max(1) as f64)
    }

    /// Emissions in grams of running job `j` in zone `z` from `start`, per
    /// hour bucket: calls `f(hour, grams, overlap_hours)`.
    pub fn for_each_hour(
        &self,
        j: &Job,
        z: usize,
        start: UnixSeconds,
        f: impl FnMut(i64, f64, f64),
    ) {
        self.for_each_hour_for(j, z, start, j.duration, f);
    }

    /// As [`World::for_each_hour`], for `seconds` of running from `start`
    /// (a run cut short by a move, or a replacement's run).
    pub fn for_each_hour_for(
        &self,
        j: &Job,
        z: usize,
        start: UnixSeconds,
        seconds: i64,
        mut f: impl FnMut(i64, f64, f64),
    ) {
        let kw = self.job_kw(j, z);
        let end = start + seconds;
        let mut t = start;
        while t < end {
            let h = (t - self.traces.start).div_euclid(HOUR);
            let hour_end = self.traces.start + (h + 1) * HOUR;
            let seg_end = hour_end.min(end);
            let overlap_h = (seg_end - t) as f64 / HOUR as f64;
            f(h, kw * overlap_h * self.actual(z, h), overlap_h);
            t = seg_end;
        }
    }

    /// Runs one policy.
    pub fn run(&self, policy: &Policy, progress: &dyn Fn(u64)) -> Outcome {
        Run::new(self, policy).go(progress)
    }
}

struct Run<'w, 'a> {
    w: &'w World<'a>,
    policy: &'w Policy,
    nodes: Vec<NodeView>,
    node_zone: Vec<usize>,
    resolutions: Vec<ZoneResolution>,
    zone_nodes: Vec<Vec<usize>>,
    zone_ids: Vec<ZoneId>,
    state: Vec<JobState>,
    heap: BinaryHeap<Reverse<(UnixSeconds, Ev, u32)>>,
    pending: Vec<u32>,
    held: Vec<u32>,
    ledger: CapacityLedger,
    /// While set (to `now`), only nodes where a job's run breaks no promise
    /// of a more urgent job count as fitting: the room promised to planned
    /// jobs is reserved (temporal Carbon-Kube only).
    honour_promises: Option<(UnixSeconds, Honour)>,
    /// Jobs held because no window before their latest start had room
    /// (`NoRoom`): retried, most urgent first, whenever room frees, as the
    /// gate controller replans them on every pass.
    no_room: Vec<u32>,
    node_index: HashMap<String, usize>,
    /// The jobs whose promise was booked on each node (stale entries are
    /// skipped when read).
    booked_on: Vec<Vec<u32>>,
    snap_hour: i64,
    snap: Snapshot,
    out: Outcome,
    releases_per_hour: HashMap<i64, u64>,
    plans: u64,
    ledger_hour: i64,
    /// Running jobs the `migrate` capability looks at.
    movable: Vec<u32>,
    /// The settings in force (the world's, until a retuner changes them).
    tuning: Tuning,
    /// Changes the settings at decision epochs (`World::run_retuned`).
    retuner: Option<&'w mut dyn Retuner>,
}

impl<'w, 'a> Run<'w, 'a> {
    fn new(w: &'w World<'a>, policy: &'w Policy) -> Self {
        let mut nodes = Vec::new();
        let mut node_zone = Vec::new();
        let mut resolutions = Vec::new();
        let mut zone_nodes = vec![Vec::new(); w.cluster.zones.len()];
        let mut ledger = CapacityLedger::new(HOUR);
        for (zi, z) in w.cluster.zones.iter().enumerate() {
            for n in 0..z.nodes {
                zone_nodes[zi].push(nodes.len());
                let name = format!("{}-{n}", z.zone);
                let allocatable = Resources::new(
                    i64::from(z.cpus_per_node) * 1000,
                    (z.memory_gb_per_node * 1024.0 * 1024.0 * 1024.0) as i64,
                );
                ledger.add_node(z.zone.clone(), &name, allocatable);
                nodes.push(NodeView {
                    name,
                    labels: BTreeMap::new(),
                    provider_id: None,
                    allocatable,
                    requested: Resources::new(0, 0),
                });
                node_zone.push(zi);
                resolutions.push(ZoneResolution {
                    zone: Some(z.zone.clone()),
                    via: ZoneVia::Label,
                });
            }
        }
        let hours = w.traces.hours();
        let zones = w.cluster.zones.len();
        let node_index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let n_nodes = nodes.len();
        Self {
            w,
            policy,
            nodes,
            node_zone,
            resolutions,
            zone_nodes,
            zone_ids: w.cluster.zones.iter().map(|z| z.zone.clone()).collect(),
            state: vec![JobState::default(); w.jobs.len()],
            heap: BinaryHeap::with_capacity(w.jobs.len() * 2),
            pending: Vec::new(),
            held: Vec::new(),
            booked_on: vec![Vec::new(); n_nodes],
            node_index,
            ledger,
            honour_promises: None,
            no_room: Vec::new(),
            snap_hour: -1,
            snap: Snapshot::default(),
            out: Outcome {
                policy: policy.name.clone(),
                zones: w
                    .cluster
                    .zones
                    .iter()
                    .map(|z| ZoneOutcome {
                        zone: z.zone.to_string(),
                        ..ZoneOutcome::default()
                    })
                    .collect(),
                hourly_kg: vec![0.0; hours + 1],
                hourly_cpu: vec![vec![0.0; hours + 1]; zones],
                ..Outcome::default()
            },
            releases_per_hour: HashMap::new(),
            plans: 0,
            ledger_hour: -1,
            movable: Vec::new(),
            tuning: w.tuning.clone(),
            retuner: None,
        }
    }

    fn hour_of(&self, t: UnixSeconds) -> i64 {
        (t - self.w.traces.start).div_euclid(HOUR)
    }

    /// The snapshot published at the start of the current hour.
    fn snapshot(&mut self, now: UnixSeconds) -> &Snapshot {
        let h = self.hour_of(now).clamp(0, self.w.traces.hours() as i64 - 1);
        if h != self.snap_hour {
            self.snap = self.w.forecast.snapshot(h as usize);
            self.snap_hour = h;
        }
        &self.snap
    }

    fn current(&mut self, now: UnixSeconds, z: usize) -> f64 {
        let id = self.zone_ids[z].clone();
        self.snapshot(now)
            .get(&id)
            .map_or(f64::INFINITY, |r| r.carbon_intensity.g_per_kwh())
    }

    fn push(&mut self, t: UnixSeconds, ev: Ev, j: u32) {
        self.heap.push(Reverse((t, ev, j)));
    }

    fn go(mut self, progress: &dyn Fn(u64)) -> Outcome {
        for j in self.w.jobs {
            self.push(j.arrival, Ev::Arrival, j.id);
        }
        self.schedule_retunes();
        if self.policy.migrate
            || matches!(
                self.policy.strategy,
                Strategy::ThresholdHold { .. } | Strategy::CarbonKube { temporal: true, .. }
            )
        {
            for h in 1..=self.w.traces.hours() as i64 {
                self.push(self.w.traces.start + h * HOUR, Ev::Tick, 0);
            }
        }
        let mut done = 0u64;
        while let Some(Reverse((t, ev, j))) = self.heap.pop() {
            match ev {
                Ev::Arrival => self.on_arrival(t, j),
                Ev::Release => self.on_release_timer(t, j),
                Ev::Finish => {
                    self.on_finish(t, j);
                    done += 1;
                    if done.is_multiple_of(4096) {
                        progress(4096);
                    }
                }
                Ev::Tick => self.on_tick(t),
                Ev::Retune => self.on_retune(t, j),
            }
        }
        progress(done % 4096);
        self.finish()
    }

    /// The zone the carbon-agnostic scheduler would pick now (most free room).
    fn spread_zone(&self, j: &Job) -> usize {
        self.spread_node(j, None)
            .map_or_else(|| self.emptiest_zone(), |n| self.node_zone[n])
    }

    fn emptiest_zone(&self) -> usize {
        (0..self.zone_nodes.len())
            .max_by_key(|&z| {
                self.zone_nodes[z]
                    .iter()
                    .map(|&n| {
                        self.nodes[n].allocatable.cpu_millis - self.nodes[n].requested.cpu_millis
                    })
                    .sum::<i64>()
            })
            .unwrap_or(0)
    }

    fn fits(&self, n: usize, j: &Job) -> bool {
        let node = &self.nodes[n];
        node.allocatable.cpu_millis - node.requested.cpu_millis >= j.cpu_millis as i64
            && node.allocatable.memory_bytes - node.requested.memory_bytes
                >= (j.memory_mib * 1024 * 1024) as i64
            && self.honour_promises.is_none_or(|(now, honour)| {
                let zone = &self.zone_ids[self.node_zone[n]];
                match honour {
                    Honour::Every => {
                        self.ledger
                            .fits_on_node(zone, &node.name, now, j.duration, job_requests(j))
                    }
                    Honour::MoreUrgent => self.ledger.fits_on_node_before(
                        zone,
                        &node.name,
                        now,
                        j.duration,
                        job_requests(j),
                        j.latest_start(),
                    ),
                }
            })
    }

    /// The most free CPU and the most free memory on any node (not
    /// necessarily the same node).
    fn largest_room(&self) -> (i64, i64) {
        self.nodes.iter().fold((0, 0), |(c, m), n| {
            (
                c.max(n.allocatable.cpu_millis - n.requested.cpu_millis),
                m.max(n.allocatable.memory_bytes - n.requested.memory_bytes),
            )
        })
    }

    fn free_share(&self, n: usize) -> f64 {
        let node = &self.nodes[n];
        let c = 1.0 - node.requested.cpu_millis as f64 / node.allocatable.cpu_millis.max(1) as f64;
        let m =
            1.0 - node.requested.memory_bytes as f64 / node.allocatable.memory_bytes.max(1) as f64;
        (c + m) / 2.0
    }

    /// LeastAllocated among nodes with room, in `zone` if given.
    fn spread_node(&self, j: &Job, zone: Option<usize>) -> Option<usize> {
        let mut best: Option<(f64, usize)> = None;
        let mut consider = |n: usize| {
            if self.fits(n, j) {
                let s = self.free_share(n);
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, n));
                }
            }
        };
        match zone {
            Some(z) => self.zone_nodes[z].iter().for_each(|&n| consider(n)),
            None => (0..self.nodes.len()).for_each(consider),
        }
        best.map(|(_, n)| n)
    }

    /// Carbon-Kube's placement: the policy crate's filter, then its score;
    /// ties go to the node with the most room (kube-scheduler's spread).
    fn carbon_kube_node(
        &mut self,
        now: UnixSeconds,
        j: &Job,
        zone: Option<usize>,
    ) -> Option<usize> {
        let fitting: Vec<usize> = match zone {
            Some(z) => self.zone_nodes[z]
                .iter()
                .copied()
                .filter(|&n| self.fits(n, j))
                .collect(),
            None => (0..self.nodes.len()).filter(|&n| self.fits(n, j)).collect(),
        };
        if fitting.is_empty() {
            return None;
        }
        self.snapshot(now);
        let cfg = &self.tuning.placement;
        let pod = PodView {
            name: format!("job-{}", j.id),
            namespace: "sim".into(),
            annotations: BTreeMap::new(),
            requests: Resources::new(j.cpu_millis as i64, (j.memory_mib * 1024 * 1024) as i64),
        };
        let candidates: Vec<Candidate<'_>> = fitting
            .iter()
            .map(|&n| Candidate {
                node: &self.nodes[n],
                zone: &self.resolutions[n],
            })
            .collect();
        let filtered = filter_nodes(&pod, &candidates, &self.snap, cfg, now);
        let passed: Vec<usize> = filtered.passed().collect();
        if passed.is_empty() {
            return None;
        }
        let kept: Vec<Candidate<'_>> = passed.iter().map(|&i| candidates[i]).collect();
        let scored = score_nodes(&pod, &kept, &self.snap, cfg, now);
        let mut best: Option<(u8, f64, usize)> = None;
        for (i, s) in scored.scores.iter().enumerate() {
            let n = fitting[passed[i]];
            let room = self.free_share(n);
            if best.is_none_or(|(bs, br, _)| s.score > bs || (s.score == bs && room > br)) {
                best = Some((s.score, room, n));
            }
        }
        best.map(|(_, _, n)| n)
    }

    fn choose_node(&mut self, now: UnixSeconds, id: u32) -> Option<usize> {
        let j = &self.w.jobs[id as usize];
        let preferred = self.state[id as usize].preferred;
        match self.policy.strategy.clone() {
            Strategy::Baseline
            | Strategy::ThresholdHold { .. }
            | Strategy::BestWindow
            | Strategy::CarbonKube { spatial: false, .. } => preferred
                .and_then(|z| self.spread_node(j, Some(z)))
                .or_else(|| self.spread_node(j, None)),
            Strategy::CarbonKube { spatial: true, .. } => {
                let first = match preferred {
                    Some(z) => self.carbon_kube_node(now, j, Some(z)),
                    None => None,
                };
                first.or_else(|| self.carbon_kube_node(now, j, None))
            }
            Strategy::GreenestZoneNow => {
                let mut zones: Vec<(f64, usize)> = (0..self.zone_nodes.len())
                    .map(|z| (self.current(now, z), z))
                    .collect();
                zones.sort_by(|a, b| a.0.total_cmp(&b.0));
                zones
                    .iter()
                    .find_map(|&(_, z)| self.spread_node(j, Some(z)))
            }
        }
    }

    fn on_arrival(&mut self, now: UnixSeconds, id: u32) {
        let j = &self.w.jobs[id as usize];
        match self.policy.strategy.clone() {
            Strategy::Baseline
            | Strategy::GreenestZoneNow
            | Strategy::CarbonKube {
                temporal: false, ..
            } => {
                self.release(now, id);
            }
            Strategy::CarbonKube {
                temporal: true,
                spatial,
            } => {
                let home = (!spatial).then(|| self.spread_zone(j));
                self.state[id as usize].home = home;
                let plan = self.plan(now, id, home, &self.tuning.deferral.clone(), true);
                self.apply_plan(now, id, plan, true);
            }
            Strategy::BestWindow => {
                let home = self.spread_zone(j);
                self.state[id as usize].home = Some(home);
                let cfg = best_window_config();
                let plan = self.plan(now, id, Some(home), &cfg, false);
                self.apply_plan(now, id, plan, false);
            }
            Strategy::ThresholdHold { threshold } => {
                let home = self.spread_zone(j);
                self.state[id as usize].home = Some(home);
                self.state[id as usize].preferred = Some(home);
                if self.current(now, home) <= threshold || now >= j.latest_start() {
                    self.release(now, id);
                } else {
                    self.state[id as usize].held = true;
                    self.out.deferred_jobs += 1;
                    self.held.push(id);
                    self.push(j.latest_start(), Ev::Release, id);
                }
            }
        }
    }

    fn plan(
        &mut self,
        now: UnixSeconds,
        id: u32,
        home: Option<usize>,
        cfg: &DeferralConfig,
        use_ledger: bool,
    ) -> ReleasePlan {
        self.plans += 1;
        let j = &self.w.jobs[id as usize];
        let zones: Vec<ZoneId> = match home {
            Some(z) => vec![self.zone_ids[z].clone()],
            None => Vec::new(),
        };
        self.snapshot(now);
        let req = DeferralRequest {
            now,
            deadline: j.deadline,
            expected_duration_seconds: j.duration,
            zones: &zones,
            requests: job_requests(j),
            nodes: &[],
            budget: carbon_kube_policy::budget::BudgetPressure::None,
        };
        if use_ledger {
            if self.hour_of(now) != self.ledger_hour {
                self.ledger_hour = self.hour_of(now);
                self.ledger.forget_before(now - HOUR);
            }
            plan_release(&req, &self.snap, &self.ledger, cfg)
        } else {
            plan_release(&req, &self.snap, &CapacityLedger::new(HOUR), cfg)
        }
    }

    fn zone_index(&self, z: &Option<ZoneId>) -> Option<usize> {
        z.as_ref()
            .and_then(|z| self.zone_ids.iter().position(|x| x == z))
    }

    fn apply_plan(&mut self, now: UnixSeconds, id: u32, plan: ReleasePlan, use_ledger: bool) {
        let j = &self.w.jobs[id as usize];
        let zone = self.zone_index(&plan.zone);
        let st = &mut self.state[id as usize];
        st.preferred = st.home.or(zone);
        if plan.holds(now) {
            if st.plan.is_none() {
                self.out.deferred_jobs += 1;
            }
            if use_ledger
                && plan.promises_room(now)
                && let Some(z) = &plan.zone
            {
                let booking = self.ledger.promise(
                    z,
                    plan.release_at,
                    j.duration,
                    job_requests(j),
                    plan.latest_start,
                    &[],
                );
                if let Some(n) = self
                    .ledger
                    .booked_node(&booking)
                    .and_then(|name| self.node_index.get(name).copied())
                {
                    self.booked_on[n].push(id);
                }
                self.state[id as usize].booking = Some(booking);
            }
            let t = plan.release_at;
            let no_room = plan.reason == ReleaseReason::NoRoom;
            self.state[id as usize].plan = Some(plan);
            self.push(t, Ev::Release, id);
            if no_room && use_ledger {
                self.no_room.push(id);
                self.start_no_room(now, id);
            }
        } else {
            *self
                .out
                .release_reasons
                .entry(plan.reason.as_str().to_owned())
                .or_default() += 1;
            self.release(now, id);
        }
    }

    fn on_release_timer(&mut self, now: UnixSeconds, id: u32) {
        let st = &self.state[id as usize];
        if st.released.is_some() {
            return;
        }
        match self.policy.strategy.clone() {
            Strategy::ThresholdHold { .. } => {
                self.held.retain(|&h| h != id);
                self.release(now, id);
            }
            Strategy::CarbonKube { temporal: true, .. } => {
                // Due: look again with the fresh forecast, as the gate
                // controller does; move only for a clearly better window.
                let standing = self.state[id as usize].plan.clone();
                let home = self.state[id as usize].home;
                let cfg = self.tuning.deferral.clone();
                if let Some(b) = self.state[id as usize].booking.take() {
                    self.ledger.withdraw(&b);
                }
                let fresh = self.plan(now, id, home, &cfg, true);
                let revisions = self.state[id as usize].revisions;
                // No room now: keep waiting for the room the planner found
                // (never release into a queue before the latest start).
                let no_room_now = matches!(
                    fresh.reason,
                    ReleaseReason::WaitForRoom | ReleaseReason::NoRoom
                );
                let move_it = fresh.holds(now)
                    && (no_room_now
                        || (revisions < 3
                            && standing
                                .as_ref()
                                .is_none_or(|s| should_revise(s, &fresh, &cfg))));
                if move_it {
                    self.state[id as usize].revisions += 1;
                    self.apply_plan(now, id, fresh, true);
                } else {
                    let reason = if fresh.reason == ReleaseReason::Deadline {
                        ReleaseReason::Deadline
                    } else {
                        ReleaseReason::GreenWindow
                    };
                    if let Some(z) = standing.as_ref().and_then(|s| self.zone_index(&s.zone)) {
                        self.state[id as usize].preferred =
                            self.state[id as usize].home.or(Some(z));
                    }
                    *self
                        .out
                        .release_reasons
                        .entry(reason.as_str().to_owned())
                        .or_default() += 1;
                    self.release(now, id);
                }
            }
            _ => self.release(now, id),
        }
    }

    fn on_tick(&mut self, now: UnixSeconds) {
        if self.policy.migrate {
            self.migrate_pass(now);
        }
        if let Strategy::CarbonKube { temporal: true, .. } = self.policy.strategy {
            self.replan_no_room(now);
            return;
        }
        let Strategy::ThresholdHold { threshold } = self.policy.strategy else {
            return;
        };
        let held = std::mem::take(&mut self.held);
        let mut keep = Vec::with_capacity(held.len());
        for id in held {
            if self.state[id as usize].released.is_some() {
                continue;
            }
            let home = self.state[id as usize].home.unwrap_or(0);
            if self.current(now, home) <= threshold {
                self.release(now, id);
            } else {
                keep.push(id);
            }
        }
        self.held = keep;
    }

    /// Every hour (a new snapshot), the jobs held for lack of room are
    /// planned again, most urgent first, as the gate controller replans on
    /// every pass: room may have appeared in a later window.
    fn replan_no_room(&mut self, now: UnixSeconds) {
        let mut held = std::mem::take(&mut self.no_room);
        held.retain(|&h| self.state[h as usize].released.is_none());
        held.sort_by_key(|&h| self.w.jobs[h as usize].latest_start());
        let cfg = self.tuning.deferral.clone();
        for id in held {
            let home = self.state[id as usize].home;
            let fresh = self.plan(now, id, home, &cfg, true);
            if fresh.reason == ReleaseReason::NoRoom {
                self.no_room.push(id);
            } else {
                self.apply_plan(now, id, fresh, true);
            }
        }
    }

    fn release(&mut self, now: UnixSeconds, id: u32) {
        let latest_start = self.w.jobs[id as usize].latest_start();
        let honour = matches!(
            self.policy.strategy,
            Strategy::CarbonKube { temporal: true, .. }
        ) && now < latest_start;
        if honour && !self.start_honouring(now, id) {
            // No node has room without breaking the promise of a more
            // urgent plan: a release with slack left never takes that room
            // (the gate controller releases only where the ledger has room).
            // Held as `no_room`: retried as room frees and every hour, and
            // released for good at the latest start.
            if !self.no_room.contains(&id) {
                self.no_room.push(id);
            }
            self.push(latest_start, Ev::Release, id);
            return;
        }
        self.state[id as usize].released = Some(now);
        *self.releases_per_hour.entry(self.hour_of(now)).or_default() += 1;
        if !honour && !self.try_start(now, id) {
            self.out.queued_jobs += 1;
            self.pending.push(id);
        }
    }

    /// Starts a temporal Carbon-Kube job where its run breaks no promise of
    /// a more urgent plan. Returns whether it started.
    fn start_honouring(&mut self, now: UnixSeconds, id: u32) -> bool {
        match self.honouring_node(now, id) {
            Some(n) => {
                self.start_on(now, id, n);
                true
            }
            None => false,
        }
    }

    /// Where a temporal Carbon-Kube job may start now without breaking a
    /// promise of a more urgent plan: the room its own plan reserved; else a
    /// node where it breaks no promise at all; else one where only less
    /// urgent plans give their room up (those are made again). Its own
    /// promise is withdrawn.
    fn honouring_node(&mut self, now: UnixSeconds, id: u32) -> Option<usize> {
        let j = &self.w.jobs[id as usize];
        let booking = self.state[id as usize].booking.take();
        let reserved = booking
            .as_ref()
            .and_then(|b| self.ledger.booked_node(b))
            .and_then(|name| self.node_index.get(name).copied());
        if let Some(b) = &booking {
            self.ledger.withdraw(b);
        }
        self.honour_promises = Some((now, Honour::Every));
        let mut n = reserved
            .filter(|&n| self.fits(n, j))
            .or_else(|| self.choose_node(now, id));
        if n.is_none() {
            self.honour_promises = Some((now, Honour::MoreUrgent));
            n = self.choose_node(now, id);
        }
        self.honour_promises = None;
        n
    }

    fn try_start(&mut self, now: UnixSeconds, id: u32) -> bool {
        let temporal = matches!(
            self.policy.strategy,
            Strategy::CarbonKube { temporal: true, .. }
        );
        let chosen = if temporal {
            // Where no more urgent promise breaks; past the latest start,
            // any node with room now.
            self.honouring_node(now, id)
                .or_else(|| self.choose_node(now, id))
        } else {
            self.choose_node(now, id)
        };
        let Some(n) = chosen else {
            return false;
        };
        self.start_on(now, id, n);
        true
    }

    /// Starts a job held for lack of room if some node has room for its run
    /// now, counting as free the room promised to less urgent jobs (whose
    /// plans are then made again when they come due). Returns whether it
    /// started.
    fn start_no_room(&mut self, now: UnixSeconds, id: u32) -> bool {
        if self.state[id as usize].released.is_some() {
            return true;
        }
        let j = &self.w.jobs[id as usize];
        let mut zones: Vec<usize> = match self.state[id as usize].home {
            Some(z) => vec![z],
            None => (0..self.zone_nodes.len()).collect(),
        };
        let mut greenness: Vec<(f64, usize)> =
            zones.iter().map(|&z| (self.current(now, z), z)).collect();
        greenness.sort_by(|a, b| a.0.total_cmp(&b.0));
        zones = greenness.into_iter().map(|(_, z)| z).collect();
        let need = job_requests(j);
        let found = zones.iter().find_map(|&z| {
            self.zone_nodes[z]
                .iter()
                .copied()
                .filter(|&n| {
                    self.fits(n, j)
                        && self.ledger.fits_on_node_before(
                            &self.zone_ids[z],
                            &self.nodes[n].name,
                            now,
                            j.duration,
                            need,
                            j.latest_start(),
                        )
                })
                .min_by_key(|&n| {
                    self.nodes[n].allocatable.cpu_millis - self.nodes[n].requested.cpu_millis
                })
        });
        let Some(n) = found else {
            return false;
        };
        self.state[id as usize].released = Some(now);
        *self.releases_per_hour.entry(self.hour_of(now)).or_default() += 1;
        *self
            .out
            .release_reasons
            .entry(ReleaseReason::NoRoom.as_str().to_owned())
            .or_default() += 1;
        self.start_on(now, id, n);
        true
    }

    fn start_on(&mut self, now: UnixSeconds, id: u32, n: usize) {
        let j = &self.w.jobs[id as usize];
        let node = &mut self.nodes[n];
        node.requested = node.requested.saturating_add(Resources::new(
            j.cpu_millis as i64,
            (j.memory_mib * 1024 * 1024) as i64,
        ));
        let st = &mut self.state[id as usize];
        st.started = Some(now);
        st.node = n;
        let z = self.node_zone[n];
        if matches!(
            self.policy.strategy,
            Strategy::CarbonKube { temporal: true, .. }
        ) {
            // The run is booked on the node it really landed on, until its
            // expected end (what the gate controller learns from bound pods).
            let name = &self.nodes[n].name;
            self.ledger.occupy(
                &self.zone_ids[z],
                name,
                now,
                Some(now + j.duration),
                job_requests(j),
            );
        }
        self.push(now + j.duration, Ev::Finish, id);
        if self.policy.migrate {
            self.movable.push(id);
        }
        if matches!(
            self.policy.strategy,
            Strategy::CarbonKube { temporal: true, .. }
        ) {
            self.replan_broken_promises(now, n);
        }
    }

    /// The plans whose room on node `n` a more urgent run just took are
    /// made again now, most urgent first, as the gate controller does on
    /// its next pass (it rebuilds the ledger and replans every plan whose
    /// booking no longer fits).
    fn replan_broken_promises(&mut self, now: UnixSeconds, n: usize) {
        let booked = std::mem::take(&mut self.booked_on[n]);
        let mut keep = Vec::with_capacity(booked.len());
        let mut broken = Vec::new();
        for id in booked {
            let st = &self.state[id as usize];
            let Some(b) = st.booking.as_ref().filter(|_| st.released.is_none()) else {
                continue;
            };
            if self.ledger.booked_node(b) != Some(self.nodes[n].name.as_str()) {
                continue;
            }
            if self.ledger.still_fits(b) {
                keep.push(id);
            } else {
                broken.push(id);
            }
        }
        self.booked_on[n].extend(keep);
        broken.sort_by_key(|&id| self.w.jobs[id as usize].latest_start());
        let cfg = self.tuning.deferral.clone();
        for id in broken {
            let st = &mut self.state[id as usize];
            if st.released.is_some() || st.started.is_some() {
                continue;
            }
            if let Some(b) = st.booking.take() {
                self.ledger.withdraw(&b);
            }
            self.out.broken_promises += 1;
            let home = self.state[id as usize].home;
            let fresh = self.plan(now, id, home, &cfg, true);
            self.apply_plan(now, id, fresh, true);
        }
    }

    fn on_finish(&mut self, now: UnixSeconds, id: u32) {
        if !self.state[id as usize].moves.finishes_at(now) {
            return; // the end of a run the job was moved from
        }
        let j = &self.w.jobs[id as usize];
        let st = &self.state[id as usize];
        let n = st.node;
        let start = st.moves.run_start().or(st.started).unwrap_or(now);
        let node = &mut self.nodes[n];
        node.requested = node.requested.saturating_sub(Resources::new(
            j.cpu_millis as i64,
            (j.memory_mib * 1024 * 1024) as i64,
        ));
        let z = self.node_zone[n];
        let mut kg = 0.0;
        let hours = self.out.hourly_kg.len() as i64;
        let cpus = j.vcpus() as f32;
        let (hourly_kg, hourly_cpu) = (&mut self.out.hourly_kg, &mut self.out.hourly_cpu[z]);
        self.w
            .for_each_hour_for(j, z, start, now - start, |h, g, overlap| {
                kg += g / 1000.0;
                let b = h.clamp(0, hours - 1) as usize;
                hourly_kg[b] += g / 1000.0;
                hourly_cpu[b] += cpus * overlap as f32;
            });
        let kwh = self.w.job_kw(j, z) * (now - start) as f64 / HOUR as f64;
        self.out.kg_co2 += kg;
        self.out.energy_kwh += kwh;
        let zo = &mut self.out.zones[z];
        zo.kg_co2 += kg;
        zo.energy_kwh += kwh;
        zo.jobs += 1;
        zo.cpu_hours += j.vcpus() * (now - start) as f64 / HOUR as f64;
        if now > j.deadline {
            self.out.deadline_misses += 1;
            self.out.missed_jobs.push(id);
            if std::env::var_os("CARBON_KUBE_SIM_DEBUG").is_some() {
                let st = &self.state[id as usize];
                eprintln!(
                    "{}: job {} ({} mCPU, {} s) missed its deadline by {} s: arrived {}, released {:?}, started {}, plan {:?}",
                    self.policy.name,
                    j.id,
                    j.cpu_millis,
                    j.duration,
                    now - j.deadline,
                    j.arrival,
                    st.released,
                    start,
                    st.plan
                );
            }
        }
        // Room freed: start waiting jobs, oldest release first. A job bigger
        // than the largest free room anywhere is skipped without asking the
        // policy (it could not be placed anyway).
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let mut still = Vec::with_capacity(pending.len());
            let mut room = self.largest_room();
            for p in pending {
                let pj = &self.w.jobs[p as usize];
                let fits_somewhere = pj.cpu_millis as i64 <= room.0
                    && (pj.memory_mib * 1024 * 1024) as i64 <= room.1;
                if fits_somewhere && self.try_start(now, p) {
                    room = self.largest_room();
                } else {
                    still.push(p);
                }
            }
            self.pending = still;
        }
        if !self.no_room.is_empty() {
            let mut held = std::mem::take(&mut self.no_room);
            held.retain(|&h| self.state[h as usize].released.is_none());
            held.sort_by_key(|&h| self.w.jobs[h as usize].latest_start());
            let mut still = Vec::with_capacity(held.len());
            for h in held {
                if !self.start_no_room(now, h) {
                    still.push(h);
                }
            }
            self.no_room = still;
        }
    }

    fn finish(mut self) -> Outcome {
        self.close_migrations();
        if std::env::var_os("CARBON_KUBE_SIM_DEBUG").is_some() {
            eprintln!("{}: {} release plans", self.policy.name, self.plans);
        }
        let mut delays: Vec<f64> = self
            .w
            .jobs
            .iter()
            .zip(&self.state)
            .map(|(j, s)| (s.started.unwrap_or(j.arrival) - j.arrival) as f64 / HOUR as f64)
            .collect();
        for (id, st) in self.state.iter().enumerate() {
            if st.started.is_none() {
                self.out.deadline_misses += 1;
                self.out.missed_jobs.push(id as u32);
            }
        }
        delays.sort_by(f64::total_cmp);
        if !delays.is_empty() {
            self.out.mean_delay_hours = delays.iter().sum::<f64>() / delays.len() as f64;
            let idx = ((delays.len() as f64 * 0.95).ceil() as usize).clamp(1, delays.len()) - 1;
            self.out.p95_delay_hours = delays[idx];
        }
        self.out.peak_releases_per_hour =
            self.releases_per_hour.values().copied().max().unwrap_or(0);
        self.out
    }
}

/// Which promises a placement must keep (temporal Carbon-Kube).
#[derive(Clone, Copy, Debug)]
enum Honour {
    /// Every promise booked on the node.
    Every,
    /// Those of plans at least as urgent as the job (earlier or equal latest
    /// start); less urgent plans give their room up.
    MoreUrgent,
}

/// What a job asks of one node.
fn job_requests(j: &Job) -> Resources {
    Resources::new(j.cpu_millis as i64, (j.memory_mib * 1024 * 1024) as i64)
}

/// "Let's Wait Awhile": the lowest forecast window, taken at face value: no
/// error margin, no minimum saving, no capacity ledger, no safety margin.
fn best_window_config() -> DeferralConfig {
    DeferralConfig {
        error_margin_per_hour: 0.0,
        min_saving_fraction: 0.0,
        capacity_headroom: 1.0,
        start_safety_seconds: 0,
        ..DeferralConfig::default()
    }
}
