//! The mutating admission webhook server: `POST /mutate` takes an
//! `admission.k8s.io/v1` `AdmissionReview` for a pod creation and answers
//! with a JSON patch that adds the gate (see [`crate::admission`] for who is
//! gated). It serves HTTPS (the API server requires it), reads namespaces
//! from an in-memory reflector (requests never wait on the network) and
//! reloads its certificate when the files change (cert-manager rotation).
//!
//! It is registered with `failurePolicy: Ignore` and a short timeout: when
//! it is down or slow, pods are created ungated and run undeferred.
//!
//! With `--steer-migrations` it also steers the replacement of a pod the
//! migrator moved to the zone the migrator planned (a preferred node
//! affinity; see [`crate::reservation`]), from a label-selected cache of the
//! owners with a pending move.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use carbon_kube_k8s::{Readiness, health_router, serve_until};
use carbon_kube_model::UnixSeconds;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use prometheus_client::registry::Registry;

use crate::admission::{AdmissionConfig, Decision, NamespaceInfo, SkipReason, decide};
use crate::metrics::WebhookMetrics;
use crate::reservation::{ReservationMetrics, Reservations, Steering};
use crate::{Clock, shutdown_signal, system_clock};

/// Shared state of the webhook handlers.
#[derive(Clone)]
pub struct WebhookState {
    cfg: Arc<AdmissionConfig>,
    namespaces: Namespaces,
    metrics: WebhookMetrics,
    clock: Clock,
    reservations: Option<Reservations>,
}

/// Where the webhook looks namespaces up.
#[derive(Clone)]
pub enum Namespaces {
    /// A reflector's store.
    Store(Store<Namespace>),
    /// A fixed answer (tests, or a webhook without namespace opt-in).
    Fixed(Arc<std::collections::BTreeMap<String, NamespaceInfo>>),
}

impl Namespaces {
    fn get(&self, name: &str) -> Option<NamespaceInfo> {
        match self {
            Self::Store(store) => store.get(&ObjectRef::new(name)).map(|ns| {
                NamespaceInfo::from_meta(
                    ns.metadata.labels.as_ref(),
                    ns.metadata.annotations.as_ref(),
                )
            }),
            Self::Fixed(map) => map.get(name).cloned(),
        }
    }
}

impl WebhookState {
    /// State from its parts.
    pub fn new(
        cfg: AdmissionConfig,
        namespaces: Namespaces,
        metrics: WebhookMetrics,
        clock: Clock,
    ) -> Self {
        Self {
            cfg: Arc::new(cfg),
            namespaces,
            metrics,
            clock,
            reservations: None,
        }
    }

    /// Also steers replacements of migrated pods to their planned zone.
    #[must_use]
    pub fn with_reservations(mut self, reservations: Reservations) -> Self {
        self.reservations = Some(reservations);
        self
    }
}

/// The largest `AdmissionReview` accepted (HTTP 413 beyond). kube-apiserver
/// refuses request bodies over 3 MiB and etcd objects over 1.5 MiB, so a pod
/// creation review is never larger; a bigger body is not from the API server.
pub const MAX_REVIEW_BYTES: usize = 4 << 20;

/// The webhook's router: `POST /mutate`, plus `/healthz`.
pub fn app(state: WebhookState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn mutate(
    State(state): State<WebhookState>,
    body: Result<Json<AdmissionReview<Pod>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let review = match body {
        Ok(Json(review)) => review,
        Err(e) => {
            // A client fault: not logged as an error. The API server treats
            // the failure per failurePolicy (Ignore: the pod is created ungated).
            // The rejection's own status: 400 not JSON, 422 not a review,
            // 413 over MAX_REVIEW_BYTES, 415 not application/json.
            state.metrics.errors.inc();
            tracing::debug!(error = %e, "unreadable AdmissionReview");
            return (e.status(), format!("unreadable AdmissionReview: {e}")).into_response();
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            state.metrics.errors.inc();
            return Json(
                AdmissionResponse::invalid("AdmissionReview without a request").into_review(),
            )
            .into_response();
        }
    };
    let response = respond(&state, &request, (state.clock)());
    Json(response.into_review()).into_response()
}

/// The answer to one admission request: the gate decision's patch, then
/// (with reservations) the steering of a migrated pod's replacement,
/// computed on the pod as the gate patch left it.
pub fn respond(
    state: &WebhookState,
    request: &AdmissionRequest<Pod>,
    now: UnixSeconds,
) -> AdmissionResponse {
    let namespace = request.namespace.clone().unwrap_or_default();
    let create = match (&request.operation, &request.object) {
        (Operation::Create, Some(pod)) if request.sub_resource.is_none() => Some(pod),
        _ => None,
    };
    let decision = match create {
        Some(pod) => {
            let ns = state.namespaces.get(&namespace);
            decide(pod, &namespace, ns.as_ref(), &state.cfg, now)
        }
        None => Decision::Skip(SkipReason::NotAPodCreate),
    };
    state.metrics.decision(decision.metric_label());
    let name = pod_name(request);
    let base = AdmissionResponse::from(request);
    let (mut ops, warnings) = match decision {
        Decision::Skip(reason) => {
            tracing::trace!(pod = %format!("{namespace}/{name}"), %reason, "not gated");
            (Vec::new(), Vec::new())
        }
        Decision::Gate {
            patch,
            reason,
            warnings,
        } => {
            tracing::debug!(pod = %format!("{namespace}/{name}"), ?reason, "gated");
            (patch.0, warnings)
        }
    };
    if let (Some(reservations), Some(pod)) = (&state.reservations, create) {
        let gated;
        let current = if ops.is_empty() {
            pod
        } else {
            gated = patched(pod, &ops);
            gated.as_ref().unwrap_or(pod)
        };
        if let Steering::Steer(s) = reservations.steer(current, &namespace, now, request.dry_run) {
            ops.extend(s.ops);
        }
    }
    if ops.is_empty() {
        return base;
    }
    match base.clone().with_patch(json_patch::Patch(ops)) {
        Ok(mut r) => {
            if !warnings.is_empty() {
                r.warnings = Some(warnings);
            }
            r
        }
        Err(e) => {
            // Never happens with our own patches; admit unchanged.
            state.metrics.errors.inc();
            tracing::error!(error = %e, "serializing the patch failed; admitting unchanged");
            base
        }
    }
}

/// `pod` with `ops` applied; `None` if they do not apply (never with the
/// gate's own patch).
fn patched(pod: &Pod, ops: &[json_patch::PatchOperation]) -> Option<Pod> {
    let mut doc = serde_json::to_value(pod).ok()?;
    json_patch::patch(&mut doc, ops).ok()?;
    serde_json::from_value(doc).ok()
}

fn pod_name(request: &AdmissionRequest<Pod>) -> String {
    if !request.name.is_empty() {
        return request.name.clone();
    }
    request
        .object
        .as_ref()
        .and_then(|p| p.metadata.generate_name.clone())
        .map_or_else(|| "<unnamed>".to_owned(), |g| format!("{g}*"))
}

/// `carbon-kube gates webhook`: serve the mutating admission webhook.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// HTTPS address for POST /mutate.
    #[arg(
        long,
        env = "CARBON_KUBE_GATES_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,

    /// PEM certificate (chain) to serve; reloaded when the file changes.
    #[arg(long, env = "CARBON_KUBE_GATES_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "CARBON_KUBE_GATES_TLS_KEY")]
    pub tls_key: PathBuf,

    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "CARBON_KUBE_GATES_HEALTH_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub health_listen: SocketAddr,

    /// Namespace whose pods are never gated; repeatable (kube-system always is).
    #[arg(long = "exclude-namespace", value_name = "NAMESPACE")]
    pub exclude_namespaces: Vec<String>,

    /// Max delay written on pods opted in only by their namespace's
    /// carbon-kube.io/defer=enabled label, when the namespace has no
    /// carbon-kube.io/max-delay annotation.
    #[arg(
        long,
        env = "CARBON_KUBE_GATES_NAMESPACE_MAX_DELAY",
        default_value = "6h"
    )]
    pub namespace_default_max_delay: String,

    /// Steer the replacement of a pod the migrator moved to the zone it
    /// planned: a preferred node affinity for that zone and its planned
    /// nodes, added to the first pod its owner creates while the move is
    /// reserved. Watches the metadata of ReplicaSets, StatefulSets and Jobs
    /// labelled carbon-kube.io/migration-pending=true (needs list/watch on
    /// them).
    #[arg(long, env = "CARBON_KUBE_GATES_STEER_MIGRATIONS")]
    pub steer_migrations: bool,
}

impl WebhookArgs {
    /// The admission settings, validated.
    pub fn admission_config(&self) -> anyhow::Result<AdmissionConfig> {
        crate::spec::parse_duration(&self.namespace_default_max_delay).map_err(|e| {
            anyhow::anyhow!(
                "--namespace-default-max-delay {:?}: {e}",
                self.namespace_default_max_delay
            )
        })?;
        let mut cfg = AdmissionConfig {
            namespace_default_max_delay: self.namespace_default_max_delay.clone(),
            ..AdmissionConfig::default()
        };
        cfg.excluded_namespaces
            .extend(self.exclude_namespaces.iter().cloned());
        Ok(cfg)
    }
}

/// Keeps a namespace store in sync; marks `namespaces` ready after the first list.
pub async fn reflect_namespaces(
    client: kube::Client,
    writer: reflector::store::Writer<Namespace>,
    readiness: Readiness,
) {
    let stream = reflector::reflector(
        writer,
        watcher(
            kube::Api::<Namespace>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => readiness.set("namespaces", true),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
        }
    }
}

/// Reloads the certificate every `every` when either file's mtime changed.
async fn reload_certificates(
    tls: axum_server::tls_rustls::RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
) {
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: (Option<SystemTime>, Option<SystemTime>) = (mtime(&cert), mtime(&key));
    loop {
        tokio::time::sleep(every).await;
        let now = (mtime(&cert), mtime(&key));
        if now != seen {
            match tls.reload_from_pem_file(&cert, &key).await {
                Ok(()) => {
                    tracing::info!(cert = %cert.display(), "reloaded the TLS certificate");
                    seen = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reloading the TLS certificate failed; keeping the old one")
                }
            }
        }
    }
}

/// A running HTTPS webhook server.
pub struct RunningWebhook {
    /// The address it listens on.
    pub addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningWebhook {
    /// Stops the server (connections are closed at once).
    pub async fn stop(self) {
        self.handle.shutdown();
        let _ = self.task.await;
    }
}

/// Serves `router` over HTTPS on `listen` with `tls`; returns once listening.
pub async fn serve_https(
    listen: SocketAddr,
    tls: axum_server::tls_rustls::RustlsConfig,
    router: Router,
) -> anyhow::Result<RunningWebhook> {
    let handle = axum_server::Handle::new();
    let server = axum_server::bind_rustls(listen, tls)
        .handle(handle.clone())
        .serve(router.into_make_service());
    let task = tokio::spawn(server);
    let addr = handle
        .listening()
        .await
        .with_context(|| format!("binding {listen}"))?;
    Ok(RunningWebhook { addr, handle, task })
}

/// Serves `router` over HTTPS on `listen` with a PEM certificate (chain)
/// and key held in memory; returns once listening.
pub async fn serve_https_pem(
    listen: SocketAddr,
    cert: Vec<u8>,
    key: Vec<u8>,
    router: Router,
) -> anyhow::Result<RunningWebhook> {
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key)
        .await
        .context("reading the PEM certificate and key")?;
    serve_https(listen, tls, router).await
}

/// Runs the webhook until SIGTERM or Ctrl-C.
pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let cfg = args.admission_config()?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let mut registry = Registry::default();
    let metrics = WebhookMetrics::register(&mut registry);
    let readiness = Readiness::default();
    readiness.register("namespaces");
    let (store, writer) = reflector::store();
    let mut state = WebhookState::new(cfg, Namespaces::Store(store), metrics, system_clock());
    if args.steer_migrations {
        // Not part of readiness: until the owner caches list, replacements
        // are simply not steered (fail open), and gating goes on.
        let (reservations, writers) =
            Reservations::new(ReservationMetrics::register(&mut registry));
        reservations.watch(&client, writers);
        state = state.with_reservations(reservations);
    }
    tokio::spawn(reflect_namespaces(client, writer, readiness.clone()));
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&args.tls_cert, &args.tls_key)
        .await
        .with_context(|| {
            format!(
                "loading TLS certificate {} and key {}",
                args.tls_cert.display(),
                args.tls_key.display()
            )
        })?;
    tokio::spawn(reload_certificates(
        tls.clone(),
        args.tls_cert.clone(),
        args.tls_key.clone(),
        Duration::from_secs(30),
    ));
    let health = health_router(Arc::new(registry), readiness);
    let health_task = tokio::spawn(serve_until(args.health_listen, health, shutdown_signal()));
    let server = serve_https(args.listen, tls, app(state)).await?;
    tracing::info!(addr = %server.addr, "serving the gates webhook over HTTPS");
    shutdown_signal().await;
    server
        .handle
        .graceful_shutdown(Some(Duration::from_secs(5)));
    let _ = server.task.await;
    health_task.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use carbon_kube_model::keys;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    fn state(namespaces: &[(&str, NamespaceInfo)]) -> (WebhookState, Registry) {
        let mut registry = Registry::default();
        let metrics = WebhookMetrics::register(&mut registry);
        let map = namespaces
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        (
            WebhookState::new(
                AdmissionConfig::default(),
                Namespaces::Fixed(Arc::new(map)),
                metrics,
                Arc::new(|| 1_777_716_000),
            ),
            registry,
        )
    }

    fn review(pod: &Pod, namespace: &str, operation: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": pod.metadata.name,
                "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:batch:job-controller"},
                "object": pod,
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        })
    }

    async fn post(state: WebhookState, body: String) -> (StatusCode, Value) {
        let resp = app(state)
            .oneshot(
                Request::post("/mutate")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// kube-core serializes the patch bytes as a JSON array of numbers
    /// (Go's decoder accepts that for `[]byte`).
    fn decode_patch(resp: &Value) -> Value {
        let bytes: Vec<u8> =
            serde_json::from_value(resp["response"]["patch"].clone()).expect("a patch");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn gates_an_opted_in_pod_with_a_json_patch() {
        let (state, registry) = state(&[]);
        let p = pod("nightly")
            .annotate(keys::ANNOTATION_MAX_DELAY, "6h")
            .build();
        let (status, resp) = post(state, review(&p, "batch", "CREATE").to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(resp["kind"], "AdmissionReview");
        assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(
            resp["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(resp["response"]["allowed"], true);
        assert_eq!(resp["response"]["patchType"], "JSONPatch");
        assert_eq!(
            decode_patch(&resp),
            json!([{"op": "add", "path": "/spec/schedulingGates",
                    "value": [{"name": keys::SCHEDULING_GATE}]}])
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("carbon_kube_gates_webhook_decisions_total{decision=\"gate_pod\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn leaves_other_pods_and_operations_alone() {
        let (state, _) = state(&[]);
        let p = pod("web").build();
        let (_, resp) = post(state.clone(), review(&p, "shop", "CREATE").to_string()).await;
        assert_eq!(resp["response"]["allowed"], true);
        assert!(resp["response"].get("patch").is_none(), "{resp}");
        let asks = pod("nightly")
            .annotate(keys::ANNOTATION_MAX_DELAY, "6h")
            .build();
        let (_, resp) = post(state, review(&asks, "batch", "UPDATE").to_string()).await;
        assert!(resp["response"].get("patch").is_none(), "{resp}");
    }

    #[tokio::test]
    async fn namespace_opt_in_comes_from_the_namespace_lookup() {
        let ns = NamespaceInfo {
            defer_enabled: true,
            max_delay: Some("3h".into()),
            expected_duration: None,
        };
        let (state, _) = state(&[("batch", ns)]);
        let p = pod("report").build();
        let (_, resp) = post(state, review(&p, "batch", "CREATE").to_string()).await;
        let patch = decode_patch(&resp);
        assert_eq!(patch[1]["path"], "/metadata/annotations");
        assert_eq!(patch[1]["value"][keys::ANNOTATION_MAX_DELAY], "3h");
    }

    #[tokio::test]
    async fn warns_about_bad_annotations() {
        let (state, _) = state(&[]);
        let p = pod("x")
            .annotate(keys::ANNOTATION_DEADLINE, "yesterday")
            .build();
        let (_, resp) = post(state, review(&p, "batch", "CREATE").to_string()).await;
        let w = resp["response"]["warnings"][0].as_str().unwrap();
        assert!(w.contains("carbon-kube.io/deadline"), "{w}");
    }

    #[tokio::test]
    async fn an_unreadable_body_is_a_client_error() {
        let (state, _) = state(&[]);
        let (status, _) = post(state, "{not json".to_owned()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
