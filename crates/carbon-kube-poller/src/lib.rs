//! `carbon-kube poller`: fetch every zone's carbon intensity through the
//! provider fallback chain and publish the snapshot.
//!
//! One poll cycle is: fetch all zones concurrently ([`cycle::fetch_all`]),
//! merge the results into the last published snapshot without replacing a
//! good value by a worse one ([`cycle::apply`]), then publish
//! ([`publish::Sink`]). `--once` runs one cycle and exits with a code saying
//! whether the data is complete; `--interval` runs forever and serves metrics.

pub mod args;
pub mod cycle;
pub mod metrics;
pub mod publish;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use carbon_kube_k8s::{Readiness, SnapshotGauges, health_router, serve_until, shutdown_signal};
use carbon_kube_model::{UnixSeconds, ZoneId};
use carbon_kube_signals::{Credentials, Signals};
use prometheus_client::registry::Registry;

pub use args::Args;
pub use cycle::{Completeness, PollReport, SourceQuality, ZoneOutcome};

use crate::metrics::PollerMetrics;
pub use crate::publish::Sink;

/// The wall clock as unix seconds. The only clock read of the poller: every
/// function below takes `now` as an argument.
pub fn unix_now() -> UnixSeconds {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One poller: its providers, zones, publishing target and metrics.
pub struct Poller {
    signals: Signals,
    zones: Vec<ZoneId>,
    sink: Sink,
    metrics: PollerMetrics,
    gauges: SnapshotGauges,
}

impl Poller {
    /// A poller publishing `zones` to `sink`, registering its metrics.
    pub fn new(signals: Signals, zones: Vec<ZoneId>, sink: Sink, registry: &mut Registry) -> Self {
        Self {
            signals,
            zones,
            sink,
            metrics: PollerMetrics::register(registry),
            gauges: SnapshotGauges::register(registry),
        }
    }

    /// One cycle at time `now`: fetch every zone, merge, publish, record metrics.
    pub async fn poll_once(&self, now: UnixSeconds) -> anyhow::Result<PollReport> {
        let fetches = cycle::fetch_all(&self.signals, &self.zones, now).await;
        self.metrics.observe_fetches(&fetches);
        let (snapshot, report) = self.sink.publish(&fetches, now).await?;
        self.metrics.observe_report(&report, now);
        self.gauges.observe(&snapshot, now);
        report.log();
        Ok(report)
    }
}

/// Runs the poller as the command line says. Returns the completeness of the
/// cycle with `--once`, so the binary can turn it into an exit code; with
/// `--interval`, a clean stop (SIGTERM) returns [`Completeness::Complete`]
/// (exit code 0): the exit codes describe the data only with `--once`.
pub async fn run(args: Args) -> anyhow::Result<Completeness> {
    let settings = args.validate()?;
    let credentials = Credentials::from_env().context("reading provider credentials")?;
    let signals = Signals::new(&settings.signals, credentials).context("configuring providers")?;
    let sink = Sink::from_settings(&settings).await?;
    let mut registry = Registry::default();
    let poller = Poller::new(signals, settings.zones.clone(), sink, &mut registry);

    let Some(interval) = settings.interval else {
        let report = poller.poll_once(unix_now()).await?;
        // The per-zone summary goes to stderr: stdout may carry the snapshot.
        eprint!("{}", report.summary());
        return Ok(report.completeness);
    };

    let readiness = Readiness::default();
    readiness.register("first-poll");
    let router = health_router(Arc::new(registry), readiness.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve_until(settings.listen, router, async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    }));

    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                match poller.poll_once(unix_now()).await {
                    Ok(_) => readiness.set("first-poll", true),
                    Err(e) => tracing::error!(error = format!("{e:#}"), "poll cycle failed; retrying at the next interval"),
                }
            }
            _ = shutdown_signal() => break,
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(Completeness::Complete)
}
