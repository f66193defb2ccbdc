//! Command-line arguments of `carbon-kube migrator`, validated once into
//! [`MigratorSettings`].

use std::net::SocketAddr;
use std::time::Duration;

use carbon_kube_model::keys;
use carbon_kube_policy::migration::MigrationConfig;
use carbon_kube_policy::zone_map::RegionZoneMap;

use crate::caps::CapsConfig;
use crate::controller::{LeaderSettings, MigratorSettings};

fn seconds(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    i64::try_from(d.as_secs()).map_err(|_| format!("{s:?}: too long"))
}

/// `carbon-kube migrator`: move opted-in running pods to greener zones when it pays.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Namespace of the carbon-intensity-data ConfigMap and of the leader Lease.
    #[arg(long, env = "CARBON_KUBE_NAMESPACE", default_value = keys::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Name of the snapshot ConfigMap.
    #[arg(long, default_value = keys::SNAPSHOT_CONFIGMAP)]
    pub snapshot_configmap: String,

    /// ConfigMap (in --namespace) whose migration.* keys (margin,
    /// minDwellSeconds, minNetSavingGrams, minImprovementGPerKwh: what the
    /// tuner publishes in active mode) override the flags of the same
    /// settings until its validUntil; "" reads none.
    #[arg(long, default_value = keys::CONFIG_CONFIGMAP)]
    pub overrides_configmap: String,

    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "CARBON_KUBE_MIGRATOR_HEALTH_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub health_listen: SocketAddr,

    /// Longest wait between cycles (a new snapshot also starts one).
    #[arg(long, default_value = "5m", value_parser = seconds)]
    pub interval: i64,

    /// Decide, log and count, but evict nothing and write nothing (no
    /// owner annotation, no Event).
    #[arg(long)]
    pub dry_run: bool,

    /// The saving must exceed the cost by this fraction (0.5: saving ≥ 1.5 × cost).
    #[arg(long, default_value_t = 0.5)]
    pub margin: f64,

    /// The saving minus the cost must be at least this many grams CO2e.
    #[arg(long, default_value_t = 1.0)]
    pub min_net_saving_grams: f64,

    /// The target zone must be at least this much cleaner over the run, g/kWh.
    #[arg(long, default_value_t = 20.0)]
    pub min_improvement: f64,

    /// Restart time at full pod power (image pull, warm-up): the restart energy.
    #[arg(long, default_value = "2m", value_parser = seconds)]
    pub restart_time: i64,

    /// Fixed cost per move, grams CO2e (the price of a disruption).
    #[arg(long, default_value_t = 2.0)]
    pub disruption_penalty_grams: f64,

    /// A pod that started (or was moved) less than this ago is never moved.
    #[arg(long, default_value = "1h", value_parser = seconds)]
    pub min_dwell: i64,

    /// How long an owner's moves are remembered (no move back to a zone it
    /// left within this).
    #[arg(long, default_value = "6h", value_parser = seconds)]
    pub owner_memory: i64,

    /// A workload moved this many times per replica within its memory is not
    /// moved again.
    #[arg(long, default_value_t = 3)]
    pub max_owner_moves: u32,

    /// Savings are counted over at most this much of a pod's remaining run
    /// (and this is the remaining run of pods that announce none).
    #[arg(long, default_value = "6h", value_parser = seconds)]
    pub horizon: i64,

    /// Carbon records older than this are not used; a pod in a zone whose
    /// data is older never moves.
    #[arg(long, default_value = "30m", value_parser = seconds)]
    pub max_data_age: i64,

    /// Evictions per node per cycle.
    #[arg(long, default_value_t = 1)]
    pub max_per_node: u32,

    /// Evictions per namespace per cycle.
    #[arg(long, default_value_t = 5)]
    pub max_per_namespace: u32,

    /// Share of a workload's replicas that may be moving at once (at least one pod).
    #[arg(long, default_value_t = 0.25)]
    pub max_owner_fraction: f64,

    /// Evictions per cycle, cluster-wide.
    #[arg(long, default_value_t = 10)]
    pub max_per_cycle: u32,

    /// Evictions per rolling hour, cluster-wide.
    #[arg(long, default_value_t = 30)]
    pub max_per_hour: u32,

    /// A replacement not bound this long after its eviction counts as `not_seen`.
    #[arg(long, default_value = "10m", value_parser = seconds)]
    pub landing_timeout: i64,

    /// Region to zone mapping, `REGION=ZONE` or `PROVIDER/REGION=ZONE`; repeatable.
    #[arg(long = "region-zone", value_name = "REGION=ZONE")]
    pub region_zones: Vec<String>,

    /// Do not write Events on pods.
    #[arg(long)]
    pub no_events: bool,

    /// Act without leader election (only with a single replica).
    #[arg(long)]
    pub no_leader_elect: bool,

    /// Only consider pods in this namespace (default: every namespace).
    #[arg(long)]
    pub watch_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(long, default_value = "carbon-kube-migrator")]
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
    pub fn settings(&self) -> anyhow::Result<MigratorSettings> {
        let migration = MigrationConfig {
            max_data_age_seconds: self.max_data_age,
            margin: self.margin,
            min_net_saving_grams: self.min_net_saving_grams,
            min_improvement_g_per_kwh: self.min_improvement,
            restart_seconds: self.restart_time,
            disruption_penalty_grams: self.disruption_penalty_grams,
            min_dwell_seconds: self.min_dwell,
            owner_memory_seconds: self.owner_memory,
            max_owner_moves: self.max_owner_moves,
            horizon_seconds: self.horizon,
        };
        let mut errors: Vec<String> = migration
            .validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| format!("migration {e}"))
            .collect();
        if !(self.max_owner_fraction > 0.0 && self.max_owner_fraction <= 1.0) {
            errors.push("--max-owner-fraction: must be above 0 and at most 1".to_owned());
        }
        if self.interval < 1 {
            errors.push("--interval: must be at least 1s".to_owned());
        }
        if self.lease_duration < 3 {
            errors.push("--lease-duration: must be at least 3s".to_owned());
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
        let lease_duration = u64::try_from(self.lease_duration).unwrap_or(15);
        let identity = self.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "carbon-kube-migrator".into());
            format!("{host}-{}", std::process::id())
        });
        Ok(MigratorSettings {
            migration,
            caps: CapsConfig {
                per_node: self.max_per_node,
                per_namespace: self.max_per_namespace,
                owner_fraction: self.max_owner_fraction,
                per_cycle: self.max_per_cycle,
                per_hour: self.max_per_hour,
            },
            interval: Duration::from_secs(u64::try_from(self.interval).unwrap_or(300)),
            landing_timeout_seconds: self.landing_timeout,
            snapshot_namespace: self.namespace.clone(),
            snapshot_name: self.snapshot_configmap.clone(),
            region_map,
            dry_run: self.dry_run,
            events: !self.no_events,
            leader: (!self.no_leader_elect).then(|| LeaderSettings {
                lease_name: self.lease_name.clone(),
                namespace: self.namespace.clone(),
                identity,
                duration_seconds: lease_duration,
                grace_seconds: (lease_duration / 3).max(1),
            }),
            pod_namespace: self.watch_namespace.clone(),
            overrides_configmap: Some(self.overrides_configmap.clone()).filter(|n| !n.is_empty()),
            ..MigratorSettings::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn defaults_are_valid() {
        let s = Cli::try_parse_from(["x"]).unwrap().args.settings().unwrap();
        assert_eq!(s.migration, MigrationConfig::default());
        assert_eq!(s.caps, CapsConfig::default());
        assert_eq!(s.interval, Duration::from_secs(300));
        assert!(!s.dry_run);
        assert_eq!(s.leader.unwrap().lease_name, "carbon-kube-migrator");
        assert_eq!(s.overrides_configmap.as_deref(), Some("carbon-kube-config"));
        let s = Cli::try_parse_from(["x", "--overrides-configmap", ""])
            .unwrap()
            .args
            .settings()
            .unwrap();
        assert_eq!(s.overrides_configmap, None);
    }

    #[test]
    fn every_bad_flag_is_named() {
        let cli = Cli::try_parse_from([
            "x",
            "--margin=-1",
            "--max-owner-fraction",
            "0",
            "--region-zone",
            "nonsense",
        ])
        .unwrap();
        let e = cli.args.settings().unwrap_err().to_string();
        assert!(e.contains("margin:"), "{e}");
        assert!(e.contains("--max-owner-fraction"), "{e}");
        assert!(e.contains("--region-zone \"nonsense\""), "{e}");
        assert!(Cli::try_parse_from(["x", "--min-dwell", "soon"]).is_err());
    }
}
