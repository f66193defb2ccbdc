//! The `carbon-kube` binary: parses the command line and runs one component.
//! Wiring only; every component lives in its own crate.

use std::process::ExitCode;

use carbon_kube_k8s::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};

/// Carbon-aware scheduling for Kubernetes: place, defer and move pods by the
/// carbon intensity of the electricity grid each node runs on.
#[derive(Parser, Debug)]
#[command(name = "carbon-kube", version, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "CARBON_KUBE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Debug logging for Carbon-Kube (RUST_LOG, when set, takes precedence).
    #[arg(long, global = true, env = "CARBON_KUBE_DEBUG")]
    debug: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Poller(carbon_kube_poller::Args),
    /// Serve the carbon-aware kube-scheduler extender (POST /filter, /prioritize).
    Extender(carbon_kube_extender::Args),
    /// Replay real (or modelled) carbon traces and a workload through
    /// Carbon-Kube's policies, a baseline, peer strategies and an oracle.
    Simulate(carbon_kube_sim::Args),
    /// Tune Carbon-Kube's knobs on the simulator over real traces (train on
    /// one period, validate on a later one and on unseen zones) and write the
    /// carbon-kube-config override only when it beats the current setting.
    Tune(carbon_kube_tuner::TuneArgs),
    /// Temporal shifting: the admission webhook that gates deferrable pods
    /// and the controller that releases them in green windows.
    #[command(subcommand)]
    Gates(carbon_kube_gates::GatesCommand),
    /// Migration: move opted-in running pods to a greener zone through the
    /// Eviction API, only when the move pays, within caps, never looping.
    Migrator(carbon_kube_migrator::Args),
    /// Carbon accounting: per pod, namespace and workload, energy (Kepler or
    /// the Cloud Carbon Footprint model) times the grid intensity of the
    /// node's zone, idle and embodied shares; Prometheus counters and the
    /// carbon-kube-accounting ConfigMap (the usage document budgets read).
    Accounting(carbon_kube_accounting::Args),
    /// Emissions per namespace over a period (table, JSON or CSV), with the
    /// savings against carbon-agnostic scheduling, from the
    /// carbon-kube-accounting ConfigMap (cluster or file).
    Report(carbon_kube_accounting::ReportArgs),
    /// Multi-cluster placement: publish this cluster's carbon score as an
    /// Open Cluster Management AddOnPlacementScore (−100..100, 0 neutral),
    /// or set opted-in Karmada PropagationPolicies' weights from the scores.
    #[command(subcommand)]
    ClusterScore(carbon_kube_multicluster::ClusterScoreCommand),
}

/// `carbon-kube tune`: the run, then (with --apply or --kubeconfig) its
/// ConfigMaps written to the API server.
async fn tune(args: &carbon_kube_tuner::TuneArgs) -> anyhow::Result<()> {
    // The client first: a missing kubeconfig fails before the training.
    let client = match args.deploy.cluster() {
        Some(kubeconfig) => Some(carbon_kube_k8s::tuner::client(kubeconfig).await?),
        None => None,
    };
    let report = carbon_kube_tuner::run(args)?;
    if let Some(client) = client {
        for cm in &report.configmaps {
            carbon_kube_k8s::tuner::write_configmap_json(client.clone(), cm).await?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, cli.debug);
    telemetry::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Poller(args) => carbon_kube_poller::run(args)
                .await
                .map(|c| ExitCode::from(c.exit_code())),
            Command::Extender(args) => carbon_kube_extender::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Simulate(args) => carbon_kube_sim::run(args).map(|_| ExitCode::SUCCESS),
            Command::Tune(args) => tune(&args).await.map(|()| ExitCode::SUCCESS),
            Command::Gates(cmd) => carbon_kube_gates::run(cmd)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Migrator(args) => carbon_kube_migrator::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Accounting(args) => carbon_kube_accounting::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Report(args) => carbon_kube_accounting::report::run(&args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::ClusterScore(cmd) => carbon_kube_multicluster::run(cmd)
                .await
                .map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "carbon-kube failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
