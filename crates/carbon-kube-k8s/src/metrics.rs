//! Metrics about the carbon data itself, exported by every component that
//! reads or writes the snapshot: `carbon_kube_carbon_intensity_current{zone,source}`
//! and `carbon_kube_carbon_data_age_seconds{zone}`; and [`SnapshotErrors`],
//! the controllers' count of broken snapshot ConfigMaps
//! (`carbon_kube_<component>_snapshot_errors_total{error}`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use carbon_kube_model::{Snapshot, UnixSeconds};
use k8s_openapi::api::core::v1::ConfigMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels `{zone}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    /// Electricity Maps zone id.
    pub zone: String,
}

/// Labels `{zone, source}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneSourceLabels {
    /// Electricity Maps zone id.
    pub zone: String,
    /// Provider of the value.
    pub source: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Gauges describing a snapshot: intensity by zone and source, and data age.
#[derive(Clone, Default)]
pub struct SnapshotGauges {
    intensity: Family<ZoneSourceLabels, FloatGauge>,
    age: Family<ZoneLabels, FloatGauge>,
    /// The source last exported per zone, so a change of source removes the
    /// old series instead of leaving a stale one behind.
    last_source: Arc<Mutex<BTreeMap<String, String>>>,
}

impl SnapshotGauges {
    /// Creates the gauges and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        registry.register(
            "carbon_kube_carbon_intensity_current",
            "Current grid carbon intensity by zone and data source, gCO2eq/kWh",
            gauges.intensity.clone(),
        );
        registry.register(
            "carbon_kube_carbon_data_age_seconds",
            "Age of each zone's carbon intensity measurement, seconds",
            gauges.age.clone(),
        );
        gauges
    }

    /// Sets the gauges from `snapshot` as seen at `now`.
    pub fn observe(&self, snapshot: &Snapshot, now: UnixSeconds) {
        let mut last = self.last_source.lock().unwrap_or_else(|e| e.into_inner());
        for (zone, record) in &snapshot.zones {
            let zone = zone.to_string();
            let source = record.source.to_string();
            if let Some(old) = last.get(&zone)
                && *old != source
            {
                self.intensity.remove(&ZoneSourceLabels {
                    zone: zone.clone(),
                    source: old.clone(),
                });
            }
            self.intensity
                .get_or_create(&ZoneSourceLabels {
                    zone: zone.clone(),
                    source: source.clone(),
                })
                .set(record.carbon_intensity.g_per_kwh());
            // Ages are far below 2^53 seconds: exact in f64.
            #[allow(clippy::cast_precision_loss)]
            self.age
                .get_or_create(&ZoneLabels { zone: zone.clone() })
                .set(record.age_seconds(now) as f64);
            last.insert(zone, source);
        }
        // Zones that left the snapshot leave the metrics too.
        let gone: Vec<String> = last
            .keys()
            .filter(|z| !snapshot.zones.keys().any(|k| k.as_str() == z.as_str()))
            .cloned()
            .collect();
        for zone in gone {
            if let Some(source) = last.remove(&zone) {
                self.intensity.remove(&ZoneSourceLabels {
                    zone: zone.clone(),
                    source,
                });
            }
            self.age.remove(&ZoneLabels { zone });
        }
    }
}

/// Labels `{error}`: `unreadable` or `bad_zone`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotErrorLabels {
    /// `unreadable` (not a snapshot at all: the previous one is kept) or
    /// `bad_zone` (one zone ignored, the others used).
    pub error: &'static str,
}

/// A controller's reading of the snapshot ConfigMap with its error counter,
/// `carbon_kube_<component>_snapshot_errors_total{error}`: the extender
/// (`carbon_kube_scheduler_snapshot_errors_total`), the gate controller and
/// the migrator keep the last good snapshot when the ConfigMap is
/// unreadable and drop only the bad zones of a readable one; each problem
/// is a warning in the log and a count here.
#[derive(Clone, Debug, Default)]
pub struct SnapshotErrors {
    family: Family<SnapshotErrorLabels, Counter>,
}

impl SnapshotErrors {
    /// Registers `name` (e.g. `carbon_kube_gates_snapshot_errors`; the
    /// encoder adds `_total`) with both labels at zero.
    pub fn register(registry: &mut Registry, name: &str) -> Self {
        let errors = Self::default();
        for error in ["unreadable", "bad_zone"] {
            let _ = errors.family.get_or_create(&SnapshotErrorLabels { error });
        }
        registry.register(
            name,
            "Problems in the snapshot ConfigMap: unreadable (last good snapshot kept) or bad_zone (that zone ignored, the others used)",
            errors.family.clone(),
        );
        errors
    }

    /// The snapshot `cm` holds, without its bad zones (each logged and
    /// counted as `bad_zone`); `None` when it is unreadable (logged and
    /// counted as `unreadable`), so the caller keeps the last good one.
    pub fn read(&self, cm: &ConfigMap) -> Option<Snapshot> {
        match crate::snapshot_from_configmap(cm) {
            Ok((snapshot, errors)) => {
                for e in errors {
                    self.count("bad_zone");
                    tracing::warn!(error = %e, "ignoring a bad zone in the snapshot");
                }
                Some(snapshot)
            }
            Err(e) => {
                self.count("unreadable");
                tracing::warn!(error = %e, "snapshot unreadable; keeping the last good one");
                None
            }
        }
    }

    /// The count of `error` so far.
    pub fn get(&self, error: &'static str) -> u64 {
        self.family
            .get_or_create(&SnapshotErrorLabels { error })
            .get()
    }

    fn count(&self, error: &'static str) {
        self.family
            .get_or_create(&SnapshotErrorLabels { error })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_model::{CarbonIntensity, Source, ZoneId, ZoneRecord};

    fn snapshot(zone: &str, v: f64, source: &str) -> Snapshot {
        let mut s = Snapshot::default();
        s.zones.insert(
            ZoneId::parse(zone).unwrap(),
            ZoneRecord::new(CarbonIntensity::new(v).unwrap(), 1000, Source::new(source)),
        );
        s
    }

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn a_change_of_source_replaces_the_series() {
        let mut registry = Registry::default();
        let gauges = SnapshotGauges::register(&mut registry);
        gauges.observe(&snapshot("DE", 300.0, "electricity_maps"), 1060);
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"carbon_kube_carbon_intensity_current{zone="DE",source="electricity_maps"} 300.0"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"carbon_kube_carbon_data_age_seconds{zone="DE"} 60.0"#));
        gauges.observe(&snapshot("DE", 350.0, "static"), 1060);
        let text = encode(&registry);
        assert!(!text.contains("electricity_maps"), "{text}");
        assert!(text.contains(r#"{zone="DE",source="static"} 350.0"#));
        gauges.observe(&Snapshot::default(), 1060);
        assert!(!encode(&registry).contains("DE"));
    }

    fn configmap(text: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(
                carbon_kube_model::keys::SNAPSHOT_KEY.to_owned(),
                text.to_owned(),
            )])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn snapshot_errors_count_unreadable_configmaps_and_bad_zones() {
        let mut registry = Registry::default();
        let errors = SnapshotErrors::register(&mut registry, "carbon_kube_test_snapshot_errors");
        let text = encode(&registry);
        assert!(
            text.contains(r#"carbon_kube_test_snapshot_errors_total{error="unreadable"} 0"#),
            "{text}"
        );
        let good = snapshot("DE", 300.0, "electricity_maps").to_json();
        assert_eq!(errors.read(&configmap(&good)).unwrap().zones.len(), 1);
        assert!(errors.read(&configmap(&good[..good.len() / 2])).is_none());
        assert!(errors.read(&ConfigMap::default()).is_none());
        let mut doc: serde_json::Value = serde_json::from_str(&good).unwrap();
        doc["GB"] = serde_json::json!({"carbon_intensity": "high"});
        let read = errors.read(&configmap(&doc.to_string())).unwrap();
        assert_eq!(read.zones.len(), 1, "DE kept, GB dropped");
        assert_eq!((errors.get("unreadable"), errors.get("bad_zone")), (2, 1));
        let text = encode(&registry);
        assert!(
            text.contains(r#"carbon_kube_test_snapshot_errors_total{error="bad_zone"} 1"#),
            "{text}"
        );
    }
}
