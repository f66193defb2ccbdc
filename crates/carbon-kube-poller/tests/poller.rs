//! The poller end to end: recorded UK Carbon Intensity bodies served by a
//! local mock server, published to a real kube-apiserver's ConfigMap or to a file.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use carbon_kube_k8s::SnapshotStore;
use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId, keys};
use carbon_kube_poller::{Args, Completeness, Poller, Sink};
use carbon_kube_signals::{Credentials, Signals};
use clap::Parser;
use k8s_openapi::api::core::v1::ConfigMap;
use prometheus_client::registry::Registry;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// 2023-03-15T12:01:00Z, when the recorded UK bodies were fetched.
const RECORDED_AT: UnixSeconds = 1_678_881_660;

use carbon_kube_testkit::shared_data;

fn recorded(rel: &str) -> String {
    let p = shared_data()
        .join("api_examples/uk_carbon_intensity")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// A mock UK Carbon Intensity API answering from the recorded bodies.
async fn uk_api() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/intensity"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            recorded("nmpowell_national_pt24h_2023-03-15T1201Z.json"),
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(path("/intensity/2023-03-15T12:01Z/fw48h"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            recorded("nmpowell_national_fw48h_2023-03-15T1201Z.json"),
            "application/json",
        ))
        .mount(&server)
        .await;
    server
}

async fn failing_api() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    server
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn args(extra: &[&str]) -> Args {
    let mut argv = vec![
        "poller",
        "--once",
        "--zones",
        "GB",
        "--provider-retry-base-delay",
        "10ms",
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().args
}

fn poller(uk_url: &str, sink: Sink, registry: &mut Registry) -> Poller {
    let a = args(&[
        "--uk-carbon-url",
        uk_url,
        "--chain",
        "GB=uk_carbon_intensity",
    ]);
    let settings = a.validate().unwrap();
    let signals = Signals::new(&settings.signals, Credentials::none()).unwrap();
    Poller::new(signals, settings.zones, sink, registry)
}

fn metrics(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

#[tokio::test]
async fn publishes_to_the_configmap_and_keeps_the_last_good_value_on_failure() {
    let cp = carbon_kube_testkit::shared().await;
    let ns = cp.test_namespace("poller").await.unwrap();
    let store = || SnapshotStore::new(ns.client(), ns.name(), keys::SNAPSHOT_CONFIGMAP);
    let gb = ZoneId::parse("GB").unwrap();

    // A good poll: the ConfigMap is created with GB's current value and forecast.
    let uk = uk_api().await;
    let mut registry = Registry::default();
    let p = poller(
        &uk.uri(),
        Sink::ConfigMap {
            store: store(),
            max_age_seconds: 1800,
        },
        &mut registry,
    );
    let report = p.poll_once(RECORDED_AT).await.unwrap();
    assert_eq!(report.completeness, Completeness::Complete);
    let cm: ConfigMap = ns
        .api::<ConfigMap>()
        .get(keys::SNAPSHOT_CONFIGMAP)
        .await
        .unwrap();
    let published = Snapshot::parse(&cm.data.unwrap()[keys::SNAPSHOT_KEY]).unwrap();
    let r = published.get(&gb).unwrap();
    assert_eq!(r.source.as_str(), "uk_carbon_intensity");
    assert_eq!(r.carbon_intensity.g_per_kwh(), 228.0);
    assert_eq!(r.forecast.as_ref().unwrap().values.len(), 48);
    let text = metrics(&registry);
    assert!(text.contains(r#"carbon_kube_poller_requests_total{provider="uk_carbon_intensity",outcome="success"} 1"#), "{text}");
    assert!(
        text.contains(
            r#"carbon_kube_carbon_intensity_current{zone="GB",source="uk_carbon_intensity"} 228.0"#
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"carbon_kube_poller_last_success_timestamp_seconds{{zone="GB"}} {RECORDED_AT}.0"#
        )),
        "{text}"
    );

    // Ten minutes later the API fails: the last good value stays, with the error.
    let down = failing_api().await;
    let mut registry = Registry::default();
    let p = poller(
        &down.uri(),
        Sink::ConfigMap {
            store: store(),
            max_age_seconds: 1800,
        },
        &mut registry,
    );
    let report = p.poll_once(RECORDED_AT + 600).await.unwrap();
    assert_eq!(report.completeness, Completeness::Absent);
    assert_eq!(report.completeness.exit_code(), 3);
    let (kept, errors) = store().load().await.unwrap().unwrap();
    assert!(errors.is_empty());
    let r = kept.get(&gb).unwrap();
    assert_eq!(
        r.carbon_intensity.g_per_kwh(),
        228.0,
        "the good value is kept"
    );
    assert_eq!(
        r.age_seconds(RECORDED_AT + 600),
        660 + 1800,
        "and its age shows"
    );
    let err = r.last_error.as_deref().unwrap();
    assert!(
        err.contains("uk_carbon_intensity") && err.contains("503"),
        "{err}"
    );
    let text = metrics(&registry);
    assert!(
        text.contains(r#"provider="uk_carbon_intensity",outcome="server_error""#),
        "{text}"
    );
}

#[tokio::test]
async fn a_file_output_is_merged_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.json");
    // An earlier snapshot with another zone and a bad one.
    std::fs::write(
        &file,
        r#"{"DE": {"carbon_intensity": 300, "timestamp": 1678880000, "source": "electricity_maps"},
            "XX": {"carbon_intensity": "n/a", "timestamp": 1, "source": "x"}}"#,
    )
    .unwrap();
    let uk = uk_api().await;
    let mut registry = Registry::default();
    let p = poller(
        &uk.uri(),
        Sink::File {
            path: file.clone(),
            max_age_seconds: 1800,
        },
        &mut registry,
    );
    let report = p.poll_once(RECORDED_AT).await.unwrap();
    assert_eq!(report.completeness, Completeness::Complete);
    let written = Snapshot::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let zones: Vec<&str> = written.zones.keys().map(ZoneId::as_str).collect();
    assert_eq!(
        zones,
        ["DE", "GB"],
        "DE kept, GB added, the bad zone dropped"
    );
}
