//! Which grid zone a node draws its power from.
//!
//! In order of precedence:
//!
//! 1. the node label `carbon-kube.io/grid-zone` (an Electricity Maps zone id
//!    or one of the model's aliases);
//! 2. the operator's region → zone map ([`RegionZoneMap`]), keyed by
//!    `provider/region` or by bare region;
//! 3. the cloud region (`topology.kubernetes.io/region`) through the built-in
//!    AWS, GCP and Azure tables in [`builtin`], the provider taken from
//!    `spec.providerID` (`aws://`, `gce://`, `azure://`), or, when the node
//!    has no recognised provider id, from whichever table knows the region
//!    (their region names do not overlap);
//! 4. otherwise the zone is unknown, and the node is treated neutrally by
//!    every decision: never as green, never as dirty.
//!
//! The operator's map is consulted before the built-in tables (the issue
//! lists it after them) so that an operator can correct a built-in entry
//! for their own data centre without waiting for a release.
//!
//! A node's zone depends only on the node, so callers resolve it when the
//! node changes, not on every scheduling request.

use std::collections::BTreeMap;
use std::fmt;

use carbon_kube_model::{ZoneError, ZoneId, keys};
use serde::{Deserialize, Serialize};

pub mod builtin;

/// CPU and memory quantities of a node or pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
}

impl Resources {
    /// Quantities from CPU millicores and memory bytes.
    pub const fn new(cpu_millis: i64, memory_bytes: i64) -> Self {
        Self {
            cpu_millis,
            memory_bytes,
        }
    }

    /// Component-wise sum, saturating.
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// Component-wise difference, saturating.
    #[must_use]
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }
}

/// What the policy needs to know about a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.providerID`, e.g. `aws:///eu-central-1a/i-0abc`.
    pub provider_id: Option<String>,
    /// `status.allocatable`.
    pub allocatable: Resources,
    /// Sum of the requests of the pods bound to the node.
    pub requested: Resources,
}

/// A cloud provider with a built-in region table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudProvider {
    /// Amazon Web Services (`aws://` provider ids).
    Aws,
    /// Google Cloud (`gce://` provider ids).
    Gcp,
    /// Microsoft Azure (`azure://` provider ids).
    Azure,
}

impl CloudProvider {
    /// All providers with a built-in table.
    pub const ALL: [Self; 3] = [Self::Aws, Self::Gcp, Self::Azure];

    /// The provider named by a node's `spec.providerID`, if it is one of ours.
    pub fn from_provider_id(provider_id: &str) -> Option<Self> {
        let scheme = provider_id.split_once("://")?.0;
        match scheme.to_ascii_lowercase().as_str() {
            "aws" => Some(Self::Aws),
            "gce" => Some(Self::Gcp),
            "azure" => Some(Self::Azure),
            _ => None,
        }
    }

    /// The name used in configuration keys (`aws/us-east-1`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
        }
    }

    /// Parses a provider name as used in configuration (`aws`, `gcp` or
    /// `gce`, `azure`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "aws" => Some(Self::Aws),
            "gcp" | "gce" | "google" => Some(Self::Gcp),
            "azure" => Some(Self::Azure),
            _ => None,
        }
    }
}

impl fmt::Display for CloudProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a node's zone was found, or why it was not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZoneVia {
    /// From the `carbon-kube.io/grid-zone` label.
    Label,
    /// From the operator's region → zone map.
    UserMap {
        /// The map key that matched (`aws/us-east-1` or `us-east-1`).
        key: String,
    },
    /// From a built-in cloud region table.
    CloudRegion {
        /// The provider whose table matched.
        provider: CloudProvider,
        /// The region, normalised as the table spells it.
        region: String,
    },
    /// The zone is unknown; the node is treated neutrally.
    Unknown(UnknownZone),
}

/// Why a node's zone is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnknownZone {
    /// The node has neither the zone label nor a region label.
    NoLabels,
    /// The caller has not seen the node yet (e.g. a node cache that has not
    /// caught up with a node kube-scheduler already knows).
    NotSeen,
    /// The node's region is in no table and not in the operator's map.
    UnmappedRegion {
        /// The provider named by the node's provider id, if any.
        provider: Option<CloudProvider>,
        /// The region label's value.
        region: String,
    },
    /// The `carbon-kube.io/grid-zone` label is not a zone id. The region is
    /// deliberately not used instead: a wrong label is a mistake to fix, not
    /// something to paper over.
    InvalidLabel {
        /// The label's value.
        value: String,
        /// Why it is not a zone id.
        error: ZoneError,
    },
}

impl fmt::Display for ZoneVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label => write!(f, "label {}", keys::LABEL_GRID_ZONE),
            Self::UserMap { key } => write!(f, "region map entry {key}"),
            Self::CloudRegion { provider, region } => {
                write!(f, "built-in {provider} region {region}")
            }
            Self::Unknown(why) => why.fmt(f),
        }
    }
}

impl fmt::Display for UnknownZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLabels => write!(
                f,
                "node has neither label {} nor {}",
                keys::LABEL_GRID_ZONE,
                keys::LABEL_REGION
            ),
            Self::NotSeen => f.write_str("node not seen yet"),
            Self::UnmappedRegion {
                provider: Some(p),
                region,
            } => write!(f, "{p} region {region:?} is in no region map"),
            Self::UnmappedRegion {
                provider: None,
                region,
            } => write!(f, "region {region:?} is in no region map"),
            Self::InvalidLabel { value, error } => {
                write!(
                    f,
                    "label {}={value:?} is invalid: {error}",
                    keys::LABEL_GRID_ZONE
                )
            }
        }
    }
}

/// A node's grid zone and how it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneResolution {
    /// The zone, when known.
    pub zone: Option<ZoneId>,
    /// Where it came from, or why it is unknown.
    pub via: ZoneVia,
}

impl ZoneResolution {
    /// A resolution to an unknown zone.
    pub fn unknown(why: UnknownZone) -> Self {
        Self {
            zone: None,
            via: ZoneVia::Unknown(why),
        }
    }
}

/// The operator's region → zone map. Keys are `provider/region`
/// (`aws/us-east-1`, `gcp/europe-west3`, `azure/westeurope`) or a bare region
/// (`dc-frankfurt-1`, for on-premises clusters and other clouds); a
/// provider-qualified key wins over a bare one. Region matching ignores case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionZoneMap {
    entries: BTreeMap<String, ZoneId>,
}

/// A bad entry in a region → zone map.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegionMapError {
    /// The zone of an entry is not a zone id.
    #[error("regionZones[{key:?}]: {source}")]
    InvalidZone {
        /// The entry's key.
        key: String,
        /// Why the value is not a zone id.
        source: ZoneError,
    },
    /// The provider prefix of a key is not `aws`, `gcp` or `azure`.
    #[error(
        "regionZones[{key:?}]: unknown provider {provider:?} (use aws, gcp or azure, or no prefix)"
    )]
    UnknownProvider {
        /// The entry's key.
        key: String,
        /// The prefix found.
        provider: String,
    },
    /// The key is empty.
    #[error("regionZones has an empty key")]
    EmptyKey,
    /// Two keys normalise to the same region.
    #[error("regionZones names {key:?} twice")]
    Duplicate {
        /// The normalised key.
        key: String,
    },
}

impl RegionZoneMap {
    /// Builds a map from `(key, zone)` pairs, reporting every bad entry.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, Vec<RegionMapError>> {
        let mut map = BTreeMap::new();
        let mut errors = Vec::new();
        for (key, zone) in entries {
            let normalised = match normalise_key(key) {
                Ok(k) => k,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match ZoneId::parse(zone) {
                Ok(z) => {
                    if map.insert(normalised.clone(), z).is_some() {
                        errors.push(RegionMapError::Duplicate { key: normalised });
                    }
                }
                Err(source) => errors.push(RegionMapError::InvalidZone {
                    key: key.to_owned(),
                    source,
                }),
            }
        }
        if errors.is_empty() {
            Ok(Self { entries: map })
        } else {
            Err(errors)
        }
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The zone for `region`, preferring the `provider/region` entry.
    /// Returns the matching key too.
    pub fn lookup(&self, provider: Option<CloudProvider>, region: &str) -> Option<(&str, &ZoneId)> {
        let region = normalise_region(provider, region);
        if let Some(p) = provider {
            let key = format!("{}/{region}", p.as_str());
            if let Some((k, z)) = self.entries.get_key_value(&key) {
                return Some((k.as_str(), z));
            }
        }
        self.entries
            .get_key_value(&region)
            .map(|(k, z)| (k.as_str(), z))
    }

    /// The entries, normalised keys first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ZoneId)> {
        self.entries.iter().map(|(k, z)| (k.as_str(), z))
    }
}

fn normalise_key(key: &str) -> Result<String, RegionMapError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(RegionMapError::EmptyKey);
    }
    match key.split_once('/') {
        Some((p, region)) => {
            let provider =
                CloudProvider::parse(p).ok_or_else(|| RegionMapError::UnknownProvider {
                    key: key.to_owned(),
                    provider: p.to_owned(),
                })?;
            if region.trim().is_empty() {
                return Err(RegionMapError::EmptyKey);
            }
            Ok(format!(
                "{}/{}",
                provider.as_str(),
                normalise_region(Some(provider), region)
            ))
        }
        None => Ok(normalise_region(None, key)),
    }
}

/// Lower case, trimmed; Azure regions also lose spaces (`West Europe` →
/// `westeurope`), as Azure spells them both ways.
fn normalise_region(provider: Option<CloudProvider>, region: &str) -> String {
    let lower = region.trim().to_ascii_lowercase();
    if provider == Some(CloudProvider::Azure) {
        lower.chars().filter(|c| !c.is_whitespace()).collect()
    } else {
        lower
    }
}

/// Resolves a node's grid zone (see the module documentation for the order).
pub fn node_zone(node: &NodeView, user_map: &RegionZoneMap) -> ZoneResolution {
    if let Some(value) = node.labels.get(keys::LABEL_GRID_ZONE) {
        return match ZoneId::parse(value) {
            Ok(zone) => ZoneResolution {
                zone: Some(zone),
                via: ZoneVia::Label,
            },
            Err(error) => ZoneResolution::unknown(UnknownZone::InvalidLabel {
                value: value.clone(),
                error,
            }),
        };
    }
    let Some(region) = node
        .labels
        .get(keys::LABEL_REGION)
        .filter(|r| !r.trim().is_empty())
    else {
        return ZoneResolution::unknown(UnknownZone::NoLabels);
    };
    let provider = node
        .provider_id
        .as_deref()
        .and_then(CloudProvider::from_provider_id);
    if let Some((key, zone)) = user_map.lookup(provider, region) {
        return ZoneResolution {
            zone: Some(zone.clone()),
            via: ZoneVia::UserMap {
                key: key.to_owned(),
            },
        };
    }
    let found = match provider {
        Some(p) => builtin::zone_for(p, region).map(|z| (p, z)),
        // No recognised provider id (kubeadm, kind, other clouds): the tables'
        // region names do not overlap, so any table that knows the region is
        // the right one.
        None => CloudProvider::ALL
            .iter()
            .find_map(|p| builtin::zone_for(*p, region).map(|z| (*p, z))),
    };
    match found {
        Some((provider, zone)) => match ZoneId::parse(zone) {
            Ok(zone) => ZoneResolution {
                zone: Some(zone),
                via: ZoneVia::CloudRegion {
                    provider,
                    region: normalise_region(Some(provider), region),
                },
            },
            // The built-in tables are tested to hold only valid ids.
            Err(_) => ZoneResolution::unknown(UnknownZone::UnmappedRegion {
                provider: Some(provider),
                region: region.clone(),
            }),
        },
        None => ZoneResolution::unknown(UnknownZone::UnmappedRegion {
            provider,
            region: region.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)], provider_id: Option<&str>) -> NodeView {
        NodeView {
            name: "n1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            provider_id: provider_id.map(str::to_owned),
            ..NodeView::default()
        }
    }

    fn zone(r: &ZoneResolution) -> Option<&str> {
        r.zone.as_ref().map(ZoneId::as_str)
    }

    #[test]
    fn the_label_wins_and_aliases_resolve() {
        let n = node(
            &[
                (keys::LABEL_GRID_ZONE, "us-ca"),
                (keys::LABEL_REGION, "eu-central-1"),
            ],
            Some("aws:///eu-central-1a/i-1"),
        );
        let r = node_zone(&n, &RegionZoneMap::default());
        assert_eq!(zone(&r), Some("US-CAL-CISO"));
        assert_eq!(r.via, ZoneVia::Label);
    }

    #[test]
    fn an_invalid_label_is_unknown_and_says_why() {
        let n = node(
            &[
                (keys::LABEL_GRID_ZONE, "DE;x"),
                (keys::LABEL_REGION, "eu-central-1"),
            ],
            Some("aws:///eu-central-1a/i-1"),
        );
        let r = node_zone(&n, &RegionZoneMap::default());
        assert_eq!(r.zone, None);
        assert!(
            r.via.to_string().contains("\"DE;x\" is invalid"),
            "{}",
            r.via
        );
    }

    #[test]
    fn cloud_regions_resolve_through_the_provider_table() {
        let cases = [
            (
                "aws:///eu-central-1a/i-0abc",
                "eu-central-1",
                "DE",
                CloudProvider::Aws,
            ),
            (
                "gce://proj/europe-west3-a/vm",
                "europe-west3",
                "DE",
                CloudProvider::Gcp,
            ),
            (
                "azure:///subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/virtualMachines/z",
                "westeurope",
                "NL",
                CloudProvider::Azure,
            ),
            ("azure:///x", "West Europe", "NL", CloudProvider::Azure),
            (
                "aws:///us-west-1b/i-1",
                "US-WEST-1",
                "US-CAL-CISO",
                CloudProvider::Aws,
            ),
        ];
        for (pid, region, want, provider) in cases {
            let r = node_zone(
                &node(&[(keys::LABEL_REGION, region)], Some(pid)),
                &RegionZoneMap::default(),
            );
            assert_eq!(zone(&r), Some(want), "{pid} {region}");
            assert!(
                matches!(r.via, ZoneVia::CloudRegion { provider: p, .. } if p == provider),
                "{:?}",
                r.via
            );
        }
    }

    #[test]
    fn without_a_provider_id_any_table_that_knows_the_region_answers() {
        let r = node_zone(
            &node(&[(keys::LABEL_REGION, "europe-west9")], None),
            &RegionZoneMap::default(),
        );
        assert_eq!(zone(&r), Some("FR"));
        let r = node_zone(
            &node(&[(keys::LABEL_REGION, "eu-west-3")], Some("kwok://n1")),
            &RegionZoneMap::default(),
        );
        assert_eq!(zone(&r), Some("FR"));
    }

    #[test]
    fn the_operator_map_covers_unknown_regions_and_overrides_built_ins() {
        let map = RegionZoneMap::from_entries([
            ("dc-frankfurt-1", "DE"),
            ("AWS/us-west-2", "US-NW-BPAT"),
            ("us-west-2", "US-NW-PACW"),
        ])
        .unwrap();
        let r = node_zone(&node(&[(keys::LABEL_REGION, "DC-Frankfurt-1")], None), &map);
        assert_eq!(zone(&r), Some("DE"));
        assert_eq!(r.via.to_string(), "region map entry dc-frankfurt-1");
        let r = node_zone(
            &node(
                &[(keys::LABEL_REGION, "us-west-2")],
                Some("aws:///us-west-2a/i-1"),
            ),
            &map,
        );
        assert_eq!(zone(&r), Some("US-NW-BPAT"), "provider-qualified key wins");
        let r = node_zone(&node(&[(keys::LABEL_REGION, "us-west-2")], None), &map);
        assert_eq!(zone(&r), Some("US-NW-PACW"), "bare key when no provider");
    }

    #[test]
    fn unknown_regions_and_unlabelled_nodes_are_unknown() {
        let r = node_zone(&node(&[], None), &RegionZoneMap::default());
        assert_eq!(r, ZoneResolution::unknown(UnknownZone::NoLabels));
        let r = node_zone(
            &node(&[(keys::LABEL_REGION, "mars-north-1")], Some("aws:///x/i")),
            &RegionZoneMap::default(),
        );
        assert_eq!(r.zone, None);
        assert_eq!(
            r.via.to_string(),
            "aws region \"mars-north-1\" is in no region map"
        );
    }

    #[test]
    fn bad_map_entries_are_all_reported() {
        let errors = RegionZoneMap::from_entries([("x/us-east-1", "DE"), ("a", "D E"), ("", "DE")])
            .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].contains("unknown provider \"x\""));
        assert!(text[1].contains("regionZones[\"a\"]"));
        assert!(text[2].contains("empty key"));
    }
}
