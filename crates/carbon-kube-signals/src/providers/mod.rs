//! One module per provider. Each turns a zone and `now` into a
//! [`ZoneRecord`] or a typed [`ProviderError`] naming the failed step.

use carbon_kube_model::{
    CarbonIntensity, Forecast, ForecastPoint, Source, UnixSeconds, ZoneRecord,
};

use crate::error::{ErrorKind, ProviderError};
use crate::time::hour_floor;
use crate::weather::{ModelParams, WeatherHour};

pub(crate) mod electricity_maps;
pub(crate) mod noaa;
pub(crate) mod open_meteo;
pub(crate) mod static_avg;
pub(crate) mod uk;
pub(crate) mod watttime;

/// A provider's answer: the record and any non-fatal problems.
#[derive(Clone, Debug)]
pub(crate) struct Fetched {
    pub record: ZoneRecord,
    pub warnings: Vec<String>,
}

/// Validates an intensity from a provider.
pub(crate) fn intensity(
    provider: &'static str,
    step: &'static str,
    g_per_kwh: f64,
) -> Result<CarbonIntensity, ProviderError> {
    CarbonIntensity::new(g_per_kwh)
        .map_err(|e| ProviderError::new(provider, step, ErrorKind::InvalidValue, e))
}

/// Checks a measurement time against `now`: not more than an hour in the
/// future (clock skew), and `valid_until` not already past.
pub(crate) fn check_fresh(
    provider: &'static str,
    step: &'static str,
    measured_at: UnixSeconds,
    valid_until: UnixSeconds,
    now: UnixSeconds,
) -> Result<(), ProviderError> {
    if measured_at > now + 3600 {
        return Err(ProviderError::new(
            provider,
            step,
            ErrorKind::InvalidValue,
            format!(
                "value is for {}, more than an hour after now ({})",
                show_time(measured_at),
                show_time(now)
            ),
        ));
    }
    if valid_until < now {
        return Err(ProviderError::new(
            provider,
            step,
            ErrorKind::Stale,
            format!(
                "newest value is for {}, stale since {}",
                show_time(measured_at),
                show_time(valid_until)
            ),
        ));
    }
    Ok(())
}

/// A unix time as RFC 3339, for messages.
pub(crate) fn show_time(t: UnixSeconds) -> String {
    jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |ts| ts.to_string())
}

/// Builds an hourly forecast from points at or after the current hour.
pub(crate) fn hourly_forecast(points: &[ForecastPoint], now: UnixSeconds) -> Option<Forecast> {
    let from = hour_floor(now);
    let future: Vec<ForecastPoint> = points.iter().copied().filter(|p| p.time >= from).collect();
    Forecast::from_points(&future, 3600)
}

/// Renewable fuels in provider generation mixes (the Electricity Maps
/// definition: biomass, geothermal, hydro, solar, wind).
pub(crate) fn is_renewable_fuel(fuel: &str) -> bool {
    matches!(
        fuel.to_ascii_lowercase().as_str(),
        "biomass" | "geothermal" | "hydro" | "solar" | "wind"
    )
}

/// Turns a weather series into an estimate record: the hour containing `now`
/// is the current value, later hours the forecast.
pub(crate) fn estimate_record(
    provider: &'static str,
    params: &ModelParams,
    hours: &[WeatherHour],
    now: UnixSeconds,
    ttl_seconds: i64,
) -> Result<Fetched, ProviderError> {
    let current_hour = hour_floor(now);
    let estimates: Vec<_> = hours.iter().map(|w| params.estimate(w)).collect();
    let current = estimates
        .iter()
        .find(|e| e.time == current_hour)
        .ok_or_else(|| {
            let span = match (
                hours.iter().map(|h| h.time).min(),
                hours.iter().map(|h| h.time).max(),
            ) {
                (Some(a), Some(b)) => format!("{} to {}", show_time(a), show_time(b)),
                _ => "nothing".to_owned(),
            };
            ProviderError::new(
                provider,
                "estimate",
                ErrorKind::NoData,
                format!(
                    "the weather series covers {span}, not the hour of {}",
                    show_time(now)
                ),
            )
        })?;
    let ci = intensity(
        provider,
        "estimate",
        (current.intensity * 10.0).round() / 10.0,
    )?;
    let points: Vec<ForecastPoint> = estimates
        .iter()
        .filter_map(|e| {
            CarbonIntensity::new(e.intensity)
                .ok()
                .map(|intensity| ForecastPoint {
                    time: e.time,
                    intensity,
                })
        })
        .collect();
    let mut record = ZoneRecord::new(ci, current_hour, Source::new(provider));
    record.estimated = true;
    record.renewable_percentage = current.renewable_pct.map(|p| (p * 10.0).round() / 10.0);
    record.fetched_at = Some(now);
    record.valid_until = Some(now.saturating_add(ttl_seconds));
    record.forecast = hourly_forecast(&points, now);
    Ok(Fetched {
        record,
        warnings: Vec::new(),
    })
}
