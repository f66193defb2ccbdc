//! Config faults on a real kube-apiserver (issue 18): the snapshot ConfigMap
//! gets one zone of wrong types, is truncated, holds 1 MiB of garbage, is
//! deleted, and comes back. The extender's snapshot watch keeps serving:
//! good zones stay in use, an unreadable snapshot keeps the previous one,
//! a deleted one is neutral, and each fault is a clear log line and a
//! `carbon_kube_scheduler_snapshot_errors_total{error}` count.

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use carbon_kube_testkit::logs::Captured;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use carbon_kube_extender::service::filter;
use carbon_kube_extender::state::Shared;
use carbon_kube_extender::watch::watch_snapshot;
use carbon_kube_model::{ZoneId, keys};
use carbon_kube_policy::placement::PlacementConfigRaw;
use carbon_kube_testkit::{Progress, TestNamespace, shared as shared_control_plane, wait_until};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use serde_json::Value;
use support::*;

async fn put(ns: &TestNamespace, text: String) {
    let api: Api<ConfigMap> = ns.api();
    let mut cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(keys::SNAPSHOT_CONFIGMAP.into()),
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

fn errors(shared: &Shared, error: &'static str) -> u64 {
    shared.metrics.snapshot_errors.get(error)
}

/// The node names a filter request passes.
fn passed(shared: &Shared) -> Vec<String> {
    let (body, _) = filter(shared, fixture("filter-names.json").as_bytes())
        .unwrap_or_else(|e| panic!("the extender must keep answering: {e}"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["NodeNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

const WAIT: Duration = Duration::from_secs(30);

/// Waits until `check` holds (the watch applies ConfigMap changes).
async fn until(what: &str, check: impl Fn() -> bool) {
    wait_until(what, WAIT, || async {
        if check() {
            Progress::Done(())
        } else {
            Progress::Waiting("not yet".into())
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_faults_keep_the_extender_serving() {
    let log = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    let cp = shared_control_plane().await;
    let ns = cp.test_namespace("extender-config-faults").await.unwrap();
    let (snap, now, _, _) = green_de_dirty_texas();
    let good = snap.to_json();
    let (shared, _) = shared_with(
        carbon_kube_model::Snapshot::default(),
        Arc::new(move || now),
        vec![
            node("de-1", "DE"),
            node("tx-1", "US-TEX-ERCO"),
            node("de-2", "DE"),
            node("tx-2", "US-TEX-ERCO"),
        ],
        PlacementConfigRaw::default(),
    );
    let watch = tokio::spawn(watch_snapshot(
        ns.client(),
        ns.name().to_owned(),
        shared.clone(),
    ));
    let de = ZoneId::parse("DE").unwrap();
    let tx = ZoneId::parse("US-TEX-ERCO").unwrap();

    // A good snapshot: the green zone passes, Texas does not.
    put(&ns, good.clone()).await;
    until("the good snapshot", || shared.snapshot().zones.len() == 2).await;
    assert_eq!(passed(&shared), ["de-1", "de-2"]);
    let de_record = shared.snapshot().get(&de).cloned().unwrap();

    // One zone of wrong types: that zone is ignored, DE is still used.
    let mut doc: Value = serde_json::from_str(&good).unwrap();
    doc[tx.as_str()]["carbon_intensity"] = Value::String("high".into());
    doc[tx.as_str()]["timestamp"] = serde_json::json!([1, 2]);
    put(&ns, doc.to_string()).await;
    until("the bad zone to be dropped", || {
        shared.snapshot().get(&tx).is_none()
    })
    .await;
    assert_eq!(shared.snapshot().get(&de), Some(&de_record));
    assert!(errors(&shared, "bad_zone") >= 1);
    // Texas has no data now: neutral for its nodes, DE still decided.
    let p = passed(&shared);
    assert!(
        p.contains(&"de-1".to_owned()) && p.contains(&"de-2".to_owned()),
        "{p:?}"
    );
    let text = log.text();
    assert!(
        text.contains("ignoring a bad zone in the snapshot")
            && text.contains("zone US-TEX-ERCO: field `carbon_intensity`"),
        "{text}"
    );

    // Truncated, then 1 MiB of garbage: unreadable, the previous snapshot
    // stays in use.
    let before = shared.snapshot().clone();
    put(&ns, good[..good.len() / 2].to_owned()).await;
    until("the truncated snapshot to be refused", || {
        errors(&shared, "unreadable") >= 1
    })
    .await;
    assert_eq!(*shared.snapshot(), *before);
    let garbage: String = (0..(1u32 << 20) - 4096)
        .map(|i| char::from(b'!' + u8::try_from(i.wrapping_mul(2_654_435_761) >> 26).unwrap()))
        .collect();
    put(&ns, garbage).await;
    until("the garbage to be refused", || {
        errors(&shared, "unreadable") >= 2
    })
    .await;
    assert_eq!(*shared.snapshot(), *before);
    assert!(passed(&shared).contains(&"de-1".to_owned()));
    let text = log.text();
    assert!(
        text.contains("snapshot unreadable; keeping the last good one")
            && text.contains("snapshot is not valid JSON (line 1, column"),
        "{text}"
    );

    // Deleted: neutral, every node passes.
    let cms: Api<ConfigMap> = ns.api();
    cms.delete(keys::SNAPSHOT_CONFIGMAP, &DeleteParams::default())
        .await
        .unwrap();
    until("the deletion", || shared.snapshot().zones.is_empty()).await;
    assert_eq!(passed(&shared), ["de-1", "tx-1", "de-2", "tx-2"]);
    assert!(log.text().contains("snapshot ConfigMap absent"));

    // Back: decisions resume.
    put(&ns, good).await;
    until("the snapshot to come back", || {
        shared.snapshot().zones.len() == 2
    })
    .await;
    assert_eq!(passed(&shared), ["de-1", "de-2"]);
    watch.abort();
}
