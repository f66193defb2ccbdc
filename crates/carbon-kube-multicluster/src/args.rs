//! Command-line arguments of `carbon-kube cluster-score`, validated once into
//! the publisher's and the adapter's settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use carbon_kube_k8s::leader::LeaderSettings;
use carbon_kube_model::{CarbonIntensity, ZoneId, keys};
use carbon_kube_policy::cluster_score::{
    ClusterScoreConfig, DEFAULT_BAND, DEFAULT_REFERENCE_G_PER_KWH, Hysteresis, Reference,
};
use carbon_kube_policy::zone_map::RegionZoneMap;

use crate::karmada::KarmadaSettings;
use crate::ocm;
use crate::publisher::PublisherSettings;

fn seconds(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    i64::try_from(d.as_secs()).map_err(|_| format!("{s:?}: too long"))
}

/// Multi-cluster placement: publish this cluster's carbon score, or weigh
/// Karmada policies by the member clusters' scores.
#[derive(clap::Subcommand, Debug, Clone)]
#[allow(clippy::large_enum_variant)] // parsed once at start; boxing buys nothing
pub enum ClusterScoreCommand {
    /// Score this cluster (its nodes' grid zones weighted by allocatable CPU,
    /// −100..100 against a reference intensity, 0 = neutral or no data) and
    /// publish it as an Open Cluster Management AddOnPlacementScore in the
    /// cluster's namespace on the hub, with hysteresis.
    Publish(PublishArgs),
    /// Set the static cluster weights of Karmada PropagationPolicies
    /// annotated carbon-kube.io/carbon-weights=true from the member clusters'
    /// AddOnPlacementScores (weight = score + 101; missing or expired → 101).
    Karmada(KarmadaArgs),
}

/// `carbon-kube cluster-score publish`.
#[derive(clap::Args, Debug, Clone)]
pub struct PublishArgs {
    /// This cluster's name as the hub knows it (OCM ManagedCluster, Karmada
    /// member): the hub namespace the score object is written to.
    #[arg(long, env = "CARBON_KUBE_CLUSTER_NAME")]
    pub cluster_name: String,

    /// Kubeconfig of the hub (OCM hub or Karmada control plane) the score is
    /// written to; default: this cluster.
    #[arg(long, env = "CARBON_KUBE_HUB_KUBECONFIG")]
    pub hub_kubeconfig: Option<PathBuf>,

    /// Kubeconfig of this cluster (nodes, snapshot); default: in-cluster or
    /// $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the carbon-intensity-data ConfigMap in this cluster.
    #[arg(long, env = "CARBON_KUBE_NAMESPACE", default_value = keys::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Name of the snapshot ConfigMap.
    #[arg(long, default_value = keys::SNAPSHOT_CONFIGMAP)]
    pub snapshot_configmap: String,

    /// Name of the AddOnPlacementScore (a Placement's addOn.resourceName).
    #[arg(long, default_value = ocm::DEFAULT_RESOURCE_NAME)]
    pub resource_name: String,

    /// Name of the score inside it (a Placement's addOn.scoreName).
    #[arg(long, default_value = ocm::DEFAULT_SCORE_NAME)]
    pub score_name: String,

    /// Reference intensity in g/kWh: the score is 0 at it, +100 at zero
    /// carbon, −100 at twice it or more.
    #[arg(long, default_value_t = DEFAULT_REFERENCE_G_PER_KWH, conflicts_with = "reference_zones")]
    pub reference: f64,

    /// Use the mean of these zones' intensities as the reference instead
    /// (e.g. every member cluster's grid, so all score on one scale);
    /// comma-separated zone ids, which the snapshot must carry.
    #[arg(long, value_delimiter = ',')]
    pub reference_zones: Vec<String>,

    /// Average each zone's intensity over this look-ahead (current value,
    /// then its forecast); 0s = the current value only.
    #[arg(long, default_value = "2h", value_parser = seconds)]
    pub horizon: i64,

    /// Carbon records older than this are neutral.
    #[arg(long, default_value = "30m", value_parser = seconds)]
    pub max_data_age: i64,

    /// The published score changes only when the fresh one is more than
    /// this many points away (hysteresis).
    #[arg(long, default_value_t = DEFAULT_BAND)]
    pub band: u32,

    /// Time between runs; status.validUntil is set to twice this.
    #[arg(long, default_value = "5m", value_parser = seconds)]
    pub interval: i64,

    /// Region to zone mapping for nodes without a carbon-kube.io/grid-zone
    /// label, `REGION=ZONE` or `PROVIDER/REGION=ZONE`; repeatable.
    #[arg(long = "region-zone", value_name = "REGION=ZONE")]
    pub region_zones: Vec<String>,

    /// Only nodes matching this label selector count (e.g.
    /// `!node-role.kubernetes.io/control-plane`); default: every node.
    #[arg(long)]
    pub node_selector: Option<String>,

    /// Run once, print the decision and exit (no leader election).
    #[arg(long)]
    pub once: bool,

    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub health_listen: SocketAddr,

    /// Publish without leader election (only with a single replica).
    #[arg(long)]
    pub no_leader_elect: bool,

    /// Name of the leader Lease, in --namespace of this cluster: only the
    /// replica holding it publishes.
    #[arg(long, default_value = "carbon-kube-cluster-score")]
    pub lease_name: String,

    /// Lease validity after the last renewal.
    #[arg(long, default_value = "15s", value_parser = seconds)]
    pub lease_duration: i64,

    /// This replica's identity in the Lease (default: $POD_NAME or $HOSTNAME, plus the pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// `carbon-kube cluster-score karmada`.
#[derive(clap::Args, Debug, Clone)]
pub struct KarmadaArgs {
    /// Kubeconfig of the Karmada control plane (where the PropagationPolicies
    /// and the members' AddOnPlacementScores are); default: in-cluster or
    /// $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Name of the members' AddOnPlacementScores (in namespaces named after
    /// the member clusters).
    #[arg(long, default_value = ocm::DEFAULT_RESOURCE_NAME)]
    pub resource_name: String,

    /// Name of the score inside them.
    #[arg(long, default_value = ocm::DEFAULT_SCORE_NAME)]
    pub score_name: String,

    /// Only policies in this namespace (default: every namespace).
    #[arg(long)]
    pub watch_namespace: Option<String>,

    /// Time between runs.
    #[arg(long, default_value = "5m", value_parser = seconds)]
    pub interval: i64,

    /// Run once, print what happened to each opted-in policy and exit.
    #[arg(long)]
    pub once: bool,

    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub health_listen: SocketAddr,
}

fn interval(seconds: i64, errors: &mut Vec<String>) -> Duration {
    if seconds < 1 {
        errors.push("--interval: must be at least 1s".to_owned());
    }
    Duration::from_secs(u64::try_from(seconds.max(1)).unwrap_or(1))
}

fn name_errors(flag: &str, value: &str, errors: &mut Vec<String>) {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        errors.push(format!(
            "{flag} {value:?}: must be a Kubernetes object name (lowercase letters, digits, '-', '.')"
        ));
    }
}

impl PublishArgs {
    /// Validates the flags, reporting every problem.
    pub fn settings(&self) -> anyhow::Result<PublisherSettings> {
        let mut errors = Vec::new();
        name_errors("--cluster-name", &self.cluster_name, &mut errors);
        name_errors("--resource-name", &self.resource_name, &mut errors);
        if self.score_name.trim().is_empty() {
            errors.push("--score-name: must not be empty".to_owned());
        }
        let reference = if self.reference_zones.is_empty() {
            match CarbonIntensity::new(self.reference) {
                Ok(r) if r.g_per_kwh() > 0.0 => Reference::Fixed(r),
                Ok(_) => {
                    errors.push("--reference: must be above 0 g/kWh".to_owned());
                    Reference::Fixed(CarbonIntensity::ZERO)
                }
                Err(e) => {
                    errors.push(format!("--reference: {e}"));
                    Reference::Fixed(CarbonIntensity::ZERO)
                }
            }
        } else {
            let mut zones = Vec::new();
            for z in &self.reference_zones {
                match ZoneId::parse(z.trim()) {
                    Ok(z) => zones.push(z),
                    Err(e) => errors.push(format!("--reference-zones {z:?}: {e}")),
                }
            }
            Reference::PeerZones(zones)
        };
        if self.horizon < 0 || self.horizon > 72 * 3600 {
            errors.push("--horizon: must be between 0s and 72h".to_owned());
        }
        if self.max_data_age < 1 {
            errors.push("--max-data-age: must be at least 1s".to_owned());
        }
        if self.band > 100 {
            errors.push("--band: must be at most 100 points".to_owned());
        }
        let interval_duration = interval(self.interval, &mut errors);
        if self.lease_duration < 3 {
            errors.push("--lease-duration: must be at least 3s".to_owned());
        }
        name_errors("--lease-name", &self.lease_name, &mut errors);
        let mut entries = Vec::new();
        for flag in &self.region_zones {
            match flag.split_once('=') {
                Some((k, v)) => entries.push((k.to_owned(), v.to_owned())),
                None => errors.push(format!("--region-zone {flag:?}: expected REGION=ZONE")),
            }
        }
        let region_zones =
            RegionZoneMap::from_entries(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap_or_else(|e| {
                    errors.extend(e.iter().map(|e| format!("--region-zone: {e}")));
                    RegionZoneMap::default()
                });
        if !errors.is_empty() {
            anyhow::bail!("invalid settings: {}", errors.join("; "));
        }
        Ok(PublisherSettings {
            namespace: self.namespace.clone(),
            snapshot_configmap: self.snapshot_configmap.clone(),
            cluster_name: self.cluster_name.clone(),
            resource_name: self.resource_name.clone(),
            score_name: self.score_name.trim().to_owned(),
            score: ClusterScoreConfig {
                reference,
                horizon_seconds: self.horizon,
                max_data_age_seconds: self.max_data_age,
            },
            hysteresis: Hysteresis::for_interval(self.interval.max(1), self.band),
            node_selector: self.node_selector.clone().filter(|s| !s.trim().is_empty()),
            region_zones,
            interval: interval_duration,
            leader: (!self.no_leader_elect && !self.once).then(|| {
                LeaderSettings::new(
                    "carbon-kube-cluster-score",
                    &self.lease_name,
                    &self.namespace,
                    self.identity.as_deref(),
                    u64::try_from(self.lease_duration).unwrap_or(15),
                )
            }),
        })
    }
}

impl KarmadaArgs {
    /// Validates the flags, reporting every problem.
    pub fn settings(&self) -> anyhow::Result<KarmadaSettings> {
        let mut errors = Vec::new();
        name_errors("--resource-name", &self.resource_name, &mut errors);
        if self.score_name.trim().is_empty() {
            errors.push("--score-name: must not be empty".to_owned());
        }
        let interval = interval(self.interval, &mut errors);
        if !errors.is_empty() {
            anyhow::bail!("invalid settings: {}", errors.join("; "));
        }
        Ok(KarmadaSettings {
            resource_name: self.resource_name.clone(),
            score_name: self.score_name.trim().to_owned(),
            watch_namespace: self.watch_namespace.clone(),
            interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: ClusterScoreCommand,
    }

    fn publish(args: &[&str]) -> anyhow::Result<PublisherSettings> {
        let mut argv = vec!["carbon-kube", "publish"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            ClusterScoreCommand::Publish(a) => a.settings(),
            ClusterScoreCommand::Karmada(_) => anyhow::bail!("not publish"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_settings() {
        let s = publish(&[
            "--cluster-name",
            "member-1",
            "--interval",
            "1m",
            "--band",
            "3",
        ])
        .unwrap();
        assert_eq!(s.cluster_name, "member-1");
        assert_eq!(
            (s.hysteresis.band, s.hysteresis.valid_for_seconds),
            (3, 120)
        );
        assert_eq!(s.interval, Duration::from_secs(60));
        let leader = s.leader.expect("leader election by default");
        assert_eq!(
            (leader.lease_name.as_str(), leader.namespace.as_str()),
            ("carbon-kube-cluster-score", keys::DEFAULT_NAMESPACE)
        );
        assert_eq!((leader.duration_seconds, leader.grace_seconds), (15, 5));
        for flags in [["--no-leader-elect"], ["--once"]] {
            let mut args = vec!["--cluster-name", "m"];
            args.extend(flags);
            assert!(publish(&args).unwrap().leader.is_none(), "{flags:?}");
        }
        assert!(matches!(s.score.reference, Reference::Fixed(r) if r.g_per_kwh() == 400.0));
        let s = publish(&[
            "--cluster-name",
            "m",
            "--reference-zones",
            "DE,GB",
            "--horizon",
            "0s",
        ])
        .unwrap();
        assert_eq!(
            s.score.reference,
            Reference::PeerZones(vec![
                ZoneId::parse("DE").unwrap(),
                ZoneId::parse("GB").unwrap()
            ])
        );
        assert_eq!(s.score.horizon_seconds, 0);
    }

    #[test]
    fn every_bad_flag_is_named() {
        let e = publish(&[
            "--cluster-name",
            "Bad_Name",
            "--reference",
            "0",
            "--band",
            "500",
            "--horizon",
            "100h",
            "--lease-duration",
            "1s",
        ])
        .unwrap_err()
        .to_string();
        for flag in [
            "--cluster-name",
            "--reference",
            "--band",
            "--horizon",
            "--lease-duration",
        ] {
            assert!(e.contains(flag), "{flag} missing from: {e}");
        }
        let e = publish(&["--cluster-name", "m", "--reference-zones", "not a zone!"]).unwrap_err();
        assert!(e.to_string().contains("--reference-zones"), "{e}");
        assert!(
            publish(&[
                "--cluster-name",
                "m",
                "--reference",
                "300",
                "--reference-zones",
                "DE"
            ])
            .is_err(),
            "conflicting references"
        );
    }
}
