//! A small training on real data: three days of 2022 in two zones,
//! validated on the same days of 2023 and on a zone training never sees,
//! with every optimiser on a tiny budget (PPO: a few updates). Checks the
//! run end to end, not the numbers.

use carbon_kube_policy::overrides::RuntimeOverrides;
use carbon_kube_tuner::output::overrides;
use carbon_kube_tuner::{Knobs, TuneArgs, run};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TuneArgs,
}

#[test]
fn a_smoke_training_reports_every_optimiser_and_writes_a_configmap() {
    let dir = std::env::temp_dir().join(format!("tuner-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("cm.json");
    let cli = Cli::try_parse_from([
        "tune",
        "--train-zones",
        "DE,US-CAL-CISO",
        "--unseen-zones",
        "GB",
        "--train-starts",
        "2022-05-09",
        "--validate-starts",
        "2023-05-08",
        "--days",
        "3",
        "--max-jobs",
        "150",
        "--validate-seeds",
        "2",
        "--budget",
        "6",
        // One training replay × budget 6 = 6 PPO episodes: updates after
        // 5 and after 1.
        "--ppo-update-every",
        "5",
        "--ppo-epochs",
        "2",
        "--output",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let report = run(&cli.args).unwrap();
    let names: Vec<&str> = report.rows.iter().map(|r| r.optimiser.as_str()).collect();
    assert_eq!(names, ["current", "grid", "cma-es", "ppo"]);
    for row in &report.rows[1..] {
        assert!(row.evaluations >= 1 && row.evaluations <= 6, "{row:?}");
        assert_eq!(row.validate.reward_per_seed.len(), 2);
        assert!(row.validate_unseen.is_some());
        // Every proposed setting is one the components accept.
        let o = overrides(&row.knobs, 1_800_000_000);
        RuntimeOverrides::from_string_map(&o.to_string_map(), "")
            .unwrap()
            .placement
            .validate()
            .unwrap();
    }
    let ppo = &report.rows[3];
    assert!(ppo.state_dependent);
    assert_eq!(ppo.updates.len(), 2, "{ppo:?}");
    assert!(
        ppo.updates.iter().all(|u| u.loss.is_finite()),
        "{:?}",
        ppo.updates
    );
    // One setting per validation episode: one in the trained zones, one in
    // the unseen zone.
    assert_eq!(ppo.knobs_by_episode.len(), 2);
    assert!(ppo.validate.reward.is_finite() && ppo.train.reward.is_finite());
    let cm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // Shadow mode by default: never the ConfigMap the components read.
    assert_eq!(cm["metadata"]["name"], "carbon-kube-tuner");
    assert!(cm["data"]["validUntil"].is_string(), "{cm}");
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(cm["data"].clone()).unwrap();
    // What it writes reads back with the components' codec.
    let o = RuntimeOverrides::from_string_map(&data, "").unwrap();
    o.placement.validate().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// PPO alone, with a margin no setting can earn: it is the chosen
/// optimiser, promotion refuses it, and what is written (even with
/// --active) is the static setting in the shadow ConfigMap.
#[test]
fn a_ppo_policy_that_does_not_beat_the_margin_is_not_published() {
    let dir = std::env::temp_dir().join(format!("tuner-smoke-ppo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("cm.json");
    let cli = Cli::try_parse_from([
        "tune",
        "--train-zones",
        "DE",
        "--unseen-zones",
        "",
        "--train-starts",
        "2022-05-09",
        "--validate-starts",
        "2023-05-08",
        "--days",
        "2",
        "--max-jobs",
        "60",
        "--validate-seeds",
        "2",
        "--optimisers",
        "ppo",
        "--ppo-replays",
        "8",
        "--ppo-update-every",
        "4",
        "--ppo-epochs",
        "2",
        "--margin",
        "1",
        "--active",
        "--output",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let report = run(&cli.args).unwrap();
    assert_eq!(report.chosen, "ppo");
    assert!(!report.promotion.promoted, "{:?}", report.promotion);
    assert_eq!(report.rows[1].updates.len(), 2);
    let cm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(cm["metadata"]["name"], "carbon-kube-tuner");
    let mut data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(cm["data"].clone()).unwrap();
    let mut current = overrides(&Knobs::current(), 0).to_string_map();
    // The setting's keys are the static setting's; validUntil and the run
    // status differ.
    for k in ["validUntil", "tunerStatus"] {
        data.remove(k);
        current.remove(k);
    }
    assert_eq!(data, current);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With --migrate the replays run carbon-kube+migrate and the settings carry
/// the migration margin and dwell, written into the ConfigMap as the
/// migrator's `migration.*` keys (shadow mode: carbon-kube-tuner only).
#[test]
fn with_migration_the_settings_carry_the_migration_knobs() {
    let dir = std::env::temp_dir().join(format!("tuner-smoke-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("cm.json");
    let cli = Cli::try_parse_from([
        "tune",
        "--migrate",
        "--train-zones",
        "DE,GB",
        "--unseen-zones",
        "",
        "--train-starts",
        "2022-05-09",
        "--validate-starts",
        "2023-05-08",
        "--days",
        "2",
        "--max-jobs",
        "60",
        "--validate-seeds",
        "1",
        "--optimisers",
        "cma-es,ppo",
        "--budget",
        "4",
        "--ppo-update-every",
        "2",
        "--ppo-epochs",
        "1",
        "--output",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let report = run(&cli.args).unwrap();
    for row in &report.rows {
        let margin = row.knobs.migration_margin.unwrap();
        let dwell = row.knobs.min_dwell_seconds.unwrap();
        assert!((0.0..=2.0).contains(&margin), "{row:?}");
        assert!((0..=6 * 3600).contains(&dwell), "{row:?}");
    }
    assert_eq!(report.rows[0].knobs, Knobs::current_with_migration());
    let cm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let data = cm["data"].as_object().unwrap();
    assert_eq!(cm["metadata"]["name"], "carbon-kube-tuner", "{cm}");
    let proposed = if report.promotion.promoted {
        report
            .rows
            .iter()
            .find(|r| r.optimiser == report.chosen)
            .unwrap()
            .knobs
            .clone()
    } else {
        Knobs::current_with_migration()
    };
    let margin: f64 = data["migration.margin"].as_str().unwrap().parse().unwrap();
    let dwell: i64 = data["migration.minDwellSeconds"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(Some(margin), proposed.migration_margin, "{cm}");
    assert_eq!(Some(dwell), proposed.min_dwell_seconds, "{cm}");
    let _ = std::fs::remove_dir_all(&dir);
}
