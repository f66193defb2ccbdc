//! Settings chosen during a replay: a learned policy acts at every decision
//! epoch (default every 6 hours of simulated time, `--decision-hours`), as
//! the tuner's CronJob re-tunes a cluster every 6 hours from what its
//! controllers see.
//!
//! At each epoch [`EpochPolicy`] (a simulator [`Retuner`]) computes the state
//! with [`crate::state::observe_epoch`], asks the policy for a setting, and
//! turns it into the simulator's settings through the path a cluster takes:
//! the ConfigMap keys the tuner publishes ([`crate::output::overrides`]),
//! read back with the components' codec
//! (`carbon_kube_policy::overrides::RuntimeOverrides`) and laid over the base
//! settings as the extender (placement), the gate controller (deferral) and
//! the migrator (migration) lay them ([`Knobs::apply`]). The replay then
//! calls the policy crate's placement, deferral and migration functions with
//! them, the functions those components call.
//!
//! [`step_rewards`] splits an episode's reward into one reward per epoch,
//! so that PPO can tell which decision paid.

use carbon_kube_sim::engine::{EpochView, Outcome, Retuner, Tuning};
use carbon_kube_sim::trace::HOUR;
use carbon_kube_sim::workload::Job;
use serde::Serialize;

use crate::episode::{Knobs, MISS_PENALTY, Space};
use crate::state::observe_epoch;

/// One decision of an [`EpochPolicy`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// When (Unix seconds).
    pub at: i64,
    /// The setting chosen.
    pub knobs: Knobs,
}

/// A state → setting function acting at every decision epoch of a replay.
pub struct EpochPolicy<'p> {
    /// Seconds between epochs.
    pub every: i64,
    /// The policy: state → point of the unit cube.
    pub act: &'p mut dyn FnMut(&[f64]) -> Vec<f64>,
    /// Which knobs a point sets.
    pub space: Space,
    /// The settings the knobs are laid over (the components' flags).
    pub base: Tuning,
    /// Every decision, in order.
    pub decisions: Vec<Decision>,
    /// The state at each decision.
    pub states: Vec<Vec<f64>>,
    /// Settings the components' codec refused (the current setting stayed);
    /// none expected: every point of the cube is a valid setting.
    pub refused: usize,
}

impl<'p> EpochPolicy<'p> {
    /// A policy acting every `every` seconds over `base`.
    pub fn new(
        every: i64,
        space: Space,
        base: Tuning,
        act: &'p mut dyn FnMut(&[f64]) -> Vec<f64>,
    ) -> Self {
        Self {
            every,
            act,
            space,
            base,
            decisions: Vec::new(),
            states: Vec::new(),
            refused: 0,
        }
    }
}

impl Retuner for EpochPolicy<'_> {
    fn every_seconds(&self) -> i64 {
        self.every
    }

    fn retune(&mut self, view: &EpochView<'_, '_>) -> Option<Tuning> {
        let state = observe_epoch(view).to_vec();
        let knobs = Knobs::from_point(&(self.act)(&state), self.space);
        let tuning = knobs.apply(&self.base);
        self.decisions.push(Decision {
            at: view.now,
            knobs,
        });
        self.states.push(state);
        match tuning {
            Ok(t) => Some(t),
            Err(_) => {
                // As a component keeps its settings on a bad ConfigMap.
                self.refused += 1;
                None
            }
        }
    }
}

/// One reward per decision, summing to the episode's saving minus the
/// penalty for the deadline misses it caused: decision `k` gets the carbon
/// the policy saved against the baseline in the hours from its epoch to the
/// next (as a share of the baseline's total; the last decision also gets
/// the tail), minus [`MISS_PENALTY`] per job arriving in those hours that
/// missed its deadline when the baseline did not, per job of the episode.
pub fn step_rewards(
    policy: &Outcome,
    baseline: &Outcome,
    decisions: &[Decision],
    trace_start: i64,
    jobs: &[Job],
) -> Vec<f64> {
    let n = decisions.len();
    if n == 0 {
        return Vec::new();
    }
    let total = baseline.kg_co2;
    // The decision in force at time t.
    let step_of = |t: i64| decisions.partition_point(|d| d.at <= t).saturating_sub(1);
    let mut rewards = vec![0.0; n];
    let hours = policy.hourly_kg.len().max(baseline.hourly_kg.len());
    if total > 0.0 {
        for h in 0..hours {
            let saved = baseline.hourly_kg.get(h).copied().unwrap_or(0.0)
                - policy.hourly_kg.get(h).copied().unwrap_or(0.0);
            // Hours of a replay: exact in i64.
            #[allow(clippy::cast_possible_wrap)]
            let t = trace_start + h as i64 * HOUR;
            rewards[step_of(t)] += saved / total;
        }
    }
    let base_missed: std::collections::HashSet<u32> =
        baseline.missed_jobs.iter().copied().collect();
    // Job counts are far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    let per_miss = MISS_PENALTY / jobs.len().max(1) as f64;
    for id in &policy.missed_jobs {
        if base_missed.contains(id) {
            continue;
        }
        if let Some(j) = jobs.get(*id as usize) {
            rewards[step_of(j.arrival)] -= per_miss;
        }
    }
    rewards
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(at: i64) -> Decision {
        Decision {
            at,
            knobs: Knobs::current(),
        }
    }

    fn job(arrival: i64) -> Job {
        Job {
            id: 0,
            arrival,
            duration: HOUR,
            cpu_millis: 1000,
            memory_mib: 512,
            deadline: arrival + 2 * HOUR,
            interruptible: false,
        }
    }

    #[test]
    fn step_rewards_split_the_saving_by_epoch_and_charge_misses_to_the_arrival() {
        let baseline = Outcome {
            kg_co2: 10.0,
            hourly_kg: vec![1.0, 1.0, 4.0, 4.0, 0.0],
            missed_jobs: vec![0],
            ..Outcome::default()
        };
        let policy = Outcome {
            kg_co2: 6.0,
            hourly_kg: vec![0.0, 0.0, 1.0, 1.0, 4.0],
            missed_jobs: vec![0, 1],
            ..Outcome::default()
        };
        // Two epochs: hours 0-1 and hours 2-4.
        let decisions = [decision(0), decision(2 * HOUR)];
        let jobs = [job(0), job(3 * HOUR)];
        let r = step_rewards(&policy, &baseline, &decisions, 0, &jobs);
        // Hours 0-1 saved 2 kg; hours 2-4 saved 6 and lost 4.
        // Job 1 (arrived in the second epoch) missed, the baseline's did not:
        // 20 / 2 jobs.
        assert!((r[0] - 0.2).abs() < 1e-12, "{r:?}");
        assert!((r[1] - (0.2 - 10.0)).abs() < 1e-12, "{r:?}");
        // The sum is the saving (0.4) minus the caused miss.
        assert!((r.iter().sum::<f64>() - (0.4 - 10.0)).abs() < 1e-12);
    }
}
