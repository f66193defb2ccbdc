//! Command-line arguments of `carbon-kube accounting` and `carbon-kube
//! report`, validated once into settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use carbon_kube_model::accounting::{ACCOUNTING_CONFIGMAP, MAX_ACCOUNTING_SHARDS};
use carbon_kube_model::keys;
use carbon_kube_policy::accounting::{AccountingConfig, EMBODIED_G_PER_VCPU_HOUR};
use carbon_kube_policy::zone_map::RegionZoneMap;

use crate::controller::{AccountingSettings, KeplerSettings};
use crate::kepler::DEFAULT_QUERY;
use crate::report::{Format, Period};
use crate::view::PlacedBy;
use carbon_kube_k8s::leader::LeaderSettings;

fn seconds(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    i64::try_from(d.as_secs()).map_err(|_| format!("{s:?}: too long"))
}

/// `carbon-kube accounting`: account every pod's energy and emissions per
/// namespace and workload; export counters and publish the usage document.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Namespace of the snapshot ConfigMap, of the carbon-kube-accounting
    /// ConfigMap this controller writes and of the leader Lease.
    #[arg(long, env = "CARBON_KUBE_NAMESPACE", default_value = keys::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Name of the snapshot ConfigMap.
    #[arg(long, default_value = keys::SNAPSHOT_CONFIGMAP)]
    pub snapshot_configmap: String,

    /// Name of the ConfigMap the usage and details documents are written to.
    #[arg(long, default_value = ACCOUNTING_CONFIGMAP)]
    pub accounting_configmap: String,

    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "CARBON_KUBE_ACCOUNTING_HEALTH_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub health_listen: SocketAddr,

    /// Accounting interval: every tick accounts the pods running since the previous one.
    #[arg(long, default_value = "60s", value_parser = seconds)]
    pub tick: i64,

    /// How often the carbon-kube-accounting ConfigMap is written.
    #[arg(long, default_value = "5m", value_parser = seconds)]
    pub publish_interval: i64,

    /// An intensity older than this (and not covered by the zone's forecast
    /// steps) is still used and counted in
    /// carbon_kube_accounting_stale_intensity_pods_total.
    #[arg(long, default_value = "30m", value_parser = seconds)]
    pub max_data_age: i64,

    /// Prometheus base URL to read Kepler's per-pod joules from
    /// (kepler_pod_cpu_joules_total); without it every pod is modelled.
    #[arg(long, env = "CARBON_KUBE_KEPLER_PROMETHEUS_URL")]
    pub kepler_prometheus_url: Option<url::Url>,

    /// The instant query returning cumulative joules per pod, labelled
    /// pod_namespace and pod_name.
    #[arg(long, default_value = DEFAULT_QUERY)]
    pub kepler_query: String,

    /// Read pods' CPU usage from the resource metrics API (metrics.k8s.io,
    /// metrics-server) for modelled energy; without it, modelled pods use
    /// their CPU requests at CCF's 50 % utilisation.
    #[arg(long)]
    pub cpu_usage_from_metrics_api: bool,

    /// Timeout of one Kepler query.
    #[arg(long, default_value = "10s", value_parser = seconds)]
    pub kepler_timeout: i64,

    /// Scheduler names whose pods count as placed by Carbon-Kube (the
    /// placement counterfactual); repeatable.
    #[arg(long = "placed-by-scheduler", default_value = keys::SCHEDULER_NAME)]
    pub placed_by_scheduler: Vec<String>,

    /// Every pod not opted out counts as placed by Carbon-Kube (the extender
    /// serves the default scheduler).
    #[arg(long)]
    pub all_pods_placed: bool,

    /// Embodied emissions per vCPU-hour of node capacity, grams CO2eq
    /// (default derived from Cloud Carbon Footprint's AWS coefficients).
    #[arg(long, default_value_t = EMBODIED_G_PER_VCPU_HOUR)]
    pub embodied_g_per_vcpu_hour: f64,

    /// Factor on the modelled (not measured) pod energy. 1: the Cloud Carbon
    /// Footprint model as is, which gave 0.345 of measured RAPL package +
    /// DRAM energy on the Teads AWS EC2 data; 2.9 calibrates it to that data
    /// in total (docs/accounting.md says what it does and does not fix).
    #[arg(long, default_value_t = 1.0)]
    pub modelled_energy_scale: f64,

    /// Most ConfigMaps the documents are split across when one is too small
    /// (the accounting ConfigMap, then `<name>-1`, `<name>-2`, ...; 1 to 16);
    /// past them the oldest days are dropped.
    #[arg(long, default_value_t = 8)]
    pub max_shards: usize,

    /// Hours of zone intensity history kept for the deferral counterfactual
    /// (a pod deferred longer than this gets none).
    #[arg(long, default_value_t = 72)]
    pub history_hours: i64,

    /// Workloads per namespace with their own metric series; the rest are
    /// counted under workload="_other".
    #[arg(long, default_value_t = 100)]
    pub max_workloads_per_namespace: usize,

    /// Region to zone mapping, `REGION=ZONE` or `PROVIDER/REGION=ZONE`; repeatable.
    #[arg(long = "region-zone", value_name = "REGION=ZONE")]
    pub region_zones: Vec<String>,

    /// Account without leader election (only with a single replica).
    #[arg(long)]
    pub no_leader_elect: bool,

    /// Only account pods in this namespace (default: every namespace).
    #[arg(long)]
    pub watch_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(long, default_value = "carbon-kube-accounting")]
    pub lease_name: String,

    /// Lease validity after the last renewal.
    #[arg(long, default_value = "15s", value_parser = seconds)]
    pub lease_duration: i64,

    /// This replica's identity in the Lease (default: $POD_NAME or $HOSTNAME, plus the pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

impl Args {
    /// Validates the flags into settings, reporting every problem.
    pub fn settings(&self) -> anyhow::Result<AccountingSettings> {
        let config = AccountingConfig {
            embodied_g_per_vcpu_hour: self.embodied_g_per_vcpu_hour,
            modelled_energy_scale: self.modelled_energy_scale,
            ..AccountingConfig::default()
        };
        let mut errors = Vec::new();
        if self.tick < 1 {
            errors.push("--tick: must be at least 1s".to_owned());
        }
        if self.publish_interval < 1 {
            errors.push("--publish-interval: must be at least 1s".to_owned());
        }
        if !(self.embodied_g_per_vcpu_hour.is_finite() && self.embodied_g_per_vcpu_hour >= 0.0) {
            errors.push("--embodied-g-per-vcpu-hour: must be a number >= 0".to_owned());
        }
        if !(self.modelled_energy_scale.is_finite() && self.modelled_energy_scale > 0.0) {
            errors.push("--modelled-energy-scale: must be a number > 0".to_owned());
        }
        if !(1..=MAX_ACCOUNTING_SHARDS).contains(&self.max_shards) {
            errors.push(format!(
                "--max-shards: must be from 1 to {MAX_ACCOUNTING_SHARDS}"
            ));
        }
        if self.history_hours < 1 {
            errors.push("--history-hours: must be at least 1".to_owned());
        }
        if self.max_workloads_per_namespace < 1 {
            errors.push("--max-workloads-per-namespace: must be at least 1".to_owned());
        }
        if self.lease_duration < 3 {
            errors.push("--lease-duration: must be at least 3s".to_owned());
        }
        if self.kepler_query.trim().is_empty() {
            errors.push("--kepler-query: must not be empty".to_owned());
        }
        let mut entries = Vec::new();
        for flag in &self.region_zones {
            match flag.split_once('=') {
                Some((k, v)) => entries.push((k.to_owned(), v.to_owned())),
                None => errors.push(format!("--region-zone {flag:?}: expected REGION=ZONE")),
            }
        }
        let region_map =
            RegionZoneMap::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap_or_else(|e| {
                    errors.extend(e.iter().map(|e| format!("--region-zone: {e}")));
                    RegionZoneMap::default()
                });
        if !errors.is_empty() {
            anyhow::bail!("invalid settings: {}", errors.join("; "));
        }
        let secs = |s: i64| Duration::from_secs(u64::try_from(s).unwrap_or(1));
        let lease_duration = u64::try_from(self.lease_duration).unwrap_or(15);
        let identity = self.identity.clone().unwrap_or_else(|| {
            let host =
                std::env::var("HOSTNAME").unwrap_or_else(|_| "carbon-kube-accounting".into());
            format!("{host}-{}", std::process::id())
        });
        Ok(AccountingSettings {
            config,
            tick: secs(self.tick),
            publish_interval: secs(self.publish_interval),
            max_data_age_seconds: self.max_data_age,
            namespace: self.namespace.clone(),
            snapshot_name: self.snapshot_configmap.clone(),
            configmap_name: self.accounting_configmap.clone(),
            max_shards: self.max_shards,
            region_map,
            placed_by: if self.all_pods_placed {
                PlacedBy::AllPods
            } else {
                PlacedBy::SchedulerNames(self.placed_by_scheduler.clone())
            },
            kepler: self
                .kepler_prometheus_url
                .clone()
                .map(|url| KeplerSettings {
                    url,
                    query: self.kepler_query.clone(),
                    timeout: secs(self.kepler_timeout),
                }),
            cpu_usage_from_metrics_api: self.cpu_usage_from_metrics_api,
            history_hours: self.history_hours,
            max_workloads_per_namespace: self.max_workloads_per_namespace,
            leader: (!self.no_leader_elect).then(|| LeaderSettings {
                lease_name: self.lease_name.clone(),
                namespace: self.namespace.clone(),
                identity,
                duration_seconds: lease_duration,
                grace_seconds: (lease_duration / 3).max(1),
            }),
            pod_namespace: self.watch_namespace.clone(),
        })
    }
}

/// `carbon-kube report`: emissions per namespace over a period, with the
/// savings against carbon-agnostic scheduling, from the accounting
/// controller's usage document.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Read the accounting ConfigMaps as JSON from this file instead of the
    /// cluster: all shards as a list (`kubectl get configmap -l
    /// carbon-kube.io/accounting-shard -o json`), or the one ConfigMap
    /// (`kubectl get configmap carbon-kube-accounting -o json`) when there is
    /// one shard.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub file: Option<PathBuf>,

    /// Kubeconfig to read the ConfigMap with (default: in-cluster, then
    /// $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the carbon-kube-accounting ConfigMap.
    #[arg(long, env = "CARBON_KUBE_NAMESPACE", default_value = keys::DEFAULT_NAMESPACE)]
    pub accounting_namespace: String,

    /// Name of the accounting ConfigMap (shard 0; the other shards it names
    /// are read too).
    #[arg(long, default_value = ACCOUNTING_CONFIGMAP)]
    pub accounting_configmap: String,

    /// Only these namespaces (repeatable; default: all).
    #[arg(long = "namespace", short = 'n')]
    pub namespaces: Vec<String>,

    /// The period: `today`, `yesterday`, `7d`, `30d` (the last N UTC days,
    /// today included), `month` (this calendar month), `all`, or
    /// `YYYY-MM-DD..YYYY-MM-DD` (UTC days, both included).
    #[arg(long, default_value = "30d")]
    pub period: Period,

    /// Output: `table`, `json` or `csv`.
    #[arg(long, short = 'o', default_value = "table")]
    pub output: Format,
}
