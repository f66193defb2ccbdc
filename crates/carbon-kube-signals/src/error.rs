//! Typed errors: one per provider step, plus configuration and credential
//! errors. Every message is secret-free by construction: no error carries a
//! request header, and response bodies are only quoted (shortened, with the
//! configured secrets masked) for statuses that are not about authentication.

use std::fmt;
use std::time::Duration;

/// What went wrong in one provider step. The fallback chain branches on this,
/// never on message text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request did not finish within the request timeout.
    Timeout,
    /// No connection could be made, or it broke while reading the body.
    Connect,
    /// The server answered 5xx.
    ServerError(u16),
    /// The server answered 429; `retry_after` is what it asked us to wait.
    RateLimited {
        /// The `Retry-After` delay, when the server sent one.
        retry_after: Option<Duration>,
    },
    /// 401: the credentials were refused.
    Unauthorized,
    /// 403: the credentials are valid but the plan does not cover this.
    Forbidden,
    /// 404: the resource (often: the zone) does not exist at the provider.
    NotFound,
    /// Another 4xx status.
    ClientError(u16),
    /// The server answered 2xx with an empty body.
    EmptyBody,
    /// The body is not the JSON we expect (truncated, wrong types, missing fields).
    InvalidResponse,
    /// The body parsed but holds an impossible value (negative intensity, bad unit).
    InvalidValue,
    /// The body parsed but holds no usable data point for now.
    NoData,
    /// The newest value is too old to be used.
    Stale,
    /// The provider has no mapping for this zone (no region, no coordinates,
    /// outside its coverage). The chain moves on without counting a failure.
    UnsupportedZone,
    /// The provider needs credentials that are not configured.
    MissingCredentials,
}

impl ErrorKind {
    /// Whether trying again later may succeed (timeouts, connection errors,
    /// 5xx, 429). Retries inside one fetch happen only for these.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::Connect | Self::ServerError(_) | Self::RateLimited { .. }
        )
    }

    /// A short, bounded label for metrics (`outcome` label values).
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect_error",
            Self::ServerError(_) => "server_error",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::ClientError(_) => "client_error",
            Self::EmptyBody => "empty_body",
            Self::InvalidResponse => "invalid_response",
            Self::InvalidValue => "invalid_value",
            Self::NoData => "no_data",
            Self::Stale => "stale",
            Self::UnsupportedZone => "unsupported_zone",
            Self::MissingCredentials => "missing_credentials",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Connect => f.write_str("connection failed"),
            Self::ServerError(s) => write!(f, "server error (HTTP {s})"),
            Self::RateLimited {
                retry_after: Some(d),
            } => write!(f, "rate limited (HTTP 429, retry after {}s)", d.as_secs()),
            Self::RateLimited { retry_after: None } => f.write_str("rate limited (HTTP 429)"),
            Self::Unauthorized => f.write_str("credentials refused (HTTP 401)"),
            Self::Forbidden => f.write_str("not allowed by the plan (HTTP 403)"),
            Self::NotFound => f.write_str("not found (HTTP 404)"),
            Self::ClientError(s) => write!(f, "request rejected (HTTP {s})"),
            Self::EmptyBody => f.write_str("empty response body"),
            Self::InvalidResponse => f.write_str("invalid response"),
            Self::InvalidValue => f.write_str("invalid value"),
            Self::NoData => f.write_str("no data"),
            Self::Stale => f.write_str("stale data"),
            Self::UnsupportedZone => f.write_str("zone not supported"),
            Self::MissingCredentials => f.write_str("credentials not configured"),
        }
    }
}

/// A failed provider step: which provider, which step, what kind of failure,
/// how many attempts it took and how long. Never contains a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{provider} {step}: {kind}{}{} ({attempts} attempt(s) in {}ms)",
    if detail.is_empty() { "" } else { ": " }, detail, elapsed.as_millis())]
pub struct ProviderError {
    /// Provider name, e.g. `electricity_maps`.
    pub provider: &'static str,
    /// The step that failed, e.g. `carbon-intensity/latest`, `login`, `points`.
    pub step: &'static str,
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail (parser message, zone, status text). Secret-free.
    pub detail: String,
    /// HTTP attempts made (0 when the step failed before any request).
    pub attempts: u32,
    /// Time spent in the step, retries and back-off included.
    pub elapsed: Duration,
}

impl ProviderError {
    /// An error raised before any request was made.
    pub fn new(
        provider: &'static str,
        step: &'static str,
        kind: ErrorKind,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            provider,
            step,
            kind,
            detail: detail.into(),
            attempts: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Whether trying again later may succeed; see [`ErrorKind::is_transient`].
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The provider does not cover this zone.
    pub fn unsupported(provider: &'static str, detail: impl Into<String>) -> Self {
        Self::new(provider, "zone lookup", ErrorKind::UnsupportedZone, detail)
    }

    /// Sets the attempt count and elapsed time (for errors raised after requests).
    pub(crate) fn with_timing(mut self, attempts: u32, elapsed: Duration) -> Self {
        self.attempts = attempts;
        self.elapsed = elapsed;
        self
    }
}

/// A problem with the signal configuration, found once at start-up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A `--chain` entry is not `ZONE=provider,provider,...`.
    #[error("--chain {entry:?}: {message}")]
    InvalidChain {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        message: String,
    },
    /// A base URL does not parse or is not http(s).
    #[error("{flag} {url:?}: {message}")]
    InvalidUrl {
        /// The flag the URL came from.
        flag: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// A numeric setting is out of range.
    #[error("{flag}: {message}")]
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The user agent is not a valid header value.
    #[error("--user-agent: not a valid HTTP header value")]
    InvalidUserAgent,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
}

/// A problem reading credentials from the environment or a mounted file.
/// Names the variable and file, never the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Both `X` and `X_FILE` are set.
    #[error("both {var} and {var}_FILE are set; set only one")]
    Ambiguous {
        /// The variable name.
        var: &'static str,
    },
    /// `X_FILE` names a file that cannot be read.
    #[error("{var}_FILE: cannot read {path:?}: {message}")]
    File {
        /// The variable name (without `_FILE`).
        var: &'static str,
        /// The path from the variable.
        path: String,
        /// The IO error.
        message: String,
    },
    /// Only one half of a username/password pair is set.
    #[error("{present} is set but {missing} is not")]
    Incomplete {
        /// The variable that is set.
        present: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_kinds() {
        assert!(ErrorKind::Timeout.is_transient());
        assert!(ErrorKind::ServerError(502).is_transient());
        assert!(ErrorKind::RateLimited { retry_after: None }.is_transient());
        assert!(!ErrorKind::Unauthorized.is_transient());
        assert!(!ErrorKind::InvalidResponse.is_transient());
        assert!(!ErrorKind::UnsupportedZone.is_transient());
    }

    #[test]
    fn display_names_provider_step_and_timing() {
        let e = ProviderError::new(
            "electricity_maps",
            "carbon-intensity/latest",
            ErrorKind::ServerError(503),
            "",
        )
        .with_timing(3, Duration::from_millis(1500));
        assert_eq!(
            e.to_string(),
            "electricity_maps carbon-intensity/latest: server error (HTTP 503) (3 attempt(s) in 1500ms)"
        );
        let e = ProviderError::unsupported("noaa_estimate", "zone DE is outside the United States");
        assert!(
            e.to_string()
                .contains("zone not supported: zone DE is outside")
        );
    }
}
