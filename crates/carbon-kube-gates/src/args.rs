//! Command-line arguments of `carbon-kube gates controller`, validated once
//! into [`ControllerSettings`].

use std::net::SocketAddr;
use std::time::Duration;

use carbon_kube_model::keys;
use carbon_kube_policy::budget::BudgetConfig;
use carbon_kube_policy::deferral::DeferralConfig;
use carbon_kube_policy::zone_map::RegionZoneMap;

use crate::actuator::PacingConfig;
use crate::budgets::BudgetSettings;
use crate::controller::{ControllerSettings, LeaderSettings};
use crate::reconcile::ReconcileConfig;
use crate::spec::{SpecDefaults, parse_duration};
use crate::zones::AffinityMode;

fn seconds(s: &str) -> Result<i64, String> {
    parse_duration(s)
}

/// `carbon-kube gates controller`: release gated pods in green windows.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Namespace of the carbon-intensity-data ConfigMap and of the leader Lease.
    #[arg(long, env = "CARBON_KUBE_NAMESPACE", default_value = keys::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Name of the snapshot ConfigMap.
    #[arg(long, default_value = keys::SNAPSHOT_CONFIGMAP)]
    pub snapshot_configmap: String,

    /// ConfigMap whose deferral.* keys override the deferral flags until its
    /// validUntil (the extender's carbon-kube-config; "" reads none).
    #[arg(long, default_value = keys::CONFIG_CONFIGMAP)]
    pub overrides_configmap: String,

    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "CARBON_KUBE_GATES_HEALTH_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub health_listen: SocketAddr,

    /// Expected run time of pods without carbon-kube.io/expected-duration.
    #[arg(long, default_value = "1h", value_parser = seconds)]
    pub default_expected_duration: i64,

    /// No pod is held longer than this after its creation, whatever its deadline.
    #[arg(long, default_value = "7d", value_parser = seconds)]
    pub max_deferral: i64,

    /// Releases per second, cluster-wide (0: unlimited).
    #[arg(long, default_value_t = 10.0)]
    pub release_rate: f64,

    /// Release burst, cluster-wide.
    #[arg(long, default_value_t = 20)]
    pub release_burst: u32,

    /// Releases per second into one zone (0: unlimited).
    #[arg(long, default_value_t = 5.0)]
    pub zone_release_rate: f64,

    /// Release burst per zone.
    #[arg(long, default_value_t = 10)]
    pub zone_release_burst: u32,

    /// How a released pod is steered to its planned zone.
    #[arg(long, value_enum, default_value_t = AffinityMode::Preferred)]
    pub affinity: AffinityMode,

    /// Carbon records older than this are ignored (the pod is then released: fail open).
    #[arg(long, default_value = "2h", value_parser = seconds)]
    pub max_data_age: i64,

    /// Forecast error margin: a window h hours ahead counts (1 + m·h) × its forecast.
    #[arg(long, default_value_t = 0.004)]
    pub error_margin_per_hour: f64,

    /// Minimum expected saving (fraction of now) to hold a pod at all.
    #[arg(long, default_value_t = 0.03)]
    pub min_saving: f64,

    /// Share of each zone's allocatable CPU that may be promised to deferred pods per slot.
    #[arg(long, default_value_t = 0.9)]
    pub capacity_headroom: f64,

    /// Release at the latest this long before the latest start (scheduling, image pulls).
    #[arg(long, default_value = "5m", value_parser = seconds)]
    pub start_safety: i64,

    /// A revised plan must be this fraction cleaner than the standing one.
    #[arg(long, default_value_t = 0.05)]
    pub revision_hysteresis: f64,

    /// Within this of the latest start, releases skip pacing.
    #[arg(long, default_value = "60s", value_parser = seconds)]
    pub hard_deadline_margin: i64,

    /// Gated pods whose latest start is this close (or past) count in
    /// `carbon_kube_deferred_pods_near_deadline`.
    #[arg(long, default_value = "10m", value_parser = seconds)]
    pub near_deadline: i64,

    /// Longest wait between passes.
    #[arg(long, default_value = "1s", value_parser = seconds)]
    pub tick: i64,

    /// Standing plans are revisited at least this often (and on every new snapshot).
    #[arg(long, default_value = "5m", value_parser = seconds)]
    pub replan_every: i64,

    /// Watts per requested vCPU for the savings estimate (Cloud Carbon
    /// Footprint's AWS average at 50 % utilisation).
    #[arg(long, default_value_t = 2.12)]
    pub watts_per_cpu: f64,

    /// Region to zone mapping, `REGION=ZONE` or `PROVIDER/REGION=ZONE`; repeatable.
    #[arg(long = "region-zone", value_name = "REGION=ZONE")]
    pub region_zones: Vec<String>,

    /// Plan and log, but write nothing (no gate removed, no annotation, no Event).
    #[arg(long)]
    pub dry_run: bool,

    /// Do not write Events on pods.
    #[arg(long)]
    pub no_events: bool,

    /// Act without leader election (only with a single replica).
    #[arg(long)]
    pub no_leader_elect: bool,

    /// Only release pods in this namespace (default: every namespace).
    #[arg(long)]
    pub watch_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(long, default_value = "carbon-kube-gates")]
    pub lease_name: String,

    /// Lease validity after the last renewal.
    #[arg(long, default_value = "15s", value_parser = seconds)]
    pub lease_duration: i64,

    /// This replica's identity in the Lease (default: $POD_NAME or $HOSTNAME, plus the pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Apply namespace carbon budgets (annotations carbon-kube.io/budget-grams
    /// and carbon-kube.io/budget-period on Namespaces): deferrable pods of a
    /// namespace at risk of exhausting its budget, or over it, wait for
    /// greener windows (never past their latest start). Reads the accounting
    /// controller's usage ConfigMap; without fresh usage, no effect.
    #[arg(long)]
    pub budgets: bool,

    /// With --budgets: namespace of the usage ConfigMap (default: --namespace).
    #[arg(long)]
    pub budget_usage_namespace: Option<String>,

    /// With --budgets: name of the accounting controller's usage ConfigMap (key usage.json).
    #[arg(long, default_value = carbon_kube_model::accounting::ACCOUNTING_CONFIGMAP)]
    pub budget_usage_configmap: String,

    /// With --budgets: a usage document older than this is ignored (budgets then have no effect).
    #[arg(long, default_value = "1h", value_parser = seconds)]
    pub budget_max_usage_age: i64,

    /// With --budgets: days in the burn-rate window (the current UTC day and the whole days before it).
    #[arg(long, default_value_t = 3)]
    pub budget_burn_window_days: i64,
}

impl ControllerArgs {
    /// Validates the flags into settings, reporting every problem.
    pub fn settings(&self) -> anyhow::Result<ControllerSettings> {
        let deferral = DeferralConfig {
            max_data_age_seconds: self.max_data_age,
            error_margin_per_hour: self.error_margin_per_hour,
            min_saving_fraction: self.min_saving,
            capacity_headroom: self.capacity_headroom,
            start_safety_seconds: self.start_safety,
            revision_hysteresis: self.revision_hysteresis,
        };
        let mut errors = deferral.validate().err().unwrap_or_default();
        let budget_config = BudgetConfig {
            max_usage_age_seconds: self.budget_max_usage_age,
            burn_window_days: self.budget_burn_window_days,
        };
        if let Err(e) = budget_config.validate() {
            errors.extend(e.into_iter().map(|e| {
                e.replace("maxUsageAgeSeconds", "--budget-max-usage-age")
                    .replace("burnWindowDays", "--budget-burn-window-days")
            }));
        }
        for (name, v) in [
            ("--release-rate", self.release_rate),
            ("--zone-release-rate", self.zone_release_rate),
            ("--watts-per-cpu", self.watts_per_cpu),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                errors.push(format!("{name}: must be a number at least 0"));
            }
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
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "carbon-kube-gates".into());
            format!("{host}-{}", std::process::id())
        });
        Ok(ControllerSettings {
            reconcile: ReconcileConfig {
                deferral,
                spec: SpecDefaults {
                    expected_duration_seconds: self.default_expected_duration,
                    max_deferral_seconds: self.max_deferral,
                },
                hard_deadline_margin_seconds: self.hard_deadline_margin,
            },
            affinity: self.affinity,
            pacing: PacingConfig {
                cluster_per_second: self.release_rate,
                cluster_burst: self.release_burst,
                zone_per_second: self.zone_release_rate,
                zone_burst: self.zone_release_burst,
            },
            tick: Duration::from_secs(u64::try_from(self.tick).unwrap_or(1)),
            replan_every: Duration::from_secs(u64::try_from(self.replan_every).unwrap_or(300)),
            watts_per_cpu: self.watts_per_cpu,
            near_deadline_seconds: self.near_deadline,
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
            budgets: self.budgets.then(|| BudgetSettings {
                usage_namespace: self
                    .budget_usage_namespace
                    .clone()
                    .unwrap_or_else(|| self.namespace.clone()),
                usage_configmap: self.budget_usage_configmap.clone(),
                config: budget_config,
            }),
            ..ControllerSettings::default()
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
        args: ControllerArgs,
    }

    #[test]
    fn defaults_are_valid() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let s = cli.args.settings().unwrap();
        assert_eq!(s.reconcile.spec.expected_duration_seconds, 3600);
        assert_eq!(s.reconcile.spec.max_deferral_seconds, 7 * 86_400);
        assert_eq!(s.leader.unwrap().duration_seconds, 15);
        assert_eq!(s.affinity, AffinityMode::Preferred);
        assert_eq!(s.near_deadline_seconds, 600);
        assert_eq!(s.budgets, None, "budgets are off by default");
    }

    #[test]
    fn budgets_read_usage_from_the_release_namespace_by_default() {
        let cli = Cli::try_parse_from(["x", "--namespace", "ck", "--budgets"]).unwrap();
        let b = cli.args.settings().unwrap().budgets.unwrap();
        assert_eq!(
            (b.usage_namespace.as_str(), b.usage_configmap.as_str()),
            ("ck", "carbon-kube-accounting")
        );
        assert_eq!(b.config, BudgetConfig::default());
        let cli =
            Cli::try_parse_from(["x", "--budgets", "--budget-burn-window-days", "0"]).unwrap();
        let e = cli.args.settings().unwrap_err().to_string();
        assert!(e.contains("--budget-burn-window-days"), "{e}");
    }

    #[test]
    fn every_bad_flag_is_named() {
        let cli = Cli::try_parse_from([
            "x",
            "--capacity-headroom",
            "0",
            "--release-rate=-1",
            "--region-zone",
            "nonsense",
        ])
        .unwrap();
        let e = cli.args.settings().unwrap_err().to_string();
        assert!(e.contains("capacityHeadroom"), "{e}");
        assert!(e.contains("--release-rate"), "{e}");
        assert!(e.contains("--region-zone \"nonsense\""), "{e}");
        assert!(Cli::try_parse_from(["x", "--max-deferral", "-1h"]).is_err());
    }
}
