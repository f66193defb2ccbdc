//! One zone's carbon record: the current intensity, where it came from, how
//! long it is good for, and a bounded forecast.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{CarbonIntensity, UnixSeconds};

/// The most forecast values a record keeps: three days at one-hour steps.
/// Bounds the snapshot size (300 zones stay far below the 1 MiB ConfigMap limit).
pub const MAX_FORECAST_POINTS: usize = 72;

/// Which provider produced a record. Known names are constants; unknown names
/// from newer pollers are kept as they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Source(pub String);

impl Source {
    /// Electricity Maps v3 API.
    pub const ELECTRICITY_MAPS: &str = "electricity_maps";
    /// WattTime v3 API (marginal signal).
    pub const WATTTIME: &str = "watttime";
    /// UK Carbon Intensity API.
    pub const UK_CARBON_INTENSITY: &str = "uk_carbon_intensity";
    /// Estimate from NOAA weather (United States).
    pub const NOAA_ESTIMATE: &str = "noaa_estimate";
    /// Estimate from Open-Meteo weather (elsewhere).
    pub const OPEN_METEO_ESTIMATE: &str = "open_meteo_estimate";
    /// Static annual average.
    pub const STATIC: &str = "static";

    /// A source from its name.
    pub fn new(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The source's name as published.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an intensity is a grid average or a marginal (operating margin) rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Average intensity of the consumed mix (Electricity Maps, UK).
    #[default]
    Average,
    /// Marginal emission rate of the next kWh (WattTime).
    Marginal,
}

/// How much a record can be trusted, for deciding whether a new record may
/// replace an old one. Higher is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quality {
    /// A static annual average.
    Static,
    /// Estimated from weather.
    Estimated,
    /// Measured or published by a grid data provider.
    Measured,
}

/// A forecast on a regular grid: `values[i]` is the intensity for the interval
/// starting at `start + i * step_seconds`. Stored compactly so hundreds of zones
/// fit in one ConfigMap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forecast {
    /// Start of the first interval.
    pub start: UnixSeconds,
    /// Length of each interval in seconds.
    pub step_seconds: u32,
    /// Intensity per interval, g/kWh.
    pub values: Vec<CarbonIntensity>,
}

/// One forecast interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForecastPoint {
    /// Start of the interval.
    pub time: UnixSeconds,
    /// Forecast intensity during the interval.
    pub intensity: CarbonIntensity,
}

impl Forecast {
    /// Builds a forecast on a grid of `step_seconds` from irregular points
    /// (time, g/kWh), averaging points that share an interval, carrying the last
    /// value over gaps, and keeping at most [`MAX_FORECAST_POINTS`] intervals.
    /// Returns `None` when there are no points or the step is zero.
    pub fn from_points(points: &[ForecastPoint], step_seconds: u32) -> Option<Self> {
        if step_seconds == 0 {
            return None;
        }
        let step = i64::from(step_seconds);
        let mut sorted: Vec<ForecastPoint> = points.to_vec();
        sorted.sort_by_key(|p| p.time);
        let first = sorted.first()?.time;
        let start = first.div_euclid(step) * step;
        let mut sums = vec![(0.0f64, 0u32); MAX_FORECAST_POINTS];
        for p in &sorted {
            let slot = usize::try_from((p.time - start) / step).ok()?;
            if slot >= MAX_FORECAST_POINTS {
                break;
            }
            sums[slot].0 += p.intensity.g_per_kwh();
            sums[slot].1 += 1;
        }
        let last = sums.iter().rposition(|(_, n)| *n > 0)?;
        let mut values = Vec::with_capacity(last + 1);
        let mut carry = 0.0;
        for (sum, n) in &sums[..=last] {
            if *n > 0 {
                carry = round1(sum / f64::from(*n));
            }
            values.push(CarbonIntensity::new(carry).ok()?);
        }
        Some(Self {
            start,
            step_seconds,
            values,
        })
    }

    /// The intervals as points.
    pub fn points(&self) -> impl Iterator<Item = ForecastPoint> + '_ {
        let step = i64::from(self.step_seconds);
        self.values
            .iter()
            .enumerate()
            .map(move |(i, v)| ForecastPoint {
                time: self.start + step * i64::try_from(i).unwrap_or(i64::MAX / 2),
                intensity: *v,
            })
    }

    /// End of the last interval.
    pub fn end(&self) -> UnixSeconds {
        self.start + i64::from(self.step_seconds) * i64::try_from(self.values.len()).unwrap_or(0)
    }

    /// The forecast intensity at `t`, if `t` lies inside the forecast.
    pub fn value_at(&self, t: UnixSeconds) -> Option<CarbonIntensity> {
        if t < self.start || self.step_seconds == 0 {
            return None;
        }
        let idx = usize::try_from((t - self.start) / i64::from(self.step_seconds)).ok()?;
        self.values.get(idx).copied()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.step_seconds == 0 {
            return Err("step_seconds must be positive".into());
        }
        if self.values.len() > MAX_FORECAST_POINTS {
            return Err(format!(
                "has {} values, more than the maximum of {MAX_FORECAST_POINTS}",
                self.values.len()
            ));
        }
        Ok(())
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// One zone's record in the snapshot. The first four fields are the original
/// Carbon-Kube format; every other field is optional so old snapshots parse
/// and old readers ignore what they do not know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneRecord {
    /// Current intensity, gCO2eq/kWh.
    pub carbon_intensity: CarbonIntensity,
    /// When the value was measured (or is valid for).
    pub timestamp: UnixSeconds,
    /// Which provider produced it.
    pub source: Source,
    /// Share of renewables in the mix, percent, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewable_percentage: Option<f64>,
    /// Average or marginal signal.
    #[serde(default)]
    pub signal: Signal,
    /// True when the value is a fallback estimate (weather model or static).
    #[serde(default)]
    pub estimated: bool,
    /// When the poller fetched it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<UnixSeconds>,
    /// After this time the value is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<UnixSeconds>,
    /// Forecast, when the provider gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// The last poll's error for this zone, when the value was kept from an
    /// earlier poll because every provider failed. Never contains secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl ZoneRecord {
    /// A record with only the required fields set.
    pub fn new(intensity: CarbonIntensity, timestamp: UnixSeconds, source: Source) -> Self {
        Self {
            carbon_intensity: intensity,
            timestamp,
            source,
            renewable_percentage: None,
            signal: Signal::Average,
            estimated: false,
            fetched_at: None,
            valid_until: None,
            forecast: None,
            last_error: None,
        }
    }

    /// How trustworthy the record is.
    pub fn quality(&self) -> Quality {
        if self.source.as_str() == Source::STATIC {
            Quality::Static
        } else if self.estimated {
            Quality::Estimated
        } else {
            Quality::Measured
        }
    }

    /// Age of the measurement at `now`, in seconds (never negative).
    pub fn age_seconds(&self, now: UnixSeconds) -> i64 {
        (now - self.timestamp).max(0)
    }

    /// Whether the record may be used at `now`: not past `valid_until` (if
    /// set), at most `max_age_seconds` old, and dated at most
    /// `max_age_seconds` ahead of `now`.
    ///
    /// A timestamp ahead of `now` means the writer's clock (the poller's, or
    /// the provider's) runs ahead of the reader's. Within the freshness
    /// window that skew is harmless and the record is used as new; beyond it
    /// the two clocks disagree by more than the window, the record's age
    /// cannot be judged, and it is stale (neutral decisions) instead of fresh
    /// until the reader's clock catches up, which could be never.
    pub fn is_fresh(&self, now: UnixSeconds, max_age_seconds: i64) -> bool {
        self.valid_until.is_none_or(|until| now <= until)
            && self.age_seconds(now) <= max_age_seconds
            && self.timestamp.saturating_sub(now) <= max_age_seconds
    }

    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.timestamp <= 0 {
            return Err((
                "timestamp",
                format!("{} is not a unix time", self.timestamp),
            ));
        }
        if let Some(p) = self.renewable_percentage
            && !(p.is_finite() && (0.0..=100.0).contains(&p))
        {
            return Err((
                "renewable_percentage",
                format!("{p} is not a percentage between 0 and 100"),
            ));
        }
        if let Some(f) = &self.forecast {
            f.validate().map_err(|e| ("forecast", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(v: f64) -> CarbonIntensity {
        CarbonIntensity::new(v).unwrap()
    }

    #[test]
    fn forecast_resamples_half_hours_to_hours() {
        let pts: Vec<_> = [(0, 100.0), (1800, 200.0), (3600, 300.0), (10800, 50.0)]
            .iter()
            .map(|&(t, v)| ForecastPoint {
                time: 1_700_000_000 - 1_700_000_000 % 3600 + t,
                intensity: ci(v),
            })
            .collect();
        let f = Forecast::from_points(&pts, 3600).unwrap();
        let vals: Vec<f64> = f.values.iter().map(|v| v.g_per_kwh()).collect();
        assert_eq!(vals, [150.0, 300.0, 300.0, 50.0]);
        assert_eq!(f.value_at(f.start + 3600 * 3 + 5), Some(ci(50.0)));
        assert_eq!(f.value_at(f.end()), None);
    }

    #[test]
    fn forecast_is_bounded() {
        let pts: Vec<_> = (0..500)
            .map(|i| ForecastPoint {
                time: i * 3600,
                intensity: ci(100.0),
            })
            .collect();
        let f = Forecast::from_points(&pts, 3600).unwrap();
        assert_eq!(f.values.len(), MAX_FORECAST_POINTS);
        assert!(Forecast::from_points(&[], 3600).is_none());
    }

    /// Clock skew between the writer and the reader (issue 18): a record
    /// dated ahead of the reader's clock is fresh within the window, stale
    /// beyond it (never fresh for as long as the skew lasts); one dated
    /// behind it ages by the reader's clock.
    #[test]
    fn records_from_a_clock_ahead_are_fresh_only_within_the_window() {
        let now = 1_700_000_000;
        let max_age = 1800;
        let at = |t| ZoneRecord::new(ci(100.0), t, Source::new(Source::ELECTRICITY_MAPS));
        assert!(at(now).is_fresh(now, max_age));
        assert!(at(now + 600).is_fresh(now, max_age), "10 min ahead: used");
        assert!(at(now + max_age).is_fresh(now, max_age));
        assert!(!at(now + max_age + 1).is_fresh(now, max_age));
        assert!(
            !at(now + 365 * 86_400).is_fresh(now, max_age),
            "a year ahead"
        );
        assert!(!at(i64::MAX).is_fresh(now, max_age));
        assert!(at(now - 600).is_fresh(now, max_age), "10 min behind: used");
        assert!(!at(now - max_age - 1).is_fresh(now, max_age));
        // valid_until still bounds it.
        let mut r = at(now + 600);
        r.valid_until = Some(now - 1);
        assert!(!r.is_fresh(now, max_age));
    }

    #[test]
    fn quality_orders_sources() {
        let mut r = ZoneRecord::new(ci(1.0), 1, Source::new(Source::ELECTRICITY_MAPS));
        assert_eq!(r.quality(), Quality::Measured);
        r.estimated = true;
        assert_eq!(r.quality(), Quality::Estimated);
        r.source = Source::new(Source::STATIC);
        assert_eq!(r.quality(), Quality::Static);
        assert!(Quality::Static < Quality::Estimated && Quality::Estimated < Quality::Measured);
    }
}
