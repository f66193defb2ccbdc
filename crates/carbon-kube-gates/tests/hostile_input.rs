//! Hostile input (issue 18): the admission webhook fed damaged
//! `AdmissionReview`s, deep nesting and oversize bodies, through its router
//! (`oneshot`, no socket).
//!
//! Properties: no panic, an answer the API server can read (a 200 review
//! answering the request's uid, or a 4xx naming what was wrong; with
//! `failurePolicy: Ignore` the pod is then created ungated), allocation
//! bounded by the body size. `PROPTEST_CASES` raises the case count.

#![allow(clippy::unwrap_used, missing_docs)]

use std::alloc::System;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use carbon_kube_gates::admission::AdmissionConfig;
use carbon_kube_gates::metrics::WebhookMetrics;
use carbon_kube_gates::webhook::{MAX_REVIEW_BYTES, Namespaces, WebhookState, app};
use carbon_kube_model::keys;
use carbon_kube_testkit::hostile::{
    self, INSTRUMENTED_SYSTEM, StatsAlloc, allocated_by, mutated_json, nested,
};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

fn state() -> WebhookState {
    let mut registry = Registry::default();
    WebhookState::new(
        AdmissionConfig::default(),
        Namespaces::Fixed(Arc::new(Default::default())),
        WebhookMetrics::register(&mut registry),
        Arc::new(|| 1_777_716_000),
    )
}

/// A pod creation review as kube-apiserver v1.37 sends it for a Job's pod
/// that asks to be deferred.
fn seed() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": "batch",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:job-controller",
                "uid": "b1f0e0c2-4c0c-4d6f-a0f5-55d1c2e1f0aa",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "generateName": "nightly-28912345-",
                    "namespace": "batch",
                    "labels": {"batch.kubernetes.io/job-name": "nightly-28912345", "job-name": "nightly-28912345"},
                    "annotations": {
                        (keys::ANNOTATION_MAX_DELAY): "6h",
                        "batch.kubernetes.io/job-completion-index": "0"
                    },
                    "ownerReferences": [{
                        "apiVersion": "batch/v1", "kind": "Job", "name": "nightly-28912345",
                        "uid": "0c6d2f9a-3d2e-4f57-9d0e-1a2b3c4d5e6f",
                        "controller": true, "blockOwnerDeletion": true
                    }]
                },
                "spec": {
                    "containers": [{
                        "name": "work", "image": "busybox:1.36",
                        "command": ["sh", "-c", "sleep 3600"],
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "default",
                    "securityContext": {},
                    "schedulerName": "default-scheduler",
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                    "priority": 0,
                    "enableServiceLinks": true,
                    "preemptionPolicy": "PreemptLowerPriority"
                },
                "status": {}
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

async fn post(body: Body) -> (StatusCode, Vec<u8>) {
    let resp = app(state())
        .oneshot(
            Request::post("/mutate")
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn check(rt: &tokio::runtime::Runtime, body: Vec<u8>) -> Result<(), TestCaseError> {
    let len = body.len();
    let ((status, answer), bytes) = allocated_by(GLOBAL, || rt.block_on(post(Body::from(body))));
    prop_assert!(
        bytes <= 64 * len + (4 << 20),
        "{bytes} bytes allocated for a {len} byte review"
    );
    let text = String::from_utf8_lossy(&answer);
    match status {
        StatusCode::OK => {
            let v: Value = serde_json::from_slice(&answer)
                .map_err(|e| TestCaseError::fail(format!("unreadable answer {e}: {text}")))?;
            // kube-core echoes the request's type fields; the API server
            // always sends AdmissionReview, so only the response matters.
            prop_assert!(v["response"]["uid"].is_string(), "{text}");
            let allowed = &v["response"]["allowed"];
            prop_assert!(
                allowed == true || v["response"]["status"]["message"].is_string(),
                "{text}"
            );
        }
        s if s.is_client_error() => {
            prop_assert!(
                text.starts_with("unreadable AdmissionReview: ") || text.contains("length limit"),
                "{s}: {text}"
            );
            // A body error names its place: a line and column or a field.
            prop_assert!(
                text.contains("line ")
                    || text.contains("Content-Type")
                    || text.contains("length limit")
                    || text.contains("EOF"),
                "{s}: vague rejection {text}"
            );
        }
        s => prop_assert!(false, "{s}: {text}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(hostile::config(256))]

    #[test]
    fn damaged_reviews_are_answered_or_rejected_with_a_reason(m in mutated_json(seed())) {
        let _serial = hostile::serial();
        let rt = runtime();
        check(&rt, m.text)?;
    }
}

#[test]
fn the_seed_is_gated() {
    let _serial = hostile::serial();
    let rt = runtime();
    let (status, body) = rt.block_on(post(Body::from(seed().to_string())));
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["uid"], UID);
    assert_eq!(v["response"]["patchType"], "JSONPatch", "{v}");
}

#[test]
fn deep_nesting_is_refused_naming_the_recursion_limit() {
    let _serial = hostile::serial();
    let rt = runtime();
    // `options` is free-form JSON: the parser's recursion limit. The typed
    // fields refuse the first bracket of the wrong type.
    for (at, says) in [
        ("/request/options", "recursion limit exceeded"),
        (
            "/request/object/metadata/annotations",
            "invalid type: sequence, expected a map",
        ),
        (
            "/request/object/spec/containers",
            "invalid type: sequence, expected Container",
        ),
    ] {
        let mut v = seed();
        *v.pointer_mut(at).unwrap_or_else(|| panic!("{at}")) = Value::String("NEST".into());
        let text = v.to_string().replacen("\"NEST\"", &nested(50_000, ""), 1);
        let ((status, answer), _) = allocated_by(GLOBAL, || rt.block_on(post(Body::from(text))));
        let answer = String::from_utf8_lossy(&answer);
        assert!(status.is_client_error(), "{at}: {status} {answer}");
        assert!(answer.contains(says), "{at}: {answer}");
        // Typed fields: the error names the field path.
        assert!(
            says.starts_with("recursion") || answer.contains(&at[1..].replace('/', ".")),
            "{at}: {answer}"
        );
    }
}

#[test]
fn oversize_reviews_get_413() {
    let _serial = hostile::serial();
    let rt = runtime();
    let pad = "x".repeat(MAX_REVIEW_BYTES);
    let mut v = seed();
    v["request"]["object"]["metadata"]["annotations"]["pad"] = Value::String(pad);
    let (status, answer) = rt.block_on(post(Body::from(v.to_string())));
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        String::from_utf8_lossy(&answer).contains("length limit"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The largest review the API server can send (a pod at etcd's 1.5 MiB
    // object limit) still fits.
    let mut v = seed();
    v["request"]["object"]["metadata"]["annotations"]["pad"] = Value::String("x".repeat(3 << 19));
    let (status, _) = rt.block_on(post(Body::from(v.to_string())));
    assert_eq!(status, StatusCode::OK);
}

/// The webhook serves TLS only: a plain-HTTP request gets no HTTP answer
/// (the server speaks TLS or hangs up), and there is no flag for plain HTTP
/// (`--tls-cert` and `--tls-key` are required).
#[tokio::test]
async fn the_webhook_answers_no_plain_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.cert.pem().into_bytes(),
        cert.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let server =
        carbon_kube_gates::webhook::serve_https("127.0.0.1:0".parse().unwrap(), tls, app(state()))
            .await
            .unwrap();
    let body = seed().to_string();
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer ({read:?})"
    );
    server.stop().await;

    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: carbon_kube_gates::WebhookArgs,
    }
    for var in ["CARBON_KUBE_GATES_TLS_CERT", "CARBON_KUBE_GATES_TLS_KEY"] {
        assert!(
            std::env::var_os(var).is_none(),
            "{var} set in the test environment"
        );
    }
    let e = Cli::try_parse_from(["webhook"])
        .err()
        .expect("TLS flags are required");
    let text = e.to_string();
    assert!(
        text.contains("--tls-cert") && text.contains("--tls-key"),
        "{text}"
    );
}
