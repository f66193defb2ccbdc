//! The extender's HTTP service driven with `oneshot` requests in the shape
//! kube-scheduler sends (PascalCase top-level keys, camelCase nested
//! objects, `null` for unset fields), on real 2023 grid data.

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use carbon_kube_extender::service::app;
use carbon_kube_extender::watch::{apply_config_configmap, apply_snapshot_configmap};
use carbon_kube_model::{Snapshot, keys};
use carbon_kube_policy::placement::PlacementConfigRaw;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};
use support::*;
use tower::ServiceExt;

async fn call(router: &Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn four_nodes() -> Vec<carbon_kube_policy::zone_map::NodeView> {
    vec![
        node("de-1", "DE"),
        node("tx-1", "US-TEX-ERCO"),
        node("de-2", "DE"),
        node("tx-2", "US-TEX-ERCO"),
    ]
}

#[tokio::test]
async fn filter_with_node_names_keeps_the_green_zone() {
    let (snap, now, _, _) = green_de_dirty_texas();
    let (shared, registry) = shared(snap, now, four_nodes());
    let router = app(shared, registry);
    let (status, body) = call(&router, "POST", "/filter", &fixture("filter-names.json")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    // The exact wire shape kube-scheduler decodes.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Error",
            "FailedAndUnresolvableNodes",
            "FailedNodes",
            "NodeNames",
            "Nodes"
        ]
    );
    assert_eq!(v["Nodes"], Value::Null);
    assert_eq!(v["NodeNames"], json!(["de-1", "de-2"]));
    assert_eq!(v["FailedNodes"], json!({}));
    assert_eq!(v["Error"], "");
    // Nodes passed, so the pod will be placed: kube-scheduler would discard
    // per-node reasons unread, and none are sent.
    assert_eq!(v["FailedAndUnresolvableNodes"], json!({}));
}

#[tokio::test]
async fn filter_rejecting_every_node_says_why_for_each() {
    let (snap, now, de, tx) = green_de_dirty_texas();
    let (shared_state, registry) = shared(snap, now, four_nodes());
    let router = app(shared_state.clone(), registry);
    // A threshold below both zones, and reject instead of failing open.
    let below = format!("{}", (de.min(tx) - 1.0).floor());
    apply_config_configmap(
        &shared_state,
        Some(&configmap(
            keys::CONFIG_CONFIGMAP,
            &[("threshold", &below), ("onNoGreenNode", "reject")],
        )),
    );
    let (status, body) = call(&router, "POST", "/filter", &fixture("filter-names.json")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["NodeNames"], json!([]), "{body}");
    let failed = v["FailedAndUnresolvableNodes"].as_object().unwrap();
    assert_eq!(failed.len(), 4, "{body}");
    assert_eq!(
        failed["tx-1"],
        format!(
            "carbon-kube: zone US-TEX-ERCO at {tx:.0} g/kWh (electricity_maps, 2m old) is above the threshold of {below} g/kWh; every candidate zone is (onNoGreenNode: reject)"
        )
    );
    assert_eq!(failed["tx-2"], failed["tx-1"]);
    assert!(
        failed["de-1"]
            .as_str()
            .unwrap()
            .starts_with(&format!("carbon-kube: zone DE at {de:.0} g/kWh")),
        "{body}"
    );
}

#[tokio::test]
async fn prioritize_answers_integer_scores_greenest_first() {
    let (snap, now, _, _) = green_de_dirty_texas();
    let (shared, registry) = shared(snap, now, four_nodes());
    let router = app(shared, registry);
    let (status, body) = call(
        &router,
        "POST",
        "/prioritize",
        &fixture("filter-names.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 4);
    for h in list {
        assert_eq!(h.as_object().unwrap().len(), 2);
        assert!(h["Score"].is_i64(), "scores must be integers: {h}");
        assert!((0..=10).contains(&h["Score"].as_i64().unwrap()));
    }
    let score = |n: &str| {
        list.iter().find(|h| h["Host"] == n).unwrap()["Score"]
            .as_i64()
            .unwrap()
    };
    assert!(score("de-1") > score("tx-1"), "{body}");
    assert_eq!(score("de-1"), score("de-2"));
}

#[tokio::test]
async fn full_nodes_are_echoed_back_untouched() {
    let (snap, now, _, _) = green_de_dirty_texas();
    // No node cache at all: the nodes come in the request.
    let (shared, registry) = shared(snap, now, Vec::new());
    let router = app(shared, registry);
    let request = fixture("filter-nodes.json");
    let (status, body) = call(&router, "POST", "/filter", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let sent: Value = serde_json::from_str(&request).unwrap();
    assert_eq!(v["NodeNames"], Value::Null);
    let items = v["Nodes"]["items"].as_array().unwrap();
    // de-1 resolves through the AWS table (eu-central-1 → DE), gb-1 through
    // the Azure table (uksouth → GB, no data: neutral), tx-1 by label.
    let names: Vec<&str> = items
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["de-1", "gb-1"]);
    assert_eq!(
        items[0], sent["Nodes"]["items"][0],
        "node objects come back unchanged"
    );
    // tx-1 was filtered out; de-1 passed, so no per-node reasons are sent.
    assert_eq!(v["FailedAndUnresolvableNodes"], json!({}));
    // And prioritize takes full nodes too.
    let (status, body) = call(&router, "POST", "/prioritize", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn malformed_requests_get_400_with_a_clear_message() {
    let (shared, registry) = shared(Snapshot::default(), 0, Vec::new());
    let router = app(shared, registry);
    let cases = [
        ("{\"Pod\": ", "not an ExtenderArgs JSON object (line 1"),
        ("[1,2]", "not an ExtenderArgs JSON object"),
        (r#"{"Pod": null, "NodeNames": ["a"]}"#, "request has no Pod"),
        (
            r#"{"Pod": {"metadata": {"name": "p"}}, "Nodes": null, "NodeNames": null}"#,
            "neither Nodes nor NodeNames",
        ),
        (
            r#"{"Pod": {"spec": {"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}}, "NodeNames": []}"#,
            "Pod.spec.containers[0].resources.requests.cpu: \"lots\" is not a Kubernetes quantity",
        ),
        (
            r#"{"Pod": {}, "Nodes": {"items": [{"metadata": 5}]}}"#,
            "Nodes.items[0]",
        ),
    ];
    for (body, want) in cases {
        for verb in ["/filter", "/prioritize"] {
            let (status, text) = call(&router, "POST", verb, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{verb} {body}: {text}");
            assert!(
                text.contains(want),
                "{verb} {body}: got {text:?}, want {want:?}"
            );
        }
    }
    let (status, _) = call(&router, "GET", "/filter", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_panic_is_a_500_for_that_request_only() {
    let (snap, now, _, _) = green_de_dirty_texas();
    use std::sync::atomic::{AtomicBool, Ordering};
    // The clock fails once, as any bug inside a handler could.
    let fail = Arc::new(AtomicBool::new(false));
    let f = fail.clone();
    let clock: carbon_kube_extender::state::Clock = Arc::new(move || {
        assert!(!f.swap(false, Ordering::SeqCst), "injected failure");
        now
    });
    let (shared, registry) = shared_with(snap, clock, four_nodes(), PlacementConfigRaw::default());
    fail.store(true, Ordering::SeqCst);
    let router = app(shared, registry);
    let (status, body) = call(&router, "POST", "/filter", &fixture("filter-names.json")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !body.contains("injected"),
        "internals are not leaked: {body}"
    );
    let (status, _) = call(&router, "POST", "/filter", &fixture("filter-names.json")).await;
    assert_eq!(status, StatusCode::OK, "the next request is served");
    let (_, metrics) = call(&router, "GET", "/metrics", "").await;
    assert!(
        metrics
            .contains(r#"carbon_kube_scheduler_decisions_total{verb="filter",outcome="error"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_count_decisions_and_export_the_data() {
    let (snap, now, _, _) = green_de_dirty_texas();
    let (shared, registry) = shared(snap, now, four_nodes());
    let router = app(shared, registry);
    call(&router, "POST", "/filter", &fixture("filter-names.json")).await;
    call(
        &router,
        "POST",
        "/prioritize",
        &fixture("filter-names.json"),
    )
    .await;
    call(&router, "POST", "/filter", "nope").await;
    let (status, m) = call(&router, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    for want in [
        r#"carbon_kube_scheduler_decisions_total{verb="filter",outcome="applied"} 1"#,
        r#"carbon_kube_scheduler_decisions_total{verb="prioritize",outcome="applied"} 1"#,
        r#"carbon_kube_scheduler_decisions_total{verb="filter",outcome="bad_request"} 1"#,
        r#"carbon_kube_scheduler_latency_seconds_count{verb="filter"} 2"#,
        r#"carbon_kube_carbon_intensity_current{zone="DE",source="electricity_maps"}"#,
        r#"carbon_kube_carbon_data_age_seconds{zone="US-TEX-ERCO"} 120.0"#,
    ] {
        assert!(m.contains(want), "missing {want} in\n{m}");
    }
    let (status, _) = call(&router, "GET", "/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn opt_out_and_missing_data_are_neutral() {
    let (snap, now, _, _) = green_de_dirty_texas();
    let (shared_state, registry) = shared(snap, now, four_nodes());
    let router = app(shared_state.clone(), registry);
    let mut req: Value = serde_json::from_str(&fixture("filter-names.json")).unwrap();
    req["Pod"]["metadata"]["annotations"][keys::ANNOTATION_OPT_OUT] = json!("true");
    let (_, body) = call(&router, "POST", "/filter", &req.to_string()).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["NodeNames"].as_array().unwrap().len(), 4);
    let (_, body) = call(&router, "POST", "/prioritize", &req.to_string()).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v.as_array().unwrap().iter().all(|h| h["Score"] == 0));

    // The snapshot ConfigMap is deleted: nothing filtered, neutral scores.
    apply_snapshot_configmap(&shared_state, None);
    let (_, body) = call(&router, "POST", "/filter", &fixture("filter-names.json")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["NodeNames"].as_array().unwrap().len(), 4, "{body}");
    let (_, m) = call(&router, "GET", "/metrics", "").await;
    assert!(m.contains(r#"{verb="filter",outcome="no_data"} 1"#), "{m}");
    assert!(
        m.contains(r#"{verb="filter",outcome="opted_out"} 1"#),
        "{m}"
    );
}

fn configmap(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(keys::DEFAULT_NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn runtime_overrides_change_decisions_and_bad_ones_are_rejected() {
    let (snap, now, _, tx) = green_de_dirty_texas();
    let (shared_state, registry) = shared(snap.clone(), now, four_nodes());
    let router = app(shared_state.clone(), registry);
    // Raise the threshold above Texas: every node passes.
    let above = format!("{}", tx.ceil() + 1.0);
    apply_config_configmap(
        &shared_state,
        Some(&configmap(
            keys::CONFIG_CONFIGMAP,
            &[("threshold", &above), ("deferral.maxDelay", "6h")],
        )),
    );
    let (_, body) = call(&router, "POST", "/filter", &fixture("filter-names.json")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["NodeNames"].as_array().unwrap().len(), 4, "{body}");
    // A bad override keeps the previous settings.
    apply_config_configmap(
        &shared_state,
        Some(&configmap(
            keys::CONFIG_CONFIGMAP,
            &[("threshold", "-5"), ("carbonWeight", "x")],
        )),
    );
    assert_eq!(shared_state.config().threshold.g_per_kwh(), tx.ceil() + 1.0);
    // Deleting the override goes back to the base (250).
    apply_config_configmap(&shared_state, None);
    assert_eq!(shared_state.config().threshold.g_per_kwh(), 250.0);
    // An override with validUntil holds until then, and is undone after it
    // without any ConfigMap change; one already past it is ignored.
    let time = |t: i64| {
        k8s_openapi::jiff::Timestamp::from_second(t)
            .unwrap()
            .to_string()
    };
    let until = time(now + 60);
    apply_config_configmap(
        &shared_state,
        Some(&configmap(
            keys::CONFIG_CONFIGMAP,
            &[("threshold", "123"), ("validUntil", &until)],
        )),
    );
    assert_eq!(shared_state.config().threshold.g_per_kwh(), 123.0);
    assert!(!shared_state.expire_overrides(now + 60));
    assert_eq!(shared_state.config().threshold.g_per_kwh(), 123.0);
    assert!(shared_state.expire_overrides(now + 61));
    assert_eq!(shared_state.config().threshold.g_per_kwh(), 250.0);
    let past = time(now - 1);
    apply_config_configmap(
        &shared_state,
        Some(&configmap(
            keys::CONFIG_CONFIGMAP,
            &[("threshold", "123"), ("validUntil", &past)],
        )),
    );
    assert_eq!(shared_state.config().threshold.g_per_kwh(), 250.0);
    // A new snapshot in the ConfigMap takes effect at once.
    let mut flipped = snap;
    for r in flipped.zones.values_mut() {
        r.carbon_intensity = carbon_kube_model::CarbonIntensity::new(100.0).unwrap();
    }
    apply_snapshot_configmap(
        &shared_state,
        Some(&configmap(
            keys::SNAPSHOT_CONFIGMAP,
            &[(keys::SNAPSHOT_KEY, &flipped.to_json())],
        )),
    );
    let (_, body) = call(&router, "POST", "/filter", &fixture("filter-names.json")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["NodeNames"].as_array().unwrap().len(), 4, "{body}");
    let (_, m) = call(&router, "GET", "/metrics", "").await;
    assert!(
        m.contains("carbon_kube_scheduler_config_errors_total 1"),
        "{m}"
    );
}

/// Requests recorded from the real kube-scheduler v1.37.2 (see
/// `cluster.rs`, `the_real_kube_schedulers_requests_parse`), in both modes.
#[tokio::test]
async fn recorded_kube_scheduler_requests_are_answered() {
    let (snap, now, _, _) = green_de_dirty_texas();
    let names_req: Value = serde_json::from_str(&fixture("recorded-filter-names.json")).unwrap();
    let nodes: Vec<_> = names_req["NodeNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let n = n.as_str().unwrap();
            let zone = if n.contains("-us-tex-erco-") {
                "US-TEX-ERCO"
            } else {
                "DE"
            };
            node(n, zone)
        })
        .collect();
    let (shared, registry) = shared(snap, now, nodes);
    let router = app(shared, registry);
    for (verb, file) in [
        ("/filter", "recorded-filter-names.json"),
        ("/filter", "recorded-filter-nodes.json"),
        ("/prioritize", "recorded-prioritize-names.json"),
        ("/prioritize", "recorded-prioritize-nodes.json"),
    ] {
        let (status, body) = call(&router, "POST", verb, &fixture(file)).await;
        assert_eq!(status, StatusCode::OK, "{file}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if verb == "/filter" {
            // The pod's own threshold (300) filters Texas out in both modes;
            // DE passes, so no per-node reasons are sent.
            let passed: Vec<String> = match v["NodeNames"].as_array() {
                Some(names) => names.iter().map(|n| n.to_string()).collect(),
                None => v["Nodes"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["metadata"]["name"].to_string())
                    .collect(),
            };
            assert!(!passed.is_empty(), "{file}: {body}");
            assert!(
                passed.iter().all(|n| !n.contains("-us-tex-erco-")),
                "{file}: {body}"
            );
            assert_eq!(v["FailedAndUnresolvableNodes"], json!({}), "{file}");
        } else {
            assert!(v.as_array().unwrap().iter().all(|h| h["Score"].is_i64()));
        }
    }
}
