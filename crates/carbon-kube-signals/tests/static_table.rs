//! The generated static table (`src/static_table.rs`) matches its source,
//! co2.js' republication of Electricity Maps' 2025 yearly figures.

#![allow(clippy::unwrap_used)] // Test code: a panic is a test failure.

mod common;

use carbon_kube_signals::static_table::{ANNUAL_AVERAGES, ANNUAL_AVERAGES_YEAR};
use common::shared_bytes;

#[test]
fn static_table_matches_source() {
    let json: serde_json::Value = serde_json::from_slice(&shared_bytes(&format!(
        "carbon_intensity/annual_averages/co2js_electricitymaps_yearly/yearly_{ANNUAL_AVERAGES_YEAR}.json"
    )))
    .unwrap();
    let source = json.as_object().unwrap();
    let mut expected: Vec<(String, u64, u64)> = source
        .iter()
        .map(|(zone, v)| {
            (
                zone.clone(),
                v["carbonIntensity"]["value"].as_u64().unwrap(),
                v["renewableEnergy"]["value"].as_u64().unwrap(),
            )
        })
        .collect();
    expected.sort();
    let table: Vec<(String, u64, u64)> = ANNUAL_AVERAGES
        .iter()
        .map(|(z, ci, re)| ((*z).to_owned(), u64::from(*ci), u64::from(*re)))
        .collect();
    if table != expected {
        let mut text = String::new();
        for (z, ci, re) in &expected {
            text.push_str(&format!("    (\"{z}\", {ci}, {re}),\n"));
        }
        panic!("src/static_table.rs is out of date; its entries should be:\n{text}");
    }
}
