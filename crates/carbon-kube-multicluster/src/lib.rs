//! Multi-cluster placement: tell other schedulers how green this cluster is.
//!
//! A cluster in one cloud region draws power from one grid, so the big
//! spatial savings are between clusters. Two commands:
//!
//! - `carbon-kube cluster-score publish` ([`publisher`]): scores this cluster
//!   (`carbon_kube_policy::cluster_score`: its nodes' grid zones weighted by
//!   allocatable CPU, −100..100, 0 neutral, hysteresis) and publishes it as
//!   an Open Cluster Management `AddOnPlacementScore` ([`ocm`]) in the
//!   cluster's namespace on the hub, for `Placement` prioritizers;
//! - `carbon-kube cluster-score karmada` ([`karmada`]): sets opted-in Karmada
//!   `PropagationPolicy` static weights from the members' published scores.
//!
//! Nothing here decides anything: the score, when to publish it and the
//! weights come from the policy crate. Missing or stale data gives 0
//! (neutral) and the neutral weight, never an error for the others.

pub mod args;
pub mod karmada;
pub mod metrics;
pub mod ocm;
pub mod publisher;

use std::sync::Arc;

use anyhow::Context as _;
use carbon_kube_k8s::{Readiness, health_router, serve_until, shutdown_signal};
use prometheus_client::registry::Registry;

pub use args::{ClusterScoreCommand, KarmadaArgs, PublishArgs};

/// A client for `kubeconfig` (a path), or the default configuration.
async fn client(kubeconfig: Option<&std::path::Path>, what: &str) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the {what} kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading the {what} kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .with_context(|| format!("reading the {what} Kubernetes client configuration"))?,
    };
    kube::Client::try_from(config).with_context(|| format!("connecting to the {what} cluster"))
}

/// Runs `carbon-kube cluster-score ...` until SIGTERM or Ctrl-C (or once).
pub async fn run(command: ClusterScoreCommand) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let readiness = Readiness::default();
    match command {
        ClusterScoreCommand::Publish(args) => {
            let settings = args.settings()?;
            let local = client(args.kubeconfig.as_deref(), "local").await?;
            let hub = match &args.hub_kubeconfig {
                Some(path) => client(Some(path), "hub").await?,
                None => local.clone(),
            };
            let metrics = metrics::PublisherMetrics::register(&mut registry);
            if args.once {
                let now = jiff::Timestamp::now().as_second();
                let out = publisher::publish_once(&local, &hub, &settings, &metrics, now).await?;
                println!("{}; {}", out.publication.explain(), out.score.explain());
                return Ok(());
            }
            tracing::info!(?settings, "starting the cluster score publisher");
            let health = health_router(Arc::new(registry), readiness.clone());
            let health_task =
                tokio::spawn(serve_until(args.health_listen, health, shutdown_signal()));
            let result =
                publisher::run(local, hub, settings, metrics, readiness, shutdown_signal()).await;
            health_task.abort();
            result?;
        }
        ClusterScoreCommand::Karmada(args) => {
            let settings = args.settings()?;
            let client = client(args.kubeconfig.as_deref(), "Karmada").await?;
            let metrics = metrics::KarmadaMetrics::register(&mut registry);
            if args.once {
                let now = jiff::Timestamp::now().as_second();
                for o in karmada::reconcile_once(&client, &settings, &metrics, now).await? {
                    println!("{} {}: {}", o.policy, o.result, o.message);
                }
                return Ok(());
            }
            tracing::info!(?settings, "starting the Karmada weight adapter");
            let health = health_router(Arc::new(registry), readiness.clone());
            let health_task =
                tokio::spawn(serve_until(args.health_listen, health, shutdown_signal()));
            karmada::run(client, settings, metrics, readiness, shutdown_signal()).await;
            health_task.abort();
        }
    }
    Ok(())
}
