//! Every failure mode ends in a clear typed error and a fallback, never a
//! panic: timeout, 500, 429 with `Retry-After`, 401, truncated JSON, wrong
//! types, empty body, impossible values, stale data, unknown zones. The bad
//! bodies are derived from recorded real ones.

#![allow(clippy::unwrap_used)] // Test code: a panic is a test failure.

mod common;

use std::time::{Duration, Instant};

use carbon_kube_signals::{Credentials, ErrorKind, Outcome, Signals};
use common::*;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const CHAIN: &str = "DE=electricity_maps,static";

fn now_de() -> i64 {
    ts("2024-03-01T23:20:00Z")
}

/// Electricity Maps' latest endpoint answers `response`; returns the fetch.
async fn em_latest_answers(
    response: ResponseTemplate,
    expected_requests: u64,
) -> carbon_kube_signals::ZoneFetch {
    let server = MockServer::start().await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(response)
        .expect(expected_requests)
        .mount(&server)
        .await;
    let s = signals(&server.uri(), &[CHAIN]);
    s.fetch_zone(&zone("DE"), now_de()).await
}

fn assert_fell_back(f: &carbon_kube_signals::ZoneFetch, label: &str) {
    assert_eq!(
        labels(f),
        [("electricity_maps", label), ("static", "success")],
        "{:?}",
        f.attempts
    );
    let r = f.record.as_ref().expect("the static fallback answers");
    assert_eq!(r.source.as_str(), "static");
    assert!(r.estimated);
    let e = f.attempts[0].error.as_ref().expect("an error message");
    assert!(
        e.starts_with("electricity_maps carbon-intensity/latest: "),
        "{e}"
    );
}

#[tokio::test]
async fn timeout_is_retried_then_falls_back() {
    let started = Instant::now();
    let f = em_latest_answers(
        ResponseTemplate::new(200)
            .set_body_string(body(EM_LATEST_DE))
            .set_delay(Duration::from_secs(3)),
        3,
    )
    .await;
    assert_fell_back(&f, "timeout");
    assert!(
        f.attempts[0]
            .error
            .as_ref()
            .unwrap()
            .contains("timed out (3 attempt(s)")
    );
    // Three attempts of 0.5 s plus short back-off, not three delays of 3 s.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn server_error_is_retried_then_falls_back() {
    let f = em_latest_answers(
        ResponseTemplate::new(500).set_body_string("upstream exploded"),
        3,
    )
    .await;
    assert_fell_back(&f, "server_error");
    let e = f.attempts[0].error.as_ref().unwrap();
    assert!(
        e.contains("HTTP 500") && e.contains("upstream exploded"),
        "{e}"
    );
}

#[tokio::test]
async fn server_error_then_success_recovers() {
    let server = MockServer::start().await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body(EM_LATEST_DE)))
        .expect(1)
        .mount(&server)
        .await;
    let f = signals(&server.uri(), &[CHAIN])
        .fetch_zone(&zone("DE"), now_de())
        .await;
    assert_eq!(labels(&f), [("electricity_maps", "success")]);
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let server = MockServer::start().await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body(EM_LATEST_DE)))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let f = signals(&server.uri(), &[CHAIN])
        .fetch_zone(&zone("DE"), now_de())
        .await;
    assert_eq!(labels(&f), [("electricity_maps", "success")]);
    // The back-off alone is 20 ms; the server asked for a second.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn rate_limit_longer_than_the_cap_moves_on_at_once() {
    let started = Instant::now();
    let f = em_latest_answers(
        ResponseTemplate::new(429).insert_header("retry-after", "3600"),
        1,
    )
    .await;
    assert_fell_back(&f, "rate_limited");
    assert!(
        f.attempts[0]
            .error
            .as_ref()
            .unwrap()
            .contains("retry after 3600s")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn unauthorized_is_not_retried() {
    let f = em_latest_answers(ResponseTemplate::new(401).set_body_string("bad token"), 1).await;
    assert_fell_back(&f, "unauthorized");
    assert_eq!(
        f.attempts[0].outcome,
        Outcome::Error(ErrorKind::Unauthorized)
    );
}

#[tokio::test]
async fn other_client_errors_are_not_retried() {
    let f = em_latest_answers(
        ResponseTemplate::new(400).set_body_string("{\"error\":\"bad\"}"),
        1,
    )
    .await;
    assert_fell_back(&f, "client_error");
}

#[tokio::test]
async fn truncated_json_is_an_invalid_response() {
    let full = body(EM_LATEST_DE);
    let truncated = full[..full.len() / 2].to_owned();
    let f = em_latest_answers(ResponseTemplate::new(200).set_body_string(truncated), 1).await;
    assert_fell_back(&f, "invalid_response");
    assert!(f.attempts[0].error.as_ref().unwrap().contains("EOF"));
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let wrong =
        body(EM_LATEST_DE).replace("\"carbonIntensity\": 428", "\"carbonIntensity\": \"428 g\"");
    assert!(wrong.contains("428 g"), "the recorded body changed shape");
    let f = em_latest_answers(ResponseTemplate::new(200).set_body_string(wrong), 1).await;
    assert_fell_back(&f, "invalid_response");
    let e = f.attempts[0].error.as_ref().unwrap();
    assert!(
        e.contains("at `carbonIntensity`: invalid type: string"),
        "{e}"
    );
}

#[tokio::test]
async fn empty_body_is_reported_as_such() {
    let f = em_latest_answers(ResponseTemplate::new(200), 1).await;
    assert_fell_back(&f, "empty_body");
}

#[tokio::test]
async fn impossible_and_missing_values() {
    let negative =
        body(EM_LATEST_DE).replace("\"carbonIntensity\": 428", "\"carbonIntensity\": -5");
    let f = em_latest_answers(ResponseTemplate::new(200).set_body_string(negative), 1).await;
    assert_fell_back(&f, "invalid_value");
    let null = body(EM_LATEST_DE).replace("\"carbonIntensity\": 428", "\"carbonIntensity\": null");
    let f = em_latest_answers(ResponseTemplate::new(200).set_body_string(null), 1).await;
    assert_fell_back(&f, "no_data");
}

#[tokio::test]
async fn stale_value_falls_back() {
    let server = MockServer::start().await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body(EM_LATEST_DE)))
        .mount(&server)
        .await;
    let s = signals(&server.uri(), &[CHAIN]);
    let f = s.fetch_zone(&zone("DE"), ts("2024-03-05T00:00:00Z")).await;
    assert_fell_back(&f, "stale");
}

#[tokio::test]
async fn unknown_zone_moves_through_the_chain_without_panicking() {
    let server = MockServer::start().await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_string("{\"error\":\"Zone 'XX-NOWHERE' does not exist\"}"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let s = signals(&server.uri(), &[]);
    let f = s.fetch_zone(&zone("XX-NOWHERE"), now_de()).await;
    assert!(f.record.is_none());
    assert_eq!(
        labels(&f),
        [
            ("electricity_maps", "unsupported"),
            ("watttime", "unsupported"),
            ("noaa_estimate", "unsupported"),
            ("open_meteo_estimate", "unsupported"),
            ("static", "unsupported")
        ]
    );
    let summary = f.error_summary().unwrap();
    assert!(
        summary.contains("Electricity Maps does not know zone XX-NOWHERE"),
        "{summary}"
    );
}

#[tokio::test]
async fn every_provider_failing_leaves_no_record_and_a_summary() {
    let server = MockServer::start().await;
    Mock::given(path("/login"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path("/v1/forecast"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(body(OPEN_METEO_DE)[..5000].to_owned()),
        )
        .mount(&server)
        .await;
    Mock::given(path("/intensity"))
        .respond_with(ResponseTemplate::new(200).set_body_string("   "))
        .mount(&server)
        .await;
    let s = signals(
        &server.uri(),
        &["GB=uk_carbon_intensity,watttime,open_meteo_estimate"],
    );
    let f = s.fetch_zone(&zone("GB"), now_de()).await;
    assert!(f.record.is_none());
    assert_eq!(
        labels(&f),
        [
            ("uk_carbon_intensity", "empty_body"),
            ("watttime", "unauthorized"),
            ("open_meteo_estimate", "invalid_response")
        ]
    );
    let summary = f.error_summary().unwrap();
    assert!(
        summary.contains("watttime login: credentials refused (HTTP 401)"),
        "{summary}"
    );
}

#[tokio::test]
async fn noaa_failures_fall_back() {
    let server = MockServer::start().await;
    Mock::given(path("/points/37.434,-121.955"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body(NOAA_POINTS)))
        .mount(&server)
        .await;
    Mock::given(path("/gridpoints/TAE/58,65"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&server)
        .await;
    let s = signals(&server.uri(), &["US-CAL-CISO=noaa_estimate,static"]);
    let f = s
        .fetch_zone(&zone("US-CAL-CISO"), ts("2022-02-04T03:30:00Z"))
        .await;
    assert_eq!(
        labels(&f),
        [("noaa_estimate", "server_error"), ("static", "success")]
    );

    // A weather series that does not cover `now` is "no data", not a panic.
    let server = MockServer::start().await;
    Mock::given(path("/points/37.434,-121.955"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body(NOAA_POINTS)))
        .mount(&server)
        .await;
    Mock::given(path("/gridpoints/TAE/58,65"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body(NOAA_GRID)))
        .mount(&server)
        .await;
    let s = signals(&server.uri(), &["US-CAL-CISO=noaa_estimate,static"]);
    let f = s
        .fetch_zone(&zone("US-CAL-CISO"), ts("2025-01-01T00:00:00Z"))
        .await;
    assert_eq!(
        labels(&f),
        [("noaa_estimate", "no_data"), ("static", "success")]
    );
}

#[tokio::test]
async fn connection_refused_is_a_transient_error() {
    // Nothing listens on port 9 of localhost.
    let s = Signals::new(
        &args("http://127.0.0.1:9", &["GB=uk_carbon_intensity,static"]),
        Credentials::none(),
    )
    .unwrap();
    let f = s.fetch_zone(&zone("GB"), now_de()).await;
    assert_eq!(
        labels(&f),
        [
            ("uk_carbon_intensity", "connect_error"),
            ("static", "success")
        ]
    );
}
