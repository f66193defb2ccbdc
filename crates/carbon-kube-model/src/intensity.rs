//! Carbon intensity of electricity, in grams of CO2-equivalent per kWh.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Carbon intensity in gCO2eq/kWh: finite and not negative.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct CarbonIntensity(f64);

/// The highest intensity accepted as real (the dirtiest grids are ~1,200 g/kWh).
pub const MAX_PLAUSIBLE_G_PER_KWH: f64 = 5_000.0;

impl CarbonIntensity {
    /// Zero emissions.
    pub const ZERO: Self = Self(0.0);

    /// Accepts a value in gCO2eq/kWh if it is finite, not negative and plausible.
    pub fn new(g_per_kwh: f64) -> Result<Self, String> {
        if !g_per_kwh.is_finite() {
            return Err(format!("{g_per_kwh} is not a finite number"));
        }
        if g_per_kwh < 0.0 {
            return Err(format!("{g_per_kwh} g/kWh is negative"));
        }
        if g_per_kwh > MAX_PLAUSIBLE_G_PER_KWH {
            return Err(format!(
                "{g_per_kwh} g/kWh is above the plausible maximum of {MAX_PLAUSIBLE_G_PER_KWH}"
            ));
        }
        Ok(Self(g_per_kwh))
    }

    /// The value in gCO2eq/kWh.
    pub fn g_per_kwh(self) -> f64 {
        self.0
    }
}

impl fmt::Display for CarbonIntensity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.0} g/kWh", self.0)
    }
}

impl<'de> Deserialize<'de> for CarbonIntensity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Self::new(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(CarbonIntensity::new(250.5).is_ok());
        assert!(CarbonIntensity::new(-1.0).is_err());
        assert!(CarbonIntensity::new(f64::NAN).is_err());
        assert!(CarbonIntensity::new(1e9).is_err());
        assert_eq!(
            CarbonIntensity::new(120.4).unwrap().to_string(),
            "120 g/kWh"
        );
    }
}
