//! Command-line arguments of `carbon-kube poller`, parsed raw by clap and then
//! validated once into [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use carbon_kube_model::{ZoneId, keys};
use carbon_kube_signals::SignalArgs;

/// Fetch carbon intensity for every zone and publish the snapshot.
///
/// Runs once (`--once`, as a CronJob) or forever (`--interval 5m`, serving
/// /metrics, /healthz and /readyz). Publishes to ConfigMap
/// `carbon-intensity-data` in `--namespace`, or with `--output` to a file
/// (`-` for stdout) so no cluster is needed.
///
/// Exit codes with --once: 0 every zone has fresh provider data; 4 every zone
/// has a value, but some only a fallback (a weather estimate or the static
/// annual average); 2 some zones kept old or no data (partial); 3 no zone got
/// a value (absent); 1 error. A line per zone on stderr says which source
/// and quality it published.
///
/// API keys are read only from the environment or from files named by
/// `*_FILE` variables (mounted Secrets): ELECTRICITY_MAPS_API_KEY,
/// WATTTIME_USERNAME, WATTTIME_PASSWORD, NOAA_API_KEY.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Poll once and exit (CronJob mode).
    #[arg(long, conflicts_with = "interval")]
    pub once: bool,

    /// Poll forever at this interval (e.g. `5m`, `30s`).
    #[arg(long, env = "CARBON_KUBE_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,

    /// Zones to poll: Electricity Maps zone ids or aliases, comma-separated
    /// (e.g. `US-CAL-CISO,DE,GB` or `US-CA,EU-DE`).
    #[arg(
        long,
        env = "CARBON_KUBE_ZONES",
        value_delimiter = ',',
        required = true
    )]
    pub zones: Vec<String>,

    /// Namespace of the snapshot ConfigMap.
    #[arg(long, env = "CARBON_KUBE_NAMESPACE", default_value = keys::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Name of the snapshot ConfigMap.
    #[arg(long, env = "CARBON_KUBE_CONFIGMAP", default_value = keys::SNAPSHOT_CONFIGMAP)]
    pub configmap: String,

    /// Write the snapshot JSON to this file instead of the cluster (`-` for
    /// stdout). An existing file is read first so its good values are kept.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,

    /// A zone's published value is replaced by a worse one (an estimate or a
    /// static average) only once it is older than this.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub max_data_age: Duration,

    /// Address of /metrics, /healthz and /readyz in --interval mode.
    #[arg(long, env = "CARBON_KUBE_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,

    /// Provider endpoints, fallback chains and HTTP behaviour.
    #[command(flatten)]
    pub signals: SignalArgs,
}

/// Where the snapshot goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// ConfigMap `name` in `namespace`.
    ConfigMap {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A file, merged with its previous content.
    File(PathBuf),
    /// Standard output.
    Stdout,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Zones, canonical and deduplicated.
    pub zones: Vec<ZoneId>,
    /// `None` for one cycle.
    pub interval: Option<Duration>,
    /// Where to publish.
    pub output: Output,
    /// See [`Args::max_data_age`], in seconds.
    pub max_data_age_seconds: i64,
    /// Metrics address.
    pub listen: SocketAddr,
    /// Provider settings.
    pub signals: SignalArgs,
}

impl Args {
    /// Validates the arguments, naming the flag of every problem.
    pub fn validate(&self) -> anyhow::Result<Settings> {
        let mut zones = Vec::new();
        let mut problems = Vec::new();
        for raw in self.zones.iter().filter(|z| !z.trim().is_empty()) {
            match ZoneId::parse(raw) {
                Ok(z) if !zones.contains(&z) => zones.push(z),
                Ok(_) => {}
                Err(e) => problems.push(format!("--zones: {e}")),
            }
        }
        if zones.is_empty() && problems.is_empty() {
            problems.push("--zones: no zone given".to_owned());
        }
        if let Some(i) = self.interval
            && i < Duration::from_secs(10)
        {
            problems.push(format!(
                "--interval: {} is shorter than the minimum of 10s",
                humantime::format_duration(i)
            ));
        }
        if self.interval.is_none() && !self.once {
            problems.push("give --once (one poll) or --interval DURATION (poll forever)".into());
        }
        if !problems.is_empty() {
            anyhow::bail!("invalid poller arguments:\n  {}", problems.join("\n  "));
        }
        let output = match &self.output {
            Some(p) if p.as_os_str() == "-" => Output::Stdout,
            Some(p) => Output::File(p.clone()),
            None => Output::ConfigMap {
                namespace: self.namespace.clone(),
                name: self.configmap.clone(),
            },
        };
        Ok(Settings {
            zones,
            interval: self.interval,
            output,
            max_data_age_seconds: i64::try_from(self.max_data_age.as_secs()).unwrap_or(i64::MAX),
            listen: self.listen,
            signals: self.signals.clone(),
        })
    }
}
