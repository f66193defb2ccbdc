//! Speed: one year, ten zones, the 100,000-job Azure-derived trace, each
//! policy simulated on one core. Run with
//! `cargo bench -p carbon-kube-sim --bench speed`.
//!
//! Ten zones: the six zones' fitted 2023 models and four of their 2022
//! models (renamed `<zone>-2022`), generated for 2023 with seed 7, so the
//! benchmark needs no data files other than the job trace.

use std::time::Instant;

use carbon_kube_model::ZoneId;
use carbon_kube_sim::carbon_model::{ModelFile, generate_set};
use carbon_kube_sim::engine::World;
use carbon_kube_sim::forecast::{ErrorModel, ForecastView};
use carbon_kube_sim::run::{ALL_POLICIES, TuningFile, policy};
use carbon_kube_sim::shared_data_dir;
use carbon_kube_sim::trace::{Column, parse_utc};
use carbon_kube_sim::workload::{ClusterSpec, JobDefaults, fit_to_period, read_jobs_csv};

fn main() -> anyhow::Result<()> {
    let models = ModelFile::committed()?;
    let mut chosen: Vec<_> = models
        .models
        .iter()
        .filter(|m| m.column == Column::Direct && m.year == 2023)
        .collect();
    chosen.extend(
        models
            .models
            .iter()
            .filter(|m| m.column == Column::Direct && m.year == 2022)
            .take(4),
    );
    let start = parse_utc("2023-01-01 00:00:00").map_err(anyhow::Error::msg)?;
    let mut traces = generate_set(&chosen, start, 8760, 7)?;
    for (z, m) in traces.zones.iter_mut().zip(&chosen) {
        if m.year == 2022 {
            z.zone = ZoneId::parse(&format!("{}-2022", m.zone))?;
        }
    }
    let defaults = JobDefaults {
        slack_seconds: 24 * 3600,
        interruptible: false,
        memory_gb_per_vcpu: 4.0,
    };
    let jobs = read_jobs_csv(
        &shared_data_dir().join("workload_traces/gaia/azure-100k.csv"),
        start,
        &defaults,
    )?;
    let (jobs, left_out) = fit_to_period(jobs, traces.start, traces.end());
    let cluster = ClusterSpec::default_for(&traces, &jobs, 1.5);
    println!(
        "speed: {} zones, {} hours, {} jobs ({} past the year's end left out), {} vCPUs",
        traces.zones.len(),
        traces.hours(),
        jobs.len(),
        left_out,
        cluster.total_cpus()
    );
    let tuning = TuningFile::default();
    let world = World::new(
        &traces,
        &cluster,
        &jobs,
        ForecastView::new(&traces, ErrorModel::default(), 7),
        tuning.tuning()?,
    )?;
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "policy", "best s", "median s", "kgCO2eq", "queued", "misses"
    );
    let only = std::env::var("SPEED_ONLY").ok();
    for name in ALL_POLICIES {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let p = policy(name, &tuning).ok_or_else(|| anyhow::anyhow!("no policy {name}"))?;
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            let t = Instant::now();
            last = Some(world.run(&p, &|_| {}));
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let o = last.unwrap_or_default();
        println!(
            "{name:<24} {:>10.3} {:>10.3} {:>10.0} {:>8} {:>8}",
            times[0], times[2], o.kg_co2, o.queued_jobs, o.deadline_misses
        );
    }
    Ok(())
}
