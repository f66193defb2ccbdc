//! Each provider against recorded real response bodies served by a local mock
//! server: the request shape (paths, query, auth headers) and the record.

#![allow(clippy::unwrap_used)] // Test code: a panic is a test failure.

mod common;

use carbon_kube_model::Signal;
use carbon_kube_signals::{Credentials, Outcome, Signals};
use common::*;
use wiremock::matchers::{header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn ok(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "application/json")
}

#[tokio::test]
async fn electricity_maps_latest_and_power_breakdown() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v3/carbon-intensity/latest"))
        .and(query_param("zone", "DE"))
        .and(header("auth-token", EM_KEY))
        .respond_with(ok(body(EM_LATEST_DE)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/power-breakdown/latest"))
        .and(query_param("zone", "DE"))
        .and(header("auth-token", EM_KEY))
        .respond_with(ok(body(EM_BREAKDOWN_DE)))
        .expect(1)
        .mount(&server)
        .await;
    // The recorded forecast is from 2023: every hour is past at this `now`.
    Mock::given(method("GET"))
        .and(path("/v3/carbon-intensity/forecast"))
        .respond_with(ok(body(EM_FORECAST_DE)))
        .expect(1)
        .mount(&server)
        .await;
    let s = signals(&server.uri(), &["DE=electricity_maps,static"]);
    let now = ts("2024-03-01T23:20:00Z");
    let f = s.fetch_zone(&zone("DE"), now).await;
    assert_eq!(labels(&f), [("electricity_maps", "success")]);
    let r = f.record.expect("record");
    assert_eq!(r.carbon_intensity.g_per_kwh(), 428.0);
    assert_eq!(r.timestamp, ts("2024-03-01T23:00:00Z"));
    assert_eq!(r.valid_until, Some(ts("2024-03-02T01:00:00Z")));
    assert_eq!(r.fetched_at, Some(now));
    assert_eq!(r.source.as_str(), "electricity_maps");
    assert_eq!(r.signal, Signal::Average);
    assert!(!r.estimated);
    assert_eq!(r.renewable_percentage, Some(33.0));
    assert!(r.forecast.is_none());
    assert!(
        f.attempts[0].warnings[0].contains("no hour after"),
        "{:?}",
        f.attempts[0].warnings
    );

    // Within the cache TTL the provider is not asked again.
    let again = s.fetch_zone(&zone("DE"), now + 60).await;
    assert_eq!(labels(&again), [("electricity_maps", "cache_hit")]);
    assert_eq!(again.record.unwrap().carbon_intensity.g_per_kwh(), 428.0);
}

#[tokio::test]
async fn electricity_maps_forecast_denied_means_no_forecast_not_an_outage() {
    let server = MockServer::start().await;
    Mock::given(path("/v3/carbon-intensity/latest"))
        .respond_with(ok(body(EM_LATEST_DUK)))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/v3/carbon-intensity/forecast"))
        .respond_with(ResponseTemplate::new(403).set_body_string("Access denied"))
        .expect(1)
        .mount(&server)
        .await;
    // The recorded breakdown is for DE, not US-CAR-DUK: dropped with a warning.
    Mock::given(path("/v3/power-breakdown/latest"))
        .respond_with(ok(body(EM_BREAKDOWN_DE)))
        .mount(&server)
        .await;
    let mut a = args(&server.uri(), &["default=electricity_maps"]);
    a.provider_cache_ttl = std::time::Duration::from_secs(60);
    let s = Signals::new(&a, all_credentials()).unwrap();
    let now = ts("2024-03-06T19:10:00Z");
    let f = s.fetch_zone(&zone("US-CAR-DUK"), now).await;
    assert_eq!(labels(&f), [("electricity_maps", "success")]);
    let r = f.record.unwrap();
    assert_eq!(r.carbon_intensity.g_per_kwh(), 216.0);
    assert_eq!(r.renewable_percentage, None);
    let w = f.attempts[0].warnings.join(" | ");
    assert!(
        w.contains("does not include carbon-intensity/forecast"),
        "{w}"
    );
    assert!(w.contains("answered for zone DE"), "{w}");
    // After the cache TTL the value is fetched again, but the forecast is not.
    let f2 = s.fetch_zone(&zone("US-CAR-DUK"), now + 120).await;
    assert_eq!(labels(&f2), [("electricity_maps", "success")]);
}

#[tokio::test]
async fn uk_national_current_forecast() {
    let server = MockServer::start().await;
    Mock::given(path("/intensity"))
        .respond_with(ok(body(UK_PT24H)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/intensity/2023-03-15T12:01Z/fw48h"))
        .respond_with(ok(body(UK_FW48H)))
        .expect(1)
        .mount(&server)
        .await;
    // `/generation` is not mocked (404): the record comes without renewable share.
    let s = Signals::new(&args(&server.uri(), &[]), Credentials::none()).unwrap();
    let now = ts("2023-03-15T12:01:00Z");
    let f = s.fetch_zone(&zone("GB"), now).await;
    assert_eq!(labels(&f), [("uk_carbon_intensity", "success")]);
    let r = f.record.unwrap();
    // The half hour 11:30–12:00 is the newest; its actual is not in yet.
    assert_eq!(r.carbon_intensity.g_per_kwh(), 228.0);
    assert_eq!(r.timestamp, ts("2023-03-15T11:30:00Z"));
    assert_eq!(r.valid_until, Some(ts("2023-03-15T12:30:00Z")));
    let fc = r.forecast.unwrap();
    assert_eq!(fc.start, ts("2023-03-15T12:00:00Z"));
    assert_eq!(fc.step_seconds, 3600);
    assert_eq!(fc.values.len(), 48);
    assert_eq!(fc.values[0].g_per_kwh(), 226.0);
    assert!(f.attempts[0].warnings[0].starts_with("no renewable share"));
}

#[tokio::test]
async fn uk_region_forecast_and_mix() {
    let server = MockServer::start().await;
    Mock::given(path(
        "/regional/intensity/2023-07-04T23:40Z/fw48h/regionid/14",
    ))
    .respond_with(ok(body(UK_REGIONAL_KT1)))
    .expect(1)
    .mount(&server)
    .await;
    let s = Signals::new(&args(&server.uri(), &[]), Credentials::none()).unwrap();
    let now = ts("2023-07-04T23:40:00Z");
    let f = s.fetch_zone(&zone("GB-SOUTH-EAST-ENGLAND"), now).await;
    assert_eq!(labels(&f), [("uk_carbon_intensity", "success")]);
    let r = f.record.unwrap();
    assert_eq!(r.carbon_intensity.g_per_kwh(), 121.0);
    assert_eq!(r.renewable_percentage, Some(16.5));
    let fc: Vec<f64> = r
        .forecast
        .unwrap()
        .values
        .iter()
        .map(|v| v.g_per_kwh())
        .collect();
    assert_eq!(fc, [121.0, 116.0]);

    // Region 14's body served for region 13 is refused, not published as London.
    Mock::given(path(
        "/regional/intensity/2023-07-04T23:40Z/fw48h/regionid/13",
    ))
    .respond_with(ok(body(UK_REGIONAL_KT1)))
    .expect(1)
    .mount(&server)
    .await;
    let f = s.fetch_zone(&zone("GB-LONDON"), now).await;
    assert_eq!(labels(&f), [("uk_carbon_intensity", "invalid_response")]);
    assert!(
        f.attempts[0]
            .error
            .as_ref()
            .unwrap()
            .contains("asked for region 13, got region 14 (South East England)")
    );
}

#[tokio::test]
async fn watttime_marginal_signal_in_grams_per_kwh() {
    let server = MockServer::start().await;
    Mock::given(path("/login"))
        .and(header_exists("authorization"))
        .respond_with(ok(r#"{"token": "wt-token-0001"}"#.to_owned()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v3/forecast"))
        .and(query_param("region", "CAISO_NORTH"))
        .and(query_param("signal_type", "co2_moer"))
        .and(header("authorization", "Bearer wt-token-0001"))
        .respond_with(ok(body(WT_FORECAST)))
        .expect(2)
        .mount(&server)
        .await;
    let mut a = args(&server.uri(), &["US-CAL-CISO=watttime"]);
    a.provider_cache_ttl = std::time::Duration::from_secs(1);
    let s = Signals::new(&a, all_credentials()).unwrap();
    let now = ts("2022-07-15T00:07:00Z");
    let f = s.fetch_zone(&zone("US-CA"), now).await;
    assert_eq!(labels(&f), [("watttime", "success")]);
    let r = f.record.unwrap();
    // 860 is not in the body; 870 lbs/MWh × 0.453592 = 394.6 g/kWh.
    assert_eq!(r.carbon_intensity.g_per_kwh(), 394.6);
    assert_eq!(r.signal, Signal::Marginal);
    assert_eq!(r.timestamp, ts("2022-07-15T00:05:00Z"));
    assert_eq!(r.valid_until, Some(ts("2022-07-15T00:15:00Z")));
    assert_eq!(r.forecast.unwrap().values.len(), 1);
    // A second fetch after the cache TTL reuses the login token.
    let f = s.fetch_zone(&zone("US-CA"), now + 2).await;
    assert_eq!(labels(&f), [("watttime", "success")]);
}

#[tokio::test]
async fn watttime_finds_the_region_by_location_and_refuses_a_percentile() {
    let server = MockServer::start().await;
    Mock::given(path("/login"))
        .respond_with(ok(r#"{"token": "wt-token-0002"}"#.to_owned()))
        .mount(&server)
        .await;
    Mock::given(path("/v3/region-from-loc"))
        .and(query_param("latitude", "32.78"))
        .and(query_param("longitude", "-96.8"))
        .respond_with(ok(body(WT_REGION)))
        .expect(1)
        .mount(&server)
        .await;
    // A signal-index body (units: percentile) is not an intensity.
    Mock::given(path("/v3/forecast"))
        .and(query_param("region", "PSCO"))
        .respond_with(ok(body(WT_SIGNAL_INDEX)))
        .mount(&server)
        .await;
    let s = signals(&server.uri(), &["US-TEX-ERCO=watttime,static"]);
    let now = ts("2024-06-18T18:42:00Z");
    let f = s.fetch_zone(&zone("US-TEX-ERCO"), now).await;
    assert_eq!(
        labels(&f),
        [("watttime", "invalid_value"), ("static", "success")]
    );
    assert!(f.attempts[0].error.as_ref().unwrap().contains("percentile"));
    // The region is remembered: the second fetch asks `/v3/forecast` only.
    let f = s.fetch_zone(&zone("US-TEX-ERCO"), now).await;
    assert_eq!(
        f.attempts[0].outcome,
        Outcome::Error(carbon_kube_signals::ErrorKind::InvalidValue)
    );
}

#[tokio::test]
async fn watttime_renews_an_expired_token_once() {
    let server = MockServer::start().await;
    Mock::given(path("/login"))
        .respond_with(ok(r#"{"token": "wt-token-0003"}"#.to_owned()))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/v3/forecast"))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v3/forecast"))
        .respond_with(ok(body(WT_FORECAST)))
        .expect(1)
        .mount(&server)
        .await;
    let s = signals(&server.uri(), &["US-CAL-CISO=watttime"]);
    let f = s
        .fetch_zone(&zone("US-CAL-CISO"), ts("2022-07-15T00:01:00Z"))
        .await;
    assert_eq!(labels(&f), [("watttime", "success")]);
}

#[tokio::test]
async fn noaa_weather_estimate() {
    let server = MockServer::start().await;
    Mock::given(path("/points/37.434,-121.955"))
        .and(header(
            "user-agent",
            "carbon-kube-tests/0 (test@example.org)",
        ))
        .and(header("api-key", NOAA_KEY))
        .respond_with(ok(body(NOAA_POINTS)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/gridpoints/TAE/58,65"))
        .and(header(
            "user-agent",
            "carbon-kube-tests/0 (test@example.org)",
        ))
        .respond_with(ok(body(NOAA_GRID)))
        .expect(2)
        .mount(&server)
        .await;
    let mut a = args(&server.uri(), &["US-CAL-CISO=noaa_estimate"]);
    a.provider_cache_ttl = std::time::Duration::from_secs(60);
    let s = Signals::new(&a, all_credentials()).unwrap();
    let now = ts("2022-02-04T03:30:00Z");
    let f = s.fetch_zone(&zone("US-CAL-CISO"), now).await;
    assert_eq!(labels(&f), [("noaa_estimate", "success")]);
    let r = f.record.unwrap();
    assert_eq!(r.source.as_str(), "noaa_estimate");
    assert!(r.estimated);
    assert_eq!(r.timestamp, ts("2022-02-04T03:00:00Z"));
    assert_eq!(r.valid_until, Some(now + 60));
    // Night in California: no solar, so the estimate is at or above the mean.
    let annual = carbon_kube_signals::zones::annual_average(&zone("US-CAL-CISO")).unwrap();
    assert!(r.carbon_intensity.g_per_kwh() >= annual.intensity * 0.8);
    assert!(r.renewable_percentage.is_some());
    let fc = r.forecast.unwrap();
    assert_eq!(fc.start, ts("2022-02-04T03:00:00Z"));
    assert!(fc.values.len() > 24, "{}", fc.values.len());
    // After the TTL the grid is fetched again, the point lookup is not.
    let f = s.fetch_zone(&zone("US-CAL-CISO"), now + 120).await;
    assert_eq!(labels(&f), [("noaa_estimate", "success")]);
}

#[tokio::test]
async fn open_meteo_weather_estimate() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/forecast"))
        .and(query_param("latitude", "50.088"))
        .and(query_param("longitude", "8.654"))
        .and(query_param("hourly", "cloud_cover,wind_speed_10m"))
        .and(query_param("timezone", "GMT"))
        .respond_with(ok(body(OPEN_METEO_DE)))
        .expect(1)
        .mount(&server)
        .await;
    let s = Signals::new(
        &args(&server.uri(), &["DE=open_meteo_estimate"]),
        Credentials::none(),
    )
    .unwrap();
    let now = ts("2023-08-01T12:10:00Z");
    let f = s.fetch_zone(&zone("DE"), now).await;
    assert_eq!(labels(&f), [("open_meteo_estimate", "success")]);
    let r = f.record.unwrap();
    assert!(r.estimated);
    assert_eq!(r.source.as_str(), "open_meteo_estimate");
    assert_eq!(r.timestamp, ts("2023-08-01T12:00:00Z"));
    let v = r.carbon_intensity.g_per_kwh();
    assert!((50.0..700.0).contains(&v), "{v}");
    assert_eq!(r.forecast.unwrap().values.len(), 72);
}

#[tokio::test]
async fn static_fallback_and_unknown_zones() {
    let s = Signals::new(
        &args("http://127.0.0.1:9", &["default=static"]),
        Credentials::none(),
    )
    .unwrap();
    let now = ts("2026-01-01T00:00:00Z");
    let f = s.fetch_zone(&zone("FR"), now).await;
    let r = f.record.unwrap();
    assert_eq!(r.source.as_str(), "static");
    assert!(r.estimated);
    assert_eq!(r.timestamp, now);
    assert_eq!(r.valid_until, Some(now + 300));
    assert!(r.carbon_intensity.g_per_kwh() < 100.0);
    assert!(r.renewable_percentage.is_some());

    let f = s.fetch_zone(&zone("XX-NOWHERE"), now).await;
    assert!(f.record.is_none());
    assert_eq!(labels(&f), [("static", "unsupported")]);
    assert!(
        f.error_summary()
            .unwrap()
            .contains("no annual average for zone XX-NOWHERE")
    );
}

#[tokio::test]
async fn default_chain_without_keys_skips_to_the_weather_estimate() {
    let server = MockServer::start().await;
    Mock::given(path("/points/37.434,-121.955"))
        .respond_with(ok(body(NOAA_POINTS)))
        .mount(&server)
        .await;
    Mock::given(path("/gridpoints/TAE/58,65"))
        .respond_with(ok(body(NOAA_GRID)))
        .mount(&server)
        .await;
    let s = Signals::new(&args(&server.uri(), &[]), Credentials::none()).unwrap();
    let f = s
        .fetch_zone(&zone("US-CAL-CISO"), ts("2022-02-04T03:30:00Z"))
        .await;
    assert_eq!(
        labels(&f),
        [
            ("electricity_maps", "skipped"),
            ("watttime", "skipped"),
            ("noaa_estimate", "success")
        ]
    );
    // Outside the US, NOAA is unsupported and Open-Meteo is next.
    let f = s.fetch_zone(&zone("FR"), ts("2022-02-04T03:30:00Z")).await;
    assert_eq!(
        labels(&f),
        [
            ("electricity_maps", "skipped"),
            ("watttime", "skipped"),
            ("noaa_estimate", "unsupported"),
            ("open_meteo_estimate", "not_found"),
            ("static", "success")
        ]
    );
}

#[tokio::test]
async fn many_zones_at_once() {
    let s = Signals::new(
        &args("http://127.0.0.1:9", &["default=static"]),
        Credentials::none(),
    )
    .unwrap();
    let zones = [zone("DE"), zone("FR"), zone("GB-NIR"), zone("SE-SE3")];
    let out = s.fetch_zones(&zones, ts("2026-01-01T00:00:00Z")).await;
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|f| f.record.is_some()));
    assert_eq!(out[1].zone, zones[1]);
}
