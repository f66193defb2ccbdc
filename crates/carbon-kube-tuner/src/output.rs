//! Promotion (is the tuned setting earned?) and the ConfigMap the tuner
//! writes.

use std::collections::BTreeMap;

use carbon_kube_model::keys;
use carbon_kube_policy::overrides::{DeferralOverrides, MigrationOverrides, RuntimeOverrides};
use carbon_kube_policy::placement::PlacementConfigRaw;
use serde::Serialize;

use crate::episode::{Evaluation, Knobs};

/// Whether a tuned setting beat the current one on validation.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// Published (or would be, in shadow mode).
    pub promoted: bool,
    /// Why, in one sentence.
    pub reason: String,
}

/// A tuned setting is promoted only if its validation reward beats the
/// current setting's by at least `margin` on *every* forecast-error seed.
pub fn promotion(tuned: &Evaluation, current: &Evaluation, margin: f64) -> Promotion {
    let gaps: Vec<f64> = tuned
        .reward_per_seed
        .iter()
        .zip(&current.reward_per_seed)
        .map(|(t, c)| t - c)
        .collect();
    let worst = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    if gaps.is_empty() {
        return Promotion {
            promoted: false,
            reason: "no validation seed was run".into(),
        };
    }
    if worst >= margin {
        Promotion {
            promoted: true,
            reason: format!(
                "beats the current setting on all {} validation seeds by at least {worst:.4} reward (margin {margin})",
                gaps.len()
            ),
        }
    } else {
        Promotion {
            promoted: false,
            reason: format!(
                "does not beat the current setting by the margin {margin} on every validation seed (worst gap {worst:.4}); keeping the static setting"
            ),
        }
    }
}

/// The runtime override for `knobs`, valid until `valid_until`. With the
/// migration knobs (tuned with `--migrate`) it carries `migration.margin`
/// and `migration.minDwellSeconds`, which the migrator applies.
pub fn overrides(knobs: &Knobs, valid_until: i64) -> RuntimeOverrides {
    RuntimeOverrides {
        placement: PlacementConfigRaw {
            threshold_mode: Some(
                if knobs.threshold_percentile.is_some() {
                    "clusterPercentile"
                } else {
                    "absolute"
                }
                .into(),
            ),
            threshold_percentile: knobs.threshold_percentile,
            carbon_weight: Some(i64::from(knobs.carbon_weight)),
            performance_weight: Some(i64::from(100 - knobs.carbon_weight.min(100))),
            ..PlacementConfigRaw::default()
        },
        deferral: DeferralOverrides {
            min_saving_fraction: Some(knobs.min_saving_fraction),
            error_margin_per_hour: Some(knobs.error_margin_per_hour),
            ..DeferralOverrides::default()
        },
        migration: MigrationOverrides {
            margin: knobs.migration_margin,
            min_dwell_seconds: knobs.min_dwell_seconds,
            ..MigrationOverrides::default()
        },
        valid_until: Some(valid_until),
        unknown: Vec::new(),
    }
}

/// Name of the ConfigMap the tuner writes in shadow mode: what it would
/// publish and why; no component reads it.
pub const SHADOW_CONFIGMAP: &str = "carbon-kube-tuner";

/// The ConfigMap to write, as JSON. Active and promoted: `carbon-kube-config`
/// with the tuned keys and `validUntil` (the components apply it until
/// then). Otherwise: `carbon-kube-tuner` with the same keys, read by no
/// component. Both carry the report in the annotation
/// `carbon-kube.io/tuner-report`.
pub fn configmap(
    namespace: &str,
    data: BTreeMap<String, String>,
    active: bool,
    promoted: bool,
    report_json: &str,
) -> serde_json::Value {
    let name = if active && promoted {
        keys::CONFIG_CONFIGMAP
    } else {
        SHADOW_CONFIGMAP
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/managed-by": "carbon-kube-tuner" },
            "annotations": { "carbon-kube.io/tuner-report": report_json },
        },
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(per_seed: &[f64]) -> Evaluation {
        Evaluation {
            reward_per_seed: per_seed.to_vec(),
            ..Evaluation::default()
        }
    }

    #[test]
    fn promotion_needs_the_margin_on_every_seed() {
        let current = eval(&[0.10, 0.12, 0.11]);
        assert!(promotion(&eval(&[0.13, 0.15, 0.14]), &current, 0.02).promoted);
        let p = promotion(&eval(&[0.13, 0.15, 0.115]), &current, 0.02);
        assert!(!p.promoted);
        assert!(
            p.reason.contains("keeping the static setting"),
            "{}",
            p.reason
        );
    }

    #[test]
    fn the_override_reads_back_with_the_shared_codec() {
        let knobs = Knobs::from_unit(&[0.4, 0.5, 0.2, 0.25]);
        let o = overrides(&knobs, 1_800_000_000);
        let data = o.to_string_map();
        let back = RuntimeOverrides::from_string_map(&data, "").unwrap();
        let cfg = back.placement.validate().unwrap();
        assert_eq!(cfg.threshold_percentile, 40.0);
        assert_eq!(cfg.carbon_weight + cfg.performance_weight, 100);
        assert_eq!(back.valid_until, Some(1_800_000_000));
        assert!(back.unknown.is_empty(), "{:?}", back.unknown);
        assert!(back.migration.is_empty());
        let cm = configmap("carbon-kube", data.clone(), false, true, "{}");
        assert_eq!(cm["metadata"]["name"], SHADOW_CONFIGMAP);
        let cm = configmap("carbon-kube", data, true, true, "{}");
        assert_eq!(cm["metadata"]["name"], keys::CONFIG_CONFIGMAP);
    }

    #[test]
    fn migration_knobs_are_published_as_the_migrators_keys() {
        let knobs = Knobs::from_unit(&[0.4, 0.5, 0.2, 0.25, 0.75, 0.5]);
        let data = overrides(&knobs, 1_800_000_000).to_string_map();
        assert_eq!(data["migration.margin"], "1.5");
        assert_eq!(data["migration.minDwellSeconds"], "10800");
        // Read back as the migrator reads it, and valid over its defaults.
        let (m, until) = MigrationOverrides::from_string_map(&data, "").unwrap();
        assert_eq!(until, Some(1_800_000_000));
        let cfg = m
            .apply(
                &carbon_kube_policy::migration::MigrationConfig::default(),
                "",
            )
            .unwrap();
        assert_eq!((cfg.margin, cfg.min_dwell_seconds), (1.5, 10_800));
    }
}
