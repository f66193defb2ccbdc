//! Bad input gives an error naming the file, the line and the field; one
//! run's inputs are checked before anything is simulated.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failure")]

use carbon_kube_sim::run::{Args, OracleMode, load};

fn err(args: &Args) -> String {
    match load(args) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_cluster_zone_without_a_trace_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        "zones:\n  - zone: FR\n    nodes: 2\n    cpus_per_node: 32\n    memory_gb_per_node: 128\n",
    )
    .unwrap();
    let args = Args {
        cluster: Some(cluster),
        oracle: OracleMode::None,
        ..Args::default()
    };
    let inputs = load(&args).unwrap();
    let world = carbon_kube_sim::engine::World::new(
        &inputs.traces,
        &inputs.cluster,
        &inputs.jobs,
        carbon_kube_sim::forecast::ForecastView::new(&inputs.traces, inputs.error, 1),
        inputs.tuning.tuning().unwrap(),
    );
    let e = world.err().unwrap().to_string();
    assert!(e.contains("cluster zone FR has no carbon trace"), "{e}");
    assert!(carbon_kube_sim::simulate(&args).is_err());
}

#[test]
fn a_bad_workload_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.csv");
    std::fs::write(&jobs, "arrival_time,length,cpus\n0.5,2,4\n1.0,-3,2\n").unwrap();
    let e = err(&Args {
        workload: Some(jobs.clone()),
        ..Args::default()
    });
    assert!(
        e.ends_with("jobs.csv:3: field `length`: -3 is not a positive duration"),
        "{e}"
    );
}

#[test]
fn an_empty_trace_folder_and_an_empty_trace_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(&Args {
        traces: Some(dir.path().to_owned()),
        ..Args::default()
    });
    assert!(e.contains("no .csv trace files"), "{e}");
    std::fs::write(
        dir.path().join("DE.csv"),
        "Datetime (UTC),Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n",
    )
    .unwrap();
    let e = err(&Args {
        traces: Some(dir.path().to_owned()),
        ..Args::default()
    });
    assert!(e.ends_with("DE.csv: the trace has no rows"), "{e}");
}

#[test]
fn a_period_outside_the_traces_and_unknown_policies_are_errors() {
    let e = err(&Args {
        start: Some("2030-01-01".into()),
        ..Args::default()
    });
    assert!(e.contains("lies outside the traces"), "{e}");
    let e = carbon_kube_sim::simulate(&Args {
        policies: vec!["magic".into()],
        oracle: OracleMode::None,
        ..Args::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("unknown policy \"magic\""), "{e}");
}
