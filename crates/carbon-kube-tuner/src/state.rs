//! The state a controller can see, as numbers for a learned policy: what
//! PPO maps to knob settings at each decision epoch.
//!
//! [`observe_epoch`] is a pure function of what the controllers have seen
//! at a decision epoch of a replay ([`EpochView`]): the zones' intensities
//! over the last [`STATE_HOURS`] hours, the forecast issued now (with the
//! replay's forecast errors: a controller sees a forecast, not the future),
//! the work that arrived in those hours, the work held back now (the gate
//! controller's gated pods), the room in use now, and the time of day.
//! [`observe`] is the older view from the start of an episode (its first
//! `hours` hours, headroom estimated from arrivals). Every feature is
//! scale-free or
//! scaled to a fixed unit, so that a policy learnt on some grids means
//! something on others (a grid at 80 g/kWh and one at 500 differ in
//! [`Feature::Level`] only).
//!
//! It lives in the tuner, not in the policy crate: no component decides
//! anything from it; the tuner computes it from its replay window and
//! publishes the knobs the learned policy gives for it.

use carbon_kube_sim::engine::EpochView;
use carbon_kube_sim::forecast::ForecastView;
use carbon_kube_sim::trace::{HOUR, TraceSet};
use carbon_kube_sim::workload::{ClusterSpec, Job};

/// Hours of an episode the state is computed from (the controller's view
/// after its first day).
pub const STATE_HOURS: usize = 24;

/// Hours of forecast the state looks at.
pub const FORECAST_HOURS: usize = 24;

/// The features of the state vector, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Mean intensity over zones and observed hours, in kg/kWh (g/kWh / 1000).
    Level,
    /// Spread between zones: (highest zone mean − lowest) / overall mean.
    ZoneSpread,
    /// 10th percentile of the observed intensities / their median.
    P10OverMedian,
    /// 90th percentile of the observed intensities / their median.
    P90OverMedian,
    /// Daily swing: mean over zones of (max − min) / mean over the observed hours.
    Swing,
    /// Forecast shape: mean over zones of (next-24-hour forecast mean / current value) − 1.
    ForecastTrend,
    /// Forecast spread: mean over zones of the forecast's sd / its mean over the next 24 hours.
    ForecastSpread,
    /// Work that arrived in the observed hours (vCPU-hours) per vCPU-hour of capacity:
    /// the queue the deferral planner has to place.
    ArrivingWork,
    /// Capacity headroom: 1 − the peak of concurrent demand (every job
    /// started at arrival) over the observed hours / total vCPUs.
    Headroom,
    /// Flexibility of the arrived work: mean slack / (slack + run time).
    Slack,
    /// 1 / number of zones.
    InverseZones,
    /// Work held back now (arrived, not released: deferred or waiting for
    /// room), vCPU-hours per vCPU-hour of capacity over [`STATE_HOURS`].
    HeldWork,
    /// Time of day (UTC) as the sine of its angle.
    DaySin,
    /// Time of day (UTC) as the cosine of its angle.
    DayCos,
}

/// Every feature, in the order of the state vector.
pub const FEATURES: [Feature; 14] = [
    Feature::Level,
    Feature::ZoneSpread,
    Feature::P10OverMedian,
    Feature::P90OverMedian,
    Feature::Swing,
    Feature::ForecastTrend,
    Feature::ForecastSpread,
    Feature::ArrivingWork,
    Feature::Headroom,
    Feature::Slack,
    Feature::InverseZones,
    Feature::HeldWork,
    Feature::DaySin,
    Feature::DayCos,
];

/// Length of the state vector.
pub const STATE_DIM: usize = FEATURES.len();

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && a.is_finite() { a / b } else { 0.0 }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Index into a short vector: the casts cannot truncate meaningfully.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The state after the first `hours` hours of an episode (at least one hour,
/// at most the episode's length). Missing data gives neutral zeros, never
/// NaN.
pub fn observe(
    traces: &TraceSet,
    jobs: &[Job],
    cluster: &ClusterSpec,
    forecast: &ForecastView<'_>,
    hours: usize,
) -> [f64; STATE_DIM] {
    let h = hours.clamp(1, traces.hours().max(1));
    window(traces, jobs, cluster, forecast, 0, h, None)
}

/// What a controller sees at a decision epoch of a replay (see the module's
/// doc): the last [`STATE_HOURS`] hours up to and including the current
/// hour's snapshot, the forecast issued now, the jobs that arrived in those
/// hours, the work held now and the room in use now. At the first epoch of
/// an episode only its first hour has been seen.
pub fn observe_epoch(view: &EpochView<'_, '_>) -> [f64; STATE_DIM] {
    let w = view.world;
    let to = (view.hour + 1).min(w.traces.hours().max(1));
    let from = to.saturating_sub(STATE_HOURS);
    // Capacities are far below 2^53.
    let headroom = ratio(
        (view.allocatable_cpu_millis - view.requested_cpu_millis) as f64,
        view.allocatable_cpu_millis as f64,
    );
    let live = Live {
        now: view.now,
        headroom,
        held_cpu_hours: view.held_cpu_hours,
    };
    window(
        w.traces,
        view.arrived(),
        w.cluster,
        &w.forecast,
        from,
        to,
        Some(live),
    )
}

/// What only a live view has.
struct Live {
    now: i64,
    headroom: f64,
    held_cpu_hours: f64,
}

/// The state over hours `from_hour..h` of the traces, with the forecast
/// issued at hour `h` (live: at `h - 1`, the current hour); `live` replaces
/// the headroom estimate and fills the held work and the time of day.
fn window(
    traces: &TraceSet,
    jobs: &[Job],
    cluster: &ClusterSpec,
    forecast: &ForecastView<'_>,
    from_hour: usize,
    h: usize,
    live: Option<Live>,
) -> [f64; STATE_DIM] {
    let mut all = Vec::new();
    let mut zone_means = Vec::new();
    let mut swings = Vec::new();
    let mut trends = Vec::new();
    let mut spreads = Vec::new();
    for (zi, z) in traces.zones.iter().enumerate() {
        let seen: Vec<f64> = z
            .values
            .iter()
            .take(h)
            .skip(from_hour)
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let m = mean(&seen);
        let (lo, hi) = seen
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        zone_means.push(m);
        swings.push(if seen.is_empty() {
            0.0
        } else {
            ratio(hi - lo, m)
        });
        all.extend(seen);
        // The forecast issued at the end of the observed hours (live: at
        // the current hour, the last one observed).
        let at = if live.is_some() {
            h.saturating_sub(1)
        } else {
            h
        };
        let issued = forecast.issued(zi, at.min(traces.hours().saturating_sub(1)));
        let now = issued.first().copied().unwrap_or(0.0);
        let ahead: Vec<f64> = issued.iter().take(FORECAST_HOURS).copied().collect();
        let fm = mean(&ahead);
        let sd = (ahead.iter().map(|v| (v - fm).powi(2)).sum::<f64>() / ahead.len().max(1) as f64)
            .sqrt();
        trends.push(if now > 0.0 { fm / now - 1.0 } else { 0.0 });
        spreads.push(ratio(sd, fm));
    }
    all.sort_by(f64::total_cmp);
    let overall = mean(&all);
    let median = percentile(&all, 50.0);
    let (zlo, zhi) = zone_means
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let zone_spread = if zone_means.is_empty() {
        0.0
    } else {
        ratio(zhi - zlo, overall)
    };

    // Arrivals: the observed hours; live, the last STATE_HOURS before now
    // (since the start of the replay). Spans of a few days: exact in i64.
    #[allow(clippy::cast_possible_wrap)]
    let (from, to) = match &live {
        Some(l) => (traces.start.max(l.now - STATE_HOURS as i64 * HOUR), l.now),
        None => (
            traces.start + from_hour as i64 * HOUR,
            traces.start + h as i64 * HOUR,
        ),
    };
    let span_hours = ((to - from) as f64 / HOUR as f64).max(1.0);
    let arrived: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.arrival >= from && j.arrival < to)
        .collect();
    // Counts and capacities are far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    let capacity = cluster.total_cpus() as f64;
    #[allow(clippy::cast_precision_loss)]
    let cpu_hours: f64 = arrived
        .iter()
        .map(|j| j.vcpus() * j.duration as f64 / HOUR as f64)
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let arriving = ratio(cpu_hours, capacity * span_hours);
    // Concurrent demand if everything that arrived started at once.
    let mut events: Vec<(i64, f64)> = arrived
        .iter()
        .flat_map(|j| [(j.arrival, j.vcpus()), (j.arrival + j.duration, -j.vcpus())])
        .collect();
    events.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let (mut cur, mut peak) = (0.0f64, 0.0f64);
    for (t, d) in events {
        if t >= to {
            break;
        }
        cur += d;
        peak = peak.max(cur);
    }
    let headroom = match &live {
        Some(l) => l.headroom,
        None if capacity > 0.0 => 1.0 - peak / capacity,
        None => 0.0,
    };
    let slack: Vec<f64> = arrived
        .iter()
        .map(|j| {
            let s = (j.latest_start() - j.arrival).max(0);
            // Seconds of a few days: exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let r = ratio(s as f64, (s + j.duration.max(0)) as f64);
            r
        })
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let inverse_zones = ratio(1.0, traces.zones.len() as f64);
    let (held, day_sin, day_cos) = match &live {
        Some(l) => {
            // Seconds of a day: exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let angle =
                l.now.rem_euclid(24 * HOUR) as f64 / (24 * HOUR) as f64 * std::f64::consts::TAU;
            (
                ratio(l.held_cpu_hours, capacity * STATE_HOURS as f64),
                angle.sin(),
                angle.cos(),
            )
        }
        None => (0.0, 0.0, 0.0),
    };
    let state = [
        overall / 1000.0,
        zone_spread,
        ratio(percentile(&all, 10.0), median),
        ratio(percentile(&all, 90.0), median),
        mean(&swings),
        mean(&trends),
        mean(&spreads),
        arriving,
        headroom,
        mean(&slack),
        inverse_zones,
        held,
        day_sin,
        day_cos,
    ];
    state.map(|v| if v.is_finite() { v } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_model::ZoneId;
    use carbon_kube_sim::forecast::ErrorModel;
    use carbon_kube_sim::trace::ZoneTrace;

    fn traces(zones: &[(&str, Vec<f64>)]) -> TraceSet {
        TraceSet {
            start: 0,
            zones: zones
                .iter()
                .map(|(z, v)| ZoneTrace {
                    zone: ZoneId::parse(z).unwrap(),
                    values: v.clone(),
                })
                .collect(),
            origin: "test".into(),
            modelled: false,
        }
    }

    fn job(arrival: i64, hours: i64, cpus: u64) -> Job {
        Job {
            id: 0,
            arrival,
            duration: hours * HOUR,
            cpu_millis: cpus * 1000,
            memory_mib: 1024,
            deadline: arrival + hours * HOUR + 24 * HOUR,
            interruptible: false,
        }
    }

    #[test]
    fn a_grid_five_times_dirtier_differs_only_in_level() {
        let day: Vec<f64> = (0..72).map(|h| 100.0 + f64::from(h % 24) * 5.0).collect();
        let clean = traces(&[
            ("DE", day.clone()),
            ("FR", day.iter().map(|v| v * 0.5).collect()),
        ]);
        let dirty = traces(&[
            ("DE", day.iter().map(|v| v * 5.0).collect()),
            ("FR", day.iter().map(|v| v * 2.5).collect()),
        ]);
        let jobs = vec![job(0, 2, 4), job(3 * HOUR, 30, 8)];
        let cluster = ClusterSpec::default_for(&clean, &jobs, 1.5);
        let perfect = |t| ForecastView::new(t, ErrorModel::PERFECT, 1);
        let a = observe(&clean, &jobs, &cluster, &perfect(&clean), STATE_HOURS);
        let b = observe(&dirty, &jobs, &cluster, &perfect(&dirty), STATE_HOURS);
        assert!((b[0] - 5.0 * a[0]).abs() < 1e-9, "{a:?} {b:?}");
        for i in 1..STATE_DIM {
            assert!(
                (a[i] - b[i]).abs() < 1e-9,
                "{:?}: {} vs {}",
                FEATURES[i],
                a[i],
                b[i]
            );
        }
        // Two zones, one at half the other: spread 0.5 / 0.75.
        assert!((a[1] - 0.5 / 0.75).abs() < 1e-9, "{a:?}");
        // The 8-vCPU job runs past the observed day: 30 h counted whole.
        let cap = cluster.total_cpus() as f64;
        assert!((a[7] - (2.0 * 4.0 + 30.0 * 8.0) / (cap * 24.0)).abs() < 1e-9);
        assert!((a[8] - (1.0 - 8.0 / cap)).abs() < 1e-9, "{a:?}");
        assert!((a[10] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn no_data_and_no_jobs_give_zeros_not_nan() {
        let empty = traces(&[("DE", vec![0.0; 30])]);
        let cluster = ClusterSpec::default_for(&empty, &[], 1.5);
        let s = observe(
            &empty,
            &[],
            &cluster,
            &ForecastView::new(&empty, ErrorModel::default(), 3),
            STATE_HOURS,
        );
        assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
        assert_eq!(s[7], 0.0);
    }
}
