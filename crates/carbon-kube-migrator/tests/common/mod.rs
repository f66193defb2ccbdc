//! What the migrator's control-plane test binaries share: the in-process
//! extender with a kube-scheduler calling it, and the migrator run in-process
//! with its metrics registry.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use carbon_kube_k8s::Readiness;
use carbon_kube_migrator::caps::CapsConfig;
use carbon_kube_migrator::controller::{MigratorSettings, run_migrator};
use carbon_kube_migrator::metrics::MigratorMetrics;
use carbon_kube_migrator::state::OwnerState;
use carbon_kube_migrator::system_clock;
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{
    ControlPlane, Extender, Progress, SchedulerConfig, TestNamespace, wait_until,
};
use clap::Parser;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A record measured `age` seconds ago, flat at `g` for three days.
pub fn record(g: f64, age: i64) -> ZoneRecord {
    let t = now() - age;
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(g).unwrap(),
        t,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    r.forecast = Some(Forecast {
        start: t.div_euclid(3600) * 3600,
        step_seconds: 3600,
        values: vec![CarbonIntensity::new(g).unwrap(); 72],
    });
    r
}

/// The snapshot document with these zones (grid, g/kWh), measured `age`
/// seconds ago.
pub fn snapshot_json(zones: &[(&str, f64)], age: i64) -> String {
    let mut s = Snapshot::default();
    for &(z, g) in zones {
        s.zones.insert(ZoneId::parse(z).unwrap(), record(g, age));
    }
    s.to_json()
}

/// Creates or replaces the snapshot ConfigMap with `text`.
pub async fn put_snapshot(ns: &TestNamespace, text: String) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(keys::SNAPSHOT_CONFIGMAP.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(keys::SNAPSHOT_KEY.to_owned(), text)])),
        ..ConfigMap::default()
    };
    ns.api::<ConfigMap>()
        .patch(
            keys::SNAPSHOT_CONFIGMAP,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

/// The ReplicaSet of the `app=<app>` pods and the move record on it.
pub async fn owner_state(ns: &TestNamespace, app: &str) -> (ReplicaSet, OwnerState) {
    let rs = ns
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap();
    let state = OwnerState::parse(
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::ANNOTATION_MIGRATIONS))
            .map(String::as_str),
    )
    .unwrap();
    (rs, state)
}

/// A test migrator's settings: the test namespace's pods and snapshot,
/// cycles every second, small caps with at most `owner_fraction` of a
/// workload moving at once, and a 3 s dwell (pods a few seconds old may
/// move).
pub fn settings(ns: &TestNamespace, owner_fraction: f64) -> MigratorSettings {
    let mut s = MigratorSettings {
        snapshot_namespace: ns.name().to_owned(),
        pod_namespace: Some(ns.name().to_owned()),
        interval: Duration::from_secs(1),
        min_interval: Duration::from_millis(200),
        caps: CapsConfig {
            per_node: 1,
            per_namespace: 10,
            owner_fraction,
            per_cycle: 10,
            per_hour: 100,
        },
        ..MigratorSettings::default()
    };
    s.migration.min_dwell_seconds = 3;
    s
}

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
