//! Carbon accounting: what each pod emitted over one interval, split into
//! operational, idle and embodied emissions, with a data-quality label, and
//! what a carbon-agnostic scheduler would have caused instead.
//!
//! For every pod on a node, over `[from, to)`:
//!
//! - **energy** (its own, above idle): Kepler's measured joules for the
//!   interval when given ([`DataQuality::Measured`]), times the PUE; else the
//!   Cloud Carbon Footprint model of [`crate::energy`] — the same coefficients
//!   the simulator uses — from the pod's CPU usage when known, else its CPU
//!   request at CCF's default utilisation, plus memory power for its memory
//!   request ([`DataQuality::Modelled`]);
//! - **idle**: the node's idle power ([`EnergyModel::idle_kw`] for its
//!   allocatable vCPUs) allocated to pods in proportion to their CPU requests
//!   (`request / allocatable`); the part no pod requested is reported per
//!   node as unallocated, never spread silently;
//! - **operational grams** = (energy + idle) × the intensity of the node's
//!   grid zone over the same interval ([`interval_intensity`]: the
//!   snapshot's forecast/actual steps covering the interval, else its current
//!   value). Location-based; the record's signal (average, or marginal where
//!   the zone only has a marginal signal) is carried on the result;
//! - **embodied grams**, per the SCI specification's `M = TE × (TiR / EL) ×
//!   (RR / ToR)`: the node's embodied emissions per vCPU-hour
//!   ([`EMBODIED_G_PER_VCPU_HOUR`], derived from Cloud Carbon Footprint's
//!   coefficients) × the node's vCPUs × the interval × the pod's share of the
//!   node (the same request share as idle);
//! - **counterfactual**: for a pod the gate controller deferred by `d`
//!   seconds, the same energy at the zone's intensity `d` seconds earlier
//!   (when it would have started without deferral), from the controller's
//!   own [`IntensityHistory`]; for a pod placed by Carbon-Kube, the same
//!   energy at the capacity-weighted mean intensity of the cluster's nodes
//!   over the same interval (the expectation of a placement that ignores
//!   carbon). Both are approximations: see `docs/accounting.md`.
//!
//! Nothing here reads a clock or does IO: the interval, the snapshot, the
//! history and plain views of nodes and pods are arguments.
//!
//! Missing data never drops a pod: no intensity for its zone → its energy is
//! counted (as `unknown_intensity_joules`) and its grams are zero; no node →
//! no idle or embodied share.

use std::collections::{BTreeMap, HashMap};

use carbon_kube_model::accounting::{DataQuality, DayUsage, USAGE_HISTORY_DAYS, UsageDocument};
use carbon_kube_model::accounting_details::{DayDetails, DetailsDocument, HourIntensity, Savings};
use carbon_kube_model::{Signal, Snapshot, UnixSeconds, ZoneId, ZoneRecord};

use crate::energy::EnergyModel;
use crate::zone_map::Resources;

/// Embodied emissions per vCPU-hour of server capacity, grams CO2eq.
///
/// Cloud Carbon Footprint's embodied coefficients for AWS
/// (`cloud-carbon-coefficients`, `output/coefficients-aws-embodied.csv`,
/// Apache-2.0) give each instance type's platform total (kgCO2eq, base server
/// plus additional memory, storage, CPUs and GPUs). CCF spreads it over a
/// 4-year life and over the platform's vCPUs (`data/aws-instances.csv`,
/// "Platform Total Number of vCPU"). The mean over the 621 instance types of
/// `total × 1000 / (4 × 8760 h) / platform vCPUs` is 0.795 g per vCPU-hour
/// (checked against the data by a test).
pub const EMBODIED_G_PER_VCPU_HOUR: f64 = 0.795;

/// A calibration of the modelled energy to measured energy: the factor that
/// makes the CCF model's above-idle energy equal, in total, the RAPL package
/// and DRAM energy above idle of the Teads AWS EC2 dataset (597 non-GPU
/// instance types at 10, 50 and 100 % load, as published in Cloud Carbon
/// Footprint's `cloud-carbon-coefficients`, `data/aws-instances.csv`,
/// Apache-2.0). The model gives 0.345 of the measured energy; 1 / 0.345 =
/// 2.90 (recomputed from the data by the accounting crate's `model_error`
/// test). Opt-in ([`AccountingConfig::modelled_energy_scale`], default 1):
/// it removes the fleet-wide bias on that data, not the per-instance error
/// (see `docs/accounting.md`).
pub const TEADS_AWS_MODELLED_ENERGY_SCALE: f64 = 2.90;

/// Joules per kWh.
const JOULES_PER_KWH: f64 = 3.6e6;

/// Settings of the accounting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AccountingConfig {
    /// Power model (shared with the simulator and the migrator).
    pub energy: EnergyModel,
    /// Embodied emissions per vCPU-hour of node capacity, grams.
    pub embodied_g_per_vcpu_hour: f64,
    /// Factor on the *modelled* energy of pods (CPU above idle and memory;
    /// not idle power, not measured energy): 1 uses the CCF model as is;
    /// [`TEADS_AWS_MODELLED_ENERGY_SCALE`] calibrates it to measured energy.
    pub modelled_energy_scale: f64,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            energy: EnergyModel::default(),
            embodied_g_per_vcpu_hour: EMBODIED_G_PER_VCPU_HOUR,
            modelled_energy_scale: 1.0,
        }
    }
}

/// A node as the accounting sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeUse {
    /// Node name.
    pub name: String,
    /// Its grid zone, when known.
    pub zone: Option<ZoneId>,
    /// `status.allocatable`.
    pub allocatable: Resources,
}

/// The controller that owns a pod (kind and name; `Pod` and the pod's name
/// for a bare pod). ReplicaSets of Deployments are reported as their
/// Deployment by the controller, which knows the naming.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    /// Kind, e.g. `Deployment`, `StatefulSet`, `Job`, `Pod`.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// A pod running over the interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodUse {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Its workload.
    pub workload: Workload,
    /// Node it runs on.
    pub node: String,
    /// Effective requests (CPU millicores, memory bytes).
    pub requests: Resources,
    /// Mean CPU usage over the interval, cores, when known.
    pub cpu_usage_cores: Option<f64>,
    /// Energy Kepler measured for the pod over the interval, joules (IT
    /// power, before PUE), when Kepler runs.
    pub measured_joules: Option<f64>,
    /// Seconds the gate controller held the pod after its creation (its
    /// `released-at` minus its creation time), when it was deferred.
    pub deferred_seconds: Option<i64>,
    /// Whether Carbon-Kube placed the pod (its zone was chosen by carbon).
    pub carbon_placed: bool,
}

/// A zone's intensity over the interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZoneInterval {
    /// Mean intensity over the interval, g/kWh.
    pub g_per_kwh: f64,
    /// The signal of the snapshot record.
    pub signal: Signal,
    /// Whether the record was older than the data age limit and no forecast
    /// step covered the interval (the value was still used).
    pub stale: bool,
}

/// The counterfactual of one pod over the interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PodSavings {
    /// Deferral: the same energy at the intensity `deferred_seconds` earlier.
    pub deferred: Option<Savings>,
    /// Placement: the same energy at the cluster's mean intensity.
    pub placed: Option<Savings>,
}

/// What one pod emitted over the interval.
#[derive(Clone, Debug, PartialEq)]
pub struct PodAccount {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Its workload.
    pub workload: Workload,
    /// Its own energy (above idle, times PUE), joules.
    pub energy_joules: f64,
    /// Its share of the node's idle energy, joules.
    pub idle_joules: f64,
    /// How its own energy was obtained.
    pub quality: DataQuality,
    /// The intensity used, `None` when its zone had none.
    pub intensity: Option<ZoneInterval>,
    /// Own energy × intensity, grams CO2eq.
    pub operational_grams: f64,
    /// Idle share × intensity, grams CO2eq.
    pub idle_grams: f64,
    /// Embodied share (SCI `M`), grams CO2eq.
    pub embodied_grams: f64,
    /// Counterfactuals, when the pod was deferred or placed by Carbon-Kube.
    pub savings: PodSavings,
}

/// A node's idle energy and embodied emissions that no pod requested.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRemainder {
    /// Node name.
    pub node: String,
    /// Unrequested idle energy, joules.
    pub idle_joules: f64,
    /// Its grams at the zone's intensity (0 when unknown).
    pub idle_grams: f64,
    /// Unrequested embodied emissions, grams.
    pub embodied_grams: f64,
}

/// The interval's accounting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntervalAccount {
    /// Start of the interval.
    pub from: UnixSeconds,
    /// End of the interval.
    pub to: UnixSeconds,
    /// One entry per pod.
    pub pods: Vec<PodAccount>,
    /// One entry per node with unrequested capacity.
    pub unallocated: Vec<NodeRemainder>,
}

/// The mean intensity of `record` over `[from, to)`: the forecast steps
/// (the poller stores actuals and forecasts on one grid) that cover the
/// interval, time-weighted, the record's current value for the rest.
/// `stale` is set when the current value was needed and is older than
/// `max_age_seconds` at `to` (it is still used: an old intensity is a better
/// estimate than none, and the flag is counted).
pub fn interval_intensity(
    record: &ZoneRecord,
    from: UnixSeconds,
    to: UnixSeconds,
    max_age_seconds: i64,
) -> ZoneInterval {
    let current = record.carbon_intensity.g_per_kwh();
    if to <= from {
        return ZoneInterval {
            g_per_kwh: record
                .forecast
                .as_ref()
                .and_then(|f| f.value_at(from))
                .map_or(current, |v| v.g_per_kwh()),
            signal: record.signal,
            stale: false,
        };
    }
    let mut covered = 0.0;
    let mut integral = 0.0;
    if let Some(f) = &record.forecast {
        let step = i64::from(f.step_seconds.max(1));
        let mut t = from;
        while t < to {
            let idx = (t - f.start).div_euclid(step);
            let step_end = (f.start + (idx + 1) * step).min(to);
            let seg = (step_end - t) as f64;
            if let Some(v) = f.value_at(t) {
                covered += seg;
                integral += seg * v.g_per_kwh();
            }
            t = step_end.max(t + 1);
        }
    }
    let total = (to - from) as f64;
    let rest = (total - covered).max(0.0);
    let stale = rest > 0.0 && !record.is_fresh(to, max_age_seconds);
    ZoneInterval {
        g_per_kwh: (integral + rest * current) / total,
        signal: record.signal,
        stale,
    }
}

/// The intensity of every zone in `zones` over `[from, to)` from `snapshot`;
/// zones without a record are absent.
pub fn zone_intensities<'a>(
    snapshot: &Snapshot,
    zones: impl IntoIterator<Item = &'a ZoneId>,
    from: UnixSeconds,
    to: UnixSeconds,
    max_age_seconds: i64,
) -> BTreeMap<ZoneId, ZoneInterval> {
    zones
        .into_iter()
        .filter_map(|z| {
            snapshot
                .get(z)
                .map(|r| (z.clone(), interval_intensity(r, from, to, max_age_seconds)))
        })
        .collect()
}

/// Hourly intensities per zone as the controller observed them, bounded to
/// `keep_hours`: what the deferral counterfactual looks back into.
#[derive(Clone, Debug, PartialEq)]
pub struct IntensityHistory {
    zones: BTreeMap<ZoneId, BTreeMap<UnixSeconds, HourIntensity>>,
    keep_hours: i64,
}

impl Default for IntensityHistory {
    fn default() -> Self {
        Self::new(72)
    }
}

impl IntensityHistory {
    /// An empty history keeping `keep_hours` hours per zone.
    pub fn new(keep_hours: i64) -> Self {
        Self {
            zones: BTreeMap::new(),
            keep_hours: keep_hours.max(1),
        }
    }

    /// Records that `zone` had `g_per_kwh` over `[from, to)`, split at hour
    /// boundaries; drops hours older than the bound (relative to `to`).
    pub fn observe(&mut self, zone: &ZoneId, from: UnixSeconds, to: UnixSeconds, g_per_kwh: f64) {
        if to <= from || !g_per_kwh.is_finite() {
            return;
        }
        let hours = self.zones.entry(zone.clone()).or_default();
        let mut t = from;
        while t < to {
            let hour = t.div_euclid(3600) * 3600;
            let end = (hour + 3600).min(to);
            let h = hours.entry(hour).or_insert(HourIntensity {
                hour_start: hour,
                ..HourIntensity::default()
            });
            let seg = (end - t) as f64;
            h.g_per_kwh_seconds += g_per_kwh * seg;
            h.seconds += seg;
            t = end;
        }
        let oldest = to.div_euclid(3600) * 3600 - self.keep_hours * 3600;
        hours.retain(|start, _| *start >= oldest);
    }

    /// The mean intensity of `zone` over `[from, to)`, from the hours that
    /// overlap it, if at least half of the interval falls in observed hours.
    pub fn mean(&self, zone: &ZoneId, from: UnixSeconds, to: UnixSeconds) -> Option<f64> {
        if to <= from {
            return None;
        }
        let hours = self.zones.get(zone)?;
        let mut covered = 0.0;
        let mut integral = 0.0;
        for (start, h) in hours.range(from.div_euclid(3600) * 3600..to) {
            let overlap = ((start + 3600).min(to) - (*start).max(from)) as f64;
            if overlap <= 0.0 {
                continue;
            }
            if let Some(mean) = h.mean() {
                covered += overlap;
                integral += overlap * mean;
            }
        }
        (covered * 2.0 >= (to - from) as f64).then(|| integral / covered)
    }

    /// The history as stored in the details document.
    pub fn to_document(&self) -> BTreeMap<String, Vec<HourIntensity>> {
        self.zones
            .iter()
            .map(|(z, h)| (z.as_str().to_owned(), h.values().copied().collect()))
            .collect()
    }

    /// Restores a history from the details document, skipping zones that do
    /// not parse (reported by name).
    pub fn from_document(
        doc: &BTreeMap<String, Vec<HourIntensity>>,
        keep_hours: i64,
    ) -> (Self, Vec<String>) {
        let mut history = Self::new(keep_hours);
        let mut bad = Vec::new();
        for (zone, hours) in doc {
            match ZoneId::parse(zone) {
                Ok(z) => {
                    let entry = history.zones.entry(z).or_default();
                    for h in hours {
                        if h.seconds.is_finite()
                            && h.g_per_kwh_seconds.is_finite()
                            && h.seconds > 0.0
                        {
                            entry.insert(h.hour_start, *h);
                        }
                    }
                }
                Err(e) => bad.push(format!("zoneHistory[{zone:?}]: {e}")),
            }
        }
        (history, bad)
    }
}

fn cores(millis: i64) -> f64 {
    millis.max(0) as f64 / 1000.0
}

fn gigabytes(bytes: i64) -> f64 {
    bytes.max(0) as f64 / 1e9
}

/// Accounts every pod over `[from, to)`. `intensities` are the zones'
/// intensities over the interval ([`zone_intensities`]); `history` gives
/// past intensities for the deferral counterfactual.
pub fn account_interval(
    config: &AccountingConfig,
    nodes: &[NodeUse],
    pods: &[PodUse],
    intensities: &BTreeMap<ZoneId, ZoneInterval>,
    history: &IntensityHistory,
    from: UnixSeconds,
    to: UnixSeconds,
) -> IntervalAccount {
    let seconds = (to - from).max(0) as f64;
    let model = &config.energy;
    let node_by_name: HashMap<&str, &NodeUse> =
        nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    // Requested CPU per node: the share denominator is the larger of the
    // allocatable CPU and the requests (overcommitted nodes split it all).
    let mut requested: HashMap<&str, i64> = HashMap::new();
    for p in pods {
        *requested.entry(p.node.as_str()).or_default() += p.requests.cpu_millis.max(0);
    }
    let denominator = |n: &NodeUse| -> f64 {
        let req = requested.get(n.name.as_str()).copied().unwrap_or(0);
        n.allocatable.cpu_millis.max(req).max(0) as f64
    };
    let intensity_of = |n: &NodeUse| n.zone.as_ref().and_then(|z| intensities.get(z));
    // Capacity-weighted mean intensity of the cluster (placement baseline).
    let (mut w, mut wi) = (0.0, 0.0);
    for n in nodes {
        if let Some(i) = intensity_of(n) {
            let c = cores(n.allocatable.cpu_millis);
            w += c;
            wi += c * i.g_per_kwh;
        }
    }
    let cluster_mean = (w > 0.0).then(|| wi / w);

    let mut pods_out = Vec::with_capacity(pods.len());
    let mut shares: HashMap<&str, f64> = HashMap::new();
    for p in pods {
        let node = node_by_name.get(p.node.as_str()).copied();
        let (energy_joules, quality) = match p.measured_joules {
            Some(j) if j.is_finite() && j >= 0.0 => (j * model.pue, DataQuality::Measured),
            _ => {
                let busy = p
                    .cpu_usage_cores
                    .filter(|u| u.is_finite() && *u >= 0.0)
                    .unwrap_or_else(|| cores(p.requests.cpu_millis) * model.cpu_utilisation);
                let kw = model.dynamic_cpu_kw(busy)
                    + model.memory_kw(gigabytes(p.requests.memory_bytes));
                (
                    kw * 1000.0 * seconds * config.modelled_energy_scale,
                    DataQuality::Modelled,
                )
            }
        };
        let (share, node_vcpus) = match node {
            Some(n) => {
                let d = denominator(n);
                let share = if d > 0.0 {
                    p.requests.cpu_millis.max(0) as f64 / d
                } else {
                    0.0
                };
                *shares.entry(n.name.as_str()).or_default() += share;
                (share, cores(n.allocatable.cpu_millis))
            }
            None => (0.0, 0.0),
        };
        let idle_joules = model.idle_kw(node_vcpus) * 1000.0 * seconds * share;
        let embodied_grams =
            config.embodied_g_per_vcpu_hour * node_vcpus * seconds / 3600.0 * share;
        let intensity = node.and_then(intensity_of).copied();
        let g = intensity.map_or(0.0, |i| i.g_per_kwh);
        let operational_grams = energy_joules / JOULES_PER_KWH * g;
        let idle_grams = idle_joules / JOULES_PER_KWH * g;
        let kwh = (energy_joules + idle_joules) / JOULES_PER_KWH;
        let actual = operational_grams + idle_grams;
        let mut savings = PodSavings::default();
        if let (Some(_), Some(zone)) = (intensity, node.and_then(|n| n.zone.as_ref())) {
            if let Some(d) = p.deferred_seconds.filter(|d| *d > 0)
                && let Some(then) = history.mean(zone, from - d, to - d)
            {
                savings.deferred = Some(Savings {
                    actual_grams: actual,
                    counterfactual_grams: kwh * then,
                    intervals: 1,
                });
            }
            if p.carbon_placed
                && let Some(mean) = cluster_mean
            {
                savings.placed = Some(Savings {
                    actual_grams: actual,
                    counterfactual_grams: kwh * mean,
                    intervals: 1,
                });
            }
        }
        pods_out.push(PodAccount {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            workload: p.workload.clone(),
            energy_joules,
            idle_joules,
            quality,
            intensity,
            operational_grams,
            idle_grams,
            embodied_grams,
            savings,
        });
    }
    let unallocated = nodes
        .iter()
        .filter_map(|n| {
            let rest = (1.0 - shares.get(n.name.as_str()).copied().unwrap_or(0.0)).max(0.0);
            let vcpus = cores(n.allocatable.cpu_millis);
            if rest <= 0.0 || vcpus <= 0.0 {
                return None;
            }
            let idle_joules = model.idle_kw(vcpus) * 1000.0 * seconds * rest;
            let g = intensity_of(n).map_or(0.0, |i| i.g_per_kwh);
            Some(NodeRemainder {
                node: n.name.clone(),
                idle_joules,
                idle_grams: idle_joules / JOULES_PER_KWH * g,
                embodied_grams: config.embodied_g_per_vcpu_hour * vcpus * seconds / 3600.0 * rest,
            })
        })
        .collect();
    IntervalAccount {
        from,
        to,
        pods: pods_out,
        unallocated,
    }
}

/// Start of the UTC day containing `t`.
pub fn day_start(t: UnixSeconds) -> UnixSeconds {
    t.div_euclid(86_400) * 86_400
}

fn day_entry<T: Default>(
    days: &mut Vec<T>,
    day: UnixSeconds,
    start: impl Fn(&T) -> UnixSeconds,
    init: impl Fn(&mut T),
) -> usize {
    match days.binary_search_by_key(&day, &start) {
        Ok(i) => i,
        Err(i) => {
            let mut d = T::default();
            init(&mut d);
            days.insert(i, d);
            i
        }
    }
}

fn trim<T>(days: &mut Vec<T>) {
    if days.len() > USAGE_HISTORY_DAYS {
        let extra = days.len() - USAGE_HISTORY_DAYS;
        days.drain(..extra);
    }
}

/// Adds an interval's accounting to the usage document (per namespace and
/// UTC day of the interval's midpoint) and the details document, keeping
/// [`USAGE_HISTORY_DAYS`] days.
pub fn fold_into_documents(
    account: &IntervalAccount,
    usage: &mut UsageDocument,
    details: &mut DetailsDocument,
) {
    let day = day_start(account.from + (account.to - account.from) / 2);
    for p in &account.pods {
        let days = usage.namespaces.entry(p.namespace.clone()).or_default();
        let i = day_entry(
            days,
            day,
            |d: &DayUsage| d.day_start,
            |d| {
                d.day_start = day;
                d.quality = DataQuality::Measured;
            },
        );
        let d = &mut days[i];
        d.energy_joules += p.energy_joules + p.idle_joules;
        d.operational_grams += p.operational_grams;
        d.idle_grams += p.idle_grams;
        d.embodied_grams += p.embodied_grams;
        // Idle and embodied are always modelled; the label follows the
        // pod's own energy, which is what can be measured.
        d.quality = d.quality.max(p.quality);
        trim(days);

        let days = details.namespaces.entry(p.namespace.clone()).or_default();
        let i = day_entry(
            days,
            day,
            |d: &DayDetails| d.day_start,
            |d| d.day_start = day,
        );
        let d = &mut days[i];
        match p.quality {
            DataQuality::Measured => d.measured_joules += p.energy_joules,
            DataQuality::Modelled => d.modelled_joules += p.energy_joules,
        }
        match p.intensity {
            None => d.unknown_intensity_joules += p.energy_joules + p.idle_joules,
            Some(i) if i.signal == Signal::Marginal => {
                d.marginal_grams += p.operational_grams + p.idle_grams;
            }
            Some(_) => {}
        }
        if let Some(s) = &p.savings.deferred {
            d.deferred.add(s);
        }
        if let Some(s) = &p.savings.placed {
            d.placed.add(s);
        }
        trim(days);
    }
    if !account.unallocated.is_empty() {
        let days = &mut details.unallocated;
        let i = day_entry(days, day, |d: &DayUsage| d.day_start, |d| d.day_start = day);
        let d = &mut days[i];
        for n in &account.unallocated {
            d.energy_joules += n.idle_joules;
            d.idle_grams += n.idle_grams;
            d.embodied_grams += n.embodied_grams;
        }
        trim(days);
    }
}

#[cfg(test)]
mod tests;
