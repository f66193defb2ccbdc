//! Times the parts of the default scenario.
use carbon_kube_sim::{engine::World, forecast::ForecastView, oracle, run};
fn main() -> anyhow::Result<()> {
    let args = carbon_kube_sim::Args::default();
    let inputs = run::load(&args)?;
    let world = World::new(
        &inputs.traces,
        &inputs.cluster,
        &inputs.jobs,
        ForecastView::new(&inputs.traces, inputs.error, 42),
        inputs.tuning.tuning()?,
    )?;
    for name in run::ALL_POLICIES {
        let p = run::policy(name, &inputs.tuning).unwrap();
        let t = std::time::Instant::now();
        let o = world.run(&p, &|_| {});
        eprintln!(
            "{name}: {:.3} s ({:.1} kg)",
            t.elapsed().as_secs_f64(),
            o.kg_co2
        );
    }
    let t = std::time::Instant::now();
    let pj = oracle::per_job_optimum(&world);
    eprintln!("per-job: {:.3} s ({pj:.1})", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let lp = oracle::windowed_lp(&world, &|_| {})?;
    eprintln!("lp: {:.3} s ({:.1})", t.elapsed().as_secs_f64(), lp.kg_co2);
    let t = std::time::Instant::now();
    let g = oracle::integer_gap(&world, 12)?;
    eprintln!("int: {:.3} s ({:?})", t.elapsed().as_secs_f64(), g);
    Ok(())
}
