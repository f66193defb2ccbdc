//! Faults under the migrator on a real control plane (issue 18):
//!
//! - kube-apiserver killed (SIGKILL) and started again on the same port and
//!   etcd while the migrator evicts: its watches resume, every original pod
//!   is evicted exactly once, none is left behind, and the move records on
//!   the owner match the evictions;
//! - the snapshot ConfigMap truncated, replaced by 1 MiB of garbage, deleted
//!   and given a zone of wrong types: nothing moves on bad data, the last
//!   good snapshot stays in use, each fault is counted in
//!   `carbon_kube_migrator_snapshot_errors_total{error}`.
//!
//! - etcd slow (every chunk between kube-apiserver and etcd 100 ms later
//!   each way, the testkit's latency proxy) while the migrator evicts: the
//!   same, with every eviction counted exactly once.
//!
//! The apiserver restart and the slow etcd disturb every test of the binary: they take turns
//! (`FAULTS`). `FAULT_ROUNDS` (default 1; `make soak` sets more) repeats the
//! restart scenario.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use carbon_kube_migrator::controller::MigratorSettings;
use carbon_kube_migrator::state::OwnerState;
use carbon_kube_model::keys;
use carbon_kube_testkit::{
    NODE_POOL_LABEL, Progress, TestNamespace, fault_rounds, nodes_in_zone, shared_for_faults,
    wait_until,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

mod common;
use common::{Placement, RunningMigrator, put_snapshot};

static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(120);

fn snapshot_json(de: f64, fr: f64) -> String {
    common::snapshot_json(&[("DE", de), ("FR", fr)], 0)
}

impl RunningMigrator {
    fn result(&self, result: &str) -> f64 {
        self.value("carbon_kube_migrations_total", "result", result)
    }

    fn snapshot_errors(&self, error: &str) -> f64 {
        self.value("carbon_kube_migrator_snapshot_errors_total", "error", error)
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Self) -> bool) {
        wait_until(what.to_owned(), WAIT, || async {
            if check(self) {
                Progress::Done(())
            } else {
                Progress::Waiting(String::new())
            }
        })
        .await
        .unwrap();
    }
}

fn settings(ns: &TestNamespace) -> MigratorSettings {
    common::settings(ns, 1.0)
}

/// Three nodes per zone (8 CPUs each), labelled with their grid zone.
async fn nodes(ns: &TestNamespace) {
    for (region, zone, grid) in [("eu-central", "de-a", "DE"), ("eu-west", "fr-a", "FR")] {
        ns.create_nodes(
            &nodes_in_zone(region, zone)
                .named(grid.to_ascii_lowercase())
                .with_label(keys::LABEL_GRID_ZONE, grid)
                .with_cpu("8")
                .with_memory("32Gi")
                .count(3),
        )
        .await
        .unwrap();
    }
}

async fn deployment(ns: &TestNamespace, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name},
                             "annotations": {keys::MIGRATE: "true"}},
                "spec": {
                    "schedulerName": ns.scheduler_name(),
                    "nodeSelector": {NODE_POOL_LABEL: ns.node_pool()},
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]
                }
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

/// Node name → grid zone of the test's pool.
async fn node_zones(ns: &TestNamespace) -> BTreeMap<String, String> {
    Api::<Node>::all(ns.client())
        .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={}", ns.node_pool())))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            let zone = n.metadata.labels.as_ref().unwrap()[keys::LABEL_GRID_ZONE].clone();
            (n.metadata.name.unwrap(), zone)
        })
        .collect()
}

/// The app's `n` running, not terminating pods, once all are in `zone`.
async fn wait_all_in(ns: &TestNamespace, app: &str, n: usize, zone: &str) -> Vec<Pod> {
    let zones = node_zones(ns).await;
    wait_until(format!("all {n} pods of {app} in {zone}"), WAIT, || async {
        let Ok(list) = ns
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
        else {
            return Progress::Waiting("the API server does not answer".into());
        };
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .collect();
        let in_zone = running
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .and_then(|node| zones.get(node))
                    .is_some_and(|z| z == zone)
            })
            .count();
        if running.len() == n && in_zone == n {
            Progress::Done(running)
        } else {
            Progress::Waiting(format!("{} running, {in_zone} in {zone}", running.len()))
        }
    })
    .await
    .unwrap()
}

async fn owner_state(ns: &TestNamespace, app: &str) -> OwnerState {
    common::owner_state(ns, app).await.1
}

/// `Migrated` Events per pod name (series counted).
async fn migrated_events(ns: &TestNamespace) -> BTreeMap<String, usize> {
    let mut per_pod = BTreeMap::new();
    for e in ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        if e.reason.as_deref() != Some("Migrated") {
            continue;
        }
        let pod = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        let n = e
            .series
            .as_ref()
            .map_or(1, |s| usize::try_from(s.count).unwrap_or(usize::MAX));
        *per_pod.entry(pod).or_default() += n;
    }
    per_pod
}

/// Six pods in DE; the grid turns (DE dirty, FR clean); one eviction per
/// node per cycle, so the moves take several cycles; kube-apiserver is
/// killed after the first eviction and started again 3 s later. Every
/// original pod is evicted once and recorded once; all six end in FR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_restart_mid_migration_evicts_each_pod_once() {
    const N: usize = 6;
    let cp = shared_for_faults().await;
    let _turn = FAULTS.lock().await;
    for round in 0..fault_rounds() {
        let ns = cp
            .test_namespace("migrate-apiserver-restart")
            .await
            .unwrap();
        nodes(&ns).await;
        put_snapshot(&ns, snapshot_json(100.0, 300.0)).await;
        let placement = Placement::start(cp, &ns).await;
        deployment(&ns, "web", i32::try_from(N).unwrap()).await;
        let originals: BTreeSet<String> = wait_all_in(&ns, "web", N, "DE")
            .await
            .into_iter()
            .map(|p| p.metadata.uid.unwrap())
            .collect();

        let migrator = RunningMigrator::start(cp, settings(&ns)).await;
        put_snapshot(&ns, snapshot_json(450.0, 50.0)).await;
        migrator
            .wait_for("a first eviction", |m| m.result("migrated") >= 1.0)
            .await;
        cp.kill_apiserver().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        cp.start_apiserver().await.unwrap();

        wait_all_in(&ns, "web", N, "FR").await;
        let state = wait_until("every move recorded as evicted", WAIT, || async {
            let s = owner_state(&ns, "web").await;
            if s.moves.len() >= N && s.moves.iter().all(|m| m.evicted) {
                Progress::Done(s)
            } else {
                Progress::Waiting(format!("{:?}", s.moves))
            }
        })
        .await
        .unwrap();
        // One record per original pod: no pod evicted twice, none missed.
        let recorded: Vec<String> = state.moves.iter().map(|m| m.uid.clone()).collect();
        let unique: BTreeSet<String> = recorded.iter().cloned().collect();
        assert_eq!(recorded.len(), unique.len(), "round {round}: {state:?}");
        assert_eq!(unique, originals, "round {round}: {state:?}");
        let migrated = migrator.result("migrated");
        let failed = migrator.result("failed");
        assert!(
            migrated <= N as f64,
            "round {round}: {migrated} evictions of {N} pods"
        );
        assert!(
            migrated + failed >= N as f64,
            "round {round}: {migrated} evictions, {failed} failures for {N} pods"
        );
        for (pod, n) in migrated_events(&ns).await {
            assert!(n <= 1, "round {round}: {pod} has {n} Migrated Events");
        }
        eprintln!("round {round}: {migrated} evictions counted, {failed} failed attempts");
        migrator.stop().await;
        drop(placement);
    }
}

/// Four pods in DE; etcd made slow (100 ms each way on every chunk) before
/// the grid turns; the migrator moves them all to FR through a slow API:
/// one move record per original pod and exactly four evictions counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_etcd_mid_migration_evicts_each_pod_once() {
    const N: usize = 4;
    let cp = shared_for_faults().await;
    let _turn = FAULTS.lock().await;
    for round in 0..fault_rounds() {
        let ns = cp.test_namespace("migrate-slow-etcd").await.unwrap();
        nodes(&ns).await;
        put_snapshot(&ns, snapshot_json(100.0, 300.0)).await;
        let placement = Placement::start(cp, &ns).await;
        deployment(&ns, "web", i32::try_from(N).unwrap()).await;
        let originals: BTreeSet<String> = wait_all_in(&ns, "web", N, "DE")
            .await
            .into_iter()
            .map(|p| p.metadata.uid.unwrap())
            .collect();
        let migrator = RunningMigrator::start(cp, settings(&ns)).await;
        cp.set_etcd_latency(Duration::from_millis(100)).unwrap();
        put_snapshot(&ns, snapshot_json(450.0, 50.0)).await;
        let moved =
            tokio::time::timeout(Duration::from_secs(240), wait_all_in(&ns, "web", N, "FR")).await;
        cp.set_etcd_latency(Duration::ZERO).unwrap();
        moved.unwrap();
        let state = wait_until("every move recorded as evicted", WAIT, || async {
            let s = owner_state(&ns, "web").await;
            if s.moves.len() >= N && s.moves.iter().all(|m| m.evicted) {
                Progress::Done(s)
            } else {
                Progress::Waiting(format!("{:?}", s.moves))
            }
        })
        .await
        .unwrap();
        let recorded: Vec<String> = state.moves.iter().map(|m| m.uid.clone()).collect();
        let unique: BTreeSet<String> = recorded.iter().cloned().collect();
        assert_eq!(recorded.len(), unique.len(), "round {round}: {state:?}");
        assert_eq!(unique, originals, "round {round}: {state:?}");
        let migrated = migrator.result("migrated");
        assert_eq!(
            migrated, N as f64,
            "round {round}: {migrated} evictions of {N} pods"
        );
        for (pod, n) in migrated_events(&ns).await {
            assert!(n <= 1, "round {round}: {pod} has {n} Migrated Events");
        }
        eprintln!(
            "round {round}: {migrated} evictions, {} failed attempts under a slow etcd",
            migrator.result("failed")
        );
        migrator.stop().await;
        drop(placement);
    }
}

/// After a good snapshot (DE clean, FR dirty: nothing to gain), the
/// ConfigMap is truncated, replaced by 1 MiB of garbage and deleted: the
/// migrator keeps deciding on the last good snapshot (skips for "no greener
/// target", never for stale data) and moves nothing. Then the grid "turns"
/// in a snapshot whose DE record has wrong types: DE is dropped, FR kept,
/// and a pod in a zone without data never moves. Each fault is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_faults_move_nothing_and_keep_the_last_good_snapshot() {
    let cp = shared_for_faults().await;
    let _turn = FAULTS.lock().await;
    let ns = cp.test_namespace("migrate-snapshot-faults").await.unwrap();
    nodes(&ns).await;
    let good = snapshot_json(100.0, 300.0);
    put_snapshot(&ns, good.clone()).await;
    let _placement = Placement::start(cp, &ns).await;
    deployment(&ns, "web", 2).await;
    let before: BTreeSet<String> = wait_all_in(&ns, "web", 2, "DE")
        .await
        .into_iter()
        .map(|p| p.metadata.uid.unwrap())
        .collect();
    let migrator = RunningMigrator::start(cp, settings(&ns)).await;
    migrator.wait_cycles(3.0).await;
    let stale_at_start = migrator.result("skipped_stale_data");
    assert_eq!(stale_at_start, 0.0, "the good snapshot is read");

    put_snapshot(&ns, good[..good.len() / 2].to_owned()).await;
    migrator
        .wait_for("the truncated snapshot counted", |m| {
            m.snapshot_errors("unreadable") >= 1.0
        })
        .await;
    migrator.wait_cycles(3.0).await;
    let garbage: String = (0..(1u32 << 20) - 4096)
        .map(|i| char::from(b'!' + u8::try_from(i.wrapping_mul(2_654_435_761) >> 26).unwrap()))
        .collect();
    put_snapshot(&ns, garbage).await;
    migrator
        .wait_for("the garbage counted", |m| {
            m.snapshot_errors("unreadable") >= 2.0
        })
        .await;
    migrator.wait_cycles(3.0).await;
    ns.api::<ConfigMap>()
        .delete(keys::SNAPSHOT_CONFIGMAP, &DeleteParams::default())
        .await
        .unwrap();
    migrator.wait_cycles(3.0).await;
    // The last good snapshot stayed in use: no skip for stale data, nothing
    // moved.
    assert_eq!(migrator.result("skipped_stale_data"), 0.0);
    assert_eq!(migrator.result("migrated"), 0.0);
    assert!(migrator.result("skipped_no_target") + migrator.result("skipped_not_worth_it") >= 1.0);

    // DE (where the pods run) with wrong types, FR clean: DE is dropped, so
    // the pods' zone has no data and they stay.
    let mut doc: serde_json::Value = serde_json::from_str(&snapshot_json(450.0, 50.0)).unwrap();
    doc["DE"]["carbon_intensity"] = serde_json::Value::String("high".into());
    put_snapshot(&ns, doc.to_string()).await;
    migrator
        .wait_for("the bad zone counted", |m| {
            m.snapshot_errors("bad_zone") >= 1.0
        })
        .await;
    migrator
        .wait_for("a skip for missing data in DE", |m| {
            m.result("skipped_stale_data") >= 1.0
        })
        .await;
    migrator.wait_cycles(3.0).await;
    assert_eq!(migrator.result("migrated"), 0.0);
    let after: BTreeSet<String> = wait_all_in(&ns, "web", 2, "DE")
        .await
        .into_iter()
        .map(|p| p.metadata.uid.unwrap())
        .collect();
    assert_eq!(after, before, "no pod moved on bad data");
    assert!(owner_state(&ns, "web").await.moves.is_empty());
    migrator.stop().await;
}
