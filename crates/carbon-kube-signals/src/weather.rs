//! The weather model: an estimate of a zone's carbon intensity and renewable
//! share from cloud cover and wind speed at one point in the zone. Pure
//! functions, no IO; the NOAA and Open-Meteo providers feed it, and the
//! validation test replays a year of real weather through it.
//!
//! For each hour `t` (see the crate README for sources and the validation):
//!
//! ```text
//! S(t) = max(0, sin h(t + 30 min)) · (1 − a · (C/100)^3.4)        solar proxy
//! W(t) = P(v10 · 10^α)                                             wind proxy
//! r(t) = min(0.95, kS·σS·S(t)/S̄ + kW·σW·W(t)/W̄)                    variable renewable share
//! r̄    = kS·σS + kW·σW
//! I(t) = Ī · (1 − r(t)) / (1 − r̄)                                  carbon intensity
//! R(t) = clamp(R̄ + 100·(r(t) − r̄), 0, 100)                         renewable %
//! ```
//!
//! `h` is the sun's elevation, `C` the total cloud cover (%); the cloud term
//! has the shape of Kasten & Czeplak (1980), whose `a = 0.75` holds for the
//! irradiance at the observing site, while here one site's clouds stand for a
//! whole zone's solar fleet, so `a` is fitted; `v10` the 10 m wind speed, lifted to 100 m hub
//! height with the power law (Hellmann exponent α = 0.34, neutral air over
//! inhabited land); `P` a generic turbine power curve (cut-in 3 m/s, rated
//! 12 m/s, cut-out 25 m/s, cubic in between). `σS`, `σW` are the zone's
//! annual solar and wind shares of generation; `S̄`, `W̄` the annual means of
//! the proxies at the weather point; `Ī`, `R̄` the zone's annual mean
//! intensity and renewable share (the static table). `kS`, `kW` shrink the
//! installed shares because one weather point sees only part of a zone's
//! fleet. `a`, `kS` and `kW` are the only fitted parameters (first half of
//! 2023, US-CAL-CISO and DE together).

use carbon_kube_model::UnixSeconds;

/// Hellmann exponent lifting 10 m wind to 100 m hub height (neutral air over
/// inhabited land).
pub const HELLMANN_EXPONENT: f64 = 0.34;
/// Fitted cloud sensitivity (`a`), H1 2023, US-CAL-CISO and DE.
pub const CLOUD_SENSITIVITY: f64 = 0.20;
/// Fitted attenuation of the solar share (`kS`), H1 2023, US-CAL-CISO and DE.
pub const SOLAR_ATTENUATION: f64 = 0.75;
/// Fitted attenuation of the wind share (`kW`), H1 2023, US-CAL-CISO and DE.
pub const WIND_ATTENUATION: f64 = 0.30;
/// Upper bound of the modelled variable renewable share.
pub const MAX_VARIABLE_SHARE: f64 = 0.95;
/// Mean cloud factor used for `S̄` where no year of local weather was
/// measured: `S̄ = clear-sky mean × 0.90` (the mean of the two measured sites:
/// 0.918 in San Jose, 0.888 in Frankfurt, H1 2023, with `a` = 0.20).
pub const DEFAULT_CLOUD_TRANSMISSION: f64 = 0.90;
/// `W̄` where no year of local weather was measured: the mean of the two
/// measured sites (0.275 San Jose, 0.336 Frankfurt, H1 2023).
pub const DEFAULT_WIND_MEAN: f64 = 0.305;

/// Turbine cut-in speed, m/s.
const CUT_IN: f64 = 3.0;
/// Turbine rated speed, m/s.
const RATED: f64 = 12.0;
/// Turbine cut-out speed, m/s.
const CUT_OUT: f64 = 25.0;

/// The weather at one point for the hour starting at `time`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeatherHour {
    /// Start of the hour (unix seconds, UTC).
    pub time: UnixSeconds,
    /// Total cloud cover, percent (0–100).
    pub cloud_cover_pct: f64,
    /// Wind speed 10 m above ground, km/h.
    pub wind_speed_10m_kmh: f64,
}

/// Per-zone parameters of the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelParams {
    /// Latitude of the weather point, degrees north.
    pub lat: f64,
    /// Longitude of the weather point, degrees east.
    pub lon: f64,
    /// `Ī`: annual mean carbon intensity, gCO2eq/kWh.
    pub annual_intensity: f64,
    /// `R̄`: annual renewable share, percent, when known.
    pub annual_renewable_pct: Option<f64>,
    /// `σS`: solar share of annual generation (0–1).
    pub solar_share: f64,
    /// `σW`: wind share of annual generation (0–1).
    pub wind_share: f64,
    /// `S̄`: annual mean of the solar proxy at the weather point.
    pub solar_mean: f64,
    /// `W̄`: annual mean of the wind proxy at the weather point.
    pub wind_mean: f64,
    /// `kS`: attenuation of the solar share.
    pub solar_attenuation: f64,
    /// `kW`: attenuation of the wind share.
    pub wind_attenuation: f64,
}

/// The model's estimate for one hour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HourEstimate {
    /// Start of the hour.
    pub time: UnixSeconds,
    /// Estimated carbon intensity, gCO2eq/kWh.
    pub intensity: f64,
    /// Estimated renewable share, percent, when the annual share is known.
    pub renewable_pct: Option<f64>,
    /// `r(t)`: modelled variable (solar + wind) share.
    pub variable_share: f64,
}

/// Sine of the sun's elevation at unix time `t` seen from (`lat`, `lon`),
/// from the US Naval Observatory's approximate solar coordinates (about one
/// arc-minute within two centuries of 2000) and the equation of time.
pub fn sun_elevation_sin(t: UnixSeconds, lat: f64, lon: f64) -> f64 {
    // Days since J2000.0 (2000-01-01T12:00Z = 946 728 000).
    #[allow(clippy::cast_precision_loss)]
    let d = (t - 946_728_000) as f64 / 86_400.0;
    let g = (357.529 + 0.985_600_28 * d).rem_euclid(360.0).to_radians();
    let q = (280.459 + 0.985_647_36 * d).rem_euclid(360.0);
    let l = (q + 1.915 * g.sin() + 0.020 * (2.0 * g).sin())
        .rem_euclid(360.0)
        .to_radians();
    let e = (23.439 - 0.000_000_36 * d).to_radians();
    let ra_hours = (e.cos() * l.sin()).atan2(l.cos()).to_degrees() / 15.0;
    let dec = (e.sin() * l.sin()).asin();
    let eq_time_hours = (q / 15.0 - ra_hours.rem_euclid(24.0) + 12.0).rem_euclid(24.0) - 12.0;
    #[allow(clippy::cast_precision_loss)]
    let utc_hours = t.rem_euclid(86_400) as f64 / 3600.0;
    let hour_angle = (15.0 * (utc_hours + lon / 15.0 + eq_time_hours - 12.0)).to_radians();
    let la = lat.to_radians();
    la.sin() * dec.sin() + la.cos() * dec.cos() * hour_angle.cos()
}

/// `S(t)`: clear-sky sun height times the cloud factor, for the hour starting
/// at `t` (sun taken at mid-hour). 0 at night, at most 1.
pub fn solar_proxy(t: UnixSeconds, lat: f64, lon: f64, cloud_cover_pct: f64) -> f64 {
    sun_elevation_sin(t + 1800, lat, lon).max(0.0)
        * cloud_factor(cloud_cover_pct, CLOUD_SENSITIVITY)
}

/// The cloud factor `1 − a · (C/100)^3.4` for cloud cover `C` (%) and
/// sensitivity `a` (Kasten & Czeplak's shape).
pub fn cloud_factor(cloud_cover_pct: f64, sensitivity: f64) -> f64 {
    let c = (cloud_cover_pct / 100.0).clamp(0.0, 1.0);
    1.0 - sensitivity * c.powf(3.4)
}

/// `W(t)`: normalised output of a generic turbine at 100 m for a 10 m wind
/// speed in km/h (0–1).
pub fn wind_proxy(wind_speed_10m_kmh: f64) -> f64 {
    let v = (wind_speed_10m_kmh.max(0.0) / 3.6) * 10f64.powf(HELLMANN_EXPONENT);
    if !(CUT_IN..=CUT_OUT).contains(&v) {
        0.0
    } else if v >= RATED {
        1.0
    } else {
        (v.powi(3) - CUT_IN.powi(3)) / (RATED.powi(3) - CUT_IN.powi(3))
    }
}

/// Mean of `max(0, sin h)` over every hour of 2023 (a non-leap year) at a
/// point: the clear-sky part of `S̄`.
pub fn clear_sky_annual_mean(lat: f64, lon: f64) -> f64 {
    const START_2023: UnixSeconds = 1_672_531_200;
    let sum: f64 = (0..8760)
        .map(|h| sun_elevation_sin(START_2023 + h * 3600 + 1800, lat, lon).max(0.0))
        .sum();
    sum / 8760.0
}

impl ModelParams {
    /// `r̄`: the modelled annual mean variable share.
    pub fn mean_variable_share(&self) -> f64 {
        self.solar_attenuation * self.solar_share + self.wind_attenuation * self.wind_share
    }

    /// Whether the parameters can produce an estimate (positive means,
    /// shares that leave room for other generation).
    pub fn is_usable(&self) -> bool {
        let r = self.mean_variable_share();
        self.annual_intensity.is_finite()
            && self.annual_intensity >= 0.0
            && self.solar_mean > 0.0
            && self.wind_mean > 0.0
            && (0.0..MAX_VARIABLE_SHARE).contains(&r)
    }

    /// The estimate for one hour of weather.
    pub fn estimate(&self, w: &WeatherHour) -> HourEstimate {
        let s = solar_proxy(w.time, self.lat, self.lon, w.cloud_cover_pct);
        let wind = wind_proxy(w.wind_speed_10m_kmh);
        self.estimate_from_proxies(w.time, s, wind)
    }

    /// The estimate for the hour starting at `time` from its proxies `S(t)`
    /// ([`solar_proxy`]) and `W(t)` ([`wind_proxy`]), for replaying many
    /// parameter sets over one weather series.
    pub fn estimate_from_proxies(&self, time: UnixSeconds, s: f64, wind: f64) -> HourEstimate {
        let r_bar = self.mean_variable_share();
        let r = (self.solar_attenuation * self.solar_share * s / self.solar_mean
            + self.wind_attenuation * self.wind_share * wind / self.wind_mean)
            .clamp(0.0, MAX_VARIABLE_SHARE);
        let intensity = (self.annual_intensity * (1.0 - r) / (1.0 - r_bar)).max(0.0);
        let renewable_pct = self
            .annual_renewable_pct
            .map(|base| (base + 100.0 * (r - r_bar)).clamp(0.0, 100.0));
        HourEstimate {
            time,
            intensity,
            renewable_pct,
            variable_share: r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> UnixSeconds {
        crate::time::parse_timestamp(s).unwrap()
    }

    #[test]
    fn sun_is_high_at_noon_and_below_horizon_at_night() {
        // Frankfurt, summer solstice: solar noon ≈ 11:25Z, elevation ≈ 63.3°.
        let noon = sun_elevation_sin(ts("2023-06-21T11:25:00Z"), 50.088, 8.654);
        assert!((noon - 63.3f64.to_radians().sin()).abs() < 0.01, "{noon}");
        assert!(sun_elevation_sin(ts("2023-06-21T23:25:00Z"), 50.088, 8.654) < 0.0);
        // San Jose, winter solstice noon (≈ 20:08Z): elevation ≈ 29.1°.
        let w = sun_elevation_sin(ts("2023-12-21T20:08:00Z"), 37.434, -121.955);
        assert!((w - 29.1f64.to_radians().sin()).abs() < 0.01, "{w}");
    }

    #[test]
    fn overcast_cuts_solar_by_the_sensitivity() {
        let t = ts("2023-06-21T11:00:00Z");
        let clear = solar_proxy(t, 50.088, 8.654, 0.0);
        let overcast = solar_proxy(t, 50.088, 8.654, 100.0);
        assert!((overcast / clear - (1.0 - CLOUD_SENSITIVITY)).abs() < 1e-9);
        assert!(solar_proxy(t, 50.088, 8.654, 50.0) > 0.95 * clear);
        assert!((cloud_factor(100.0, 0.75) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn power_curve() {
        assert_eq!(wind_proxy(0.0), 0.0);
        // 10 km/h at 10 m is 6.1 m/s at 100 m: partial output.
        let p = wind_proxy(10.0);
        assert!(p > 0.1 && p < 0.2, "{p}");
        assert_eq!(wind_proxy(25.0), 1.0); // 15.2 m/s: rated
        assert_eq!(wind_proxy(80.0), 0.0); // 48.7 m/s: cut out
    }

    #[test]
    fn estimate_moves_around_the_annual_mean() {
        let p = ModelParams {
            lat: 50.088,
            lon: 8.654,
            annual_intensity: 400.0,
            annual_renewable_pct: Some(50.0),
            solar_share: 0.12,
            wind_share: 0.27,
            solar_mean: 0.20,
            wind_mean: 0.34,
            solar_attenuation: SOLAR_ATTENUATION,
            wind_attenuation: WIND_ATTENUATION,
        };
        assert!(p.is_usable());
        let calm_night = p.estimate(&WeatherHour {
            time: ts("2023-01-10T00:00:00Z"),
            cloud_cover_pct: 100.0,
            wind_speed_10m_kmh: 2.0,
        });
        let windy_sunny = p.estimate(&WeatherHour {
            time: ts("2023-06-21T11:00:00Z"),
            cloud_cover_pct: 0.0,
            wind_speed_10m_kmh: 30.0,
        });
        assert!(calm_night.intensity > 400.0 && calm_night.intensity < 500.0);
        assert!(windy_sunny.intensity < 250.0);
        assert!(windy_sunny.renewable_pct.unwrap() > 65.0);
        assert!(calm_night.renewable_pct.unwrap() < 50.0);
    }

    #[test]
    fn clear_sky_mean_decreases_with_latitude() {
        let south = clear_sky_annual_mean(37.434, -121.955);
        let north = clear_sky_annual_mean(50.088, 8.654);
        assert!((south - 0.251).abs() < 0.002 && (north - 0.211).abs() < 0.002);
    }
}
