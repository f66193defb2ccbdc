//! Runs the default scenario and prints the report (what `carbon-kube
//! simulate` does with no arguments), without building the whole binary.
//! `cargo run --release -p carbon-kube-sim --example default_scenario [plot.svg|plot.png]`

fn main() -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let args = carbon_kube_sim::Args {
        no_progress: false,
        plot: std::env::args().nth(1).map(std::path::PathBuf::from),
        ..Default::default()
    };
    let _ = carbon_kube_sim::run(args)?;
    eprintln!("took {:.2} s", t.elapsed().as_secs_f64());
    Ok(())
}
