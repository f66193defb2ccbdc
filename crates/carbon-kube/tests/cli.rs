//! The `carbon-kube` binary as a user runs it: help, exit codes, secrets.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Command, Output};

use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn carbon_kube(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_carbon-kube"));
    cmd.args(args);
    for var in [
        "ELECTRICITY_MAPS_API_KEY",
        "WATTTIME_USERNAME",
        "WATTTIME_PASSWORD",
        "NOAA_API_KEY",
        "KUBECONFIG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn help_describes_every_poller_flag() {
    let out = carbon_kube(&["poller", "--help"], &[]);
    assert!(out.status.success());
    let help = text(&out);
    for flag in [
        "--once",
        "--interval",
        "--zones",
        "--namespace",
        "--configmap",
        "--output",
        "--max-data-age",
        "--listen",
        "--electricity-maps-url",
        "--watttime-url",
        "--uk-carbon-url",
        "--noaa-url",
        "--open-meteo-url",
        "--chain",
        "CARBON_KUBE_ELECTRICITY_MAPS_URL",
        "ELECTRICITY_MAPS_API_KEY",
        "Exit codes",
    ] {
        assert!(help.contains(flag), "poller --help lacks {flag}:\n{help}");
    }
    let top = text(&carbon_kube(&["--help"], &[]));
    assert!(top.contains("poller"), "{top}");
}

/// Issue 18: a static average is a fallback, not fresh data: exit 4, and a
/// line per zone on stderr says so.
#[test]
fn static_fallback_to_stdout_exits_4_and_says_fallback() {
    let out = carbon_kube(
        &[
            "poller",
            "--once",
            "--zones",
            "DE,US-CA",
            "--chain",
            "default=static",
            "--output",
            "-",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for zone in ["DE", "US-CAL-CISO"] {
        assert!(
            stderr.contains(&format!(
                "{zone}: static (static annual average (fallback))"
            )),
            "{stderr}"
        );
    }
    assert!(stderr.contains("(exit code 4)"), "{stderr}");
    let json = String::from_utf8(out.stdout).unwrap();
    let snapshot = carbon_kube_model::Snapshot::parse(json.trim()).unwrap();
    for zone in ["DE", "US-CAL-CISO"] {
        let r = snapshot
            .get(&carbon_kube_model::ZoneId::parse(zone).unwrap())
            .unwrap();
        assert_eq!(r.source.as_str(), "static");
        assert!(r.estimated);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_data_exits_3_and_names_the_provider() {
    let down = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .mount(&down)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.json");
    let out = carbon_kube(
        &[
            "poller",
            "--once",
            "--zones",
            "GB",
            "--chain",
            "GB=uk_carbon_intensity",
            "--uk-carbon-url",
            &down.uri(),
            "--provider-retry-base-delay",
            "10ms",
            "--output",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("uk_carbon_intensity"), "{}", text(&out));
}

#[test]
fn bad_arguments_exit_1_with_the_flag_named() {
    let out = carbon_kube(
        &["poller", "--once", "--zones", "D E", "--output", "-"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--zones"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_never_reach_the_output() {
    const KEY: &str = "em-secret-key-7f3a9c";
    // A hostile API that echoes the key back in its error body.
    let api = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_string(format!(r#"{{"error": "invalid auth-token {KEY}"}}"#)),
        )
        .mount(&api)
        .await;
    let out = carbon_kube(
        &[
            "--debug",
            "poller",
            "--once",
            "--zones",
            "DE",
            "--chain",
            "DE=electricity_maps,static",
            "--electricity-maps-url",
            &api.uri(),
            "--output",
            "-",
        ],
        &[("ELECTRICITY_MAPS_API_KEY", KEY), ("RUST_LOG", "trace")],
    );
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(4),
        "the static fallback answers, as a fallback: {all}"
    );
    assert!(
        all.contains("electricity_maps"),
        "the failure is logged: {all}"
    );
    assert!(!all.contains(KEY), "the API key leaked:\n{all}");
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, resp))
}

#[test]
fn interval_mode_serves_health_and_metrics_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_carbon-kube"))
        .args([
            "poller",
            "--interval",
            "10s",
            "--zones",
            "DE",
            "--chain",
            "default=static",
            "--listen",
            &addr,
            "--output",
            file.to_str().unwrap(),
        ])
        .env_remove("ELECTRICITY_MAPS_API_KEY")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        matches!(http_get(&addr, "/readyz"), Some((200, _)))
    });
    let metrics = http_get(&addr, "/metrics");
    let healthz = http_get(&addr, "/healthz");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(ready, "/readyz never answered 200");
    assert_eq!(healthz.map(|h| h.0), Some(200));
    let (code, body) = metrics.unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains(r#"carbon_kube_carbon_intensity_current{zone="DE",source="static"}"#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"carbon_kube_poller_requests_total{provider="static",outcome="success"} 1"#
        ),
        "{body}"
    );
    assert!(file.exists(), "the snapshot was written");
    assert_eq!(status.code(), Some(0), "SIGTERM stops it cleanly");
}
