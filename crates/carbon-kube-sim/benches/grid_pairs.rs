//! What letting work move between clusters on different grids is worth:
//! pairs of real grids, and all six shared zones together (2023, Electricity Maps hourly exports, the
//! Azure-derived job trace, deadline = arrival + length + 24 h, 1.5 × peak
//! demand split equally between the two zones, calibrated forecast error).
//! In one run per pair, against the same carbon-agnostic baseline (spread
//! over both clusters):
//!
//! - `carbon-kube-temporal`: each job stays in the cluster the baseline
//!   would have put it in and only waits for a greener hour there (one grid
//!   per cluster, no movement between clusters);
//! - `carbon-kube`: the job may also go to the other cluster's grid (what
//!   the multi-cluster score lets OCM or Karmada do).
//!
//! Run with `cargo bench -p carbon-kube-sim --bench grid_pairs` (a few
//! seconds per set in a release build); `GRID_PAIRS="DE+GB;AU-NSW+IN-WE"`
//! chooses the sets of zones. Writes `target/grid-pairs.json`. Results:
//! BENCHMARKS.md ("Multi-cluster: moving work between grids").

use std::time::Instant;

use carbon_kube_sim::run::{Args, OracleMode};
use carbon_kube_sim::{shared_data_dir, simulate};

const PAIRS: &str = "DE+GB;US-CAL-CISO+US-TEX-ERCO;GB+US-CAL-CISO;AU-NSW+IN-WE;AU-NSW+DE+GB+IN-WE+US-CAL-CISO+US-TEX-ERCO";

fn main() -> anyhow::Result<()> {
    let shared = shared_data_dir();
    let pairs = std::env::var("GRID_PAIRS").unwrap_or_else(|_| PAIRS.to_owned());
    println!("| clusters | policy | kgCO2eq | saving vs baseline | deadline misses (caused) | s |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for pair in pairs.split(';').filter(|p| !p.trim().is_empty()) {
        let zones: Vec<String> = pair.split('+').map(|z| z.trim().to_owned()).collect();
        let t = Instant::now();
        let args = Args {
            traces: Some(shared.join("carbon_intensity/electricitymaps_hourly")),
            workload: Some(shared.join("workload_traces/gaia/azure-100k.csv")),
            zones: zones.clone(),
            start: Some("2023-01-01".into()),
            end: Some("2024-01-01".into()),
            capacity_factor: 1.5,
            policies: vec!["carbon-kube".into(), "carbon-kube-temporal".into()],
            oracle: OracleMode::None,
            ..Args::default()
        };
        let (report, _) = simulate(&args)?;
        let secs = t.elapsed().as_secs_f64();
        let kg = |name: &str| {
            report
                .policies
                .iter()
                .find(|r| r.outcome.policy == name)
                .map(|r| r.outcome.kg_co2)
        };
        for r in &report.policies {
            let o = &r.outcome;
            println!(
                "| {pair} | {} | {:.1} | {:.1} % | {} ({}) | {secs:.0} |",
                o.policy,
                o.kg_co2,
                r.saving_vs_baseline_pct,
                o.deadline_misses,
                o.deadline_misses_caused,
            );
            rows.push(serde_json::json!({
                "clusters": pair,
                "policy": o.policy,
                "kg_co2": o.kg_co2,
                "saving_pct": r.saving_vs_baseline_pct,
                "deadline_misses": o.deadline_misses,
                "deadline_misses_caused": o.deadline_misses_caused,
            }));
        }
        if let (Some(temporal), Some(both)) = (kg("carbon-kube-temporal"), kg("carbon-kube")) {
            println!(
                "| {pair} | moving between grids vs time shifting in one grid | {:.1} less | {:.1} % less | | |",
                temporal - both,
                100.0 * (temporal - both) / temporal
            );
        }
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/grid-pairs.json");
    std::fs::write(&out, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", out.display());
    Ok(())
}
