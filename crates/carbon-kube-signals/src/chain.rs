//! The per-zone fallback chain: try each configured provider in order, reuse a
//! provider's recent result from the per-zone cache, and report every attempt
//! (for the `carbon_kube_poller_requests_total{provider,outcome}` metric).

use std::sync::Arc;
use std::time::Duration;

use carbon_kube_model::{Source, UnixSeconds, ZoneId, ZoneRecord};
use moka::future::Cache;

use crate::args::{SignalArgs, SignalConfig};
use crate::credentials::Credentials;
use crate::error::{ConfigError, ErrorKind, ProviderError};
use crate::http::Http;
use crate::providers::{
    Fetched, electricity_maps::ElectricityMaps, noaa::Noaa, open_meteo::OpenMeteo, static_avg,
    uk::UkCarbonIntensity, watttime::WattTime,
};

/// A provider the chain can try.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Electricity Maps v3 (average, life-cycle).
    ElectricityMaps,
    /// WattTime v3 (marginal).
    WattTime,
    /// UK Carbon Intensity API (GB and its regions).
    UkCarbonIntensity,
    /// Weather estimate from NOAA (United States).
    NoaaEstimate,
    /// Weather estimate from Open-Meteo (anywhere).
    OpenMeteoEstimate,
    /// Static annual average.
    Static,
}

impl ProviderKind {
    /// Every provider, in the order of the default chain.
    pub const ALL: [Self; 6] = [
        Self::ElectricityMaps,
        Self::WattTime,
        Self::UkCarbonIntensity,
        Self::NoaaEstimate,
        Self::OpenMeteoEstimate,
        Self::Static,
    ];

    /// The provider's name: in `--chain`, in records' `source`, in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::ElectricityMaps => Source::ELECTRICITY_MAPS,
            Self::WattTime => Source::WATTTIME,
            Self::UkCarbonIntensity => Source::UK_CARBON_INTENSITY,
            Self::NoaaEstimate => Source::NOAA_ESTIMATE,
            Self::OpenMeteoEstimate => Source::OPEN_METEO_ESTIMATE,
            Self::Static => Source::STATIC,
        }
    }

    /// The provider with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// What one provider attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered; its record is the zone's record.
    Success,
    /// A recent result of this provider was reused; no request was made.
    CacheHit,
    /// The provider does not cover the zone; no failure.
    Unsupported,
    /// The provider's credentials are not configured.
    Skipped,
    /// The provider failed.
    Error(ErrorKind),
}

impl Outcome {
    /// Every value [`Outcome::as_label`] can return, to pre-register metrics.
    pub const LABELS: &[&str] = &[
        "success",
        "cache_hit",
        "unsupported",
        "skipped",
        "timeout",
        "connect_error",
        "server_error",
        "rate_limited",
        "unauthorized",
        "forbidden",
        "not_found",
        "client_error",
        "empty_body",
        "invalid_response",
        "invalid_value",
        "no_data",
        "stale",
    ];

    /// Metric label: `success`, `cache_hit`, `unsupported`, `skipped`, or the
    /// error kind (`timeout`, `server_error`, `rate_limited`, ...). Bounded.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::CacheHit => "cache_hit",
            Self::Unsupported => "unsupported",
            Self::Skipped => "skipped",
            Self::Error(kind) => kind.as_label(),
        }
    }

    /// Whether this attempt produced the zone's record.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success | Self::CacheHit)
    }

    fn from_error(e: &ProviderError) -> Self {
        match e.kind {
            ErrorKind::UnsupportedZone => Self::Unsupported,
            ErrorKind::MissingCredentials => Self::Skipped,
            ref kind => Self::Error(kind.clone()),
        }
    }
}

/// One provider attempt for one zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// Provider name, e.g. `electricity_maps`.
    pub provider: &'static str,
    /// What happened.
    pub outcome: Outcome,
    /// Why it failed, unsupported or skipped: secret-free and human-readable.
    pub error: Option<String>,
    /// Problems that did not fail the attempt (e.g. "forecast not in plan").
    pub warnings: Vec<String>,
}

/// The result of fetching one zone through its chain.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneFetch {
    /// The zone.
    pub zone: ZoneId,
    /// The record of the first provider that answered, if any did.
    pub record: Option<ZoneRecord>,
    /// Every attempt, in chain order.
    pub attempts: Vec<Attempt>,
}

impl ZoneFetch {
    /// When no provider answered: the attempts' errors joined, for the
    /// record's `last_error`. Secret-free.
    pub fn error_summary(&self) -> Option<String> {
        if self.record.is_some() {
            return None;
        }
        if self.attempts.is_empty() {
            return Some(format!("zone {}: the chain names no provider", self.zone));
        }
        Some(
            self.attempts
                .iter()
                .map(|a| match &a.error {
                    Some(e) => format!("{}: {e}", a.provider),
                    None => format!("{}: {}", a.provider, a.outcome.as_label()),
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// A cached provider result for one zone.
#[derive(Clone, Debug)]
struct Cached {
    record: ZoneRecord,
    expires_at: UnixSeconds,
}

struct Inner {
    config: SignalConfig,
    em: ElectricityMaps,
    watttime: WattTime,
    uk: UkCarbonIntensity,
    noaa: Noaa,
    open_meteo: OpenMeteo,
    cache: Cache<(ProviderKind, ZoneId), Cached>,
    ttl_seconds: i64,
}

/// The signal layer: every provider, the chains and the cache. Built once;
/// clones share everything.
#[derive(Clone)]
pub struct Signals {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("chains", &self.inner.config.chains)
            .field("cache_ttl_seconds", &self.inner.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl Signals {
    /// Validates `args` and builds every provider. Fails on a bad flag; never
    /// on missing credentials (those providers are skipped at fetch time).
    pub fn new(args: &SignalArgs, creds: Credentials) -> Result<Self, ConfigError> {
        let config = args.validate()?;
        let http = Http::new(&config.http, creds.secrets())?;
        let ttl_seconds = i64::try_from(config.cache_ttl.as_secs()).unwrap_or(i64::MAX / 4);
        let urls = config.urls.clone();
        let inner = Inner {
            em: ElectricityMaps::new(
                http.clone(),
                urls.electricity_maps,
                creds.electricity_maps_api_key.clone(),
            ),
            watttime: WattTime::new(http.clone(), urls.watttime, creds.watttime.clone()),
            uk: UkCarbonIntensity::new(http.clone(), urls.uk_carbon),
            noaa: Noaa::new(
                http.clone(),
                urls.noaa,
                creds.noaa_api_key.clone(),
                ttl_seconds,
            ),
            open_meteo: OpenMeteo::new(http, urls.open_meteo, ttl_seconds),
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(config.cache_ttl.max(Duration::from_secs(1)))
                .build(),
            config,
            ttl_seconds,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The chain configuration in force.
    pub fn chains(&self) -> &crate::ChainConfig {
        &self.inner.config.chains
    }

    /// Fetches one zone through its chain. `now` (unix seconds) decides
    /// freshness, cache expiry and which weather hour is "now".
    pub async fn fetch_zone(&self, zone: &ZoneId, now: UnixSeconds) -> ZoneFetch {
        let inner = &self.inner;
        let mut attempts = Vec::new();
        for &provider in inner.config.chains.chain_for(zone) {
            let key = (provider, zone.clone());
            if let Some(hit) = inner.cache.get(&key).await {
                let still_valid = hit.record.valid_until.is_none_or(|v| now <= v);
                if now < hit.expires_at && still_valid {
                    tracing::debug!(zone = %zone, provider = provider.name(), "cache hit");
                    attempts.push(Attempt {
                        provider: provider.name(),
                        outcome: Outcome::CacheHit,
                        error: None,
                        warnings: Vec::new(),
                    });
                    return ZoneFetch {
                        zone: zone.clone(),
                        record: Some(hit.record),
                        attempts,
                    };
                }
                inner.cache.invalidate(&key).await;
            }
            match self.fetch_from(provider, zone, now).await {
                Ok(Fetched { record, warnings }) => {
                    for w in &warnings {
                        tracing::info!(zone = %zone, provider = provider.name(), warning = %w, "provider warning");
                    }
                    tracing::debug!(zone = %zone, provider = provider.name(), intensity = record.carbon_intensity.g_per_kwh(), "provider answered");
                    inner
                        .cache
                        .insert(
                            key,
                            Cached {
                                record: record.clone(),
                                expires_at: now.saturating_add(inner.ttl_seconds),
                            },
                        )
                        .await;
                    attempts.push(Attempt {
                        provider: provider.name(),
                        outcome: Outcome::Success,
                        error: None,
                        warnings,
                    });
                    return ZoneFetch {
                        zone: zone.clone(),
                        record: Some(record),
                        attempts,
                    };
                }
                Err(e) => {
                    let outcome = Outcome::from_error(&e);
                    match outcome {
                        Outcome::Error(_) => {
                            tracing::warn!(zone = %zone, provider = provider.name(), error = %e, transient = e.is_transient(), "provider failed; trying the next one");
                        }
                        _ => {
                            tracing::debug!(zone = %zone, provider = provider.name(), reason = %e, "provider not used");
                        }
                    }
                    attempts.push(Attempt {
                        provider: provider.name(),
                        outcome,
                        error: Some(e.to_string()),
                        warnings: Vec::new(),
                    });
                }
            }
        }
        tracing::warn!(zone = %zone, "no provider answered");
        ZoneFetch {
            zone: zone.clone(),
            record: None,
            attempts,
        }
    }

    /// Fetches many zones concurrently (requests stay bounded by
    /// `--provider-concurrency`). Results are in the order of `zones`.
    pub async fn fetch_zones(&self, zones: &[ZoneId], now: UnixSeconds) -> Vec<ZoneFetch> {
        futures::future::join_all(zones.iter().map(|z| self.fetch_zone(z, now))).await
    }

    async fn fetch_from(
        &self,
        provider: ProviderKind,
        zone: &ZoneId,
        now: UnixSeconds,
    ) -> Result<Fetched, ProviderError> {
        let inner = &self.inner;
        match provider {
            ProviderKind::ElectricityMaps => inner.em.fetch(zone, now).await,
            ProviderKind::WattTime => inner.watttime.fetch(zone, now).await,
            ProviderKind::UkCarbonIntensity => inner.uk.fetch(zone, now).await,
            ProviderKind::NoaaEstimate => inner.noaa.fetch(zone, now).await,
            ProviderKind::OpenMeteoEstimate => inner.open_meteo.fetch(zone, now).await,
            ProviderKind::Static => static_avg::fetch(zone, now, inner.ttl_seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip() {
        for p in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(p.name()), Some(p));
        }
        assert_eq!(ProviderKind::parse("nope"), None);
    }

    #[test]
    fn outcome_labels_are_listed() {
        let kinds = [
            ErrorKind::Timeout,
            ErrorKind::Connect,
            ErrorKind::ServerError(500),
            ErrorKind::RateLimited { retry_after: None },
            ErrorKind::Unauthorized,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::ClientError(400),
            ErrorKind::EmptyBody,
            ErrorKind::InvalidResponse,
            ErrorKind::InvalidValue,
            ErrorKind::NoData,
            ErrorKind::Stale,
        ];
        for k in kinds {
            assert!(Outcome::LABELS.contains(&Outcome::Error(k).as_label()));
        }
        for o in [
            Outcome::Success,
            Outcome::CacheHit,
            Outcome::Unsupported,
            Outcome::Skipped,
        ] {
            assert!(Outcome::LABELS.contains(&o.as_label()));
        }
    }
}
