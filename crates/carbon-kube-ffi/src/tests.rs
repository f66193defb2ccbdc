//! The policy handle against `carbon-kube-policy` called directly, and the
//! C ABI driven the way the Go plugin drives it (raw pointers, buffers).

#![allow(clippy::unwrap_used)]

use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_policy::placement::{
    Candidate, PlacementConfig, PodView, filter_nodes, score_nodes,
};
use carbon_kube_policy::zone_map::{NodeView, RegionZoneMap, Resources, node_zone};

use super::*;

const NOW: i64 = 1_700_000_000;

fn snapshot(values: &[(&str, f64)], age: i64) -> Snapshot {
    let mut s = Snapshot::default();
    for (zone, v) in values {
        s.zones.insert(
            ZoneId::parse(zone).unwrap(),
            ZoneRecord::new(
                CarbonIntensity::new(*v).unwrap(),
                NOW - age,
                Source::new(Source::ELECTRICITY_MAPS),
            ),
        );
    }
    s
}

fn node(zone: &str, region: Option<&str>) -> policy::NodeInput {
    let mut labels = std::collections::BTreeMap::new();
    if !zone.is_empty() {
        labels.insert(keys::LABEL_GRID_ZONE.to_owned(), zone.to_owned());
    }
    if let Some(r) = region {
        labels.insert("topology.kubernetes.io/region".to_owned(), r.to_owned());
    }
    policy::NodeInput {
        name: format!("n-{zone}"),
        labels,
        provider_id: None,
    }
}

fn pod(annotations: &[(&str, &str)]) -> policy::PodInput {
    policy::PodInput {
        uid: "uid-1".into(),
        namespace: "ns".into(),
        name: "p".into(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        cpu_millis: 500,
        memory_bytes: 256 << 20,
    }
}

/// Four nodes: GB (small), DE, Texas, and one with no zone.
fn fleet(p: &Policy) -> (Vec<policy::NodeInput>, Vec<CkNode>) {
    let inputs = vec![
        node("GB", None),
        node("DE", None),
        node("US-TEX-ERCO", None),
        node("", None),
    ];
    let nodes = inputs
        .iter()
        .zip([(2000, 1500), (8000, 1000), (8000, 0), (4000, 0)])
        .map(|(n, (alloc, used))| CkNode {
            zone: p.node_zone(n),
            allocatable_cpu_millis: alloc,
            allocatable_memory_bytes: 8 << 30,
            requested_cpu_millis: used,
            requested_memory_bytes: 1 << 30,
        })
        .collect();
    (inputs, nodes)
}

/// What the policy crate says for the same inputs, called directly as the
/// extender calls it.
fn direct(
    snap: &Snapshot,
    cfg: &PlacementConfig,
    inputs: &[policy::NodeInput],
    nodes: &[CkNode],
    pod: &policy::PodInput,
) -> (Vec<bool>, Vec<u8>) {
    let map = RegionZoneMap::default();
    let views: Vec<NodeView> = inputs
        .iter()
        .zip(nodes)
        .map(|(i, n)| NodeView {
            name: i.name.clone(),
            labels: i.labels.clone(),
            provider_id: i.provider_id.clone(),
            allocatable: Resources::new(n.allocatable_cpu_millis, n.allocatable_memory_bytes),
            requested: Resources::new(n.requested_cpu_millis, n.requested_memory_bytes),
        })
        .collect();
    let zones: Vec<_> = views.iter().map(|v| node_zone(v, &map)).collect();
    let candidates: Vec<Candidate<'_>> = views
        .iter()
        .zip(&zones)
        .map(|(node, zone)| Candidate { node, zone })
        .collect();
    let view = PodView {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        annotations: pod.annotations.clone(),
        requests: Resources::new(pod.cpu_millis, pod.memory_bytes),
    };
    let f = filter_nodes(&view, &candidates, snap, cfg, NOW);
    let s = score_nodes(&view, &candidates, snap, cfg, NOW);
    (
        f.verdicts.iter().map(|v| v.verdict.passes()).collect(),
        s.scores.iter().map(|s| s.score).collect(),
    )
}

#[test]
fn the_handle_decides_exactly_as_the_policy_crate() {
    let p = Policy::new("").unwrap();
    let (inputs, nodes) = fleet(&p);
    for (values, age, annotations, overrides) in [
        (
            vec![("GB", 90.0), ("DE", 210.0), ("US-TEX-ERCO", 410.0)],
            60,
            vec![],
            vec![],
        ),
        (
            vec![("GB", 300.0), ("DE", 310.0), ("US-TEX-ERCO", 410.0)],
            60,
            vec![],
            vec![],
        ),
        (
            vec![("GB", 300.0), ("DE", 310.0), ("US-TEX-ERCO", 410.0)],
            60,
            vec![],
            vec![("onNoGreenNode", "reject")],
        ),
        (
            vec![("GB", 300.0), ("DE", 310.0), ("US-TEX-ERCO", 410.0)],
            60,
            vec![(keys::ANNOTATION_MAX_INTENSITY, "305")],
            vec![],
        ),
        (
            vec![("GB", 90.0), ("DE", 210.0), ("US-TEX-ERCO", 410.0)],
            60,
            vec![(keys::ANNOTATION_OPT_OUT, "true")],
            vec![],
        ),
        (
            vec![("GB", 90.0), ("DE", 210.0), ("US-TEX-ERCO", 410.0)],
            7200,
            vec![],
            vec![],
        ),
        (
            vec![("GB", 90.0), ("DE", 210.0)],
            60,
            vec![],
            vec![("carbonWeight", "40"), ("performanceWeight", "60")],
        ),
    ] {
        let snap = snapshot(&values, age);
        p.set_snapshot(Some(&snap.to_json())).unwrap();
        let data = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        p.set_config(Some(&data)).unwrap();
        let pod = pod(&annotations);
        let mut verdicts = vec![9; nodes.len()];
        let report = p.filter(&pod, &nodes, NOW, &mut verdicts).unwrap();
        let mut scores = vec![99; nodes.len()];
        p.score(&pod, &nodes, NOW, &mut scores).unwrap();
        let (want_pass, want_scores) = direct(&snap, &p.config(), &inputs, &nodes, &pod);
        let passed: Vec<bool> = verdicts.iter().map(|v| *v == 0).collect();
        assert_eq!(
            passed, want_pass,
            "{values:?} {annotations:?} {overrides:?}"
        );
        assert_eq!(
            scores, want_scores,
            "{values:?} {annotations:?} {overrides:?}"
        );
        for (v, input) in verdicts.iter().zip(&inputs) {
            if *v > 0 {
                let m = &report.messages[(*v - 1) as usize];
                assert!(m.contains("above the threshold"), "{m}");
                assert!(
                    m.contains(input.labels[keys::LABEL_GRID_ZONE].as_str()),
                    "{m}"
                );
            }
        }
    }
}

#[test]
fn outcomes_and_events_say_what_carbon_did() {
    let p = Policy::new("").unwrap();
    let (_, nodes) = fleet(&p);
    p.set_snapshot(Some(
        &snapshot(&[("GB", 90.0), ("DE", 210.0), ("US-TEX-ERCO", 410.0)], 60).to_json(),
    ))
    .unwrap();
    let pod = pod(&[]);
    let mut verdicts = vec![0; 4];
    let r = p.filter(&pod, &nodes, NOW, &mut verdicts).unwrap();
    assert_eq!(r.outcome, "applied");
    assert_eq!(verdicts, [0, 0, 1, 0], "{r:?}");
    let mut scores = vec![0; 4];
    let s = p.score(&pod, &nodes[..2], NOW, &mut scores[..2]).unwrap();
    assert_eq!(s.outcome, "applied");
    assert!(scores[0] > scores[1], "GB beats DE: {scores:?}");
    let e = p.landing("uid-1", nodes[0].zone).unwrap();
    assert_eq!(e.reason, "CarbonAwarePlacement");
    assert!(e.note.starts_with("placed in GB at 90 g/kWh over"), "{e:?}");
    assert!(
        p.landing("uid-1", nodes[0].zone).is_none(),
        "forgotten once bound"
    );

    // Every zone dirty: fails open, and the Event says so.
    p.set_snapshot(Some(
        &snapshot(&[("GB", 300.0), ("DE", 310.0), ("US-TEX-ERCO", 410.0)], 60).to_json(),
    ))
    .unwrap();
    let r = p
        .filter(&pod, &nodes[..3], NOW, &mut verdicts[..3])
        .unwrap();
    assert_eq!(r.outcome, "failed_open");
    assert_eq!(&verdicts[..3], [0, 0, 0]);
    let e = p.landing("uid-1", nodes[2].zone).unwrap();
    assert_eq!(e.reason, "CarbonThresholdFailedOpen");
    // Deleted snapshot: no data, nothing recorded.
    p.set_snapshot(None).unwrap();
    let r = p.filter(&pod, &nodes, NOW, &mut verdicts).unwrap();
    assert_eq!(r.outcome, "no_data");
    assert!(p.landing("uid-1", nodes[0].zone).is_none());
}

#[test]
fn without_explain_the_decision_is_the_same_and_the_log_lines_are_not_formatted() {
    let p = Policy::new("").unwrap();
    let (_, nodes) = fleet(&p);
    p.set_snapshot(Some(
        &snapshot(&[("GB", 90.0), ("DE", 210.0), ("US-TEX-ERCO", 410.0)], 60).to_json(),
    ))
    .unwrap();
    let pod = pod(&[]);
    let (mut full, mut brief) = (vec![0; 4], vec![0; 4]);
    let a = p
        .filter_explaining(&pod, &nodes, NOW, &mut full, true)
        .unwrap();
    let b = p
        .filter_explaining(&pod, &nodes, NOW, &mut brief, false)
        .unwrap();
    assert_eq!(full, brief);
    assert_eq!((a.outcome, &a.messages), (b.outcome, &b.messages));
    assert!(a.summary.contains("of 4 nodes pass"), "{a:?}");
    assert_eq!(b.summary, "");
    let (mut full, mut brief) = (vec![0; 4], vec![0; 4]);
    let a = p
        .score_explaining(&pod, &nodes, NOW, &mut full, true)
        .unwrap();
    let b = p
        .score_explaining(&pod, &nodes, NOW, &mut brief, false)
        .unwrap();
    assert_eq!(full, brief);
    assert_eq!(a.outcome, b.outcome);
    assert!(a.best.contains("carbon"), "{a:?}");
    assert_eq!(b.best, "");
}

#[test]
fn bad_input_is_an_error_naming_what_was_wrong_and_keeps_the_last_good_state() {
    let err = Policy::new(r#"{"placement": {"carbonWeight": 500}}"#).unwrap_err();
    assert!(err.contains("args.placement.carbonWeight"), "{err}");
    let err = Policy::new(r#"{"regionZones": {"aws/x": "not a zone!"}}"#).unwrap_err();
    assert!(err.contains("regionZones"), "{err}");
    let err = Policy::new(r#"{"treshold": 1}"#).unwrap_err();
    assert!(err.contains("treshold"), "{err}");

    let p = Policy::new(r#"{"placement": {"threshold": 200}}"#).unwrap();
    assert_eq!(p.config().threshold.g_per_kwh(), 200.0);
    let bad = [("carbonWeight".to_owned(), "lots".to_owned())].into();
    let err = p.set_config(Some(&bad)).unwrap_err();
    assert!(err.contains("carbon-kube-config: carbonWeight"), "{err}");
    assert_eq!(p.config().threshold.g_per_kwh(), 200.0);
    let good = [("threshold".to_owned(), "150".to_owned())].into();
    p.set_config(Some(&good)).unwrap();
    assert_eq!(p.config().threshold.g_per_kwh(), 150.0);
    p.set_config(None).unwrap();
    assert_eq!(p.config().threshold.g_per_kwh(), 200.0, "back to the args");

    let snap = snapshot(&[("DE", 100.0)], 60).to_json();
    assert_eq!(p.set_snapshot(Some(&snap)).unwrap().zones, 1);
    assert!(p.set_snapshot(Some("{not json")).is_err());
    let (_, nodes) = fleet(&p);
    let mut v = vec![0; 1];
    assert!(
        p.filter(&pod(&[]), &nodes, NOW, &mut v).is_err(),
        "short buffer"
    );
}

#[test]
fn zones_resolve_once_per_distinct_resolution_and_unknown_handles_are_neutral() {
    let p = Policy::new(r#"{"regionZones": {"dc-frankfurt-1": "DE"}}"#).unwrap();
    let a = p.node_zone(&node("DE", None));
    let b = p.node_zone(&node("DE", None));
    let c = p.node_zone(&node("", Some("dc-frankfurt-1")));
    let d = p.node_zone(&node("", Some("eu-central-1")));
    assert_eq!(a, b);
    assert_ne!(a, ZONE_NOT_SEEN);
    assert_ne!(a, c, "same zone, different resolution");
    assert_eq!(p.zone_name(c).as_deref(), Some("DE"));
    assert_eq!(p.zone_name(d).as_deref(), Some("DE"), "built-in AWS table");
    assert_eq!(p.zone_name(ZONE_NOT_SEEN), None);
    // A handle the policy never gave out is the neutral unknown zone.
    p.set_snapshot(Some(
        &snapshot(&[("DE", 400.0), ("GB", 100.0)], 60).to_json(),
    ))
    .unwrap();
    let gb = p.node_zone(&node("GB", None));
    let nodes = [a, gb, 4242].map(|zone| CkNode {
        zone,
        allocatable_cpu_millis: 1000,
        ..CkNode::default()
    });
    let mut v = [0; 3];
    p.filter(&pod(&[]), &nodes, NOW, &mut v).unwrap();
    assert_eq!(v, [1, 0, 0]);
}

/// The C ABI as the Go plugin uses it: pointer + length in, buffers out,
/// freed by `ck_buf_free`.
#[test]
fn c_abi_round_trip() {
    fn text(buf: &CkBuf) -> String {
        if buf.ptr.is_null() {
            return String::new();
        }
        // SAFETY: the library returned `len` bytes at `ptr`.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) };
        String::from_utf8(bytes.to_vec()).unwrap()
    }
    fn take(buf: &mut CkBuf) -> String {
        let s = text(buf);
        ck_buf_free(std::mem::replace(buf, CkBuf::EMPTY));
        s
    }
    let mut out = CkBuf::EMPTY;
    let args = br#"{"placement": {"threshold": 250}}"#;
    // SAFETY: valid pointers and lengths for every call below; the handle is
    // freed once at the end.
    unsafe {
        let bad = br#"{"placement": {"threshold": -1}}"#;
        let h = ck_policy_new(bad.as_ptr(), bad.len(), &raw mut out);
        assert!(h.is_null());
        assert!(take(&mut out).contains("threshold"));

        let h = ck_policy_new(args.as_ptr(), args.len(), &raw mut out);
        assert!(!h.is_null(), "{}", take(&mut out));
        take(&mut out);
        let snap = snapshot(&[("GB", 90.0), ("DE", 210.0), ("US-TEX-ERCO", 410.0)], 60).to_json();
        assert_eq!(
            ck_set_snapshot(h, snap.as_ptr(), snap.len(), &raw mut out),
            CK_OK
        );
        let report: serde_json::Value = serde_json::from_str(&take(&mut out)).unwrap();
        assert_eq!(report["zones"], 3);
        assert_eq!(report["records"][0]["zone"], "DE");
        assert_eq!(report["records"][0]["gPerKwh"], 210.0);
        let cfg = br#"{"carbonWeight": "60", "otherComponentKey": "x"}"#;
        assert_eq!(
            ck_set_config(h, cfg.as_ptr(), cfg.len(), &raw mut out),
            CK_OK
        );
        assert!(take(&mut out).contains(r#""carbonWeight":60"#));
        let bad_cfg = br#"{"carbonWeight": 60}"#;
        assert_eq!(
            ck_set_config(h, bad_cfg.as_ptr(), bad_cfg.len(), &raw mut out),
            CK_ERR
        );
        assert!(take(&mut out).contains("map of strings"));

        let zone = |labels: &str| {
            let json = format!(
                r#"{{"name":"x","labels":{{"{}":"{labels}"}}}}"#,
                keys::LABEL_GRID_ZONE
            );
            ck_node_zone(h, json.as_ptr(), json.len())
        };
        let (gb, de, tx) = (zone("GB"), zone("DE"), zone("US-TEX-ERCO"));
        assert_eq!(ck_node_zone(h, b"nope".as_ptr(), 4), ZONE_NOT_SEEN);
        let nodes = [gb, de, tx].map(|zone| CkNode {
            zone,
            allocatable_cpu_millis: 4000,
            allocatable_memory_bytes: 8 << 30,
            requested_cpu_millis: 0,
            requested_memory_bytes: 0,
        });
        let pod = br#"{"uid":"u1","namespace":"ns","name":"p","annotations":{},"cpuMillis":100,"memoryBytes":1000}"#;
        let mut verdicts = [7u32; 3];
        let rc = ck_filter(
            h,
            pod.as_ptr(),
            pod.len(),
            nodes.as_ptr(),
            nodes.len(),
            NOW,
            0,
            verdicts.as_mut_ptr(),
            &raw mut out,
        );
        let report: serde_json::Value = serde_json::from_str(&take(&mut out)).unwrap();
        assert_eq!(rc, CK_OK);
        assert_eq!(verdicts, [0, 0, 1]);
        assert_eq!(report["outcome"], "applied");
        assert!(
            report["messages"][0]
                .as_str()
                .unwrap()
                .starts_with("carbon-kube: zone US-TEX-ERCO at 410 g/kWh"),
            "{report}"
        );
        let mut scores = [0u8; 2];
        let rc = ck_score(
            h,
            pod.as_ptr(),
            pod.len(),
            nodes.as_ptr(),
            2,
            NOW,
            CK_EXPLAIN,
            scores.as_mut_ptr(),
            &raw mut out,
        );
        let report: serde_json::Value = serde_json::from_str(&take(&mut out)).unwrap();
        assert_eq!(rc, CK_OK);
        assert_eq!(report["outcome"], "applied");
        assert_eq!(scores[0], 10, "cleanest zone, empty node: {scores:?}");
        assert!(scores[1] < scores[0]);

        assert_eq!(ck_landing(h, b"u1".as_ptr(), 2, gb, &raw mut out), CK_OK);
        let event: serde_json::Value = serde_json::from_str(&take(&mut out)).unwrap();
        assert_eq!(event["reason"], "CarbonAwarePlacement");
        assert_eq!(ck_landing(h, b"u1".as_ptr(), 2, gb, &raw mut out), CK_OK);
        assert_eq!(take(&mut out), "", "nothing left to explain");
        ck_forget(h, b"u1".as_ptr(), 2);

        // Bad pod JSON, null arrays, null handle: errors, not crashes.
        assert_eq!(
            ck_filter(
                h,
                b"[".as_ptr(),
                1,
                nodes.as_ptr(),
                3,
                NOW,
                0,
                verdicts.as_mut_ptr(),
                &raw mut out
            ),
            CK_ERR
        );
        assert!(take(&mut out).starts_with("pod: "));
        assert_eq!(
            ck_filter(
                h,
                pod.as_ptr(),
                pod.len(),
                std::ptr::null(),
                3,
                NOW,
                0,
                verdicts.as_mut_ptr(),
                &raw mut out
            ),
            CK_ERR
        );
        take(&mut out);
        assert_eq!(
            ck_score(
                std::ptr::null(),
                pod.as_ptr(),
                pod.len(),
                nodes.as_ptr(),
                0,
                NOW,
                0,
                scores.as_mut_ptr(),
                &raw mut out
            ),
            CK_ERR
        );
        assert_eq!(take(&mut out), "null policy handle");
        // Zero candidates need no arrays.
        assert_eq!(
            ck_filter(
                h,
                pod.as_ptr(),
                pod.len(),
                std::ptr::null(),
                0,
                NOW,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            CK_OK
        );
        ck_policy_free(h);
        ck_policy_free(std::ptr::null_mut());
    }
}
