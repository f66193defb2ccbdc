//! Episodes (a period, a set of zones, the jobs that arrive in it) and the
//! evaluation of a setting on them.

use std::path::Path;

use carbon_kube_model::{CarbonIntensity, ZoneId};
use carbon_kube_policy::deferral::DeferralConfig;
use carbon_kube_policy::placement::ThresholdMode;
use carbon_kube_sim::engine::{Outcome, Tuning, World};
use carbon_kube_sim::forecast::{ErrorModel, ForecastView};
use carbon_kube_sim::run::policy;
use carbon_kube_sim::trace::{self, Column, HOUR, TraceSet, parse_utc};
use carbon_kube_sim::workload::{self, ClusterSpec, Job, JobDefaults};
use serde::Serialize;

use crate::optimise::Problem;
use crate::state::{STATE_DIM, STATE_HOURS, observe};

/// The knobs the tuner sets, in their units.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Knobs {
    /// `thresholdMode`: `None` keeps the absolute threshold (the static
    /// setting), `Some(p)` is `clusterPercentile` at `p`.
    pub threshold_percentile: Option<f64>,
    /// `carbonWeight` (the performance weight is 100 minus it).
    pub carbon_weight: u32,
    /// `deferral.minSavingFraction`.
    pub min_saving_fraction: f64,
    /// `deferral.errorMarginPerHour`.
    pub error_margin_per_hour: f64,
    /// The migration rule's margin (`MigrationConfig::margin`); only when
    /// tuning with migration (`--migrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_margin: Option<f64>,
    /// The migration rule's minimum dwell, seconds
    /// (`MigrationConfig::min_dwell_seconds`); only with `--migrate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_dwell_seconds: Option<i64>,
}

/// How many numbers an optimiser searches over (without migration).
pub const DIMENSIONS: usize = 4;

/// How many more with migration (margin, minimum dwell).
pub const MIGRATION_DIMENSIONS: usize = 2;

impl Knobs {
    /// The current static setting: the seed's defaults (absolute 250 g/kWh,
    /// 70/30, the planner's defaults).
    pub fn current() -> Self {
        let t = Tuning::default();
        Self {
            threshold_percentile: None,
            carbon_weight: t.placement.carbon_weight,
            min_saving_fraction: t.deferral.min_saving_fraction,
            error_margin_per_hour: t.deferral.error_margin_per_hour,
            migration_margin: None,
            min_dwell_seconds: None,
        }
    }

    /// The current static setting with the migration rule's defaults
    /// (margin 0.5, dwell 1 h), for tuning with migration.
    pub fn current_with_migration() -> Self {
        let m = Tuning::default().migration;
        Self {
            migration_margin: Some(m.margin),
            min_dwell_seconds: Some(m.min_dwell_seconds),
            ..Self::current()
        }
    }

    /// Knobs from a point of the unit cube `[0, 1]^4` (values outside are
    /// clamped): percentile 0–100, carbon weight 10–100, minimum saving
    /// 0–0.3, margin 0–0.02 per hour; with 6 dimensions also the migration
    /// margin 0–2 and minimum dwell 0–6 h (in 5-minute steps).
    pub fn from_unit(x: &[f64]) -> Self {
        let at = |i: usize| x.get(i).copied().unwrap_or(0.5).clamp(0.0, 1.0);
        // 10..=100: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let carbon_weight = (10.0 + 90.0 * at(1)).round() as u32;
        Self {
            threshold_percentile: Some((100.0 * at(0) * 10.0).round() / 10.0),
            carbon_weight,
            min_saving_fraction: (0.3 * at(2) * 1000.0).round() / 1000.0,
            error_margin_per_hour: (0.02 * at(3) * 10_000.0).round() / 10_000.0,
            migration_margin: (x.len() >= DIMENSIONS + MIGRATION_DIMENSIONS)
                .then(|| (2.0 * at(4) * 100.0).round() / 100.0),
            // 0..=72 steps of 300 s: the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation)]
            min_dwell_seconds: (x.len() >= DIMENSIONS + MIGRATION_DIMENSIONS)
                .then(|| (72.0 * at(5)).round() as i64 * 300),
        }
    }

    /// The simulator's (and the policy crate's) settings.
    pub fn tuning(&self) -> Tuning {
        let mut t = Tuning::default();
        if let Some(p) = self.threshold_percentile {
            t.placement.threshold_mode = ThresholdMode::ClusterPercentile;
            t.placement.threshold_percentile = p;
        }
        t.placement.carbon_weight = self.carbon_weight;
        t.placement.performance_weight = 100 - self.carbon_weight.min(100);
        t.deferral = DeferralConfig {
            min_saving_fraction: self.min_saving_fraction,
            error_margin_per_hour: self.error_margin_per_hour,
            ..t.deferral
        };
        if let Some(m) = self.migration_margin {
            t.migration.margin = m;
        }
        if let Some(d) = self.min_dwell_seconds {
            t.migration.min_dwell_seconds = d;
        }
        t
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        let migration = match (self.migration_margin, self.min_dwell_seconds) {
            (Some(m), Some(d)) => format!(", migration margin {m:.2}, dwell {d} s"),
            _ => String::new(),
        };
        format!(
            "threshold {}, weights {}/{}, minSaving {:.3}, margin {:.4}/h",
            self.threshold_percentile.map_or_else(
                || format!("{} (absolute)", Tuning::default().placement.threshold),
                |p| format!("p{p} of candidate zones"),
            ),
            self.carbon_weight,
            100 - self.carbon_weight.min(100),
            self.min_saving_fraction,
            self.error_margin_per_hour
        ) + &migration
    }
}

/// One episode: a period of some zones' traces and the jobs in it.
pub struct Episode {
    /// Name in reports (`2022-03-07 DE,GB`).
    pub name: String,
    /// The traces of the period.
    pub traces: TraceSet,
    /// The jobs that arrive in it.
    pub jobs: Vec<Job>,
    /// The simulated cluster.
    pub cluster: ClusterSpec,
}

/// Deadline misses beyond the baseline's cost this much reward each, as a
/// share of the episode's jobs: one extra miss in a hundred jobs costs 0.2,
/// more than any carbon saving the knobs can buy.
pub const MISS_PENALTY: f64 = 20.0;

/// The reward of one outcome against its baseline: the relative saving,
/// minus [`MISS_PENALTY`] × the extra deadline misses per job.
pub fn reward(policy: &Outcome, baseline: &Outcome, jobs: usize) -> f64 {
    let saving = if baseline.kg_co2 > 0.0 {
        (baseline.kg_co2 - policy.kg_co2) / baseline.kg_co2
    } else {
        0.0
    };
    let extra = policy
        .deadline_misses
        .saturating_sub(baseline.deadline_misses);
    // Counts are far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    let penalty = MISS_PENALTY * extra as f64 / jobs.max(1) as f64;
    saving - penalty
}

/// One setting's result on a set of episodes and seeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// Mean reward.
    pub reward: f64,
    /// Mean relative saving against the baseline.
    pub saving: f64,
    /// Deadline misses, summed.
    pub deadline_misses: u64,
    /// The baseline's deadline misses, summed.
    pub baseline_misses: u64,
    /// Reward per forecast-error seed (mean over episodes).
    pub reward_per_seed: Vec<f64>,
}

/// Episodes with their baselines, evaluated under several forecast-error
/// seeds.
pub struct EpisodeSet {
    /// The episodes.
    pub episodes: Vec<Episode>,
    /// Forecast-error seeds.
    pub seeds: Vec<u64>,
    baselines: Vec<Vec<Outcome>>,
    /// The state a controller sees after each episode's first
    /// [`STATE_HOURS`] hours, per episode and seed (the forecast in it
    /// carries that seed's errors).
    pub states: Vec<Vec<[f64; STATE_DIM]>>,
    /// Evaluations so far (each one runs every episode once per seed).
    pub evaluations: usize,
    /// Simulator runs of the tuned policy so far (evaluations and single
    /// replays).
    pub replays: usize,
    /// Replay with `carbon-kube+migrate` (running jobs move when the
    /// migration rule says it pays) instead of `carbon-kube`, and tune the
    /// migration knobs too.
    pub migrate: bool,
}

impl EpisodeSet {
    /// Runs the baselines once.
    pub fn new(episodes: Vec<Episode>, seeds: Vec<u64>) -> anyhow::Result<Self> {
        let base = policy("baseline", &Default::default())
            .ok_or_else(|| anyhow::anyhow!("the simulator has no baseline policy"))?;
        let mut baselines = Vec::new();
        let mut states = Vec::new();
        for e in &episodes {
            let mut per_seed = Vec::new();
            let mut state_per_seed = Vec::new();
            for &seed in &seeds {
                let world = world(e, seed, Tuning::default())?;
                per_seed.push(world.run(&base, &|_| {}));
                state_per_seed.push(observe(
                    &e.traces,
                    &e.jobs,
                    &e.cluster,
                    &world.forecast,
                    STATE_HOURS,
                ));
            }
            baselines.push(per_seed);
            states.push(state_per_seed);
        }
        Ok(Self {
            episodes,
            seeds,
            baselines,
            states,
            evaluations: 0,
            replays: 0,
            migrate: false,
        })
    }

    /// The simulator policy the knobs are tuned for.
    fn policy(&self) -> anyhow::Result<carbon_kube_sim::engine::Policy> {
        let name = if self.migrate {
            "carbon-kube+migrate"
        } else {
            "carbon-kube"
        };
        policy(name, &Default::default())
            .ok_or_else(|| anyhow::anyhow!("the simulator has no {name} policy"))
    }

    /// Dimensions of a setting: [`DIMENSIONS`], plus
    /// [`MIGRATION_DIMENSIONS`] with migration.
    pub fn dims(&self) -> usize {
        if self.migrate {
            DIMENSIONS + MIGRATION_DIMENSIONS
        } else {
            DIMENSIONS
        }
    }

    /// Number of replays (episodes × seeds).
    pub fn contexts(&self) -> usize {
        self.episodes.len() * self.seeds.len()
    }

    /// The reward of `knobs` on one replay: context `c` is episode
    /// `c / seeds` under seed `c % seeds`.
    pub fn replay_reward(&mut self, c: usize, knobs: &Knobs) -> anyhow::Result<f64> {
        let ck = self.policy()?;
        let per = self.seeds.len().max(1);
        let (e, s) = (c / per, c % per);
        let (Some(ep), Some(&seed)) = (self.episodes.get(e), self.seeds.get(s)) else {
            anyhow::bail!("replay {c} out of range ({} replays)", self.contexts());
        };
        self.replays += 1;
        let out = world(ep, seed, knobs.tuning())?.run(&ck, &|_| {});
        Ok(reward(&out, &self.baselines[e][s], ep.jobs.len()))
    }

    /// Evaluates a setting on every episode and seed.
    pub fn evaluate(&mut self, knobs: &Knobs) -> anyhow::Result<Evaluation> {
        self.evaluate_by(&|_| knobs.clone())
    }

    /// Evaluates a state-dependent setting: `knobs_for` gets the state of
    /// each replay (see [`EpisodeSet::states`]).
    pub fn evaluate_by(
        &mut self,
        knobs_for: &dyn Fn(&[f64]) -> Knobs,
    ) -> anyhow::Result<Evaluation> {
        let ck = self.policy()?;
        self.evaluations += 1;
        let mut ev = Evaluation {
            reward_per_seed: vec![0.0; self.seeds.len()],
            ..Evaluation::default()
        };
        let n = self.episodes.len().max(1) as f64;
        for ((e, baselines), states) in self.episodes.iter().zip(&self.baselines).zip(&self.states)
        {
            for (s, ((&seed, base), state)) in
                self.seeds.iter().zip(baselines).zip(states).enumerate()
            {
                self.replays += 1;
                let world = world(e, seed, knobs_for(state).tuning())?;
                let out = world.run(&ck, &|_| {});
                let r = reward(&out, base, e.jobs.len());
                ev.reward_per_seed[s] += r / n;
                ev.saving += if base.kg_co2 > 0.0 {
                    (base.kg_co2 - out.kg_co2) / base.kg_co2
                } else {
                    0.0
                };
                ev.deadline_misses += out.deadline_misses;
                ev.baseline_misses += base.deadline_misses;
            }
        }
        let runs = (self.episodes.len() * self.seeds.len()).max(1) as f64;
        ev.saving /= runs;
        ev.reward = ev.reward_per_seed.iter().sum::<f64>() / self.seeds.len().max(1) as f64;
        Ok(ev)
    }
}

/// An [`EpisodeSet`] as a tuning [`Problem`]: a point of the unit cube is
/// [`Knobs::from_unit`]; the first simulator error is kept (the reward is
/// then −∞) for the caller to report.
pub struct Training<'a> {
    /// The episodes tuned on.
    pub set: &'a mut EpisodeSet,
    /// The first error of a replay, if any.
    pub failure: Option<anyhow::Error>,
}

impl Problem for Training<'_> {
    fn dims(&self) -> usize {
        self.set.dims()
    }

    fn contexts(&self) -> usize {
        self.set.contexts()
    }

    fn state(&self, c: usize) -> Vec<f64> {
        let per = self.set.seeds.len().max(1);
        self.set
            .states
            .get(c / per)
            .and_then(|s| s.get(c % per))
            .map(|s| s.to_vec())
            .unwrap_or_default()
    }

    fn reward(&mut self, c: usize, setting: &[f64]) -> f64 {
        match self.set.replay_reward(c, &Knobs::from_unit(setting)) {
            Ok(r) => r,
            Err(e) => {
                self.failure.get_or_insert(e);
                f64::NEG_INFINITY
            }
        }
    }
}

fn world(e: &Episode, seed: u64, tuning: Tuning) -> anyhow::Result<World<'_>> {
    let forecast = ForecastView::new(&e.traces, ErrorModel::default(), seed);
    Ok(World::new(
        &e.traces, &e.cluster, &e.jobs, forecast, tuning,
    )?)
}

/// The real data the episodes are cut from.
pub struct Data {
    /// Every zone's trace, all years joined.
    pub traces: TraceSet,
    /// The job trace file (hours from the start of a year).
    pub jobs_csv: std::path::PathBuf,
}

impl Data {
    /// Reads the Electricity Maps exports of `zones` from `dir`
    /// (`{zone}_{year}_hourly.csv`, every year found).
    pub fn read(dir: &Path, jobs_csv: &Path, zones: &[ZoneId]) -> anyhow::Result<Self> {
        let mut series = Vec::new();
        let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for z in zones {
            let prefix = format!("{z}_");
            let files: Vec<_> = names
                .iter()
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with("_hourly.csv"))
                })
                .collect();
            if files.is_empty() {
                anyhow::bail!(
                    "no Electricity Maps export for zone {z} in {}",
                    dir.display()
                );
            }
            for f in files {
                series.push(trace::read_em_csv(f, Column::Direct)?);
            }
        }
        Ok(Self {
            traces: trace::align(series)?,
            jobs_csv: jobs_csv.to_owned(),
        })
    }

    /// The episode of `zones` over `days` from `start` (`YYYY-MM-DD`), with
    /// the jobs of the job trace that arrive then (the job trace's hour 0 is
    /// January 1st of `start`'s year), at most `max_jobs` of them.
    pub fn episode(
        &self,
        zones: &[ZoneId],
        start: &str,
        days: u32,
        max_jobs: usize,
    ) -> anyhow::Result<Episode> {
        let from = parse_utc(start).map_err(|e| anyhow::anyhow!("episode start {start}: {e}"))?;
        let to = from + i64::from(days) * 24 * HOUR;
        let mut traces = self.traces.slice(from, to)?;
        traces.zones.retain(|t| zones.contains(&t.zone));
        if traces.zones.len() != zones.len() {
            anyhow::bail!("episode {start}: not every zone of {zones:?} has data");
        }
        let year = start.get(..4).unwrap_or("1970");
        let year_start = parse_utc(&format!("{year}-01-01"))
            .map_err(|e| anyhow::anyhow!("episode start {start}: {e}"))?;
        let defaults = JobDefaults {
            slack_seconds: 24 * HOUR,
            interruptible: false,
            memory_gb_per_vcpu: 4.0,
        };
        let jobs = workload::read_jobs_csv(&self.jobs_csv, year_start, &defaults)?;
        let (mut jobs, _) = workload::fit_to_period(jobs, traces.start, traces.end());
        jobs.truncate(max_jobs);
        if jobs.is_empty() {
            anyhow::bail!("episode {start}: no job of the trace arrives in it");
        }
        let cluster = ClusterSpec::default_for(&traces, &jobs, 1.5);
        Ok(Episode {
            name: format!(
                "{start} +{days}d {}",
                zones
                    .iter()
                    .map(ZoneId::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            traces,
            jobs,
            cluster,
        })
    }
}

/// The absolute threshold of the static setting, for reports.
pub fn static_threshold() -> CarbonIntensity {
    Tuning::default().placement.threshold
}
