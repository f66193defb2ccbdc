//! Provider faults at the poller (issue 18): after a good poll from the
//! recorded Electricity Maps body, the provider answers with a 5xx storm, a
//! 429 storm, timeouts and a body cut off mid-stream. Each time the last
//! good value is kept with its own timestamp (its age shows it is stale),
//! the failure is recorded in `last_error`, the exit code says so; once the
//! kept value is too old the static fallback replaces it and says it is a
//! fallback. A recognisable fake API token never appears in the logs, the
//! metrics, the published snapshot, the errors or the summary.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use carbon_kube_testkit::logs::Captured;
use std::time::Duration;

use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId};
use carbon_kube_poller::{Args, Completeness, Poller, Sink};
use carbon_kube_signals::{Credentials, Secret, Signals};
use carbon_kube_testkit::shared_data;
use clap::Parser;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "em-FAKE-TOKEN-canary-5d1e0b";

/// 2024-03-01T23:20:00Z: 20 minutes after the recorded latest value.
const NOW: UnixSeconds = 1_709_335_200;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn poller(base: &str, chain: &str, file: &std::path::Path, registry: &mut Registry) -> Poller {
    let em = format!("{base}/v3");
    let argv = vec![
        "poller",
        "--once",
        "--zones",
        "DE",
        "--chain",
        chain,
        "--electricity-maps-url",
        &em,
        "--provider-timeout",
        "300ms",
        "--provider-max-attempts",
        "2",
        "--provider-retry-base-delay",
        "10ms",
        "--provider-max-retry-after",
        "1s",
    ];
    let settings = Cli::try_parse_from(argv).unwrap().args.validate().unwrap();
    let creds = Credentials {
        electricity_maps_api_key: Some(Secret::new(TOKEN)),
        ..Credentials::none()
    };
    let signals = Signals::new(&settings.signals, creds).unwrap();
    let sink = Sink::File {
        path: file.to_owned(),
        max_age_seconds: 1800,
    };
    Poller::new(signals, settings.zones, sink, registry)
}

fn recorded_latest() -> String {
    let p = shared_data()
        .join("api_examples/electricitymaps_v3/green-elephpant_carbon-intensity_latest_DE.json");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A server that sends headers promising 5,000 bytes, a few bytes of body,
/// then closes the connection.
async fn cut_off_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"zone\":\"DE\",\"carbonInten",
                    )
                    .await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn metrics(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_keep_the_last_good_value_mark_it_and_never_leak_the_token() {
    let log = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        // Everything, but the mock servers' own request dumps (they print
        // the headers they received, token included: that is the test's
        // server, not the poller).
        .with_env_filter("trace,wiremock=off")
        .init();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.json");
    let de = ZoneId::parse("DE").unwrap();
    let read = || Snapshot::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let mut outputs = Vec::new();

    // A good poll.
    let good = MockServer::start().await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(recorded_latest(), "application/json"),
        )
        .mount(&good)
        .await;
    let mut registry = Registry::default();
    let r = poller(&good.uri(), "DE=electricity_maps", &file, &mut registry)
        .poll_once(NOW)
        .await
        .unwrap();
    assert_eq!(r.completeness, Completeness::Complete, "{}", r.summary());
    let first = read().get(&de).cloned().unwrap();
    assert_eq!(first.source.as_str(), "electricity_maps");
    outputs.push(metrics(&registry));

    // The faults, ten minutes apart; each server echoes the token back.
    let storm_5xx = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(503).set_body_string(format!("overloaded, token {TOKEN}")),
        )
        .mount(&storm_5xx)
        .await;
    let storm_429 = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_string(format!("slow down {TOKEN}")),
        )
        .mount(&storm_429)
        .await;
    let slow = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(recorded_latest(), "application/json")
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&slow)
        .await;
    let cut = cut_off_server().await;
    let faults = [
        (
            "5xx storm",
            storm_5xx.uri(),
            "server_error",
            "server error (HTTP 503)",
        ),
        (
            "429 storm",
            storm_429.uri(),
            "rate_limited",
            "rate limited (HTTP 429",
        ),
        ("timeouts", slow.uri(), "timeout", "timed out"),
        ("partial body", cut, "connect_error", "connection failed"),
    ];
    for (i, (what, uri, label, says)) in faults.iter().enumerate() {
        let now = NOW + 600 * (i as i64 + 1);
        let mut registry = Registry::default();
        let r = poller(uri, "DE=electricity_maps", &file, &mut registry)
            .poll_once(now)
            .await
            .unwrap();
        assert_eq!(
            r.completeness,
            Completeness::Absent,
            "{what}: {}",
            r.summary()
        );
        assert_eq!(r.completeness.exit_code(), 3);
        assert!(
            r.summary().contains("last value kept (stale)"),
            "{what}: {}",
            r.summary()
        );
        let kept = read().get(&de).cloned().unwrap();
        assert_eq!(
            kept.carbon_intensity, first.carbon_intensity,
            "{what}: the last good value is kept"
        );
        assert_eq!(
            kept.timestamp, first.timestamp,
            "{what}: its own timestamp, so its age shows"
        );
        assert!(kept.age_seconds(now) > first.age_seconds(NOW));
        let err = kept.last_error.clone().unwrap_or_default();
        assert!(err.contains(says), "{what}: last_error {err:?}");
        let m = metrics(&registry);
        assert!(
            m.contains(&format!(
                r#"carbon_kube_poller_requests_total{{provider="electricity_maps",outcome="{label}"}} 1"#
            )),
            "{what}: {m}"
        );
        outputs.push(m);
        outputs.push(r.summary());
        outputs.push(format!("{:?}", r.zones));
    }

    // Three hours later the kept value is past its validity: the static
    // average replaces it, and says it is a fallback (exit 4).
    let mut registry = Registry::default();
    let later = NOW + 3 * 3600;
    let r = poller(
        &storm_5xx.uri(),
        "DE=electricity_maps,static",
        &file,
        &mut registry,
    )
    .poll_once(later)
    .await
    .unwrap();
    assert_eq!(r.completeness, Completeness::Fallback, "{}", r.summary());
    assert_eq!(r.completeness.exit_code(), 4);
    assert!(
        r.summary()
            .contains("DE: static (static annual average (fallback))"),
        "{}",
        r.summary()
    );
    let now_static = read().get(&de).cloned().unwrap();
    assert_eq!(now_static.source.as_str(), "static");
    assert!(now_static.estimated);
    outputs.push(metrics(&registry));
    outputs.push(r.summary());

    // The token is nowhere.
    outputs.push(std::fs::read_to_string(&file).unwrap());
    let logged = log.text();
    assert!(
        logged.contains("electricity_maps"),
        "the failures are logged"
    );
    outputs.push(logged);
    for (i, text) in outputs.iter().enumerate() {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(TOKEN)).collect();
        assert!(
            lines.is_empty(),
            "the token leaked in output {i}:\n{lines:#?}"
        );
        assert!(
            !text.contains("canary-5d1e0b"),
            "part of the token leaked in output {i}"
        );
    }
}

/// Disk full for the file output (the temporary file is a link to
/// `/dev/full`): the cycle fails with an error naming the file and the
/// cause, and the previous snapshot file is left whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_cycle_and_keeps_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.json");
    let good = MockServer::start().await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(recorded_latest(), "application/json"),
        )
        .mount(&good)
        .await;
    let mut registry = Registry::default();
    poller(&good.uri(), "DE=electricity_maps", &file, &mut registry)
        .poll_once(NOW)
        .await
        .unwrap();
    let before = std::fs::read_to_string(&file).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("snapshot.json.tmp")).unwrap();
    let mut registry = Registry::default();
    let e = poller(&good.uri(), "DE=electricity_maps", &file, &mut registry)
        .poll_once(NOW + 600)
        .await
        .unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("snapshot.json.tmp"), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    Snapshot::parse(&before).unwrap();
}
