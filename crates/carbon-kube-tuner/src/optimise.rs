//! The optimisers, behind one trait. A tuning [`Problem`] is a set of
//! replays (episode × forecast-error seed); a point of the unit cube is a
//! knob setting. Static optimisers (grid search, CMA-ES) maximise the mean
//! reward over all replays of one setting kept for the whole replay and
//! return it; PPO ([`crate::ppo::Ppo`]) learns a policy from state to
//! setting and acts at every decision epoch of a replay
//! ([`Problem::rollout`]). Both spend the same budget of replays.

use cmaes::{CMAESOptions, DVector, Mode};

/// What the optimisers tune on: replays with their states and rewards.
pub trait Problem {
    /// Dimensions of a setting (the unit cube `[0, 1]^dims`).
    fn dims(&self) -> usize;
    /// Number of replays (contexts).
    fn contexts(&self) -> usize;
    /// The state of a one-decision replay (the default [`Problem::rollout`]).
    fn state(&self, _context: usize) -> Vec<f64> {
        Vec::new()
    }
    /// The reward of `setting` kept for the whole of replay `context` (one
    /// simulator run).
    fn reward(&mut self, context: usize, setting: &[f64]) -> f64;
    /// Replays `context` with `act` choosing the setting at every decision
    /// epoch from the state seen then (one simulator run); one reward per
    /// decision, in order. The default: one decision, from
    /// [`Problem::state`].
    fn rollout(&mut self, context: usize, act: &mut dyn FnMut(&[f64]) -> Vec<f64>) -> Vec<f64> {
        let state = self.state(context);
        let setting = act(&state);
        vec![self.reward(context, &setting)]
    }
}

/// A learned mapping from state to setting.
pub trait StatePolicy {
    /// The setting (in the unit cube) for `state`.
    fn act(&self, state: &[f64]) -> Vec<f64>;
}

/// What an optimiser returns.
pub enum Tuned {
    /// One setting for every state.
    Static(Vec<f64>),
    /// A setting per state, with what each training update saw.
    StateDependent {
        /// The learned policy.
        policy: Box<dyn StatePolicy>,
        /// One entry per update.
        updates: Vec<UpdateStats>,
    },
}

/// What one update of a learning optimiser saw and did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStats {
    /// Replays used so far.
    pub replays: usize,
    /// Decisions (steps) collected for this update.
    pub decisions: usize,
    /// Mean reward of the replays collected for this update (sum of their
    /// decisions' rewards; sampled settings, so below what the policy's
    /// mean setting gets).
    pub mean_reward: f64,
    /// Mean total loss over the update's minibatches (finite when training
    /// went well).
    pub loss: f64,
    /// Mean standard deviation of the policy after the update.
    pub std: f64,
}

/// A maximiser over `[0, 1]^dims`.
pub trait Optimiser {
    /// Name in reports.
    fn name(&self) -> &'static str;

    /// Tunes on `problem` with at most `budget` settings' worth of replays
    /// (`budget × problem.contexts()` simulator runs). The default:
    /// [`Optimiser::maximise`] of the mean reward over every replay, one
    /// static setting.
    fn tune(&mut self, problem: &mut dyn Problem, budget: usize) -> Tuned {
        let n = problem.contexts().max(1);
        let (x, _) = self.maximise(problem.dims(), budget, &mut |x| {
            // A handful of replays: exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let mean = (0..n).map(|c| problem.reward(c, x)).sum::<f64>() / n as f64;
            mean
        });
        Tuned::Static(x)
    }

    /// Maximises `reward` with at most `budget` calls; returns the best
    /// point seen and its reward.
    fn maximise(
        &mut self,
        dims: usize,
        budget: usize,
        reward: &mut dyn FnMut(&[f64]) -> f64,
    ) -> (Vec<f64>, f64);
}

/// The best static setting on a regular grid: `levels` values per
/// dimension, the most that fit the budget (at least 2).
#[derive(Clone, Copy, Debug, Default)]
pub struct GridSearch;

impl Optimiser for GridSearch {
    fn name(&self) -> &'static str {
        "grid"
    }

    fn maximise(
        &mut self,
        dims: usize,
        budget: usize,
        reward: &mut dyn FnMut(&[f64]) -> f64,
    ) -> (Vec<f64>, f64) {
        let dims32 = u32::try_from(dims).unwrap_or(u32::MAX);
        let mut levels = 2usize;
        while (levels + 1)
            .checked_pow(dims32)
            .is_some_and(|n| n <= budget)
        {
            levels += 1;
        }
        let total = levels
            .checked_pow(dims32)
            .unwrap_or(usize::MAX)
            .min(budget.max(1));
        let mut best = (vec![0.5; dims], f64::NEG_INFINITY);
        for i in 0..total {
            let mut rest = i;
            let point: Vec<f64> = (0..dims)
                .map(|_| {
                    let l = rest % levels;
                    rest /= levels;
                    // levels is small: exact in f64.
                    #[allow(clippy::cast_precision_loss)]
                    let v = l as f64 / (levels - 1) as f64;
                    v
                })
                .collect();
            let r = reward(&point);
            if r > best.1 {
                best = (point, r);
            }
        }
        best
    }
}

/// CMA-ES (the `cmaes` crate) from the middle of the cube, step 0.3,
/// points clamped into the cube.
#[derive(Clone, Copy, Debug)]
pub struct CmaEs {
    /// Seed of the sampler.
    pub seed: u64,
}

impl Optimiser for CmaEs {
    fn name(&self) -> &'static str {
        "cma-es"
    }

    fn maximise(
        &mut self,
        dims: usize,
        budget: usize,
        reward: &mut dyn FnMut(&[f64]) -> f64,
    ) -> (Vec<f64>, f64) {
        let mut best = (vec![0.5; dims], f64::NEG_INFINITY);
        let mut calls = 0usize;
        let mut objective = |x: &DVector<f64>| {
            // The crate finishes a generation past its limit: the budget is
            // kept here (the rest of that generation is not evaluated).
            if calls >= budget {
                return f64::MIN;
            }
            calls += 1;
            let point: Vec<f64> = x.iter().map(|v| v.clamp(0.0, 1.0)).collect();
            let r = reward(&point);
            if r > best.1 {
                best = (point, r);
            }
            r
        };
        let options = CMAESOptions::new(vec![0.5; dims], 0.3)
            .mode(Mode::Maximize)
            .population_size(6.max(4 + dims))
            .max_function_evals(budget.max(1))
            .seed(self.seed);
        if let Ok(mut cmaes) = options.build(&mut objective) {
            let _ = cmaes.run();
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth bump with its top at (0.7, 0.2, 0.9).
    fn bump(x: &[f64]) -> f64 {
        -[0.7, 0.2, 0.9]
            .iter()
            .zip(x)
            .map(|(c, v)| (c - v).powi(2))
            .sum::<f64>()
    }

    #[test]
    fn both_optimisers_find_the_top_of_a_bump_within_the_budget() {
        for opt in [
            &mut GridSearch as &mut dyn Optimiser,
            &mut CmaEs { seed: 1 } as &mut dyn Optimiser,
        ] {
            let mut calls = 0;
            let (x, r) = opt.maximise(3, 200, &mut |x| {
                calls += 1;
                bump(x)
            });
            assert!(calls <= 200, "{} used {calls} calls", opt.name());
            assert!(r > -0.05, "{}: {x:?} {r}", opt.name());
            assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        // CMA-ES gets much closer than a 5-level grid.
        let (_, r) = CmaEs { seed: 1 }.maximise(3, 200, &mut bump);
        assert!(r > -0.001, "{r}");
    }
}
