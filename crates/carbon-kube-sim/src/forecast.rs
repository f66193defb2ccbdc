//! What policies see instead of the future: forecasts made of the actual
//! trace plus an error whose size is calibrated on real forecast-vs-actual
//! data.
//!
//! The error is relative and grows with lead time as a random walk:
//! `forecast(t + l) = actual(t + l) · (1 + e(l))`, `e(0) ~ N(0, σ0²)`,
//! `e(l) = e(l − 1) + N(0, g²)`, so `sd(e(l)) = sqrt(σ0² + g² · l)` for a lead
//! of `l` hours. A fresh forecast is issued every hour (each zone, each hour
//! its own deterministic random stream), 72 hours long, like the snapshot's.

use std::collections::BTreeMap;
use std::path::Path;

use carbon_kube_model::{
    CarbonIntensity, Forecast, Snapshot, Source, UnixSeconds, ZoneId, ZoneRecord,
    record::MAX_FORECAST_POINTS,
};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};
use crate::trace::{HOUR, TraceSet, parse_utc};

/// Relative sd at lead 0 calibrated on the NESO national forecast vs actual
/// (`nmpowell_national_pt24h_2023-03-15T1201Z.csv`, 47 half-hours).
pub const CALIBRATED_SIGMA0: f64 = 0.074;
/// Growth per hour of lead (g in the module docs), calibrated on the 48 h
/// NESO forecast of 2023-03-15 12:00 UTC against Electricity Maps' GB actuals
/// (scaled to NESO's level on the overlap), net of the two methods' disagreement.
pub const CALIBRATED_GROWTH: f64 = 0.0434;

/// The forecast error model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorModel {
    /// Relative sd of the error at lead 0.
    pub sigma0: f64,
    /// Relative sd added per square root of an hour of lead.
    pub growth: f64,
}

impl Default for ErrorModel {
    fn default() -> Self {
        Self {
            sigma0: CALIBRATED_SIGMA0,
            growth: CALIBRATED_GROWTH,
        }
    }
}

impl ErrorModel {
    /// No error: the forecast is the future (what the oracle knows).
    pub const PERFECT: Self = Self {
        sigma0: 0.0,
        growth: 0.0,
    };

    /// The relative sd of the error at a lead of `hours`.
    pub fn sd_at(&self, hours: f64) -> f64 {
        (self.sigma0 * self.sigma0 + self.growth * self.growth * hours.max(0.0)).sqrt()
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "relative error sd {:.1} % now, {:.1} % at 24 h, {:.1} % at 72 h (random walk in lead time)",
            100.0 * self.sd_at(0.0),
            100.0 * self.sd_at(24.0),
            100.0 * self.sd_at(72.0)
        )
    }
}

/// Builds the snapshot a policy sees at `now`, from forecasts issued at the
/// start of the current hour.
#[derive(Clone, Debug)]
pub struct ForecastView<'a> {
    traces: &'a TraceSet,
    model: ErrorModel,
    seed: u64,
    horizon: usize,
    supplied: Option<&'a IssuedForecasts>,
}

impl<'a> ForecastView<'a> {
    /// A view over `traces` with the given error model and seed.
    pub fn new(traces: &'a TraceSet, model: ErrorModel, seed: u64) -> Self {
        Self {
            traces,
            model,
            seed,
            horizon: MAX_FORECAST_POINTS,
            supplied: None,
        }
    }

    /// Policies see `supplied` forecasts where they cover a point, and the
    /// error model elsewhere.
    #[must_use]
    pub fn with_supplied(mut self, supplied: &'a IssuedForecasts) -> Self {
        self.supplied = Some(supplied);
        self
    }

    /// The error model.
    pub fn model(&self) -> ErrorModel {
        self.model
    }

    /// The forecast values issued at hour `hour` for zone `zone`: index 0 is
    /// the current hour.
    /// Where a supplied forecast (see [`IssuedForecasts`]) covers a target
    /// hour, its value replaces the error model's.
    pub fn issued(&self, zone: usize, hour: usize) -> Vec<f64> {
        let mut out = self.synthetic(zone, hour);
        if let Some(sup) = self.supplied {
            let t = self.traces.start + HOUR * hour as i64;
            if let Some(latest) = sup.latest(zone, t) {
                for (l, v) in out.iter_mut().enumerate() {
                    if let Some(f) = latest.get(&(t + HOUR * l as i64)) {
                        *v = *f;
                    }
                }
            }
        }
        out
    }

    fn synthetic(&self, zone: usize, hour: usize) -> Vec<f64> {
        let actual = &self.traces.zones[zone].values;
        let n = self.horizon.min(actual.len().saturating_sub(hour));
        let mut out = Vec::with_capacity(n);
        let perfect = self.model.sigma0 == 0.0 && self.model.growth == 0.0;
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.seed
                ^ (hour as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (zone as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        let mut e = if perfect {
            0.0
        } else {
            {
                let n: f64 = StandardNormal.sample(&mut rng);
                self.model.sigma0 * n
            }
        };
        for l in 0..n {
            if l > 0 && !perfect {
                let step: f64 = StandardNormal.sample(&mut rng);
                e += self.model.growth * step;
            }
            out.push((actual[hour + l] * (1.0 + e)).max(0.0));
        }
        out
    }

    /// The snapshot at the start of hour `hour`: each zone's current value
    /// (the lead-0 forecast) and a forecast of up to 72 hours.
    pub fn snapshot(&self, hour: usize) -> Snapshot {
        let mut s = Snapshot::default();
        let t: UnixSeconds = self.traces.start + HOUR * hour as i64;
        for (zi, z) in self.traces.zones.iter().enumerate() {
            let values = self.issued(zi, hour);
            let Some(first) = values.first() else {
                continue;
            };
            let ci = |v: f64| {
                CarbonIntensity::new(v.min(carbon_kube_model::intensity::MAX_PLAUSIBLE_G_PER_KWH))
                    .unwrap_or(CarbonIntensity::ZERO)
            };
            let source = match self.supplied {
                Some(sup) if sup.latest(zi, t).is_some() => "supplied_forecast",
                _ => "simulated_forecast",
            };
            let mut r = ZoneRecord::new(ci(*first), t, Source::new(source));
            r.valid_until = Some(t + 2 * HOUR);
            r.forecast = Some(Forecast {
                start: t,
                step_seconds: 3600,
                values: values.iter().map(|v| ci(*v)).collect(),
            });
            s.zones.insert(z.zone.clone(), r);
        }
        s
    }
}

/// Issue time → target hour → value.
type Issued<V> = BTreeMap<UnixSeconds, BTreeMap<UnixSeconds, V>>;

/// Issued forecasts read from a file (`--forecasts`): per zone, per issue
/// time, hourly target values in g/kWh.
///
/// The CSV has the header `issued_at,zone,target,carbon_intensity`
/// (any column order; times RFC 3339 UTC such as `2023-03-15T12:00:00Z`).
/// Targets not on the hour are averaged into the hour that contains them.
/// At sim time `t` a policy sees, for each zone, the forecast with the latest
/// `issued_at <= t`; hours that forecast does not cover, and zones or times
/// with no issued forecast, fall back to the error model.
#[derive(Clone, Debug, Default)]
pub struct IssuedForecasts {
    /// Where they came from.
    pub origin: String,
    /// Per trace zone (same index as the [`TraceSet`]): issue time → target hour → g/kWh.
    zones: Vec<Issued<f64>>,
    /// Rows read.
    pub rows: usize,
}

/// Mean absolute percentage error of supplied forecasts against the actual
/// trace, for one lead-time bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeadBucket {
    /// The bucket, e.g. `0-6 h`.
    pub lead: String,
    /// Forecast hours compared with an actual value.
    pub points: usize,
    /// Mean |forecast − actual| / actual, percent (None without points).
    pub mape_pct: Option<f64>,
}

/// How much of what policies saw came from the supplied forecasts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuppliedSummary {
    /// The file.
    pub origin: String,
    /// Rows read.
    pub rows: usize,
    /// Share of (zone, hour, lead) forecast points policies saw that came from the file, percent.
    pub coverage_pct: f64,
    /// Trace zones with no supplied forecast at all (error model throughout).
    pub zones_without_forecasts: Vec<String>,
    /// Measured error against the actual trace by lead time.
    pub mape_by_lead: Vec<LeadBucket>,
}

const LEAD_BUCKETS: [(i64, i64, &str); 5] = [
    (0, 6, "0-6 h"),
    (6, 24, "6-24 h"),
    (24, 48, "24-48 h"),
    (48, 72, "48-72 h"),
    (72, i64::MAX, ">72 h"),
];

/// An RFC 3339 time (any offset, converted to UTC); a time without an
/// offset is taken as UTC.
fn parse_time(raw: &str) -> std::result::Result<UnixSeconds, String> {
    match raw.parse::<jiff::Timestamp>() {
        Ok(t) => Ok(t.as_second()),
        Err(e) => {
            let rest = raw.get(10..).unwrap_or("");
            if rest.contains('+') || rest.get(1..).is_some_and(|r| r.contains('-')) {
                Err(format!("{raw:?} is not an RFC 3339 time: {e}"))
            } else {
                parse_utc(raw)
            }
        }
    }
}

impl IssuedForecasts {
    /// Reads `path` and matches its zones to `traces`. Bad rows give an
    /// error naming the file, the line and the field.
    pub fn read(path: &Path, traces: &TraceSet) -> Result<Self> {
        let mut rdr =
            csv::Reader::from_path(path).map_err(|e| SimError::file(path, e.to_string()))?;
        let headers = rdr
            .headers()
            .map_err(|e| SimError::file(path, e.to_string()))?
            .clone();
        let col = |name: &str| -> Result<usize> {
            headers
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| {
                    SimError::file(
                        path,
                        format!(
                            "missing column `{name}` (header must be issued_at,zone,target,carbon_intensity)"
                        ),
                    )
                })
        };
        let (ci, cz, ct, cv) = (
            col("issued_at")?,
            col("zone")?,
            col("target")?,
            col("carbon_intensity")?,
        );
        let mut sums: Vec<Issued<(f64, u32)>> = vec![BTreeMap::new(); traces.zones.len()];
        let mut rows = 0;
        for (i, rec) in rdr.records().enumerate() {
            let line = i as u64 + 2;
            let rec = rec.map_err(|e| SimError::field(path, line, "row", e.to_string()))?;
            let get = |c: usize| rec.get(c).unwrap_or("").trim();
            let issued =
                parse_time(get(ci)).map_err(|m| SimError::field(path, line, "issued_at", m))?;
            let raw_zone = get(cz);
            let zone = ZoneId::parse(raw_zone)
                .map_err(|e| SimError::field(path, line, "zone", e.to_string()))?;
            let zi = traces
                .zones
                .iter()
                .position(|z| z.zone == zone)
                .ok_or_else(|| {
                    SimError::field(
                        path,
                        line,
                        "zone",
                        format!("{raw_zone:?} has no carbon trace"),
                    )
                })?;
            let target =
                parse_time(get(ct)).map_err(|m| SimError::field(path, line, "target", m))?;
            if target < issued {
                return Err(SimError::field(
                    path,
                    line,
                    "target",
                    format!("{} is before issued_at", get(ct)),
                ));
            }
            let raw_v = get(cv);
            let v: f64 = raw_v
                .parse()
                .ok()
                .filter(|v: &f64| {
                    v.is_finite()
                        && (0.0..=carbon_kube_model::intensity::MAX_PLAUSIBLE_G_PER_KWH).contains(v)
                })
                .ok_or_else(|| {
                    SimError::field(
                        path,
                        line,
                        "carbon_intensity",
                        format!("{raw_v:?} is not an intensity in g/kWh"),
                    )
                })?;
            let e = sums[zi]
                .entry(issued)
                .or_default()
                .entry(target.div_euclid(HOUR) * HOUR)
                .or_default();
            e.0 += v;
            e.1 += 1;
            rows += 1;
        }
        if rows == 0 {
            return Err(SimError::file(path, "the forecast file has no rows"));
        }
        let zones = sums
            .into_iter()
            .map(|z| {
                z.into_iter()
                    .map(|(k, m)| {
                        (
                            k,
                            m.into_iter()
                                .map(|(t, (s, c))| (t, s / f64::from(c)))
                                .collect(),
                        )
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            origin: path.display().to_string(),
            zones,
            rows,
        })
    }

    /// The forecast of zone index `zone` issued most recently at or before `t`.
    pub fn latest(&self, zone: usize, t: UnixSeconds) -> Option<&BTreeMap<UnixSeconds, f64>> {
        self.zones
            .get(zone)?
            .range(..=t)
            .next_back()
            .map(|(_, m)| m)
    }

    /// Coverage, zones without forecasts and MAPE by lead against `traces`.
    pub fn summary(&self, traces: &TraceSet) -> SuppliedSummary {
        let hours = traces.hours();
        let (mut covered, mut total) = (0usize, 0usize);
        for zi in 0..traces.zones.len() {
            for h in 0..hours {
                let t = traces.start + HOUR * h as i64;
                let n = MAX_FORECAST_POINTS.min(hours - h);
                total += n;
                if let Some(latest) = self.latest(zi, t) {
                    covered += latest.range(t..t + HOUR * n as i64).count();
                }
            }
        }
        let mut acc = [(0.0f64, 0usize); LEAD_BUCKETS.len()];
        for (zi, z) in self.zones.iter().enumerate() {
            let actual = &traces.zones[zi].values;
            for (issued, m) in z {
                for (target, f) in m {
                    let Ok(idx) = usize::try_from((target - traces.start).div_euclid(HOUR)) else {
                        continue;
                    };
                    let Some(a) = actual.get(idx).copied().filter(|a| *a > 0.0) else {
                        continue;
                    };
                    let lead = (target - issued.div_euclid(HOUR) * HOUR) / HOUR;
                    if let Some(b) = LEAD_BUCKETS
                        .iter()
                        .position(|(lo, hi, _)| lead >= *lo && lead < *hi)
                    {
                        acc[b].0 += (f - a).abs() / a;
                        acc[b].1 += 1;
                    }
                }
            }
        }
        SuppliedSummary {
            origin: self.origin.clone(),
            rows: self.rows,
            coverage_pct: if total > 0 {
                100.0 * covered as f64 / total as f64
            } else {
                0.0
            },
            zones_without_forecasts: self
                .zones
                .iter()
                .zip(&traces.zones)
                .filter(|(m, _)| m.is_empty())
                .map(|(_, z)| z.zone.to_string())
                .collect(),
            mape_by_lead: LEAD_BUCKETS
                .iter()
                .zip(acc)
                .map(|((_, _, name), (sum, n))| LeadBucket {
                    lead: (*name).to_owned(),
                    points: n,
                    mape_pct: (n > 0).then(|| 100.0 * sum / n as f64),
                })
                .collect(),
        }
    }
}

impl SuppliedSummary {
    /// One line for reports.
    pub fn describe(&self) -> String {
        let mape: Vec<String> = self
            .mape_by_lead
            .iter()
            .filter_map(|b| {
                b.mape_pct
                    .map(|m| format!("{} {:.1} % (n={})", b.lead, m, b.points))
            })
            .collect();
        let mut s = format!(
            "supplied forecasts from {} ({} rows) cover {:.1} % of forecast points; measured MAPE vs the actual trace by lead: {}",
            self.origin,
            self.rows,
            self.coverage_pct,
            if mape.is_empty() {
                "no overlap with the traces".to_owned()
            } else {
                mape.join(", ")
            }
        );
        if self.coverage_pct < 100.0 {
            s.push_str("; points not covered use the error model");
            if !self.zones_without_forecasts.is_empty() {
                s.push_str(&format!(
                    " (zones with no supplied forecast: {})",
                    self.zones_without_forecasts.join(", ")
                ));
            }
        }
        s
    }
}

/// Calibration of [`ErrorModel`] from the shared forecast-vs-actual data.
pub mod calibration {
    use std::collections::HashMap;
    use std::path::Path;

    use super::ErrorModel;
    use crate::error::{Result, SimError};
    use crate::trace::{Column, HOUR, parse_utc, read_em_csv};

    fn read_neso(path: &Path) -> Result<Vec<(i64, f64, Option<f64>)>> {
        let mut rdr =
            csv::Reader::from_path(path).map_err(|e| SimError::file(path, e.to_string()))?;
        let mut out = Vec::new();
        for (i, rec) in rdr.records().enumerate() {
            let line = i as u64 + 2;
            let rec = rec.map_err(|e| SimError::field(path, line, "row", e.to_string()))?;
            let t = parse_utc(rec.get(0).unwrap_or(""))
                .map_err(|m| SimError::field(path, line, "from", m))?;
            let f: f64 = rec
                .get(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| SimError::field(path, line, "intensity.forecast", "not a number"))?;
            let a = rec.get(2).and_then(|s| s.parse::<f64>().ok());
            out.push((t, f, a));
        }
        Ok(out)
    }

    /// Fits σ0 and the growth from the NESO sample in `shared` (see the
    /// constants' docs). Returns the model and the number of points used.
    pub fn calibrate(shared: &Path) -> Result<(ErrorModel, usize)> {
        let dir = shared.join("forecasts_with_actuals/uk_carbon_intensity");
        let pt = read_neso(&dir.join("nmpowell_national_pt24h_2023-03-15T1201Z.csv"))?;
        let fw = read_neso(&dir.join("nmpowell_national_fw48h_2023-03-15T1201Z.csv"))?;
        let em = read_em_csv(
            &shared.join("carbon_intensity/electricitymaps_hourly/GB_2023_hourly.csv"),
            Column::Direct,
        )?;
        let em_at = |t: i64| -> Option<f64> {
            let i = usize::try_from((t.div_euclid(HOUR) * HOUR - em.start) / HOUR).ok()?;
            em.values.get(i).copied()
        };
        // Lead 0: NESO forecast against NESO actual.
        let rel: Vec<f64> = pt
            .iter()
            .filter_map(|(_, f, a)| a.map(|a| (f - a) / a))
            .collect();
        let mean = rel.iter().sum::<f64>() / rel.len() as f64;
        let sigma0 =
            (rel.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / rel.len() as f64).sqrt();
        // Level and disagreement of the two methods on the overlap.
        let pairs: Vec<(f64, f64)> = pt
            .iter()
            .filter_map(|(t, _, a)| Some(((*a)?, em_at(*t)?)))
            .collect();
        let ratio = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.iter().map(|p| p.1).sum::<f64>();
        let method_var = pairs
            .iter()
            .map(|(n, e)| ((n - e * ratio) / (e * ratio)).powi(2))
            .sum::<f64>()
            / pairs.len() as f64;
        // Leads 0..48 h: forecast against scaled EM actuals, hourly means.
        let mut hourly: HashMap<i64, (f64, u32)> = HashMap::new();
        for (t, f, _) in &fw {
            let e = hourly.entry(t.div_euclid(HOUR) * HOUR).or_default();
            e.0 += f;
            e.1 += 1;
        }
        let issue = fw.first().map_or(0, |p| p.0);
        let (mut num, mut den) = (0.0, 0.0);
        let mut n = rel.len();
        for (t, (sum, c)) in &hourly {
            let Some(actual) = em_at(*t) else { continue };
            let f = sum / f64::from(*c);
            let e = (f - actual * ratio) / (actual * ratio);
            let lead = (*t - issue) as f64 / 3600.0 + 0.5;
            num += (e * e - sigma0 * sigma0 - method_var) * lead;
            den += lead * lead;
            n += 1;
        }
        let g2 = (num / den).max(0.0);
        Ok((
            ErrorModel {
                sigma0,
                growth: g2.sqrt(),
            },
            n,
        ))
    }
}
