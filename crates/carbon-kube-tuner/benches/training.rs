//! The full training bench (`make bench`, or
//! `cargo bench -p carbon-kube-tuner --bench training`): the default
//! `carbon-kube tune` run (four weeks of 2022 in DE, US-CAL-CISO, IN-WE;
//! validation on the same weeks of 2023 in those zones and in GB,
//! US-TEX-ERCO, AU-NSW, which tuning never sees; three validation seeds),
//! every optimiser on the same episodes and budget (PPO choosing a setting
//! every 6 hours of each replay). Prints the table that
//! BENCHMARKS.md records. `TUNER_BENCH_BUDGET` changes the budget (default
//! 40); `TUNER_BENCH_ARGS` adds `carbon-kube tune` flags (e.g. swapped zone
//! sets).

use carbon_kube_tuner::{TuneArgs, run};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TuneArgs,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; nothing else is expected.
    let budget = std::env::var("TUNER_BENCH_BUDGET").unwrap_or_else(|_| "40".into());
    let out = std::env::temp_dir().join("carbon-kube-tuner-bench.json");
    let extra = std::env::var("TUNER_BENCH_ARGS").unwrap_or_default();
    let mut argv = vec![
        "tune".to_owned(),
        "--budget".to_owned(),
        budget,
        "--output".to_owned(),
        out.to_str().unwrap_or("/dev/null").to_owned(),
    ];
    argv.extend(extra.split_whitespace().map(str::to_owned));
    let cli = Cli::try_parse_from(argv)?;
    let report = run(&cli.args)?;
    println!("{}", carbon_kube_tuner::cli::table(&report));
    Ok(())
}
