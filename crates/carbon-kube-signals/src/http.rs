//! The one HTTP path every provider uses: timeouts, retries with jittered
//! exponential back-off for timeouts, connection errors and 5xx, `Retry-After`
//! on 429, no retry on other 4xx, a global bound on requests in flight, and
//! JSON decoding into typed errors that name the failing field.

use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use crate::credentials::Secret;
use crate::error::{ConfigError, ErrorKind, ProviderError};

/// How hard to try one request.
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// Back-off before the second attempt; doubles per attempt.
    pub base_delay: Duration,
    /// Upper bound of one back-off.
    pub max_delay: Duration,
    /// The longest `Retry-After` we wait for; a longer one ends the attempts.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// Back-off before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped,
    /// with "equal jitter" (uniform in the upper half) so many zones failing
    /// together do not retry in lock-step.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let d = exp.min(self.max_delay);
        let half = d / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// HTTP client settings, validated from the command line.
#[derive(Clone, Debug)]
pub(crate) struct HttpSettings {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    pub max_concurrency: usize,
    pub user_agent: String,
}

/// Shared HTTP client. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Http {
    client: Client,
    retry: RetryPolicy,
    permits: Arc<Semaphore>,
    secrets: Arc<Vec<Secret>>,
    /// Secrets learnt at run time (WattTime tokens), newest last, bounded.
    learnt: Arc<std::sync::Mutex<std::collections::VecDeque<Secret>>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("retry", &self.retry)
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Http {
    /// Builds the client. `secrets` are masked in any quoted response text.
    pub(crate) fn new(settings: &HttpSettings, secrets: Vec<Secret>) -> Result<Self, ConfigError> {
        // reqwest is built without a default crypto provider; install ring
        // (the provider kube uses). Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ua = reqwest::header::HeaderValue::from_str(&settings.user_agent)
            .map_err(|_| ConfigError::InvalidUserAgent)?;
        let client = Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            .user_agent(ua)
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        Ok(Self {
            client,
            retry: settings.retry.clone(),
            permits: Arc::new(Semaphore::new(settings.max_concurrency.max(1))),
            secrets: Arc::new(
                secrets
                    .into_iter()
                    .filter(|s| s.expose().len() >= 4)
                    .collect(),
            ),
            learnt: Arc::default(),
        })
    }

    /// Masks `secret` in quoted response text from now on (e.g. a token).
    pub(crate) fn learn_secret(&self, secret: &Secret) {
        if secret.expose().len() < 4 {
            return;
        }
        if let Ok(mut learnt) = self.learnt.lock() {
            if learnt.len() >= 8 {
                learnt.pop_front();
            }
            learnt.push_back(secret.clone());
        }
    }

    /// `text` with every known secret replaced by `***`.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.secrets.iter() {
            out = out.replace(s.expose(), "***");
        }
        if let Ok(learnt) = self.learnt.lock() {
            for s in learnt.iter() {
                out = out.replace(s.expose(), "***");
            }
        }
        out
    }

    /// Sends the request built by `build` (called once per attempt) and
    /// decodes the JSON body as `T`, retrying transient failures.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        provider: &'static str,
        step: &'static str,
        limiter: Option<&DefaultDirectRateLimiter>,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if let Some(limiter) = limiter {
                limiter.until_ready().await;
            }
            let result = match self.permits.acquire().await {
                Ok(_permit) => self.send_once(build(&self.client)).await,
                Err(_) => Err((ErrorKind::Connect, "request slots closed".to_owned())),
            };
            let (kind, detail) = match result {
                Ok(body) => {
                    return decode::<T>(&body).map_err(|(kind, detail)| {
                        ProviderError::new(provider, step, kind, self.redact(&detail))
                            .with_timing(attempt, started.elapsed())
                    });
                }
                Err((kind, detail)) => (kind, self.redact(&detail)),
            };
            let fail = || {
                ProviderError::new(provider, step, kind.clone(), detail.clone())
                    .with_timing(attempt, started.elapsed())
            };
            if !kind.is_transient() || attempt >= self.retry.max_attempts {
                return Err(fail());
            }
            let delay = match &kind {
                ErrorKind::RateLimited {
                    retry_after: Some(wait),
                } => {
                    if *wait > self.retry.max_retry_after {
                        // Waiting that long would stall the whole poll; let
                        // the chain move on and come back next poll.
                        return Err(fail());
                    }
                    *wait
                }
                _ => self.retry.backoff(attempt),
            };
            tracing::debug!(
                provider,
                step,
                attempt,
                error = %kind,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "retrying provider request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: the body of a 2xx answer, or the failure kind and detail.
    async fn send_once(&self, req: RequestBuilder) -> Result<Vec<u8>, (ErrorKind, String)> {
        let resp = req.send().await.map_err(classify_reqwest)?;
        let status = resp.status();
        if status.is_success() {
            return read_limited(resp, MAX_BODY_BYTES).await;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::time::parse_retry_after(v, unix_now()));
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS => ErrorKind::RateLimited { retry_after },
            StatusCode::UNAUTHORIZED => ErrorKind::Unauthorized,
            StatusCode::FORBIDDEN => ErrorKind::Forbidden,
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            s if s.is_server_error() => ErrorKind::ServerError(s.as_u16()),
            s => ErrorKind::ClientError(s.as_u16()),
        };
        // Auth failures are never quoted: some servers echo the credential.
        let detail = if matches!(kind, ErrorKind::Unauthorized | ErrorKind::Forbidden) {
            String::new()
        } else {
            let text = read_limited(resp, 64 * 1024).await.unwrap_or_default();
            self.quote(&String::from_utf8_lossy(&text))
        };
        Err((kind, detail))
    }

    /// A short, single-line, secret-masked quote of a response body.
    fn quote(&self, text: &str) -> String {
        // Mask before shortening, so a secret cut in half is still masked.
        let one_line: String = self
            .redact(text)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        let trimmed = one_line.trim();
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("body: {trimmed:?}")
        }
    }
}

/// The largest response body accepted (the biggest real one, a NOAA grid,
/// is about 1 MiB).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Reads a body, refusing one longer than `limit` bytes.
async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, (ErrorKind, String)> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify_reqwest)? {
        if body.len() + chunk.len() > limit {
            return Err((
                ErrorKind::InvalidResponse,
                format!("body longer than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn classify_reqwest(e: reqwest::Error) -> (ErrorKind, String) {
    // `without_url`: URLs hold no secrets, but keep messages short.
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Connect
    };
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    (kind, msg)
}

/// Decodes a JSON body, naming the failing field path on error.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, (ErrorKind, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err((ErrorKind::EmptyBody, String::new()));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if path == "." {
            inner.to_string()
        } else {
            format!("at `{path}`: {inner}")
        };
        (ErrorKind::InvalidResponse, detail)
    })
}

/// Wall-clock unix time, for `Retry-After` dates only.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `base` with `segments` appended as path segments (each percent-encoded).
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Parses and checks a base URL flag.
pub(crate) fn parse_base_url(flag: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let invalid = |message: String| ConfigError::InvalidUrl {
        flag,
        url: raw.to_owned(),
        message,
    };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be an http or https URL".into()));
    }
    if url.cannot_be_a_base() {
        return Err(invalid("cannot be a base URL".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not contain credentials; use the environment variables".into(),
        ));
    }
    Ok(url)
}

/// A rate limiter allowing `per_period` requests per `period`, with the whole
/// allowance available as a burst spread evenly (governor's GCRA).
pub(crate) fn rate_limiter(per_period: u32, period: Duration) -> DefaultDirectRateLimiter {
    let per = std::num::NonZeroU32::new(per_period.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let interval = period / per.get();
    let quota = Quota::with_period(interval.max(Duration::from_micros(1)))
        .unwrap_or_else(|| Quota::per_second(per))
        .allow_burst(std::num::NonZeroU32::new(10).unwrap_or(per));
    RateLimiter::direct(quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d2 = p.backoff(2);
            assert!(d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200));
            let d9 = p.backoff(9);
            assert!(d9 >= Duration::from_millis(175) && d9 <= Duration::from_millis(350));
        }
    }

    #[test]
    fn decode_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[allow(dead_code)]
            value: f64,
        }
        let (k, d) = decode::<Body>(br#"{"value": "high"}"#).unwrap_err();
        assert_eq!(k, ErrorKind::InvalidResponse);
        assert!(d.starts_with("at `value`: invalid type: string"), "{d}");
        let (k, _) = decode::<Body>(br#"{"value": 1"#).unwrap_err();
        assert_eq!(k, ErrorKind::InvalidResponse);
        let (k, _) = decode::<Body>(b" \n").unwrap_err();
        assert_eq!(k, ErrorKind::EmptyBody);
    }

    #[test]
    fn endpoints_append_segments() {
        let base = Url::parse("http://127.0.0.1:9/v3/").unwrap();
        assert_eq!(
            endpoint(&base, &["carbon-intensity", "latest"]).as_str(),
            "http://127.0.0.1:9/v3/carbon-intensity/latest"
        );
        let base = Url::parse("https://api.weather.gov").unwrap();
        assert_eq!(
            endpoint(&base, &["points", "30,-85"]).as_str(),
            "https://api.weather.gov/points/30,-85"
        );
        assert_eq!(
            endpoint(&base, &["a/b"]).as_str(),
            "https://api.weather.gov/a%2Fb"
        );
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(parse_base_url("--x", "https://api.watttime.org").is_ok());
        assert!(parse_base_url("--x", "ftp://x").is_err());
        assert!(parse_base_url("--x", "not a url").is_err());
        assert!(parse_base_url("--x", "https://user:pw@x.org").is_err());
    }
}
