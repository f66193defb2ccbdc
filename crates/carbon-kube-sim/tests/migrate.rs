//! The `migrate` capability on real data: `carbon-kube+migrate` beside
//! `carbon-kube` on the six real 2023 Electricity Maps zones (which differ
//! and change order through the day) with the Azure-derived trace.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failure")]

use carbon_kube_sim::run::{Args, OracleMode, TuningFile};
use carbon_kube_sim::{shared_data_dir, simulate};

fn args(tuning: Option<std::path::PathBuf>) -> Args {
    let shared = shared_data_dir();
    Args {
        traces: Some(shared.join("carbon_intensity/electricitymaps_hourly")),
        workload: Some(shared.join("workload_traces/gaia/azure-100k.csv")),
        start: Some("2023-03-01".into()),
        end: Some("2023-03-15".into()),
        policies: vec!["carbon-kube".into(), "carbon-kube+migrate".into()],
        oracle: OracleMode::None,
        tuning,
        ..Args::default()
    }
}

#[test]
fn jobs_move_between_real_zones_only_when_it_pays_and_never_miss_a_deadline() {
    // Interruptible jobs (checkpoints every hour): moves lose at most an hour.
    let dir = tempfile::tempdir().unwrap();
    let tuning = dir.path().join("tuning.yaml");
    std::fs::write(&tuning, "checkpointSeconds: 3600\n").unwrap();
    let mut a = args(Some(tuning));
    a.interruptible = true;
    let (report, _) = simulate(&a).unwrap();
    let row = |name: &str| {
        report
            .policies
            .iter()
            .find(|r| r.outcome.policy == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let base = row("baseline");
    let ck = row("carbon-kube");
    let mig = row("carbon-kube+migrate");
    let m = mig.outcome.migration.as_ref().unwrap();
    assert!(ck.outcome.migration.is_none());
    // Moves happen, each decided by the rule (estimated to pay).
    assert!(m.migrations > 0, "{m:?}");
    assert!(m.migrated_jobs > 0 && m.migrated_jobs <= m.migrations);
    assert_eq!(m.decisions["migrated"], m.migrations);
    assert!(m.estimated_net_saving_kg > 0.0, "{m:?}");
    // The cost is accounted: lost work and restarts are energy spent on top.
    assert!(m.wasted_kwh > 0.0 && m.restart_kwh > 0.0, "{m:?}");
    assert!(
        (mig.outcome.energy_kwh - m.wasted_kwh - base.outcome.energy_kwh).abs()
            < 1e-6 * base.outcome.energy_kwh,
        "energy {} − wasted {} ≠ the workload's {}",
        mig.outcome.energy_kwh,
        m.wasted_kwh,
        base.outcome.energy_kwh
    );
    let zone_sum: f64 = mig.outcome.zones.iter().map(|z| z.kg_co2).sum();
    assert!((zone_sum - mig.outcome.kg_co2).abs() < 1e-6 * mig.outcome.kg_co2);
    // No move pushed a job past its deadline, and migration caused none.
    assert_eq!(m.deadline_misses_of_moved_jobs, 0);
    assert_eq!(mig.outcome.deadline_misses_caused, 0);
    assert_eq!(ck.outcome.deadline_misses, 0);
    // The report states the figures against carbon-kube without migration.
    let extra = m.extra_saving_vs_carbon_kube_kg.unwrap();
    assert!(
        (extra - (ck.outcome.kg_co2 - mig.outcome.kg_co2)).abs() < 1e-9,
        "{extra}"
    );
    assert!(m.migrations_per_1000_pod_hours > 0.0);
    let table = report.to_table();
    assert!(
        table.contains("carbon-kube+migrate: ") && table.contains("per 1,000 pod-hours"),
        "{table}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["policies"][2]["migration"]["migrations"].is_number());
}

#[test]
fn a_rule_that_never_pays_moves_nothing_and_changes_nothing() {
    // A disruption penalty no saving can beat: the migrate row must be the
    // carbon-kube row exactly (the capability itself costs nothing).
    let dir = tempfile::tempdir().unwrap();
    let tuning = dir.path().join("tuning.yaml");
    let t = TuningFile::default();
    let mut yaml = serde_json::to_value(&t).unwrap();
    yaml["migration"]["disruptionPenaltyGrams"] = serde_json::json!(1e12);
    std::fs::write(&tuning, serde_json::to_string(&yaml).unwrap()).unwrap();
    let (report, _) = simulate(&args(Some(tuning))).unwrap();
    let ck = &report.policies[1].outcome;
    let mig = &report.policies[2].outcome;
    assert_eq!(mig.policy, "carbon-kube+migrate");
    let m = mig.migration.as_ref().unwrap();
    assert_eq!(m.migrations, 0);
    assert!(m.decisions["skipped_not_worth_it"] > 0, "{m:?}");
    assert_eq!(mig.kg_co2, ck.kg_co2);
    assert_eq!(mig.energy_kwh, ck.energy_kwh);
    assert_eq!(mig.deadline_misses, ck.deadline_misses);
}
