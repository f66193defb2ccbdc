//! Hostile input (issue 18): every provider parser fed damaged versions of
//! the recorded real bodies in `shared/data/api_examples` (read
//! PROVENANCE.md), served by a local mock server; the provider under test
//! is alone in its chain so its own error is what comes back.
//!
//! Properties: no panic; either a record with a sane intensity, or an error
//! that starts with the provider and the failed step and says what was
//! wrong; allocation bounded by the body size; no secret in any message.
//! `PROPTEST_CASES` raises the case count (`make soak`).

#![allow(clippy::unwrap_used)] // Test code: a panic is a test failure.

mod common;

use std::alloc::System;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use carbon_kube_signals::{Outcome, Signals};
use carbon_kube_testkit::hostile::{
    self, INSTRUMENTED_SYSTEM, StatsAlloc, allocated_by, mutated_json,
};
use common::*;
use proptest::prelude::*;
use wiremock::matchers::any as any_request;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Serves the body set for each path; 404 for others.
#[derive(Clone, Default)]
struct Bodies(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl Respond for Bodies {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        match self.0.lock().unwrap().get(req.url.path()) {
            Some(b) => ResponseTemplate::new(200).set_body_raw(b.clone(), "application/json"),
            None => ResponseTemplate::new(404),
        }
    }
}

/// One provider's scenario: zone, `now`, and the recorded body per path.
struct Case {
    provider: &'static str,
    chain: &'static str,
    zone: &'static str,
    now: &'static str,
    bodies: Vec<(&'static str, String)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            provider: "electricity_maps",
            chain: "DE=electricity_maps",
            zone: "DE",
            now: "2024-03-01T23:20:00Z",
            bodies: vec![
                ("/v3/carbon-intensity/latest", body(EM_LATEST_DE)),
                ("/v3/carbon-intensity/forecast", body(EM_FORECAST_DE)),
                ("/v3/power-breakdown/latest", body(EM_BREAKDOWN_DE)),
            ],
        },
        Case {
            provider: "uk_carbon_intensity",
            chain: "GB=uk_carbon_intensity",
            zone: "GB",
            now: "2023-03-15T12:01:00Z",
            bodies: vec![
                ("/intensity", body(UK_PT24H)),
                ("/intensity/2023-03-15T12:01Z/fw48h", body(UK_FW48H)),
            ],
        },
        Case {
            provider: "uk_carbon_intensity",
            chain: "GB-SOUTH-EAST-ENGLAND=uk_carbon_intensity",
            zone: "GB-SOUTH-EAST-ENGLAND",
            now: "2023-07-04T23:40:00Z",
            bodies: vec![(
                "/regional/intensity/2023-07-04T23:40Z/fw48h/regionid/14",
                body(UK_REGIONAL_KT1),
            )],
        },
        Case {
            provider: "watttime",
            chain: "US-CAL-CISO=watttime",
            zone: "US-CAL-CISO",
            now: "2022-07-15T00:07:00Z",
            bodies: vec![
                ("/login", r#"{"token": "wt-token-0001"}"#.to_owned()),
                ("/v3/forecast", body(WT_FORECAST)),
            ],
        },
        Case {
            provider: "watttime",
            chain: "US-TEX-ERCO=watttime",
            zone: "US-TEX-ERCO",
            now: "2024-06-18T18:42:00Z",
            bodies: vec![
                ("/login", r#"{"token": "wt-token-0001"}"#.to_owned()),
                ("/v3/region-from-loc", body(WT_REGION)),
                ("/v3/forecast", body(WT_FORECAST)),
            ],
        },
        Case {
            provider: "noaa_estimate",
            chain: "US-CAL-CISO=noaa_estimate",
            zone: "US-CAL-CISO",
            now: "2022-02-04T03:30:00Z",
            bodies: vec![
                ("/points/37.434,-121.955", body(NOAA_POINTS)),
                ("/gridpoints/TAE/58,65", body(NOAA_GRID)),
            ],
        },
        Case {
            provider: "open_meteo_estimate",
            chain: "DE=open_meteo_estimate",
            zone: "DE",
            now: "2023-08-01T12:10:00Z",
            bodies: vec![("/v1/forecast", body(OPEN_METEO_DE))],
        },
    ]
}

struct Harness {
    rt: tokio::runtime::Runtime,
    server: MockServer,
    bodies: Bodies,
    cases: Vec<Case>,
}

fn harness() -> &'static Harness {
    static H: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bodies = Bodies::default();
        let server = rt.block_on(async {
            let server = MockServer::start().await;
            Mock::given(any_request())
                .respond_with(bodies.clone())
                .mount(&server)
                .await;
            server
        });
        Harness {
            rt,
            server,
            bodies,
            cases: cases(),
        }
    })
}

/// Runs case `c` with body `damaged` at path index `p` (the others intact).
fn run(c: usize, p: usize, damaged: Vec<u8>) -> Result<(), TestCaseError> {
    let h = harness();
    let case = &h.cases[c];
    let p = p % case.bodies.len();
    let damaged_len = damaged.len();
    {
        let mut map = h.bodies.0.lock().unwrap();
        map.clear();
        for (i, (path, b)) in case.bodies.iter().enumerate() {
            let b = if i == p {
                damaged.clone()
            } else {
                b.clone().into_bytes()
            };
            map.insert((*path).to_owned(), b);
        }
    }
    let total: usize = case.bodies.iter().map(|(_, b)| b.len()).sum::<usize>() + damaged_len;
    // A fresh client per case: nothing cached from the last one.
    let s = Signals::new(&args(&h.server.uri(), &[case.chain]), all_credentials()).unwrap();
    let (f, bytes) = allocated_by(GLOBAL, || {
        h.rt.block_on(s.fetch_zone(&zone(case.zone), ts(case.now)))
    });
    prop_assert!(
        bytes <= 64 * total + (16 << 20),
        "{}: {bytes} bytes allocated for {total} bytes of bodies",
        case.provider
    );
    prop_assert_eq!(f.attempts.len(), 1);
    let a = &f.attempts[0];
    prop_assert_eq!(a.provider, case.provider);
    for text in a.error.iter().chain(a.warnings.iter()) {
        for secret in [EM_KEY, WT_USER, WT_PASSWORD, NOAA_KEY, "wt-token-0001"] {
            prop_assert!(!text.contains(secret), "secret in {text}");
        }
    }
    match (&a.outcome, &f.record) {
        (Outcome::Success, Some(r)) => {
            let g = r.carbon_intensity.g_per_kwh();
            prop_assert!(g.is_finite() && g >= 0.0, "{g}");
            if let Some(fc) = &r.forecast {
                prop_assert!(fc.values.len() <= 24 * 400, "{}", fc.values.len());
            }
        }
        (Outcome::Error(kind), None) => {
            let e = a.error.as_deref().unwrap_or_default();
            prop_assert!(e.starts_with(&format!("{} ", case.provider)), "{e}");
            prop_assert!(e.contains(&kind.to_string()), "{e}");
            if matches!(
                kind,
                carbon_kube_signals::ErrorKind::InvalidResponse
                    | carbon_kube_signals::ErrorKind::InvalidValue
            ) {
                // The detail after the kind says what: a field path, a
                // parser position or the bad value.
                let detail = e.split_once(&format!("{kind}: ")).map(|x| x.1);
                prop_assert!(detail.is_some_and(|d| d.len() > 20), "vague: {e}");
            }
        }
        (Outcome::Unsupported | Outcome::Skipped, None) => {}
        (o, r) => prop_assert!(false, "{o:?} with record {}", r.is_some()),
    }
    Ok(())
}

fn seed_of(c: usize, p: usize) -> serde_json::Value {
    let cases = &harness().cases;
    let case = &cases[c % cases.len()];
    let (_, b) = &case.bodies[p % case.bodies.len()];
    serde_json::from_str(b).unwrap()
}

fn case_and_path() -> impl Strategy<Value = (usize, usize)> {
    (0..cases().len(), 0usize..3)
}

proptest! {
    #![proptest_config(hostile::config(96))]

    #[test]
    fn damaged_provider_bodies_give_a_record_or_a_clear_error(
        ((c, p), m) in case_and_path().prop_flat_map(|(c, p)| (Just((c, p)), mutated_json(seed_of(c, p))))
    ) {
        let _serial = hostile::serial();
        run(c, p, m.text)?;
    }

    #[test]
    fn arbitrary_bytes_give_a_clear_error(
        (c, p) in case_and_path(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let _serial = hostile::serial();
        run(c, p, body)?;
    }
}

#[test]
fn the_recorded_bodies_succeed() {
    let _serial = hostile::serial();
    for (c, case) in harness().cases.iter().enumerate() {
        let h = harness();
        let (path, b) = &case.bodies[0];
        {
            let mut map = h.bodies.0.lock().unwrap();
            map.clear();
            for (p, b) in &case.bodies {
                map.insert((*p).to_owned(), b.clone().into_bytes());
            }
        }
        let s = Signals::new(&args(&h.server.uri(), &[case.chain]), all_credentials()).unwrap();
        let f = h.rt.block_on(s.fetch_zone(&zone(case.zone), ts(case.now)));
        // Case 4 serves the recorded region lookup (PSCO) with the recorded
        // forecast (CAISO_NORTH): refused as a mismatch, by design.
        let expected = if c == 4 {
            Outcome::Error(carbon_kube_signals::ErrorKind::InvalidResponse)
        } else {
            Outcome::Success
        };
        assert_eq!(
            f.attempts[0].outcome, expected,
            "case {c} ({path}): {:?}",
            f.attempts
        );
        run(c, 0, b.clone().into_bytes()).unwrap();
    }
}

#[test]
fn deep_nesting_and_huge_expansions_are_refused() {
    let _serial = hostile::serial();
    // Nesting inside a body: the JSON parser's recursion limit.
    let nested = format!(
        r#"{{"zone":"DE","carbonIntensity":{},"datetime":"2024-03-01T23:00:00.000Z"}}"#,
        hostile::nested(100_000, "")
    );
    run(0, 0, nested.into_bytes()).unwrap();
    // NOAA: every value valid for 399 days, thousands of them starting a
    // year apart: the hourly expansion must be refused, not allocated.
    let mut grid: serde_json::Value = serde_json::from_str(&body(NOAA_GRID)).unwrap();
    let values: Vec<serde_json::Value> = (0..2_000)
        .map(|i| {
            serde_json::json!({
                "validTime": format!("{}-01-01T00:00:00+00:00/P399D", 2000 + i % 7000),
                "value": 50
            })
        })
        .collect();
    grid["properties"]["skyCover"]["values"] = serde_json::Value::Array(values.clone());
    grid["properties"]["windSpeed"]["values"] = serde_json::Value::Array(values);
    run(5, 1, serde_json::to_vec(&grid).unwrap()).unwrap();
}

/// Issue 18 (found by `make soak`): a WattTime forecast whose
/// `data_point_period_seconds` is huge overflowed `2 * period` (a panic in
/// debug builds, a wrapped validity in release).
#[test]
fn a_huge_watttime_period_is_not_believed() {
    let _serial = hostile::serial();
    let mut v: serde_json::Value = serde_json::from_str(&body(WT_FORECAST)).unwrap();
    for period in [i64::MAX, i64::MAX / 2 + 1, -1, 0] {
        v["meta"]["data_point_period_seconds"] = serde_json::json!(period);
        run(3, 1, serde_json::to_vec(&v).unwrap()).unwrap();
    }
}
