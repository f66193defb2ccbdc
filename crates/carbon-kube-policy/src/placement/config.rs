//! Placement settings: a raw form as written by people (flags, a config
//! file, the `carbon-kube-config` ConfigMap), validated once into
//! [`PlacementConfig`], which reports every problem with its field path.

use std::collections::BTreeMap;
use std::fmt;

use carbon_kube_model::CarbonIntensity;
use serde::{Deserialize, Serialize};

/// What to do when every candidate node is above the threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnNoGreenNode {
    /// Keep every node and say why: the pod schedules on the greenest it can.
    #[default]
    FailOpen,
    /// Fail every node: the pod stays pending until a zone gets greener.
    Reject,
}

/// How a zone whose data is older than `maxDataAgeSeconds` (or past its
/// `valid_until`) is treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StaleData {
    /// As if the zone had no data: neither filtered nor favoured.
    #[default]
    Neutral,
    /// Use the last value anyway.
    UseLastValue,
}

/// How a zone whose value is an estimate (weather model, static average) is
/// treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EstimatedData {
    /// Estimates count like measurements.
    #[default]
    Use,
    /// As if the zone had no data.
    Neutral,
}

/// What the filter compares a zone's current intensity with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ThresholdMode {
    /// A fixed number of g/kWh (`threshold`): the seed's behaviour. Does not
    /// transfer between grids (250 g/kWh filters everything in one and
    /// nothing in another).
    #[default]
    Absolute,
    /// The `thresholdPercentile`-th percentile of the candidate zones'
    /// current intensities: "keep the cleaner part of the zones I could use
    /// now", whatever the grids' absolute level.
    ClusterPercentile,
    /// Each zone against itself: a zone passes when its current intensity is
    /// at or below the `thresholdPercentile`-th percentile of its own
    /// published forecast window (up to 72 h ahead, with the current value):
    /// "this zone is in one of its cleaner hours".
    ForecastPercentile,
}

/// Validated placement settings. Build it with [`PlacementConfigRaw::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct PlacementConfig {
    /// Nodes in zones above this intensity are filtered out (in
    /// [`ThresholdMode::Absolute`], and for pods with
    /// `carbon-kube.io/max-intensity` in every mode).
    pub threshold: CarbonIntensity,
    /// How the cluster's threshold is set.
    pub threshold_mode: ThresholdMode,
    /// Percentile (0–100) of the relative modes.
    pub threshold_percentile: f64,
    /// Weight of the carbon score (0–100).
    pub carbon_weight: u32,
    /// Weight of the free-capacity score (0–100).
    pub performance_weight: u32,
    /// Data older than this is stale.
    pub max_data_age_seconds: i64,
    /// What to do when no node is green enough.
    pub on_no_green_node: OnNoGreenNode,
    /// How stale zones are treated.
    pub stale_data: StaleData,
    /// How estimated values are treated.
    pub estimated_data: EstimatedData,
}

/// The seed's threshold, g/kWh.
pub const DEFAULT_THRESHOLD: f64 = 250.0;
/// The default percentile of the relative threshold modes: the cleaner half.
pub const DEFAULT_THRESHOLD_PERCENTILE: f64 = 50.0;
/// The seed's carbon weight.
pub const DEFAULT_CARBON_WEIGHT: u32 = 70;
/// The seed's performance weight.
pub const DEFAULT_PERFORMANCE_WEIGHT: u32 = 30;
/// The seed's maximum data age: 30 minutes.
pub const DEFAULT_MAX_DATA_AGE_SECONDS: i64 = 30 * 60;
/// The longest accepted maximum data age: one week.
pub const MAX_MAX_DATA_AGE_SECONDS: i64 = 7 * 24 * 3600;

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            threshold: CarbonIntensity::new(DEFAULT_THRESHOLD).unwrap_or(CarbonIntensity::ZERO),
            threshold_mode: ThresholdMode::Absolute,
            threshold_percentile: DEFAULT_THRESHOLD_PERCENTILE,
            carbon_weight: DEFAULT_CARBON_WEIGHT,
            performance_weight: DEFAULT_PERFORMANCE_WEIGHT,
            max_data_age_seconds: DEFAULT_MAX_DATA_AGE_SECONDS,
            on_no_green_node: OnNoGreenNode::FailOpen,
            stale_data: StaleData::Neutral,
            estimated_data: EstimatedData::Use,
        }
    }
}

impl PlacementConfig {
    /// The settings in raw form (every field set), e.g. to show them.
    pub fn to_raw(&self) -> PlacementConfigRaw {
        PlacementConfigRaw {
            threshold: Some(self.threshold.g_per_kwh()),
            threshold_mode: Some(self.threshold_mode.as_str().to_owned()),
            threshold_percentile: Some(self.threshold_percentile),
            carbon_weight: Some(i64::from(self.carbon_weight)),
            performance_weight: Some(i64::from(self.performance_weight)),
            max_data_age_seconds: Some(self.max_data_age_seconds),
            on_no_green_node: Some(self.on_no_green_node.as_str().to_owned()),
            stale_data: Some(self.stale_data.as_str().to_owned()),
            estimated_data: Some(self.estimated_data.as_str().to_owned()),
        }
    }
}

impl ThresholdMode {
    /// The configuration value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Absolute => "absolute",
            Self::ClusterPercentile => "clusterPercentile",
            Self::ForecastPercentile => "forecastPercentile",
        }
    }
}

impl OnNoGreenNode {
    /// The configuration value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "failOpen",
            Self::Reject => "reject",
        }
    }
}

impl StaleData {
    /// The configuration value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Neutral => "neutral",
            Self::UseLastValue => "useLastValue",
        }
    }
}

impl EstimatedData {
    /// The configuration value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Use => "use",
            Self::Neutral => "neutral",
        }
    }
}

/// Placement settings as written: every field optional, so a partial
/// override can be laid over a base. Field names are the configuration keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementConfigRaw {
    /// Threshold in g/kWh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// `absolute`, `clusterPercentile` or `forecastPercentile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_mode: Option<String>,
    /// Percentile of the relative modes, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percentile: Option<f64>,
    /// Carbon weight, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carbon_weight: Option<i64>,
    /// Performance weight, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance_weight: Option<i64>,
    /// Maximum data age in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_data_age_seconds: Option<i64>,
    /// `failOpen` or `reject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_no_green_node: Option<String>,
    /// `neutral` or `useLastValue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_data: Option<String>,
    /// `use` or `neutral`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_data: Option<String>,
}

/// One problem in a configuration, with the path of the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `carbonWeight`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// The configuration keys [`PlacementConfigRaw`] understands.
pub const CONFIG_KEYS: [&str; 9] = [
    "threshold",
    "thresholdMode",
    "thresholdPercentile",
    "carbonWeight",
    "performanceWeight",
    "maxDataAgeSeconds",
    "onNoGreenNode",
    "staleData",
    "estimatedData",
];

impl PlacementConfigRaw {
    /// Lays `over` on top of `self`: every field set in `over` wins.
    #[must_use]
    pub fn overlay(mut self, over: &Self) -> Self {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f.clone(); } )* };
        }
        take!(
            threshold,
            threshold_mode,
            threshold_percentile,
            carbon_weight,
            performance_weight,
            max_data_age_seconds,
            on_no_green_node,
            stale_data,
            estimated_data
        );
        self
    }

    /// Reads the placement keys of a string map (the data of a ConfigMap:
    /// `threshold: "200"`). Keys it does not know are returned, not rejected,
    /// because other components keep their settings in the same map.
    pub fn from_string_map(
        map: &BTreeMap<String, String>,
        path_prefix: &str,
    ) -> Result<(Self, Vec<String>), ConfigErrors> {
        let mut raw = Self::default();
        let mut errors = Vec::new();
        let mut unknown = Vec::new();
        for (key, value) in map {
            let value = value.trim();
            let path = format!("{path_prefix}{key}");
            let int = |errors: &mut Vec<ConfigError>| match value.parse::<i64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    errors.push(ConfigError {
                        path: path.clone(),
                        message: format!("{value:?} is not an integer"),
                    });
                    None
                }
            };
            match key.as_str() {
                // Non-finite numbers (`inf`, `1e999`) are refused here: they
                // would pass as "set" and serialize back as `null`.
                "threshold" => match value.parse::<f64>() {
                    Ok(v) if v.is_finite() => raw.threshold = Some(v),
                    _ => errors.push(ConfigError {
                        path,
                        message: format!("{value:?} is not a number of g/kWh"),
                    }),
                },
                "thresholdMode" => raw.threshold_mode = Some(value.to_owned()),
                "thresholdPercentile" => match value.parse::<f64>() {
                    Ok(v) if v.is_finite() => raw.threshold_percentile = Some(v),
                    _ => errors.push(ConfigError {
                        path,
                        message: format!("{value:?} is not a number (a percentile, 0-100)"),
                    }),
                },
                "carbonWeight" => raw.carbon_weight = int(&mut errors),
                "performanceWeight" => raw.performance_weight = int(&mut errors),
                "maxDataAgeSeconds" => raw.max_data_age_seconds = int(&mut errors),
                "onNoGreenNode" => raw.on_no_green_node = Some(value.to_owned()),
                "staleData" => raw.stale_data = Some(value.to_owned()),
                "estimatedData" => raw.estimated_data = Some(value.to_owned()),
                _ => unknown.push(key.clone()),
            }
        }
        if errors.is_empty() {
            Ok((raw, unknown))
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Validates against the defaults.
    pub fn validate(&self) -> Result<PlacementConfig, ConfigErrors> {
        self.validate_over(&PlacementConfig::default(), "")
    }

    /// Validates the fields that are set, taking the others from `base`.
    /// `path_prefix` is put before every field path in errors (e.g.
    /// `placement.`).
    pub fn validate_over(
        &self,
        base: &PlacementConfig,
        path_prefix: &str,
    ) -> Result<PlacementConfig, ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| {
            errors.push(ConfigError {
                path: format!("{path_prefix}{field}"),
                message,
            });
        };
        let mut cfg = base.clone();
        if let Some(t) = self.threshold {
            match CarbonIntensity::new(t) {
                Ok(t) => cfg.threshold = t,
                Err(e) => err("threshold", e),
            }
        }
        if let Some(v) = &self.threshold_mode {
            match v.as_str() {
                "absolute" => cfg.threshold_mode = ThresholdMode::Absolute,
                "clusterPercentile" => cfg.threshold_mode = ThresholdMode::ClusterPercentile,
                "forecastPercentile" => cfg.threshold_mode = ThresholdMode::ForecastPercentile,
                _ => err(
                    "thresholdMode",
                    format!("{v:?} is not one of absolute, clusterPercentile, forecastPercentile"),
                ),
            }
        }
        if let Some(p) = self.threshold_percentile {
            if p.is_finite() && (0.0..=100.0).contains(&p) {
                cfg.threshold_percentile = p;
            } else {
                err(
                    "thresholdPercentile",
                    format!("{p} is not a percentile between 0 and 100"),
                );
            }
        }
        let weight = |v: i64| u32::try_from(v).ok().filter(|w| *w <= 100);
        if let Some(w) = self.carbon_weight {
            match weight(w) {
                Some(w) => cfg.carbon_weight = w,
                None => err("carbonWeight", format!("{w} is not between 0 and 100")),
            }
        }
        if let Some(w) = self.performance_weight {
            match weight(w) {
                Some(w) => cfg.performance_weight = w,
                None => err("performanceWeight", format!("{w} is not between 0 and 100")),
            }
        }
        if let Some(age) = self.max_data_age_seconds {
            if (1..=MAX_MAX_DATA_AGE_SECONDS).contains(&age) {
                cfg.max_data_age_seconds = age;
            } else {
                err(
                    "maxDataAgeSeconds",
                    format!("{age} is not between 1 and {MAX_MAX_DATA_AGE_SECONDS} seconds"),
                );
            }
        }
        if let Some(v) = &self.on_no_green_node {
            match v.as_str() {
                "failOpen" => cfg.on_no_green_node = OnNoGreenNode::FailOpen,
                "reject" => cfg.on_no_green_node = OnNoGreenNode::Reject,
                _ => err(
                    "onNoGreenNode",
                    format!("{v:?} is not one of failOpen, reject"),
                ),
            }
        }
        if let Some(v) = &self.stale_data {
            match v.as_str() {
                "neutral" => cfg.stale_data = StaleData::Neutral,
                "useLastValue" => cfg.stale_data = StaleData::UseLastValue,
                _ => err(
                    "staleData",
                    format!("{v:?} is not one of neutral, useLastValue"),
                ),
            }
        }
        if let Some(v) = &self.estimated_data {
            match v.as_str() {
                "use" => cfg.estimated_data = EstimatedData::Use,
                "neutral" => cfg.estimated_data = EstimatedData::Neutral,
                _ => err("estimatedData", format!("{v:?} is not one of use, neutral")),
            }
        }
        if errors.is_empty() && cfg.carbon_weight == 0 && cfg.performance_weight == 0 {
            errors.push(ConfigError {
                path: format!("{path_prefix}carbonWeight"),
                message:
                    "carbonWeight and performanceWeight are both 0; at least one must be positive"
                        .into(),
            });
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed() {
        let cfg = PlacementConfigRaw::default().validate().unwrap();
        assert_eq!(cfg.threshold.g_per_kwh(), 250.0);
        assert_eq!((cfg.carbon_weight, cfg.performance_weight), (70, 30));
        assert_eq!(cfg.max_data_age_seconds, 1800);
        assert_eq!(cfg.on_no_green_node, OnNoGreenNode::FailOpen);
        assert_eq!(cfg.stale_data, StaleData::Neutral);
        assert_eq!(cfg.estimated_data, EstimatedData::Use);
        assert_eq!(cfg.to_raw().validate().unwrap(), cfg);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let raw: PlacementConfigRaw = serde_json::from_str(
            r#"{"threshold": -3, "thresholdMode": "relative", "thresholdPercentile": 101,
                "carbonWeight": 170, "performanceWeight": -1,
                "maxDataAgeSeconds": 0, "onNoGreenNode": "panic", "staleData": "x", "estimatedData": "y"}"#,
        )
        .unwrap();
        let errors = raw
            .validate_over(&PlacementConfig::default(), "placement.")
            .unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "placement.threshold",
                "placement.thresholdMode",
                "placement.thresholdPercentile",
                "placement.carbonWeight",
                "placement.performanceWeight",
                "placement.maxDataAgeSeconds",
                "placement.onNoGreenNode",
                "placement.staleData",
                "placement.estimatedData"
            ]
        );
        assert!(
            errors
                .to_string()
                .contains("\"panic\" is not one of failOpen, reject")
        );
    }

    #[test]
    fn relative_modes_read_from_a_string_map_and_round_trip() {
        let map: BTreeMap<String, String> = [
            ("thresholdMode", "clusterPercentile"),
            ("thresholdPercentile", "40"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (raw, unknown) = PlacementConfigRaw::from_string_map(&map, "").unwrap();
        assert!(unknown.is_empty());
        let cfg = raw.validate().unwrap();
        assert_eq!(cfg.threshold_mode, ThresholdMode::ClusterPercentile);
        assert_eq!(cfg.threshold_percentile, 40.0);
        // The absolute threshold keeps its default for pod annotations' sake.
        assert_eq!(cfg.threshold.g_per_kwh(), 250.0);
        assert_eq!(cfg.to_raw().validate().unwrap(), cfg);
        let json = serde_json::to_string(&cfg.to_raw()).unwrap();
        assert!(
            json.contains(r#""thresholdMode":"clusterPercentile""#),
            "{json}"
        );
        let bad: BTreeMap<String, String> =
            [("thresholdPercentile".to_owned(), "half".to_owned())].into();
        let err = PlacementConfigRaw::from_string_map(&bad, "cm: ").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cm: thresholdPercentile: \"half\" is not a number (a percentile, 0-100)"
        );
    }

    #[test]
    fn unknown_fields_in_a_config_file_are_rejected() {
        let err = serde_json::from_str::<PlacementConfigRaw>(r#"{"carbonWieght": 1}"#).unwrap_err();
        assert!(err.to_string().contains("carbonWieght"), "{err}");
    }

    #[test]
    fn zero_weights_are_rejected() {
        let raw = PlacementConfigRaw {
            carbon_weight: Some(0),
            performance_weight: Some(0),
            ..PlacementConfigRaw::default()
        };
        assert!(raw.validate().is_err());
    }

    #[test]
    fn a_string_map_overrides_a_base() {
        let map: BTreeMap<String, String> = [
            ("threshold", "180.5"),
            ("carbonWeight", " 90 "),
            ("onNoGreenNode", "reject"),
            ("deferral.maxDelay", "6h"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (raw, unknown) = PlacementConfigRaw::from_string_map(&map, "").unwrap();
        assert_eq!(unknown, ["deferral.maxDelay"]);
        let base = PlacementConfigRaw {
            performance_weight: Some(10),
            carbon_weight: Some(20),
            ..PlacementConfigRaw::default()
        };
        let cfg = base.overlay(&raw).validate().unwrap();
        assert_eq!(cfg.threshold.g_per_kwh(), 180.5);
        assert_eq!((cfg.carbon_weight, cfg.performance_weight), (90, 10));
        assert_eq!(cfg.on_no_green_node, OnNoGreenNode::Reject);

        let bad: BTreeMap<String, String> = [("carbonWeight".to_owned(), "lots".to_owned())].into();
        let err = PlacementConfigRaw::from_string_map(&bad, "configmap carbon-kube-config: ")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "configmap carbon-kube-config: carbonWeight: \"lots\" is not an integer"
        );
    }
}
