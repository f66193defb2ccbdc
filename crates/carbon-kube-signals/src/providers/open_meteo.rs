//! Open-Meteo weather estimate (anywhere). `GET /v1/forecast` with the
//! zone's weather point, `hourly=cloud_cover,wind_speed_10m`, km/h, GMT,
//! three days. The older names `cloudcover` / `windspeed_10m` (still answered
//! by the archive API) are accepted too, as are ISO local times with
//! `utc_offset_seconds` and unix times.

use std::collections::HashMap;

use carbon_kube_model::{Source, UnixSeconds, ZoneId};
use serde::Deserialize;
use url::Url;

use super::{Fetched, estimate_record};
use crate::error::{ErrorKind, ProviderError};
use crate::http::{Http, endpoint};
use crate::time::parse_civil;
use crate::weather::WeatherHour;
use crate::zones::model_params;

const PROVIDER: &str = Source::OPEN_METEO_ESTIMATE;

/// `/v1/forecast` body (fields used).
#[derive(Debug, Deserialize)]
pub(crate) struct ForecastBody {
    /// Offset of the local times in `hourly.time`, seconds (0 for GMT).
    #[serde(default)]
    pub utc_offset_seconds: i64,
    /// Units of the hourly variables.
    #[serde(default)]
    pub hourly_units: HashMap<String, String>,
    /// The hourly series.
    pub hourly: Hourly,
}

/// Hourly series: equal-length arrays.
#[derive(Debug, Deserialize)]
pub(crate) struct Hourly {
    /// Start of each hour: ISO local time or unix seconds.
    pub time: Vec<TimeValue>,
    /// Total cloud cover, %.
    #[serde(alias = "cloudcover")]
    pub cloud_cover: Vec<Option<f64>>,
    /// Wind speed at 10 m, in `hourly_units`.
    #[serde(alias = "windspeed_10m")]
    pub wind_speed_10m: Vec<Option<f64>>,
}

/// A time as Open-Meteo writes it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TimeValue {
    /// `timeformat=unixtime`.
    Unix(i64),
    /// ISO 8601 local time without offset.
    Iso(String),
}

/// Factor from an Open-Meteo wind unit to km/h.
fn wind_factor(unit: Option<&String>) -> Option<f64> {
    match unit.map_or("km/h", String::as_str) {
        "km/h" => Some(1.0),
        "m/s" => Some(3.6),
        "mp/h" | "mph" => Some(1.609_344),
        "kn" => Some(1.852),
        _ => None,
    }
}

/// The body's hours as model input. Hours with a missing value are skipped.
pub(crate) fn weather_hours(body: &ForecastBody) -> Result<Vec<WeatherHour>, String> {
    let h = &body.hourly;
    if h.cloud_cover.len() != h.time.len() || h.wind_speed_10m.len() != h.time.len() {
        return Err(format!(
            "hourly arrays differ in length (time {}, cloud cover {}, wind {})",
            h.time.len(),
            h.cloud_cover.len(),
            h.wind_speed_10m.len()
        ));
    }
    let unit = body
        .hourly_units
        .get("wind_speed_10m")
        .or_else(|| body.hourly_units.get("windspeed_10m"));
    let factor =
        wind_factor(unit).ok_or_else(|| format!("wind speed unit {unit:?} is not known"))?;
    let mut out = Vec::with_capacity(h.time.len());
    for ((t, c), w) in h.time.iter().zip(&h.cloud_cover).zip(&h.wind_speed_10m) {
        let time = match t {
            TimeValue::Unix(s) => *s,
            TimeValue::Iso(s) => parse_civil(s, body.utc_offset_seconds)?,
        };
        if let (Some(c), Some(w)) = (c, w) {
            out.push(WeatherHour {
                time,
                cloud_cover_pct: *c,
                wind_speed_10m_kmh: w * factor,
            });
        }
    }
    Ok(out)
}

/// Parses an Open-Meteo forecast or archive body (hourly `cloud_cover` /
/// `cloudcover` and `wind_speed_10m` / `windspeed_10m`) into model input.
pub fn parse_open_meteo_hours(json: &[u8]) -> Result<Vec<WeatherHour>, String> {
    let body: ForecastBody = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    weather_hours(&body)
}

pub(crate) struct OpenMeteo {
    http: Http,
    base: Url,
    ttl_seconds: i64,
}

impl OpenMeteo {
    pub(crate) fn new(http: Http, base: Url, ttl_seconds: i64) -> Self {
        Self {
            http,
            base,
            ttl_seconds,
        }
    }

    pub(crate) async fn fetch(
        &self,
        zone: &ZoneId,
        now: UnixSeconds,
    ) -> Result<Fetched, ProviderError> {
        let params = model_params(zone).ok_or_else(|| {
            ProviderError::unsupported(
                PROVIDER,
                format!("no weather-model parameters for zone {zone}"),
            )
        })?;
        let step = "forecast";
        let url = endpoint(&self.base, &["v1", "forecast"]);
        let query = [
            ("latitude", params.lat.to_string()),
            ("longitude", params.lon.to_string()),
            ("hourly", "cloud_cover,wind_speed_10m".to_owned()),
            ("wind_speed_unit", "kmh".to_owned()),
            ("timezone", "GMT".to_owned()),
            ("forecast_days", "3".to_owned()),
        ];
        let body: ForecastBody = self
            .http
            .get_json(PROVIDER, step, None, |c| c.get(url.clone()).query(&query))
            .await?;
        let hours = weather_hours(&body)
            .map_err(|m| ProviderError::new(PROVIDER, step, ErrorKind::InvalidResponse, m))?;
        estimate_record(PROVIDER, &params, &hours, now, self.ttl_seconds)
    }
}
