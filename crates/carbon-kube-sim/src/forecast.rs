//! What policies see instead of the future: forecasts made of the actual
//! trace plus an error whose size is calibrated on real forecast-vs-actual
//! data.
//!
//! The error is relative and grows with lead time as a random walk:
//! `forecast(t + l) = actual(t + l) · (1 + e(l))`, `e(0) ~ N(0, σ0²)`,
//! `e(l) = e(l − 1) + N(0, g²)`, so `sd(e(l)) = sqrt(σ0² + g² · l)` for a lead
//! of `l` hours. A fresh forecast is issued every hour (each zone, each hour
//! its own deterministic random stream), 72 hours long, like the snapshot's.

use carbon_kube_model::{
    CarbonIntensity, Forecast, Snapshot, Source, UnixSeconds, ZoneRecord,
    record::MAX_FORECAST_POINTS,
};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::trace::{HOUR, TraceSet};

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
}

impl<'a> ForecastView<'a> {
    /// A view over `traces` with the given error model and seed.
    pub fn new(traces: &'a TraceSet, model: ErrorModel, seed: u64) -> Self {
        Self {
            traces,
            model,
            seed,
            horizon: MAX_FORECAST_POINTS,
        }
    }

    /// The error model.
    pub fn model(&self) -> ErrorModel {
        self.model
    }

    /// The forecast values issued at hour `hour` for zone `zone`: index 0 is
    /// the current hour.
    pub fn issued(&self, zone: usize, hour: usize) -> Vec<f64> {
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
            let mut r = ZoneRecord::new(ci(*first), t, Source::new("simulated_forecast"));
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
