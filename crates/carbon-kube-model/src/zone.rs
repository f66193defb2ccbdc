//! Grid zones, named by Electricity Maps zone ids (`US-CAL-CISO`, `DE`, `GB`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Short names from Carbon-Kube's original design, accepted as aliases of
/// Electricity Maps zone ids. Lookups are case-insensitive.
pub const ZONE_ALIASES: &[(&str, &str)] = &[
    ("US-CA", "US-CAL-CISO"),
    ("US-TX", "US-TEX-ERCO"),
    ("US-NY", "US-NY-NYIS"),
    ("US-PJM", "US-MIDA-PJM"),
    ("US-NW", "US-NW-BPAT"),
    ("EU-DE", "DE"),
    ("EU-FR", "FR"),
    ("EU-GB", "GB"),
    ("EU-NL", "NL"),
    ("EU-IE", "IE"),
    ("EU-SE", "SE"),
    ("EU-PL", "PL"),
];

/// An Electricity Maps zone id, validated and canonical (aliases resolved).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ZoneId(String);

/// Why a string is not a zone id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// The string was empty or only white space.
    #[error("zone id is empty")]
    Empty,
    /// The string holds a character zone ids never contain.
    #[error("zone id {0:?} contains characters other than letters, digits, '-' and '_'")]
    InvalidCharacters(String),
    /// The string is longer than any zone id.
    #[error("zone id {0:?} is longer than 64 characters")]
    TooLong(String),
}

impl ZoneId {
    /// Parses a zone id or one of the [`ZONE_ALIASES`], returning the canonical id.
    pub fn parse(raw: &str) -> Result<Self, ZoneError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ZoneError::Empty);
        }
        if s.len() > 64 {
            return Err(ZoneError::TooLong(s.to_owned()));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ZoneError::InvalidCharacters(s.to_owned()));
        }
        if let Some((_, canonical)) = ZONE_ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(s))
        {
            return Ok(Self((*canonical).to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as Electricity Maps spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a comma-separated list (`"DE, GB,US-CA"`), skipping empty items.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, ZoneError> {
        raw.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Self::parse)
            .collect()
    }
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ZoneId {
    type Err = ZoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for ZoneId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_electricity_maps_ids() {
        assert_eq!(ZoneId::parse("US-CA").unwrap().as_str(), "US-CAL-CISO");
        assert_eq!(ZoneId::parse("us-tx").unwrap().as_str(), "US-TEX-ERCO");
        assert_eq!(ZoneId::parse("EU-DE").unwrap().as_str(), "DE");
        assert_eq!(ZoneId::parse(" GB ").unwrap().as_str(), "GB");
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(ZoneId::parse("  "), Err(ZoneError::Empty));
        assert!(matches!(
            ZoneId::parse("DE;rm"),
            Err(ZoneError::InvalidCharacters(_))
        ));
        assert!(matches!(
            ZoneId::parse(&"A".repeat(65)),
            Err(ZoneError::TooLong(_))
        ));
    }

    #[test]
    fn parses_lists() {
        let zones = ZoneId::parse_list("DE, GB,,US-CA").unwrap();
        let names: Vec<_> = zones.iter().map(ZoneId::as_str).collect();
        assert_eq!(names, ["DE", "GB", "US-CAL-CISO"]);
    }
}
