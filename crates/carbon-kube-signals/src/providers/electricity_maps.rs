//! Electricity Maps v3: `carbon-intensity/latest` (the value),
//! `carbon-intensity/forecast` (paid tier; 401/403 there means "no
//! forecast", remembered for six hours), `power-breakdown/latest` (renewable
//! share). Authenticated with the `auth-token` header.

use std::time::Duration;

use carbon_kube_model::{ForecastPoint, Source, UnixSeconds, ZoneId, ZoneRecord};
use moka::future::Cache;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use url::Url;

use super::{Fetched, check_fresh, hourly_forecast, intensity, show_time};
use crate::credentials::Secret;
use crate::error::{ErrorKind, ProviderError};
use crate::http::{Http, endpoint};
use crate::time::parse_timestamp;

const PROVIDER: &str = Source::ELECTRICITY_MAPS;
/// Electricity Maps publishes hourly values.
const CADENCE_SECONDS: i64 = 3600;
/// After a 401/403 on the forecast endpoint, do not ask again for this long.
const FORECAST_DENIED_FOR: Duration = Duration::from_secs(6 * 3600);

/// `GET /carbon-intensity/latest` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Latest {
    pub zone: Option<String>,
    pub carbon_intensity: Option<f64>,
    pub datetime: String,
}

/// `GET /carbon-intensity/forecast` body.
#[derive(Debug, Deserialize)]
pub(crate) struct ForecastBody {
    pub forecast: Vec<ForecastEntry>,
}

/// One forecast hour.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ForecastEntry {
    pub carbon_intensity: Option<f64>,
    pub datetime: String,
}

/// `GET /power-breakdown/latest` body (the fields used).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PowerBreakdown {
    pub zone: Option<String>,
    pub renewable_percentage: Option<f64>,
}

/// Forecast points of a forecast body; entries without a value are skipped.
pub(crate) fn forecast_points(body: &ForecastBody) -> Result<Vec<ForecastPoint>, ProviderError> {
    let mut out = Vec::with_capacity(body.forecast.len());
    for e in &body.forecast {
        let Some(v) = e.carbon_intensity else {
            continue;
        };
        let time = parse_timestamp(&e.datetime).map_err(|m| {
            ProviderError::new(
                PROVIDER,
                "carbon-intensity/forecast",
                ErrorKind::InvalidResponse,
                m,
            )
        })?;
        out.push(ForecastPoint {
            time,
            intensity: intensity(PROVIDER, "carbon-intensity/forecast", v)?,
        });
    }
    Ok(out)
}

pub(crate) struct ElectricityMaps {
    http: Http,
    base: Url,
    key: Option<Secret>,
    forecast_denied: Cache<ZoneId, ()>,
}

impl ElectricityMaps {
    pub(crate) fn new(http: Http, base: Url, key: Option<Secret>) -> Self {
        Self {
            http,
            base,
            key,
            forecast_denied: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(FORECAST_DENIED_FOR)
                .build(),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        step: &'static str,
        path: &[&str],
        zone: &ZoneId,
        key: &Secret,
    ) -> Result<T, ProviderError> {
        let url = endpoint(&self.base, path);
        let token = HeaderValue::from_str(key.expose()).map(|mut v| {
            v.set_sensitive(true);
            v
        });
        let Ok(token) = token else {
            return Err(ProviderError::new(
                PROVIDER,
                step,
                ErrorKind::MissingCredentials,
                "ELECTRICITY_MAPS_API_KEY is not a valid header value",
            ));
        };
        self.http
            .get_json(PROVIDER, step, None, |c| {
                c.get(url.clone())
                    .query(&[("zone", zone.as_str())])
                    .header("auth-token", token.clone())
            })
            .await
    }

    pub(crate) async fn fetch(
        &self,
        zone: &ZoneId,
        now: UnixSeconds,
    ) -> Result<Fetched, ProviderError> {
        let Some(key) = &self.key else {
            return Err(ProviderError::new(
                PROVIDER,
                "credentials",
                ErrorKind::MissingCredentials,
                "ELECTRICITY_MAPS_API_KEY is not set",
            ));
        };
        let step = "carbon-intensity/latest";
        let latest: Latest = self
            .get(step, &["carbon-intensity", "latest"], zone, key)
            .await
            .map_err(|e| match e.kind {
                ErrorKind::NotFound => ProviderError {
                    kind: ErrorKind::UnsupportedZone,
                    detail: format!("Electricity Maps does not know zone {zone} (HTTP 404)"),
                    ..e
                },
                _ => e,
            })?;
        if let Some(z) = &latest.zone
            && z != zone.as_str()
        {
            return Err(ProviderError::new(
                PROVIDER,
                step,
                ErrorKind::InvalidResponse,
                format!("asked for zone {zone}, got zone {z}"),
            ));
        }
        let value = latest.carbon_intensity.ok_or_else(|| {
            ProviderError::new(
                PROVIDER,
                step,
                ErrorKind::NoData,
                format!("no value for zone {zone}"),
            )
        })?;
        let measured_at = parse_timestamp(&latest.datetime)
            .map_err(|m| ProviderError::new(PROVIDER, step, ErrorKind::InvalidResponse, m))?;
        let valid_until = measured_at + 2 * CADENCE_SECONDS;
        check_fresh(PROVIDER, step, measured_at, valid_until, now)?;
        let mut record = ZoneRecord::new(
            intensity(PROVIDER, step, value)?,
            measured_at,
            Source::new(PROVIDER),
        );
        record.fetched_at = Some(now);
        record.valid_until = Some(valid_until);

        let mut warnings = Vec::new();
        let (forecast, breakdown) = tokio::join!(
            self.forecast(zone, key, now),
            self.get::<PowerBreakdown>(
                "power-breakdown/latest",
                &["power-breakdown", "latest"],
                zone,
                key
            )
        );
        match forecast {
            Ok(Some(f)) => record.forecast = Some(f),
            Ok(None) => {}
            Err(w) => warnings.push(w),
        }
        match breakdown {
            Ok(b) if b.zone.as_deref().is_some_and(|z| z != zone.as_str()) => {
                warnings.push(format!(
                    "power-breakdown/latest answered for zone {}, not {zone}; no renewable share",
                    b.zone.unwrap_or_default()
                ));
            }
            Ok(b) => match b.renewable_percentage {
                Some(p) if p.is_finite() && (0.0..=100.0).contains(&p) => {
                    record.renewable_percentage = Some(p);
                }
                Some(p) => warnings.push(format!(
                    "power-breakdown/latest: renewablePercentage {p} is not a percentage"
                )),
                None => {}
            },
            Err(e) => warnings.push(format!("no renewable share: {e}")),
        }
        Ok(Fetched { record, warnings })
    }

    /// The forecast, `Ok(None)` when the plan has none, `Err(warning)` on failure.
    async fn forecast(
        &self,
        zone: &ZoneId,
        key: &Secret,
        now: UnixSeconds,
    ) -> Result<Option<carbon_kube_model::Forecast>, String> {
        if self.forecast_denied.contains_key(zone) {
            return Ok(None);
        }
        let body: Result<ForecastBody, _> = self
            .get(
                "carbon-intensity/forecast",
                &["carbon-intensity", "forecast"],
                zone,
                key,
            )
            .await;
        match body {
            Ok(body) => {
                let points = forecast_points(&body).map_err(|e| e.to_string())?;
                match hourly_forecast(&points, now) {
                    Some(f) => Ok(Some(f)),
                    None if points.is_empty() => Ok(None),
                    None => Err(format!(
                        "carbon-intensity/forecast holds no hour after {}; forecast dropped",
                        show_time(now)
                    )),
                }
            }
            Err(e) if matches!(e.kind, ErrorKind::Unauthorized | ErrorKind::Forbidden) => {
                self.forecast_denied.insert(zone.clone(), ()).await;
                Err(format!(
                    "no forecast: the API key's plan does not include carbon-intensity/forecast ({}); not asked again for {}h",
                    e.kind,
                    FORECAST_DENIED_FOR.as_secs() / 3600
                ))
            }
            Err(e) => Err(format!("no forecast: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_recorded_forecast() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/api_examples/electricitymaps_v3/green-elephpant_carbon-intensity_forecast_DE_2023-05-02.json"
        );
        let dir = std::env::var("CARBON_KUBE_SHARED_DATA").ok();
        let path = dir.map_or_else(
            || path.to_owned(),
            |d| format!("{d}/api_examples/electricitymaps_v3/green-elephpant_carbon-intensity_forecast_DE_2023-05-02.json"),
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let body: ForecastBody = serde_json::from_str(&text).unwrap();
        let points = forecast_points(&body).unwrap();
        assert_eq!(points.len(), 48);
        assert_eq!(
            points[0].time,
            parse_timestamp("2023-05-02T20:00:00Z").unwrap()
        );
        assert_eq!(points[0].intensity.g_per_kwh(), 557.0);
        let f = hourly_forecast(&points, parse_timestamp("2023-05-02T20:10:00Z").unwrap()).unwrap();
        assert_eq!(f.values.len(), 48);
        // A `now` after the last hour leaves no forecast.
        assert!(
            hourly_forecast(&points, parse_timestamp("2023-05-05T00:00:00Z").unwrap()).is_none()
        );
    }
}
