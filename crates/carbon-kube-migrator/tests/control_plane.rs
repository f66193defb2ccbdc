//! The migrator against a real control plane (kube-apiserver,
//! kube-controller-manager with the ReplicaSet and disruption controllers,
//! kwok, and kube-scheduler with Carbon-Kube's extender) from
//! `carbon-kube-testkit`. Each test works in its own namespace and node
//! pool; the migrator watches only that namespace.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::time::Duration;

use carbon_kube_migrator::controller::MigratorSettings;
use carbon_kube_migrator::state::{Landing, MoveRecord, OwnerState, ZoneSelector};
use carbon_kube_model::{ZoneId, keys};
use carbon_kube_testkit::{
    NODE_POOL_LABEL, Progress, TestNamespace, ensure_crypto_provider, nodes_in_zone, shared,
    wait_until,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

mod common;
use common::{Placement, RunningMigrator, now, owner_state, put_snapshot, snapshot_json};

const WAIT: Duration = Duration::from_secs(90);

/// Creates or replaces the snapshot ConfigMap.
async fn publish(ns: &TestNamespace, de: f64, fr: f64, age: i64) {
    put_snapshot(ns, snapshot_json(&[("DE", de), ("FR", fr)], age)).await;
}

fn settings(ns: &TestNamespace) -> MigratorSettings {
    // The test's pods are large enough (2 CPUs, 4 GiB) for a move from 450
    // to 50 g/kWh to pay; half of a workload may move at once.
    common::settings(ns, 0.5)
}

/// Two nodes per zone (8 CPUs each), labelled with their grid zone.
async fn nodes(ns: &TestNamespace) {
    for (region, zone, grid) in [("eu-central", "de-a", "DE"), ("eu-west", "fr-a", "FR")] {
        ns.create_nodes(
            &nodes_in_zone(region, zone)
                .named(grid.to_ascii_lowercase())
                .with_label(keys::LABEL_GRID_ZONE, grid)
                .with_cpu("8")
                .with_memory("32Gi")
                .count(2),
        )
        .await
        .unwrap();
    }
}

async fn deployment(ns: &TestNamespace, name: &str, replicas: i32, cpu: &str, memory: &str) {
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
                                    "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
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

/// The app's live (not terminating) pods with their node's grid zone, once
/// `n` of them run.
async fn running_pods(ns: &TestNamespace, app: &str, n: usize) -> Vec<(Pod, String)> {
    let nodes: BTreeMap<String, String> = Api::<Node>::all(ns.client())
        .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={}", ns.node_pool())))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            let zone = n.metadata.labels.as_ref().unwrap()[keys::LABEL_GRID_ZONE].clone();
            (n.metadata.name.unwrap(), zone)
        })
        .collect();
    wait_until(format!("{n} running pods of {app}"), WAIT, || async {
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap()
            .items;
        let running: Vec<(Pod, String)> = pods
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .filter_map(|p| {
                let zone = nodes.get(p.spec.as_ref()?.node_name.as_deref()?)?.clone();
                Some((p, zone))
            })
            .collect();
        if running.len() == n {
            Progress::Done(running)
        } else {
            Progress::Waiting(format!("{} running", running.len()))
        }
    })
    .await
    .unwrap()
}

async fn wait_all_in(ns: &TestNamespace, app: &str, n: usize, zone: &str) -> Vec<Pod> {
    wait_until(format!("all {n} pods of {app} in {zone}"), WAIT, || async {
        let pods = running_pods(ns, app, n).await;
        let zones: Vec<&str> = pods.iter().map(|(_, z)| z.as_str()).collect();
        if zones.iter().all(|z| *z == zone) {
            Progress::Done(pods.into_iter().map(|(p, _)| p).collect())
        } else {
            Progress::Waiting(format!("{zones:?}"))
        }
    })
    .await
    .unwrap()
}

async fn events(ns: &TestNamespace, reason: &str) -> Vec<Event> {
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

async fn wait_event(ns: &TestNamespace, reason: &str, pod_prefix: &str, needle: &str) -> Event {
    wait_until(
        format!("a {reason} Event on {pod_prefix}* saying {needle:?}"),
        WAIT,
        || async {
            let all = events(ns, reason).await;
            match all.iter().find(|e| {
                e.regarding
                    .as_ref()
                    .and_then(|r| r.name.as_deref())
                    .is_some_and(|n| n.starts_with(pod_prefix))
                    && e.note.as_deref().is_some_and(|n| n.contains(needle))
            }) {
                Some(e) => Progress::Done(e.clone()),
                None => Progress::Waiting(format!(
                    "{:?}",
                    all.iter().map(|e| e.note.clone()).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await
    .unwrap()
}

/// Deployment pods in a dirty zone move to the greener zone through
/// eviction and ReplicaSet recreation, within the caps; a PDB blocks what
/// it must; a pod whose move does not pay stays.
#[tokio::test]
async fn pods_move_to_the_greener_zone_within_caps_pdbs_block_and_unprofitable_moves_stay() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("migrate-move").await.unwrap();
    nodes(&ns).await;
    publish(&ns, 100.0, 300.0, 0).await; // DE is clean: everything lands there
    let _placement = Placement::start(cp, &ns).await;
    deployment(&ns, "web", 4, "2", "4Gi").await;
    deployment(&ns, "api", 2, "2", "4Gi").await;
    deployment(&ns, "tiny", 1, "10m", "16Mi").await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "api"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "api"}}}
    }))
    .unwrap();
    ns.api::<PodDisruptionBudget>()
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let web_before = wait_all_in(&ns, "web", 4, "DE").await;
    let api_before = wait_all_in(&ns, "api", 2, "DE").await;
    let tiny_before = wait_all_in(&ns, "tiny", 1, "DE").await;

    let migrator = RunningMigrator::start(cp, settings(&ns)).await;
    // The grid turns: DE dirty, FR clean.
    publish(&ns, 450.0, 50.0, 0).await;

    let web_after = wait_all_in(&ns, "web", 4, "FR").await;
    // The migrator marks a move evicted just after the Eviction is accepted,
    // so the record may trail the pods by a moment: wait for it.
    let state = wait_until("every move recorded as evicted", WAIT, || async {
        let (_, s) = owner_state(&ns, "web").await;
        if s.moves.len() == 4 && s.moves.iter().all(|m| m.evicted && m.to.as_str() == "FR") {
            Progress::Done(s)
        } else {
            Progress::Waiting(format!("{:?}", s.moves))
        }
    })
    .await
    .unwrap();
    // Every original pod was evicted exactly once, and every replacement
    // landed where planned.
    let mut evicted: Vec<&str> = state.moves.iter().map(|m| m.uid.as_str()).collect();
    evicted.sort_unstable();
    let mut originals: Vec<&str> = web_before
        .iter()
        .map(|p| p.metadata.uid.as_deref().unwrap())
        .collect();
    originals.sort_unstable();
    assert_eq!(evicted, originals, "{state:?}");
    wait_until("every landing measured", WAIT, || async {
        let (_, s) = owner_state(&ns, "web").await;
        if s.moves.iter().all(|m| m.landed == Some(Landing::Planned)) {
            Progress::Done(())
        } else {
            Progress::Waiting(format!("{:?}", s.moves))
        }
    })
    .await
    .unwrap();
    assert!(
        web_after
            .iter()
            .all(|p| !originals.contains(&p.metadata.uid.as_deref().unwrap()))
    );
    // The caps held: one eviction per node per cycle and at most half of
    // the replicas moving at once, so some moves waited.
    assert!(migrator.count("carbon_kube_migrations_total", "capped") >= 1.0);
    assert!(migrator.count("carbon_kube_migrations_total", "migrated") >= 4.0);
    assert!(migrator.count("carbon_kube_migration_landings_total", "planned") >= 4.0);
    let e = wait_event(&ns, "Migrated", "web-", "move DE → FR").await;
    assert!(e.note.unwrap().contains("g/kWh"));

    // The PDB (minAvailable 2 of 2) blocks every eviction of api.
    wait_event(&ns, "MigrationSkipped", "api-", "PodDisruptionBudget").await;
    assert!(migrator.count("carbon_kube_migrations_total", "blocked_pdb") >= 1.0);
    let api_now = running_pods(&ns, "api", 2).await;
    assert!(
        api_now
            .iter()
            .all(|(p, z)| z == "DE" && api_before.iter().any(|b| b.metadata.uid == p.metadata.uid))
    );
    // A move is recorded before its Eviction is sent (restart safety); a
    // blocked one stays unevicted and is retried in a later cycle.
    let (_, api_state) = owner_state(&ns, "api").await;
    assert!(api_state.moves.iter().all(|m| !m.evicted), "{api_state:?}");

    // A 10m-CPU pod's move does not pay for its restart and disruption.
    wait_event(&ns, "MigrationSkipped", "tiny-", "does not pay").await;
    assert!(migrator.count("carbon_kube_migrations_total", "skipped_not_worth_it") >= 1.0);
    let tiny_now = running_pods(&ns, "tiny", 1).await;
    assert_eq!(tiny_now[0].0.metadata.uid, tiny_before[0].metadata.uid);
    migrator.stop().await;
}

/// With stale data nothing moves; a migrator that died between recording a
/// move and evicting is finished by the next one for the same pod only; a
/// restart repeats nothing, and moved pods do not move again within the
/// dwell time.
#[tokio::test]
async fn stale_data_moves_nothing_and_restarts_lose_and_repeat_nothing() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("migrate-restart").await.unwrap();
    nodes(&ns).await;
    publish(&ns, 100.0, 300.0, 0).await;
    let _placement = Placement::start(cp, &ns).await;
    deployment(&ns, "web", 2, "2", "4Gi").await;
    let before = wait_all_in(&ns, "web", 2, "DE").await;

    // DE dirty, but the data is two hours old: nothing moves.
    publish(&ns, 450.0, 50.0, 7200).await;
    let migrator = RunningMigrator::start(cp, settings(&ns)).await;
    migrator.wait_cycles(5.0).await;
    assert!(migrator.count("carbon_kube_migrations_total", "skipped_stale_data") >= 1.0);
    assert_eq!(
        migrator.count("carbon_kube_migrations_total", "migrated"),
        0.0
    );
    migrator.stop().await;
    let still = running_pods(&ns, "web", 2).await;
    assert!(
        still
            .iter()
            .all(|(p, z)| z == "DE" && before.iter().any(|b| b.metadata.uid == p.metadata.uid))
    );

    // A previous migrator recorded a move of the first pod and died before
    // evicting it.
    let victim = &before[0];
    let (rs, _) = owner_state(&ns, "web").await;
    let pending = OwnerState {
        moves: vec![MoveRecord {
            at: now(),
            pod: victim.metadata.name.clone().unwrap(),
            uid: victim.metadata.uid.clone().unwrap(),
            from: ZoneId::parse("DE").unwrap(),
            to: ZoneId::parse("FR").unwrap(),
            nodes: Vec::new(),
            zone_selector: ZoneSelector::default(),
            reserve_until: None,
            net_grams: 10.0,
            evicted: false,
            landed: None,
        }],
    };
    ns.api::<ReplicaSet>()
        .patch(
            rs.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                keys::ANNOTATION_MIGRATIONS: pending.to_json()}}})),
        )
        .await
        .unwrap();
    publish(&ns, 450.0, 50.0, 0).await;
    let migrator = RunningMigrator::start(cp, settings(&ns)).await;
    wait_all_in(&ns, "web", 2, "FR").await;
    // The eviction records trail the pods by a moment: wait for them.
    let state = wait_until("both moves recorded as evicted", WAIT, || async {
        let (_, s) = owner_state(&ns, "web").await;
        if s.moves.len() >= 2 && s.moves.iter().all(|m| m.evicted) {
            Progress::Done(s)
        } else {
            Progress::Waiting(format!("{:?}", s.moves))
        }
    })
    .await
    .unwrap();
    // Two moves, one per original pod: the pending one finished, not repeated.
    assert_eq!(state.moves.len(), 2, "{state:?}");
    assert_eq!(state.moves[0].uid, victim.metadata.uid.clone().unwrap());
    assert_ne!(state.moves[0].uid, state.moves[1].uid);
    assert!(state.moves.iter().all(|m| m.evicted));
    migrator.stop().await;

    // Restart with the grid turned back (DE clean, FR dirty), a long dwell
    // and no owner memory: the replacements are too young to move.
    let moved = wait_all_in(&ns, "web", 2, "FR").await;
    publish(&ns, 50.0, 450.0, 0).await;
    let mut s = settings(&ns);
    s.migration.min_dwell_seconds = 3600;
    s.migration.owner_memory_seconds = 0;
    let migrator = RunningMigrator::start(cp, s).await;
    migrator.wait_cycles(5.0).await;
    assert!(migrator.count("carbon_kube_migrations_total", "skipped_dwell") >= 1.0);
    assert_eq!(
        migrator.count("carbon_kube_migrations_total", "migrated"),
        0.0
    );
    let after = running_pods(&ns, "web", 2).await;
    assert!(
        after
            .iter()
            .all(|(p, z)| z == "FR" && moved.iter().any(|m| m.metadata.uid == p.metadata.uid))
    );
    let (_, state) = owner_state(&ns, "web").await;
    assert_eq!(state.moves.len(), 2, "{state:?}");
    migrator.stop().await;
}

/// Creates or replaces `carbon-kube-config` with `data`.
async fn overrides(ns: &TestNamespace, data: &[(&str, &str)]) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(keys::CONFIG_CONFIGMAP.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    };
    ns.api::<ConfigMap>()
        .patch(
            keys::CONFIG_CONFIGMAP,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

impl RunningMigrator {
    /// `carbon_kube_migrator_setting{setting="<setting>",source="<source>"}`.
    fn setting(&self, setting: &str, source: &str) -> Option<f64> {
        let prefix =
            format!("carbon_kube_migrator_setting{{setting=\"{setting}\",source=\"{source}\"}} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse().unwrap()))
    }

    async fn wait_setting(&self, setting: &str, source: &str, value: f64) {
        wait_until(
            format!("{setting} = {value} from {source}"),
            WAIT,
            || async {
                match self.setting(setting, source) {
                    Some(v) if v == value => Progress::Done(()),
                    other => Progress::Waiting(format!("{other:?}")),
                }
            },
        )
        .await
        .unwrap();
    }
}

/// The migration keys of `carbon-kube-config` (what the tuner publishes)
/// change the migrator's decision from the next cycle: a margin no move can
/// pay keeps the pods where they are; a rejected override keeps the previous
/// settings; the margin set back to a payable one moves them.
#[tokio::test]
async fn the_carbon_kube_config_migration_keys_decide_from_the_next_cycle() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("migrate-overrides").await.unwrap();
    nodes(&ns).await;
    publish(&ns, 100.0, 300.0, 0).await;
    let _placement = Placement::start(cp, &ns).await;
    deployment(&ns, "web", 2, "2", "4Gi").await;
    let before = wait_all_in(&ns, "web", 2, "DE").await;

    // Saving ≥ (1 + 10,000) × cost: no move pays.
    overrides(
        &ns,
        &[("migration.margin", "10000"), ("carbonWeight", "70")],
    )
    .await;
    let migrator = RunningMigrator::start(cp, settings(&ns)).await;
    migrator
        .wait_setting("margin", "carbon-kube-config", 10_000.0)
        .await;
    // The flags' dwell (3 s in these tests) is not overridden.
    assert_eq!(
        migrator.setting("minDwellSeconds", "carbon-kube-config"),
        Some(3.0)
    );
    publish(&ns, 450.0, 50.0, 0).await;
    wait_event(&ns, "MigrationSkipped", "web-", "does not pay").await;
    migrator.wait_cycles(3.0).await;
    assert!(migrator.count("carbon_kube_migrations_total", "skipped_not_worth_it") >= 2.0);
    assert_eq!(
        migrator.count("carbon_kube_migrations_total", "migrated"),
        0.0
    );

    // A bad value is rejected whole: the previous override stays in force.
    overrides(
        &ns,
        &[
            ("migration.margin", "lots"),
            ("migration.minDwellSeconds", "5"),
        ],
    )
    .await;
    wait_until("the bad override counted", WAIT, || async {
        let errors = migrator
            .metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix("carbon_kube_migrator_override_errors_total ")
                    .map(|v| v.parse::<f64>().unwrap())
            })
            .unwrap_or(0.0);
        if errors >= 1.0 {
            Progress::Done(())
        } else {
            Progress::Waiting(format!("{errors} errors"))
        }
    })
    .await
    .unwrap();
    migrator.wait_cycles(3.0).await;
    assert_eq!(
        migrator.setting("margin", "carbon-kube-config"),
        Some(10_000.0)
    );
    assert_eq!(
        migrator.count("carbon_kube_migrations_total", "migrated"),
        0.0
    );
    let still = running_pods(&ns, "web", 2).await;
    assert!(
        still
            .iter()
            .all(|(p, z)| z == "DE" && before.iter().any(|b| b.metadata.uid == p.metadata.uid))
    );

    // The margin back to a payable one: the next cycles move both pods.
    overrides(&ns, &[("migration.margin", "0.5")]).await;
    migrator
        .wait_setting("margin", "carbon-kube-config", 0.5)
        .await;
    wait_all_in(&ns, "web", 2, "FR").await;
    assert!(migrator.count("carbon_kube_migrations_total", "migrated") >= 2.0);

    // Deleted: the flags again.
    ns.api::<ConfigMap>()
        .delete(keys::CONFIG_CONFIGMAP, &Default::default())
        .await
        .unwrap();
    migrator.wait_setting("margin", "flags", 0.5).await;
    assert_eq!(migrator.setting("margin", "carbon-kube-config"), None);
    migrator.stop().await;
}
