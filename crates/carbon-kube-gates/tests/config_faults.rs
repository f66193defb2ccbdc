//! Snapshot ConfigMap faults under the gate controller on a real
//! kube-apiserver (issue 18): after a good snapshot (a green window in DE,
//! GB dirty), the ConfigMap gets a zone of wrong types, is truncated, holds
//! 1 MiB of garbage and is deleted. The controller keeps the last good
//! snapshot (the bad zone alone is dropped), keeps planning new pods into
//! the DE window, releases the planned pod in it, and logs and counts each
//! fault (`carbon_kube_gates_snapshot_errors_total{error}`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use carbon_kube_testkit::logs::Captured;
use std::collections::BTreeMap;
use std::time::Duration;

use carbon_kube_gates::admission::has_gate;
use carbon_kube_gates::controller::{ControllerSettings, run_controller};
use carbon_kube_gates::metrics::ControllerMetrics;
use carbon_kube_gates::reconcile::{ANNOTATION_RELEASE_PLAN, ANNOTATION_RELEASED_AT};
use carbon_kube_gates::system_clock;
use carbon_kube_k8s::Readiness;
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{
    NODE_POOL_LABEL, Progress, TestNamespace, ensure_crypto_provider, nodes_in_zone, pod_named,
    shared, wait_for, wait_until,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSchedulingGate};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::oneshot;

const STEP: i64 = 10;
const WAIT: Duration = Duration::from_secs(60);

/// A record measured now whose forecast, on a 10 s grid, is `values`.
fn record(values: &[f64]) -> ZoneRecord {
    let t = jiff::Timestamp::now().as_second();
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(values[0]).unwrap(),
        t,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    r.forecast = Some(Forecast {
        start: t.div_euclid(STEP) * STEP,
        step_seconds: STEP as u32,
        values: values
            .iter()
            .map(|v| CarbonIntensity::new(*v).unwrap())
            .collect(),
    });
    r
}

async fn put(ns: &TestNamespace, text: String) {
    let api = ns.api::<ConfigMap>();
    let mut cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(keys::SNAPSHOT_CONFIGMAP.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(keys::SNAPSHOT_KEY.to_owned(), text)])),
        ..ConfigMap::default()
    };
    match api.get_opt(keys::SNAPSHOT_CONFIGMAP).await.unwrap() {
        Some(old) => {
            cm.metadata.resource_version = old.metadata.resource_version;
            api.replace(keys::SNAPSHOT_CONFIGMAP, &PostParams::default(), &cm)
                .await
                .unwrap();
        }
        None => {
            api.create(&PostParams::default(), &cm).await.unwrap();
        }
    }
}

fn gated_pod(ns: &TestNamespace, name: &str) -> Pod {
    let mut p = pod_named(name)
        .with_node_selector(NODE_POOL_LABEL, ns.node_pool())
        .with_annotation(keys::ANNOTATION_MAX_DELAY, "10m")
        .with_annotation(keys::ANNOTATION_EXPECTED_DURATION, "1m")
        .build();
    p.spec.as_mut().unwrap().scheduling_gates = Some(vec![PodSchedulingGate {
        name: keys::SCHEDULING_GATE.to_owned(),
    }]);
    p
}

/// The zone and reason of a pod's release plan, once it has one.
async fn plan_of(ns: &TestNamespace, name: &str) -> Value {
    let p = wait_for(&ns.api::<Pod>(), name, WAIT, |p| {
        p.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_RELEASE_PLAN))
    })
    .await
    .unwrap();
    serde_json::from_str(&p.metadata.annotations.unwrap()[ANNOTATION_RELEASE_PLAN]).unwrap()
}

async fn logged(log: &Captured, what: &str, at_least: usize) {
    wait_until(format!("{at_least} x log {what:?}"), WAIT, || async {
        let n = log.count(what);
        if n >= at_least {
            Progress::Done(())
        } else {
            Progress::Waiting(format!("{n} so far"))
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_faults_keep_the_gate_controller_planning_and_releasing() {
    ensure_crypto_provider();
    let log = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_env_filter("info")
        .init();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-config-faults").await.unwrap();
    for (zone, region) in [("DE", "eu-central"), ("GB", "eu-west")] {
        ns.create_nodes(
            &nodes_in_zone(region, format!("{region}-a"))
                .named(zone.to_ascii_lowercase())
                .with_label(keys::LABEL_GRID_ZONE, zone)
                .count(2),
        )
        .await
        .unwrap();
    }
    // DE: dirty for 3 slots (30 s), then green for 27; GB dirty throughout.
    let de: Vec<f64> = (0..72)
        .map(|i| if (3..30).contains(&i) { 50.0 } else { 400.0 })
        .collect();
    let mut good = Snapshot::default();
    good.zones.insert(ZoneId::parse("DE").unwrap(), record(&de));
    good.zones
        .insert(ZoneId::parse("GB").unwrap(), record(&[450.0; 72]));
    let good = good.to_json();
    put(&ns, good.clone()).await;

    let mut settings = ControllerSettings {
        snapshot_namespace: ns.name().to_owned(),
        pod_namespace: Some(ns.name().to_owned()),
        tick: Duration::from_millis(500),
        ..ControllerSettings::default()
    };
    settings.reconcile.deferral.start_safety_seconds = 20;
    settings.reconcile.hard_deadline_margin_seconds = 5;
    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let errors = metrics.snapshot_errors.clone();
    let (stop, rx) = oneshot::channel::<()>();
    let controller = tokio::spawn(run_controller(
        cp.client().await.unwrap(),
        settings,
        metrics,
        Readiness::default(),
        system_clock(),
        async {
            let _ = rx.await;
        },
    ));

    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &gated_pod(&ns, "first"))
        .await
        .unwrap();
    let plan = plan_of(&ns, "first").await;
    assert_eq!(plan["zone"], "DE", "{plan}");

    // GB of wrong types: GB dropped, DE kept.
    let mut doc: Value = serde_json::from_str(&good).unwrap();
    doc["GB"]["carbon_intensity"] = Value::String("high".into());
    put(&ns, doc.to_string()).await;
    logged(&log, "ignoring a bad zone in the snapshot", 1).await;
    // Truncated, then 1 MiB of garbage: the last good snapshot stays.
    put(&ns, good[..good.len() / 2].to_owned()).await;
    logged(&log, "snapshot unreadable; keeping the last good one", 1).await;
    let garbage: String = (0..(1u32 << 20) - 4096)
        .map(|i| char::from(b'!' + u8::try_from(i.wrapping_mul(2_654_435_761) >> 26).unwrap()))
        .collect();
    put(&ns, garbage).await;
    logged(&log, "snapshot unreadable; keeping the last good one", 2).await;
    // Deleted: still the last good snapshot, until it goes stale.
    ns.api::<ConfigMap>()
        .delete(keys::SNAPSHOT_CONFIGMAP, &DeleteParams::default())
        .await
        .unwrap();
    logged(&log, "snapshot ConfigMap deleted", 1).await;

    // The controller still plans new pods into the DE window...
    pods.create(&PostParams::default(), &gated_pod(&ns, "second"))
        .await
        .unwrap();
    let plan = plan_of(&ns, "second").await;
    assert_eq!(plan["zone"], "DE", "{plan}");
    // ...and releases the first one in it.
    let first = wait_for(&pods, "first", Duration::from_secs(120), |p| {
        !has_gate(p)
            && p.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_RELEASED_AT))
    })
    .await
    .unwrap();
    assert!(!has_gate(&first));
    assert!(!controller.is_finished(), "the controller keeps running");
    // Each fault is counted: the bad zone, then the truncated and the
    // garbage snapshot (a deletion is no unreadable snapshot).
    assert!(errors.get("bad_zone") >= 1);
    assert!(errors.get("unreadable") >= 2);
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
}
