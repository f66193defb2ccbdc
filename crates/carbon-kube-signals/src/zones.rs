//! Built-in zone tables: where a zone is (the weather point), what providers
//! call it (WattTime region, UK Carbon Intensity region), its installed solar
//! and wind shares for the weather model, and its static annual average.
//!
//! Zones missing here still work with the providers that take Electricity Maps
//! zone ids directly (Electricity Maps itself, the static table); the others
//! answer "unsupported zone" and the chain moves on.

use carbon_kube_model::ZoneId;

use crate::static_table::{ANNUAL_AVERAGES, ANNUAL_AVERAGES_YEAR};
use crate::weather::{self, ModelParams};

/// A UK Carbon Intensity API area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UkRegion {
    /// Great Britain as a whole (`/intensity`), with actual values.
    National,
    /// One of the API's regions (`/regional/.../regionid/{id}`), forecasts only.
    Region(u8),
}

/// Where the solar and wind shares of a zone come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixSource {
    /// Country-level 2023 shares from Ember / Our World in Data, as shipped by
    /// codecarbon (`global_energy_mix.json`, ISO3 code given).
    Country(&'static str),
    /// California Energy Commission, 2023 Total System Electric Generation
    /// (solar 17.0 %, wind 11.2 % of the power mix).
    CaliforniaEnergyCommission2023,
    /// ERCOT 2022 annual generation as reported by IEEFA (wind 24.9 %, solar 5.6 %).
    Ercot2022,
}

/// Installed mix and measured weather normalisation of one zone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    /// Solar share of annual generation (0–1).
    pub solar_share: f64,
    /// Wind share of annual generation (0–1).
    pub wind_share: f64,
    /// Where the shares come from.
    pub source: MixSource,
    /// `(S̄, W̄)` measured from a year of weather at the weather point, when
    /// available (Open-Meteo 2023, first half); else derived (see [`weather`]).
    pub measured_means: Option<(f64, f64)>,
}

/// Everything the built-in tables know about one zone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZoneInfo {
    /// Electricity Maps zone id (or a Carbon-Kube `GB-*` region id).
    pub zone: &'static str,
    /// The weather point: the zone's main load centre.
    pub place: &'static str,
    /// Latitude of the weather point.
    pub lat: f64,
    /// Longitude of the weather point.
    pub lon: f64,
    /// Whether the point is in the United States (NOAA coverage).
    pub in_us: bool,
    /// WattTime region, when fixed here; otherwise it is looked up once per
    /// zone with `/v3/region-from-loc` at the weather point.
    pub watttime_region: Option<&'static str>,
    /// UK Carbon Intensity API area.
    pub uk_region: Option<UkRegion>,
    /// Installed mix for the weather model.
    pub mix: Option<Mix>,
}

const fn zone(zone: &'static str, place: &'static str, lat: f64, lon: f64) -> ZoneInfo {
    ZoneInfo {
        zone,
        place,
        lat,
        lon,
        in_us: false,
        watttime_region: None,
        uk_region: None,
        mix: None,
    }
}

const fn country(iso3: &'static str, solar: f64, wind: f64) -> Option<Mix> {
    Some(Mix {
        solar_share: solar,
        wind_share: wind,
        source: MixSource::Country(iso3),
        measured_means: None,
    })
}

const fn us(mut z: ZoneInfo) -> ZoneInfo {
    z.in_us = true;
    z
}

const fn mix(mut z: ZoneInfo, m: Option<Mix>) -> ZoneInfo {
    z.mix = m;
    z
}

const fn uk(code: &'static str, place: &'static str, id: u8) -> ZoneInfo {
    let mut z = zone(code, place, f64::NAN, f64::NAN);
    z.uk_region = Some(UkRegion::Region(id));
    z
}

/// The United States, country level (Ember / OWID 2023 via codecarbon): the
/// proxy for US balancing authorities without their own figures.
const USA: Option<Mix> = country("USA", 0.056, 0.100);

/// The built-in zone table.
pub const ZONES: &[ZoneInfo] = &[
    {
        let mut z = us(zone("US-CAL-CISO", "San Jose, CA", 37.434, -121.955));
        z.watttime_region = Some("CAISO_NORTH");
        z.mix = Some(Mix {
            solar_share: 0.170,
            wind_share: 0.112,
            source: MixSource::CaliforniaEnergyCommission2023,
            measured_means: Some((0.2425, 0.2754)),
        });
        z
    },
    mix(
        us(zone("US-TEX-ERCO", "Dallas, TX", 32.78, -96.80)),
        Some(Mix {
            solar_share: 0.056,
            wind_share: 0.249,
            source: MixSource::Ercot2022,
            measured_means: None,
        }),
    ),
    mix(us(zone("US-NY-NYIS", "New York, NY", 40.71, -74.01)), USA),
    mix(
        us(zone("US-MIDA-PJM", "Philadelphia, PA", 39.95, -75.17)),
        USA,
    ),
    mix(us(zone("US-NW-BPAT", "Portland, OR", 45.52, -122.68)), USA),
    mix(
        zone("DE", "Frankfurt am Main", 50.088, 8.654),
        Some(Mix {
            solar_share: 0.122,
            wind_share: 0.272,
            source: MixSource::Country("DEU"),
            measured_means: Some((0.2015, 0.3358)),
        }),
    ),
    {
        let mut z = mix(
            zone("GB", "Birmingham", 52.48, -1.90),
            country("GBR", 0.046, 0.281),
        );
        z.uk_region = Some(UkRegion::National);
        z
    },
    mix(
        zone("FR", "Paris", 48.86, 2.35),
        country("FRA", 0.045, 0.095),
    ),
    mix(
        zone("NL", "Amsterdam", 52.37, 4.90),
        country("NLD", 0.173, 0.237),
    ),
    mix(
        zone("PL", "Warsaw", 52.23, 21.01),
        country("POL", 0.073, 0.137),
    ),
    mix(
        zone("ES", "Madrid", 40.42, -3.70),
        country("ESP", 0.167, 0.238),
    ),
    mix(
        zone("IE", "Dublin", 53.35, -6.26),
        country("IRL", 0.017, 0.358),
    ),
    mix(
        zone("SE", "Stockholm", 59.33, 18.07),
        country("SWE", 0.015, 0.209),
    ),
    mix(
        zone("IN-WE", "Mumbai", 19.08, 72.88),
        country("IND", 0.058, 0.042),
    ),
    mix(
        zone("AU-NSW", "Sydney", -33.87, 151.21),
        country("AUS", 0.171, 0.121),
    ),
    mix(
        zone("JP-TK", "Tokyo", 35.68, 139.69),
        country("JPN", 0.108, 0.009),
    ),
    mix(
        zone("SG", "Singapore", 1.35, 103.82),
        country("SGP", 0.016, 0.0),
    ),
    // UK Carbon Intensity API regions, as Carbon-Kube sub-zones of GB. They
    // are not Electricity Maps zones: only `uk_carbon_intensity` serves them.
    uk("GB-NORTH-SCOTLAND", "North Scotland", 1),
    uk("GB-SOUTH-SCOTLAND", "South Scotland", 2),
    uk("GB-NORTH-WEST-ENGLAND", "North West England", 3),
    uk("GB-NORTH-EAST-ENGLAND", "North East England", 4),
    uk("GB-YORKSHIRE", "Yorkshire", 5),
    uk("GB-NORTH-WALES-MERSEYSIDE", "North Wales and Merseyside", 6),
    uk("GB-SOUTH-WALES", "South Wales", 7),
    uk("GB-WEST-MIDLANDS", "West Midlands", 8),
    uk("GB-EAST-MIDLANDS", "East Midlands", 9),
    uk("GB-EAST-ENGLAND", "East England", 10),
    uk("GB-SOUTH-WEST-ENGLAND", "South West England", 11),
    uk("GB-SOUTH-ENGLAND", "South England", 12),
    uk("GB-LONDON", "London", 13),
    uk("GB-SOUTH-EAST-ENGLAND", "South East England", 14),
    uk("GB-ENGLAND", "England", 15),
    uk("GB-SCOTLAND", "Scotland", 16),
    uk("GB-WALES", "Wales", 17),
];

/// The built-in entry of a zone.
pub fn zone_info(zone: &ZoneId) -> Option<&'static ZoneInfo> {
    ZONES.iter().find(|z| z.zone == zone.as_str())
}

impl ZoneInfo {
    /// The weather point, when the zone has one.
    pub fn location(&self) -> Option<(f64, f64)> {
        (self.lat.is_finite() && self.lon.is_finite()).then_some((self.lat, self.lon))
    }
}

/// A zone's static annual average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnnualAverage {
    /// Life-cycle carbon intensity, gCO2eq/kWh.
    pub intensity: f64,
    /// Renewable share, percent.
    pub renewable_pct: f64,
    /// Year of the figures.
    pub year: u16,
}

/// The static annual average of a zone (Electricity Maps yearly figures).
pub fn annual_average(zone: &ZoneId) -> Option<AnnualAverage> {
    let idx = ANNUAL_AVERAGES
        .binary_search_by(|(z, _, _)| (*z).cmp(zone.as_str()))
        .ok()?;
    let (_, intensity, renewable) = ANNUAL_AVERAGES.get(idx)?;
    Some(AnnualAverage {
        intensity: f64::from(*intensity),
        renewable_pct: f64::from(*renewable),
        year: ANNUAL_AVERAGES_YEAR,
    })
}

/// The weather-model parameters of a zone: its table entry (location, mix)
/// and its annual average. `None` when either is missing.
pub fn model_params(zone: &ZoneId) -> Option<ModelParams> {
    let info = zone_info(zone)?;
    let (lat, lon) = info.location()?;
    let mix = info.mix?;
    let annual = annual_average(zone)?;
    let (solar_mean, wind_mean) = mix.measured_means.unwrap_or_else(|| {
        (
            weather::clear_sky_annual_mean(lat, lon) * weather::DEFAULT_CLOUD_TRANSMISSION,
            weather::DEFAULT_WIND_MEAN,
        )
    });
    let params = ModelParams {
        lat,
        lon,
        annual_intensity: annual.intensity,
        annual_renewable_pct: Some(annual.renewable_pct),
        solar_share: mix.solar_share,
        wind_share: mix.wind_share,
        solar_mean,
        wind_mean,
        solar_attenuation: weather::SOLAR_ATTENUATION,
        wind_attenuation: weather::WIND_ATTENUATION,
    };
    params.is_usable().then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(s: &str) -> ZoneId {
        ZoneId::parse(s).unwrap()
    }

    #[test]
    fn static_table_is_sorted_and_unique() {
        assert!(ANNUAL_AVERAGES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ANNUAL_AVERAGES.len() > 300);
    }

    #[test]
    fn the_six_data_zones_have_everything() {
        for name in ["US-CAL-CISO", "US-TEX-ERCO", "DE", "GB", "IN-WE", "AU-NSW"] {
            let zone = z(name);
            assert!(zone_info(&zone).is_some(), "{name}");
            assert!(annual_average(&zone).is_some(), "{name}");
            assert!(model_params(&zone).is_some(), "{name}");
        }
        assert_eq!(
            zone_info(&z("US-CA")).unwrap().watttime_region,
            Some("CAISO_NORTH")
        );
        assert_eq!(
            zone_info(&z("GB")).unwrap().uk_region,
            Some(UkRegion::National)
        );
    }

    #[test]
    fn every_table_zone_with_a_mix_has_an_annual_average() {
        for info in ZONES {
            let zone = z(info.zone);
            if info.mix.is_some() {
                assert!(model_params(&zone).is_some(), "{}", info.zone);
            }
            if info.zone.starts_with("GB-") {
                assert!(info.location().is_none() && info.uk_region.is_some());
            }
        }
    }

    #[test]
    fn unknown_zone_has_nothing() {
        assert!(zone_info(&z("XX-NOWHERE")).is_none());
        assert!(annual_average(&z("XX-NOWHERE")).is_none());
        assert!(model_params(&z("XX-NOWHERE")).is_none());
    }
}
