//! Command-line arguments of the signal layer (flattened into
//! `carbon-kube poller`), validated once when [`crate::Signals::new`] builds
//! the providers.
//!
//! Credentials are deliberately absent: they come from the environment or
//! from mounted files (see [`crate::Credentials`]), never from flags.

use std::collections::HashMap;
use std::time::Duration;

use carbon_kube_model::ZoneId;
use url::Url;

use crate::chain::ProviderKind;
use crate::error::ConfigError;
use crate::http::{HttpSettings, RetryPolicy, parse_base_url};

/// Default Electricity Maps v3 base URL.
pub const DEFAULT_ELECTRICITY_MAPS_URL: &str = "https://api.electricitymaps.com/v3";
/// Default WattTime base URL (`/login`, `/v3/...` below it).
pub const DEFAULT_WATTTIME_URL: &str = "https://api.watttime.org";
/// Default UK Carbon Intensity API base URL.
pub const DEFAULT_UK_CARBON_URL: &str = "https://api.carbonintensity.org.uk";
/// Default NOAA / National Weather Service API base URL.
pub const DEFAULT_NOAA_URL: &str = "https://api.weather.gov";
/// Default Open-Meteo forecast API base URL (`/v1/forecast` below it).
pub const DEFAULT_OPEN_METEO_URL: &str = "https://api.open-meteo.com";
/// Default `User-Agent` (NOAA requires one that identifies the application).
pub const DEFAULT_USER_AGENT: &str = concat!(
    "carbon-kube/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/carbon-kube/carbon-kube)"
);
/// Built-in chains, used for zones that no `--chain` entry names. Besides
/// these, every UK Carbon Intensity region of the zone table (`GB-LONDON`,
/// ...) has the chain `uk_carbon_intensity`.
pub const DEFAULT_CHAINS: &[&str] = &[
    "default=electricity_maps,watttime,noaa_estimate,open_meteo_estimate,static",
    "GB=uk_carbon_intensity,electricity_maps,open_meteo_estimate,static",
];

/// Flags of the carbon-intensity providers and the fallback chain.
#[derive(clap::Args, Debug, Clone, PartialEq)]
#[command(next_help_heading = "Carbon-intensity providers")]
pub struct SignalArgs {
    /// Electricity Maps v3 base URL.
    #[arg(long, env = "CARBON_KUBE_ELECTRICITY_MAPS_URL", default_value = DEFAULT_ELECTRICITY_MAPS_URL)]
    pub electricity_maps_url: String,

    /// WattTime base URL.
    #[arg(long, env = "CARBON_KUBE_WATTTIME_URL", default_value = DEFAULT_WATTTIME_URL)]
    pub watttime_url: String,

    /// UK Carbon Intensity API base URL.
    #[arg(long, env = "CARBON_KUBE_UK_CARBON_URL", default_value = DEFAULT_UK_CARBON_URL)]
    pub uk_carbon_url: String,

    /// NOAA weather API (api.weather.gov) base URL.
    #[arg(long, env = "CARBON_KUBE_NOAA_URL", default_value = DEFAULT_NOAA_URL)]
    pub noaa_url: String,

    /// Open-Meteo forecast API base URL.
    #[arg(long, env = "CARBON_KUBE_OPEN_METEO_URL", default_value = DEFAULT_OPEN_METEO_URL)]
    pub open_meteo_url: String,

    /// Provider chain of a zone: `ZONE=provider,provider,...`. Repeat the flag
    /// or separate entries with `;`. `ZONE` is a zone id, a prefix ending in
    /// `*` (`GB-*`), or `default`. Providers: electricity_maps, watttime,
    /// uk_carbon_intensity, noaa_estimate, open_meteo_estimate, static. Entries
    /// replace the built-in chain of the same key; other built-in keys stay.
    #[arg(
        long = "chain",
        env = "CARBON_KUBE_CHAIN",
        value_delimiter = ';',
        value_name = "ZONE=PROVIDERS"
    )]
    pub chain: Vec<String>,

    /// Timeout of one HTTP request (connect, send, read the body).
    #[arg(long, env = "CARBON_KUBE_PROVIDER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub provider_timeout: Duration,

    /// Timeout of establishing one connection.
    #[arg(long, env = "CARBON_KUBE_PROVIDER_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub provider_connect_timeout: Duration,

    /// Attempts per request, the first included; retries happen only after
    /// timeouts, connection errors, 5xx and 429.
    #[arg(long, env = "CARBON_KUBE_PROVIDER_MAX_ATTEMPTS", default_value_t = 3)]
    pub provider_max_attempts: u32,

    /// Back-off before the first retry; doubles per retry, with jitter.
    #[arg(long, env = "CARBON_KUBE_PROVIDER_RETRY_BASE_DELAY", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub provider_retry_base_delay: Duration,

    /// Longest back-off between two attempts.
    #[arg(long, env = "CARBON_KUBE_PROVIDER_RETRY_MAX_DELAY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub provider_retry_max_delay: Duration,

    /// Longest `Retry-After` honoured on a 429; a longer one ends the attempts
    /// at once and the chain moves on.
    #[arg(long, env = "CARBON_KUBE_PROVIDER_MAX_RETRY_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub provider_max_retry_after: Duration,

    /// Most provider requests in flight at once, over all providers and zones.
    #[arg(long, env = "CARBON_KUBE_PROVIDER_CONCURRENCY", default_value_t = 8)]
    pub provider_concurrency: usize,

    /// How long a zone's result from one provider is reused before that
    /// provider is asked again (protects API quotas from frequent polls).
    #[arg(long, env = "CARBON_KUBE_PROVIDER_CACHE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub provider_cache_ttl: Duration,

    /// `User-Agent` of every request. NOAA requires one that names the
    /// application and a contact.
    #[arg(long, env = "CARBON_KUBE_USER_AGENT", default_value = DEFAULT_USER_AGENT)]
    pub user_agent: String,
}

impl Default for SignalArgs {
    /// The same values as the flags' defaults.
    fn default() -> Self {
        Self {
            electricity_maps_url: DEFAULT_ELECTRICITY_MAPS_URL.into(),
            watttime_url: DEFAULT_WATTTIME_URL.into(),
            uk_carbon_url: DEFAULT_UK_CARBON_URL.into(),
            noaa_url: DEFAULT_NOAA_URL.into(),
            open_meteo_url: DEFAULT_OPEN_METEO_URL.into(),
            chain: Vec::new(),
            provider_timeout: Duration::from_secs(10),
            provider_connect_timeout: Duration::from_secs(5),
            provider_max_attempts: 3,
            provider_retry_base_delay: Duration::from_millis(500),
            provider_retry_max_delay: Duration::from_secs(10),
            provider_max_retry_after: Duration::from_secs(60),
            provider_concurrency: 8,
            provider_cache_ttl: Duration::from_secs(300),
            user_agent: DEFAULT_USER_AGENT.into(),
        }
    }
}

/// Base URLs of the providers, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BaseUrls {
    pub electricity_maps: Url,
    pub watttime: Url,
    pub uk_carbon: Url,
    pub noaa: Url,
    pub open_meteo: Url,
}

/// Which providers a zone tries, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainConfig {
    exact: HashMap<String, Vec<ProviderKind>>,
    /// Prefix patterns (`GB-*` → `GB-`), longest first.
    prefixes: Vec<(String, Vec<ProviderKind>)>,
    default: Vec<ProviderKind>,
}

impl ChainConfig {
    /// The built-in chains overridden by `entries` (`ZONE=p1,p2`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, ConfigError> {
        let mut exact: HashMap<String, Vec<ProviderKind>> = HashMap::new();
        let mut prefixes: HashMap<String, Vec<ProviderKind>> = HashMap::new();
        let mut default = Vec::new();
        let uk_regions: Vec<String> = crate::zones::ZONES
            .iter()
            .filter(|z| matches!(z.uk_region, Some(crate::zones::UkRegion::Region(_))))
            .map(|z| format!("{}=uk_carbon_intensity", z.zone))
            .collect();
        let builtin = DEFAULT_CHAINS
            .iter()
            .copied()
            .chain(uk_regions.iter().map(String::as_str));
        for entry in builtin.chain(entries.iter().map(AsRef::as_ref)) {
            if entry.trim().is_empty() {
                continue;
            }
            let invalid = |message: String| ConfigError::InvalidChain {
                entry: entry.to_owned(),
                message,
            };
            let (key, list) = entry
                .split_once('=')
                .ok_or_else(|| invalid("expected ZONE=provider,provider,...".into()))?;
            let key = key.trim();
            let mut providers = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let p = ProviderKind::parse(name).ok_or_else(|| {
                    invalid(format!(
                        "unknown provider {name:?}; known: {}",
                        ProviderKind::ALL
                            .iter()
                            .map(|p| p.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                if providers.contains(&p) {
                    return Err(invalid(format!("provider {name:?} is listed twice")));
                }
                providers.push(p);
            }
            if providers.is_empty() {
                return Err(invalid("names no provider".into()));
            }
            if key.eq_ignore_ascii_case("default") {
                default = providers;
            } else if let Some(prefix) = key.strip_suffix('*') {
                prefixes.insert(prefix.to_ascii_uppercase(), providers);
            } else {
                let zone = ZoneId::parse(key).map_err(|e| invalid(e.to_string()))?;
                exact.insert(zone.as_str().to_owned(), providers);
            }
        }
        let mut prefixes: Vec<_> = prefixes.into_iter().collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(Self {
            exact,
            prefixes,
            default,
        })
    }

    /// The providers a zone tries, in order: its own entry, else the longest
    /// matching prefix, else `default`. Exact entries (built-in ones too) win
    /// over prefixes.
    pub fn chain_for(&self, zone: &ZoneId) -> &[ProviderKind] {
        if let Some(c) = self.exact.get(zone.as_str()) {
            return c;
        }
        let upper = zone.as_str().to_ascii_uppercase();
        self.prefixes
            .iter()
            .find(|(p, _)| upper.starts_with(p.as_str()))
            .map_or(&self.default, |(_, c)| c)
    }
}

/// [`SignalArgs`] validated once: URLs parsed, chains parsed, ranges checked.
#[derive(Clone, Debug)]
pub(crate) struct SignalConfig {
    pub urls: BaseUrls,
    pub chains: ChainConfig,
    pub http: HttpSettings,
    pub cache_ttl: Duration,
}

impl SignalArgs {
    /// Validates the arguments; reports the first problem with its flag.
    pub(crate) fn validate(&self) -> Result<SignalConfig, ConfigError> {
        let urls = BaseUrls {
            electricity_maps: parse_base_url("--electricity-maps-url", &self.electricity_maps_url)?,
            watttime: parse_base_url("--watttime-url", &self.watttime_url)?,
            uk_carbon: parse_base_url("--uk-carbon-url", &self.uk_carbon_url)?,
            noaa: parse_base_url("--noaa-url", &self.noaa_url)?,
            open_meteo: parse_base_url("--open-meteo-url", &self.open_meteo_url)?,
        };
        let positive = |flag: &'static str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::InvalidValue {
                    flag,
                    message: "must be longer than zero".into(),
                })
            } else {
                Ok(d)
            }
        };
        positive("--provider-timeout", self.provider_timeout)?;
        positive("--provider-connect-timeout", self.provider_connect_timeout)?;
        positive("--provider-cache-ttl", self.provider_cache_ttl)?;
        if !(1..=10).contains(&self.provider_max_attempts) {
            return Err(ConfigError::InvalidValue {
                flag: "--provider-max-attempts",
                message: format!("{} is not between 1 and 10", self.provider_max_attempts),
            });
        }
        if !(1..=1024).contains(&self.provider_concurrency) {
            return Err(ConfigError::InvalidValue {
                flag: "--provider-concurrency",
                message: format!("{} is not between 1 and 1024", self.provider_concurrency),
            });
        }
        if self.user_agent.trim().is_empty() {
            return Err(ConfigError::InvalidUserAgent);
        }
        Ok(SignalConfig {
            urls,
            chains: ChainConfig::parse(&self.chain)?,
            http: HttpSettings {
                request_timeout: self.provider_timeout,
                connect_timeout: self.provider_connect_timeout,
                retry: RetryPolicy {
                    max_attempts: self.provider_max_attempts,
                    base_delay: self.provider_retry_base_delay,
                    max_delay: self
                        .provider_retry_max_delay
                        .max(self.provider_retry_base_delay),
                    max_retry_after: self.provider_max_retry_after,
                },
                max_concurrency: self.provider_concurrency,
                user_agent: self.user_agent.clone(),
            },
            cache_ttl: self.provider_cache_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        signals: SignalArgs,
    }

    fn z(s: &str) -> ZoneId {
        ZoneId::parse(s).unwrap()
    }

    #[test]
    fn flag_defaults_match_default_impl() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        // Skip the comparison if the environment overrides a flag.
        if std::env::vars().all(|(k, _)| !k.starts_with("CARBON_KUBE_")) {
            assert_eq!(cli.signals, SignalArgs::default());
        }
    }

    #[test]
    fn chain_flags_parse_and_override() {
        let cli = Cli::try_parse_from([
            "x",
            "--chain",
            "default=electricity_maps,static",
            "--chain",
            "FR=static;US-CA=watttime,noaa_estimate",
            "--provider-cache-ttl",
            "90s",
        ])
        .unwrap();
        assert_eq!(cli.signals.provider_cache_ttl, Duration::from_secs(90));
        let cfg = cli.signals.validate().unwrap();
        use ProviderKind::*;
        assert_eq!(cfg.chains.chain_for(&z("DE")), [ElectricityMaps, Static]);
        assert_eq!(cfg.chains.chain_for(&z("FR")), [Static]);
        // Aliases resolve to canonical ids on both sides.
        assert_eq!(
            cfg.chains.chain_for(&z("US-CAL-CISO")),
            [WattTime, NoaaEstimate]
        );
        // Built-in entries not overridden stay.
        assert_eq!(cfg.chains.chain_for(&z("GB"))[0], UkCarbonIntensity);
        assert_eq!(cfg.chains.chain_for(&z("GB-LONDON")), [UkCarbonIntensity]);
        // Electricity Maps' own GB-* zones keep the default chain.
        assert_eq!(
            cfg.chains.chain_for(&z("GB-NIR")),
            [ElectricityMaps, Static]
        );
        let cfg = ChainConfig::parse(&["GB-*=static", "G*=watttime"]).unwrap();
        assert_eq!(cfg.chain_for(&z("GB-NIR")), [Static]);
        assert_eq!(cfg.chain_for(&z("GR")), [WattTime]);
        assert_eq!(cfg.chain_for(&z("GB-LONDON")), [UkCarbonIntensity]);
    }

    #[test]
    fn builtin_default_chain() {
        let cfg = ChainConfig::parse::<&str>(&[]).unwrap();
        use ProviderKind::*;
        assert_eq!(
            cfg.chain_for(&z("US-TEX-ERCO")),
            [
                ElectricityMaps,
                WattTime,
                NoaaEstimate,
                OpenMeteoEstimate,
                Static
            ]
        );
    }

    #[test]
    fn bad_chains_are_reported() {
        for (entry, want) in [
            ("DE", "expected ZONE=provider"),
            ("DE=foo", "unknown provider \"foo\""),
            ("DE=static,static", "listed twice"),
            ("DE=", "names no provider"),
            ("D E=static", "zone id"),
        ] {
            let err = ChainConfig::parse(&[entry]).unwrap_err().to_string();
            assert!(err.contains(want), "{entry}: {err}");
        }
    }

    #[test]
    fn bad_values_are_reported() {
        let cases = [
            (
                SignalArgs {
                    provider_max_attempts: 0,
                    ..SignalArgs::default()
                },
                "--provider-max-attempts",
            ),
            (
                SignalArgs {
                    noaa_url: "weather.gov".into(),
                    ..SignalArgs::default()
                },
                "--noaa-url",
            ),
            (
                SignalArgs {
                    provider_cache_ttl: Duration::ZERO,
                    ..SignalArgs::default()
                },
                "--provider-cache-ttl",
            ),
            (
                SignalArgs {
                    user_agent: "bad\nagent".into(),
                    ..SignalArgs::default()
                },
                "--user-agent",
            ),
        ];
        for (args, flag) in cases {
            let err = match args.validate() {
                Err(e) => e,
                Ok(_) => match crate::Signals::new(&args, crate::Credentials::none()) {
                    Err(e) => e,
                    Ok(_) => panic!("{flag}: accepted"),
                },
            };
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
    }
}
