//! A small training on real data: one week of 2022 in two zones, validated
//! on the same week of 2023 and on a zone training never sees, with both
//! optimisers on a tiny budget. Checks the run end to end, not the numbers.

use carbon_kube_tuner::{TuneArgs, run};
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
        "--output",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let report = run(&cli.args).unwrap();
    let names: Vec<&str> = report.rows.iter().map(|r| r.optimiser.as_str()).collect();
    assert_eq!(names, ["current", "grid", "cma-es"]);
    for row in &report.rows[1..] {
        assert!(row.evaluations >= 1 && row.evaluations <= 6, "{row:?}");
        assert_eq!(row.validate.reward_per_seed.len(), 2);
        assert!(row.validate_unseen.is_some());
    }
    let cm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // Shadow mode by default: never the ConfigMap the components read.
    assert_eq!(cm["metadata"]["name"], "carbon-kube-tuner");
    assert!(cm["data"]["validUntil"].is_string(), "{cm}");
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(cm["data"].clone()).unwrap();
    // What it writes reads back with the components' codec.
    let o = carbon_kube_policy::overrides::RuntimeOverrides::from_string_map(&data, "").unwrap();
    o.placement.validate().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
