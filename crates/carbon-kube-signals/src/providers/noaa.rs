//! NOAA / National Weather Service weather estimate (United States only).
//! `GET /points/{lat},{lon}` finds the forecast grid (remembered per zone),
//! `GET /gridpoints/{office}/{x},{y}` gives the raw grid forecast, of which
//! `skyCover` (%) and `windSpeed` (km/h) feed the weather model. NOAA asks
//! for a `User-Agent` naming the application; an optional key goes in the
//! `API-Key` header.

use std::collections::BTreeMap;

use carbon_kube_model::{Source, UnixSeconds, ZoneId};
use moka::future::Cache;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use url::Url;

use super::{Fetched, estimate_record};
use crate::credentials::Secret;
use crate::error::{ErrorKind, ProviderError};
use crate::http::{Http, endpoint};
use crate::time::{hour_floor, parse_interval};
use crate::weather::WeatherHour;
use crate::zones::{model_params, zone_info};

const PROVIDER: &str = Source::NOAA_ESTIMATE;

/// `/points` body (fields used).
#[derive(Debug, Deserialize)]
pub(crate) struct PointsBody {
    pub properties: PointProperties,
}

/// The forecast grid of a point.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PointProperties {
    pub grid_id: String,
    pub grid_x: i64,
    pub grid_y: i64,
}

/// `/gridpoints/{office}/{x},{y}` body (layers used).
#[derive(Debug, Deserialize)]
pub(crate) struct GridBody {
    pub properties: GridProperties,
}

/// The layers the model needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GridProperties {
    pub sky_cover: Layer,
    pub wind_speed: Layer,
}

/// One grid layer: a unit and values over ISO 8601 intervals.
#[derive(Debug, Deserialize)]
pub(crate) struct Layer {
    #[serde(default)]
    pub uom: Option<String>,
    pub values: Vec<LayerValue>,
}

/// A value valid over an interval (`2022-02-03T21:00:00+00:00/PT2H`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LayerValue {
    pub valid_time: String,
    pub value: Option<f64>,
}

/// The most hours a layer may expand to, summed over its values. A real
/// grid covers about a week (some 180 hours per layer); without a cap, a
/// body of many long intervals (`.../P399D`) would expand to millions of
/// hours from a few kilobytes.
pub(crate) const MAX_LAYER_HOURS: usize = 24 * 400;

/// Expands a layer to one value per hour (unit-converted by `factor`).
fn hourly(
    layer: &Layer,
    factor: f64,
    step: &'static str,
) -> Result<BTreeMap<UnixSeconds, f64>, ProviderError> {
    let mut out = BTreeMap::new();
    let mut expanded = 0usize;
    for v in &layer.values {
        let Some(value) = v.value else { continue };
        let (start, seconds) = parse_interval(&v.valid_time)
            .map_err(|m| ProviderError::new(PROVIDER, step, ErrorKind::InvalidResponse, m))?;
        let end = start + seconds;
        let mut h = hour_floor(start);
        while h < end {
            expanded += 1;
            if expanded > MAX_LAYER_HOURS {
                return Err(ProviderError::new(
                    PROVIDER,
                    step,
                    ErrorKind::InvalidResponse,
                    format!(
                        "a layer's validTime intervals add up to more than {MAX_LAYER_HOURS} hours"
                    ),
                ));
            }
            out.insert(h, value * factor);
            h += 3600;
        }
    }
    Ok(out)
}

/// Factor from a NOAA wind-speed unit to km/h.
fn wind_factor(uom: Option<&str>) -> Option<f64> {
    match uom.unwrap_or("wmoUnit:km_h-1") {
        "wmoUnit:km_h-1" => Some(1.0),
        "wmoUnit:m_s-1" => Some(3.6),
        "wmoUnit:kn" => Some(1.852),
        _ => None,
    }
}

/// Joins `skyCover` and `windSpeed` into hourly weather.
pub(crate) fn weather_hours(grid: &GridProperties) -> Result<Vec<WeatherHour>, ProviderError> {
    let step = "gridpoints";
    let factor = wind_factor(grid.wind_speed.uom.as_deref()).ok_or_else(|| {
        ProviderError::new(
            PROVIDER,
            step,
            ErrorKind::InvalidValue,
            format!("windSpeed unit {:?} is not known", grid.wind_speed.uom),
        )
    })?;
    let sky = hourly(&grid.sky_cover, 1.0, step)?;
    let wind = hourly(&grid.wind_speed, factor, step)?;
    Ok(sky
        .iter()
        .filter_map(|(t, c)| {
            wind.get(t).map(|w| WeatherHour {
                time: *t,
                cloud_cover_pct: *c,
                wind_speed_10m_kmh: *w,
            })
        })
        .collect())
}

/// `lat,lon` as NOAA wants it: at most four decimals, no trailing zeros.
pub(crate) fn format_point(lat: f64, lon: f64) -> String {
    let f = |x: f64| {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_owned()
        } else {
            s.to_owned()
        }
    };
    format!("{},{}", f(lat), f(lon))
}

pub(crate) struct Noaa {
    http: Http,
    base: Url,
    key: Option<Secret>,
    grids: Cache<ZoneId, (String, i64, i64)>,
    ttl_seconds: i64,
}

impl Noaa {
    pub(crate) fn new(http: Http, base: Url, key: Option<Secret>, ttl_seconds: i64) -> Self {
        Self {
            http,
            base,
            key,
            grids: Cache::builder().max_capacity(10_000).build(),
            ttl_seconds,
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        step: &'static str,
        path: &[&str],
    ) -> Result<T, ProviderError> {
        let url = endpoint(&self.base, path);
        let key = self
            .key
            .as_ref()
            .and_then(|k| HeaderValue::from_str(k.expose()).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        self.http
            .get_json(PROVIDER, step, None, |c| {
                let req = c.get(url.clone()).header("accept", "application/geo+json");
                match &key {
                    Some(k) => req.header("API-Key", k.clone()),
                    None => req,
                }
            })
            .await
    }

    pub(crate) async fn fetch(
        &self,
        zone: &ZoneId,
        now: UnixSeconds,
    ) -> Result<Fetched, ProviderError> {
        let info = zone_info(zone).filter(|i| i.in_us).ok_or_else(|| {
            ProviderError::unsupported(PROVIDER, format!("zone {zone} is not a known US zone"))
        })?;
        let params = model_params(zone).ok_or_else(|| {
            ProviderError::unsupported(
                PROVIDER,
                format!("no weather-model parameters for zone {zone}"),
            )
        })?;
        let grid = match self.grids.get(zone).await {
            Some(g) => g,
            None => {
                let point = format_point(info.lat, info.lon);
                let body: PointsBody =
                    self.get("points", &["points", &point])
                        .await
                        .map_err(|e| match e.kind {
                            ErrorKind::NotFound => ProviderError {
                                kind: ErrorKind::UnsupportedZone,
                                detail: format!(
                                    "NOAA has no forecast grid at {point} (zone {zone})"
                                ),
                                ..e
                            },
                            _ => e,
                        })?;
                let p = body.properties;
                let ok_id =
                    !p.grid_id.is_empty() && p.grid_id.chars().all(|c| c.is_ascii_alphanumeric());
                if !ok_id {
                    return Err(ProviderError::new(
                        PROVIDER,
                        "points",
                        ErrorKind::InvalidResponse,
                        format!("gridId {:?} is not an office id", p.grid_id),
                    ));
                }
                let g = (p.grid_id, p.grid_x, p.grid_y);
                self.grids.insert(zone.clone(), g.clone()).await;
                g
            }
        };
        let xy = format!("{},{}", grid.1, grid.2);
        let body: GridBody = self
            .get("gridpoints", &["gridpoints", &grid.0, &xy])
            .await?;
        let hours = weather_hours(&body.properties)?;
        estimate_record(PROVIDER, &params, &hours, now, self.ttl_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_formatted_like_noaa_wants() {
        assert_eq!(format_point(30.0, -85.0), "30,-85");
        assert_eq!(format_point(37.434, -121.955), "37.434,-121.955");
        assert_eq!(format_point(37.434_093, -121.954_79), "37.4341,-121.9548");
    }

    #[test]
    fn layers_expand_to_hours() {
        let layer = Layer {
            uom: Some("wmoUnit:km_h-1".into()),
            values: vec![
                LayerValue {
                    valid_time: "2022-02-03T21:00:00+00:00/PT2H".into(),
                    value: Some(20.0),
                },
                LayerValue {
                    valid_time: "2022-02-03T23:00:00+00:00/PT1H".into(),
                    value: None,
                },
            ],
        };
        let h = hourly(&layer, 1.0, "t").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.values().copied().collect::<Vec<_>>(), [20.0, 20.0]);
    }

    /// Issue 18: a few kilobytes of long intervals expanded to millions of
    /// hourly map entries (gigabytes). The expansion is now capped.
    #[test]
    fn long_intervals_are_refused_not_expanded() {
        let layer = Layer {
            uom: None,
            values: (0..2_000)
                .map(|i| LayerValue {
                    valid_time: format!("{}-01-01T00:00:00+00:00/P399D", 2000 + i),
                    value: Some(1.0),
                })
                .collect(),
        };
        let e = hourly(&layer, 1.0, "gridpoints").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidResponse);
        assert!(e.detail.contains("more than 9600 hours"), "{e}");
    }
}
