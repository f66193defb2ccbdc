//! `carbon-kube tune`: learns Carbon-Kube's knobs on the simulator.
//!
//! The tuner replays real carbon traces (Electricity Maps hourly exports) and
//! the real job trace (GAIA's `azure-100k.csv`) through
//! `carbon_kube_sim::engine::World::run`, which calls the policy crate's
//! functions, the same the extender and the gate controller call. It tunes
//! on *training* episodes (weeks of one year, a set of zones), then replays
//! the best setting of each optimiser on *validation* episodes of a later
//! year, on the same zones and on zones it never saw, beside the current
//! (static) setting, over several forecast-error seeds. A setting is
//! published only if it beats the current one on every validation seed by
//! a margin ([`promotion`]).
//!
//! What it tunes ([`Knobs`]): the placement threshold as a percentile of the
//! candidate zones' current intensities (`thresholdMode: clusterPercentile`,
//! a setting that transfers between grids), the carbon weight (the
//! performance weight is 100 minus it), the deferral planner's minimum
//! saving and forecast error margin. The reward of an episode is the saving
//! against the carbon-agnostic baseline minus a heavy penalty per deadline
//! miss beyond the baseline's ([`reward`]).
//!
//! The optimisers sit behind one trait, [`Optimiser`], and see the same
//! episodes and the same budget of simulator runs: the best static grid
//! search ([`GridSearch`]) and CMA-ES ([`CmaEs`], the `cmaes` crate) tune
//! one setting kept for the whole replay; PPO ([`Ppo`], burn on the `flex`
//! CPU backend) learns a policy from the state the controllers see
//! ([`state::observe_epoch`]: intensity level, percentiles and swing, zone
//! spread, forecast trend and spread, arriving and held work, capacity
//! headroom, time of day) to a setting, and acts at every decision epoch of
//! a replay (every 6 hours of simulated time, as the CronJob re-tunes a
//! cluster; [`epochs`]), so that it can give different settings on
//! different grids and at different times. `--single-zone` tunes for
//! clusters in one grid zone ([`Space`]).

pub mod cli;
pub mod episode;
pub mod epochs;
pub mod optimise;
pub mod output;
pub mod ppo;
pub mod publish;
pub mod state;

pub use cli::{TuneArgs, run};
pub use episode::{Episode, EpisodeSet, Evaluation, Knobs, Space, reward};
pub use optimise::{CmaEs, GridSearch, Optimiser, Problem, StatePolicy, Tuned, UpdateStats};
pub use output::{Promotion, promotion};
pub use ppo::{Ppo, PpoConfig};
