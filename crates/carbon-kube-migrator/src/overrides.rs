//! Runtime overrides of the migration rule: the migrator watches the
//! `carbon-kube-config` ConfigMap (the one the extender and the gate
//! controller read, and the tuner writes in active mode) and lays its
//! `migration.*` keys (`margin`, `minDwellSeconds`, `minNetSavingGrams`,
//! `minImprovementGPerKwh`; codec `carbon_kube_policy::overrides`) over the
//! flags at the start of every cycle, until the override's `validUntil`;
//! after it, or when the ConfigMap is deleted or has no migration keys, the
//! flags apply again.
//!
//! A bad migration section (unreadable value, unknown `migration.*` key,
//! value out of range, unreadable `validUntil`) is rejected whole, logged
//! with every field path and counted
//! (`carbon_kube_migrator_override_errors_total`); the previous override
//! stays, as in the extender and the gate controller. Keys of other
//! sections are not read here: a mistake in them never changes the
//! migrator's settings.
//!
//! Which settings are in force and where they came from is logged when it
//! changes and exported as `carbon_kube_migrator_setting{setting,source}`
//! (`source`: `flags` or `carbon-kube-config`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use carbon_kube_k8s::Readiness;
use carbon_kube_k8s::config_watch::watch_configmap;
use carbon_kube_model::UnixSeconds;
use carbon_kube_policy::migration::MigrationConfig;
use carbon_kube_policy::overrides::MigrationOverrides;
use carbon_kube_policy::placement::ConfigErrors;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

/// A validated migration override.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationOverride {
    /// The `migration.*` keys set.
    pub settings: MigrationOverrides,
    /// Its `validUntil`, if any.
    pub valid_until: Option<UnixSeconds>,
}

/// The override in force (validated against the flags), if any.
pub type OverrideState = Arc<RwLock<Option<MigrationOverride>>>;

/// Where the settings in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingSource {
    /// The command-line flags (no override, or it expired).
    Flags,
    /// The `carbon-kube-config` ConfigMap's `migration.*` keys laid over the flags.
    ConfigMap,
}

impl SettingSource {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flags => "flags",
            Self::ConfigMap => "carbon-kube-config",
        }
    }
}

/// Reads one version of the ConfigMap's data: `Ok(None)` when it has no
/// migration keys, `Err` with every problem otherwise.
pub fn read_overrides(
    data: Option<&BTreeMap<String, String>>,
    base: &MigrationConfig,
    path_prefix: &str,
) -> Result<Option<MigrationOverride>, ConfigErrors> {
    let empty = BTreeMap::new();
    let (settings, valid_until) =
        MigrationOverrides::from_string_map(data.unwrap_or(&empty), path_prefix)?;
    settings.apply(base, path_prefix)?;
    Ok((!settings.is_empty()).then_some(MigrationOverride {
        settings,
        valid_until,
    }))
}

/// The migration settings for a cycle at `now`: the flags, with the
/// override laid on top unless it has expired, and where they came from.
pub fn effective_migration(
    base: &MigrationConfig,
    overrides: Option<&MigrationOverride>,
    now: UnixSeconds,
) -> (MigrationConfig, SettingSource) {
    match overrides.filter(|o| o.valid_until.is_none_or(|t| now <= t)) {
        // Validated when read; a failure here cannot happen, but falls back.
        Some(o) => o.settings.apply(base, "").map_or_else(
            |_| (base.clone(), SettingSource::Flags),
            |c| (c, SettingSource::ConfigMap),
        ),
        None => (base.clone(), SettingSource::Flags),
    }
}

/// Labels `{setting, source}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettingLabels {
    /// The key without its section (`margin`, `minDwellSeconds`, …).
    pub setting: &'static str,
    /// `flags` or `carbon-kube-config`.
    pub source: &'static str,
}

/// The overrides' metrics.
#[derive(Clone, Debug, Default)]
pub struct OverrideMetrics {
    /// `carbon_kube_migrator_setting{setting,source}`: the value in force of
    /// each overridable setting, labelled with where it came from.
    pub setting: Family<SettingLabels, Gauge<f64, AtomicU64>>,
    /// `carbon_kube_migrator_override_errors_total`: rejected overrides.
    pub errors: Counter,
}

impl OverrideMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "carbon_kube_migrator_setting",
            "Migration settings in force (margin, minDwellSeconds, minNetSavingGrams, minImprovementGPerKwh) by where they came from (flags or carbon-kube-config)",
            m.setting.clone(),
        );
        registry.register(
            "carbon_kube_migrator_override_errors",
            "Versions of carbon-kube-config whose migration keys were rejected (the previous settings stay)",
            m.errors.clone(),
        );
        m
    }

    /// Exports the settings in force (only the current source's series).
    pub fn observe(&self, cfg: &MigrationConfig, source: SettingSource) {
        self.setting.clear();
        #[allow(clippy::cast_precision_loss)] // seconds: far below 2^52
        let values = [
            ("margin", cfg.margin),
            ("minDwellSeconds", cfg.min_dwell_seconds as f64),
            ("minNetSavingGrams", cfg.min_net_saving_grams),
            ("minImprovementGPerKwh", cfg.min_improvement_g_per_kwh),
        ];
        for (setting, value) in values {
            self.setting
                .get_or_create(&SettingLabels {
                    setting,
                    source: source.as_str(),
                })
                .set(value);
        }
    }
}

/// Where [`watch_overrides`] puts what it reads.
#[derive(Clone)]
pub struct OverrideSink {
    /// The override in force.
    pub state: OverrideState,
    /// Readiness: `overrides` is set after the first list.
    pub readiness: Readiness,
    /// Counts rejected overrides.
    pub metrics: OverrideMetrics,
    /// Woken on every change (a cycle follows).
    pub changed: Arc<Notify>,
}

/// Watches the overrides ConfigMap `namespace/name` (validated over `base`,
/// the flags) into `sink.state` and wakes the cycle loop on every change.
/// Sets readiness `overrides` after the first list: the migrator moves
/// nothing before it knows which settings apply.
pub async fn watch_overrides(
    client: kube::Client,
    namespace: String,
    name: String,
    base: MigrationConfig,
    sink: OverrideSink,
) {
    let prefix = format!("ConfigMap {name}: ");
    let OverrideSink {
        state,
        readiness,
        metrics,
        changed,
    } = sink;
    watch_configmap(client, &namespace, &name, readiness, "overrides", |cm| {
        let data = cm.and_then(|c| c.data.as_ref());
        match read_overrides(data, &base, &prefix) {
            Ok(o) => {
                let mut st = state.write().unwrap_or_else(|e| e.into_inner());
                if *st != o {
                    tracing::info!(
                        configmap = %name,
                        migration = ?o.as_ref().map(|o| &o.settings),
                        valid_until = ?o.as_ref().and_then(|o| o.valid_until),
                        "migration overrides read; they apply from the next cycle"
                    );
                }
                *st = o;
            }
            Err(e) => {
                metrics.errors.inc();
                tracing::error!(
                    error = %e,
                    "rejected the migration override; keeping the previous settings"
                );
            }
        }
        changed.notify_one();
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_override_applies_until_it_expires_then_the_flags_do() {
        let base = MigrationConfig::default();
        let o = read_overrides(
            Some(&data(&[
                ("migration.margin", "3"),
                ("migration.minDwellSeconds", "600"),
                ("threshold", "300"),
                ("validUntil", "2026-12-07T18:00:00Z"),
            ])),
            &base,
            "",
        )
        .unwrap()
        .unwrap();
        let until = o.valid_until.unwrap();
        let (c, source) = effective_migration(&base, Some(&o), until);
        assert_eq!(source, SettingSource::ConfigMap);
        assert_eq!((c.margin, c.min_dwell_seconds), (3.0, 600));
        assert_eq!(c.horizon_seconds, base.horizon_seconds);
        let (c, source) = effective_migration(&base, Some(&o), until + 1);
        assert_eq!((c, source), (base.clone(), SettingSource::Flags));
        // No migration keys: nothing for the migrator.
        assert_eq!(
            read_overrides(Some(&data(&[("threshold", "300")])), &base, "").unwrap(),
            None
        );
        assert_eq!(read_overrides(None, &base, "").unwrap(), None);
    }

    #[test]
    fn bad_migration_keys_are_rejected_with_their_paths() {
        let base = MigrationConfig::default();
        let e = read_overrides(
            Some(&data(&[
                ("migration.margn", "1"),
                ("migration.margin", "-2"),
                ("carbonWeight", "lots"),
            ])),
            &base,
            "cm: ",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cm: migration.margn: unknown setting"), "{e}");
        assert!(!e.contains("carbonWeight"), "{e}");
        let e =
            read_overrides(Some(&data(&[("migration.margin", "-2")])), &base, "cm: ").unwrap_err();
        assert_eq!(e.0[0].path, "cm: migration.margin");
    }

    #[test]
    fn the_setting_metric_names_the_source() {
        let mut registry = Registry::default();
        let m = OverrideMetrics::register(&mut registry);
        let cfg = MigrationConfig {
            margin: 2.5,
            ..MigrationConfig::default()
        };
        m.observe(&cfg, SettingSource::ConfigMap);
        m.observe(&cfg, SettingSource::Flags);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"carbon_kube_migrator_setting{setting="margin",source="flags"} 2.5"#),
            "{text}"
        );
        assert!(!text.contains(r#"source="carbon-kube-config""#), "{text}");
    }
}
