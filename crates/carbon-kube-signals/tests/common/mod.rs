//! Shared test helpers: the shared data folder, recorded API bodies, and
//! `SignalArgs` pointing every provider at one local mock server.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use carbon_kube_model::{UnixSeconds, ZoneId};
use carbon_kube_signals::{Credentials, Secret, SignalArgs, Signals, WattTimeAccount};

/// `../shared/data`, or `CARBON_KUBE_SHARED_DATA`.
pub fn shared_data() -> PathBuf {
    std::env::var_os("CARBON_KUBE_SHARED_DATA").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")),
        PathBuf::from,
    )
}

/// A file under the shared data folder, as bytes.
pub fn shared_bytes(rel: &str) -> Vec<u8> {
    let path = shared_data().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. The tests read recorded data from ../shared/data \
             (set CARBON_KUBE_SHARED_DATA to point elsewhere).",
            path.display()
        )
    })
}

/// A recorded API body from `shared/data/api_examples/`.
pub fn body(rel: &str) -> String {
    String::from_utf8(shared_bytes(&format!("api_examples/{rel}"))).expect("UTF-8 fixture")
}

pub const EM_LATEST_DE: &str = "electricitymaps_v3/green-elephpant_carbon-intensity_latest_DE.json";
pub const EM_LATEST_DUK: &str =
    "electricitymaps_v3/aioelectricitymaps_latest_carbon_intensity.json";
pub const EM_FORECAST_DE: &str =
    "electricitymaps_v3/green-elephpant_carbon-intensity_forecast_DE_2023-05-02.json";
pub const EM_BREAKDOWN_DE: &str =
    "electricitymaps_v3/aioelectricitymaps_latest_power_breakdown.json";
pub const UK_PT24H: &str = "uk_carbon_intensity/nmpowell_national_pt24h_2023-03-15T1201Z.json";
pub const UK_FW48H: &str = "uk_carbon_intensity/nmpowell_national_fw48h_2023-03-15T1201Z.json";
pub const UK_REGIONAL_KT1: &str =
    "uk_carbon_intensity/stuartharris_regional_postcode_KT1_TRIMMED.json";
pub const WT_FORECAST: &str = "watttime_v3/aiowatttime_forecasted_emissions_response.json";
pub const WT_REGION: &str = "watttime_v3/aiowatttime_grid_region_response.json";
pub const WT_SIGNAL_INDEX: &str = "watttime_v3/aiowatttime_realtime_emissions_response.json";
pub const NOAA_POINTS: &str = "noaa_weather_gov/pynws_points_30,-85.json";
pub const NOAA_GRID: &str = "noaa_weather_gov/pynws_gridpoints_TAE_58,65_raw.json";
pub const OPEN_METEO_DE: &str = "open_meteo/green-dcc_weather_DE-LU_2023.json";

/// Unix seconds of an RFC 3339 time.
pub fn ts(s: &str) -> UnixSeconds {
    s.parse::<jiff::Timestamp>().expect("time").as_second()
}

/// A zone id.
pub fn zone(s: &str) -> ZoneId {
    ZoneId::parse(s).expect("zone")
}

/// Arguments pointing every provider at `uri`, with short timeouts and quick
/// retries, and the given chains.
pub fn args(uri: &str, chains: &[&str]) -> SignalArgs {
    SignalArgs {
        electricity_maps_url: format!("{uri}/v3"),
        watttime_url: uri.to_owned(),
        uk_carbon_url: uri.to_owned(),
        noaa_url: uri.to_owned(),
        open_meteo_url: uri.to_owned(),
        chain: chains.iter().map(|s| (*s).to_owned()).collect(),
        provider_timeout: Duration::from_millis(500),
        provider_connect_timeout: Duration::from_millis(500),
        provider_max_attempts: 3,
        provider_retry_base_delay: Duration::from_millis(20),
        provider_retry_max_delay: Duration::from_millis(50),
        provider_max_retry_after: Duration::from_secs(5),
        provider_concurrency: 4,
        provider_cache_ttl: Duration::from_secs(300),
        user_agent: "carbon-kube-tests/0 (test@example.org)".to_owned(),
    }
}

pub const EM_KEY: &str = "em-test-key-0001";
pub const WT_USER: &str = "wt-user-0001";
pub const WT_PASSWORD: &str = "wt-password-0001";
pub const NOAA_KEY: &str = "noaa-test-key-0001";

/// Credentials for every provider.
pub fn all_credentials() -> Credentials {
    Credentials {
        electricity_maps_api_key: Some(Secret::new(EM_KEY)),
        watttime: Some(WattTimeAccount {
            username: Secret::new(WT_USER),
            password: Secret::new(WT_PASSWORD),
        }),
        noaa_api_key: Some(Secret::new(NOAA_KEY)),
    }
}

/// Signals against `uri` with every credential and the given chains.
pub fn signals(uri: &str, chains: &[&str]) -> Signals {
    Signals::new(&args(uri, chains), all_credentials()).expect("signals")
}

/// The outcome labels of a fetch, in chain order.
pub fn labels(f: &carbon_kube_signals::ZoneFetch) -> Vec<(&'static str, &'static str)> {
    f.attempts
        .iter()
        .map(|a| (a.provider, a.outcome.as_label()))
        .collect()
}
