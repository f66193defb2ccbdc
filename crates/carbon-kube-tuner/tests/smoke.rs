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
        // One training replay × budget 6 = 6 PPO episodes: one warm-up
        // (the middle setting, to standardise the states), then updates
        // after 3 and after 2 episodes of 12 decisions each (3 days, one
        // every 6 hours).
        "--ppo-update-every",
        "3",
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
    assert!(
        ppo.updates.iter().all(|u| u.decisions.is_multiple_of(12)),
        "{:?}",
        ppo.updates
    );
    // It acted every 6 hours of every validation replay: 12 decisions in
    // each of 3 days × 2 seeds, and the grid's setting never changed.
    let epochs = ppo.validate.epochs.as_ref().unwrap();
    assert_eq!(epochs.decisions, 24, "{epochs:?}");
    assert_eq!(epochs.refused, 0);
    assert!(report.rows[1].validate.epochs.is_none());
    // Its last setting per validation episode: one in the trained zones,
    // one in the unseen zone.
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

/// A policy acting at every decision epoch really changes the settings
/// within an episode: two days are eight 6-hour epochs, the setting follows
/// the time of day seen in the state, and the outcome differs from the
/// replays that keep either setting throughout.
#[test]
fn a_policy_changes_the_settings_within_an_episode() {
    use carbon_kube_tuner::episode::{Data, EpisodeSet};
    use carbon_kube_tuner::state::{FEATURES, Feature};
    let shared = carbon_kube_sim::shared_data_dir();
    let zones = [carbon_kube_model::ZoneId::parse("DE").unwrap()];
    let data = Data::read(
        &shared.join("carbon_intensity/electricitymaps_hourly"),
        &shared.join("workload_traces/gaia/azure-100k.csv"),
        &zones,
    )
    .unwrap();
    let episode = data.episode(&zones, "2022-05-09", 2, 200).unwrap();
    let mut set = EpisodeSet::new(vec![episode], vec![1]).unwrap();
    let sin = FEATURES.iter().position(|f| *f == Feature::DaySin).unwrap();
    // Defer eagerly (minimum saving 0, no margin) in the UTC morning, hardly
    // ever (minimum saving 0.3, margin 0.02/h) in the afternoon.
    let eager = [0.5, 0.5, 0.0, 0.0];
    let reluctant = [0.5, 0.5, 1.0, 1.0];
    let act = |s: &[f64]| {
        if s[sin] > 0.0 {
            eager.to_vec()
        } else {
            reluctant.to_vec()
        }
    };
    let switching = set.evaluate_by(&act).unwrap();
    let epochs = switching.epochs.clone().unwrap();
    assert_eq!(epochs.decisions, 8, "{epochs:?}");
    assert!(epochs.changes >= 3, "{epochs:?}");
    assert_eq!(epochs.refused, 0);
    let saving = epochs
        .ranges
        .iter()
        .find(|r| r.knob == "deferral.minSavingFraction")
        .unwrap();
    assert_eq!((saving.min, saving.max), (0.0, 0.3));
    let always_eager = set.evaluate_by(&|_| eager.to_vec()).unwrap();
    let always_reluctant = set.evaluate_by(&|_| reluctant.to_vec()).unwrap();
    assert_eq!(always_eager.epochs.as_ref().unwrap().changes, 0);
    // A constant policy through the epochs is the plain replay of its setting.
    let plain = set
        .evaluate(&carbon_kube_tuner::Knobs::from_unit(&eager))
        .unwrap();
    assert_eq!(plain.saving.to_bits(), always_eager.saving.to_bits());
    assert_ne!(switching.saving.to_bits(), always_eager.saving.to_bits());
    assert_ne!(
        switching.saving.to_bits(),
        always_reluctant.saving.to_bits()
    );
}

/// --single-zone: one episode per zone, the cluster in that zone, and only
/// the deferral knobs move (placement keeps the current setting).
#[test]
fn single_zone_mode_tunes_the_deferral_knobs_per_zone() {
    let dir = std::env::temp_dir().join(format!("tuner-smoke-single-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("cm.json");
    let cli = Cli::try_parse_from([
        "tune",
        "--single-zone",
        "--train-zones",
        "DE,IN-WE",
        "--unseen-zones",
        "GB",
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
        "grid,ppo",
        "--budget",
        "4",
        "--ppo-update-every",
        "4",
        "--ppo-epochs",
        "1",
        "--output",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let report = run(&cli.args).unwrap();
    // Two training zones: two episodes, one zone each.
    assert_eq!(
        report.train_episodes.len(),
        2,
        "{:?}",
        report.train_episodes
    );
    assert!(report.train_episodes[0].ends_with(" DE"));
    assert!(report.train_episodes[1].ends_with(" IN-WE"));
    assert_eq!(report.validate_episodes.len(), 3);
    let current = Knobs::current();
    for row in &report.rows {
        assert_eq!(row.knobs.threshold_percentile, None, "{row:?}");
        assert_eq!(row.knobs.carbon_weight, current.carbon_weight);
    }
    // Grid over two knobs with budget 4: 2 levels each, corners only.
    let grid = &report.rows[1].knobs;
    assert!([0.0, 0.3].contains(&grid.min_saving_fraction), "{grid:?}");
    assert!(
        [0.0, 0.02].contains(&grid.error_margin_per_hour),
        "{grid:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
