//! The `migrate` capability: running jobs move between zones mid-run when
//! `carbon_kube_policy::migration::decide_migration` (the function the
//! migrator calls) says the move pays.
//!
//! Every simulated hour (a new snapshot, the migrator's cycle) each running
//! job is put to the rule as the migrator puts a Job's pod:
//!
//! - kind: [`WorkloadKind::Batch`] (from [`eligibility`]: a Job that
//!   recreates its pod), so the move costs a restart
//!   (`restartSeconds` at full power in the target) plus the work since the
//!   last checkpoint, redone. Interruptible jobs checkpoint every
//!   [`Tuning::checkpoint_seconds`](super::Tuning) of progress; the others
//!   lose everything since their (re)start;
//! - expected remaining run: the true one (as the deferral planner is given
//!   the true duration); deadline: the job's. The rule refuses a move whose
//!   replacement (restart + lost work + remaining run) would finish after
//!   the deadline;
//! - candidates: every node, with its current requests (the rule keeps only
//!   nodes with room); with the deferral planner on, a target node must also
//!   keep the room promised to planned jobs (the capacity ledger), else the
//!   rule is asked again over the nodes that do;
//! - history: the job's own moves (per-job memory and dwell: a replacement
//!   is a new pod).
//!
//! A move ends the run where it is (its emissions so far are booked in the
//! source zone), frees the node, and starts the replacement on the rule's
//! best target node at once; the replacement's run is restart + lost work +
//! remaining. Freed room is used by the next job that finishes' queue pass.

use std::collections::BTreeMap;

use carbon_kube_model::UnixSeconds;
use carbon_kube_policy::migration::{
    MigrationDecision, MigrationPlan, MigrationRequest, MoveHistory, OwnerKind, OwnerMove,
    PodFacts, WorkloadKind, decide_migration, eligibility, lost_work_seconds,
};
use carbon_kube_policy::placement::{Candidate, PodView};
use carbon_kube_policy::zone_map::Resources;
use serde::Serialize;

use super::{Ev, Run, Strategy, job_requests};
use crate::trace::HOUR;

/// What moving running jobs did in one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MigrationOutcome {
    /// Moves made.
    pub migrations: u64,
    /// Jobs moved at least once.
    pub migrated_jobs: u64,
    /// Pod-hours of the workload that ran (each job's duration, once).
    pub pod_hours: f64,
    /// Moves per 1,000 pod-hours.
    pub migrations_per_1000_pod_hours: f64,
    /// Energy thrown away: lost work (run in the source, redone) plus
    /// restarts, kWh.
    pub wasted_kwh: f64,
    /// Of which lost work, kWh.
    pub lost_work_kwh: f64,
    /// Of which restarts, kWh.
    pub restart_kwh: f64,
    /// Emissions of the wasted energy (actual intensities), kg.
    pub wasted_kg_co2: f64,
    /// The rule's own estimate of the net saving of the moves made
    /// (forecast saving − cost), kg.
    pub estimated_net_saving_kg: f64,
    /// Moved jobs that finished after their deadline (the rule never plans
    /// such a move; non-zero only if a replacement waited, which the
    /// simulator never makes it do).
    pub deadline_misses_of_moved_jobs: u64,
    /// Emissions saved over the same policy without migration, percent of
    /// its emissions (filled in by the report when `carbon-kube` ran too).
    pub extra_saving_vs_carbon_kube_pct: Option<f64>,
    /// The same, kg.
    pub extra_saving_vs_carbon_kube_kg: Option<f64>,
    /// The rule's decisions, by the migrator's `result` label.
    pub decisions: BTreeMap<String, u64>,
}

impl MigrationOutcome {
    /// A few lines for the report.
    pub fn describe(&self) -> String {
        let extra = match (
            self.extra_saving_vs_carbon_kube_pct,
            self.extra_saving_vs_carbon_kube_kg,
        ) {
            (Some(p), Some(kg)) => {
                format!("{p:.2} % ({kg:.1} kg) less than carbon-kube without migration")
            }
            _ => "(run carbon-kube too for the saving over it)".to_owned(),
        };
        let decisions: Vec<String> = self
            .decisions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "{extra}; {} migrations of {} jobs ({:.2} per 1,000 pod-hours of {:.0}); wasted energy {:.1} kWh (lost work {:.1}, restarts {:.1}), {:.2} kg; the rule's own estimate of the net saving {:.1} kg; deadline misses of moved jobs: {}\n  hourly decisions about running jobs: {}",
            self.migrations,
            self.migrated_jobs,
            self.migrations_per_1000_pod_hours,
            self.pod_hours,
            self.wasted_kwh,
            self.lost_work_kwh,
            self.restart_kwh,
            self.wasted_kg_co2,
            self.estimated_net_saving_kg,
            self.deadline_misses_of_moved_jobs,
            decisions.join(", ")
        )
    }
}

/// A job's moves.
#[derive(Clone, Debug, Default)]
pub(super) struct JobMoves {
    /// Start of the current run when the job was moved.
    run_start: Option<UnixSeconds>,
    /// When the current run's restart ends (progress starts).
    restart_until: Option<UnixSeconds>,
    /// End of the current run when the job was moved.
    finish_at: Option<UnixSeconds>,
    /// The job has finished.
    done: bool,
    /// Its moves, oldest first.
    moves: Vec<OwnerMove>,
}

impl JobMoves {
    /// Whether a finish event at `now` ends the job's current run (and
    /// marks it finished); false for the end of a run it was moved from.
    pub(super) fn finishes_at(&mut self, now: UnixSeconds) -> bool {
        if self.done || self.finish_at.is_some_and(|t| t != now) {
            return false;
        }
        self.done = true;
        true
    }

    /// Start of the current run, if the job was moved.
    pub(super) fn run_start(&self) -> Option<UnixSeconds> {
        self.run_start
    }
}

/// A move the rule decided, with what the simulator needs to make it.
struct Move {
    id: u32,
    plan: MigrationPlan,
    lost_seconds: i64,
    remaining_seconds: i64,
}

impl Run<'_, '_> {
    /// One migrator cycle at `now`.
    pub(super) fn migrate_pass(&mut self, now: UnixSeconds) {
        self.snapshot(now);
        let mut movable = std::mem::take(&mut self.movable);
        movable.retain(|&id| !self.state[id as usize].moves.done);
        for &id in &movable {
            if let Some(m) = self.decide(now, id, false) {
                self.make_move(now, m);
            }
        }
        self.movable = movable;
    }

    fn temporal(&self) -> bool {
        matches!(
            self.policy.strategy,
            Strategy::CarbonKube { temporal: true, .. }
        )
    }

    /// Asks the rule about job `id`; with `keep_promises`, only nodes whose
    /// promised room the replacement's run would not take are candidates.
    fn decide(&mut self, now: UnixSeconds, id: u32, keep_promises: bool) -> Option<Move> {
        let w = self.w;
        let j = &w.jobs[id as usize];
        let st = &self.state[id as usize];
        let first_start = st.started?;
        let run_start = st.moves.run_start.unwrap_or(first_start);
        let end = st.moves.finish_at.unwrap_or(first_start + j.duration);
        if end <= now {
            return None;
        }
        let facts = PodFacts {
            namespace: "sim".into(),
            owner: Some(OwnerKind::Job),
            opted_in: true,
            job_recreates: true,
            ..PodFacts::default()
        };
        let kind = eligibility(&facts).ok()?;
        debug_assert_eq!(kind, WorkloadKind::Batch);
        let progress_from = st.moves.restart_until.unwrap_or(run_start);
        let every = w.tuning.checkpoint_seconds.max(1);
        let last_checkpoint = (j.interruptible && now >= progress_from)
            .then(|| progress_from + (now - progress_from) / every * every);
        let pod = PodView {
            name: format!("job-{}", j.id),
            namespace: "sim".into(),
            annotations: BTreeMap::new(),
            requests: job_requests(j),
        };
        let node = st.node;
        let z = self.node_zone[node];
        let remaining = end - now;
        let restart = w.tuning.migration.restart_seconds;
        let candidates: Vec<Candidate<'_>> = (0..self.nodes.len())
            .filter(|&n| {
                !keep_promises || {
                    let nz = self.node_zone[n];
                    // The replacement's longest run: restart + everything
                    // since the start + the rest.
                    let run = restart + (now - run_start) + remaining;
                    self.ledger.fits_on_node(
                        &self.zone_ids[nz],
                        &self.nodes[n].name,
                        now,
                        run,
                        job_requests(j),
                    )
                }
            })
            .map(|n| Candidate {
                node: &self.nodes[n],
                zone: &self.resolutions[n],
            })
            .collect();
        let req = MigrationRequest {
            now,
            pod: &pod,
            kind,
            started_at: run_start,
            last_checkpoint,
            expected_remaining_seconds: Some(remaining),
            deadline: Some(j.deadline),
            current_node: &self.nodes[node].name,
            current_zone: Some(&self.zone_ids[z]),
            candidates: &candidates,
            history: MoveHistory {
                pod_last_moved: st.moves.moves.last().map(|m| m.at),
                owner_moves: &st.moves.moves,
                owner_replicas: 1,
            },
        };
        let lost_seconds = lost_work_seconds(&req);
        let decision = decide_migration(
            &req,
            &self.snap,
            &self.tuning.placement,
            &w.cluster.zones[z].energy,
            &self.tuning.migration,
        );
        let label = decision.metric_label();
        let plan = match decision {
            MigrationDecision::Migrate(plan) => plan,
            MigrationDecision::Skip { .. } => {
                self.count(label);
                return None;
            }
        };
        // With the planner on, the target must keep the room promised to
        // planned jobs; if the rule's best does not, ask it again over the
        // nodes that do.
        if self.temporal()
            && !keep_promises
            && self.promise_breaking(now, j, &plan, lost_seconds, remaining)
        {
            return self.decide(now, id, true);
        }
        self.count(label);
        Some(Move {
            id,
            plan,
            lost_seconds,
            remaining_seconds: remaining,
        })
    }

    /// Whether the plan's best node would take room promised to planned jobs.
    fn promise_breaking(
        &self,
        now: UnixSeconds,
        j: &crate::workload::Job,
        plan: &MigrationPlan,
        lost: i64,
        remaining: i64,
    ) -> bool {
        let run = self.w.tuning.migration.restart_seconds + lost + remaining;
        plan.target_nodes.first().is_none_or(|name| {
            !self
                .ledger
                .fits_on_node(&plan.target_zone, name, now, run, job_requests(j))
        })
    }

    fn count(&mut self, label: &str) {
        let m = self
            .out
            .migration
            .get_or_insert_with(MigrationOutcome::default);
        *m.decisions.entry(label.to_owned()).or_default() += 1;
    }

    /// Moves job `m.id` to the plan's best node now.
    fn make_move(&mut self, now: UnixSeconds, m: Move) {
        let w = self.w;
        let id = m.id as usize;
        let j = &w.jobs[id];
        let Some(target) = m
            .plan
            .target_nodes
            .first()
            .and_then(|name| self.node_index.get(name).copied())
        else {
            return;
        };
        let st = &self.state[id];
        let Some(first_start) = st.started else {
            return;
        };
        let from_node = st.node;
        let run_start = st.moves.run_start.unwrap_or(first_start);
        let old_end = st.moves.finish_at.unwrap_or(first_start + j.duration);
        let (zs, zt) = (self.node_zone[from_node], self.node_zone[target]);
        let restart = w.tuning.migration.restart_seconds;
        let new_end = now + restart + m.lost_seconds + m.remaining_seconds;
        // The run cut short: its emissions are booked in the source zone.
        let hours = self.out.hourly_kg.len() as i64;
        let cpus = j.vcpus() as f32;
        let mut kg = 0.0;
        {
            let (hourly_kg, hourly_cpu) = (&mut self.out.hourly_kg, &mut self.out.hourly_cpu[zs]);
            w.for_each_hour_for(j, zs, run_start, now - run_start, |h, g, overlap| {
                kg += g / 1000.0;
                let b = h.clamp(0, hours - 1) as usize;
                hourly_kg[b] += g / 1000.0;
                hourly_cpu[b] += cpus * overlap as f32;
            });
        }
        let ran_h = (now - run_start) as f64 / HOUR as f64;
        let kwh = w.job_kw(j, zs) * ran_h;
        self.out.kg_co2 += kg;
        self.out.energy_kwh += kwh;
        let zo = &mut self.out.zones[zs];
        zo.kg_co2 += kg;
        zo.energy_kwh += kwh;
        zo.cpu_hours += j.vcpus() * ran_h;
        // Wasted: the lost work (run in the source) and the restart (in the target).
        let mut wasted_g = 0.0;
        w.for_each_hour_for(j, zs, now - m.lost_seconds, m.lost_seconds, |_, g, _| {
            wasted_g += g;
        });
        w.for_each_hour_for(j, zt, now, restart, |_, g, _| wasted_g += g);
        let lost_kwh = w.job_kw(j, zs) * m.lost_seconds as f64 / HOUR as f64;
        let restart_kwh = w.job_kw(j, zt) * restart as f64 / HOUR as f64;
        // Room: freed on the source node, taken on the target.
        let need = job_requests(j);
        self.nodes[from_node].requested = self.nodes[from_node].requested.saturating_sub(need);
        self.nodes[target].requested = self.nodes[target].requested.saturating_add(need);
        if self.temporal() {
            // What the gate controller learns from bound pods: the evicted
            // pod no longer occupies its node; the replacement occupies the
            // target until its expected end.
            let from = self.nodes[from_node].name.clone();
            let to = self.nodes[target].name.clone();
            self.ledger.occupy(
                &self.zone_ids[zs],
                &from,
                now,
                Some(old_end),
                Resources::new(-need.cpu_millis, -need.memory_bytes),
            );
            self.ledger
                .occupy(&self.zone_ids[zt], &to, now, Some(new_end), need);
        }
        let st = &mut self.state[id];
        let first_move = st.moves.moves.is_empty();
        st.node = target;
        st.moves.run_start = Some(now);
        st.moves.restart_until = Some(now + restart);
        st.moves.finish_at = Some(new_end);
        st.moves.moves.push(OwnerMove {
            at: now,
            from: self.zone_ids[zs].clone(),
            to: self.zone_ids[zt].clone(),
        });
        if new_end != old_end {
            self.push(new_end, Ev::Finish, m.id);
        }
        let o = self
            .out
            .migration
            .get_or_insert_with(MigrationOutcome::default);
        o.migrations += 1;
        o.migrated_jobs += u64::from(first_move);
        o.lost_work_kwh += lost_kwh;
        o.restart_kwh += restart_kwh;
        o.wasted_kwh += lost_kwh + restart_kwh;
        o.wasted_kg_co2 += wasted_g / 1000.0;
        o.estimated_net_saving_kg += m.plan.numbers.net_grams() / 1000.0;
    }

    /// Totals at the end of the run.
    pub(super) fn close_migrations(&mut self) {
        if !self.policy.migrate {
            return;
        }
        let pod_hours: f64 = self
            .w
            .jobs
            .iter()
            .zip(&self.state)
            .filter(|(_, s)| s.started.is_some())
            .map(|(j, _)| j.duration as f64 / HOUR as f64)
            .sum();
        let missed_moved = self
            .out
            .missed_jobs
            .iter()
            .filter(|&&id| !self.state[id as usize].moves.moves.is_empty())
            .count() as u64;
        let m = self
            .out
            .migration
            .get_or_insert_with(MigrationOutcome::default);
        m.pod_hours = pod_hours;
        m.migrations_per_1000_pod_hours = if pod_hours > 0.0 {
            1000.0 * m.migrations as f64 / pod_hours
        } else {
            0.0
        };
        m.deadline_misses_of_moved_jobs = missed_moved;
    }
}
