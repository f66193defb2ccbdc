//! API keys, passwords and tokens never reach logs, errors or `Debug` output,
//! even when a server echoes them back in an error body.

#![allow(clippy::unwrap_used)] // Test code: a panic is a test failure.

mod common;

use carbon_kube_testkit::logs::Captured;

use common::*;
use wiremock::matchers::{header, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WT_TOKEN: &str = "wt-token-very-secret-0009";

#[tokio::test]
async fn secrets_never_reach_logs_errors_or_debug_output() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    // Electricity Maps refuses the key and echoes it (401), then fails (500)
    // with the key in the body.
    Mock::given(path("/v3/carbon-intensity/latest"))
        .and(header("auth-token", EM_KEY))
        .respond_with(ResponseTemplate::new(401).set_body_string(format!("invalid token {EM_KEY}")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .and(header("auth-token", EM_KEY))
        .respond_with(
            ResponseTemplate::new(500).set_body_string(format!("crash while checking {EM_KEY}")),
        )
        .mount(&server)
        .await;
    // WattTime logs in, then its data endpoint echoes the token and the user.
    Mock::given(path("/login"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(format!("{{\"token\": \"{WT_TOKEN}\"}}")),
        )
        .expect(1..)
        .mount(&server)
        .await;
    Mock::given(path("/v3/forecast"))
        .and(header(
            "authorization",
            format!("Bearer {WT_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(502).set_body_string(format!(
            "gateway: bearer {WT_TOKEN} for {WT_USER}:{WT_PASSWORD}"
        )))
        .expect(1..)
        .mount(&server)
        .await;
    // NOAA's grid answers a wrong type carrying the key.
    Mock::given(path("/points/37.434,-121.955"))
        .and(header("api-key", NOAA_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_string(body(NOAA_POINTS)))
        .mount(&server)
        .await;
    Mock::given(path("/gridpoints/TAE/58,65"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!(
            "{{\"properties\": {{\"skyCover\": \"{NOAA_KEY}\"}}}}"
        )))
        .mount(&server)
        .await;

    let creds = all_credentials();
    let s = carbon_kube_signals::Signals::new(
        &args(
            &server.uri(),
            &["US-CAL-CISO=electricity_maps,watttime,noaa_estimate"],
        ),
        creds.clone(),
    )
    .unwrap();
    let now = ts("2024-03-01T23:20:00Z");
    let first = s.fetch_zone(&zone("US-CAL-CISO"), now).await;
    let second = s.fetch_zone(&zone("US-CAL-CISO"), now + 1).await;
    assert!(first.record.is_none() && second.record.is_none());
    assert_eq!(
        labels(&second),
        [
            ("electricity_maps", "server_error"),
            ("watttime", "server_error"),
            ("noaa_estimate", "invalid_response")
        ]
    );

    let logs = captured.text();
    assert!(logs.contains("provider failed"), "the log capture works");
    let mut outputs = vec![
        ("logs", logs),
        ("first fetch Debug", format!("{first:?}")),
        ("second fetch Debug", format!("{second:?}")),
        ("signals Debug", format!("{s:?}")),
        ("credentials Debug", format!("{creds:?}")),
    ];
    for f in [&first, &second] {
        outputs.push(("error summary", f.error_summary().unwrap()));
        for a in &f.attempts {
            outputs.push(("attempt error", a.error.clone().unwrap_or_default()));
        }
    }
    // The echoed bodies are quoted, masked.
    assert!(
        outputs
            .iter()
            .any(|(_, o)| o.contains("crash while checking ***")),
        "{outputs:?}"
    );
    for secret in [EM_KEY, WT_USER, WT_PASSWORD, NOAA_KEY, WT_TOKEN] {
        for (what, text) in &outputs {
            assert!(!text.contains(secret), "{what} contains a secret: {text}");
        }
    }
}
