//! Episodes (a period, a set of zones, the jobs that arrive in it) and the
//! evaluation of a setting on them.

use std::path::Path;

use carbon_kube_model::{CarbonIntensity, ZoneId};
use carbon_kube_policy::deferral::DeferralConfig;
use carbon_kube_policy::overrides::{MigrationOverrides, RuntimeOverrides};
use carbon_kube_policy::placement::{PlacementConfig, ThresholdMode};
use carbon_kube_sim::engine::{Outcome, Tuning, World};
use carbon_kube_sim::forecast::{ErrorModel, ForecastView};
use carbon_kube_sim::run::policy;
use carbon_kube_sim::trace::{self, Column, HOUR, TraceSet, parse_utc};
use carbon_kube_sim::workload::{self, ClusterSpec, Job, JobDefaults};
use serde::Serialize;

use crate::epochs::{Decision, EpochPolicy, step_rewards};
use crate::optimise::Problem;

/// A state-dependent policy: the state seen at a decision epoch to a point
/// of the unit cube (the setting chosen then).
pub type StatePolicy<'a> = dyn Fn(&[f64]) -> Vec<f64> + 'a;

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

/// Which knobs a point of the unit cube sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Space {
    /// Clusters in one grid zone (`--single-zone`): the placement knobs do
    /// nothing there (one zone to choose from), so only the deferral knobs
    /// are searched (2 dimensions) and placement keeps the current setting.
    pub single_zone: bool,
    /// Also the migration margin and minimum dwell (`--migrate`).
    pub migration: bool,
}

impl Space {
    /// Dimensions of a point.
    pub fn dims(self) -> usize {
        (if self.single_zone { 2 } else { DIMENSIONS })
            + if self.migration {
                MIGRATION_DIMENSIONS
            } else {
                0
            }
    }
}

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

    /// Knobs from a point of `space` (values outside the cube are clamped).
    /// Single-zone: the point is (minimum saving, margin[, migration margin,
    /// dwell]) and placement keeps the current static setting.
    pub fn from_point(x: &[f64], space: Space) -> Self {
        if !space.single_zone {
            let mut full: Vec<f64> = x.iter().take(space.dims()).copied().collect();
            full.resize(space.dims(), 0.5);
            return Self::from_unit(&full);
        }
        let mut full = vec![0.5; 2];
        full.extend(x.iter().take(space.dims()).copied());
        full.resize(DIMENSIONS + if space.migration { 2 } else { 0 }, 0.5);
        let k = Self::from_unit(&full);
        let current = Self::current();
        Self {
            threshold_percentile: current.threshold_percentile,
            carbon_weight: current.carbon_weight,
            ..k
        }
    }

    /// The settings the components run with once the tuner has published
    /// these knobs: the ConfigMap keys ([`crate::output::overrides`]) read
    /// back with the components' codec and laid over `base` as the extender
    /// (placement keys over its flags), the gate controller (`deferral.*`)
    /// and the migrator (`migration.*`) lay them. Equal to
    /// [`Knobs::tuning`] over the defaults (tested).
    pub fn apply(&self, base: &Tuning) -> anyhow::Result<Tuning> {
        let data = crate::output::overrides(self, i64::from(i32::MAX)).to_string_map();
        let o = RuntimeOverrides::from_string_map(&data, "")
            .map_err(|e| anyhow::anyhow!("published keys unreadable: {e:?}"))?;
        let placement = base
            .placement
            .to_raw()
            .overlay(&o.placement)
            .validate_over(&PlacementConfig::default(), "")
            .map_err(|e| anyhow::anyhow!("placement keys refused: {e:?}"))?;
        let deferral = o
            .deferral
            .apply(&base.deferral, "")
            .map_err(|e| anyhow::anyhow!("deferral keys refused: {e:?}"))?;
        let (m, _) = MigrationOverrides::from_string_map(&data, "")
            .map_err(|e| anyhow::anyhow!("migration keys unreadable: {e:?}"))?;
        let migration = m
            .apply(&base.migration, "")
            .map_err(|e| anyhow::anyhow!("migration keys refused: {e:?}"))?;
        Ok(Tuning {
            placement,
            deferral,
            migration,
            ..base.clone()
        })
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
    /// For a policy acting at every decision epoch: what it chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<EpochSettings>,
}

/// What a policy chose over the epochs of an evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochSettings {
    /// Decisions taken (epochs × episodes × seeds).
    pub decisions: usize,
    /// Decisions whose setting differed from the one before in the same
    /// replay.
    pub changes: usize,
    /// Lowest and highest value of each knob over all decisions.
    pub ranges: Vec<KnobRange>,
    /// The setting of each episode's last decision (first seed).
    pub last: Vec<Knobs>,
    /// Settings the components' codec refused (none expected).
    pub refused: usize,
}

/// The range of one knob over a policy's decisions.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KnobRange {
    /// Knob (its ConfigMap key).
    pub knob: &'static str,
    /// Lowest value chosen.
    pub min: f64,
    /// Highest value chosen.
    pub max: f64,
}

impl EpochSettings {
    fn add(&mut self, decisions: &[Decision], first_seed: bool) {
        self.decisions += decisions.len();
        self.changes += decisions
            .windows(2)
            .filter(|w| w[0].knobs != w[1].knobs)
            .count();
        for d in decisions {
            let k = &d.knobs;
            // Seconds of a few hours: exact in f64.
            let dwell = k.min_dwell_seconds.map(|d| d as f64);
            let values = [
                ("thresholdPercentile", k.threshold_percentile),
                ("carbonWeight", Some(f64::from(k.carbon_weight))),
                ("deferral.minSavingFraction", Some(k.min_saving_fraction)),
                ("deferral.errorMarginPerHour", Some(k.error_margin_per_hour)),
                ("migration.margin", k.migration_margin),
                ("migration.minDwellSeconds", dwell),
            ];
            for (knob, v) in values {
                let Some(v) = v else { continue };
                match self.ranges.iter_mut().find(|r| r.knob == knob) {
                    Some(r) => {
                        r.min = r.min.min(v);
                        r.max = r.max.max(v);
                    }
                    None => self.ranges.push(KnobRange {
                        knob,
                        min: v,
                        max: v,
                    }),
                }
            }
        }
        if first_seed && let Some(d) = decisions.last() {
            self.last.push(d.knobs.clone());
        }
    }
}

/// Episodes with their baselines, evaluated under several forecast-error
/// seeds.
pub struct EpisodeSet {
    /// The episodes.
    pub episodes: Vec<Episode>,
    /// Forecast-error seeds.
    pub seeds: Vec<u64>,
    baselines: Vec<Vec<Outcome>>,
    /// Seconds between decision epochs of a state-dependent policy.
    pub decision_seconds: i64,
    /// Which knobs are tuned.
    pub space: Space,
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

/// Default hours between decision epochs: the tuner's CronJob schedule.
pub const DECISION_HOURS: i64 = 6;

impl EpisodeSet {
    /// Runs the baselines once.
    pub fn new(episodes: Vec<Episode>, seeds: Vec<u64>) -> anyhow::Result<Self> {
        let base = policy("baseline", &Default::default())
            .ok_or_else(|| anyhow::anyhow!("the simulator has no baseline policy"))?;
        let mut baselines = Vec::new();
        for e in &episodes {
            let mut per_seed = Vec::new();
            for &seed in &seeds {
                let world = world(e, seed, Tuning::default())?;
                per_seed.push(world.run(&base, &|_| {}));
            }
            baselines.push(per_seed);
        }
        Ok(Self {
            episodes,
            seeds,
            baselines,
            decision_seconds: DECISION_HOURS * HOUR,
            space: Space::default(),
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

    /// Dimensions of a setting ([`Space::dims`]).
    pub fn dims(&self) -> usize {
        self.space.dims()
    }

    /// The knobs of a point of the unit cube.
    pub fn knobs(&self, x: &[f64]) -> Knobs {
        Knobs::from_point(x, self.space)
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

    /// Evaluates a setting on every episode and seed (one setting for the
    /// whole of every replay).
    pub fn evaluate(&mut self, knobs: &Knobs) -> anyhow::Result<Evaluation> {
        self.evaluate_with(None, Some(knobs))
    }

    /// Replays context `c` with `act` choosing the setting (a point of the
    /// unit cube) at every decision epoch from the state seen then; returns
    /// the outcome, the decisions and the states.
    fn replay_by(
        &mut self,
        c: usize,
        act: &mut dyn FnMut(&[f64]) -> Vec<f64>,
    ) -> anyhow::Result<(Outcome, Vec<Decision>, Vec<Vec<f64>>)> {
        let ck = self.policy()?;
        let per = self.seeds.len().max(1);
        let (e, s) = (c / per, c % per);
        let (Some(ep), Some(&seed)) = (self.episodes.get(e), self.seeds.get(s)) else {
            anyhow::bail!("replay {c} out of range ({} replays)", self.contexts());
        };
        self.replays += 1;
        let base = Tuning::default();
        let mut retuner = EpochPolicy::new(self.decision_seconds, self.space, base.clone(), act);
        let out = world(ep, seed, base)?.run_retuned(&ck, &mut retuner, &|_| {});
        if retuner.refused > 0 {
            anyhow::bail!(
                "{} settings of replay {c} were refused by the components' codec",
                retuner.refused
            );
        }
        Ok((out, retuner.decisions, retuner.states))
    }

    /// One reward per decision epoch of context `c` replayed with `act`
    /// ([`step_rewards`]; they sum to the saving minus the penalty for the
    /// misses the policy caused).
    pub fn rollout(
        &mut self,
        c: usize,
        act: &mut dyn FnMut(&[f64]) -> Vec<f64>,
    ) -> anyhow::Result<Vec<f64>> {
        let (out, decisions, _) = self.replay_by(c, act)?;
        let per = self.seeds.len().max(1);
        let ep = &self.episodes[c / per];
        Ok(step_rewards(
            &out,
            &self.baselines[c / per][c % per],
            &decisions,
            ep.traces.start,
            &ep.jobs,
        ))
    }

    /// Evaluates a state-dependent policy: `act` chooses a point of the unit
    /// cube at every decision epoch of every replay from the state seen then
    /// ([`crate::state::observe_epoch`]).
    pub fn evaluate_by(&mut self, act: &StatePolicy<'_>) -> anyhow::Result<Evaluation> {
        self.evaluate_with(Some(act), None)
    }

    fn evaluate_with(
        &mut self,
        act: Option<&StatePolicy<'_>>,
        knobs: Option<&Knobs>,
    ) -> anyhow::Result<Evaluation> {
        let ck = self.policy()?;
        self.evaluations += 1;
        let mut ev = Evaluation {
            reward_per_seed: vec![0.0; self.seeds.len()],
            epochs: act.is_some().then(EpochSettings::default),
            ..Evaluation::default()
        };
        let n = self.episodes.len().max(1) as f64;
        let per = self.seeds.len().max(1);
        for c in 0..self.contexts() {
            let (e, s) = (c / per, c % per);
            let out = match (act, knobs) {
                (Some(act), _) => {
                    let (out, decisions, _) = self.replay_by(c, &mut |x| act(x))?;
                    if let Some(es) = ev.epochs.as_mut() {
                        es.add(&decisions, s == 0);
                    }
                    out
                }
                (None, Some(k)) => {
                    self.replays += 1;
                    world(&self.episodes[e], self.seeds[s], k.tuning())?.run(&ck, &|_| {})
                }
                (None, None) => anyhow::bail!("nothing to evaluate"),
            };
            let base = &self.baselines[e][s];
            let r = reward(&out, base, self.episodes[e].jobs.len());
            ev.reward_per_seed[s] += r / n;
            ev.saving += if base.kg_co2 > 0.0 {
                (base.kg_co2 - out.kg_co2) / base.kg_co2
            } else {
                0.0
            };
            ev.deadline_misses += out.deadline_misses;
            ev.baseline_misses += base.deadline_misses;
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

    fn reward(&mut self, c: usize, setting: &[f64]) -> f64 {
        let knobs = self.set.knobs(setting);
        match self.set.replay_reward(c, &knobs) {
            Ok(r) => r,
            Err(e) => {
                self.failure.get_or_insert(e);
                f64::NEG_INFINITY
            }
        }
    }

    fn rollout(&mut self, c: usize, act: &mut dyn FnMut(&[f64]) -> Vec<f64>) -> Vec<f64> {
        match self.set.rollout(c, act) {
            Ok(r) => r,
            Err(e) => {
                self.failure.get_or_insert(e);
                vec![f64::NEG_INFINITY]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings a replay runs with after a decision are the ones the
    /// extender, the gate controller and the migrator derive from the
    /// ConfigMap keys the tuner publishes (the codec and the overlay they
    /// call), for points all over the cube, in every space.
    #[test]
    fn published_knobs_read_back_as_the_settings_the_replay_runs_with() {
        let spaces = [
            Space::default(),
            Space {
                single_zone: true,
                migration: false,
            },
            Space {
                single_zone: false,
                migration: true,
            },
            Space {
                single_zone: true,
                migration: true,
            },
        ];
        for space in spaces {
            for i in 0..50u32 {
                let x: Vec<f64> = (0..space.dims())
                    .map(|d| f64::from((i * 7 + d as u32 * 13) % 11) / 10.0)
                    .collect();
                let knobs = Knobs::from_point(&x, space);
                let direct = knobs.tuning();
                let read = knobs.apply(&Tuning::default()).unwrap();
                assert_eq!(read.placement, direct.placement, "{space:?} {x:?}");
                assert_eq!(read.deferral, direct.deferral, "{space:?} {x:?}");
                assert_eq!(read.migration, direct.migration, "{space:?} {x:?}");
                if space.single_zone {
                    // Placement keeps the current setting.
                    assert_eq!(knobs.threshold_percentile, None);
                    assert_eq!(knobs.carbon_weight, Knobs::current().carbon_weight);
                }
                assert_eq!(knobs.migration_margin.is_some(), space.migration);
            }
        }
        // Single-zone points move the deferral knobs only.
        let s = Space {
            single_zone: true,
            migration: false,
        };
        let k = Knobs::from_point(&[0.1, 0.0], s);
        assert_eq!(
            (k.min_saving_fraction, k.error_margin_per_hour),
            (0.03, 0.0)
        );
    }
}
