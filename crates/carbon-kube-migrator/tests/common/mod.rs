//! What the migrator's control-plane test binaries share: the in-process
//! extender with a kube-scheduler calling it, and the migrator run in-process
//! with its metrics registry.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use carbon_kube_k8s::Readiness;
use carbon_kube_migrator::controller::{MigratorSettings, run_migrator};
use carbon_kube_migrator::metrics::MigratorMetrics;
use carbon_kube_migrator::system_clock;
use carbon_kube_testkit::{
    ControlPlane, Extender, Progress, SchedulerConfig, TestNamespace, wait_until,
};
use clap::Parser;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

/// How long the helpers here wait for migrator cycles.
pub const CYCLE_WAIT: Duration = Duration::from_secs(120);

#[derive(Parser)]
struct ExtenderCli {
    #[command(flatten)]
    args: carbon_kube_extender::Args,
}

/// The extender (in-process) and a kube-scheduler that calls it, confined
/// to the test's node pool: replacements are placed by carbon, as in a
/// real installation.
pub struct Placement {
    _scheduler: carbon_kube_testkit::Scheduler,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Placement {
    pub async fn start(cp: &ControlPlane, ns: &TestNamespace) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let args = ExtenderCli::parse_from(["extender", "--namespace", ns.name()]).args;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(carbon_kube_extender::serve(
            args,
            listener,
            Some(cp.client().await.unwrap()),
            async {
                let _ = rx.await;
            },
        ));
        let config = SchedulerConfig::new(ns.scheduler_name())
            .restricted_to_node_pool(ns.node_pool())
            .with_extender(
                Extender::at(format!("http://{addr}"))
                    .filter_verb("filter")
                    .prioritize_verb("prioritize")
                    .weight(5)
                    .ignorable(true),
            );
        let scheduler = cp.start_scheduler(config).await.unwrap();
        Self {
            _scheduler: scheduler,
            stop: Some(tx),
            task,
        }
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// The migrator, run in-process on the test control plane.
pub struct RunningMigrator {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    registry: Arc<Registry>,
}

impl RunningMigrator {
    pub async fn start(cp: &ControlPlane, settings: MigratorSettings) -> Self {
        let mut registry = Registry::default();
        let metrics = MigratorMetrics::register(&mut registry);
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_migrator(
            cp.client().await.unwrap(),
            cp.client_without_retries().await.unwrap(),
            settings,
            metrics,
            Readiness::default(),
            system_clock(),
            async {
                let _ = rx.await;
            },
        ));
        Self {
            stop: Some(stop),
            task,
            registry: Arc::new(registry),
        }
    }

    /// The registry in the text format.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// The value of the series `name{label="value"}`, 0 if absent.
    pub fn value(&self, name: &str, label: &str, value: &str) -> f64 {
        let prefix = format!("{name}{{{label}=\"{value}\"}} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse().unwrap()))
            .unwrap_or(0.0)
    }

    /// The value of `name{result="<result>"}`, 0 if absent.
    pub fn count(&self, name: &str, result: &str) -> f64 {
        self.value(name, "result", result)
    }

    pub fn cycles(&self) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix("carbon_kube_migrator_cycles_total ")
                    .map(|v| v.parse().unwrap())
            })
            .unwrap_or(0.0)
    }

    pub async fn wait_cycles(&self, more: f64) {
        let target = self.cycles() + more;
        wait_until(
            format!("{more} more migrator cycles"),
            CYCLE_WAIT,
            || async {
                let c = self.cycles();
                if c >= target {
                    Progress::Done(())
                } else {
                    Progress::Waiting(format!("{c} cycles"))
                }
            },
        )
        .await
        .unwrap();
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}
