//! The migrator's reservation against a real control plane, with the
//! **stock** kube-scheduler (no extender): does the replacement of a moved
//! pod land in the zone the migrator planned?
//!
//! The cluster is built so that, left alone, kube-scheduler sends a
//! replacement elsewhere: the planned zone (FR, the greenest) has room, but
//! its nodes are half full, while a third zone (NL, greener than the source
//! DE but not the greenest) has empty nodes. kube-scheduler's default
//! scores (least allocated, balanced allocation, the default topology
//! spread, which ties FR and NL) prefer NL. One test runs the migrator
//! alone and measures where the replacements land; the other adds the gate
//! webhook with `--steer-migrations`, which prefers the planned zone and
//! nodes for each move's replacement. Both report the landing metric.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use carbon_kube_gates::admission::{AdmissionConfig, has_gate};
use carbon_kube_gates::metrics::WebhookMetrics;
use carbon_kube_gates::reservation::{ReservationMetrics, Reservations};
use carbon_kube_gates::webhook::{Namespaces, WebhookState, app, serve_https_pem};
use carbon_kube_migrator::controller::MigratorSettings;
use carbon_kube_migrator::state::Landing;
use carbon_kube_migrator::system_clock;
use carbon_kube_model::keys;
use carbon_kube_testkit::{
    ControlPlane, NODE_POOL_LABEL, Progress, SchedulerConfig, TestNamespace,
    ensure_crypto_provider, nodes_in_zone, pod_named, shared, wait_until,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use prometheus_client::registry::Registry;
use serde_json::json;

mod common;
use common::{RunningMigrator, owner_state, put_snapshot, snapshot_json};

const WAIT: Duration = Duration::from_secs(120);
/// Replicas of the moved Deployment: one move each.
const REPLICAS: usize = 3;

/// DE dirty, NL in between, FR the greenest.
async fn publish(ns: &TestNamespace) {
    put_snapshot(
        ns,
        snapshot_json(&[("DE", 450.0), ("NL", 300.0), ("FR", 50.0)], 0),
    )
    .await;
}

fn settings(ns: &TestNamespace) -> MigratorSettings {
    // A third of the workload at once: one move per replica, in turn.
    let mut s = common::settings(ns, 0.34);
    s.overrides_configmap = None;
    s
}

fn zone(grid: &str) -> (&'static str, &'static str) {
    match grid {
        "DE" => ("eu-central", "de-a"),
        "NL" => ("eu-north", "nl-a"),
        _ => ("eu-west", "fr-a"),
    }
}

async fn create_nodes(ns: &TestNamespace, grid: &str, count: usize) -> Vec<Node> {
    let (region, z) = zone(grid);
    ns.create_nodes(
        &nodes_in_zone(region, z)
            .named(grid.to_ascii_lowercase())
            .with_label(keys::LABEL_GRID_ZONE, grid)
            .with_cpu("8")
            .with_memory("32Gi")
            .count(count),
    )
    .await
    .unwrap()
}

async fn deployment(ns: &TestNamespace, name: &str, replicas: usize, migrate: bool) {
    let annotations = if migrate {
        json!({keys::MIGRATE: "true"})
    } else {
        json!({})
    };
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
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

/// The app's running, not terminating pods with their node's grid zone,
/// once `n` of them run.
async fn running(ns: &TestNamespace, app: &str, n: usize) -> Vec<(Pod, String)> {
    wait_until(format!("{n} running pods of {app}"), WAIT, || async {
        let zones: BTreeMap<String, String> = Api::<Node>::all(ns.client())
            .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={}", ns.node_pool())))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|n| {
                let z = n.metadata.labels.as_ref().unwrap()[keys::LABEL_GRID_ZONE].clone();
                (n.metadata.name.unwrap(), z)
            })
            .collect();
        let pods: Vec<(Pod, String)> = ns
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .filter_map(|p| {
                let z = zones.get(p.spec.as_ref()?.node_name.as_deref()?)?.clone();
                Some((p, z))
            })
            .collect();
        if pods.len() == n {
            Progress::Done(pods)
        } else {
            Progress::Waiting(format!("{} running", pods.len()))
        }
    })
    .await
    .unwrap()
}

/// Three dirty DE nodes carrying the app; FR (planned) half full; NL empty.
/// Returns once the app's pods all run in DE.
async fn cluster(cp: &ControlPlane, ns: &TestNamespace) -> carbon_kube_testkit::Scheduler {
    let scheduler = cp
        .start_scheduler(
            SchedulerConfig::new(ns.scheduler_name()).restricted_to_node_pool(ns.node_pool()),
        )
        .await
        .unwrap();
    create_nodes(ns, "DE", 3).await;
    deployment(ns, "web", REPLICAS, true).await;
    let placed = running(ns, "web", REPLICAS).await;
    assert!(placed.iter().all(|(_, z)| z == "DE"));
    // The greener zones appear: FR's nodes each carry a 4-CPU filler (bare
    // pods, never moved), NL's are empty.
    for (i, n) in create_nodes(ns, "FR", 2).await.iter().enumerate() {
        ns.create_pod(
            &pod_named(format!("filler-{i}"))
                .requesting("4", "8Gi")
                .bound_to(n.metadata.name.clone().unwrap())
                .build(),
        )
        .await
        .unwrap();
    }
    create_nodes(ns, "NL", 2).await;
    publish(ns).await;
    scheduler
}

/// Waits until every replica's first move (out of DE) has a landing, and
/// returns those landings.
async fn first_landings(ns: &TestNamespace) -> Vec<Landing> {
    wait_until("a landing for every first move", WAIT, || async {
        let (_, s) = owner_state(ns, "web").await;
        let firsts: Vec<_> = s.moves.iter().filter(|m| m.from.as_str() == "DE").collect();
        let landed: Vec<Landing> = firsts.iter().filter_map(|m| m.landed).collect();
        if firsts.len() >= REPLICAS && landed.len() == firsts.len() {
            Progress::Done(landed)
        } else {
            Progress::Waiting(format!("{:?}", s.moves))
        }
    })
    .await
    .unwrap()
}

fn rate(landings: &[Landing]) -> String {
    let planned = landings.iter().filter(|l| **l == Landing::Planned).count();
    format!("{planned}/{} landed as planned", landings.len())
}

/// Without the webhook, the stock scheduler sends the replacements to the
/// empty NL nodes: the landing metric says `elsewhere`.
#[tokio::test]
async fn without_the_reservation_the_stock_scheduler_lands_replacements_elsewhere() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("reserve-off").await.unwrap();
    let _scheduler = cluster(cp, &ns).await;
    let migrator = RunningMigrator::start(cp, settings(&ns)).await;
    let landings = first_landings(&ns).await;
    let planned = migrator.count("carbon_kube_migration_landings_total", "planned");
    let elsewhere = migrator.count("carbon_kube_migration_landings_total", "elsewhere");
    migrator.stop().await;
    eprintln!(
        "MEASURE without reservation: {} (metric, all moves: planned {planned}, elsewhere {elsewhere})",
        rate(&landings)
    );
    assert!(
        landings.contains(&Landing::Elsewhere),
        "the scenario must send replacements elsewhere without a reservation: {landings:?}"
    );
    assert!(elsewhere >= 1.0);
    // No pod was steered: nothing carries the webhook's annotations.
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter()
            .all(|p| annotation(p, keys::ANNOTATION_REPLACES).is_none())
    );
}

fn annotation(p: &Pod, key: &str) -> Option<String> {
    p.metadata.annotations.as_ref()?.get(key).cloned()
}

/// With the gate webhook steering replacements, every replacement lands in
/// the planned zone (FR) and the landing metric says `planned`; the
/// steered pods say so; a pod of an owner without a pending move, and a
/// later pod of the moved workload, get nothing.
#[tokio::test]
async fn with_the_reservation_replacements_land_in_the_planned_zone() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("reserve-on").await.unwrap();
    let _scheduler = cluster(cp, &ns).await;

    // The gate webhook with --steer-migrations, on a random port.
    let client = cp.client().await.unwrap();
    let mut registry = Registry::default();
    let (reservations, writers) = Reservations::new(ReservationMetrics::register(&mut registry));
    let watches = reservations.watch(&client, writers);
    let state = WebhookState::new(
        AdmissionConfig::default(),
        Namespaces::Fixed(Arc::new(BTreeMap::new())),
        WebhookMetrics::register(&mut registry),
        system_clock(),
    )
    .with_reservations(reservations);
    let (cert, key) = cp.issue_serving_certificate(&["127.0.0.1"]).unwrap();
    let server = serve_https_pem(
        "127.0.0.1:0".parse().unwrap(),
        cert.into_bytes(),
        key.into_bytes(),
        app(state),
    )
    .await
    .unwrap();
    let name = format!("carbon-kube-gates-{}", ns.name());
    let mut config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "gates.carbon-kube.io",
            "clientConfig": {"url": format!("https://{}/mutate", server.addr)},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In",
                "values": [ns.name()]}]}
        }]
    }))
    .unwrap();
    config.webhooks.as_mut().unwrap()[0].client_config.ca_bundle =
        Some(ByteString(cp.ca_pem().as_bytes().to_vec()));
    let configs = Api::<MutatingWebhookConfiguration>::all(ns.client());
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    // The API server picks the configuration up asynchronously: probe with
    // dry runs until an opted-in pod comes back gated.
    let probe = pod_named("probe")
        .with_annotation(keys::ANNOTATION_MAX_DELAY, "1h")
        .build();
    wait_until("the webhook to be called", WAIT, || async {
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        match ns.api::<Pod>().create(&dry, &probe).await {
            Ok(p) if has_gate(&p) => Progress::Done(()),
            Ok(_) => Progress::Waiting("created ungated".into()),
            Err(e) => Progress::Waiting(e.to_string()),
        }
    })
    .await
    .unwrap();

    let migrator = RunningMigrator::start(cp, settings(&ns)).await;
    let landings = first_landings(&ns).await;
    let planned = migrator.count("carbon_kube_migration_landings_total", "planned");
    let elsewhere = migrator.count("carbon_kube_migration_landings_total", "elsewhere");
    eprintln!(
        "MEASURE with reservation: {} (metric: planned {planned}, elsewhere {elsewhere})",
        rate(&landings)
    );
    assert!(
        landings.iter().all(|l| *l == Landing::Planned),
        "{landings:?}"
    );
    assert!(planned >= REPLICAS as f64, "{}", migrator.metrics());
    assert_eq!(elsewhere, 0.0, "{}", migrator.metrics());
    migrator.stop().await;

    // Every replacement was steered, once, and says why; the replacements
    // run in FR.
    let (rs, state) = owner_state(&ns, "web").await;
    let now_running = running(&ns, "web", REPLICAS).await;
    assert!(
        now_running.iter().all(|(_, z)| z == "FR"),
        "{now_running:?}"
    );
    let mut replaced: Vec<String> = now_running
        .iter()
        .map(|(p, _)| annotation(p, keys::ANNOTATION_REPLACES).expect("steered"))
        .collect();
    replaced.sort();
    let mut moved: Vec<String> = state.moves.iter().map(|m| m.uid.clone()).collect();
    moved.sort();
    assert_eq!(replaced, moved, "one replacement per move");
    let why = annotation(&now_running[0].0, keys::ANNOTATION_STEERED).unwrap();
    assert!(why.contains("prefers zone FR"), "{why}");
    let pref = now_running[0]
        .0
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap();
    assert!(
        pref.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    assert!(
        !pref
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .is_empty()
    );
    // The landings are explained on the replacements.
    let events: Vec<Event> = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(events.iter().any(|e| {
        e.reason.as_deref() == Some("MigrationLanded")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("as planned (steered"))
    }));
    // Every replacement landed: the owner no longer carries the label.
    let (rs_now, _) = wait_until("the pending label removed", WAIT, || async {
        let (rs, s) = owner_state(&ns, "web").await;
        let labelled = rs
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(keys::LABEL_MIGRATION_PENDING));
        if labelled {
            Progress::Waiting("still labelled".into())
        } else {
            Progress::Done((rs, s))
        }
    })
    .await
    .unwrap();
    assert_eq!(rs_now.metadata.uid, rs.metadata.uid);

    // Without a move record nothing is added: a new replica of the moved
    // workload (its moves landed) and another workload's pod.
    ns.api::<Deployment>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": REPLICAS + 1}})),
        )
        .await
        .unwrap();
    deployment(&ns, "plain", 1, false).await;
    let plain = running(&ns, "plain", 1).await;
    let web = running(&ns, "web", REPLICAS + 1).await;
    let unsteered: Vec<&Pod> = web
        .iter()
        .map(|(p, _)| p)
        .chain(plain.iter().map(|(p, _)| p))
        .filter(|p| annotation(p, keys::ANNOTATION_REPLACES).is_none())
        .collect();
    assert_eq!(unsteered.len(), 2, "the new web replica and plain: {web:?}");
    for p in unsteered {
        assert!(annotation(p, keys::ANNOTATION_STEERED).is_none());
        assert!(p.spec.as_ref().unwrap().affinity.is_none(), "{p:?}");
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(&format!(
            "carbon_kube_gates_webhook_steering_total{{result=\"steered\"}} {REPLICAS}"
        )),
        "{text}"
    );
    configs
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    server.stop().await;
    for w in watches {
        w.abort();
    }
}
