//! Hostile input (issue 18): the extender's request parsing and the
//! `carbon-kube-config` overrides codec fed damaged versions of the recorded
//! kube-scheduler requests and of real override maps.
//!
//! Properties: no panic (a panic would surface as an `Internal` error), every
//! rejection names what was wrong, allocation bounded by the body size, deep
//! nesting and oversize bodies refused with clear errors. `PROPTEST_CASES`
//! raises the case count (`make soak`).

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::alloc::System;
use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use carbon_kube_extender::service::{ApiError, MAX_BODY_BYTES, app, filter, prioritize};
use carbon_kube_extender::watch::apply_config_configmap;
use carbon_kube_policy::overrides::{DEFERRAL_KEYS, RuntimeOverrides, VALID_UNTIL_KEY};
use carbon_kube_policy::placement::config::CONFIG_KEYS;
use carbon_kube_testkit::hostile::{
    self, INSTRUMENTED_SYSTEM, StatsAlloc, allocated_by, mutated_json, nested,
};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ConfigMap;
use proptest::prelude::*;
use support::*;
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SEEDS: [&str; 6] = [
    "filter-names.json",
    "filter-nodes.json",
    "recorded-filter-names.json",
    "recorded-filter-nodes.json",
    "recorded-prioritize-names.json",
    "recorded-prioritize-nodes.json",
];

fn seed(i: usize) -> serde_json::Value {
    serde_json::from_str(&fixture(SEEDS[i % SEEDS.len()])).unwrap()
}

/// The snapshot of [`green_de_dirty_texas`], read once.
fn green() -> (carbon_kube_model::Snapshot, i64) {
    static GREEN: std::sync::OnceLock<(carbon_kube_model::Snapshot, i64)> =
        std::sync::OnceLock::new();
    GREEN
        .get_or_init(|| {
            let (snap, now, _, _) = green_de_dirty_texas();
            (snap, now)
        })
        .clone()
}

fn four_nodes() -> Vec<carbon_kube_policy::zone_map::NodeView> {
    vec![
        node("de-1", "DE"),
        node("tx-1", "US-TEX-ERCO"),
        node("de-2", "DE"),
        node("tx-2", "US-TEX-ERCO"),
    ]
}

/// A rejection names the place: a line and column of the JSON, the Pod's
/// field path, a node's index, or what the request lacks.
fn names_what_was_wrong(message: &str) -> bool {
    message.contains("(line ")
        || message.starts_with("Pod.")
        || message.starts_with("Nodes.items[")
        || message.starts_with("request has ")
}

/// Bytes a request may allocate: a generous multiple of its size plus a
/// constant for the response and the per-zone messages.
fn allocation_bound(body_len: usize) -> usize {
    64 * body_len + (4 << 20)
}

fn check_verb(
    shared: &carbon_kube_extender::state::Shared,
    verb: &str,
    body: &[u8],
) -> Result<(), TestCaseError> {
    let (result, bytes) = allocated_by(GLOBAL, || match verb {
        "filter" => filter(shared, body),
        _ => prioritize(shared, body),
    });
    prop_assert!(
        bytes <= allocation_bound(body.len()),
        "{verb}: {bytes} bytes allocated for a {} byte body",
        body.len()
    );
    match result {
        Ok((out, _)) => {
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        }
        Err(ApiError::BadRequest(m)) => {
            prop_assert!(names_what_was_wrong(&m), "{verb}: vague rejection {m:?}");
        }
        Err(ApiError::Internal(m)) => {
            prop_assert!(false, "{verb}: internal error (panic?) {m}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(hostile::config(256))]

    #[test]
    fn damaged_requests_are_answered_or_rejected_with_a_reason(
        (i, m) in (0..SEEDS.len()).prop_flat_map(|i| (Just(i), mutated_json(seed(i))))
    ) {
        let _serial = hostile::serial();
        let (snap, now) = green();
        let (shared, _) = shared(snap, now, four_nodes());
        let _ = i;
        check_verb(&shared, "filter", &m.text)?;
        check_verb(&shared, "prioritize", &m.text)?;
    }

    #[test]
    fn arbitrary_bytes_are_rejected_with_a_reason(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _serial = hostile::serial();
        let (snap, now) = green();
        let (shared, _) = shared(snap, now, four_nodes());
        check_verb(&shared, "filter", &body)?;
        check_verb(&shared, "prioritize", &body)?;
    }
}

#[test]
fn deep_nesting_is_refused_naming_the_recursion_limit() {
    let _serial = hostile::serial();
    let (snap, now) = green();
    let (shared, _) = shared(snap, now, four_nodes());
    for body in [
        format!(r#"{{"Pod":{}}}"#, nested(100_000, "")),
        format!(r#"{{"Pod":{{}},"NodeNames":{}}}"#, nested(10_000, "")),
        // Full nodes are kept as raw JSON: the nesting inside them too.
        format!(
            r#"{{"Pod":{{}},"Nodes":{{"items":[{}]}}}}"#,
            nested(10_000, "")
        ),
        format!(
            r#"{{"Pod":{{"metadata":{{"annotations":{}}}}}}}"#,
            nested(5_000, "")
        ),
    ] {
        for verb in ["filter", "prioritize"] {
            let (result, bytes) = allocated_by(GLOBAL, || match verb {
                "filter" => filter(&shared, body.as_bytes()),
                _ => prioritize(&shared, body.as_bytes()),
            });
            assert!(bytes <= allocation_bound(body.len()), "{bytes}");
            match result {
                Err(ApiError::BadRequest(m)) => {
                    assert!(
                        m.contains("recursion limit exceeded") || m.contains("invalid type"),
                        "{m}"
                    );
                    assert!(names_what_was_wrong(&m), "{m}");
                }
                other => panic!("{verb}: nesting accepted: {:?}", other.map(|r| r.1)),
            }
        }
    }
}

#[test]
fn oversize_bodies_get_413() {
    let _serial = hostile::serial();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (snap, now) = green();
    let (shared, registry) = shared(snap, now, four_nodes());
    let router = app(shared, registry);
    // Streamed with no length: cut off at the limit.
    let chunk = axum::body::Bytes::from(vec![b' '; 1 << 20]);
    let chunks = (MAX_BODY_BYTES >> 20) + 1;
    let stream =
        futures::stream::iter(std::iter::repeat_n(chunk, chunks).map(Ok::<_, std::io::Error>));
    let req = Request::builder()
        .method("POST")
        .uri("/prioritize")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    let resp = rt.block_on(router.oneshot(req)).unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&text).contains("length limit"),
        "{text:?}"
    );
}

/// Issue 18: `thresholdPercentile: 1e999` (and `inf`) decoded as a set
/// value and encoded back as `null`, which no longer decoded.
#[test]
fn non_finite_override_numbers_are_refused() {
    for key in ["threshold", "thresholdPercentile"] {
        for value in ["1e999", "inf", "-inf", "NaN"] {
            let map = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            let e = RuntimeOverrides::from_string_map(&map, "cm: ").unwrap_err();
            assert_eq!(e.0.len(), 1, "{key}={value}");
            assert_eq!(e.0[0].path, format!("cm: {key}"));
            assert!(
                e.0[0].message.contains("is not a number"),
                "{}",
                e.0[0].message
            );
        }
    }
}

/// A value for an override key: valid-looking or hostile.
fn override_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0.5".to_owned()),
        Just("300".to_owned()),
        Just("-1".to_owned()),
        Just("1e999".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("percentile".to_owned()),
        Just("absolute".to_owned()),
        Just("failOpen".to_owned()),
        Just("reject".to_owned()),
        Just("neutral".to_owned()),
        Just("2026-12-07T18:00:00Z".to_owned()),
        Just("2026-13-99T99:99:99Z".to_owned()),
        Just(String::new()),
        Just(" 0.25 ".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("x".repeat(4096)),
        ".{0,24}",
        any::<f64>().prop_map(|f| f.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
    ]
}

fn override_key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(CONFIG_KEYS.to_vec()).prop_map(str::to_owned),
        proptest::sample::select(DEFERRAL_KEYS.to_vec()).prop_map(|k| format!("deferral.{k}")),
        Just(VALID_UNTIL_KEY.to_owned()),
        "[a-zA-Z.]{1,20}",
    ]
}

fn override_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(override_key(), override_value(), 0..12)
}

proptest! {
    #![proptest_config(hostile::config(512))]

    /// Decoding either fails naming every bad key, or succeeds and
    /// round-trips through the encoder the tuner uses.
    #[test]
    fn overrides_decode_naming_bad_keys_or_round_trip(map in override_map()) {
        let _serial = hostile::serial();
        let prefix = "ConfigMap carbon-kube-config: ";
        let (result, bytes) = allocated_by(GLOBAL, || RuntimeOverrides::from_string_map(&map, prefix));
        let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
        prop_assert!(bytes <= 64 * size + (1 << 20), "{bytes} bytes for {size}");
        match result {
            Ok(o) => {
                let again = RuntimeOverrides::from_string_map(&o.to_string_map(), prefix);
                let again = again.map_err(|e| TestCaseError::fail(format!("re-decode: {e}")))?;
                prop_assert_eq!(&again.placement, &o.placement);
                prop_assert_eq!(&again.deferral, &o.deferral);
                prop_assert_eq!(again.valid_until, o.valid_until);
            }
            Err(e) => {
                prop_assert!(!e.0.is_empty());
                for err in &e.0 {
                    let key = err.path.strip_prefix(prefix);
                    prop_assert!(key.is_some_and(|k| map.contains_key(k)), "path {:?} names no key", err.path);
                    prop_assert!(!err.message.is_empty());
                }
            }
        }
    }

    /// A bad override never replaces the working settings; a good one does.
    #[test]
    fn a_rejected_override_keeps_the_previous_settings(map in override_map()) {
        let _serial = hostile::serial();
        let (snap, now) = green();
        let (shared, _) = shared(snap, now, four_nodes());
        let before = (*shared.config()).clone();
        let errors_before = shared.metrics.config_errors.get();
        let cm = ConfigMap { data: Some(map.clone()), ..ConfigMap::default() };
        apply_config_configmap(&shared, Some(&cm));
        let rejected = shared.metrics.config_errors.get() > errors_before;
        if rejected {
            prop_assert_eq!(&*shared.config(), &before);
        }
        // Whatever was applied still serves a request.
        check_verb(&shared, "filter", fixture(SEEDS[0]).as_bytes())?;
    }
}
