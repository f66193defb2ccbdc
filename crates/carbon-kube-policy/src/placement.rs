//! Where a pod should run: filter out nodes on dirty grids, and score the
//! rest by how clean their grid is and how much room they have.
//!
//! - [`filter_nodes`] drops nodes whose zone is above the threshold (the
//!   cluster's, or the pod's `carbon-kube.io/max-intensity`). If no node
//!   passes, it fails open by default: every node is kept and the outcome
//!   says why. The cluster's threshold is absolute (g/kWh) or relative
//!   ([`ThresholdMode`]): a percentile of the candidate zones' current
//!   intensities, or of each zone's own forecast window, so one setting
//!   transfers between grids of very different levels.
//! - [`score_nodes`] gives each node an integer 0–10:
//!   `(carbonWeight × carbon + performanceWeight × performance) /
//!   (carbonWeight + performanceWeight) × 10`, rounded, where `carbon` is
//!   normalised across the candidate zones: 1 for the cleanest, 0 for the
//!   dirtiest, linear in g/kWh between (zones less than
//!   [`MIN_CARBON_SPREAD_G_PER_KWH`] apart share a smaller range), and
//!   `performance` is the share of the node's allocatable CPU and memory
//!   still free once the pod is on it.
//!
//! Missing data never blocks scheduling. A node whose zone is unknown, has
//! no record, or whose record is stale (or estimated, if so configured) is
//! neutral: it passes the filter, and its carbon part is the midpoint of the
//! candidate zones' carbon parts, neither green nor dirty. If no record in
//! the snapshot is fresh, or the pod opted out, nothing is filtered and every
//! node gets the same score (0): the decision is left to kube-scheduler.
//!
//! Every outcome carries its reasons: the zone, intensity, source and age of
//! each zone involved, per node which rule applied, and why carbon was not
//! applied at all when it was not.
//!
//! Both functions allocate two vectors per call (per-zone evaluations, and
//! one small `Copy` entry per candidate) and never clone node data, so they
//! stay cheap at 15,000 nodes and 100,000 simulated jobs.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use carbon_kube_model::{CarbonIntensity, Snapshot, UnixSeconds, ZoneId, ZoneRecord, keys};

use crate::zone_map::{NodeView, Resources, ZoneResolution};

pub mod config;
pub mod explain;

pub use config::{
    ConfigError, ConfigErrors, EstimatedData, OnNoGreenNode, PlacementConfig, PlacementConfigRaw,
    StaleData, ThresholdMode,
};
pub use explain::DecisionSummary;

/// What the policy needs to know about a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod annotations.
    pub annotations: BTreeMap<String, String>,
    /// Sum of the pod's container requests (plus overhead).
    pub requests: Resources,
}

/// A node the pod could go to, with its resolved zone.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The node.
    pub node: &'a NodeView,
    /// Its zone, resolved once with [`crate::zone_map::node_zone`].
    pub zone: &'a ZoneResolution,
}

/// Where the threshold applied to a pod comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThresholdSource {
    /// The cluster's configured threshold.
    Cluster,
    /// The pod's `carbon-kube.io/max-intensity` annotation.
    PodAnnotation,
}

/// A pod annotation that could not be read. The pod is still scheduled, with
/// the cluster's settings for that annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationError {
    /// The annotation key.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation {}={:?} ignored: {}",
            self.key, self.value, self.message
        )
    }
}

/// The pod's own placement settings, read from its annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSettings {
    /// The pod opted out of carbon-aware placement.
    pub opt_out: bool,
    /// The threshold that applies to the pod.
    pub threshold: CarbonIntensity,
    /// Where that threshold comes from.
    pub threshold_source: ThresholdSource,
    /// Annotations that were present but unreadable.
    pub annotation_errors: Vec<AnnotationError>,
}

/// Reads the pod's placement annotations.
pub fn pod_settings(pod: &PodView, cfg: &PlacementConfig) -> PodSettings {
    let mut settings = PodSettings {
        opt_out: false,
        threshold: cfg.threshold,
        threshold_source: ThresholdSource::Cluster,
        annotation_errors: Vec::new(),
    };
    if let Some(v) = pod.annotations.get(keys::ANNOTATION_OPT_OUT) {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" => settings.opt_out = true,
            "false" | "" => {}
            _ => settings.annotation_errors.push(AnnotationError {
                key: keys::ANNOTATION_OPT_OUT,
                value: v.clone(),
                message: "expected \"true\" or \"false\"".into(),
            }),
        }
    }
    if let Some(v) = pod.annotations.get(keys::ANNOTATION_MAX_INTENSITY) {
        let text = v.trim();
        let number = text
            .strip_suffix("g/kWh")
            .or_else(|| text.strip_suffix("gCO2eq/kWh"))
            .unwrap_or(text)
            .trim();
        match number
            .parse::<f64>()
            .map_err(|_| "not a number of g/kWh".to_owned())
            .and_then(CarbonIntensity::new)
        {
            Ok(t) => {
                settings.threshold = t;
                settings.threshold_source = ThresholdSource::PodAnnotation;
            }
            Err(message) => settings.annotation_errors.push(AnnotationError {
                key: keys::ANNOTATION_MAX_INTENSITY,
                value: v.clone(),
                message,
            }),
        }
    }
    settings
}

/// The state of one zone's carbon data at decision time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ZoneState {
    /// Data that counts.
    Usable,
    /// Older than the maximum age (or past `valid_until`) and treated neutrally.
    Stale,
    /// An estimate, treated neutrally by configuration.
    EstimatedIgnored,
    /// The snapshot has no record for the zone.
    NoData,
    /// The node's zone is unknown.
    UnknownZone,
}

impl ZoneState {
    /// Whether the zone's intensity takes part in the decision.
    pub const fn is_usable(self) -> bool {
        matches!(self, Self::Usable)
    }
}

/// One distinct zone among the candidates, and what its data said.
#[derive(Clone, Copy, Debug)]
pub struct ZoneEvaluation<'a> {
    /// The zone (`None`: the unknown zone).
    pub zone: Option<&'a ZoneId>,
    /// Its record, when the snapshot has one.
    pub record: Option<&'a ZoneRecord>,
    /// What the decision makes of it.
    pub state: ZoneState,
    /// Age of the record at decision time, seconds.
    pub age_seconds: i64,
    /// Carbon part of the score for nodes in this zone (0–1); set by
    /// [`score_nodes`], 0 after [`filter_nodes`].
    pub carbon_score: f64,
    /// The threshold the filter compared this zone with (set by
    /// [`filter_nodes`] for usable zones; `None` when it had none, e.g. no
    /// forecast to rank against in [`ThresholdMode::ForecastPercentile`]).
    pub limit: Option<CarbonIntensity>,
}

impl ZoneEvaluation<'_> {
    /// The intensity used for the decision, when the data counts.
    pub fn intensity(&self) -> Option<CarbonIntensity> {
        self.record
            .filter(|_| self.state.is_usable())
            .map(|r| r.carbon_intensity)
    }

    /// The zone's name, `unknown` for the unknown zone.
    pub fn name(&self) -> &str {
        self.zone.map_or("unknown", ZoneId::as_str)
    }
}

impl fmt::Display for ZoneEvaluation<'_> {
    /// `zone DE at 120 g/kWh (electricity_maps, 4m old)`, or why it is neutral.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(zone) = self.zone else {
            return f.write_str("zone unknown (neutral)");
        };
        match (self.state, self.record) {
            (ZoneState::NoData, _) | (_, None) => {
                write!(f, "zone {zone} has no carbon data (neutral)")
            }
            (state, Some(r)) => {
                write!(
                    f,
                    "zone {zone} at {} ({}{}, {} old",
                    r.carbon_intensity,
                    r.source,
                    if r.estimated { ", estimated" } else { "" },
                    HumanAge(self.age_seconds)
                )?;
                match state {
                    ZoneState::Stale => f.write_str(", stale: neutral)"),
                    ZoneState::EstimatedIgnored => f.write_str(", estimates ignored: neutral)"),
                    _ => f.write_str(")"),
                }
            }
        }
    }
}

/// Seconds as `45s`, `12m`, `3h`, `2d`.
#[derive(Clone, Copy, Debug)]
pub struct HumanAge(pub i64);

impl fmt::Display for HumanAge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.max(0);
        match s {
            0..120 => write!(f, "{s}s"),
            120..7200 => write!(f, "{}m", s / 60),
            7200..172_800 => write!(f, "{}h", s / 3600),
            _ => write!(f, "{}d", s / 86_400),
        }
    }
}

/// Why carbon was not applied to a decision at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotApplied {
    /// The pod has `carbon-kube.io/opt-out: "true"`.
    OptedOut,
    /// The snapshot is empty.
    NoSnapshot,
    /// No record in the snapshot is fresh: the data feed has stopped.
    AllStale {
        /// Age of the newest record, seconds.
        newest_age_seconds: i64,
    },
    /// None of the candidate nodes' zones has usable data.
    NoCandidateData,
    /// There were no candidates.
    NoCandidates,
}

impl fmt::Display for NotApplied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OptedOut => write!(f, "pod opted out ({}=true)", keys::ANNOTATION_OPT_OUT),
            Self::NoSnapshot => f.write_str("no carbon data loaded: scheduling without carbon"),
            Self::AllStale { newest_age_seconds } => write!(
                f,
                "all carbon data is stale (newest is {} old): scheduling without carbon",
                HumanAge(*newest_age_seconds)
            ),
            Self::NoCandidateData => f.write_str(
                "no candidate node's zone has usable carbon data: scheduling without carbon",
            ),
            Self::NoCandidates => f.write_str("no candidate nodes"),
        }
    }
}

/// What the filter decided for one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The zone is at or below the threshold.
    Green,
    /// The zone is above the threshold: the node is filtered out.
    AboveThreshold,
    /// The zone is above the threshold but every node was, and the filter
    /// failed open: the node is kept.
    KeptByFailOpen,
    /// The zone is neutral (unknown, no data, stale): the node is kept.
    Neutral,
    /// Carbon was not applied to this pod: the node is kept.
    NotApplied,
}

impl Verdict {
    /// Whether the node passes the filter.
    pub const fn passes(self) -> bool {
        !matches!(self, Self::AboveThreshold)
    }
}

/// The filter's decision for one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeVerdict {
    /// Index of the node's zone in [`FilterOutcome::zones`].
    pub zone: usize,
    /// What was decided.
    pub verdict: Verdict,
}

/// Why the filter kept nodes above the threshold, or rejected them all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NoGreenNode {
    /// Every candidate was above the threshold; all were kept.
    FailedOpen {
        /// Index of the cleanest candidate zone.
        cleanest_zone: usize,
    },
    /// Every candidate was above the threshold; all were rejected.
    Rejected {
        /// Index of the cleanest candidate zone.
        cleanest_zone: usize,
    },
}

/// The threshold rule the filter applied to a pod.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThresholdRule {
    /// A fixed threshold: the cluster's ([`ThresholdMode::Absolute`]) or the
    /// pod's `carbon-kube.io/max-intensity` (in every mode).
    Absolute(CarbonIntensity),
    /// The `percentile`-th percentile of the candidate zones' current
    /// intensities, which came to `limit`.
    ClusterPercentile {
        /// Percentile, 0–100.
        percentile: f64,
        /// The intensity it came to.
        limit: CarbonIntensity,
    },
    /// Each zone against the `percentile`-th percentile of its own forecast
    /// window (see [`ZoneEvaluation::limit`]).
    ForecastPercentile {
        /// Percentile, 0–100.
        percentile: f64,
    },
}

impl ThresholdRule {
    /// The one threshold every zone was compared with, when there was one.
    pub const fn shared_limit(&self) -> Option<CarbonIntensity> {
        match *self {
            Self::Absolute(t) | Self::ClusterPercentile { limit: t, .. } => Some(t),
            Self::ForecastPercentile { .. } => None,
        }
    }
}

impl fmt::Display for ThresholdRule {
    /// `250 g/kWh`, `212 g/kWh (the 40th percentile of the candidate zones
    /// now)`, `each zone's 30th forecast percentile`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absolute(t) => write!(f, "{t}"),
            Self::ClusterPercentile { percentile, limit } => write!(
                f,
                "{limit} (the {} percentile of the candidate zones now)",
                Ordinal(*percentile)
            ),
            Self::ForecastPercentile { percentile } => write!(
                f,
                "each zone's {} percentile of its own forecast",
                Ordinal(*percentile)
            ),
        }
    }
}

/// A percentile as `40th`, `21st`, `12.5th`.
struct Ordinal(f64);

impl fmt::Display for Ordinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        if p.fract() != 0.0 {
            return write!(f, "{p}th");
        }
        // p is a whole number in 0..=100 (validated).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = p.clamp(0.0, 100.0) as u32;
        let suffix = match (n % 10, n % 100) {
            (1, r) if r != 11 => "st",
            (2, r) if r != 12 => "nd",
            (3, r) if r != 13 => "rd",
            _ => "th",
        };
        write!(f, "{n}{suffix}")
    }
}

/// The `p`-th percentile (0–100) of `sorted` (ascending), interpolating
/// linearly between neighbours; `None` for no values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let (first, last) = (sorted.first()?, sorted.last()?);
    if sorted.len() == 1 || p <= 0.0 {
        return Some(*first);
    }
    if p >= 100.0 {
        return Some(*last);
    }
    // len is small (zones, forecast points): exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    #[allow(clippy::cast_precision_loss)]
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Fewest forecast values (with the current one) a zone needs to be ranked
/// against its own forecast; with fewer it is neutral.
pub const MIN_FORECAST_POINTS: usize = 6;

/// The zone's current value and its forecast from `now` on, sorted: what
/// [`ThresholdMode::ForecastPercentile`] ranks the current value in. `None`
/// when there are fewer than [`MIN_FORECAST_POINTS`] values.
pub fn forecast_window(record: &ZoneRecord, now: UnixSeconds) -> Option<Vec<f64>> {
    let forecast = record.forecast.as_ref()?;
    let step = i64::from(forecast.step_seconds);
    let mut values: Vec<f64> = std::iter::once(record.carbon_intensity.g_per_kwh())
        .chain(
            forecast
                .points()
                .filter(|p| p.time + step > now)
                .map(|p| p.intensity.g_per_kwh()),
        )
        .collect();
    if values.len() < MIN_FORECAST_POINTS {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values)
}

/// The filter's decision for a pod.
#[derive(Clone, Debug)]
pub struct FilterOutcome<'a> {
    /// The pod's settings.
    pub pod: PodSettings,
    /// The threshold rule applied.
    pub rule: ThresholdRule,
    /// Distinct zones among the candidates.
    pub zones: Vec<ZoneEvaluation<'a>>,
    /// One verdict per candidate, in candidate order.
    pub verdicts: Vec<NodeVerdict>,
    /// Set when carbon was not applied at all.
    pub not_applied: Option<NotApplied>,
    /// Set when no candidate was green enough.
    pub no_green_node: Option<NoGreenNode>,
}

impl FilterOutcome<'_> {
    /// Indices of the candidates that pass.
    pub fn passed(&self) -> impl Iterator<Item = usize> + '_ {
        self.verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.verdict.passes())
            .map(|(i, _)| i)
    }

    /// Indices of the candidates that fail.
    pub fn failed(&self) -> impl Iterator<Item = usize> + '_ {
        self.verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.verdict.passes())
            .map(|(i, _)| i)
    }

    /// Why candidate `i` failed, as shown in `FailedNodes`
    /// (`zone US-TEX-ERCO at 410 g/kWh (electricity_maps, 4m old) is above
    /// the threshold of 250 g/kWh`).
    pub fn failure_message(&self, i: usize) -> String {
        let mut s = String::new();
        if let Some(v) = self.verdicts.get(i) {
            self.write_failure(&mut s, v.zone);
        }
        s
    }

    /// The failure message shared by every failed node of zone `zone_index`.
    pub fn zone_failure_message(&self, zone_index: usize) -> String {
        let mut s = String::new();
        self.write_failure(&mut s, zone_index);
        s
    }

    fn write_failure(&self, s: &mut String, zone_index: usize) {
        let Some(z) = self.zones.get(zone_index) else {
            return;
        };
        let source = match self.pod.threshold_source {
            ThresholdSource::Cluster => "",
            ThresholdSource::PodAnnotation => " set by the pod's carbon-kube.io/max-intensity",
        };
        match (self.rule, z.limit) {
            (ThresholdRule::ForecastPercentile { percentile }, Some(limit)) => {
                let _ = write!(
                    s,
                    "carbon-kube: {z} is above the threshold of {limit} (its {} percentile of its own forecast)",
                    Ordinal(percentile)
                );
            }
            (rule, _) => {
                let _ = write!(
                    s,
                    "carbon-kube: {z} is above the threshold of {rule}{source}"
                );
            }
        }
        if matches!(self.no_green_node, Some(NoGreenNode::Rejected { .. })) {
            s.push_str("; every candidate zone is (onNoGreenNode: reject)");
        }
    }

    /// One line explaining the whole decision, for logs.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(n) = self.not_applied {
            let _ = write!(s, "not applied: {n}");
            return s;
        }
        let passed = self.passed().count();
        let _ = write!(
            s,
            "{passed} of {} nodes pass the threshold of {}",
            self.verdicts.len(),
            self.rule
        );
        match self.no_green_node {
            Some(NoGreenNode::FailedOpen { cleanest_zone }) => {
                let _ = write!(
                    s,
                    "; no zone is below it, failing open (cleanest: {})",
                    self.zones[cleanest_zone]
                );
            }
            Some(NoGreenNode::Rejected { cleanest_zone }) => {
                let _ = write!(
                    s,
                    "; no zone is below it, rejecting all (cleanest: {})",
                    self.zones[cleanest_zone]
                );
            }
            None => {}
        }
        for z in &self.zones {
            let _ = write!(s, "; {z}");
        }
        s
    }
}

/// Whether any record in the snapshot is fresh; if not, why.
fn snapshot_state(
    snapshot: &Snapshot,
    cfg: &PlacementConfig,
    now: UnixSeconds,
) -> Option<NotApplied> {
    if snapshot.zones.is_empty() {
        return Some(NotApplied::NoSnapshot);
    }
    let mut newest = i64::MAX;
    for r in snapshot.zones.values() {
        if r.is_fresh(now, cfg.max_data_age_seconds) {
            return None;
        }
        newest = newest.min(r.age_seconds(now));
    }
    Some(NotApplied::AllStale {
        newest_age_seconds: newest,
    })
}

fn evaluate_zone<'a>(
    zone: Option<&'a ZoneId>,
    snapshot: &'a Snapshot,
    cfg: &PlacementConfig,
    now: UnixSeconds,
) -> ZoneEvaluation<'a> {
    let record = zone.and_then(|z| snapshot.get(z));
    let (state, age) = match (zone, record) {
        (None, _) => (ZoneState::UnknownZone, 0),
        (Some(_), None) => (ZoneState::NoData, 0),
        (Some(_), Some(r)) => {
            let age = r.age_seconds(now);
            let state = if !r.is_fresh(now, cfg.max_data_age_seconds)
                && cfg.stale_data == StaleData::Neutral
            {
                ZoneState::Stale
            } else if r.estimated && cfg.estimated_data == EstimatedData::Neutral {
                ZoneState::EstimatedIgnored
            } else {
                ZoneState::Usable
            };
            (state, age)
        }
    };
    ZoneEvaluation {
        zone,
        record,
        state,
        age_seconds: age,
        carbon_score: 0.0,
        limit: None,
    }
}

/// Why carbon cannot decide for this pod at all (no candidates, opted out,
/// no usable snapshot, no candidate zone with usable data), if it cannot.
/// Shared by [`filter_nodes`] and [`score_nodes`] so both agree.
fn why_not_applied(
    candidates: &[Candidate<'_>],
    settings: &PodSettings,
    zones: &[ZoneEvaluation<'_>],
    snapshot: &Snapshot,
    cfg: &PlacementConfig,
    now: UnixSeconds,
) -> Option<NotApplied> {
    if candidates.is_empty() {
        Some(NotApplied::NoCandidates)
    } else if settings.opt_out {
        Some(NotApplied::OptedOut)
    } else if let Some(n) = snapshot_state(snapshot, cfg, now) {
        Some(n)
    } else if !zones.iter().any(|z| z.state.is_usable()) {
        Some(NotApplied::NoCandidateData)
    } else {
        None
    }
}

/// Whether two zones are the same value in memory (then also equal): lets
/// callers that share one resolution among the nodes of a zone, like the
/// extender's node cache, skip comparing zone ids' text for most nodes.
fn same_ref(a: Option<&ZoneId>, b: Option<&ZoneId>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Evaluates each distinct zone once; returns the zones and, per candidate,
/// the index of its zone.
fn evaluate_zones<'a>(
    candidates: &[Candidate<'a>],
    snapshot: &'a Snapshot,
    cfg: &PlacementConfig,
    now: UnixSeconds,
) -> (Vec<ZoneEvaluation<'a>>, Vec<usize>) {
    let mut zones: Vec<ZoneEvaluation<'a>> = Vec::new();
    let mut index = Vec::with_capacity(candidates.len());
    let mut last: Option<(Option<&ZoneId>, usize)> = None;
    for c in candidates {
        let zone = c.zone.zone.as_ref();
        // The same value (a pointer comparison) before the same text, and
        // the previous node's zone first: nodes often come grouped by zone.
        let known = match last {
            Some((z, i)) if same_ref(z, zone) => Some(i),
            _ => zones.iter().position(|e| same_ref(e.zone, zone)),
        }
        .or_else(|| last.filter(|(z, _)| *z == zone).map(|(_, i)| i))
        .or_else(|| zones.iter().position(|e| e.zone == zone));
        let i = known.unwrap_or_else(|| {
            zones.push(evaluate_zone(zone, snapshot, cfg, now));
            zones.len() - 1
        });
        last = Some((zone, i));
        index.push(i);
    }
    (zones, index)
}

fn cleanest_usable(zones: &[ZoneEvaluation<'_>]) -> Option<usize> {
    zones
        .iter()
        .enumerate()
        .filter_map(|(i, z)| z.intensity().map(|v| (i, v)))
        .min_by(|a, b| a.1.g_per_kwh().total_cmp(&b.1.g_per_kwh()))
        .map(|(i, _)| i)
}

/// Decides which candidates the pod may use.
pub fn filter_nodes<'a>(
    pod: &PodView,
    candidates: &[Candidate<'a>],
    snapshot: &'a Snapshot,
    cfg: &PlacementConfig,
    now: UnixSeconds,
) -> FilterOutcome<'a> {
    let settings = pod_settings(pod, cfg);
    let (mut zones, zone_of) = evaluate_zones(candidates, snapshot, cfg, now);
    let not_applied = why_not_applied(candidates, &settings, &zones, snapshot, cfg, now);
    if not_applied.is_some() {
        let verdicts = zone_of
            .iter()
            .map(|&zone| NodeVerdict {
                zone,
                verdict: Verdict::NotApplied,
            })
            .collect();
        return FilterOutcome {
            rule: ThresholdRule::Absolute(settings.threshold),
            pod: settings,
            zones,
            verdicts,
            not_applied,
            no_green_node: None,
        };
    }
    let rule = threshold_rule(&settings, &mut zones, cfg, now);
    let mut any_pass = false;
    let mut verdicts: Vec<NodeVerdict> = zone_of
        .iter()
        .map(|&zone| {
            let z = &zones[zone];
            let verdict = match (z.intensity(), z.limit) {
                (Some(v), Some(limit)) if v.g_per_kwh() > limit.g_per_kwh() => {
                    Verdict::AboveThreshold
                }
                (Some(_), Some(_)) => Verdict::Green,
                // No data, or nothing to rank it against: neutral.
                _ => Verdict::Neutral,
            };
            any_pass |= verdict.passes();
            NodeVerdict { zone, verdict }
        })
        .collect();
    let mut no_green_node = None;
    if !any_pass {
        // Every candidate is in a zone with usable data above the threshold.
        let cleanest_zone = cleanest_usable(&zones).unwrap_or(0);
        match cfg.on_no_green_node {
            OnNoGreenNode::FailOpen => {
                for v in &mut verdicts {
                    v.verdict = Verdict::KeptByFailOpen;
                }
                no_green_node = Some(NoGreenNode::FailedOpen { cleanest_zone });
            }
            OnNoGreenNode::Reject => {
                no_green_node = Some(NoGreenNode::Rejected { cleanest_zone });
            }
        }
    }
    FilterOutcome {
        pod: settings,
        rule,
        zones,
        verdicts,
        not_applied: None,
        no_green_node,
    }
}

/// Decides the threshold rule for the pod and sets each usable zone's
/// [`ZoneEvaluation::limit`].
fn threshold_rule(
    settings: &PodSettings,
    zones: &mut [ZoneEvaluation<'_>],
    cfg: &PlacementConfig,
    now: UnixSeconds,
) -> ThresholdRule {
    let mode = match settings.threshold_source {
        ThresholdSource::PodAnnotation => ThresholdMode::Absolute,
        ThresholdSource::Cluster => cfg.threshold_mode,
    };
    let percentile = cfg.threshold_percentile;
    let rule = match mode {
        ThresholdMode::Absolute => ThresholdRule::Absolute(settings.threshold),
        ThresholdMode::ClusterPercentile => {
            let mut current: Vec<f64> = zones
                .iter()
                .filter_map(ZoneEvaluation::intensity)
                .map(CarbonIntensity::g_per_kwh)
                .collect();
            current.sort_by(f64::total_cmp);
            let limit = self::percentile(&current, percentile)
                .and_then(|v| CarbonIntensity::new(v).ok())
                .unwrap_or(settings.threshold);
            ThresholdRule::ClusterPercentile { percentile, limit }
        }
        ThresholdMode::ForecastPercentile => ThresholdRule::ForecastPercentile { percentile },
    };
    for z in zones.iter_mut().filter(|z| z.state.is_usable()) {
        z.limit = match rule {
            ThresholdRule::ForecastPercentile { percentile } => z
                .record
                .and_then(|r| forecast_window(r, now))
                .and_then(|w| self::percentile(&w, percentile))
                .and_then(|v| CarbonIntensity::new(v).ok()),
            other => other.shared_limit(),
        };
    }
    rule
}

/// One candidate's score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeScore {
    /// The score kube-scheduler sees, 0–10.
    pub score: u8,
    /// Index of the node's zone in [`ScoreOutcome::zones`].
    pub zone: usize,
    /// Free-capacity part, 0–1 (0 when carbon was not applied).
    pub performance: f64,
}

/// The scores of every candidate, with the reasons.
#[derive(Clone, Debug)]
pub struct ScoreOutcome<'a> {
    /// The pod's settings.
    pub pod: PodSettings,
    /// Distinct zones among the candidates, with their carbon parts.
    pub zones: Vec<ZoneEvaluation<'a>>,
    /// One score per candidate, in candidate order.
    pub scores: Vec<NodeScore>,
    /// Set when carbon was not applied: every score is 0.
    pub not_applied: Option<NotApplied>,
    /// The weights used.
    pub weights: (u32, u32),
}

impl ScoreOutcome<'_> {
    /// Why candidate `i` got its score, for logs.
    pub fn reason(&self, i: usize) -> String {
        let mut s = String::new();
        if let Some(n) = self.not_applied {
            let _ = write!(s, "0: {n}");
            return s;
        }
        if let Some(score) = self.scores.get(i) {
            let z = &self.zones[score.zone];
            let _ = write!(
                s,
                "{}: carbon {:.2} × {} + free capacity {:.2} × {}; {z}",
                score.score, z.carbon_score, self.weights.0, score.performance, self.weights.1
            );
        }
        s
    }
}

/// Candidate zones closer than this (g/kWh) do not get the full carbon
/// range: the carbon part falls by `distance / 50` instead of spanning 0–1.
pub const MIN_CARBON_SPREAD_G_PER_KWH: f64 = 50.0;

/// Share of the node's allocatable CPU and memory left free once the pod is
/// placed, averaged over the two (0–1).
pub fn free_capacity(node: &NodeView, pod: &Resources) -> f64 {
    fn share(alloc: i64, used: i64) -> f64 {
        if alloc <= 0 {
            return 0.0;
        }
        // Quantities are far below 2^53: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let free = (alloc.saturating_sub(used)) as f64 / alloc as f64;
        free.clamp(0.0, 1.0)
    }
    let used = node.requested.saturating_add(*pod);
    (share(node.allocatable.cpu_millis, used.cpu_millis)
        + share(node.allocatable.memory_bytes, used.memory_bytes))
        / 2.0
}

/// `raw.round().clamp(0.0, 10.0) as u8` (half away from zero), without
/// `f64::round`, which is a library call per node on baseline x86-64.
fn round_score(raw: f64) -> u8 {
    // NaN stays NaN here and becomes 0 below, as with `round`.
    let r = raw.clamp(0.0, 10.0);
    // r is in 0..=10: the cast truncates, and r - t is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let t = r as u8;
    if r - f64::from(t) >= 0.5 { t + 1 } else { t }
}

/// Scores the candidates 0–10 (see the module documentation).
pub fn score_nodes<'a>(
    pod: &PodView,
    candidates: &[Candidate<'a>],
    snapshot: &'a Snapshot,
    cfg: &PlacementConfig,
    now: UnixSeconds,
) -> ScoreOutcome<'a> {
    let settings = pod_settings(pod, cfg);
    let (mut zones, zone_of) = evaluate_zones(candidates, snapshot, cfg, now);
    let weights = (cfg.carbon_weight, cfg.performance_weight);
    let not_applied = why_not_applied(candidates, &settings, &zones, snapshot, cfg, now);
    if not_applied.is_some() {
        let scores = zone_of
            .iter()
            .map(|&zone| NodeScore {
                score: 0,
                zone,
                performance: 0.0,
            })
            .collect();
        return ScoreOutcome {
            pod: settings,
            zones,
            scores,
            not_applied,
            weights,
        };
    }
    // Carbon part: 1 for the cleanest candidate zone, falling linearly with
    // the distance in g/kWh to 0 at the dirtiest, or at MIN_CARBON_SPREAD
    // above the cleanest when the zones are closer than that (so a 2 g/kWh
    // difference does not count like a 200 g/kWh one).
    let (cleanest, dirtiest) = zones
        .iter()
        .filter_map(ZoneEvaluation::intensity)
        .map(CarbonIntensity::g_per_kwh)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let spread = (dirtiest - cleanest).max(MIN_CARBON_SPREAD_G_PER_KWH);
    let mut lowest = 1.0f64;
    for z in &mut zones {
        if let Some(v) = z.intensity() {
            z.carbon_score = (1.0 - (v.g_per_kwh() - cleanest) / spread).clamp(0.0, 1.0);
            lowest = lowest.min(z.carbon_score);
        }
    }
    // Neutral zones sit halfway between the best and the worst usable zone.
    let neutral = f64::midpoint(1.0, lowest);
    for z in &mut zones {
        if !z.state.is_usable() {
            z.carbon_score = neutral;
        }
    }
    let total_weight = f64::from(cfg.carbon_weight + cfg.performance_weight).max(1.0);
    let cw = f64::from(cfg.carbon_weight);
    let pw = f64::from(cfg.performance_weight);
    let scores = zone_of
        .iter()
        .zip(candidates)
        .map(|(&zone, c)| {
            let performance = if pw > 0.0 {
                free_capacity(c.node, &pod.requests)
            } else {
                0.0
            };
            let raw = (cw * zones[zone].carbon_score + pw * performance) / total_weight * 10.0;
            let score = round_score(raw);
            NodeScore {
                score,
                zone,
                performance,
            }
        })
        .collect();
    ScoreOutcome {
        pod: settings,
        zones,
        scores,
        not_applied: None,
        weights,
    }
}

#[cfg(test)]
pub(crate) mod tests;
