//! `carbon-kube tune`: arguments, the run, the report.

use std::io::Write as _;
use std::path::PathBuf;

use carbon_kube_model::{ZoneId, keys};
use cpu_time::ProcessTime;
use serde::Serialize;

use crate::episode::{DECISION_HOURS, Data, EpisodeSet, Evaluation, Knobs, Space, Training};
use crate::optimise::{CmaEs, GridSearch, Optimiser, Tuned, UpdateStats};
use crate::output::{Promotion, overrides, promotion};
use crate::ppo::{Ppo, PpoConfig};

/// Arguments of `carbon-kube tune`. The defaults train on four weeks of
/// 2022 in DE, US-CAL-CISO and IN-WE and validate on the same weeks of 2023,
/// in those zones and in GB, US-TEX-ERCO and AU-NSW, which training never
/// sees.
#[derive(clap::Args, Debug, Clone)]
pub struct TuneArgs {
    /// Folder of Electricity Maps hourly exports (`ZONE_YEAR_hourly.csv`).
    /// Default: the shared data folder's `carbon_intensity/electricitymaps_hourly`.
    #[arg(long, value_name = "DIR")]
    pub traces: Option<PathBuf>,
    /// Job trace CSV (`arrival_time,length,cpus`, hours from January 1st).
    /// Default: the shared data folder's GAIA `azure-100k.csv`.
    #[arg(long, value_name = "FILE")]
    pub jobs: Option<PathBuf>,
    /// Zones tuned on (and validated on).
    #[arg(long, value_delimiter = ',', default_value = "DE,US-CAL-CISO,IN-WE")]
    pub train_zones: Vec<String>,
    /// Zones only validated on, never tuned on ("" for none).
    #[arg(long, value_delimiter = ',', default_value = "GB,US-TEX-ERCO,AU-NSW")]
    pub unseen_zones: Vec<String>,
    /// First days of the training episodes (`YYYY-MM-DD`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2022-02-07,2022-05-09,2022-08-08,2022-11-07"
    )]
    pub train_starts: Vec<String>,
    /// First days of the validation episodes: a later period than training.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2023-02-06,2023-05-08,2023-08-07,2023-11-06"
    )]
    pub validate_starts: Vec<String>,
    /// Days per episode.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Hours of simulated time between decision epochs: a state-dependent
    /// policy (PPO) chooses a new setting from the state the controllers
    /// see every this many hours of a replay, as the CronJob re-tunes every
    /// 6 hours (grid search and CMA-ES keep one setting for the whole
    /// replay). A value at least the episode's length: one decision, at the
    /// start.
    #[arg(long, default_value_t = DECISION_HOURS, value_parser = clap::value_parser!(i64).range(1..))]
    pub decision_hours: i64,
    /// Tune for clusters in one grid zone: every episode is one zone of
    /// --train-zones (and of --unseen-zones) on its own, the cluster all in
    /// that zone, and only the deferral knobs are searched (minimum saving,
    /// error margin; placement has one zone to choose from and keeps the
    /// current setting).
    #[arg(long)]
    pub single_zone: bool,
    /// Jobs per episode at most (the first ones to arrive).
    #[arg(long, default_value_t = 1500)]
    pub max_jobs: usize,
    /// Forecast-error seeds of the training episodes.
    #[arg(long, default_value_t = 1)]
    pub train_seeds: u64,
    /// Forecast-error seeds of the validation replay (promotion needs the
    /// margin on every one).
    #[arg(long, default_value_t = 3)]
    pub validate_seeds: u64,
    /// Settings each optimiser may evaluate on the training episodes (PPO:
    /// the same number of simulator runs, budget × training replays, unless
    /// --ppo-replays says otherwise).
    #[arg(long, default_value_t = 40)]
    pub budget: usize,
    /// Replay with the simulator's carbon-kube+migrate (running jobs move
    /// when the migration rule says it pays) and tune the migration rule's
    /// margin (0–2) and minimum dwell (0–6 h) too, published as
    /// migration.margin and migration.minDwellSeconds (the migrator's keys).
    #[arg(long)]
    pub migrate: bool,
    /// Optimisers to compare: grid, cma-es, ppo.
    #[arg(long, value_delimiter = ',', default_value = "grid,cma-es,ppo")]
    pub optimisers: Vec<String>,
    /// PPO: Adam's learning rate.
    #[arg(long, default_value_t = 0.0003, help_heading = "PPO")]
    pub ppo_learning_rate: f64,
    /// PPO: minibatch size of an update (at most the replays collected).
    #[arg(long, default_value_t = 64, help_heading = "PPO")]
    pub ppo_batch_size: usize,
    /// PPO: discount factor over an episode's decision epochs.
    #[arg(long, default_value_t = 0.99, help_heading = "PPO")]
    pub ppo_gamma: f64,
    /// PPO: GAE lambda.
    #[arg(long, default_value_t = 0.95, help_heading = "PPO")]
    pub ppo_gae_lambda: f64,
    /// PPO: episodes (simulator replays) collected between updates.
    #[arg(long, default_value_t = 50, help_heading = "PPO")]
    pub ppo_update_every: usize,
    /// PPO: passes over the collected replays per update.
    #[arg(long, default_value_t = 10, help_heading = "PPO")]
    pub ppo_epochs: usize,
    /// PPO: clip range of the probability ratio.
    #[arg(long, default_value_t = 0.2, help_heading = "PPO")]
    pub ppo_clip: f64,
    /// PPO: weight of the entropy bonus.
    #[arg(long, default_value_t = 0.01, help_heading = "PPO")]
    pub ppo_entropy_coef: f64,
    /// PPO: simulator replays to train on (default: --budget × training
    /// replays, the static optimisers' budget).
    #[arg(long, help_heading = "PPO")]
    pub ppo_replays: Option<usize>,
    /// Reward margin over the current setting needed on every validation seed.
    #[arg(long, default_value_t = 0.01)]
    pub margin: f64,
    /// Publish into carbon-kube-config (components apply it) when promoted;
    /// default is shadow mode (only the carbon-kube-tuner ConfigMap, with the
    /// proposal and the run status, which no component applies).
    #[arg(long)]
    pub active: bool,
    /// How long a published setting is valid (validUntil), hours.
    #[arg(long, default_value_t = 12)]
    pub valid_for_hours: i64,
    /// Namespace of the ConfigMap.
    #[arg(long, env = "CARBON_KUBE_NAMESPACE", default_value = keys::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Where to write the ConfigMap (JSON): a file, or - for stdout.
    #[arg(long, default_value = "-")]
    pub output: String,
    /// Where to write the report (JSON); the table goes to stderr either way.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// A folder, a cluster, the schedule (crate::publish).
    #[command(flatten)]
    pub deploy: crate::publish::DeployArgs,
}

/// One setting's results.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Optimiser (or `current`).
    pub optimiser: String,
    /// The setting.
    pub knobs: Knobs,
    /// On the training episodes.
    pub train: Evaluation,
    /// On the validation episodes, trained zones.
    pub validate: Evaluation,
    /// On the validation episodes, unseen zones (if any).
    pub validate_unseen: Option<Evaluation>,
    /// CPU seconds the optimiser spent (training only).
    pub cpu_seconds: f64,
    /// Settings evaluated (PPO: its simulator runs / training replays).
    pub evaluations: usize,
    /// Whether the setting depends on the state (PPO): `knobs` is then the
    /// setting of the last decision of the latest validation episode, and
    /// each replay was run with a setting chosen at every decision epoch
    /// (the evaluations' `epochs` say what was chosen).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_dependent: bool,
    /// What each training update saw: mean sampled reward, loss, policy sd
    /// (PPO).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<UpdateStats>,
    /// A state-dependent policy's last setting in each validation episode
    /// (first seed), in the order of the report's validation episodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knobs_by_episode: Vec<Knobs>,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Training episodes.
    pub train_episodes: Vec<String>,
    /// Validation episodes (trained zones, then unseen zones).
    pub validate_episodes: Vec<String>,
    /// The current setting, then each optimiser's best.
    pub rows: Vec<Row>,
    /// The optimiser whose setting is proposed (best training reward).
    pub chosen: String,
    /// Promotion decision on the validation replay (trained zones).
    pub promotion: Promotion,
    /// Shadow or active.
    pub mode: &'static str,
    /// The ConfigMaps written (`--output` gets the first), for `--apply`.
    #[serde(skip)]
    pub configmaps: Vec<serde_json::Value>,
}

fn zones(list: &[String]) -> anyhow::Result<Vec<ZoneId>> {
    list.iter()
        .filter(|z| !z.trim().is_empty())
        .map(|z| ZoneId::parse(z.trim()).map_err(|e| anyhow::anyhow!("zone {z:?}: {e}")))
        .collect()
}

impl TuneArgs {
    /// PPO's hyperparameters from the flags.
    pub fn ppo_config(&self) -> PpoConfig {
        PpoConfig {
            learning_rate: self.ppo_learning_rate,
            batch_size: self.ppo_batch_size,
            gamma: self.ppo_gamma,
            gae_lambda: self.ppo_gae_lambda,
            update_every: self.ppo_update_every,
            epochs: self.ppo_epochs,
            clip: self.ppo_clip,
            entropy_coef: self.ppo_entropy_coef,
            replays: self.ppo_replays,
            ..PpoConfig::default()
        }
    }
}

fn optimiser(name: &str, args: &TuneArgs) -> anyhow::Result<Box<dyn Optimiser>> {
    match name {
        "grid" => Ok(Box::new(GridSearch)),
        "cma-es" => Ok(Box::new(CmaEs { seed: 7 })),
        "ppo" => {
            let config = args.ppo_config();
            config
                .validate()
                .map_err(|e| anyhow::anyhow!("--ppo-*: {e}"))?;
            Ok(Box::new(Ppo::new(config)))
        }
        other => anyhow::bail!("unknown optimiser {other:?}; known: grid, cma-es, ppo"),
    }
}

/// A setting to replay: one for the whole replay, or a policy acting at
/// every decision epoch.
enum Setting<'a> {
    Static(Knobs),
    Policy(&'a dyn Fn(&[f64]) -> Vec<f64>),
}

/// Runs the tuning and writes the ConfigMap; returns the report.
pub fn run(args: &TuneArgs) -> anyhow::Result<Report> {
    let shared = carbon_kube_sim::shared_data_dir();
    let traces = args
        .traces
        .clone()
        .unwrap_or_else(|| shared.join("carbon_intensity/electricitymaps_hourly"));
    let jobs = args
        .jobs
        .clone()
        .unwrap_or_else(|| shared.join("workload_traces/gaia/azure-100k.csv"));
    let train_zones = zones(&args.train_zones)?;
    let unseen_zones = zones(&args.unseen_zones)?;
    if train_zones.is_empty() {
        anyhow::bail!("--train-zones: at least one zone");
    }
    if args.margin < 0.0 || !args.margin.is_finite() {
        anyhow::bail!("--margin: must be a number at least 0");
    }
    let optimisers: Vec<Box<dyn Optimiser>> = args
        .optimisers
        .iter()
        .map(|n| optimiser(n.trim(), args))
        .collect::<anyhow::Result<_>>()?;
    let all: Vec<ZoneId> = train_zones.iter().chain(&unseen_zones).cloned().collect();
    let data = Data::read(&traces, &jobs, &all)?;
    // Single-zone: one episode per zone and start, the cluster in that zone.
    let cut = |zs: &[ZoneId], starts: &[String]| -> anyhow::Result<Vec<_>> {
        let groups: Vec<Vec<ZoneId>> = if args.single_zone {
            zs.iter().map(|z| vec![z.clone()]).collect()
        } else {
            vec![zs.to_vec()]
        };
        let mut episodes = Vec::new();
        for s in starts {
            for g in &groups {
                episodes.push(data.episode(g, s.trim(), args.days, args.max_jobs)?);
            }
        }
        Ok(episodes)
    };
    let train_seeds: Vec<u64> = (1..=args.train_seeds.max(1)).collect();
    // Validation seeds never overlap training seeds.
    let validate_seeds: Vec<u64> = (1001..=1000 + args.validate_seeds.max(1)).collect();
    let mut train = EpisodeSet::new(cut(&train_zones, &args.train_starts)?, train_seeds)?;
    let mut validate = EpisodeSet::new(
        cut(&train_zones, &args.validate_starts)?,
        validate_seeds.clone(),
    )?;
    let mut unseen = if unseen_zones.is_empty() {
        None
    } else {
        Some(EpisodeSet::new(
            cut(&unseen_zones, &args.validate_starts)?,
            validate_seeds,
        )?)
    };
    let space = Space {
        single_zone: args.single_zone,
        migration: args.migrate,
    };
    let every = args.decision_hours.saturating_mul(3600);
    for set in [&mut train, &mut validate]
        .into_iter()
        .chain(unseen.as_mut())
    {
        set.migrate = args.migrate;
        set.space = space;
        set.decision_seconds = every;
    }
    let mut rows = Vec::new();
    let mut replay = |name: String,
                      setting: Setting<'_>,
                      train_eval: Evaluation,
                      cpu: f64,
                      evaluations: usize,
                      updates: Vec<UpdateStats>|
     -> anyhow::Result<Row> {
        let (validate_eval, unseen_eval) = match &setting {
            Setting::Static(k) => (
                validate.evaluate(k)?,
                unseen.as_mut().map(|u| u.evaluate(k)).transpose()?,
            ),
            Setting::Policy(act) => (
                validate.evaluate_by(*act)?,
                unseen.as_mut().map(|u| u.evaluate_by(*act)).transpose()?,
            ),
        };
        let last = |e: &Evaluation| {
            e.epochs
                .as_ref()
                .map(|x| x.last.clone())
                .unwrap_or_default()
        };
        let (knobs, by_episode) = match setting {
            Setting::Static(k) => (k, Vec::new()),
            Setting::Policy(_) => {
                // What it publishes: its last decision in the latest period
                // replayed (the last validation episode in the trained zones).
                let trained = last(&validate_eval);
                let knobs = trained
                    .last()
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("{name}: no decision on validation"))?;
                let mut by = trained;
                by.extend(unseen_eval.as_ref().map(last).unwrap_or_default());
                (knobs, by)
            }
        };
        Ok(Row {
            optimiser: name,
            state_dependent: !by_episode.is_empty(),
            knobs_by_episode: by_episode,
            validate: validate_eval,
            validate_unseen: unseen_eval,
            knobs,
            train: train_eval,
            cpu_seconds: cpu,
            evaluations,
            updates,
        })
    };
    let current = if args.migrate {
        Knobs::current_with_migration()
    } else {
        Knobs::current()
    };
    let current_train = train.evaluate(&current)?;
    rows.push(replay(
        "current".into(),
        Setting::Static(current.clone()),
        current_train,
        0.0,
        0,
        Vec::new(),
    )?);
    for mut opt in optimisers {
        let before = train.replays;
        let started = ProcessTime::now();
        let mut problem = Training {
            set: &mut train,
            failure: None,
        };
        let tuned = opt.tune(&mut problem, args.budget);
        if let Some(e) = problem.failure {
            return Err(e);
        }
        let cpu = started.elapsed().as_secs_f64();
        // In settings' worth of replays.
        let evaluations = (train.replays - before).div_ceil(train.contexts().max(1));
        match tuned {
            Tuned::Static(x) => {
                let knobs = train.knobs(&x);
                let train_eval = train.evaluate(&knobs)?;
                rows.push(replay(
                    opt.name().to_owned(),
                    Setting::Static(knobs),
                    train_eval,
                    cpu,
                    evaluations,
                    Vec::new(),
                )?);
            }
            Tuned::StateDependent { policy, updates } => {
                let act = |s: &[f64]| policy.act(s);
                let train_eval = train.evaluate_by(&act)?;
                rows.push(replay(
                    opt.name().to_owned(),
                    Setting::Policy(&act),
                    train_eval,
                    cpu,
                    evaluations,
                    updates,
                )?);
            }
        }
    }
    let best = rows
        .iter()
        .skip(1)
        .max_by(|a, b| a.train.reward.total_cmp(&b.train.reward))
        .ok_or_else(|| anyhow::anyhow!("--optimisers: at least one"))?;
    let promotion = promotion(&best.validate, &rows[0].validate, args.margin);
    let now = jiff::Timestamp::now().as_second();
    let report = Report {
        train_episodes: train.episodes.iter().map(|e| e.name.clone()).collect(),
        validate_episodes: validate
            .episodes
            .iter()
            .chain(unseen.iter().flat_map(|u| &u.episodes))
            .map(|e| e.name.clone())
            .collect(),
        chosen: best.optimiser.clone(),
        promotion,
        mode: if args.active { "active" } else { "shadow" },
        rows: rows.clone(),
        configmaps: Vec::new(),
    };
    eprint!("{}", table(&report));
    let report_json = serde_json::to_string(&report)?;
    let proposed = if report.promotion.promoted {
        &best.knobs
    } else {
        &rows[0].knobs
    };
    let data = overrides(proposed, now + args.valid_for_hours.max(1) * 3600).to_string_map();
    let mut report = report;
    report.configmaps = crate::publish::configmaps(
        &args.namespace,
        &data,
        args.active,
        &report,
        &report_json,
        now,
        args.deploy.schedule.clone(),
    );
    if let Some(dir) = &args.deploy.output_dir {
        crate::publish::write_dir(dir, &report.configmaps)?;
    }
    let text = serde_json::to_string_pretty(&report.configmaps[0])? + "\n";
    if args.output == "-" {
        std::io::stdout().write_all(text.as_bytes())?;
    } else {
        std::fs::write(&args.output, text).map_err(|e| anyhow::anyhow!("{}: {e}", args.output))?;
    }
    if let Some(p) = &args.report {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    Ok(report)
}

/// The report as a table.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "train: {}\nvalidate: {}\n",
        r.train_episodes.join("; "),
        r.validate_episodes.join("; ")
    ));
    s.push_str(
        "optimiser | train saving | train misses (baseline) | validation saving | validation misses (baseline) | unseen-zone saving | unseen misses (baseline) | CPU s | evals | setting\n",
    );
    for row in &r.rows {
        let u = row.validate_unseen.as_ref();
        s.push_str(&format!(
            "{} | {:.1} % | {} ({}) | {:.1} % | {} ({}) | {} | {} | {:.1} | {} | {}\n",
            row.optimiser,
            100.0 * row.train.saving,
            row.train.deadline_misses,
            row.train.baseline_misses,
            100.0 * row.validate.saving,
            row.validate.deadline_misses,
            row.validate.baseline_misses,
            u.map_or_else(|| "-".into(), |u| format!("{:.1} %", 100.0 * u.saving)),
            u.map_or_else(
                || "-".into(),
                |u| format!("{} ({})", u.deadline_misses, u.baseline_misses)
            ),
            row.cpu_seconds,
            row.evaluations,
            if row.state_dependent {
                let e = row.validate.epochs.clone().unwrap_or_default();
                format!(
                    "per epoch ({} decisions, {} changes on validation; {}); latest: {}",
                    e.decisions,
                    e.changes,
                    e.ranges
                        .iter()
                        .map(|r| format!("{} {}–{}", r.knob, r.min, r.max))
                        .collect::<Vec<_>>()
                        .join(", "),
                    row.knobs.describe()
                )
            } else {
                row.knobs.describe()
            }
        ));
    }
    s.push_str(&format!(
        "chosen: {} ({} mode): {}\n",
        r.chosen,
        r.mode,
        if r.promotion.promoted {
            format!("promoted: {}", r.promotion.reason)
        } else {
            format!("not promoted: {}", r.promotion.reason)
        }
    ));
    s
}
