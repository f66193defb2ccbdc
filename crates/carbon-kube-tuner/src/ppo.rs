//! PPO: a learned policy from the state a controller sees ([`crate::state`])
//! to a knob setting, trained with burn (modules, autodiff, Adam) on the
//! `flex` CPU backend.
//!
//! The network is a small MLP (two tanh layers) with two heads: the mean of
//! a Gaussian over the setting in the unit cube (a sigmoid keeps it inside)
//! with a learned, state-independent log standard deviation, and a value
//! estimate. Training collects `update_every` replays (episodes), computes
//! advantages with GAE, and takes `epochs` passes of minibatches of
//! `batch_size` decisions over them with the clipped surrogate loss, the
//! value loss and an entropy bonus.
//!
//! An episode is a sequence of decisions: the policy acts at every decision
//! epoch of a replay ([`crate::optimise::Problem::rollout`]; every 6 hours
//! of simulated time by default) with a sampled setting (clamped into the
//! cube) from the state seen then, and each decision gets the reward of the
//! hours until the next ([`crate::epochs::step_rewards`]). The discount
//! `gamma` and GAE's `gae_lambda` carry later rewards back to the decisions
//! that caused them (a deferral saves carbon hours after it is decided).
//! Before the first update one replay per context (at most half the
//! replays) runs the middle setting to standardise the states.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData, activation};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_distr::{Distribution as _, StandardNormal};

use crate::optimise::{Optimiser, Problem, StatePolicy, Tuned, UpdateStats};

/// PPO's hyperparameters. The defaults are the original design's
/// (learning rate 0.0003, batch size 64, gamma 0.99, an update every 50
/// episodes) and common PPO values for the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct PpoConfig {
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Minibatch size of an update (at most the replays collected).
    pub batch_size: usize,
    /// Discount factor.
    pub gamma: f64,
    /// GAE's lambda.
    pub gae_lambda: f64,
    /// Replays (episodes) collected between updates.
    pub update_every: usize,
    /// Passes over the collected replays per update.
    pub epochs: usize,
    /// Clip range of the probability ratio.
    pub clip: f64,
    /// Weight of the value loss.
    pub value_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Units per hidden layer.
    pub hidden: usize,
    /// Initial standard deviation of the Gaussian (unit-cube units).
    pub init_std: f64,
    /// Replays to train on; `None`: the budget × the problem's replays, the
    /// same number of simulator runs the static optimisers get.
    pub replays: Option<usize>,
    /// Seed of the network's initialisation, the sampling and the order of
    /// replays.
    pub seed: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            learning_rate: 3e-4,
            batch_size: 64,
            gamma: 0.99,
            gae_lambda: 0.95,
            update_every: 50,
            epochs: 10,
            clip: 0.2,
            value_coef: 0.5,
            entropy_coef: 0.01,
            hidden: 64,
            init_std: 0.3,
            replays: None,
            seed: 7,
        }
    }
}

impl PpoConfig {
    /// Checks the numbers; names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("learning rate", self.learning_rate),
            ("clip", self.clip),
            ("initial std", self.init_std),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("PPO {name}: must be a positive number, got {v}"));
            }
        }
        for (name, v) in [("gamma", self.gamma), ("GAE lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("PPO {name}: must be within 0..=1, got {v}"));
            }
        }
        for (name, v) in [
            ("value coefficient", self.value_coef),
            ("entropy coefficient", self.entropy_coef),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("PPO {name}: must be at least 0, got {v}"));
            }
        }
        for (name, v) in [
            ("batch size", self.batch_size),
            ("update every", self.update_every),
            ("epochs", self.epochs),
            ("hidden units", self.hidden),
        ] {
            if v == 0 {
                return Err(format!("PPO {name}: must be at least 1"));
            }
        }
        Ok(())
    }
}

/// PPO behind the [`Optimiser`] trait.
#[derive(Clone, Debug, Default)]
pub struct Ppo {
    /// Hyperparameters.
    pub config: PpoConfig,
    /// One entry per update of the last [`Optimiser::tune`].
    pub history: Vec<UpdateStats>,
}

#[derive(Module, Debug)]
struct ActorCritic {
    hidden1: Linear,
    hidden2: Linear,
    mean: Linear,
    value: Linear,
    log_std: Param<Tensor<1>>,
}

impl ActorCritic {
    fn new(state_dim: usize, dims: usize, c: &PpoConfig, device: &Device) -> Self {
        let small = Initializer::Uniform {
            min: -0.01,
            max: 0.01,
        };
        Self {
            hidden1: LinearConfig::new(state_dim, c.hidden).init(device),
            hidden2: LinearConfig::new(c.hidden, c.hidden).init(device),
            // Near-zero weights: the first policy's mean is the middle of
            // the cube for every state (CMA-ES starts there too).
            mean: LinearConfig::new(c.hidden, dims)
                .with_initializer(small.clone())
                .init(device),
            value: LinearConfig::new(c.hidden, 1)
                .with_initializer(small)
                .init(device),
            log_std: Param::from_tensor(Tensor::full([dims], c.init_std.ln(), device)),
        }
    }

    /// Mean setting `[n, dims]` and value `[n, 1]` of states `[n, state_dim]`.
    fn forward(&self, states: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let h = activation::tanh(self.hidden1.forward(states));
        let h = activation::tanh(self.hidden2.forward(h));
        (
            activation::sigmoid(self.mean.forward(h.clone())),
            self.value.forward(h),
        )
    }

    /// Log-density `[n, 1]` of `actions` under N(mean, exp(log_std)²).
    fn log_prob(&self, mean: Tensor<2>, actions: Tensor<2>) -> Tensor<2> {
        let log_std = self.log_std.val().unsqueeze::<2>();
        let z = actions.sub(mean).div(log_std.clone().exp());
        z.square()
            .mul_scalar(-0.5)
            .sub(log_std)
            .sub_scalar(0.5 * (2.0 * std::f64::consts::PI).ln())
            .sum_dim(1)
    }

    /// Entropy of the (diagonal) Gaussian, a scalar `[1]`.
    fn entropy(&self) -> Tensor<1> {
        let dims = self.log_std.val().dims()[0];
        // dims is the knob count: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let constant = dims as f64 * 0.5 * (1.0 + (2.0 * std::f64::consts::PI).ln());
        self.log_std.val().sum().add_scalar(constant)
    }
}

/// Centres and scales the state features on the training replays' states
/// (a constant feature becomes 0); clamps to ±5 so that states far from
/// training (unseen grids) stay in the range the network was trained on.
#[derive(Clone, Debug)]
struct Normaliser {
    mean: Vec<f64>,
    sd: Vec<f64>,
}

impl Normaliser {
    fn fit(states: &[Vec<f64>], dim: usize) -> Self {
        let n = states.len().max(1) as f64;
        let mean: Vec<f64> = (0..dim)
            .map(|i| states.iter().map(|s| at(s, i)).sum::<f64>() / n)
            .collect();
        let sd = (0..dim)
            .map(|i| {
                let v = states
                    .iter()
                    .map(|s| (at(s, i) - mean[i]).powi(2))
                    .sum::<f64>()
                    / n;
                if v.sqrt() > 1e-9 { v.sqrt() } else { 1.0 }
            })
            .collect();
        Self { mean, sd }
    }

    fn apply(&self, state: &[f64]) -> Vec<f32> {
        self.mean
            .iter()
            .zip(&self.sd)
            .enumerate()
            // Network inputs are f32.
            .map(|(i, (m, s))| {
                #[allow(clippy::cast_possible_truncation)]
                let v = ((at(state, i) - m) / s).clamp(-5.0, 5.0) as f32;
                v
            })
            .collect()
    }
}

fn at(s: &[f64], i: usize) -> f64 {
    s.get(i).copied().filter(|v| v.is_finite()).unwrap_or(0.0)
}

fn matrix(rows: &[Vec<f32>], cols: usize, device: &Device) -> Tensor<2> {
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| (0..cols).map(|i| r.get(i).copied().unwrap_or(0.0)))
        .collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), cols]), device)
}

fn values(t: Tensor<2>) -> Vec<f64> {
    t.into_data()
        .try_to_vec::<f32>()
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Generalised advantage estimation over one buffer of steps: `dones[t]`
/// ends an episode after step `t`; `last_value` bootstraps a buffer that
/// ends mid-episode. Returns (advantages, returns).
pub fn gae(
    rewards: &[f64],
    values: &[f64],
    dones: &[bool],
    last_value: f64,
    gamma: f64,
    lambda: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut running = 0.0;
    for t in (0..n).rev() {
        let done = dones.get(t).copied().unwrap_or(true);
        let next_value = if done {
            0.0
        } else {
            values.get(t + 1).copied().unwrap_or(last_value)
        };
        let v = values.get(t).copied().unwrap_or(0.0);
        let delta = rewards[t] + gamma * next_value - v;
        running = delta + if done { 0.0 } else { gamma * lambda * running };
        adv[t] = running;
    }
    let returns = adv
        .iter()
        .enumerate()
        .map(|(t, a)| a + values.get(t).copied().unwrap_or(0.0))
        .collect();
    (adv, returns)
}

/// The trained policy: the Gaussian's mean for a state.
struct PpoPolicy {
    net: ActorCritic,
    norm: Normaliser,
    state_dim: usize,
    device: Device,
}

impl StatePolicy for PpoPolicy {
    fn act(&self, state: &[f64]) -> Vec<f64> {
        let x = matrix(&[self.norm.apply(state)], self.state_dim, &self.device);
        let (mean, _) = self.net.forward(x);
        values(mean)
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect()
    }
}

impl Ppo {
    /// PPO with `config`.
    pub fn new(config: PpoConfig) -> Self {
        Self {
            config,
            history: Vec::new(),
        }
    }
}

/// A problem with a single replay and no state: a black-box reward.
struct Stateless<'a> {
    dims: usize,
    reward: &'a mut dyn FnMut(&[f64]) -> f64,
}

impl Problem for Stateless<'_> {
    fn dims(&self) -> usize {
        self.dims
    }
    fn contexts(&self) -> usize {
        1
    }
    fn state(&self, _: usize) -> Vec<f64> {
        Vec::new()
    }
    fn reward(&mut self, _: usize, setting: &[f64]) -> f64 {
        (self.reward)(setting)
    }
}

impl Optimiser for Ppo {
    fn name(&self) -> &'static str {
        "ppo"
    }

    /// PPO on a stateless problem: the policy's mean setting after
    /// `budget − 1` sampled calls, and its reward (one more call).
    fn maximise(
        &mut self,
        dims: usize,
        budget: usize,
        reward: &mut dyn FnMut(&[f64]) -> f64,
    ) -> (Vec<f64>, f64) {
        if budget < 2 {
            // No room to learn: the start of the policy, the middle.
            let x = vec![0.5; dims];
            let r = if budget == 1 {
                reward(&x)
            } else {
                f64::NEG_INFINITY
            };
            return (x, r);
        }
        let saved = self.config.replays;
        self.config.replays = Some(budget - 1);
        let mut problem = Stateless { dims, reward };
        let tuned = self.tune(&mut problem, budget);
        self.config.replays = saved;
        let x = match tuned {
            Tuned::Static(x) => x,
            Tuned::StateDependent { policy, .. } => policy.act(&[]),
        };
        let r = (problem.reward)(&x);
        (x, r)
    }

    fn tune(&mut self, problem: &mut dyn Problem, budget: usize) -> Tuned {
        let c = self.config.clone();
        self.history.clear();
        let dims = problem.dims();
        let contexts = problem.contexts().max(1);
        let total = c.replays.unwrap_or(budget.saturating_mul(contexts)).max(1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(c.seed);

        // Warm-up: one replay per context (at most half the replays) with
        // the middle setting, to standardise the states the policy will
        // see. Counted in the budget.
        let warm = contexts.min(total.div_ceil(2));
        let mut seen: Vec<Vec<f64>> = Vec::new();
        for ctx in 0..warm {
            let _ = problem.rollout(ctx, &mut |s| {
                seen.push(s.to_vec());
                vec![0.5; dims]
            });
        }
        let mut used = warm;
        // A stateless problem gets one constant input.
        let state_dim = seen.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let norm = Normaliser::fit(&seen, state_dim);

        let device = Device::default().autodiff();
        device.seed(c.seed);
        let mut net = ActorCritic::new(state_dim, dims, &c, &device);
        let mut adam = AdamConfig::new().init();
        let mut order: Vec<usize> = Vec::new();

        while used < total {
            let n = c.update_every.min(total - used);
            // Which replays: every one equally often, in random order.
            let picks: Vec<usize> = (0..n)
                .map(|_| {
                    if order.is_empty() {
                        order = (0..contexts).collect();
                        order.shuffle(&mut rng);
                    }
                    order.pop().unwrap_or(0)
                })
                .collect();
            // Collect: every decision of every replay, with the sampled
            // (unclamped) action; rewards per decision.
            let std: Vec<f64> = values(net.log_std.val().detach().exp().unsqueeze::<2>());
            let mut batch: Vec<Vec<f32>> = Vec::new();
            let mut actions: Vec<Vec<f32>> = Vec::new();
            let mut rewards: Vec<f64> = Vec::new();
            let mut dones: Vec<bool> = Vec::new();
            let mut returns_per_episode = Vec::with_capacity(n);
            for &ctx in &picks {
                let from = batch.len();
                let step_rewards = problem.rollout(ctx, &mut |s| {
                    let input = norm.apply(s);
                    let (mean, _) =
                        net.forward(matrix(std::slice::from_ref(&input), state_dim, &device));
                    let mean = values(mean.detach());
                    let a: Vec<f64> = (0..dims)
                        .map(|d| {
                            let noise: f64 = StandardNormal.sample(&mut rng);
                            mean.get(d).copied().unwrap_or(0.5)
                                + std.get(d).copied().unwrap_or(0.3) * noise
                        })
                        .collect();
                    batch.push(input);
                    // Network values are f32.
                    #[allow(clippy::cast_possible_truncation)]
                    actions.push(a.iter().map(|v| *v as f32).collect());
                    a.iter().map(|v| v.clamp(0.0, 1.0)).collect()
                });
                let steps = batch.len() - from;
                // A failed replay: its decisions get the failure reward.
                let ok = step_rewards.len() == steps && step_rewards.iter().all(|r| r.is_finite());
                if ok {
                    rewards.extend_from_slice(&step_rewards);
                } else {
                    rewards.extend(std::iter::repeat_n(-1.0, steps));
                }
                dones.extend((0..steps).map(|k| k + 1 == steps));
                returns_per_episode.push(if ok {
                    step_rewards.iter().sum::<f64>()
                } else {
                    -1.0
                });
            }
            used += n;
            let steps = batch.len();
            if steps == 0 {
                continue;
            }
            let (mean_t, value) = net.forward(matrix(&batch, state_dim, &device));
            let value = values(value.detach());
            let actions_t = matrix(&actions, dims, &device);
            let old_logp = values(net.log_prob(mean_t.detach(), actions_t).detach());
            let (mut adv, returns) = gae(&rewards, &value, &dones, 0.0, c.gamma, c.gae_lambda);
            let n_f = steps as f64;
            let am = adv.iter().sum::<f64>() / n_f;
            let asd = (adv.iter().map(|a| (a - am).powi(2)).sum::<f64>() / n_f).sqrt();
            for a in &mut adv {
                *a = if steps > 1 {
                    (*a - am) / (asd + 1e-8)
                } else {
                    0.0
                };
            }

            let mut loss_sum = 0.0;
            let mut grad_steps = 0usize;
            let mut idx: Vec<usize> = (0..steps).collect();
            for _ in 0..c.epochs {
                idx.shuffle(&mut rng);
                for chunk in idx.chunks(c.batch_size.max(1)) {
                    let col = |v: &[f64]| -> Vec<Vec<f32>> {
                        #[allow(clippy::cast_possible_truncation)]
                        chunk.iter().map(|&i| vec![v[i] as f32]).collect()
                    };
                    let s = matrix(
                        &chunk.iter().map(|&i| batch[i].clone()).collect::<Vec<_>>(),
                        state_dim,
                        &device,
                    );
                    let a = matrix(
                        &chunk
                            .iter()
                            .map(|&i| actions[i].clone())
                            .collect::<Vec<_>>(),
                        dims,
                        &device,
                    );
                    let old = matrix(&col(&old_logp), 1, &device);
                    let advantage = matrix(&col(&adv), 1, &device);
                    let target = matrix(&col(&returns), 1, &device);
                    let (m, v) = net.forward(s);
                    let ratio = net.log_prob(m, a).sub(old).exp();
                    let unclipped = ratio.clone().mul(advantage.clone());
                    let clipped = ratio.clamp(1.0 - c.clip, 1.0 + c.clip).mul(advantage);
                    let policy_loss = unclipped.min_pair(clipped).mean().neg();
                    let value_loss = v.sub(target).square().mean();
                    let loss = policy_loss
                        .add(value_loss.mul_scalar(c.value_coef))
                        .sub(net.entropy().mul_scalar(c.entropy_coef));
                    loss_sum += values(loss.clone().unsqueeze::<2>())
                        .first()
                        .copied()
                        .unwrap_or(f64::NAN);
                    grad_steps += 1;
                    let grads = GradientsParams::from_grads(loss.backward(), &net);
                    net = adam.step(c.learning_rate, net, grads);
                }
            }
            let loss = loss_sum / grad_steps.max(1) as f64;
            let std_now = values(net.log_std.val().detach().exp().unsqueeze::<2>());
            self.history.push(UpdateStats {
                replays: used,
                decisions: steps,
                mean_reward: returns_per_episode.iter().sum::<f64>()
                    / returns_per_episode.len().max(1) as f64,
                loss,
                std: std_now.iter().sum::<f64>() / std_now.len().max(1) as f64,
            });
        }
        Tuned::StateDependent {
            policy: Box::new(PpoPolicy {
                net,
                norm,
                state_dim,
                device,
            }),
            updates: self.history.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_of_one_step_episodes_is_reward_minus_value() {
        let (adv, ret) = gae(&[1.0, 0.5], &[0.2, 0.7], &[true, true], 9.0, 0.99, 0.95);
        assert!((adv[0] - 0.8).abs() < 1e-12 && (adv[1] + 0.2).abs() < 1e-12);
        assert_eq!(ret, vec![1.0, 0.5]);
    }

    #[test]
    fn gae_discounts_along_an_episode_and_bootstraps_its_tail() {
        // Two steps of one unfinished episode, value 0 everywhere, last value 1.
        let (adv, ret) = gae(&[1.0, 1.0], &[0.0, 0.0], &[false, false], 1.0, 0.5, 1.0);
        // Step 1: 1 + 0.5 × 1 = 1.5; step 0: 1 + 0.5 × 0 + 0.5 × 1.5 = 1.75.
        assert!((adv[1] - 1.5).abs() < 1e-12, "{adv:?}");
        assert!((adv[0] - 1.75).abs() < 1e-12, "{adv:?}");
        assert_eq!(adv, ret);
    }

    /// Two kinds of state; the best setting of the first knob is 0.8 in one
    /// and 0.2 in the other.
    struct TwoStates;

    impl Problem for TwoStates {
        fn dims(&self) -> usize {
            2
        }
        fn contexts(&self) -> usize {
            4
        }
        fn state(&self, c: usize) -> Vec<f64> {
            vec![if c.is_multiple_of(2) { 1.0 } else { -1.0 }, 0.5]
        }
        fn reward(&mut self, c: usize, x: &[f64]) -> f64 {
            let best = if c.is_multiple_of(2) { 0.8 } else { 0.2 };
            -(x[0] - best).powi(2) - (x[1] - 0.5).powi(2)
        }
    }

    #[test]
    fn ppo_learns_a_setting_that_depends_on_the_state() {
        let mut ppo = Ppo::new(PpoConfig {
            learning_rate: 0.01,
            replays: Some(1200),
            ..PpoConfig::default()
        });
        let Tuned::StateDependent { policy, updates } = ppo.tune(&mut TwoStates, 0) else {
            panic!("PPO learns a policy");
        };
        assert_eq!(updates.len(), 24);
        assert!(updates.iter().all(|u| u.loss.is_finite()), "{updates:?}");
        let a = policy.act(&[1.0, 0.5]);
        let b = policy.act(&[-1.0, 0.5]);
        assert!(a.iter().chain(&b).all(|v| (0.0..=1.0).contains(v)));
        // Both states moved from the middle towards their own best setting.
        assert!(a[0] > 0.6 && b[0] < 0.4, "{a:?} {b:?}");
        let history = &ppo.history;
        assert!(
            history[history.len() - 1].mean_reward > history[0].mean_reward,
            "{history:?}"
        );
    }

    /// Episodes of six decisions whose state alternates between two kinds;
    /// each decision's reward depends on its own state's best setting.
    struct Alternating;

    impl Problem for Alternating {
        fn dims(&self) -> usize {
            1
        }
        fn contexts(&self) -> usize {
            2
        }
        fn reward(&mut self, _: usize, x: &[f64]) -> f64 {
            -(x[0] - 0.5).powi(2)
        }
        fn rollout(&mut self, c: usize, act: &mut dyn FnMut(&[f64]) -> Vec<f64>) -> Vec<f64> {
            (0..6)
                .map(|k| {
                    let up = (k + c).is_multiple_of(2);
                    let x = act(&[if up { 1.0 } else { -1.0 }]);
                    -(x[0] - if up { 0.8 } else { 0.2 }).powi(2)
                })
                .collect()
        }
    }

    #[test]
    fn ppo_changes_its_setting_within_an_episode_with_the_state() {
        let mut ppo = Ppo::new(PpoConfig {
            learning_rate: 0.01,
            replays: Some(602),
            ..PpoConfig::default()
        });
        let Tuned::StateDependent { policy, updates } = ppo.tune(&mut Alternating, 0) else {
            panic!("PPO learns a policy");
        };
        // Two warm-up episodes, then 600 in twelve updates of 50 episodes
        // of six decisions.
        assert_eq!(updates.len(), 12, "{updates:?}");
        assert_eq!(updates[0].decisions, 300);
        let (a, b) = (policy.act(&[1.0]), policy.act(&[-1.0]));
        assert!(a[0] > 0.6 && b[0] < 0.4, "{a:?} {b:?}");
        assert!(
            updates[11].mean_reward > updates[0].mean_reward,
            "{updates:?}"
        );
    }

    #[test]
    fn as_a_black_box_maximiser_ppo_keeps_the_budget() {
        for budget in [0, 1, 2, 7] {
            let mut calls = 0;
            let (x, r) = Ppo::default().maximise(3, budget, &mut |x| {
                calls += 1;
                -x.iter().map(|v| (v - 0.3).powi(2)).sum::<f64>()
            });
            assert!(calls <= budget, "{calls} calls for a budget of {budget}");
            assert_eq!(x.len(), 3);
            assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(budget == 0 || r.is_finite());
        }
    }

    #[test]
    fn a_bad_hyperparameter_is_named() {
        let bad = PpoConfig {
            gamma: 1.5,
            ..PpoConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("gamma"));
        assert!(PpoConfig::default().validate().is_ok());
    }
}
