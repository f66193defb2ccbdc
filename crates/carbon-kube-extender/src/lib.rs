//! The carbon-aware kube-scheduler extender.
//!
//! kube-scheduler runs its own filters and scores, then asks this service
//! over HTTP (`POST /filter`, `POST /prioritize`, the
//! `k8s.io/kube-scheduler/extender/v1` protocol) to filter and score the
//! surviving nodes by the carbon intensity of their grid zone. Every decision
//! is made by `carbon-kube-policy`; this crate only decodes requests, reads
//! caches, encodes answers and explains.
//!
//! - [`service`]: the axum router (`app`), the handlers, 400/500 handling.
//! - [`state`]: the node cache, bound-pod sums, snapshot and settings.
//! - [`watch`]: node/pod watches, ConfigMap watches, the snapshot file
//!   poller, Events.
//! - [`wire`]: the extender wire types.
//! - [`metrics`]: Prometheus metrics.
//!
//! It does not fetch carbon data (the poller does) and never writes anything
//! but Events.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use carbon_kube_k8s::Readiness;
use carbon_kube_model::keys;
use carbon_kube_policy::placement::{PlacementConfig, PlacementConfigRaw};
use carbon_kube_policy::zone_map::RegionZoneMap;
use prometheus_client::registry::Registry;
use serde::Deserialize;

pub mod metrics;
pub mod quantity;
pub mod service;
pub mod state;
pub mod watch;
pub mod wire;

use crate::metrics::Metrics;
use crate::state::{Shared, system_clock};

/// `carbon-kube extender`: serve the kube-scheduler extender.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Address to serve /filter, /prioritize, /metrics, /healthz, /readyz on.
    #[arg(
        long,
        env = "CARBON_KUBE_EXTENDER_LISTEN",
        default_value = "127.0.0.1:8888"
    )]
    pub listen: SocketAddr,

    /// Also serve /metrics, /healthz and /readyz (plain HTTP) on this
    /// address, e.g. 0.0.0.0:9888, so that --listen (with /filter and
    /// /prioritize) can stay on 127.0.0.1 beside kube-scheduler while
    /// Prometheus and the kubelet's probes reach the pod IP.
    #[arg(long, env = "CARBON_KUBE_EXTENDER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve HTTPS with this PEM certificate (chain). Needs --tls-key.
    #[arg(long, env = "CARBON_KUBE_EXTENDER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "CARBON_KUBE_EXTENDER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Read the carbon snapshot from this JSON file (reloaded when it
    /// changes) instead of the carbon-intensity-data ConfigMap. With no
    /// kubeconfig the extender then runs on its own and serves
    /// nodeCacheCapable: false requests.
    #[arg(long, env = "CARBON_KUBE_SNAPSHOT_FILE")]
    pub snapshot_file: Option<PathBuf>,

    /// Namespace of the carbon-intensity-data and carbon-kube-config ConfigMaps.
    #[arg(long, env = "CARBON_KUBE_NAMESPACE", default_value = keys::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// YAML or JSON settings file: `placement:` (threshold, thresholdMode,
    /// thresholdPercentile, carbonWeight,
    /// performanceWeight, maxDataAgeSeconds, onNoGreenNode, staleData,
    /// estimatedData) and `regionZones:` (`aws/us-west-2: US-NW-BPAT`).
    #[arg(long, env = "CARBON_KUBE_EXTENDER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Threshold in gCO2eq/kWh (default 250); overrides the config file.
    #[arg(long)]
    pub threshold: Option<f64>,

    /// absolute (default: --threshold g/kWh), clusterPercentile (the
    /// --threshold-percentile of the candidate zones' current intensities)
    /// or forecastPercentile (each zone against its own forecast window).
    #[arg(long)]
    pub threshold_mode: Option<String>,

    /// Percentile of the relative threshold modes, 0-100 (default 50).
    #[arg(long)]
    pub threshold_percentile: Option<f64>,

    /// Weight of the carbon score, 0-100 (default 70).
    #[arg(long)]
    pub carbon_weight: Option<i64>,

    /// Weight of the free-capacity score, 0-100 (default 30).
    #[arg(long)]
    pub performance_weight: Option<i64>,

    /// Data older than this many seconds is stale (default 1800).
    #[arg(long)]
    pub max_data_age_seconds: Option<i64>,

    /// failOpen (default) or reject, when no node is under the threshold.
    #[arg(long)]
    pub on_no_green_node: Option<String>,

    /// neutral (default) or useLastValue, for stale zones.
    #[arg(long)]
    pub stale_data: Option<String>,

    /// use (default) or neutral, for estimated values.
    #[arg(long)]
    pub estimated_data: Option<String>,

    /// Region to zone mapping, `REGION=ZONE` or `PROVIDER/REGION=ZONE`; repeatable.
    #[arg(long = "region-zone", value_name = "REGION=ZONE")]
    pub region_zones: Vec<String>,

    /// Do not write Events on pods.
    #[arg(long)]
    pub no_events: bool,

    /// Do not connect to Kubernetes even if a kubeconfig is found (needs
    /// --snapshot-file).
    #[arg(long, requires = "snapshot_file")]
    pub standalone: bool,
}

/// The settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// Placement settings.
    #[serde(default)]
    pub placement: PlacementConfigRaw,
    /// Region → zone map.
    #[serde(default)]
    pub region_zones: BTreeMap<String, String>,
}

/// Settings resolved from flags and the file.
#[derive(Debug)]
pub struct Settings {
    /// Base placement settings in raw form (runtime overrides go on top).
    pub base: PlacementConfigRaw,
    /// Validated base settings.
    pub config: PlacementConfig,
    /// Region → zone map.
    pub region_map: RegionZoneMap,
}

impl Args {
    /// Reads the config file and lays the flags over it; reports every
    /// problem with its path.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_saphyr::from_str::<FileConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let flags = PlacementConfigRaw {
            threshold: self.threshold,
            threshold_mode: self.threshold_mode.clone(),
            threshold_percentile: self.threshold_percentile,
            carbon_weight: self.carbon_weight,
            performance_weight: self.performance_weight,
            max_data_age_seconds: self.max_data_age_seconds,
            on_no_green_node: self.on_no_green_node.clone(),
            stale_data: self.stale_data.clone(),
            estimated_data: self.estimated_data.clone(),
        };
        let base = file.placement.overlay(&flags);
        let config = base
            .validate_over(&PlacementConfig::default(), "placement.")
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        let mut entries: Vec<(String, String)> = file.region_zones.into_iter().collect();
        for flag in &self.region_zones {
            let (k, v) = flag
                .split_once('=')
                .with_context(|| format!("--region-zone {flag:?}: expected REGION=ZONE"))?;
            entries.push((k.to_owned(), v.to_owned()));
        }
        let region_map =
            RegionZoneMap::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|errors| {
                    anyhow::anyhow!(
                        "invalid region map: {}",
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                })?;
        Ok(Settings {
            base,
            config,
            region_map,
        })
    }
}

use carbon_kube_k8s::shutdown_signal;

/// Runs the extender until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = if args.standalone {
        None
    } else {
        match kube::Client::try_default().await {
            Ok(c) => Some(c),
            Err(e) if args.snapshot_file.is_some() => {
                tracing::warn!(
                    error = %e,
                    "no Kubernetes connection: serving nodeCacheCapable: false requests from the snapshot file; node names are treated neutrally"
                );
                None
            }
            Err(e) => {
                return Err(e)
                    .context("connecting to Kubernetes (use --snapshot-file to run without it)");
            }
        }
    };
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    serve(args, listener, client, shutdown_signal()).await
}

/// Serves the extender on `listener` with `client` (none: standalone) until
/// `shutdown` resolves. `args.listen` is ignored.
pub async fn serve(
    args: Args,
    listener: std::net::TcpListener,
    client: Option<kube::Client>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = args.settings()?;
    tracing::info!(config = ?settings.config.to_raw(), "placement settings");
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::default();
    let mut shared = Shared::new(
        settings.base,
        settings.config,
        settings.region_map,
        metrics,
        readiness.clone(),
        system_clock(),
    );
    shared.record_decisions = client.is_some() && !args.no_events;
    let shared = Arc::new(shared);
    readiness.register("snapshot");
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(path) = args.snapshot_file.clone() {
        tasks.spawn(watch::watch_snapshot_file(
            path,
            shared.clone(),
            Duration::from_secs(1),
        ));
    }
    if let Some(client) = &client {
        readiness.register("nodes");
        readiness.register("pods");
        readiness.register("config");
        tasks.spawn(watch::watch_nodes(client.clone(), shared.clone()));
        let recorder = (!args.no_events).then(|| watch::recorder(client.clone()));
        tasks.spawn(watch::watch_pods(client.clone(), shared.clone(), recorder));
        tasks.spawn(watch::watch_config(
            client.clone(),
            args.namespace.clone(),
            shared.clone(),
        ));
        if args.snapshot_file.is_none() {
            tasks.spawn(watch::watch_snapshot(
                client.clone(),
                args.namespace.clone(),
                shared.clone(),
            ));
        }
    }
    tasks.spawn(watch::refresh_gauges(
        shared.clone(),
        Duration::from_secs(15),
    ));
    let registry = Arc::new(registry);
    if let Some(addr) = args.metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --metrics-listen {addr}"))?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        let router = carbon_kube_k8s::health_router(registry.clone(), readiness.clone());
        tasks.spawn(async move {
            if let Err(e) = axum::serve(metrics_listener, router).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
    }
    let router = service::app(shared, registry);
    let addr = listener.local_addr().context("listener address")?;
    listener
        .set_nonblocking(true)
        .context("setting the listener non-blocking")?;
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "loading TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                h.graceful_shutdown(Some(Duration::from_secs(5)));
            });
            tracing::info!(%addr, "serving the extender over HTTPS");
            axum_server::from_tcp_rustls(listener, tls)
                .context("serving HTTPS")?
                .handle(handle)
                .serve(router.into_make_service())
                .await
                .context("serving HTTPS")?;
        }
        _ => {
            use axum::serve::ListenerExt as _;
            // kube-scheduler waits on every answer: no Nagle delay.
            let listener = tokio::net::TcpListener::from_std(listener)
                .context("adopting the listener")?
                .tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
            tracing::info!(%addr, "serving the extender over HTTP");
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .context("serving HTTP")?;
        }
    }
    tasks.abort_all();
    Ok(())
}
