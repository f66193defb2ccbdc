//! Hostile input (issue 18): the snapshot ConfigMap parser
//! (`snapshot_from_configmap`, the model's `Snapshot::parse_lenient`) fed
//! damaged snapshots built from real 2023 Electricity Maps hours.
//!
//! Properties: no panic; a whole-snapshot failure names the JSON position or
//! what was found; a bad zone never spoils the others (each good zone is
//! read exactly as written, and the error names the bad zone); allocation
//! bounded by the text size. `PROPTEST_CASES` raises the case count.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::alloc::System;
use std::collections::BTreeMap;

use carbon_kube_k8s::snapshot_store::{StoreError, snapshot_from_configmap};
use carbon_kube_model::{
    CarbonIntensity, Forecast, ForecastPoint, Snapshot, SnapshotError, Source, ZoneId, ZoneRecord,
    keys,
};
use carbon_kube_testkit::hostile::{
    self, INSTRUMENTED_SYSTEM, StatsAlloc, allocated_by, hostile_value, mutated_json, pointers,
};
use carbon_kube_testkit::shared_data;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use proptest::prelude::*;
use serde_json::Value;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// `(unix time, direct g/kWh)` of 48 hours from hour 4000 of a 2023 file.
fn hours(zone: &str) -> Vec<(i64, f64)> {
    let path = shared_data().join(format!(
        "carbon_intensity/electricitymaps_hourly/{zone}_2023_hourly.csv"
    ));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .skip(1 + 4000)
        .take(48)
        .map(|l| {
            let f: Vec<&str> = l.splitn(6, ',').collect();
            let t = format!("{}Z", f[0].replace(' ', "T"))
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second();
            (t, f[4].parse().unwrap())
        })
        .collect()
}

/// A snapshot of four real zones, each with its current hour and a 47-hour
/// forecast, as the poller publishes it.
fn real_snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    for (zone, source) in [
        ("DE", Source::ELECTRICITY_MAPS),
        ("GB", Source::UK_CARBON_INTENSITY),
        ("US-CAL-CISO", Source::WATTTIME),
        ("US-TEX-ERCO", Source::STATIC),
    ] {
        let h = hours(zone);
        let mut r = ZoneRecord::new(
            CarbonIntensity::new(h[0].1).unwrap(),
            h[0].0,
            Source::new(source),
        );
        r.fetched_at = Some(h[0].0 + 120);
        r.valid_until = Some(h[0].0 + 7200);
        r.renewable_percentage = Some(41.5);
        let points: Vec<ForecastPoint> = h[1..]
            .iter()
            .map(|&(time, v)| ForecastPoint {
                time,
                intensity: CarbonIntensity::new(v).unwrap(),
            })
            .collect();
        r.forecast = Forecast::from_points(&points, 3600);
        s.zones.insert(ZoneId::parse(zone).unwrap(), r);
    }
    s
}

fn configmap(text: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(keys::SNAPSHOT_CONFIGMAP.to_owned()),
            namespace: Some("carbon-kube".to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(keys::SNAPSHOT_KEY.to_owned(), text)])),
        ..ConfigMap::default()
    }
}

type Parsed = Result<(Snapshot, Vec<SnapshotError>), StoreError>;

fn parse_measured(text: String) -> Result<(Parsed, usize), TestCaseError> {
    let len = text.len();
    let cm = configmap(text);
    let (parsed, bytes) = allocated_by(GLOBAL, || snapshot_from_configmap(&cm));
    prop_assert!(
        bytes <= 64 * len + (1 << 20),
        "{bytes} bytes allocated for {len} bytes"
    );
    Ok((parsed, bytes))
}

fn error_is_clear(e: &SnapshotError) -> bool {
    match e {
        SnapshotError::InvalidJson { message, .. } => !message.is_empty(),
        SnapshotError::NotAnObject { found } => !found.is_empty(),
        SnapshotError::InvalidZone { key: _, source } => !source.to_string().is_empty(),
        SnapshotError::DuplicateZone { zone, .. } => !zone.is_empty(),
        SnapshotError::InvalidField {
            zone,
            field,
            message,
        } => !zone.is_empty() && !field.is_empty() && !message.is_empty(),
    }
}

proptest! {
    #![proptest_config(hostile::config(256))]

    #[test]
    fn damaged_snapshots_keep_the_good_zones_and_name_the_bad(
        m in mutated_json(serde_json::to_value(real_snapshot()).unwrap())
    ) {
        let _serial = hostile::serial();
        let text = String::from_utf8_lossy(&m.text).into_owned();
        let (parsed, _) = parse_measured(text)?;
        match parsed {
            Ok((snap, errors)) => {
                for e in &errors {
                    prop_assert!(error_is_clear(e), "{e}");
                }
                // Whatever was accepted is a valid record that round-trips.
                let again = Snapshot::parse(&snap.to_json());
                prop_assert_eq!(again.map_err(|e| e.to_string()), Ok(snap));
            }
            Err(StoreError::Malformed { source, name, .. }) => {
                prop_assert_eq!(name, keys::SNAPSHOT_CONFIGMAP);
                prop_assert!(error_is_clear(&source), "{source}");
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    /// One field of one zone (or the whole zone) replaced: every other zone
    /// is read exactly as published.
    #[test]
    fn one_bad_zone_never_spoils_the_others(
        zone_index in 0usize..4,
        field in 0usize..64,
        v in hostile_value(),
    ) {
        let _serial = hostile::serial();
        let snap = real_snapshot();
        let mut doc = serde_json::to_value(&snap).unwrap();
        let zone = snap.zones.keys().nth(zone_index).unwrap().to_string();
        let ptrs = pointers(&doc[&zone]);
        let ptr = format!("/{zone}{}", ptrs[field % ptrs.len()]);
        *doc.pointer_mut(&ptr).unwrap() = v;
        let (parsed, _) = parse_measured(doc.to_string())?;
        let (got, errors) = parsed.map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (z, r) in &snap.zones {
            if z.as_str() != zone {
                prop_assert_eq!(got.zones.get(z), Some(r), "zone {} changed", z);
            }
        }
        prop_assert!(errors.len() <= 1, "{errors:?}");
        if got.zones.len() < snap.zones.len() {
            prop_assert_eq!(errors.len(), 1);
            let msg = errors[0].to_string();
            prop_assert!(msg.contains(&zone), "error does not name zone {zone}: {msg}");
        }
    }
}

#[test]
fn deleted_truncated_garbage_and_deep_configmaps_are_refused_clearly() {
    let _serial = hostile::serial();
    let good = real_snapshot().to_json();
    // No data key at all (the ConfigMap emptied).
    let mut cm = configmap(String::new());
    cm.data = None;
    let e = snapshot_from_configmap(&cm).unwrap_err();
    assert!(matches!(e, StoreError::MissingKey { .. }), "{e}");
    assert!(e.to_string().contains(keys::SNAPSHOT_KEY), "{e}");
    // Truncated anywhere: refused naming line and column, never a panic.
    for cut in (0..good.len()).step_by(97) {
        let text = good[..cut].to_owned();
        match snapshot_from_configmap(&configmap(text)) {
            Err(StoreError::Malformed { source, .. }) => {
                let m = source.to_string();
                assert!(
                    m.contains("line 1, column") || m.contains("found"),
                    "{cut}: {m}"
                );
            }
            other => panic!("{cut}: truncated snapshot accepted: {other:?}"),
        }
    }
    // 1 MiB of garbage: bytes that are not JSON, and JSON that is not a
    // snapshot.
    let garbage: String = (0..1u32 << 20)
        .map(|i| char::from(b'!' + u8::try_from(i.wrapping_mul(2_654_435_761) >> 26).unwrap()))
        .collect();
    let (r, bytes) = allocated_by(GLOBAL, || snapshot_from_configmap(&configmap(garbage)));
    assert!(bytes < 8 << 20, "{bytes}");
    let e = r.unwrap_err();
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    let array = format!("[{}0]", "0,".repeat(1 << 19));
    let e = snapshot_from_configmap(&configmap(array)).unwrap_err();
    assert!(e.to_string().contains("found an array"), "{e}");
    // Deep nesting in one zone: that zone is refused, the others kept.
    let mut doc: Value = serde_json::from_str(&good).unwrap();
    doc["GB"] = Value::Null;
    let text = doc
        .to_string()
        .replacen("null", &hostile::nested(100_000, ""), 1);
    let e = snapshot_from_configmap(&configmap(text)).unwrap_err();
    assert!(e.to_string().contains("recursion limit exceeded"), "{e}");
    let text = doc
        .to_string()
        .replacen("null", &hostile::nested(100, "1"), 1);
    let (snap, errors) = snapshot_from_configmap(&configmap(text)).unwrap();
    assert_eq!(snap.zones.len(), 3);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().starts_with("zone GB"),
        "{}",
        errors[0]
    );
}
