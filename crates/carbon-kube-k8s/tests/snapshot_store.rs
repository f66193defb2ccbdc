//! The snapshot ConfigMap store against a real kube-apiserver.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use carbon_kube_k8s::SnapshotStore;
use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::shared;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

fn record(v: f64) -> ZoneRecord {
    ZoneRecord::new(
        CarbonIntensity::new(v).unwrap(),
        1_700_000_000,
        Source::new(Source::ELECTRICITY_MAPS),
    )
}

fn zone(z: &str) -> ZoneId {
    ZoneId::parse(z).unwrap()
}

#[tokio::test]
async fn creates_the_configmap_and_merges_into_it() {
    let cp = shared().await;
    let ns = cp.test_namespace("store-create").await.unwrap();
    let store = SnapshotStore::new(ns.client(), ns.name(), keys::SNAPSHOT_CONFIGMAP);
    assert!(store.load().await.unwrap().is_none());

    let (_, conflicts) = store
        .update(|s| {
            s.zones.insert(zone("DE"), record(300.0));
        })
        .await
        .unwrap();
    assert_eq!(conflicts, 0);
    store
        .update(|s| {
            assert!(
                s.get(&zone("DE")).is_some(),
                "the second update sees the first"
            );
            s.zones.insert(zone("GB"), record(120.0));
        })
        .await
        .unwrap();

    let cm: ConfigMap = ns
        .api::<ConfigMap>()
        .get(keys::SNAPSHOT_CONFIGMAP)
        .await
        .unwrap();
    let json = &cm.data.unwrap()[keys::SNAPSHOT_KEY];
    let published = Snapshot::parse(json).unwrap();
    assert_eq!(published.zones.len(), 2);
    assert_eq!(
        published
            .get(&zone("GB"))
            .unwrap()
            .carbon_intensity
            .g_per_kwh(),
        120.0
    );
    assert_eq!(
        cm.metadata.labels.unwrap()["app.kubernetes.io/name"],
        "carbon-kube"
    );
}

#[tokio::test]
async fn a_write_conflict_is_retried_on_fresh_data() {
    let cp = shared().await;
    let ns = cp.test_namespace("store-conflict").await.unwrap();
    let store = SnapshotStore::new(ns.client(), ns.name(), keys::SNAPSHOT_CONFIGMAP);
    store
        .update(|s| {
            s.zones.insert(zone("DE"), record(300.0));
        })
        .await
        .unwrap();

    // Between our read and our write, another writer adds FR.
    let namespace = ns.name().to_owned();
    let mut calls = 0;
    let (written, conflicts) = store
        .update(|s| {
            calls += 1;
            if calls == 1 {
                let namespace = namespace.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Runtime::new().unwrap();
                    rt.block_on(async {
                        let client = cp.client().await.unwrap();
                        let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
                        let mut cm = api.get(keys::SNAPSHOT_CONFIGMAP).await.unwrap();
                        let data = cm.data.get_or_insert_with(BTreeMap::new);
                        let mut other = Snapshot::parse(&data[keys::SNAPSHOT_KEY]).unwrap();
                        other.zones.insert(zone("FR"), record(40.0));
                        data.insert(keys::SNAPSHOT_KEY.to_owned(), other.to_json());
                        api.replace(keys::SNAPSHOT_CONFIGMAP, &PostParams::default(), &cm)
                            .await
                            .unwrap();
                    });
                })
                .join()
                .unwrap();
            }
            s.zones.insert(zone("GB"), record(120.0));
        })
        .await
        .unwrap();

    assert_eq!(conflicts, 1, "our first write must have met a 409 conflict");
    assert_eq!(calls, 2, "the update ran again on the re-read ConfigMap");
    let names: Vec<&str> = written.zones.keys().map(ZoneId::as_str).collect();
    assert_eq!(names, ["DE", "FR", "GB"], "nobody's write was lost");
    let (loaded, errors) = store.load().await.unwrap().unwrap();
    assert!(errors.is_empty());
    assert_eq!(loaded, written);
}

#[tokio::test]
async fn a_bad_zone_in_the_configmap_does_not_hide_the_others() {
    let cp = shared().await;
    let ns = cp.test_namespace("store-bad-zone").await.unwrap();
    let api = ns.api::<ConfigMap>();
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": keys::SNAPSHOT_CONFIGMAP},
        "data": {keys::SNAPSHOT_KEY: r#"{"DE": {"carbon_intensity": "lots", "timestamp": 1, "source": "x"},
                                          "GB": {"carbon_intensity": 99, "timestamp": 1, "source": "x"}}"#}
    }))
    .unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let store = SnapshotStore::new(ns.client(), ns.name(), keys::SNAPSHOT_CONFIGMAP);
    let (snapshot, errors) = store.load().await.unwrap().unwrap();
    assert_eq!(snapshot.zones.len(), 1);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .contains("zone DE: field `carbon_intensity`"),
        "{}",
        errors[0]
    );
}
