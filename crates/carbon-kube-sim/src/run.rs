//! `carbon-kube simulate`: arguments, the default scenario, and the run.

use std::path::PathBuf;
use std::time::Instant;

use carbon_kube_model::{CarbonIntensity, ZoneId};
use carbon_kube_policy::deferral::DeferralConfig;
use carbon_kube_policy::migration::MigrationConfig;
use serde::{Deserialize, Serialize};

use crate::carbon_model::{self, ModelFile};
use crate::engine::{Outcome, Policy, Strategy, Tuning, World};
use crate::error::SimError;
use crate::forecast::{ErrorModel, ForecastView, IssuedForecasts};
use crate::oracle;
use crate::report::{OracleReport, Report};
use crate::trace::{self, Column, HOUR, TraceSet, fmt_time, parse_utc};
use crate::workload::{self, ClusterSpec, GeneratedWorkload, Job, JobDefaults};

/// How much of the oracle to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OracleMode {
    /// Per-job optimum, windowed LP and the integer check.
    Full,
    /// Only the capacity-relaxed per-job optimum (fast).
    PerJob,
    /// No oracle.
    None,
}

/// Arguments of `carbon-kube simulate`. With none, runs the built-in
/// scenario on modelled traces (offline, a few seconds).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Folder of Electricity Maps data-portal hourly CSV exports (one zone per
    /// file; files of one zone for consecutive years are joined).
    #[arg(long, value_name = "DIR")]
    pub traces: Option<PathBuf>,
    /// Simulate only these zones of the traces, comma-separated (e.g.
    /// `--zones DE` for a single-zone cluster: one grid, the common case).
    #[arg(long, value_delimiter = ',', value_name = "ZONES")]
    pub zones: Vec<String>,
    /// Which intensity column of the exports to use.
    #[arg(long, value_enum, default_value_t = Column::Direct)]
    pub column: Column,
    /// Job trace CSV: `arrival_time,length,cpus` in hours from the traces'
    /// start (optional `memory_gb`, `deadline`, `interruptible`).
    #[arg(long, value_name = "FILE")]
    pub workload: Option<PathBuf>,
    /// Scenario file (YAML/JSON): modelled zones, period, generated workload.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Cluster file (YAML/JSON): zones with nodes, vCPUs, memory, energy model.
    /// Default: one zone per trace, equal capacity, about
    /// `--capacity-factor` × the workload's peak vCPU demand in total.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Total capacity of the default cluster relative to peak demand.
    #[arg(long, default_value_t = 1.5)]
    pub capacity_factor: f64,
    /// Slack for jobs without a deadline: deadline = arrival + length + slack, hours.
    #[arg(long, default_value_t = 24.0)]
    pub slack: f64,
    /// Jobs without an `interruptible` column may be paused: the oracle's
    /// per-job bound pauses them; `carbon-kube+migrate` moves them keeping
    /// their work up to the last checkpoint (tuning `checkpointSeconds`,
    /// default 1 h) instead of losing all of it.
    #[arg(long)]
    pub interruptible: bool,
    /// First day simulated (`YYYY-MM-DD`, UTC); default: the traces' start.
    #[arg(long)]
    pub start: Option<String>,
    /// Day after the last simulated (`YYYY-MM-DD`, UTC); default: the traces' end.
    #[arg(long)]
    pub end: Option<String>,
    /// Simulate only the first N jobs.
    #[arg(long)]
    pub max_jobs: Option<usize>,
    /// Seed of modelled traces, generated workloads and forecast errors.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Forecast error at lead 0, relative sd (default: calibrated).
    #[arg(long)]
    pub forecast_sigma0: Option<f64>,
    /// Forecast error growth per sqrt(hour) of lead (default: calibrated).
    #[arg(long)]
    pub forecast_growth: Option<f64>,
    /// Give policies the actual future (no forecast error).
    #[arg(long)]
    pub perfect_forecast: bool,
    /// CSV of issued forecasts policies see instead of the error model:
    /// header `issued_at,zone,target,carbon_intensity` (RFC 3339 times such
    /// as 2023-03-15T12:00:00Z, g/kWh). At time t each zone's latest forecast issued at or before t is
    /// used; uncovered zones and hours fall back to the error model.
    #[arg(long, value_name = "FILE")]
    pub forecasts: Option<PathBuf>,
    /// Policies to run, comma-separated (default: all). `baseline` always
    /// runs. Known: baseline, carbon-kube, carbon-kube+migrate (carbon-kube
    /// that also moves running jobs between zones when the migrator's rule
    /// says it pays), carbon-kube-spatial, carbon-kube-temporal,
    /// threshold-hold, greenest-zone-now, best-window.
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// How much of the oracle to compute.
    #[arg(long, value_enum, default_value_t = OracleMode::Full)]
    pub oracle: OracleMode,
    /// Jobs in the LP-vs-integer check (0 skips it).
    #[arg(long, default_value_t = 12)]
    pub integer_jobs: usize,
    /// Tuning file (YAML/JSON) with Carbon-Kube's and the peers' knobs:
    /// `threshold`, `carbonWeight`, `performanceWeight`, `deferral`,
    /// `thresholdHold`, `migration` (the migrator's rule) and
    /// `checkpointSeconds`.
    #[arg(long, value_name = "FILE")]
    pub tuning: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write a plot (`.svg` or `.png`).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            traces: None,
            zones: Vec::new(),
            column: Column::Direct,
            workload: None,
            scenario: None,
            cluster: None,
            capacity_factor: 1.5,
            slack: 24.0,
            interruptible: false,
            start: None,
            end: None,
            max_jobs: None,
            seed: 42,
            forecast_sigma0: None,
            forecast_growth: None,
            perfect_forecast: false,
            forecasts: None,
            policies: Vec::new(),
            oracle: OracleMode::Full,
            integer_jobs: 12,
            tuning: None,
            json: false,
            plot: None,
            no_progress: true,
        }
    }
}

/// Knobs of Carbon-Kube and the peer strategies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TuningFile {
    /// Placement threshold, g/kWh.
    pub threshold: f64,
    /// Placement carbon weight.
    pub carbon_weight: u32,
    /// Placement performance weight.
    pub performance_weight: u32,
    /// Deferral planner.
    pub deferral: DeferralConfig,
    /// Threshold of the threshold-hold peer, g/kWh.
    pub threshold_hold: f64,
    /// The migration rule of `carbon-kube+migrate` (the migrator's
    /// `MigrationConfig`, camelCase; `maxDataAgeSeconds` defaults to 2 h
    /// here, as snapshots are hourly).
    pub migration: MigrationConfig,
    /// `carbon-kube+migrate`: interruptible jobs checkpoint every this many
    /// seconds of progress; a move loses only the work since the last one.
    pub checkpoint_seconds: i64,
}

impl Default for TuningFile {
    fn default() -> Self {
        let t = Tuning::default();
        Self {
            threshold: t.placement.threshold.g_per_kwh(),
            carbon_weight: t.placement.carbon_weight,
            performance_weight: t.placement.performance_weight,
            deferral: t.deferral,
            threshold_hold: 200.0,
            migration: t.migration,
            checkpoint_seconds: t.checkpoint_seconds,
        }
    }
}

impl TuningFile {
    /// The policy crate's configuration.
    pub fn tuning(&self) -> Result<Tuning, SimError> {
        let mut t = Tuning::default();
        t.placement.threshold = CarbonIntensity::new(self.threshold)
            .map_err(|e| SimError::Inconsistent(format!("tuning threshold: {e}")))?;
        t.placement.carbon_weight = self.carbon_weight;
        t.placement.performance_weight = self.performance_weight;
        self.deferral
            .validate()
            .map_err(|e| SimError::Inconsistent(format!("tuning deferral: {}", e.join("; "))))?;
        t.deferral = self.deferral.clone();
        self.migration
            .validate()
            .map_err(|e| SimError::Inconsistent(format!("tuning migration: {}", e.join("; "))))?;
        t.migration = self.migration.clone();
        if self.checkpoint_seconds <= 0 {
            return Err(SimError::Inconsistent(format!(
                "tuning checkpointSeconds: {} must be positive",
                self.checkpoint_seconds
            )));
        }
        t.checkpoint_seconds = self.checkpoint_seconds;
        Ok(t)
    }
}

/// A modelled scenario: zones from the committed carbon models, a period,
/// a generated workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Zones (must have a committed model for `year`).
    pub zones: Vec<String>,
    /// Which fitted year to model.
    pub year: i32,
    /// First day, `YYYY-MM-DD`.
    pub start: String,
    /// Days simulated.
    pub days: u32,
    /// Workload generator.
    pub workload: GeneratedWorkload,
    /// Cluster (default: derived from the workload).
    pub cluster: Option<ClusterSpec>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            zones: ["DE", "GB", "US-CAL-CISO", "US-TEX-ERCO", "AU-NSW", "IN-WE"]
                .map(str::to_owned)
                .to_vec(),
            year: 2023,
            start: "2023-04-03".into(),
            days: 14,
            workload: GeneratedWorkload::default(),
            cluster: None,
        }
    }
}

/// The policies the simulator knows, by name.
pub fn policy(name: &str, tuning: &TuningFile) -> Option<Policy> {
    let strategy = match name {
        "baseline" => Strategy::Baseline,
        "carbon-kube" | "carbon-kube+migrate" => Strategy::CarbonKube {
            spatial: true,
            temporal: true,
        },
        "carbon-kube-spatial" => Strategy::CarbonKube {
            spatial: true,
            temporal: false,
        },
        "carbon-kube-temporal" => Strategy::CarbonKube {
            spatial: false,
            temporal: true,
        },
        "threshold-hold" => Strategy::ThresholdHold {
            threshold: tuning.threshold_hold,
        },
        "greenest-zone-now" => Strategy::GreenestZoneNow,
        "best-window" => Strategy::BestWindow,
        _ => return None,
    };
    Some(Policy {
        name: name.to_owned(),
        strategy,
        migrate: name.ends_with("+migrate"),
    })
}

/// Every policy name, baseline first.
pub const ALL_POLICIES: [&str; 8] = [
    "baseline",
    "carbon-kube",
    "carbon-kube+migrate",
    "carbon-kube-spatial",
    "carbon-kube-temporal",
    "threshold-hold",
    "greenest-zone-now",
    "best-window",
];

/// The inputs of a run, loaded and validated.
pub struct Inputs {
    /// Traces.
    pub traces: TraceSet,
    /// Jobs.
    pub jobs: Vec<Job>,
    /// Jobs left out.
    pub left_out: usize,
    /// Where the jobs came from.
    pub workload: String,
    /// Cluster.
    pub cluster: ClusterSpec,
    /// Knobs.
    pub tuning: TuningFile,
    /// Forecast error.
    pub error: ErrorModel,
    /// Issued forecasts from `--forecasts`.
    pub supplied: Option<IssuedForecasts>,
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T, SimError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
        path: path.clone(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| SimError::file(path, e.to_string()))
}

fn day(raw: &str, what: &str) -> Result<i64, SimError> {
    parse_utc(raw).map_err(|e| SimError::Inconsistent(format!("--{what}: {e}")))
}

/// Loads the inputs the arguments describe.
pub fn load(args: &Args) -> Result<Inputs, SimError> {
    let defaults = JobDefaults {
        slack_seconds: (args.slack * HOUR as f64).round() as i64,
        interruptible: args.interruptible,
        memory_gb_per_vcpu: 4.0,
    };
    if args.slack < 0.0 || !args.slack.is_finite() {
        return Err(SimError::Inconsistent(format!(
            "--slack {} must be a non-negative number of hours",
            args.slack
        )));
    }
    let scenario: Scenario = match &args.scenario {
        Some(p) => read_yaml(p)?,
        None => Scenario::default(),
    };
    let mut traces = match &args.traces {
        Some(dir) => trace::read_em_dir(dir, args.column)?,
        None => {
            let models = ModelFile::committed()?;
            let mut chosen = Vec::new();
            for z in &scenario.zones {
                let id = ZoneId::parse(z)
                    .map_err(|e| SimError::Inconsistent(format!("scenario zone {z:?}: {e}")))?;
                chosen.push(models.get(&id, scenario.year, args.column).ok_or_else(|| {
                    SimError::Inconsistent(format!(
                        "no committed carbon model for zone {z} in {} ({:?}); models exist for {}",
                        scenario.year,
                        args.column,
                        models
                            .models
                            .iter()
                            .map(|m| format!("{} {}", m.zone, m.year))
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?);
            }
            let start = day(&scenario.start, "scenario start")?;
            carbon_model::generate_set(&chosen, start, scenario.days as usize * 24, args.seed)?
        }
    };
    if !args.zones.is_empty() {
        let mut keep = Vec::new();
        for z in &args.zones {
            let id = ZoneId::parse(z)
                .map_err(|e| SimError::Inconsistent(format!("--zones {z:?}: {e}")))?;
            let i = traces.zone_index(&id).ok_or_else(|| {
                SimError::Inconsistent(format!(
                    "--zones: no trace for zone {id} (traces: {})",
                    traces
                        .zones
                        .iter()
                        .map(|t| t.zone.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            keep.push(traces.zones[i].clone());
        }
        traces.zones = keep;
    }
    if traces.hours() == 0 {
        return Err(SimError::Inconsistent("the traces are empty".into()));
    }
    let from = args.start.as_deref().map(|s| day(s, "start")).transpose()?;
    let to = args.end.as_deref().map(|s| day(s, "end")).transpose()?;
    if from.is_some() || to.is_some() {
        traces = traces.slice(from.unwrap_or(traces.start), to.unwrap_or(traces.end()))?;
    }
    let (jobs, workload_name) = match &args.workload {
        Some(p) => (
            workload::read_jobs_csv(p, traces.start, &defaults)?,
            p.display().to_string(),
        ),
        None => (
            scenario
                .workload
                .generate(traces.start, traces.hours(), args.seed, &defaults),
            format!(
                "generated ({} jobs/h, median {} h, {} services)",
                scenario.workload.jobs_per_hour,
                scenario.workload.median_length_hours,
                scenario.workload.services
            ),
        ),
    };
    let (mut jobs, mut left_out) = workload::fit_to_period(jobs, traces.start, traces.end());
    if let Some(n) = args.max_jobs
        && jobs.len() > n
    {
        left_out += jobs.len() - n;
        jobs.truncate(n);
    }
    if jobs.is_empty() {
        return Err(SimError::Inconsistent(format!(
            "no job of the workload falls inside the traces' period ({} .. {})",
            fmt_time(traces.start),
            fmt_time(traces.end())
        )));
    }
    let cluster = match (&args.cluster, &scenario.cluster) {
        (Some(p), _) => ClusterSpec::read(p)?,
        (None, Some(c)) => c.clone(),
        (None, None) => ClusterSpec::default_for(&traces, &jobs, args.capacity_factor),
    };
    cluster.validate().map_err(SimError::Inconsistent)?;
    let largest = jobs.iter().map(|j| j.cpu_millis).max().unwrap_or(0);
    let biggest_node = cluster
        .zones
        .iter()
        .map(|z| u64::from(z.cpus_per_node) * 1000)
        .max()
        .unwrap_or(0);
    if largest > biggest_node {
        return Err(SimError::Inconsistent(format!(
            "a job requests {} vCPUs but the largest node has {}",
            largest / 1000,
            biggest_node / 1000
        )));
    }
    let tuning: TuningFile = match &args.tuning {
        Some(p) => read_yaml(p)?,
        None => TuningFile::default(),
    };
    let mut error = ErrorModel::default();
    if let Some(s) = args.forecast_sigma0 {
        error.sigma0 = s;
    }
    if let Some(g) = args.forecast_growth {
        error.growth = g;
    }
    if args.perfect_forecast {
        error = ErrorModel::PERFECT;
    }
    let supplied = args
        .forecasts
        .as_deref()
        .map(|p| IssuedForecasts::read(p, &traces))
        .transpose()?;
    Ok(Inputs {
        traces,
        jobs,
        left_out,
        workload: workload_name,
        cluster,
        tuning,
        error,
        supplied,
    })
}

/// Runs the simulation the arguments describe and returns the report and
/// each policy's outcome (with the hourly series for plotting).
pub fn simulate(args: &Args) -> Result<(Report, Inputs), SimError> {
    let inputs = load(args)?;
    let mut names: Vec<String> = if args.policies.is_empty() {
        ALL_POLICIES.map(str::to_owned).to_vec()
    } else {
        args.policies.clone()
    };
    if !names.iter().any(|n| n == "baseline") {
        names.insert(0, "baseline".into());
    }
    let mut policies = Vec::new();
    for n in &names {
        policies.push(policy(n, &inputs.tuning).ok_or_else(|| {
            SimError::Inconsistent(format!(
                "unknown policy {n:?}; known: {}",
                ALL_POLICIES.join(", ")
            ))
        })?);
    }
    let mut forecast = ForecastView::new(&inputs.traces, inputs.error, args.seed);
    if let Some(sup) = &inputs.supplied {
        forecast = forecast.with_supplied(sup);
    }
    let world = World::new(
        &inputs.traces,
        &inputs.cluster,
        &inputs.jobs,
        forecast,
        inputs.tuning.tuning()?,
    )?;
    let total = (inputs.jobs.len()
        * (policies.len() + usize::from(args.oracle == OracleMode::Full))) as u64;
    let bar = Progress::new(total, args.no_progress);
    let tick = |n: u64| bar.inc(n);
    let outcomes: Vec<Outcome> = policies.iter().map(|p| world.run(p, &tick)).collect();
    let mut oracle_report = OracleReport::default();
    if args.oracle != OracleMode::None {
        oracle_report.per_job_kg_co2 = Some(oracle::per_job_optimum(&world));
    }
    if args.oracle == OracleMode::Full {
        oracle_report.lp = Some(oracle::windowed_lp(&world, &tick)?);
        if args.integer_jobs > 0 {
            oracle_report.integer_gap = Some(oracle::integer_gap(&world, args.integer_jobs)?);
        }
    }
    bar.finish();
    let lp_kg = oracle_report.lp.as_ref().map(|l| l.kg_co2);
    let per_job_kg = oracle_report.per_job_kg_co2;
    let mut notes = vec![
        "saving = (baseline − policy) / baseline; of oracle = (baseline − policy) / (baseline − LP bound). \
         misses = jobs finished after their deadline; delay = start − arrival; peak/h = most jobs released in one clock hour."
            .to_owned(),
        "Emissions = energy (Cloud Carbon Footprint coefficients) × the actual intensity of the zone over the hours each job ran. \
         Policies other than the oracle only see forecasts."
            .to_owned(),
    ];
    if inputs.traces.modelled {
        notes.push(
            "These traces are MODELLED from fitted profiles, not real data; see docs/simulator.md."
                .to_owned(),
        );
    }
    let report = Report {
        traces: inputs.traces.origin.clone(),
        modelled_traces: inputs.traces.modelled,
        period_start: fmt_time(inputs.traces.start),
        period_end: fmt_time(inputs.traces.end()),
        zones: inputs
            .cluster
            .zones
            .iter()
            .map(|z| z.zone.to_string())
            .collect(),
        workload: inputs.workload.clone(),
        jobs: inputs.jobs.len(),
        jobs_left_out: inputs.left_out,
        slack_hours: args.slack,
        cluster_cpus: inputs.cluster.total_cpus(),
        forecast_error: inputs.error,
        forecast_error_text: inputs.error.describe(),
        supplied_forecasts: inputs.supplied.as_ref().map(|s| s.summary(&inputs.traces)),
        oracle: oracle_report,
        policies: Report::rows(outcomes, lp_kg, per_job_kg),
        notes,
    };
    Ok((report, inputs))
}

/// Runs `carbon-kube simulate`: prints the table (or JSON) and writes the plot.
pub fn run(args: Args) -> anyhow::Result<Report> {
    let (report, inputs) = simulate(&args)?;
    if let Some(p) = &args.plot {
        let outcomes: Vec<Outcome> = report.policies.iter().map(|r| r.outcome.clone()).collect();
        crate::plot::write_plot(p, &inputs.traces, &outcomes, "carbon-kube")?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
        if let Some(p) = &args.plot {
            println!("\nplot written to {}", p.display());
        }
    }
    Ok(report)
}

/// A progress bar that appears only once a run has taken two seconds.
struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    quiet: bool,
    shown: std::cell::Cell<bool>,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::hidden(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} job-steps ({eta} left)",
        ) {
            bar.set_style(style);
        }
        Self {
            bar,
            started: Instant::now(),
            quiet,
            shown: std::cell::Cell::new(false),
        }
    }

    fn inc(&self, n: u64) {
        self.bar.inc(n);
        if !self.quiet && !self.shown.get() && self.started.elapsed().as_secs_f64() > 2.0 {
            self.shown.set(true);
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }

    fn finish(&self) {
        if self.shown.get() {
            self.bar.finish_and_clear();
        }
    }
}
