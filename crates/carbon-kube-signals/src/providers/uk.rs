//! UK Carbon Intensity API (NESO; free, no key). National (`GB`):
//! `/intensity` (current half hour, with the actual value once measured),
//! `/intensity/{from}/fw48h` (forecast) and `/generation` (mix, for the
//! renewable share). Regions (`GB-*` sub-zones):
//! `/regional/intensity/{from}/fw48h/regionid/{id}` (forecast values and mix
//! per half hour; regions have no actual values).

use carbon_kube_model::{ForecastPoint, Source, UnixSeconds, ZoneId, ZoneRecord};
use serde::Deserialize;
use url::Url;

use super::{Fetched, check_fresh, hourly_forecast, intensity, is_renewable_fuel};
use crate::error::{ErrorKind, ProviderError};
use crate::http::{Http, endpoint};
use crate::time::{format_minute_utc, parse_timestamp};
use crate::zones::{UkRegion, zone_info};

const PROVIDER: &str = Source::UK_CARBON_INTENSITY;
/// The API publishes half-hourly values.
const CADENCE_SECONDS: i64 = 1800;

/// `{"data": [...]}` of the national intensity endpoints.
#[derive(Debug, Deserialize)]
pub(crate) struct NationalBody {
    pub data: Vec<Period>,
}

/// One half hour.
#[derive(Debug, Deserialize)]
pub(crate) struct Period {
    pub from: String,
    pub to: String,
    pub intensity: Intensity,
    #[serde(default)]
    pub generationmix: Vec<Fuel>,
}

/// Intensity of one half hour, gCO2/kWh.
#[derive(Debug, Deserialize)]
pub(crate) struct Intensity {
    pub forecast: Option<f64>,
    #[serde(default)]
    pub actual: Option<f64>,
}

/// One fuel's share of generation.
#[derive(Debug, Deserialize)]
pub(crate) struct Fuel {
    pub fuel: String,
    pub perc: f64,
}

/// `{"data": {...}}` of `/generation`.
#[derive(Debug, Deserialize)]
pub(crate) struct GenerationBody {
    pub data: GenerationPeriod,
}

/// The generation mix of one half hour.
#[derive(Debug, Deserialize)]
pub(crate) struct GenerationPeriod {
    pub generationmix: Vec<Fuel>,
}

/// The regional endpoints answer `data` as one object or a one-element list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    /// A list.
    Many(Vec<T>),
    /// One object.
    One(T),
}

/// `{"data": ...}` of the regional endpoints.
#[derive(Debug, Deserialize)]
pub(crate) struct RegionalBody {
    pub data: OneOrMany<RegionBlock>,
}

/// One region with its half hours.
#[derive(Debug, Deserialize)]
pub(crate) struct RegionBlock {
    pub regionid: u8,
    #[serde(default)]
    pub shortname: Option<String>,
    pub data: Vec<Period>,
}

/// Renewable share (%) of a generation mix; `None` for an empty mix.
pub(crate) fn renewable_share(mix: &[Fuel]) -> Option<f64> {
    if mix.is_empty() {
        return None;
    }
    let sum: f64 = mix
        .iter()
        .filter(|f| is_renewable_fuel(&f.fuel))
        .map(|f| f.perc)
        .sum();
    (sum.is_finite()).then(|| sum.clamp(0.0, 100.0))
}

/// A parsed half hour.
struct Slot<'a> {
    from: UnixSeconds,
    to: UnixSeconds,
    period: &'a Period,
}

fn slots<'a>(step: &'static str, periods: &'a [Period]) -> Result<Vec<Slot<'a>>, ProviderError> {
    periods
        .iter()
        .map(|p| {
            let parse = |s: &str| {
                parse_timestamp(s)
                    .map_err(|m| ProviderError::new(PROVIDER, step, ErrorKind::InvalidResponse, m))
            };
            Ok(Slot {
                from: parse(&p.from)?,
                to: parse(&p.to)?,
                period: p,
            })
        })
        .collect()
}

/// The half hour containing `now`, else the latest one that started before it.
fn current<'a, 'b>(slots: &'b [Slot<'a>], now: UnixSeconds) -> Option<&'b Slot<'a>> {
    slots
        .iter()
        .find(|s| s.from <= now && now < s.to)
        .or_else(|| {
            slots
                .iter()
                .filter(|s| s.from <= now)
                .max_by_key(|s| s.from)
        })
}

fn forecast_points(
    step: &'static str,
    slots: &[Slot<'_>],
) -> Result<Vec<ForecastPoint>, ProviderError> {
    let mut out = Vec::new();
    for s in slots {
        if let Some(v) = s.period.intensity.forecast {
            out.push(ForecastPoint {
                time: s.from,
                intensity: intensity(PROVIDER, step, v)?,
            });
        }
    }
    Ok(out)
}

pub(crate) struct UkCarbonIntensity {
    http: Http,
    base: Url,
}

impl UkCarbonIntensity {
    pub(crate) fn new(http: Http, base: Url) -> Self {
        Self { http, base }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        step: &'static str,
        path: &[&str],
    ) -> Result<T, ProviderError> {
        let url = endpoint(&self.base, path);
        self.http
            .get_json(PROVIDER, step, None, |c| {
                c.get(url.clone()).header("accept", "application/json")
            })
            .await
    }

    pub(crate) async fn fetch(
        &self,
        zone: &ZoneId,
        now: UnixSeconds,
    ) -> Result<Fetched, ProviderError> {
        let region = zone_info(zone).and_then(|z| z.uk_region).ok_or_else(|| {
            ProviderError::unsupported(
                PROVIDER,
                format!("zone {zone} is not GB or a GB-* region of the UK Carbon Intensity API"),
            )
        })?;
        let from = format_minute_utc(now).ok_or_else(|| {
            ProviderError::new(
                PROVIDER,
                "request",
                ErrorKind::InvalidValue,
                "now is out of range",
            )
        })?;
        match region {
            UkRegion::National => self.national(now, &from).await,
            UkRegion::Region(id) => self.regional(id, now, &from).await,
        }
    }

    async fn national(&self, now: UnixSeconds, from: &str) -> Result<Fetched, ProviderError> {
        let step = "intensity";
        let body: NationalBody = self.get(step, &["intensity"]).await?;
        let parsed = slots(step, &body.data)?;
        let slot = current(&parsed, now).ok_or_else(|| {
            ProviderError::new(PROVIDER, step, ErrorKind::NoData, "no half hour up to now")
        })?;
        let value = slot
            .period
            .intensity
            .actual
            .or(slot.period.intensity.forecast)
            .ok_or_else(|| {
                ProviderError::new(
                    PROVIDER,
                    step,
                    ErrorKind::NoData,
                    "neither actual nor forecast",
                )
            })?;
        let valid_until = slot.from + 2 * CADENCE_SECONDS;
        check_fresh(PROVIDER, step, slot.from, valid_until, now)?;
        let mut record = ZoneRecord::new(
            intensity(PROVIDER, step, value)?,
            slot.from,
            Source::new(PROVIDER),
        );
        record.fetched_at = Some(now);
        record.valid_until = Some(valid_until);

        let mut warnings = Vec::new();
        let forecast_path = ["intensity", from, "fw48h"];
        let (forecast, generation) = tokio::join!(
            self.get::<NationalBody>("intensity/fw48h", &forecast_path),
            self.get::<GenerationBody>("generation", &["generation"]),
        );
        match forecast.and_then(|b| {
            let s = slots("intensity/fw48h", &b.data)?;
            forecast_points("intensity/fw48h", &s)
        }) {
            Ok(points) => record.forecast = hourly_forecast(&points, now),
            Err(e) => warnings.push(format!("no forecast: {e}")),
        }
        match generation {
            Ok(g) => record.renewable_percentage = renewable_share(&g.data.generationmix),
            Err(e) => warnings.push(format!("no renewable share: {e}")),
        }
        Ok(Fetched { record, warnings })
    }

    async fn regional(
        &self,
        id: u8,
        now: UnixSeconds,
        from: &str,
    ) -> Result<Fetched, ProviderError> {
        let step = "regional/intensity/fw48h";
        let id_text = id.to_string();
        let body: RegionalBody = self
            .get(
                step,
                &["regional", "intensity", from, "fw48h", "regionid", &id_text],
            )
            .await?;
        let block = match &body.data {
            OneOrMany::One(b) => Some(b),
            OneOrMany::Many(v) => v.first(),
        }
        .ok_or_else(|| {
            ProviderError::new(PROVIDER, step, ErrorKind::NoData, "no region in the answer")
        })?;
        if block.regionid != id {
            return Err(ProviderError::new(
                PROVIDER,
                step,
                ErrorKind::InvalidResponse,
                format!(
                    "asked for region {id}, got region {} ({})",
                    block.regionid,
                    block.shortname.as_deref().unwrap_or("unnamed")
                ),
            ));
        }
        let parsed = slots(step, &block.data)?;
        let slot = current(&parsed, now).ok_or_else(|| {
            ProviderError::new(PROVIDER, step, ErrorKind::NoData, "no half hour up to now")
        })?;
        let value = slot.period.intensity.forecast.ok_or_else(|| {
            ProviderError::new(PROVIDER, step, ErrorKind::NoData, "no forecast value")
        })?;
        let valid_until = slot.from + 2 * CADENCE_SECONDS;
        check_fresh(PROVIDER, step, slot.from, valid_until, now)?;
        let mut record = ZoneRecord::new(
            intensity(PROVIDER, step, value)?,
            slot.from,
            Source::new(PROVIDER),
        );
        record.fetched_at = Some(now);
        record.valid_until = Some(valid_until);
        record.renewable_percentage = renewable_share(&slot.period.generationmix);
        record.forecast = hourly_forecast(&forecast_points(step, &parsed)?, now);
        Ok(Fetched {
            record,
            warnings: Vec::new(),
        })
    }
}
