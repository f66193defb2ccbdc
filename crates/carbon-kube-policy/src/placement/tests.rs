//! Placement tests on real Electricity Maps hourly data (2023) read from the
//! shared data directory.

use std::collections::BTreeMap;

use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};

use super::*;
use crate::shared_data;
use crate::zone_map::{NodeView, RegionZoneMap, Resources, ZoneResolution, node_zone};

const GIB: i64 = 1 << 30;

/// `2023-01-01 00:00:00` (an export's UTC time) as unix seconds.
fn parse_utc(s: &str) -> i64 {
    let t: jiff::Timestamp = format!("{}Z", s.replace(' ', "T")).parse().unwrap();
    t.as_second()
}

/// One hourly row of an Electricity Maps export.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hour {
    pub(crate) time: i64,
    pub(crate) direct: f64,
    pub(crate) estimated: bool,
}

pub(crate) fn year(zone: &str) -> Vec<Hour> {
    let path = shared_data().join(format!(
        "carbon_intensity/electricitymaps_hourly/{zone}_2023_hourly.csv"
    ));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let rows: Vec<Hour> = text
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            assert_eq!(cols[3], zone);
            Hour {
                time: parse_utc(cols[0]),
                direct: cols[4].parse().unwrap(),
                estimated: cols[cols.len() - 2] == "true",
            }
        })
        .collect();
    assert_eq!(rows.len(), 8760);
    rows
}

fn snapshot_at(zones: &[(&str, &[Hour])], i: usize) -> Snapshot {
    let mut s = Snapshot::default();
    for (zone, hours) in zones {
        let h = hours[i];
        let mut r = ZoneRecord::new(
            CarbonIntensity::new(h.direct).unwrap(),
            h.time,
            Source::new(Source::ELECTRICITY_MAPS),
        );
        r.estimated = h.estimated;
        s.zones.insert(ZoneId::parse(zone).unwrap(), r);
    }
    s
}

/// A node labelled with its grid zone, with `free` of 8 CPUs and 32 GiB free.
fn node(name: &str, zone: Option<&str>, free: f64) -> (NodeView, ZoneResolution) {
    let mut labels = BTreeMap::new();
    if let Some(z) = zone {
        labels.insert(keys::LABEL_GRID_ZONE.to_owned(), z.to_owned());
    }
    let allocatable = Resources::new(8000, 32 * GIB);
    #[allow(clippy::cast_possible_truncation)]
    let requested = Resources::new(
        (8000.0 * (1.0 - free)) as i64,
        (32.0 * (1.0 - free) * GIB as f64) as i64,
    );
    let n = NodeView {
        name: name.to_owned(),
        labels,
        provider_id: None,
        allocatable,
        requested,
    };
    let z = node_zone(&n, &RegionZoneMap::default());
    (n, z)
}

fn candidates(nodes: &[(NodeView, ZoneResolution)]) -> Vec<Candidate<'_>> {
    nodes
        .iter()
        .map(|(node, zone)| Candidate { node, zone })
        .collect()
}

fn pod(annotations: &[(&str, &str)]) -> PodView {
    PodView {
        name: "p".into(),
        namespace: "default".into(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        requests: Resources::new(500, GIB),
    }
}

/// The first hour of 2023 where `pred(de, tex)` holds.
fn hour_where(de: &[Hour], tex: &[Hour], pred: impl Fn(f64, f64) -> bool) -> usize {
    (0..de.len())
        .find(|&i| pred(de[i].direct, tex[i].direct))
        .expect("no such hour in 2023")
}

#[test]
fn filter_keeps_the_green_zone_and_explains_the_dirty_one() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| d < 200.0 && t > 300.0);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de-1", Some("DE"), 0.5),
        node("tx-1", Some("US-TEX-ERCO"), 0.9),
        node("de-2", Some("DE"), 0.5),
    ];
    let cands = candidates(&nodes);
    let cfg = PlacementConfig::default();
    let now = de[i].time + 300;
    let out = filter_nodes(&pod(&[]), &cands, &snap, &cfg, now);
    assert_eq!(out.not_applied, None);
    assert_eq!(out.passed().collect::<Vec<_>>(), [0, 2]);
    assert_eq!(out.failed().collect::<Vec<_>>(), [1]);
    let msg = out.failure_message(1);
    let want = format!(
        "carbon-kube: zone US-TEX-ERCO at {} (electricity_maps, 5m old) is above the threshold of 250 g/kWh",
        CarbonIntensity::new(tex[i].direct).unwrap()
    );
    assert_eq!(msg, want);
    assert_eq!(out.zones.len(), 2, "each zone is evaluated once");
    assert!(
        out.summary().starts_with("2 of 3 nodes pass"),
        "{}",
        out.summary()
    );
}

#[test]
fn the_cleaner_zone_scores_higher_and_a_fuller_node_lower() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| t > 2.0 * d);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de-empty", Some("DE"), 0.9),
        node("de-full", Some("DE"), 0.1),
        node("tx-empty", Some("US-TEX-ERCO"), 0.9),
    ];
    let cands = candidates(&nodes);
    let out = score_nodes(
        &pod(&[]),
        &cands,
        &snap,
        &PlacementConfig::default(),
        de[i].time,
    );
    let s: Vec<u8> = out.scores.iter().map(|s| s.score).collect();
    assert!(s[0] > s[2], "clean beats dirty at equal room: {s:?}");
    assert!(s[0] > s[1], "room counts within a zone: {s:?}");
    assert!(s.iter().all(|s| *s <= 10));
    // DE is the cleanest candidate: its carbon part is 1.
    assert!((out.zones[out.scores[0].zone].carbon_score - 1.0).abs() < 1e-12);
    let reason = out.reason(0);
    assert!(
        reason.contains("carbon 1.00 × 70") && reason.contains("zone DE at"),
        "{reason}"
    );
}

#[test]
fn a_pod_threshold_overrides_the_cluster_one() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| d < 200.0 && t > 300.0);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de", Some("DE"), 0.5),
        node("tx", Some("US-TEX-ERCO"), 0.5),
    ];
    let cands = candidates(&nodes);
    let cfg = PlacementConfig::default();
    let lax = pod(&[(keys::ANNOTATION_MAX_INTENSITY, "2000")]);
    let out = filter_nodes(&lax, &cands, &snap, &cfg, de[i].time);
    assert_eq!(out.passed().count(), 2);
    assert_eq!(out.pod.threshold_source, ThresholdSource::PodAnnotation);

    let strict_value = format!("{} g/kWh", (de[i].direct - 1.0).floor());
    let strict = pod(&[(keys::ANNOTATION_MAX_INTENSITY, strict_value.as_str())]);
    let out = filter_nodes(&strict, &cands, &snap, &cfg, de[i].time);
    // Both zones are above the pod's threshold: fail open, keep both.
    assert!(matches!(
        out.no_green_node,
        Some(NoGreenNode::FailedOpen { .. })
    ));
    assert_eq!(out.passed().count(), 2);
    assert!(
        out.summary().contains("failing open (cleanest: zone DE"),
        "{}",
        out.summary()
    );
}

#[test]
fn a_bad_annotation_is_reported_and_the_cluster_threshold_applies() {
    let p = pod(&[
        (keys::ANNOTATION_MAX_INTENSITY, "low"),
        (keys::ANNOTATION_OPT_OUT, "maybe"),
    ]);
    let s = pod_settings(&p, &PlacementConfig::default());
    assert!(!s.opt_out);
    assert_eq!(s.threshold_source, ThresholdSource::Cluster);
    let errors: Vec<String> = s
        .annotation_errors
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("max-intensity=\"low\" ignored"))
    );
}

#[test]
fn opted_out_pods_get_no_filtering_and_neutral_scores() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| d < 200.0 && t > 300.0);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de", Some("DE"), 0.2),
        node("tx", Some("US-TEX-ERCO"), 0.9),
    ];
    let cands = candidates(&nodes);
    let p = pod(&[(keys::ANNOTATION_OPT_OUT, "true")]);
    let cfg = PlacementConfig::default();
    let f = filter_nodes(&p, &cands, &snap, &cfg, de[i].time);
    assert_eq!(f.not_applied, Some(NotApplied::OptedOut));
    assert_eq!(f.passed().count(), 2);
    let s = score_nodes(&p, &cands, &snap, &cfg, de[i].time);
    assert!(s.scores.iter().all(|s| s.score == 0));
    assert!(s.reason(1).contains("opted out"));
}

#[test]
fn reject_fails_every_node_when_no_zone_is_green() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| d > 300.0 && t > 300.0);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de", Some("DE"), 0.5),
        node("tx", Some("US-TEX-ERCO"), 0.5),
    ];
    let cands = candidates(&nodes);
    let cfg = PlacementConfig {
        on_no_green_node: OnNoGreenNode::Reject,
        ..PlacementConfig::default()
    };
    let out = filter_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time);
    assert_eq!(out.passed().count(), 0);
    assert!(out.failure_message(0).ends_with("(onNoGreenNode: reject)"));
    let fail_open = filter_nodes(
        &pod(&[]),
        &cands,
        &snap,
        &PlacementConfig::default(),
        de[i].time,
    );
    assert_eq!(fail_open.passed().count(), 2);
    assert!(
        fail_open
            .verdicts
            .iter()
            .all(|v| v.verdict == Verdict::KeptByFailOpen)
    );
}

#[test]
fn stale_or_missing_data_is_neutral() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| d < 200.0 && t > 300.0);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de", Some("DE"), 0.5),
        node("tx", Some("US-TEX-ERCO"), 0.5),
    ];
    let cands = candidates(&nodes);
    let cfg = PlacementConfig::default();

    // The whole snapshot is two hours old: nothing is filtered, all scores equal.
    let later = de[i].time + 7200;
    let f = filter_nodes(&pod(&[]), &cands, &snap, &cfg, later);
    assert!(matches!(
        f.not_applied,
        Some(NotApplied::AllStale {
            newest_age_seconds: 7200
        })
    ));
    assert_eq!(f.passed().count(), 2);
    let s = score_nodes(&pod(&[]), &cands, &snap, &cfg, later);
    assert!(s.scores.iter().all(|s| s.score == 0));

    // No snapshot at all.
    let empty = Snapshot::default();
    let f = filter_nodes(&pod(&[]), &cands, &empty, &cfg, later);
    assert_eq!(f.not_applied, Some(NotApplied::NoSnapshot));

    // Only Texas is stale: it is neutral, not filtered, and scores between.
    let mut mixed = snap.clone();
    let tx = ZoneId::parse("US-TEX-ERCO").unwrap();
    mixed.zones.get_mut(&tx).unwrap().timestamp -= 7200;
    let f = filter_nodes(&pod(&[]), &cands, &mixed, &cfg, de[i].time);
    assert_eq!(f.not_applied, None);
    assert_eq!(f.verdicts[1].verdict, Verdict::Neutral);
    assert!(
        f.zones[1].to_string().contains("stale: neutral"),
        "{}",
        f.zones[1]
    );

    // With useLastValue the stale value counts.
    let use_last = PlacementConfig {
        stale_data: StaleData::UseLastValue,
        ..cfg.clone()
    };
    let f = filter_nodes(&pod(&[]), &cands, &mixed, &use_last, de[i].time);
    assert_eq!(f.verdicts[1].verdict, Verdict::AboveThreshold);
}

#[test]
fn unknown_zones_are_neither_green_nor_dirty() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| t > 2.0 * d);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de", Some("DE"), 0.5),
        node("nowhere", None, 0.5),
        node("tx", Some("US-TEX-ERCO"), 0.5),
        node("gb-no-data", Some("GB"), 0.5),
    ];
    let cands = candidates(&nodes);
    let cfg = PlacementConfig {
        threshold: CarbonIntensity::new(2000.0).unwrap(),
        ..PlacementConfig::default()
    };
    let f = filter_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time);
    assert_eq!(f.verdicts[1].verdict, Verdict::Neutral);
    assert_eq!(f.verdicts[3].verdict, Verdict::Neutral);
    let s = score_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time);
    let sc: Vec<u8> = s.scores.iter().map(|s| s.score).collect();
    assert!(sc[0] >= sc[1] && sc[1] >= sc[2], "{sc:?}");
    assert!(sc[0] > sc[2]);
    assert_eq!(
        sc[1], sc[3],
        "unknown zone and zone without data are both neutral"
    );
}

#[test]
fn estimates_count_unless_configured_otherwise() {
    let india = year("IN-WE"); // 100 % estimated
    let de = year("DE");
    let snap = snapshot_at(&[("IN-WE", &india), ("DE", &de)], 100);
    assert!(
        snap.get(&ZoneId::parse("IN-WE").unwrap())
            .unwrap()
            .estimated
    );
    let nodes = [node("in", Some("IN-WE"), 0.5), node("de", Some("DE"), 0.5)];
    let cands = candidates(&nodes);
    let cfg = PlacementConfig::default();
    let f = filter_nodes(&pod(&[]), &cands, &snap, &cfg, de[100].time);
    // Western India runs at ~690 g/kWh: above the threshold.
    assert_eq!(f.verdicts[0].verdict, Verdict::AboveThreshold);
    let ignore = PlacementConfig {
        estimated_data: EstimatedData::Neutral,
        ..cfg
    };
    let f = filter_nodes(&pod(&[]), &cands, &snap, &ignore, de[100].time);
    assert_eq!(f.verdicts[0].verdict, Verdict::Neutral);
    assert!(
        f.zones[0]
            .to_string()
            .contains("estimated, 0s old, estimates ignored")
    );
}

/// Over every hour of 2023, across four real grids: scores stay in 0–10, a
/// node never scores below an equally loaded node in a dirtier zone, and the
/// filter keeps exactly the zones at or under the threshold.
#[test]
fn a_year_of_real_data_keeps_the_invariants() {
    let names = ["DE", "GB", "US-TEX-ERCO", "US-CAL-CISO"];
    let years: Vec<Vec<Hour>> = names.iter().map(|z| year(z)).collect();
    let nodes: Vec<_> = names
        .iter()
        .map(|z| node(&format!("{z}-node"), Some(z), 0.5))
        .collect();
    let cands = candidates(&nodes);
    let cfg = PlacementConfig::default();
    let p = pod(&[]);
    let mut filtered = 0;
    for h in 0..8760 {
        let zones: Vec<(&str, &[Hour])> = names
            .iter()
            .zip(&years)
            .map(|(n, y)| (*n, y.as_slice()))
            .collect();
        let snap = snapshot_at(&zones, h);
        let now = years[0][h].time;
        let f = filter_nodes(&p, &cands, &snap, &cfg, now);
        let s = score_nodes(&p, &cands, &snap, &cfg, now);
        for (a, ya) in years.iter().enumerate() {
            let passes = f.verdicts[a].verdict.passes();
            let any_green = years.iter().any(|y| y[h].direct <= 250.0);
            if any_green {
                assert_eq!(passes, ya[h].direct <= 250.0, "hour {h} zone {}", names[a]);
            } else {
                assert!(passes, "fail open at hour {h}");
            }
            filtered += usize::from(!passes);
            assert!(s.scores[a].score <= 10);
            for (b, yb) in years.iter().enumerate() {
                if ya[h].direct < yb[h].direct {
                    assert!(
                        s.scores[a].score >= s.scores[b].score,
                        "hour {h}: {} at {} scored below {} at {}",
                        names[a],
                        ya[h].direct,
                        names[b],
                        yb[h].direct
                    );
                }
            }
        }
    }
    assert!(
        filtered > 1000,
        "the threshold should bite in a real year: {filtered}"
    );
}

#[test]
fn the_landing_is_explained_when_carbon_decided() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| t > 2.0 * d && d < 250.0 && t < 250.0);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de", Some("DE"), 0.5),
        node("tx", Some("US-TEX-ERCO"), 0.5),
    ];
    let cands = candidates(&nodes);
    let cfg = PlacementConfig::default();
    let mut summary = DecisionSummary::default();
    assert!(summary.record_filter(&filter_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time)));
    assert!(summary.record_scores(&score_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time)));
    let landing = summary
        .landing(Some(&ZoneId::parse("DE").unwrap()))
        .unwrap();
    assert_eq!(
        landing.to_string(),
        format!(
            "placed in DE at {} over US-TEX-ERCO at {}",
            CarbonIntensity::new(de[i].direct).unwrap(),
            CarbonIntensity::new(tex[i].direct).unwrap()
        )
    );
    // Landing in the dirtier zone: carbon did not decide.
    assert_eq!(
        summary.landing(Some(&ZoneId::parse("US-TEX-ERCO").unwrap())),
        None
    );
    // The dirty zone had much more room: capacity would have picked DE anyway? No:
    // the dirty node is roomier, so landing in DE is still carbon's doing.
    let roomy = [
        node("de", Some("DE"), 0.1),
        node("tx", Some("US-TEX-ERCO"), 0.9),
    ];
    let cands = candidates(&roomy);
    let mut s2 = DecisionSummary::default();
    s2.record_scores(&score_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time));
    assert!(s2.landing(Some(&ZoneId::parse("DE").unwrap())).is_some());
    // The clean node is roomier: capacity alone explains DE, no Event.
    let clean_roomy = [
        node("de", Some("DE"), 0.9),
        node("tx", Some("US-TEX-ERCO"), 0.1),
    ];
    let cands = candidates(&clean_roomy);
    let mut s3 = DecisionSummary::default();
    s3.record_scores(&score_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time));
    assert_eq!(s3.landing(Some(&ZoneId::parse("DE").unwrap())), None);
}

#[test]
fn a_filtered_zone_is_named_with_the_threshold() {
    let de = year("DE");
    let tex = year("US-TEX-ERCO");
    let i = hour_where(&de, &tex, |d, t| d < 200.0 && t > 300.0);
    let snap = snapshot_at(&[("DE", &de), ("US-TEX-ERCO", &tex)], i);
    let nodes = [
        node("de", Some("DE"), 0.9),
        node("tx", Some("US-TEX-ERCO"), 0.1),
    ];
    let cands = candidates(&nodes);
    let cfg = PlacementConfig::default();
    let mut summary = DecisionSummary::default();
    summary.record_filter(&filter_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time));
    let landing = summary
        .landing(Some(&ZoneId::parse("DE").unwrap()))
        .unwrap();
    assert!(landing.over_filtered);
    assert!(
        landing
            .to_string()
            .ends_with("(above the threshold of 250 g/kWh)"),
        "{landing}"
    );
}

#[test]
fn human_ages() {
    let s: Vec<String> = [5, 119, 120, 7199, 7200, 200_000]
        .iter()
        .map(|s| HumanAge(*s).to_string())
        .collect();
    assert_eq!(s, ["5s", "119s", "2m", "119m", "2h", "2d"]);
}

#[test]
fn round_score_is_round_then_clamp() {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn reference(raw: f64) -> u8 {
        raw.round().clamp(0.0, 10.0) as u8
    }
    let mut values = vec![
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        0.499_999_999_999_999_94,
        0.500_000_000_000_000_1,
        10.0,
        10.5,
        1e300,
        -1e300,
    ];
    for k in -4..=24 {
        let half = f64::from(k) / 2.0;
        values.extend([half, half.next_down(), half.next_up()]);
    }
    values.extend((-2000..=12_000).map(|i| f64::from(i) / 1000.0));
    for v in values {
        assert_eq!(round_score(v), reference(v), "{v:?}");
    }
}

/// Three zones of very different levels (IN-WE ~ 600, DE ~ 380, US-CAL-CISO
/// ~ 230 g/kWh in 2023) at the same hour.
fn three_grids() -> (Vec<Hour>, Vec<Hour>, Vec<Hour>) {
    (year("IN-WE"), year("DE"), year("US-CAL-CISO"))
}

fn relative(mode: ThresholdMode, percentile: f64) -> PlacementConfig {
    PlacementConfig {
        threshold_mode: mode,
        threshold_percentile: percentile,
        ..PlacementConfig::default()
    }
}

#[test]
fn a_cluster_percentile_keeps_the_cleaner_zones_whatever_their_level() {
    let (ind, de, cal) = three_grids();
    let i = (0..ind.len())
        .find(|&i| ind[i].direct > de[i].direct && de[i].direct > cal[i].direct)
        .unwrap();
    let snap = snapshot_at(&[("IN-WE", &ind), ("DE", &de), ("US-CAL-CISO", &cal)], i);
    let nodes = [
        node("in", Some("IN-WE"), 0.5),
        node("de", Some("DE"), 0.5),
        node("ca", Some("US-CAL-CISO"), 0.5),
    ];
    let cands = candidates(&nodes);
    let now = de[i].time;
    // The 50th percentile of three zones is the middle one: DE and CAL pass.
    let out = filter_nodes(
        &pod(&[]),
        &cands,
        &snap,
        &relative(ThresholdMode::ClusterPercentile, 50.0),
        now,
    );
    assert_eq!(out.passed().collect::<Vec<_>>(), [1, 2]);
    let limit = out.rule.shared_limit().unwrap().g_per_kwh();
    assert!((limit - CarbonIntensity::new(de[i].direct).unwrap().g_per_kwh()).abs() < 1e-9);
    let msg = out.failure_message(0);
    assert!(
        msg.contains("is above the threshold of")
            && msg.contains("(the 50th percentile of the candidate zones now)"),
        "{msg}"
    );
    // 0: only the cleanest; 100: all.
    let strict = filter_nodes(
        &pod(&[]),
        &cands,
        &snap,
        &relative(ThresholdMode::ClusterPercentile, 0.0),
        now,
    );
    assert_eq!(strict.passed().collect::<Vec<_>>(), [2]);
    let lax = filter_nodes(
        &pod(&[]),
        &cands,
        &snap,
        &relative(ThresholdMode::ClusterPercentile, 100.0),
        now,
    );
    assert_eq!(lax.passed().count(), 3);
    // The absolute seed threshold filters DE and IN-WE alike here or
    // nothing at all: the relative rule does not depend on the level.
    let scaled: Snapshot = {
        let mut s = snap.clone();
        for r in s.zones.values_mut() {
            r.carbon_intensity =
                CarbonIntensity::new(r.carbon_intensity.g_per_kwh() / 4.0).unwrap();
        }
        s
    };
    let out_scaled = filter_nodes(
        &pod(&[]),
        &cands,
        &scaled,
        &relative(ThresholdMode::ClusterPercentile, 50.0),
        now,
    );
    assert_eq!(out_scaled.passed().collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_pod_annotation_stays_absolute_in_relative_modes() {
    let (ind, de, cal) = three_grids();
    let i = 100;
    let snap = snapshot_at(&[("IN-WE", &ind), ("DE", &de), ("US-CAL-CISO", &cal)], i);
    let nodes = [
        node("in", Some("IN-WE"), 0.5),
        node("de", Some("DE"), 0.5),
        node("ca", Some("US-CAL-CISO"), 0.5),
    ];
    let cands = candidates(&nodes);
    let lax = pod(&[(keys::ANNOTATION_MAX_INTENSITY, "5000")]);
    let out = filter_nodes(
        &lax,
        &cands,
        &snap,
        &relative(ThresholdMode::ClusterPercentile, 0.0),
        de[i].time,
    );
    assert_eq!(out.passed().count(), 3);
    assert_eq!(
        out.rule,
        ThresholdRule::Absolute(CarbonIntensity::new(5000.0).unwrap())
    );
}

/// A record at hour `i` whose forecast is the next `n` actual hours.
fn with_forecast(hours: &[Hour], i: usize, n: usize) -> ZoneRecord {
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(hours[i].direct).unwrap(),
        hours[i].time,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    let points: Vec<carbon_kube_model::ForecastPoint> = hours[i + 1..=i + n]
        .iter()
        .map(|h| carbon_kube_model::ForecastPoint {
            time: h.time,
            intensity: CarbonIntensity::new(h.direct).unwrap(),
        })
        .collect();
    r.forecast = carbon_kube_model::Forecast::from_points(&points, 3600);
    r
}

#[test]
fn a_forecast_percentile_ranks_each_zone_against_its_own_window() {
    let de = year("DE");
    // An hour in DE that is the cleanest of its next 24 and one that is the dirtiest.
    let window = |i: usize| de[i..=i + 24].iter().map(|h| h.direct).collect::<Vec<_>>();
    let clean = (0..8000)
        .find(|&i| window(i).iter().all(|v| *v >= de[i].direct))
        .unwrap();
    let dirty = (0..8000)
        .find(|&i| window(i).iter().all(|v| *v <= de[i].direct))
        .unwrap();
    let nodes = [node("de", Some("DE"), 0.5)];
    let cands = candidates(&nodes);
    let cfg = relative(ThresholdMode::ForecastPercentile, 30.0);
    for (i, passes) in [(clean, true), (dirty, false)] {
        let mut snap = Snapshot::default();
        snap.zones
            .insert(ZoneId::parse("DE").unwrap(), with_forecast(&de, i, 24));
        let out = filter_nodes(&pod(&[]), &cands, &snap, &cfg, de[i].time);
        let verdict = out.verdicts[0].verdict;
        if passes {
            assert_eq!(verdict, Verdict::Green, "hour {i}");
        } else {
            // The only zone is above its own percentile: fail open keeps it.
            assert_eq!(verdict, Verdict::KeptByFailOpen, "hour {i}");
            let msg = out.failure_message(0);
            assert!(msg.contains("30th percentile of its own forecast"), "{msg}");
        }
    }
    // Without a forecast the zone cannot be ranked: neutral, not filtered.
    let snap = snapshot_at(&[("DE", &de)], dirty);
    let out = filter_nodes(&pod(&[]), &cands, &snap, &cfg, de[dirty].time);
    assert_eq!(out.verdicts[0].verdict, Verdict::Neutral);
    assert_eq!(out.zones[0].limit, None);
}

#[test]
fn percentiles_interpolate() {
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&[7.0], 30.0), Some(7.0));
    assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
    assert_eq!(percentile(&[1.0, 3.0], 25.0), Some(1.5));
    assert_eq!(percentile(&[1.0, 3.0], 0.0), Some(1.0));
    assert_eq!(percentile(&[1.0, 3.0], 100.0), Some(3.0));
}
