//! Cluster score and hysteresis tests: hand-made snapshots for the rules, and
//! a week of real Electricity Maps hourly data (2023) for the churn.

use std::collections::BTreeMap;

use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};

use super::*;
use crate::placement::tests::year;
use crate::zone_map::{RegionZoneMap, Resources, node_zone};

/// 2023-03-01 00:00 UTC, on an hour boundary.
const NOW: i64 = 1_677_628_800;

fn ci(v: f64) -> CarbonIntensity {
    CarbonIntensity::new(v).unwrap()
}

fn zone(z: &str) -> ZoneId {
    ZoneId::parse(z).unwrap()
}

fn record(v: f64, at: i64) -> ZoneRecord {
    ZoneRecord::new(ci(v), at, Source::new(Source::ELECTRICITY_MAPS))
}

fn snapshot(zones: &[(&str, f64)]) -> Snapshot {
    let mut s = Snapshot::default();
    for (z, v) in zones {
        s.zones.insert(zone(z), record(*v, NOW - 60));
    }
    s
}

fn cap(z: Option<&str>, cpus: i64) -> ZoneCapacity {
    ZoneCapacity {
        zone: z.map(zone),
        cpu_millis: cpus * 1000,
        nodes: 1,
    }
}

fn now_only(reference: f64) -> ClusterScoreConfig {
    ClusterScoreConfig {
        reference: Reference::Fixed(ci(reference)),
        horizon_seconds: 0,
        ..ClusterScoreConfig::default()
    }
}

#[test]
fn capacity_weights_the_zones_and_the_reference_sets_zero() {
    let s = snapshot(&[("DE", 300.0), ("FR", 50.0)]);
    let score = cluster_score(
        &[cap(Some("DE"), 8), cap(Some("FR"), 2)],
        &s,
        &now_only(400.0),
        NOW,
    );
    // 0.8 × 300 + 0.2 × 50 = 250 g/kWh; 100 × (400 − 250) / 400 = 37.5.
    assert_eq!(score.intensity, Some(250.0));
    assert_eq!(score.value, 38);
    assert_eq!(score.coverage, 1.0);
    assert!(score.neutral.is_none());
    assert_eq!(score.zones[0].zone, Some(zone("DE")), "largest share first");
    // At the reference: 0; at twice it or more: −100; zero-carbon: +100.
    let at = |v: f64| {
        cluster_score(
            &[cap(Some("DE"), 1)],
            &snapshot(&[("DE", v)]),
            &now_only(400.0),
            NOW,
        )
        .value
    };
    assert_eq!(at(400.0), 0);
    assert_eq!(at(800.0), -100);
    assert_eq!(at(1200.0), -100);
    assert_eq!(at(0.0), 100);
    assert_eq!(at(200.0), 50);
}

#[test]
fn the_forecast_counts_over_the_horizon() {
    let mut s = snapshot(&[]);
    let mut r = record(400.0, NOW - 60);
    // Hour 0 (now) is the current value; hours 1.. are 100 g/kWh.
    r.forecast = Some(Forecast {
        start: NOW,
        step_seconds: 3600,
        values: vec![ci(400.0), ci(100.0), ci(100.0), ci(100.0)],
    });
    s.zones.insert(zone("DE"), r);
    let caps = [cap(Some("DE"), 4)];
    let two_hours = ClusterScoreConfig {
        horizon_seconds: 7200,
        ..now_only(400.0)
    };
    let now = cluster_score(&caps, &s, &now_only(400.0), NOW);
    let ahead = cluster_score(&caps, &s, &two_hours, NOW);
    assert_eq!(now.intensity, Some(400.0));
    assert_eq!(now.value, 0);
    // (400 + 100) / 2 = 250 → 100 × 150 / 400 = 37.5.
    assert_eq!(ahead.intensity, Some(250.0));
    assert_eq!(ahead.value, 38);
    assert!(
        ahead.explain().contains("over the next 2h"),
        "{}",
        ahead.explain()
    );
}

#[test]
fn missing_and_unknown_zones_pull_towards_neutral() {
    let s = snapshot(&[("FR", 40.0)]);
    let score = cluster_score(
        &[cap(Some("FR"), 4), cap(None, 2), cap(Some("PL"), 2)],
        &s,
        &now_only(400.0),
        NOW,
    );
    // FR alone would be +90; it has half the capacity.
    assert_eq!(score.coverage, 0.5);
    assert_eq!(score.value, 45);
    let text = score.explain();
    assert!(text.contains("unknown zone 25%: neutral"), "{text}");
    assert!(text.contains("PL 25% without data: neutral"), "{text}");
    assert!(
        text.contains("50% of the capacity with fresh data"),
        "{text}"
    );
}

#[test]
fn stale_data_scores_zero() {
    let mut s = snapshot(&[("FR", 40.0)]);
    // An hour old with the default maximum age of 30 minutes.
    if let Some(r) = s.zones.get_mut(&zone("FR")) {
        r.timestamp = NOW - 3600;
    }
    let score = cluster_score(&[cap(Some("FR"), 4)], &s, &now_only(400.0), NOW);
    assert_eq!(score.value, 0);
    assert_eq!(score.neutral, Some(Neutral::NoUsableData));
    assert_eq!(score.zones[0].state, ZoneState::Stale);
    let text = score.explain();
    assert!(
        text.contains("neutral") && text.contains("stale (60m old)"),
        "{text}"
    );
    // Past valid_until is stale too, however young.
    let mut s = snapshot(&[("FR", 40.0)]);
    if let Some(r) = s.zones.get_mut(&zone("FR")) {
        r.valid_until = Some(NOW - 1);
    }
    assert_eq!(
        cluster_score(&[cap(Some("FR"), 4)], &s, &now_only(400.0), NOW).neutral,
        Some(Neutral::NoUsableData)
    );
    // No nodes at all (a coverage of +0, not −0, which metrics would show).
    let empty = cluster_score(&[], &s, &now_only(400.0), NOW);
    assert_eq!(empty.neutral, Some(Neutral::NoCapacity));
    assert!(empty.coverage == 0.0 && empty.coverage.is_sign_positive());
}

#[test]
fn peer_zones_centre_the_scale_on_the_peers() {
    let s = snapshot(&[("DE", 300.0), ("FR", 100.0), ("PL", 700.0)]);
    let cfg = ClusterScoreConfig {
        reference: Reference::PeerZones(vec![zone("DE"), zone("FR"), zone("DE")]),
        horizon_seconds: 0,
        ..ClusterScoreConfig::default()
    };
    // Reference (300 + 100) / 2 = 200 (DE counted once).
    let fr = cluster_score(&[cap(Some("FR"), 1)], &s, &cfg, NOW);
    let de = cluster_score(&[cap(Some("DE"), 1)], &s, &cfg, NOW);
    assert_eq!(fr.reference, Some(200.0));
    assert_eq!((fr.value, de.value), (50, -50));
    assert!(
        fr.explain().contains("the mean of DE,FR,DE"),
        "{}",
        fr.explain()
    );
    // Peers without data: neutral, whatever the cluster's own data.
    let cfg = ClusterScoreConfig {
        reference: Reference::PeerZones(vec![zone("GB")]),
        ..cfg
    };
    let score = cluster_score(&[cap(Some("FR"), 1)], &s, &cfg, NOW);
    assert_eq!(
        (score.value, score.neutral),
        (0, Some(Neutral::NoReference))
    );
}

#[test]
fn capacities_sum_per_resolved_zone() {
    let node = |name: &str, z: Option<&str>, cpu: i64| {
        let mut labels = BTreeMap::new();
        if let Some(z) = z {
            labels.insert(keys::LABEL_GRID_ZONE.to_owned(), z.to_owned());
        }
        NodeView {
            name: name.to_owned(),
            labels,
            provider_id: None,
            allocatable: Resources::new(cpu, 1 << 30),
            requested: Resources::default(),
        }
    };
    let nodes = [
        node("a", Some("DE"), 4000),
        node("b", Some("DE"), 2000),
        node("c", None, 1000),
        node("d", Some("FR"), 8000),
    ];
    let map = RegionZoneMap::default();
    let zones: Vec<_> = nodes.iter().map(|n| node_zone(n, &map)).collect();
    let caps = zone_capacities(nodes.iter().zip(&zones));
    assert_eq!(
        caps,
        vec![
            ZoneCapacity {
                zone: None,
                cpu_millis: 1000,
                nodes: 1
            },
            ZoneCapacity {
                zone: Some(zone("DE")),
                cpu_millis: 6000,
                nodes: 2
            },
            ZoneCapacity {
                zone: Some(zone("FR")),
                cpu_millis: 8000,
                nodes: 1
            },
        ]
    );
}

fn fresh(value: i32) -> ClusterScore {
    ClusterScore {
        value,
        intensity: Some(0.0),
        reference: Some(400.0),
        coverage: 1.0,
        zones: Vec::new(),
        neutral: None,
        horizon_seconds: 0,
        reference_rule: Reference::Fixed(ci(400.0)),
    }
}

#[test]
fn hysteresis_publishes_only_moves_beyond_the_band() {
    // Every 5 minutes: valid 10 min, renewed under 7.5 min left, band 5.
    let h = Hysteresis::for_interval(300, 5);
    assert_eq!((h.valid_for_seconds, h.refresh_before_seconds), (600, 450));
    let first = publish(None, &fresh(40), &h, NOW);
    assert_eq!(
        (first.write, first.value, first.reason),
        (true, 40, PublishReason::First)
    );
    assert_eq!(first.valid_until, Some(NOW + 600));
    let prev = Published {
        value: 40,
        valid_until: Some(NOW + 600),
    };
    // Within the band and valid for 9 more minutes: nothing written.
    let held = publish(Some(prev), &fresh(44), &h, NOW + 60);
    assert_eq!(
        (held.write, held.value, held.reason),
        (false, 40, PublishReason::Held)
    );
    // Exactly the band: still held; one more point: published.
    assert!(!publish(Some(prev), &fresh(35), &h, NOW + 60).write);
    let moved = publish(Some(prev), &fresh(46), &h, NOW + 60);
    assert_eq!((moved.write, moved.value), (true, 46));
    assert_eq!(moved.reason, PublishReason::Moved { from: 40 });
    // Within the band, 5 min left: renewed with the same value.
    let renewed = publish(Some(prev), &fresh(43), &h, NOW + 300);
    assert_eq!(
        (renewed.write, renewed.value, renewed.reason),
        (true, 40, PublishReason::Renewed)
    );
    assert_eq!(renewed.valid_until, Some(NOW + 900));
    // Expired: the fresh score replaces it, band or not.
    let expired = publish(Some(prev), &fresh(43), &h, NOW + 601);
    assert_eq!(
        (expired.value, expired.reason),
        (43, PublishReason::Expired { from: 40 })
    );
    assert!(
        moved.explain().contains("moved from +40"),
        "{}",
        moved.explain()
    );
    assert!(
        held.explain().contains("within the band of 5"),
        "{}",
        held.explain()
    );
}

#[test]
fn unusable_data_publishes_zero_at_once() {
    let h = Hysteresis::for_interval(300, 50);
    let mut stale = fresh(0);
    stale.neutral = Some(Neutral::NoUsableData);
    let prev = Published {
        value: 30,
        valid_until: Some(NOW + 600),
    };
    let p = publish(Some(prev), &stale, &h, NOW + 10);
    assert_eq!(
        (p.write, p.value, p.reason),
        (true, 0, PublishReason::DataMissing { from: 30 })
    );
    assert!(p.explain().contains("no usable carbon data"));
    // Already 0 and valid: nothing to write.
    let zero = Published {
        value: 0,
        valid_until: Some(NOW + 600),
    };
    assert!(!publish(Some(zero), &stale, &h, NOW + 10).write);
}

#[test]
fn consumers_see_expired_scores_as_neutral() {
    let p = Published {
        value: 70,
        valid_until: Some(NOW),
    };
    assert_eq!(score_in_force(Some(p), NOW), Some(70));
    assert_eq!(score_in_force(Some(p), NOW + 1), None);
    assert_eq!(score_in_force(None, NOW), None);
    let forever = Published {
        value: 300,
        valid_until: None,
    };
    assert_eq!(score_in_force(Some(forever), NOW), Some(100), "clamped");
    assert_eq!(static_weight(Some(-100)), 1);
    assert_eq!(static_weight(Some(0)), NEUTRAL_WEIGHT);
    assert_eq!(static_weight(None), NEUTRAL_WEIGHT);
    assert_eq!(static_weight(Some(100)), 201);
    assert_eq!(
        static_weight(Some(-500)),
        1,
        "never below Karmada's minimum of 1"
    );
}

/// A week of real hourly data for DE and GB, scored every 5 minutes (the
/// hourly value and the real next hours as the forecast): the published
/// value changes far less often than the fresh score and never strays more
/// than the band from it.
#[test]
fn hysteresis_damps_churn_on_real_data() {
    let de = year("DE");
    let gb = year("GB");
    let start = 24 * 59; // 1 March 2023
    let h = Hysteresis::for_interval(300, DEFAULT_BAND);
    // Hourly records: valid for the hour they describe.
    let cfg = ClusterScoreConfig {
        max_data_age_seconds: 3600,
        ..ClusterScoreConfig::default()
    };
    let caps = [cap(Some("DE"), 64), cap(Some("GB"), 32)];
    let (mut fresh_changes, mut published_changes) = (0, 0);
    let mut last_fresh: Option<i32> = None;
    let mut published: Option<Published> = None;
    for tick in 0..(7 * 24 * 12) {
        let i = start + tick / 12;
        let now = de[i].time + (tick % 12) as i64 * 300;
        let mut s = Snapshot::default();
        for (z, hours) in [("DE", &de), ("GB", &gb)] {
            let mut r = record(hours[i].direct, hours[i].time);
            r.forecast = Some(Forecast {
                start: hours[i].time,
                step_seconds: 3600,
                values: hours[i..i + 6].iter().map(|h| ci(h.direct)).collect(),
            });
            s.zones.insert(zone(z), r);
        }
        let score = cluster_score(&caps, &s, &cfg, now);
        assert!(score.neutral.is_none(), "{}", score.explain());
        if last_fresh.is_some_and(|v| v != score.value) {
            fresh_changes += 1;
        }
        last_fresh = Some(score.value);
        let p = publish(published, &score, &h, now);
        if published.is_some_and(|old| old.value != p.value) {
            published_changes += 1;
        }
        assert!(p.value.abs_diff(score.value) <= h.band, "{}", p.explain());
        assert!(
            p.valid_until.is_some_and(|u| u >= now),
            "never lets it expire"
        );
        published = Some(Published {
            value: p.value,
            valid_until: p.valid_until,
        });
    }
    println!("fresh score changes: {fresh_changes}; published value changes: {published_changes}");
    assert!(
        fresh_changes > 100,
        "the data moves: {fresh_changes} changes"
    );
    assert!(
        published_changes * 3 < fresh_changes,
        "published {published_changes} changes for {fresh_changes} fresh ones"
    );
}
