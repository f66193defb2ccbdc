//! Runtime overrides: the codec of the `carbon-kube-config` ConfigMap, shared
//! by every component that reads it (the extender for placement keys, the
//! gate controller for `deferral.*` keys, the migrator for `migration.*`
//! keys, the tuner that writes it).
//!
//! A ConfigMap's data is a string map. Placement keys are the
//! [`PlacementConfigRaw`] field names (`threshold`, `thresholdMode`, …);
//! deferral keys are `deferral.` + the [`DeferralConfig`] field names in
//! camelCase (`deferral.minSavingFraction`); migration keys are
//! `migration.` + [`MIGRATION_KEYS`] (`migration.margin`); `validUntil`
//! (RFC 3339, e.g. `2026-12-07T18:00:00Z`) makes the whole override expire:
//! after it, every component falls back to its static settings (flags and
//! files) until the map is written again. Other keys are returned, not
//! rejected, because other components keep their settings in the same map;
//! the component that owns a section rejects unknown keys in it
//! ([`RuntimeOverrides::check_section`]: the gate controller for
//! `deferral.`).
//!
//! The `migration.` section is read by its owner alone
//! ([`MigrationOverrides::from_string_map`], strict: a bad value or an
//! unknown `migration.*` key is an error naming it). For everyone else
//! ([`RuntimeOverrides::from_string_map`]) a migration section with a bad
//! key is left out, never an error: a mistake in the migrator's keys never
//! takes the extender's placement keys or the gate controller's deferral
//! keys down with it (nor the other way round: the migrator reads only its
//! section and `validUntil`).

use std::collections::BTreeMap;

use carbon_kube_model::UnixSeconds;

use crate::deferral::DeferralConfig;
use crate::migration::MigrationConfig;
use crate::placement::{ConfigError, ConfigErrors, PlacementConfigRaw};

/// The key that makes an override expire.
pub const VALID_UNTIL_KEY: &str = "validUntil";

/// The deferral keys (after the `deferral.` prefix).
pub const DEFERRAL_KEYS: [&str; 6] = [
    "maxDataAgeSeconds",
    "errorMarginPerHour",
    "minSavingFraction",
    "capacityHeadroom",
    "startSafetySeconds",
    "revisionHysteresis",
];

/// The migration keys (after the `migration.` prefix): the migration rule's
/// thresholds ([`MigrationConfig`] field names), the ones the tuner searches
/// with `--migrate` first.
pub const MIGRATION_KEYS: [&str; 4] = [
    "margin",
    "minDwellSeconds",
    "minNetSavingGrams",
    "minImprovementGPerKwh",
];

fn parse_float(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("{value:?} is not a number")),
    }
}

fn parse_int(value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .map_err(|_| format!("{value:?} is not an integer"))
}

fn parse_valid_until(value: &str) -> Result<UnixSeconds, String> {
    value
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|_| format!("{value:?} is not an RFC 3339 time such as 2026-12-07T18:00:00Z"))
}

/// Migration settings as written (`migration.*`): every field optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MigrationOverrides {
    /// `migration.margin`: the saving must exceed the cost by this fraction.
    pub margin: Option<f64>,
    /// `migration.minDwellSeconds`: a pod younger than this stays.
    pub min_dwell_seconds: Option<i64>,
    /// `migration.minNetSavingGrams`: the smallest net saving of a move.
    pub min_net_saving_grams: Option<f64>,
    /// `migration.minImprovementGPerKwh`: how much greener a target must be.
    pub min_improvement_g_per_kwh: Option<f64>,
}

impl MigrationOverrides {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Reads the `migration.*` keys and `validUntil` of a ConfigMap's data,
    /// strictly: every unreadable value and every unknown `migration.*` key
    /// is an error named `{path_prefix}{key}`. Other keys are ignored (they
    /// belong to other components). Values are checked for range by
    /// [`Self::apply`].
    pub fn from_string_map(
        map: &BTreeMap<String, String>,
        path_prefix: &str,
    ) -> Result<(Self, Option<UnixSeconds>), ConfigErrors> {
        let mut out = Self::default();
        let mut valid_until = None;
        let mut errors = Vec::new();
        for (key, value) in map {
            let value = value.trim();
            let mut bad = |message: String| {
                errors.push(ConfigError {
                    path: format!("{path_prefix}{key}"),
                    message,
                });
            };
            if key == VALID_UNTIL_KEY {
                match parse_valid_until(value) {
                    Ok(t) => valid_until = Some(t),
                    Err(m) => bad(m),
                }
                continue;
            }
            let Some(field) = key.strip_prefix("migration.") else {
                continue;
            };
            let float = |bad: &mut dyn FnMut(String)| parse_float(value).map_err(bad).ok();
            let int = |bad: &mut dyn FnMut(String)| parse_int(value).map_err(bad).ok();
            match field {
                "margin" => out.margin = float(&mut bad),
                "minDwellSeconds" => out.min_dwell_seconds = int(&mut bad),
                "minNetSavingGrams" => out.min_net_saving_grams = float(&mut bad),
                "minImprovementGPerKwh" => out.min_improvement_g_per_kwh = float(&mut bad),
                _ => bad(format!(
                    "unknown setting; known: {}",
                    MIGRATION_KEYS.map(|k| format!("migration.{k}")).join(", ")
                )),
            }
        }
        if errors.is_empty() {
            Ok((out, valid_until))
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Lays the set fields over `base` and validates the result; errors name
    /// `{path_prefix}migration.<field>`.
    pub fn apply(
        &self,
        base: &MigrationConfig,
        path_prefix: &str,
    ) -> Result<MigrationConfig, ConfigErrors> {
        let mut cfg = base.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { cfg.$f = v; } )* };
        }
        take!(
            margin,
            min_dwell_seconds,
            min_net_saving_grams,
            min_improvement_g_per_kwh
        );
        cfg.validate().map(|()| cfg).map_err(|errors| {
            ConfigErrors(
                errors
                    .into_iter()
                    .map(|e| {
                        let (field, message) = e.split_once(": ").unwrap_or(("", e.as_str()));
                        ConfigError {
                            path: format!("{path_prefix}migration.{field}"),
                            message: message.to_owned(),
                        }
                    })
                    .collect(),
            )
        })
    }

    /// The set fields as ConfigMap entries (`migration.margin`).
    pub fn to_string_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(format!("migration.{k}"), v);
            }
        };
        put("margin", self.margin.map(|v| v.to_string()));
        put(
            "minDwellSeconds",
            self.min_dwell_seconds.map(|v| v.to_string()),
        );
        put(
            "minNetSavingGrams",
            self.min_net_saving_grams.map(|v| v.to_string()),
        );
        put(
            "minImprovementGPerKwh",
            self.min_improvement_g_per_kwh.map(|v| v.to_string()),
        );
        m
    }
}

/// Deferral settings as written: every field optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeferralOverrides {
    /// `deferral.maxDataAgeSeconds`.
    pub max_data_age_seconds: Option<i64>,
    /// `deferral.errorMarginPerHour`.
    pub error_margin_per_hour: Option<f64>,
    /// `deferral.minSavingFraction`.
    pub min_saving_fraction: Option<f64>,
    /// `deferral.capacityHeadroom`.
    pub capacity_headroom: Option<f64>,
    /// `deferral.startSafetySeconds`.
    pub start_safety_seconds: Option<i64>,
    /// `deferral.revisionHysteresis`.
    pub revision_hysteresis: Option<f64>,
}

impl DeferralOverrides {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Lays the set fields over `base` and validates the result; errors name
    /// `{path_prefix}deferral.<field>`.
    pub fn apply(
        &self,
        base: &DeferralConfig,
        path_prefix: &str,
    ) -> Result<DeferralConfig, ConfigErrors> {
        let mut cfg = base.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { cfg.$f = v; } )* };
        }
        take!(
            max_data_age_seconds,
            error_margin_per_hour,
            min_saving_fraction,
            capacity_headroom,
            start_safety_seconds,
            revision_hysteresis
        );
        cfg.validate().map(|()| cfg).map_err(|errors| {
            ConfigErrors(
                errors
                    .into_iter()
                    .map(|e| {
                        let (field, message) = e.split_once(": ").unwrap_or(("", e.as_str()));
                        ConfigError {
                            path: format!("{path_prefix}deferral.{field}"),
                            message: message.to_owned(),
                        }
                    })
                    .collect(),
            )
        })
    }

    /// The set fields as ConfigMap entries (`deferral.minSavingFraction`).
    pub fn to_string_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(format!("deferral.{k}"), v);
            }
        };
        put(
            "maxDataAgeSeconds",
            self.max_data_age_seconds.map(|v| v.to_string()),
        );
        put(
            "errorMarginPerHour",
            self.error_margin_per_hour.map(|v| v.to_string()),
        );
        put(
            "minSavingFraction",
            self.min_saving_fraction.map(|v| v.to_string()),
        );
        put(
            "capacityHeadroom",
            self.capacity_headroom.map(|v| v.to_string()),
        );
        put(
            "startSafetySeconds",
            self.start_safety_seconds.map(|v| v.to_string()),
        );
        put(
            "revisionHysteresis",
            self.revision_hysteresis.map(|v| v.to_string()),
        );
        m
    }
}

/// One reading of the `carbon-kube-config` ConfigMap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeOverrides {
    /// Placement keys.
    pub placement: PlacementConfigRaw,
    /// `deferral.*` keys.
    pub deferral: DeferralOverrides,
    /// `migration.*` keys, when the section reads cleanly (its owner, the
    /// migrator, reads it strictly with [`MigrationOverrides::from_string_map`]).
    pub migration: MigrationOverrides,
    /// `validUntil`: after this the whole override is ignored.
    pub valid_until: Option<UnixSeconds>,
    /// Keys no component of this crate knows (left to others).
    pub unknown: Vec<String>,
}

impl RuntimeOverrides {
    /// Reads a ConfigMap's data; every problem is reported with
    /// `{path_prefix}{key}`.
    pub fn from_string_map(
        map: &BTreeMap<String, String>,
        path_prefix: &str,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let (placement, rest) = match PlacementConfigRaw::from_string_map(map, path_prefix) {
            Ok(r) => r,
            Err(ConfigErrors(e)) => {
                errors.extend(e);
                let rest = map
                    .keys()
                    .filter(|k| !crate::placement::config::CONFIG_KEYS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                (PlacementConfigRaw::default(), rest)
            }
        };
        let mut out = Self {
            placement,
            ..Self::default()
        };
        for key in rest {
            let value = map.get(&key).map_or("", |v| v.trim());
            let path = format!("{path_prefix}{key}");
            let mut bad = |message: String| {
                errors.push(ConfigError {
                    path: path.clone(),
                    message,
                });
            };
            if key == VALID_UNTIL_KEY {
                match parse_valid_until(value) {
                    Ok(t) => out.valid_until = Some(t),
                    Err(m) => bad(m),
                }
                continue;
            }
            if key.starts_with("migration.") {
                // The migrator's section: read below, never an error here.
                continue;
            }
            let Some(field) = key.strip_prefix("deferral.") else {
                out.unknown.push(key);
                continue;
            };
            let float = |bad: &mut dyn FnMut(String)| parse_float(value).map_err(bad).ok();
            let int = |bad: &mut dyn FnMut(String)| parse_int(value).map_err(bad).ok();
            let d = &mut out.deferral;
            match field {
                "maxDataAgeSeconds" => d.max_data_age_seconds = int(&mut bad),
                "errorMarginPerHour" => d.error_margin_per_hour = float(&mut bad),
                "minSavingFraction" => d.min_saving_fraction = float(&mut bad),
                "capacityHeadroom" => d.capacity_headroom = float(&mut bad),
                "startSafetySeconds" => d.start_safety_seconds = int(&mut bad),
                "revisionHysteresis" => d.revision_hysteresis = float(&mut bad),
                _ => out.unknown.push(key),
            }
        }
        if let Ok((migration, _)) = MigrationOverrides::from_string_map(map, path_prefix) {
            out.migration = migration;
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Rejects unknown keys of a section a component owns (the gate
    /// controller owns `deferral.`): a typo there would otherwise be
    /// silently ignored.
    pub fn check_section(&self, section: &str, path_prefix: &str) -> Result<(), ConfigErrors> {
        let known = match section {
            "deferral." => DEFERRAL_KEYS.map(|k| format!("deferral.{k}")).join(", "),
            _ => String::from("none"),
        };
        let errors: Vec<ConfigError> = self
            .unknown
            .iter()
            .filter(|k| k.starts_with(section))
            .map(|k| ConfigError {
                path: format!("{path_prefix}{k}"),
                message: format!("unknown setting; known: {known}"),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Whether the override has expired at `now` (never, without `validUntil`).
    pub fn is_expired(&self, now: UnixSeconds) -> bool {
        self.valid_until.is_some_and(|t| now > t)
    }

    /// The override as ConfigMap data (what the tuner writes).
    pub fn to_string_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Ok(v) = serde_json::to_value(&self.placement)
            && let Some(obj) = v.as_object()
        {
            for (k, v) in obj {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                m.insert(k.clone(), text);
            }
        }
        m.extend(self.deferral.to_string_map());
        m.extend(self.migration.to_string_map());
        if let Some(t) = self
            .valid_until
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
        {
            m.insert(VALID_UNTIL_KEY.to_owned(), t.to_string());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn placement_deferral_and_expiry_are_read_and_round_trip() {
        let m = map(&[
            ("thresholdMode", "forecastPercentile"),
            ("thresholdPercentile", "35"),
            ("deferral.minSavingFraction", "0.07"),
            ("deferral.errorMarginPerHour", " 0.002 "),
            ("validUntil", "2026-12-07T18:00:00Z"),
            ("migration.margin", "0.8"),
            ("migration.minDwellSeconds", "1800"),
            ("poller.something", "x"),
        ]);
        let o = RuntimeOverrides::from_string_map(&m, "").unwrap();
        assert_eq!(o.placement.threshold_percentile, Some(35.0));
        assert_eq!(o.deferral.min_saving_fraction, Some(0.07));
        assert_eq!(o.migration.margin, Some(0.8));
        assert_eq!(o.migration.min_dwell_seconds, Some(1800));
        assert_eq!(o.unknown, ["poller.something"]);
        let until = o.valid_until.unwrap();
        assert!(!o.is_expired(until));
        assert!(o.is_expired(until + 1));
        let d = o.deferral.apply(&DeferralConfig::default(), "").unwrap();
        assert_eq!(d.min_saving_fraction, 0.07);
        assert_eq!(d.error_margin_per_hour, 0.002);
        assert_eq!(
            d.capacity_headroom,
            DeferralConfig::default().capacity_headroom
        );
        let back = RuntimeOverrides::from_string_map(&o.to_string_map(), "").unwrap();
        assert_eq!(back.placement, o.placement);
        assert_eq!(back.deferral, o.deferral);
        assert_eq!(back.migration, o.migration);
        assert_eq!(back.valid_until, o.valid_until);
    }

    #[test]
    fn migration_keys_are_read_strictly_by_their_owner_and_laid_over_the_flags() {
        let m = map(&[
            ("migration.margin", " 1.5 "),
            ("migration.minDwellSeconds", "600"),
            ("migration.minNetSavingGrams", "3"),
            ("migration.minImprovementGPerKwh", "40"),
            ("validUntil", "2026-12-07T18:00:00Z"),
            // Other components' keys are not the migrator's business.
            ("carbonWeight", "lots"),
            ("deferral.capacityHeadroom", "x"),
        ]);
        let (o, until) = MigrationOverrides::from_string_map(&m, "cm: ").unwrap();
        assert_eq!(until, Some(1_796_666_400));
        let cfg = o.apply(&MigrationConfig::default(), "cm: ").unwrap();
        assert_eq!(cfg.margin, 1.5);
        assert_eq!(cfg.min_dwell_seconds, 600);
        assert_eq!(cfg.min_net_saving_grams, 3.0);
        assert_eq!(cfg.min_improvement_g_per_kwh, 40.0);
        // What is not overridden keeps the flags' value.
        let base = MigrationConfig {
            horizon_seconds: 7200,
            ..MigrationConfig::default()
        };
        assert_eq!(o.apply(&base, "").unwrap().horizon_seconds, 7200);
        // Round trip through the tuner's encoder.
        let (back, _) = MigrationOverrides::from_string_map(&o.to_string_map(), "").unwrap();
        assert_eq!(back, o);
        assert!(MigrationOverrides::default().is_empty());
        assert!(!o.is_empty());
    }

    #[test]
    fn a_bad_migration_key_is_named_and_never_takes_the_other_sections_down() {
        let m = map(&[
            ("migration.margin", "lots"),
            ("migration.minDwell", "1h"),
            ("migration.minDwellSeconds", "1.5"),
            ("validUntil", "2026-12-07T18:00:00Z"),
            ("carbonWeight", "60"),
            ("performanceWeight", "40"),
            ("deferral.minSavingFraction", "0.2"),
        ]);
        let e = MigrationOverrides::from_string_map(&m, "ConfigMap carbon-kube-config: ")
            .unwrap_err()
            .to_string();
        for want in [
            "ConfigMap carbon-kube-config: migration.margin: \"lots\" is not a number",
            "ConfigMap carbon-kube-config: migration.minDwell: unknown setting; known: migration.margin, migration.minDwellSeconds",
            "ConfigMap carbon-kube-config: migration.minDwellSeconds: \"1.5\" is not an integer",
        ] {
            assert!(e.contains(want), "{want} not in {e}");
        }
        // The extender's and the gate controller's keys still read; the
        // broken migration section is left out for them.
        let o = RuntimeOverrides::from_string_map(&m, "").unwrap();
        assert_eq!(o.placement.carbon_weight, Some(60));
        assert_eq!(o.deferral.min_saving_fraction, Some(0.2));
        assert!(o.migration.is_empty());
        assert!(o.unknown.is_empty(), "{:?}", o.unknown);
        // A bad placement key does not hide the migration section from
        // its owner either.
        let m = map(&[("carbonWeight", "lots"), ("migration.margin", "2")]);
        assert!(RuntimeOverrides::from_string_map(&m, "").is_err());
        let (o, until) = MigrationOverrides::from_string_map(&m, "").unwrap();
        assert_eq!((o.margin, until), (Some(2.0), None));
        // A bad validUntil is the migrator's problem too: without it the
        // override could never expire.
        let m = map(&[("migration.margin", "2"), ("validUntil", "tomorrow")]);
        let e = MigrationOverrides::from_string_map(&m, "").unwrap_err();
        assert_eq!(e.0[0].path, "validUntil");
        // Out-of-range values are caught when laid over the flags, with
        // the key's path.
        let m = map(&[
            ("migration.margin", "-1"),
            ("migration.minDwellSeconds", "-5"),
        ]);
        let (o, _) = MigrationOverrides::from_string_map(&m, "").unwrap();
        let e = o.apply(&MigrationConfig::default(), "cm: ").unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["cm: migration.margin", "cm: migration.minDwellSeconds"]
        );
    }

    #[test]
    fn every_bad_key_is_named_with_its_path() {
        let typo =
            RuntimeOverrides::from_string_map(&map(&[("deferral.minSavingFracton", "0.1")]), "")
                .unwrap();
        assert_eq!(typo.unknown, ["deferral.minSavingFracton"]);
        let e = typo
            .check_section("deferral.", "cm: ")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "cm: deferral.minSavingFracton: unknown setting; known: deferral.maxDataAgeSeconds"
            ),
            "{e}"
        );
        assert!(typo.check_section("migration.", "").is_ok());
        let m = map(&[
            ("carbonWeight", "lots"),
            ("deferral.capacityHeadroom", "x"),
            ("validUntil", "tomorrow"),
        ]);
        let e = RuntimeOverrides::from_string_map(&m, "ConfigMap carbon-kube-config: ")
            .unwrap_err()
            .to_string();
        for want in [
            "ConfigMap carbon-kube-config: carbonWeight: \"lots\" is not an integer",
            "ConfigMap carbon-kube-config: deferral.capacityHeadroom: \"x\" is not a number",
            "ConfigMap carbon-kube-config: validUntil: \"tomorrow\" is not an RFC 3339 time",
        ] {
            assert!(e.contains(want), "{want} not in {e}");
        }
        // Out-of-range values are caught when laid over the base.
        let o = RuntimeOverrides::from_string_map(&map(&[("deferral.capacityHeadroom", "0")]), "")
            .unwrap();
        let e = o
            .deferral
            .apply(&DeferralConfig::default(), "cm: ")
            .unwrap_err();
        assert_eq!(e.0[0].path, "cm: deferral.capacityHeadroom");
    }
}
