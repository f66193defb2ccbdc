//! The `/metrics`, `/healthz` and `/readyz` endpoints every long-running
//! component serves, built by a function so tests need no socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Named readiness checks. `/readyz` answers 200 once every registered check
/// is ready, 503 with the list of waiting checks before that.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    /// Registers a check that starts not ready.
    pub fn register(&self, name: &'static str) {
        self.lock().entry(name).or_insert(false);
    }

    /// Sets a check's state (registering it if needed).
    pub fn set(&self, name: &'static str, ready: bool) {
        self.lock().insert(name, ready);
    }

    /// Names of the checks that are not ready yet.
    pub fn waiting(&self) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| *name)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, bool>> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // map itself is always consistent.
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
struct HealthState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// A router with `/metrics` (OpenMetrics text), `/healthz` and `/readyz`.
pub fn health_router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HealthState {
            registry,
            readiness,
        })
}

async fn metrics(State(state): State<HealthState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response()
        }
    }
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let waiting = state.readiness.waiting();
    if waiting.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for: {}", waiting.join(", ")),
        )
            .into_response()
    }
}

/// Serves `router` on `addr` until `shutdown` resolves.
pub async fn serve_until(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_waits_for_every_check() {
        let readiness = Readiness::default();
        readiness.register("snapshot");
        readiness.register("nodes");
        let router = health_router(Arc::new(Registry::default()), readiness.clone());
        let (status, body) = get(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "waiting for: nodes, snapshot");
        readiness.set("nodes", true);
        readiness.set("snapshot", true);
        assert_eq!(get(router.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(router, "/healthz").await, (StatusCode::OK, "ok".into()));
    }

    #[tokio::test]
    async fn metrics_are_openmetrics() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("carbon_kube_test_things", "Things.", c.clone());
        c.inc();
        let router = health_router(Arc::new(registry), Readiness::default());
        let (status, body) = get(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("carbon_kube_test_things_total 1"), "{body}");
        assert!(body.ends_with("# EOF\n"));
    }
}
