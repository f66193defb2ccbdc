//! The published snapshot: every zone's record, as one JSON object keyed by
//! zone id. This is the content of ConfigMap `carbon-intensity-data`, key
//! `carbon-intensity.json`, and stays readable by readers of the original
//! format (`{"US-CA": {"carbon_intensity": 250.5, "timestamp": ..., ...}}`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{UnixSeconds, ZoneId, ZoneRecord};

/// Carbon records by zone.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Snapshot {
    /// Records by canonical zone id.
    pub zones: BTreeMap<ZoneId, ZoneRecord>,
}

/// What is wrong with a snapshot. Each variant names the zone and field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    /// The text is not JSON at all.
    #[error("snapshot is not valid JSON (line {line}, column {column}): {message}")]
    InvalidJson {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// The JSON is not an object keyed by zone.
    #[error("snapshot must be a JSON object keyed by zone id, found {found}")]
    NotAnObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A key is not a zone id.
    #[error("snapshot key {key:?} is not a zone id: {source}")]
    InvalidZone {
        /// The key as written.
        key: String,
        /// Why it is not a zone id.
        source: crate::ZoneError,
    },
    /// Two keys name the same zone (e.g. `US-CA` and `US-CAL-CISO`).
    #[error("snapshot names zone {zone} twice (key {key:?} is an alias of an earlier key)")]
    DuplicateZone {
        /// The canonical zone.
        zone: String,
        /// The later key.
        key: String,
    },
    /// A field of a zone's record is missing, mistyped or out of range.
    #[error("zone {zone}: field `{field}`: {message}")]
    InvalidField {
        /// The zone whose record is bad.
        zone: String,
        /// Path of the field inside the record (`carbon_intensity`, `forecast.values[3]`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// What [`Snapshot::merge`] did with one zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The zone had no record; the new one was added.
    Added,
    /// The new record replaced the old one.
    Replaced,
    /// The old record was kept because it is still valid and better than the
    /// new one (e.g. a live measurement over a static fallback).
    KeptBetter,
}

impl Snapshot {
    /// Parses a snapshot, failing on the first bad zone.
    pub fn parse(json: &str) -> Result<Self, SnapshotError> {
        let (snapshot, mut errors) = Self::parse_lenient(json)?;
        match errors.is_empty() {
            true => Ok(snapshot),
            false => Err(errors.swap_remove(0)),
        }
    }

    /// Parses a snapshot, keeping every good zone and returning an error for
    /// each bad one, so one bad zone never takes down the others. Fails as a
    /// whole only when the text is not a JSON object.
    pub fn parse_lenient(json: &str) -> Result<(Self, Vec<SnapshotError>), SnapshotError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| SnapshotError::InvalidJson {
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        let serde_json::Value::Object(map) = value else {
            return Err(SnapshotError::NotAnObject {
                found: json_type(&value),
            });
        };
        let mut zones = BTreeMap::new();
        let mut errors = Vec::new();
        for (key, raw) in map {
            let zone = match ZoneId::parse(&key) {
                Ok(z) => z,
                Err(source) => {
                    errors.push(SnapshotError::InvalidZone { key, source });
                    continue;
                }
            };
            match parse_record(&zone, raw) {
                Ok(record) => match zones.entry(zone) {
                    std::collections::btree_map::Entry::Occupied(e) => {
                        errors.push(SnapshotError::DuplicateZone {
                            zone: e.key().to_string(),
                            key,
                        });
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(record);
                    }
                },
                Err(e) => errors.push(e),
            }
        }
        Ok((Self { zones }, errors))
    }

    /// The snapshot as compact JSON.
    pub fn to_json(&self) -> String {
        // A map of plain records cannot fail to serialize.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The record of a zone.
    pub fn get(&self, zone: &ZoneId) -> Option<&ZoneRecord> {
        self.zones.get(zone)
    }

    /// Merges a freshly polled record into the snapshot. The new record wins
    /// unless the old one is still valid at `now` (younger than `max_age_seconds`
    /// and before its `valid_until`) and of better [`crate::Quality`]: a good
    /// value is never replaced by a worse one.
    pub fn merge(
        &mut self,
        zone: ZoneId,
        new: ZoneRecord,
        now: UnixSeconds,
        max_age_seconds: i64,
    ) -> MergeOutcome {
        match self.zones.get_mut(&zone) {
            None => {
                self.zones.insert(zone, new);
                MergeOutcome::Added
            }
            Some(old) => {
                if old.is_fresh(now, max_age_seconds) && old.quality() > new.quality() {
                    MergeOutcome::KeptBetter
                } else {
                    *old = new;
                    MergeOutcome::Replaced
                }
            }
        }
    }

    /// Notes on a zone's record that this poll failed, keeping the last good
    /// value (its age shows its staleness).
    pub fn mark_failed(&mut self, zone: &ZoneId, error: &str) {
        if let Some(old) = self.zones.get_mut(zone) {
            old.last_error = Some(error.to_owned());
        }
    }
}

fn parse_record(zone: &ZoneId, raw: serde_json::Value) -> Result<ZoneRecord, SnapshotError> {
    let invalid = |field: String, message: String| SnapshotError::InvalidField {
        zone: zone.to_string(),
        field,
        message,
    };
    if !raw.is_object() {
        return Err(invalid(
            ".".into(),
            format!("record must be an object, found {}", json_type(&raw)),
        ));
    }
    let record: ZoneRecord = serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is reported by serde at the parent path; name it.
        match inner.strip_prefix("missing field `") {
            Some(rest) => invalid(rest.trim_end_matches('`').to_owned(), "is missing".into()),
            None => invalid(path, inner),
        }
    })?;
    record
        .validate()
        .map_err(|(field, message)| invalid(field.to_owned(), message))?;
    Ok(record)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CarbonIntensity, Forecast, ForecastPoint, Source};

    const ORIGINAL: &str = r#"{"US-CA": {"carbon_intensity": 250.5, "timestamp": 1640995200, "source": "electricity_maps", "renewable_percentage": 45.2}}"#;

    #[test]
    fn reads_the_original_format() {
        let s = Snapshot::parse(ORIGINAL).unwrap();
        let r = s.get(&ZoneId::parse("US-CAL-CISO").unwrap()).unwrap();
        assert_eq!(r.carbon_intensity.g_per_kwh(), 250.5);
        assert_eq!(r.timestamp, 1_640_995_200);
        assert_eq!(r.source.as_str(), "electricity_maps");
        assert_eq!(r.renewable_percentage, Some(45.2));
        assert!(!r.estimated);
    }

    #[test]
    fn writes_what_the_original_readers_read() {
        let s = Snapshot::parse(ORIGINAL).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        let r = &v["US-CAL-CISO"];
        assert_eq!(r["carbon_intensity"], 250.5);
        assert_eq!(r["timestamp"], 1_640_995_200);
        assert_eq!(r["source"], "electricity_maps");
        assert_eq!(r["renewable_percentage"], 45.2);
        assert_eq!(Snapshot::parse(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let s = Snapshot::parse(
            r#"{"DE": {"carbon_intensity": 1, "timestamp": 5, "source": "x", "new_field": [1]}}"#,
        )
        .unwrap();
        assert_eq!(s.zones.len(), 1);
    }

    #[test]
    fn errors_name_zone_and_field() {
        let cases = [
            (
                r#"{"DE": {"carbon_intensity": "high", "timestamp": 5, "source": "x"}}"#,
                "zone DE: field `carbon_intensity`",
            ),
            (
                r#"{"DE": {"timestamp": 5, "source": "x"}}"#,
                "zone DE: field `carbon_intensity`: is missing",
            ),
            (
                r#"{"GB": {"carbon_intensity": -4, "timestamp": 5, "source": "x"}}"#,
                "zone GB: field `carbon_intensity`: -4 g/kWh is negative",
            ),
            (
                r#"{"GB": {"carbon_intensity": 4, "timestamp": 5, "source": "x", "renewable_percentage": 140}}"#,
                "zone GB: field `renewable_percentage`",
            ),
            (
                r#"{"GB": {"carbon_intensity": 4, "timestamp": 5, "source": "x", "forecast": {"start": 0, "step_seconds": 3600, "values": [1, "x"]}}}"#,
                "zone GB: field `forecast.values[1]`",
            ),
            (
                r#"{"GB": 7}"#,
                "zone GB: field `.`: record must be an object",
            ),
            (r#"{"G B": {}}"#, "snapshot key \"G B\" is not a zone id"),
            (
                "[1,2]",
                "must be a JSON object keyed by zone id, found an array",
            ),
            ("{\"DE\": {", "not valid JSON (line 1"),
            ("", "not valid JSON"),
        ];
        for (json, want) in cases {
            let err = Snapshot::parse(json).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn one_bad_zone_does_not_take_down_the_rest() {
        let (s, errors) = Snapshot::parse_lenient(
            r#"{"DE": {"carbon_intensity": "x", "timestamp": 5, "source": "x"},
                "GB": {"carbon_intensity": 100, "timestamp": 5, "source": "x"}}"#,
        )
        .unwrap();
        assert_eq!(s.zones.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().starts_with("zone DE"));
    }

    #[test]
    fn duplicate_alias_is_reported() {
        let (s, errors) = Snapshot::parse_lenient(
            r#"{"US-CA": {"carbon_intensity": 1, "timestamp": 5, "source": "x"},
                "US-CAL-CISO": {"carbon_intensity": 2, "timestamp": 5, "source": "x"}}"#,
        )
        .unwrap();
        assert_eq!(s.zones.len(), 1);
        assert!(matches!(errors[0], SnapshotError::DuplicateZone { .. }));
    }

    fn record(v: f64, ts: i64, source: &str, estimated: bool) -> ZoneRecord {
        let mut r = ZoneRecord::new(CarbonIntensity::new(v).unwrap(), ts, Source::new(source));
        r.estimated = estimated;
        r
    }

    #[test]
    fn merge_never_replaces_a_valid_good_value_with_a_worse_one() {
        let de = ZoneId::parse("DE").unwrap();
        let mut s = Snapshot::default();
        let now = 10_000;
        assert_eq!(
            s.merge(
                de.clone(),
                record(100.0, now, "electricity_maps", false),
                now,
                1800
            ),
            MergeOutcome::Added
        );
        // A static fallback while the measurement is fresh: kept.
        assert_eq!(
            s.merge(
                de.clone(),
                record(400.0, now + 60, "static", true),
                now + 60,
                1800
            ),
            MergeOutcome::KeptBetter
        );
        assert_eq!(s.get(&de).unwrap().carbon_intensity.g_per_kwh(), 100.0);
        // Once the measurement is stale, an estimate is better than nothing.
        let later = now + 3600;
        assert_eq!(
            s.merge(
                de.clone(),
                record(300.0, later, "noaa_estimate", true),
                later,
                1800
            ),
            MergeOutcome::Replaced
        );
        // A newer measurement always replaces.
        assert_eq!(
            s.merge(
                de.clone(),
                record(90.0, later + 1, "electricity_maps", false),
                later + 1,
                1800
            ),
            MergeOutcome::Replaced
        );
    }

    #[test]
    fn three_hundred_zones_with_full_forecasts_fit_a_configmap() {
        let mut s = Snapshot::default();
        for i in 0..300 {
            let pts: Vec<_> = (0..200)
                .map(|h| ForecastPoint {
                    time: 1_700_000_000 + h * 3600,
                    intensity: CarbonIntensity::new(123.456 + f64::from(i) + h as f64 * 0.37)
                        .unwrap(),
                })
                .collect();
            let mut r = record(512.345, 1_700_000_000, "electricity_maps", false);
            r.renewable_percentage = Some(45.25);
            r.fetched_at = Some(1_700_000_100);
            r.valid_until = Some(1_700_003_700);
            r.forecast = Forecast::from_points(&pts, 3600);
            r.last_error = Some("electricity_maps: HTTP 503 after 3 attempts".into());
            s.zones
                .insert(ZoneId::parse(&format!("ZONE-{i:03}")).unwrap(), r);
        }
        let json = s.to_json();
        assert!(json.len() < 256 * 1024, "snapshot is {} bytes", json.len());
        assert_eq!(Snapshot::parse(&json).unwrap(), s);
    }
}
