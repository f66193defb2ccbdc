//! The fitted carbon model against the real Electricity Maps series in
//! `../shared/data`: the committed model file is what a fresh fit produces,
//! and traces generated from it reproduce each real series' mean, diurnal
//! shape and hour-to-hour variability.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failure")]

use carbon_kube_sim::carbon_model::{self, ModelFile, correlation, stats};
use carbon_kube_sim::shared_data_dir;
use carbon_kube_sim::trace::{Column, read_em_csv};

fn em_files() -> Vec<std::path::PathBuf> {
    let dir = shared_data_dir().join("carbon_intensity/electricitymaps_hourly");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 12, "expected six zones x two years");
    files
}

fn fresh_fit() -> ModelFile {
    let mut models = Vec::new();
    for column in [Column::Direct, Column::Lca] {
        for f in em_files() {
            let series = read_em_csv(&f, column).unwrap();
            models.push(carbon_model::fit(&series, column).unwrap());
        }
    }
    ModelFile {
        attribution: "Fitted from Electricity Maps hourly data-portal exports (2022, 2023), \
                      Open Database License (ODbL); figures derived by carbon-kube-sim's \
                      carbon_model::fit (tests/carbon_model.rs)."
            .into(),
        models,
    }
}

/// Regenerate with `CARBON_KUBE_REGENERATE=1 cargo test -p carbon-kube-sim --test carbon_model`.
#[test]
fn committed_models_match_a_fresh_fit() {
    let fresh = fresh_fit();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/carbon_models.json");
    if std::env::var_os("CARBON_KUBE_REGENERATE").is_some() {
        let mut json = serde_json::to_string(&fresh).unwrap();
        json.push('\n');
        std::fs::write(path, json).unwrap();
    }
    let committed = ModelFile::committed().unwrap();
    assert_eq!(
        committed, fresh,
        "data/carbon_models.json is stale: regenerate it (see this test's doc)"
    );
}

#[test]
fn generated_traces_reproduce_the_real_series() {
    let models = ModelFile::committed().unwrap();
    for column in [Column::Direct, Column::Lca] {
        for f in em_files() {
            let real = read_em_csv(&f, column).unwrap();
            let year = carbon_model::year_of(real.start);
            let m = models.get(&real.zone, year, column).unwrap();
            let real_stats = stats(real.start, &real.values);
            for seed in [1, 2, 3] {
                let gen_values = m.generate(real.start, real.values.len(), seed);
                let g = stats(real.start, &gen_values);
                let name = format!("{} {year} {column:?} seed {seed}", real.zone);
                let mean_err = (g.mean - real_stats.mean).abs() / real_stats.mean;
                assert!(
                    mean_err < 0.05,
                    "{name}: mean {} vs real {}",
                    g.mean,
                    real_stats.mean
                );
                let diurnal = correlation(&g.diurnal, &real_stats.diurnal);
                assert!(diurnal >= 0.9, "{name}: diurnal correlation {diurnal}");
                let step = g.step_sd / real_stats.step_sd;
                assert!(
                    (0.8..=1.25).contains(&step),
                    "{name}: hour-to-hour sd {} vs real {}",
                    g.step_sd,
                    real_stats.step_sd
                );
                let spread = g.sd / real_stats.sd;
                assert!(
                    (0.8..=1.25).contains(&spread),
                    "{name}: sd {} vs real {}",
                    g.sd,
                    real_stats.sd
                );
            }
        }
    }
}
