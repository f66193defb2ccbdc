//! The framework plugin (through carbon-kube-ffi, exactly as
//! scheduler-plugin/ calls it) and the extender give the same answers for the
//! same snapshot, settings and nodes: every 53rd hour of 2023 in six real
//! grid zones, with nodes of different sizes and loads, pods with and without
//! a threshold of their own, and a zone-less node.

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::collections::BTreeMap;

use carbon_kube_extender::service::{filter, prioritize};
use carbon_kube_ffi::policy::{NodeInput, PodInput};
use carbon_kube_ffi::{CkNode, Policy};
use carbon_kube_model::keys;
use carbon_kube_policy::zone_map::{NodeView, Resources};
use serde_json::json;
use support::{GIB, snapshot_at, year};

const ZONES: [&str; 6] = ["DE", "GB", "US-TEX-ERCO", "US-CAL-CISO", "AU-NSW", "IN-WE"];

/// Nine nodes per zone (sizes and loads vary) and one without a zone.
fn fleet() -> Vec<(NodeView, Resources)> {
    let mut nodes = Vec::new();
    for zone in ZONES {
        for i in 0..9_i64 {
            let mut n = support::node(&format!("{}-{i}", zone.to_ascii_lowercase()), zone);
            n.allocatable = Resources::new(4000 + 2000 * (i % 3), (16 + 8 * (i % 2)) * GIB);
            nodes.push((n, Resources::new(350 * i, i * GIB)));
        }
    }
    let mut loose = support::node("no-zone", "DE");
    loose.labels = BTreeMap::new();
    nodes.push((loose, Resources::new(1000, 2 * GIB)));
    nodes
}

fn pod_json(annotations: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "Pod": {
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "annotations": annotations},
            "spec": {"containers": [{"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}
        },
        "NodeNames": fleet().iter().map(|(n, _)| n.name.clone()).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[test]
fn plugin_and_extender_decide_the_same_on_real_hours() {
    let years: Vec<(&str, Vec<(i64, f64)>)> = ZONES.iter().map(|z| (*z, year(z))).collect();
    let refs: Vec<(&str, &[(i64, f64)])> = years.iter().map(|(z, y)| (*z, y.as_slice())).collect();
    let nodes = fleet();
    // The extender of `support::shared` runs with the default settings.
    let plugin = Policy::new("").unwrap();
    let handles: Vec<u32> = nodes
        .iter()
        .map(|(n, _)| {
            plugin.node_zone(&NodeInput {
                name: n.name.clone(),
                labels: n.labels.clone(),
                provider_id: n.provider_id.clone(),
            })
        })
        .collect();
    let ck: Vec<CkNode> = nodes
        .iter()
        .zip(&handles)
        .map(|((n, used), &zone)| CkNode {
            zone,
            allocatable_cpu_millis: n.allocatable.cpu_millis,
            allocatable_memory_bytes: n.allocatable.memory_bytes,
            requested_cpu_millis: used.cpu_millis,
            requested_memory_bytes: used.memory_bytes,
        })
        .collect();
    let mut compared = 0;
    let mut carbon_mattered = 0;
    for hour in (0..refs[0].1.len()).step_by(53) {
        let snap = snapshot_at(&refs, hour);
        let now = refs[0].1[hour].0 + 300;
        let (ext, _) = support::shared(
            snap.clone(),
            now,
            nodes.iter().map(|(n, _)| n.clone()).collect(),
        );
        {
            let mut c = ext.cluster_mut();
            for (i, (n, used)) in nodes.iter().enumerate() {
                c.upsert_pod(&format!("bound-{i}"), &n.name, *used);
            }
        }
        plugin.set_snapshot(Some(&snap.to_json())).unwrap();
        for annotations in [
            BTreeMap::new(),
            [(keys::ANNOTATION_MAX_INTENSITY.to_owned(), "150".to_owned())].into(),
        ] {
            let body = pod_json(&annotations);
            let pod = PodInput {
                uid: "u".into(),
                namespace: "ns".into(),
                name: "p".into(),
                annotations: annotations.clone(),
                cpu_millis: 500,
                memory_bytes: GIB,
            };
            // Filter: the extender's passing names against the plugin's
            // verdicts, over every node and over one node per zone (what
            // the plugin's PreFilter sends).
            let (out, _) = filter(&ext, &body).unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let ext_passed: Vec<&str> = answer["NodeNames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let mut verdicts = vec![0; ck.len()];
            plugin.filter(&pod, &ck, now, &mut verdicts).unwrap();
            let plugin_passed: Vec<&str> = nodes
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| **v == 0)
                .map(|((n, _), _)| n.name.as_str())
                .collect();
            assert_eq!(plugin_passed, ext_passed, "hour {hour}, {annotations:?}");
            let mut reps: Vec<CkNode> = Vec::new();
            for n in &ck {
                if !reps.iter().any(|r| r.zone == n.zone) {
                    reps.push(CkNode {
                        zone: n.zone,
                        ..CkNode::default()
                    });
                }
            }
            let mut per_zone = vec![0; reps.len()];
            plugin.filter(&pod, &reps, now, &mut per_zone).unwrap();
            for (n, v) in ck.iter().zip(&verdicts) {
                let i = reps.iter().position(|r| r.zone == n.zone).unwrap();
                assert_eq!(per_zone[i] == 0, *v == 0, "hour {hour}: per-zone filter");
            }
            carbon_mattered += usize::from(plugin_passed.len() < nodes.len());

            // Scores over the nodes that passed, as kube-scheduler sends them.
            let passed_names: Vec<String> = plugin_passed.iter().map(|s| (*s).to_owned()).collect();
            let mut body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            body["NodeNames"] = json!(passed_names);
            let (out, _) = prioritize(&ext, &serde_json::to_vec(&body).unwrap()).unwrap();
            let answer: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
            let ext_scores: Vec<(String, u8)> = answer
                .iter()
                .map(|h| {
                    (
                        h["Host"].as_str().unwrap().to_owned(),
                        u8::try_from(h["Score"].as_i64().unwrap()).unwrap(),
                    )
                })
                .collect();
            let feasible: Vec<CkNode> = nodes
                .iter()
                .zip(&ck)
                .filter(|((n, _), _)| passed_names.contains(&n.name))
                .map(|(_, c)| *c)
                .collect();
            let mut scores = vec![0; feasible.len()];
            plugin.score(&pod, &feasible, now, &mut scores).unwrap();
            let plugin_scores: Vec<(String, u8)> =
                passed_names.iter().cloned().zip(scores).collect();
            assert_eq!(plugin_scores, ext_scores, "hour {hour}, {annotations:?}");
            compared += 1;
        }
    }
    assert!(compared > 300, "{compared} decisions compared");
    assert!(
        carbon_mattered > 50,
        "the threshold filtered in {carbon_mattered} decisions"
    );
}
