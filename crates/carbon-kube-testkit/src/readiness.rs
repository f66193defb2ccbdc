//! Readiness checks: poll a component's health endpoint with backoff until it
//! answers `200`, the component exits, or the timeout passes. No fixed sleeps.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;
use crate::process::Process;

/// First delay between two checks; doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Polls `check` until it returns `Ok(())`; fails early if `process` exits and
/// with [`Error::NotReady`] (including the log tail) after `timeout`.
pub(crate) async fn wait_ready<F, Fut>(
    process: &mut Process,
    timeout: Duration,
    mut check: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_DELAY;
    let mut last = "no check completed yet".to_owned();
    loop {
        if let Some(status) = process.exit_status() {
            return Err(Error::ExitedEarly {
                component: process.name().to_owned(),
                status,
                log: process.log().to_owned(),
                tail: process.log_tail(),
            });
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::NotReady {
                component: process.name().to_owned(),
                timeout,
                last,
                log: process.log().to_owned(),
                tail: process.log_tail(),
            });
        }
        match tokio::time::timeout(remaining.min(Duration::from_secs(5)), check()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(reason)) => last = reason,
            Err(_) => last = "check timed out".to_owned(),
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

/// An HTTP client for health endpoints: trusts only `ca_pem` (if given), no proxy.
pub(crate) fn health_client(ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
    crate::ensure_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        builder = builder.tls_certs_only([cert]);
    }
    builder
        .build()
        .map_err(|e| format!("building the health-check client: {e}"))
}

/// `Ok(())` if `GET url` answers 200.
pub(crate) async fn http_ok(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(format!("GET {url}: {status}: {}", shorten(&body, 2000)))
}

/// `Ok(())` if the API server's `path` (e.g. `/readyz`) answers 200 to an
/// authenticated request.
pub(crate) async fn apiserver_ok(client: &kube::Client, path: &str) -> Result<(), String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request_text(request)
        .await
        .map(drop)
        .map_err(|e| format!("GET {path}: {}", error_chain(&e)))
}

/// The message of `error` followed by its sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most `max` characters of `text`, marked when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Prints where the logs of a failed start are kept (the error itself carries
/// the failing component's log tail).
pub(crate) fn report_failure(dir: &Path) {
    eprintln!(
        "carbon-kube-testkit: control plane failed to start; component logs are kept in {}",
        dir.display()
    );
}
