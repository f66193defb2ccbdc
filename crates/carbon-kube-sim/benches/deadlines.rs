//! Deadlines under capacity pressure: every shared zone alone as a
//! single-zone cluster, and all six together, for one real year (2023), at
//! 1.5 × and 1.2 × the workload's peak demand, with the calibrated forecast
//! error. Reports each policy's deadline misses split by cause, its saving,
//! its share of the per-job optimum's saving and its peak releases per hour
//! beside the baseline's. Run with
//! `cargo bench -p carbon-kube-sim --bench deadlines` (about 3 minutes);
//! `DEADLINES_ZONES=DE,GB` (`all`: the six together) and
//! `DEADLINES_FACTORS=1.5` narrow it. `DEADLINES_PERFECT=1` replaces the
//! forecast error by the actual future (`--perfect-forecast`), and a large
//! factor (`DEADLINES_FACTORS=50`) all but removes the capacity limit: what
//! is left of the gap to the per-job optimum is then the planner's own.
//! `DEADLINES_TUNING=FILE` runs with a tuning file (`simulate --tuning`).
//! Writes `target/deadlines.json`.

use std::time::Instant;

use carbon_kube_sim::run::{Args, OracleMode};
use carbon_kube_sim::{shared_data_dir, simulate};

const ZONES: [&str; 6] = ["AU-NSW", "DE", "GB", "IN-WE", "US-CAL-CISO", "US-TEX-ERCO"];

fn list(var: &str, default: &[&str]) -> Vec<String> {
    std::env::var(var).map_or_else(
        |_| default.iter().map(|s| (*s).to_owned()).collect(),
        |v| v.split(',').map(str::to_owned).collect(),
    )
}

fn main() -> anyhow::Result<()> {
    let shared = shared_data_dir();
    let zones = list("DEADLINES_ZONES", &ZONES);
    let factors: Vec<f64> = list("DEADLINES_FACTORS", &["1.5", "1.2"])
        .iter()
        .map(|f| f.parse())
        .collect::<Result<_, _>>()?;
    // `all` is the six zones together.
    let mut clusters: Vec<Vec<String>> = zones
        .iter()
        .map(|z| {
            if z == "all" {
                Vec::new()
            } else {
                vec![z.clone()]
            }
        })
        .collect();
    if std::env::var_os("DEADLINES_ZONES").is_none() {
        clusters.push(Vec::new()); // all six zones
    }
    println!(
        "| cluster | capacity | policy | kgCO2eq | saving | share of per-job optimum's saving | misses (caused by the policy) | peak releases/h (baseline) | s |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for cluster in &clusters {
        for &factor in &factors {
            let t = Instant::now();
            let args = Args {
                traces: Some(shared.join("carbon_intensity/electricitymaps_hourly")),
                workload: Some(shared.join("workload_traces/gaia/azure-100k.csv")),
                zones: cluster.clone(),
                start: Some("2023-01-01".into()),
                end: Some("2024-01-01".into()),
                capacity_factor: factor,
                policies: vec!["carbon-kube".into(), "carbon-kube-temporal".into()],
                oracle: OracleMode::PerJob,
                perfect_forecast: std::env::var_os("DEADLINES_PERFECT").is_some(),
                tuning: std::env::var_os("DEADLINES_TUNING").map(Into::into),
                ..Args::default()
            };
            let (report, _) = simulate(&args)?;
            let secs = t.elapsed().as_secs_f64();
            let name = if cluster.is_empty() {
                "all six".to_owned()
            } else {
                cluster.join(",")
            };
            let base = report
                .policies
                .iter()
                .find(|r| r.outcome.policy == "baseline")
                .map(|r| r.outcome.peak_releases_per_hour)
                .unwrap_or(0);
            for r in &report.policies {
                let o = &r.outcome;
                println!(
                    "| {name} | {factor} × | {} | {:.1} | {:.1} % | {} | {} ({}) | {} ({base}) | {secs:.0} |",
                    o.policy,
                    o.kg_co2,
                    r.saving_vs_baseline_pct,
                    r.share_of_per_job_saving_pct
                        .map_or_else(|| "-".to_owned(), |p| format!("{p:.1} %")),
                    o.deadline_misses,
                    o.deadline_misses_caused,
                    o.peak_releases_per_hour,
                );
                rows.push(serde_json::json!({
                    "cluster": name,
                    "capacity_factor": factor,
                    "policy": o.policy,
                    "kg_co2": o.kg_co2,
                    "saving_pct": r.saving_vs_baseline_pct,
                    "share_of_per_job_saving_pct": r.share_of_per_job_saving_pct,
                    "deadline_misses": o.deadline_misses,
                    "deadline_misses_caused": o.deadline_misses_caused,
                    "peak_releases_per_hour": o.peak_releases_per_hour,
                    "baseline_peak_releases_per_hour": base,
                    "per_job_optimum_kg": report.oracle.per_job_kg_co2,
                }));
            }
        }
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/deadlines.json");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", out.display());
    Ok(())
}
