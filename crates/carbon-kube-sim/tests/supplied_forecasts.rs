//! `--forecasts`: policies see supplied issued forecasts instead of the
//! error model, the report says so and measures their error, and bad rows
//! are named by file, line and field.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failure")]

use std::fmt::Write as _;
use std::path::Path;

use carbon_kube_sim::run::{Args, OracleMode, load};

const FLAT: f64 = 300.0;
const HOURS: usize = 96;

/// One zone (DE), `HOURS` hours from 2023-01-01 at a flat `FLAT` g/kWh,
/// and one 2-hour job arriving at hour 1 with 24 h of slack.
fn setup(dir: &Path) -> Args {
    let traces = dir.join("traces");
    std::fs::create_dir(&traces).unwrap();
    let mut csv = String::from(
        "Datetime (UTC),Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n",
    );
    for h in 0..HOURS {
        let (d, hh) = (1 + h / 24, h % 24);
        writeln!(csv, "2023-01-{d:02} {hh:02}:00:00,DE,{FLAT},{FLAT}").unwrap();
    }
    std::fs::write(traces.join("DE.csv"), csv).unwrap();
    let jobs = dir.join("jobs.csv");
    std::fs::write(&jobs, "arrival_time,length,cpus\n1,2,1\n").unwrap();
    Args {
        traces: Some(traces),
        workload: Some(jobs),
        policies: vec!["carbon-kube-temporal".into()],
        oracle: OracleMode::None,
        perfect_forecast: true,
        ..Args::default()
    }
}

fn row<'a>(
    report: &'a carbon_kube_sim::report::Report,
    name: &str,
) -> &'a carbon_kube_sim::engine::Outcome {
    &report
        .policies
        .iter()
        .find(|r| r.outcome.policy == name)
        .unwrap()
        .outcome
}

#[test]
fn a_supplied_forecast_that_lies_about_a_dip_moves_the_temporal_decision() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = setup(dir.path());

    // The synthetic (here: perfect) forecast of a flat trace gives no reason to wait.
    let (synthetic, _) = carbon_kube_sim::simulate(&args).unwrap();
    let s = row(&synthetic, "carbon-kube-temporal");
    assert!(synthetic.supplied_forecasts.is_none());
    assert_eq!(s.deferred_jobs, 0, "{s:?}");

    // A forecast issued at the start claims a deep dip 10-12 h later.
    let dip_from = 10;
    let mut f = String::from("issued_at,zone,target,carbon_intensity\n");
    for h in 0..48 {
        let v = if (dip_from..dip_from + 2).contains(&h) {
            FLAT / 6.0
        } else {
            FLAT
        };
        writeln!(
            f,
            "2023-01-01T00:00:00Z,DE,2023-01-{:02}T{:02}:00:00Z,{v}",
            1 + h / 24,
            h % 24
        )
        .unwrap();
    }
    let path = dir.path().join("forecasts.csv");
    std::fs::write(&path, f).unwrap();
    args.forecasts = Some(path.clone());
    let (supplied, _) = carbon_kube_sim::simulate(&args).unwrap();
    let o = row(&supplied, "carbon-kube-temporal");
    assert_eq!(o.deferred_jobs, 1, "{o:?}");
    // The job waits for the promised dip: start moves from its arrival toward hour 10.
    assert!(o.mean_delay_hours > s.mean_delay_hours, "{o:?} vs {s:?}");
    assert!(o.mean_delay_hours <= (dip_from - 1) as f64 + 1e-9, "{o:?}");

    // The report names the source and measures the lie against the trace.
    let sum = supplied.supplied_forecasts.as_ref().unwrap();
    assert_eq!(sum.rows, 48);
    let bucket = sum
        .mape_by_lead
        .iter()
        .find(|b| b.lead == "6-24 h")
        .unwrap();
    let expected = 100.0 * 2.0 * (FLAT - FLAT / 6.0) / FLAT / 18.0;
    assert_eq!(bucket.points, 18);
    assert!(
        (bucket.mape_pct.unwrap() - expected).abs() < 1e-9,
        "{bucket:?}"
    );
    let zero = sum.mape_by_lead.iter().find(|b| b.lead == "0-6 h").unwrap();
    assert_eq!(zero.mape_pct, Some(0.0));
    // After the issued forecast runs out (48 h) the error model fills in.
    assert!(
        sum.coverage_pct > 0.0 && sum.coverage_pct < 100.0,
        "{sum:?}"
    );
    let table = supplied.to_table();
    assert!(table.contains("supplied forecasts from"), "{table}");
    assert!(table.contains("fallback where not covered"), "{table}");
}

#[test]
fn bad_forecast_rows_are_named_by_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = setup(dir.path());
    let path = dir.path().join("forecasts.csv");
    let cases = [
        (
            "2023-01-01T00:00:00Z,DE,2023-01-01T01:00:00Z,-5",
            "carbon_intensity",
        ),
        ("2023-01-01T00:00:00Z,FR,2023-01-01T01:00:00Z,100", "zone"),
        ("yesterday,DE,2023-01-01T01:00:00Z,100", "issued_at"),
        ("2023-01-01T05:00:00Z,DE,2023-01-01T01:00:00Z,100", "target"),
    ];
    for (bad, field) in cases {
        std::fs::write(
            &path,
            format!(
                "issued_at,zone,target,carbon_intensity\n2023-01-01T00:00:00Z,DE,2023-01-01T00:00:00Z,100\n{bad}\n"
            ),
        )
        .unwrap();
        args.forecasts = Some(path.clone());
        let e = match load(&args) {
            Ok(_) => panic!("{bad} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&format!("forecasts.csv:3: field `{field}`:")),
            "{bad}: {e}"
        );
    }
    std::fs::write(&path, "issued_at,zone,value\n").unwrap();
    let e = load(&args).err().unwrap().to_string();
    assert!(e.contains("forecasts.csv: missing column `target`"), "{e}");
}

/// The real NESO 48-hour GB forecast issued 2023-03-15 12:01 UTC
/// (`forecasts_with_actuals/uk_carbon_intensity`, half-hourly), turned into
/// a `--forecasts` file in a temporary folder, against the real Electricity
/// Maps traces: the report measures its error, and the five other zones fall
/// back to the error model.
#[test]
fn the_real_gb_forecast_is_measured_against_the_real_trace() {
    let shared = carbon_kube_sim::shared_data_dir();
    let neso = shared.join(
        "forecasts_with_actuals/uk_carbon_intensity/nmpowell_national_fw48h_2023-03-15T1201Z.csv",
    );
    let mut rdr = csv::Reader::from_path(&neso).unwrap();
    let issued = "2023-03-15T12:00:00Z";
    let mut f = String::from("issued_at,zone,target,carbon_intensity\n");
    let mut hourly: std::collections::BTreeMap<i64, (f64, u32)> = Default::default();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let t = rec[0].parse::<jiff::Timestamp>().unwrap_or_else(|_| {
            format!("{}:00Z", rec[0].trim_end_matches('Z'))
                .parse()
                .unwrap()
        });
        let v: f64 = rec[1].parse().unwrap();
        writeln!(f, "{issued},GB,{t},{v}").unwrap();
        let e = hourly
            .entry(t.as_second().div_euclid(3600) * 3600)
            .or_default();
        e.0 += v;
        e.1 += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gb_forecasts.csv");
    std::fs::write(&path, f).unwrap();
    let jobs = dir.path().join("jobs.csv");
    std::fs::write(&jobs, "arrival_time,length,cpus\n1,2,1\n3,4,2\n").unwrap();
    let args = Args {
        traces: Some(shared.join("carbon_intensity/electricitymaps_hourly")),
        workload: Some(jobs),
        start: Some("2023-03-14".into()),
        end: Some("2023-03-19".into()),
        forecasts: Some(path),
        oracle: OracleMode::None,
        ..Args::default()
    };
    let (report, inputs) = carbon_kube_sim::simulate(&args).unwrap();
    let sum = report.supplied_forecasts.as_ref().unwrap();
    assert_eq!(
        sum.zones_without_forecasts.len(),
        inputs.traces.zones.len() - 1
    );
    assert!(!sum.zones_without_forecasts.contains(&"GB".to_owned()));
    // Independent check of the 0-6 h bucket from the raw files.
    let gb = inputs
        .traces
        .zones
        .iter()
        .find(|z| z.zone.to_string() == "GB")
        .unwrap();
    let issue = issued.parse::<jiff::Timestamp>().unwrap().as_second();
    let errs: Vec<f64> = hourly
        .iter()
        .filter(|(t, _)| (0..6 * 3600).contains(&(**t - issue)))
        .map(|(t, (s, c))| {
            let a = gb.values[usize::try_from((t - inputs.traces.start) / 3600).unwrap()];
            (s / f64::from(*c) - a).abs() / a
        })
        .collect();
    let b = &sum.mape_by_lead[0];
    assert_eq!(b.lead, "0-6 h");
    assert_eq!(b.points, errs.len());
    let mape = 100.0 * errs.iter().sum::<f64>() / errs.len() as f64;
    assert!((b.mape_pct.unwrap() - mape).abs() < 1e-9, "{b:?} vs {mape}");
    assert!(sum.mape_by_lead[2].points > 0, "{sum:?}");
    let table = report.to_table();
    assert!(table.contains("zones with no supplied forecast"), "{table}");
}
