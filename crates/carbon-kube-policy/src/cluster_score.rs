//! How green a whole cluster is, as one number other schedulers can use:
//! the score Carbon-Kube publishes for multi-cluster placement (an Open
//! Cluster Management `AddOnPlacementScore`, Karmada static weights).
//!
//! # The score
//!
//! [`cluster_score`] weighs the grid zones the cluster's nodes are in by
//! their **allocatable CPU** (power follows CPU; memory barely changes it)
//! and takes, per zone, the **average intensity over the next
//! [`ClusterScoreConfig::horizon_seconds`]**: the record's current value for
//! the current hour, its forecast after that, and past the forecast's end the
//! mean of what it says (the same window [`crate::migration`] and
//! [`crate::deferral`] use). With a horizon of 0 only the current value
//! counts. Work placed on a cluster runs for a while; the horizon makes the
//! score describe that while rather than one hour.
//!
//! The cluster's intensity `I` (g/kWh) is then compared with a reference `R`
//! ([`Reference`]: a fixed intensity, or the mean of a set of peer zones, e.g.
//! the grids of the other clusters the work could go to):
//!
//! ```text
//! score = round(100 × coverage × (R − I) / R), clamped to −100..=100
//! ```
//!
//! - **+100**: zero-carbon electricity;
//! - **0**: exactly as carbon-intensive as the reference (and the value for
//!   "no usable data": neutral);
//! - **−100**: twice the reference or more;
//! - linear in g/kWh between: each point is 1 % of the reference, so scores
//!   of clusters with the same reference compare directly (a cluster 20
//!   points higher emits 20 % of `R` less per kWh).
//!
//! `coverage` is the share of the capacity whose zone has usable data. A zone
//! that is unknown, has no record, or whose record is stale
//! ([`ClusterScoreConfig::max_data_age_seconds`] or past `valid_until`) counts
//! as neutral: its capacity pulls the score towards 0, never up or down.
//! When no capacity has usable data, or the peer zones of the reference have
//! none, the score is 0 and [`ClusterScore::neutral`] says why.
//!
//! # Hysteresis
//!
//! A consumer that re-places work whenever the score moves would churn. The
//! published value ([`publish`]) changes only when the fresh score moves
//! **more than [`Hysteresis::band`] points** away from it, when the data
//! became unusable (then 0 is published at once: missing data is never
//! dressed up as a score), or when the published value has already expired.
//! Otherwise the published value is kept, and only renewed (same value, a
//! new `validUntil`) when less than [`Hysteresis::refresh_before_seconds`] of
//! its validity is left. The published value is thus never further than the
//! band from the fresh score, and never changes for drifts within the band.
//!
//! # Weights for Karmada
//!
//! [`static_weight`] maps a score to a Karmada `staticWeightList` weight
//! (an integer ≥ 1): `score + 101`, so a −100 cluster gets 1, a neutral one
//! 101 and a +100 one 201. Replicas split in proportion: a cluster at +50
//! gets 1.5 × a neutral cluster's share. A cluster without a score in force
//! ([`score_in_force`]: none published, or expired) gets the neutral weight.
//!
//! Nothing here reads a clock, a cluster or the network: `now`, the snapshot
//! and the cluster's capacity per zone are arguments.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use carbon_kube_model::{CarbonIntensity, Snapshot, UnixSeconds, ZoneId};

use crate::forecast_window::zone_view;
use crate::placement::{HumanAge, ZoneState};
use crate::zone_map::{NodeView, ZoneResolution};

/// Lowest score.
pub const MIN_SCORE: i32 = -100;
/// Highest score.
pub const MAX_SCORE: i32 = 100;
/// The Karmada weight of a cluster with a neutral (0) or missing score.
pub const NEUTRAL_WEIGHT: i64 = 101;

/// Allocatable CPU of a cluster's nodes in one grid zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneCapacity {
    /// The zone (`None`: nodes whose zone is unknown).
    pub zone: Option<ZoneId>,
    /// Sum of the nodes' allocatable CPU, millicores.
    pub cpu_millis: i64,
    /// How many nodes.
    pub nodes: usize,
}

/// Sums the nodes' allocatable CPU per resolved zone (zones in id order,
/// the unknown zone first).
pub fn zone_capacities<'a>(
    nodes: impl IntoIterator<Item = (&'a NodeView, &'a ZoneResolution)>,
) -> Vec<ZoneCapacity> {
    let mut by_zone: BTreeMap<Option<ZoneId>, (i64, usize)> = BTreeMap::new();
    for (node, zone) in nodes {
        let e = by_zone.entry(zone.zone.clone()).or_default();
        e.0 = e.0.saturating_add(node.allocatable.cpu_millis.max(0));
        e.1 += 1;
    }
    by_zone
        .into_iter()
        .map(|(zone, (cpu_millis, nodes))| ZoneCapacity {
            zone,
            cpu_millis,
            nodes,
        })
        .collect()
}

/// What a score of 0 means.
#[derive(Clone, Debug, PartialEq)]
pub enum Reference {
    /// A fixed intensity, g/kWh.
    Fixed(CarbonIntensity),
    /// The mean, over the same horizon, of these zones' intensities (each
    /// zone counts once): clusters whose publishers share this list score on
    /// one scale centred on their own grids.
    PeerZones(Vec<ZoneId>),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(r) => write!(f, "{r}"),
            Self::PeerZones(zones) => {
                f.write_str("the mean of ")?;
                for (i, z) in zones.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{z}")?;
                }
                Ok(())
            }
        }
    }
}

/// The default reference, g/kWh: a round figure between the European and
/// world averages of grid electricity. Set [`Reference`] to your peers'.
pub const DEFAULT_REFERENCE_G_PER_KWH: f64 = 400.0;
/// The default look-ahead: two hours.
pub const DEFAULT_HORIZON_SECONDS: i64 = 2 * 3600;
/// The default maximum data age: 30 minutes (as placement's).
pub const DEFAULT_MAX_DATA_AGE_SECONDS: i64 = 30 * 60;

/// Settings of [`cluster_score`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterScoreConfig {
    /// What a score of 0 means.
    pub reference: Reference,
    /// How far ahead a zone's intensity is averaged (0: the current value).
    pub horizon_seconds: i64,
    /// Records older than this (or past their `valid_until`) are neutral.
    pub max_data_age_seconds: i64,
}

impl Default for ClusterScoreConfig {
    fn default() -> Self {
        Self {
            reference: Reference::Fixed(
                CarbonIntensity::new(DEFAULT_REFERENCE_G_PER_KWH).unwrap_or(CarbonIntensity::ZERO),
            ),
            horizon_seconds: DEFAULT_HORIZON_SECONDS,
            max_data_age_seconds: DEFAULT_MAX_DATA_AGE_SECONDS,
        }
    }
}

/// One zone's part in a cluster's score.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneContribution {
    /// The zone (`None`: unknown).
    pub zone: Option<ZoneId>,
    /// Share of the cluster's allocatable CPU, 0–1.
    pub share: f64,
    /// What the data said.
    pub state: ZoneState,
    /// Average intensity over the horizon, g/kWh, when usable.
    pub intensity: Option<f64>,
    /// Age of the zone's record, seconds (0 without one).
    pub age_seconds: i64,
}

impl fmt::Display for ZoneContribution {
    /// `DE 60% at 310 g/kWh`, `FR 40% stale (3h old): neutral`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.zone.as_ref().map_or("unknown zone", ZoneId::as_str);
        write!(f, "{name} {:.0}%", self.share * 100.0)?;
        match (self.state, self.intensity) {
            (ZoneState::Usable, Some(v)) => write!(f, " at {v:.0} g/kWh"),
            (ZoneState::Stale, _) => {
                write!(f, " stale ({} old): neutral", HumanAge(self.age_seconds))
            }
            (ZoneState::UnknownZone, _) => f.write_str(": neutral"),
            _ => f.write_str(" without data: neutral"),
        }
    }
}

/// Why a cluster's score is 0 for lack of data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Neutral {
    /// The cluster has no nodes with allocatable CPU.
    NoCapacity,
    /// No node's zone has usable (fresh) data.
    NoUsableData,
    /// None of the reference's peer zones has usable data.
    NoReference,
}

impl fmt::Display for Neutral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoCapacity => "the cluster has no nodes with allocatable CPU",
            Self::NoUsableData => "no node's grid zone has fresh carbon data",
            Self::NoReference => "none of the reference's peer zones has fresh carbon data",
        })
    }
}

/// A cluster's score and how it came about.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterScore {
    /// −100..=100; 0 is neutral.
    pub value: i32,
    /// Capacity-weighted intensity of the zones with usable data, g/kWh.
    pub intensity: Option<f64>,
    /// The reference intensity it was compared with, g/kWh.
    pub reference: Option<f64>,
    /// Share of the capacity with usable data, 0–1.
    pub coverage: f64,
    /// Per zone, largest share first.
    pub zones: Vec<ZoneContribution>,
    /// Set when the score is 0 for lack of data.
    pub neutral: Option<Neutral>,
    /// The look-ahead used, seconds.
    pub horizon_seconds: i64,
    /// How the reference was set.
    pub reference_rule: Reference,
}

impl ClusterScore {
    /// One sentence saying how the score came about.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "cluster score {}", Signed(self.value));
        if let Some(n) = self.neutral {
            let _ = write!(s, " (neutral): {n}");
        } else if let (Some(i), Some(r)) = (self.intensity, self.reference) {
            let when = if self.horizon_seconds > 0 {
                format!("averaged over the next {}", HumanAge(self.horizon_seconds))
            } else {
                "now".to_owned()
            };
            let _ = write!(
                s,
                ": capacity-weighted intensity {i:.0} g/kWh {when} against the reference {r:.0} g/kWh"
            );
            if let Reference::PeerZones(_) = self.reference_rule {
                let _ = write!(s, " ({})", self.reference_rule);
            }
            let _ = write!(
                s,
                ", {:.0}% of the capacity with fresh data",
                self.coverage * 100.0
            );
        }
        if !self.zones.is_empty() {
            s.push_str(" (");
            for (i, z) in self.zones.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{z}");
            }
            s.push(')');
        }
        s.push_str("; +100 is zero-carbon, 0 the reference, −100 twice the reference or more");
        s
    }
}

/// A zone's average intensity over `[now, now + horizon)`, when its record
/// is fresh; its state and the record's age.
fn zone_intensity(
    zone: Option<&ZoneId>,
    snapshot: &Snapshot,
    cfg: &ClusterScoreConfig,
    now: UnixSeconds,
) -> (ZoneState, Option<f64>, i64) {
    let Some(zone) = zone else {
        return (ZoneState::UnknownZone, None, 0);
    };
    let Some(record) = snapshot.get(zone) else {
        return (ZoneState::NoData, None, 0);
    };
    let age = record.age_seconds(now);
    if !record.is_fresh(now, cfg.max_data_age_seconds) {
        return (ZoneState::Stale, None, age);
    }
    let horizon = cfg.horizon_seconds.max(0);
    if horizon == 0 {
        return (
            ZoneState::Usable,
            Some(record.carbon_intensity.g_per_kwh()),
            age,
        );
    }
    let step = record
        .forecast
        .as_ref()
        .map_or(3600, |f| i64::from(f.step_seconds))
        .max(1);
    let view = zone_view(zone, record, now, step, now + horizon);
    let offset = now - now.div_euclid(step) * step;
    let avg = view.average(offset, horizon, step);
    (ZoneState::Usable, avg.is_finite().then_some(avg), age)
}

/// The reference intensity, g/kWh, or `None` when no peer zone has data.
fn reference_intensity(
    snapshot: &Snapshot,
    cfg: &ClusterScoreConfig,
    now: UnixSeconds,
) -> Option<f64> {
    match &cfg.reference {
        Reference::Fixed(r) => Some(r.g_per_kwh()),
        Reference::PeerZones(zones) => {
            let mut seen: Vec<&ZoneId> = Vec::new();
            let (mut sum, mut n) = (0.0, 0.0);
            for z in zones {
                if seen.contains(&z) {
                    continue;
                }
                seen.push(z);
                if let (_, Some(v), _) = zone_intensity(Some(z), snapshot, cfg, now) {
                    sum += v;
                    n += 1.0;
                }
            }
            (n > 0.0).then(|| sum / n)
        }
    }
}

/// Scores a cluster (see the module documentation).
pub fn cluster_score(
    capacity: &[ZoneCapacity],
    snapshot: &Snapshot,
    cfg: &ClusterScoreConfig,
    now: UnixSeconds,
) -> ClusterScore {
    // Quantities are far below 2^53 millicores: exact in f64.
    #[allow(clippy::cast_precision_loss)]
    // Folds from +0.0: an empty `sum()` of floats is −0.0, which would show
    // as a coverage of "-0" in metrics.
    let total: f64 = capacity
        .iter()
        .map(|c| c.cpu_millis.max(0) as f64)
        .fold(0.0, |a, b| a + b);
    let mut zones: Vec<ZoneContribution> = capacity
        .iter()
        .filter(|c| c.cpu_millis > 0)
        .map(|c| {
            let (state, intensity, age_seconds) =
                zone_intensity(c.zone.as_ref(), snapshot, cfg, now);
            #[allow(clippy::cast_precision_loss)]
            let share = c.cpu_millis as f64 / total;
            ZoneContribution {
                zone: c.zone.clone(),
                share,
                state,
                intensity,
                age_seconds,
            }
        })
        .collect();
    zones.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.zone.cmp(&b.zone)));
    let coverage: f64 = zones
        .iter()
        .filter(|z| z.intensity.is_some())
        .map(|z| z.share)
        .fold(0.0, |a, b| a + b);
    let intensity = (coverage > 0.0).then(|| {
        zones
            .iter()
            .filter_map(|z| z.intensity.map(|v| v * z.share))
            .sum::<f64>()
            / coverage
    });
    let reference = reference_intensity(snapshot, cfg, now);
    let neutral = if total <= 0.0 {
        Some(Neutral::NoCapacity)
    } else if intensity.is_none() {
        Some(Neutral::NoUsableData)
    } else if reference.is_none_or(|r| r <= 0.0) {
        Some(Neutral::NoReference)
    } else {
        None
    };
    let value = match (neutral, intensity, reference) {
        (None, Some(i), Some(r)) => {
            let raw = (100.0 * coverage * (r - i) / r).round();
            // raw is finite (r > 0) and clamped into −100..=100.
            #[allow(clippy::cast_possible_truncation)]
            let v = raw.clamp(f64::from(MIN_SCORE), f64::from(MAX_SCORE)) as i32;
            v
        }
        _ => 0,
    };
    ClusterScore {
        value,
        intensity,
        reference,
        coverage,
        zones,
        neutral,
        horizon_seconds: cfg.horizon_seconds.max(0),
        reference_rule: cfg.reference.clone(),
    }
}

/// A score as `+38`, `0`, `-12`.
#[derive(Clone, Copy, Debug)]
pub struct Signed(pub i32);

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("0")
        } else {
            write!(f, "{:+}", self.0)
        }
    }
}

/// Settings of [`publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    /// The published value changes only when the fresh score is more than
    /// this many points away from it.
    pub band: u32,
    /// How long a newly published value is valid (`validUntil = now + this`).
    pub valid_for_seconds: i64,
    /// A kept value is renewed when less than this much validity is left.
    pub refresh_before_seconds: i64,
}

/// The default band: 5 points (5 % of the reference).
pub const DEFAULT_BAND: u32 = 5;

impl Hysteresis {
    /// The settings for a publisher that runs every `interval_seconds`: a
    /// value is valid for two intervals, and renewed at every run that finds
    /// less than one and a half intervals left (so one late or failed run
    /// never lets it expire).
    pub fn for_interval(interval_seconds: i64, band: u32) -> Self {
        let interval = interval_seconds.max(1);
        Self {
            band,
            valid_for_seconds: 2 * interval,
            refresh_before_seconds: interval + interval / 2,
        }
    }
}

/// A score as published: its value and when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The value, −100..=100.
    pub value: i32,
    /// When it expires (`None`: never).
    pub valid_until: Option<UnixSeconds>,
}

/// Why [`publish`] decided what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishReason {
    /// Nothing was published before.
    First,
    /// The fresh score moved more than the band from the published one.
    Moved {
        /// The published value before.
        from: i32,
    },
    /// The data became unusable: 0 is published at once.
    DataMissing {
        /// The published value before.
        from: i32,
    },
    /// The published value had expired: the fresh score replaces it.
    Expired {
        /// The published value before.
        from: i32,
    },
    /// The published value is within the band and about to expire: it is
    /// renewed, unchanged.
    Renewed,
    /// The published value is within the band and valid long enough:
    /// nothing to write.
    Held,
}

/// What to publish now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publication {
    /// Whether anything is written.
    pub write: bool,
    /// The value in force after this decision.
    pub value: i32,
    /// Its expiry (the new one when written, else the old one).
    pub valid_until: Option<UnixSeconds>,
    /// The fresh score the decision was made from.
    pub fresh: i32,
    /// Why.
    pub reason: PublishReason,
    /// The band used.
    pub band: u32,
}

impl Publication {
    /// One sentence for logs and the object's condition.
    pub fn explain(&self) -> String {
        let (fresh, value, band) = (Signed(self.fresh), Signed(self.value), self.band);
        match self.reason {
            PublishReason::First => format!("published {value} (first score)"),
            PublishReason::Moved { from } => format!(
                "published {value}: moved from {} by more than the band of {band} points",
                Signed(from)
            ),
            PublishReason::DataMissing { from } => {
                let from = Signed(from);
                format!("published 0 (neutral) replacing {from}: no usable carbon data")
            }
            PublishReason::Expired { from } => {
                let from = Signed(from);
                format!("published {value}: the previous value {from} had expired")
            }
            PublishReason::Renewed => {
                format!("renewed {value} (fresh score {fresh} is within the band of {band} points)")
            }
            PublishReason::Held => format!(
                "kept {value} (fresh score {fresh} is within the band of {band} points; still valid)"
            ),
        }
    }
}

/// Decides whether, and what, to publish (see the module documentation).
pub fn publish(
    previous: Option<Published>,
    fresh: &ClusterScore,
    h: &Hysteresis,
    now: UnixSeconds,
) -> Publication {
    let new_until = Some(now + h.valid_for_seconds.max(1));
    let fresh_value = fresh.value.clamp(MIN_SCORE, MAX_SCORE);
    let write = |value: i32, reason: PublishReason| Publication {
        write: true,
        value,
        valid_until: new_until,
        fresh: fresh_value,
        reason,
        band: h.band,
    };
    let Some(prev) = previous else {
        return write(fresh_value, PublishReason::First);
    };
    let from = prev.value;
    if fresh.neutral.is_some() && from != 0 {
        return write(0, PublishReason::DataMissing { from });
    }
    if prev.valid_until.is_some_and(|until| now > until) {
        return write(fresh_value, PublishReason::Expired { from });
    }
    if fresh_value.abs_diff(from) > h.band {
        return write(fresh_value, PublishReason::Moved { from });
    }
    let left = prev.valid_until.map_or(i64::MAX, |until| until - now);
    if left < h.refresh_before_seconds {
        return write(from, PublishReason::Renewed);
    }
    Publication {
        write: false,
        value: from,
        valid_until: prev.valid_until,
        fresh: fresh_value,
        reason: PublishReason::Held,
        band: h.band,
    }
}

/// The score a consumer should use: the published value while it is valid,
/// `None` once it has expired (then the cluster is neutral).
pub fn score_in_force(published: Option<Published>, now: UnixSeconds) -> Option<i32> {
    published
        .filter(|p| p.valid_until.is_none_or(|until| now <= until))
        .map(|p| p.value.clamp(MIN_SCORE, MAX_SCORE))
}

/// The Karmada `staticWeightList` weight of a cluster: `score + 101`
/// (1 at −100, 101 neutral, 201 at +100); [`NEUTRAL_WEIGHT`] without a score.
pub fn static_weight(score: Option<i32>) -> i64 {
    score.map_or(NEUTRAL_WEIGHT, |s| {
        i64::from(s.clamp(MIN_SCORE, MAX_SCORE)) + NEUTRAL_WEIGHT
    })
}

#[cfg(test)]
mod tests;
