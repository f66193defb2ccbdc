//! Deferral: when a deferrable pod should be released, and in which zone.
//!
//! [`plan_release`] looks at every zone the pod may run in and every start
//! time from `now` to its latest start (`deadline − expected duration`), on the
//! forecast's grid, and picks the one with the lowest forecast average
//! intensity over the pod's expected run, after:
//!
//! - a **margin for forecast error** that grows with lead time (a window
//!   `h` hours ahead is charged `1 + error_margin_per_hour · h` times its
//!   forecast), so a far window must be clearly better to win;
//! - a **minimum saving** against releasing now, so a pod is not held for a
//!   1 % gain;
//! - the **capacity already promised** to other deferred pods in each window
//!   ([`PromisedCapacity`]), so a thousand pods waiting for the same dip do
//!   not all land on it at once.
//!
//! **Deadlines are sacred**: at or after the latest start (minus a safety
//! margin) the plan is always "release now". **Fail open**: with no fresh data
//! for any allowed zone the plan is "release now" with reason
//! [`ReleaseReason::NoData`]. Every plan carries its reason and the figures
//! behind it ([`ReleasePlan::explain`]).
//!
//! Pure: no IO, no clock. The gate controller and the simulator call it with
//! their own `now`, snapshot and ledger.

use std::collections::{BTreeMap, VecDeque};

use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId, ZoneRecord};
use serde::{Deserialize, Serialize};

/// Tunables of the release planner. Serialized in camelCase for the
/// `carbon-kube-config` ConfigMap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct DeferralConfig {
    /// Records older than this (or past their `valid_until`) are ignored.
    pub max_data_age_seconds: i64,
    /// Relative penalty per hour of lead time on a window's forecast average
    /// (0.01 charges a window one day ahead 24 % more than its forecast).
    /// The default was tuned on 2022 data in the simulator.
    pub error_margin_per_hour: f64,
    /// A later window must beat releasing now by at least this fraction of
    /// the current intensity (after the margin) to defer.
    pub min_saving_fraction: f64,
    /// Share of each zone's capacity that may be promised to deferred pods.
    pub capacity_headroom: f64,
    /// Released at the latest this long before the latest start, to absorb
    /// scheduling and image-pull latency.
    pub start_safety_seconds: i64,
    /// A revised plan replaces a standing one only if it is expected to be
    /// this fraction cleaner (hysteresis against flapping).
    pub revision_hysteresis: f64,
}

impl Default for DeferralConfig {
    fn default() -> Self {
        Self {
            max_data_age_seconds: 2 * 3600,
            error_margin_per_hour: 0.01,
            min_saving_fraction: 0.1,
            capacity_headroom: 0.8,
            start_safety_seconds: 1800,
            revision_hysteresis: 0.05,
        }
    }
}

impl DeferralConfig {
    /// Checks ranges; returns every problem with its field name.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.max_data_age_seconds <= 0 {
            errs.push("maxDataAgeSeconds: must be positive".to_owned());
        }
        if !(0.0..=1.0).contains(&self.error_margin_per_hour) {
            errs.push("errorMarginPerHour: must be between 0 and 1".to_owned());
        }
        if !(0.0..1.0).contains(&self.min_saving_fraction) {
            errs.push("minSavingFraction: must be at least 0 and below 1".to_owned());
        }
        if !(self.capacity_headroom > 0.0 && self.capacity_headroom <= 1.0) {
            errs.push("capacityHeadroom: must be above 0 and at most 1".to_owned());
        }
        if self.start_safety_seconds < 0 {
            errs.push("startSafetySeconds: must not be negative".to_owned());
        }
        if !(0.0..1.0).contains(&self.revision_hysteresis) {
            errs.push("revisionHysteresis: must be at least 0 and below 1".to_owned());
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// What the planner needs to know about one deferrable pod.
#[derive(Clone, Copy, Debug)]
pub struct DeferralRequest<'a> {
    /// The current time.
    pub now: UnixSeconds,
    /// The time by which the pod must have finished.
    pub deadline: UnixSeconds,
    /// How long the pod is expected to run, seconds (at least one second is assumed).
    pub expected_duration_seconds: i64,
    /// Zones the pod may run in (from its node selector and affinity). Empty
    /// means every zone in the snapshot.
    pub zones: &'a [ZoneId],
    /// CPU the pod requests, millicores (for the capacity ledger).
    pub cpu_millis: u64,
}

impl DeferralRequest<'_> {
    /// The latest time the pod may start and still meet its deadline.
    pub fn latest_start(&self) -> UnixSeconds {
        self.deadline - self.expected_duration_seconds.max(1)
    }
}

/// Why a pod is released when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// Held for, and released in, the greenest window before the deadline.
    GreenWindow,
    /// Now is already as green as any window (within the margins), or no
    /// capacity is left to promise in a greener one.
    NowIsBest,
    /// The latest start has come: released whatever the data says.
    Deadline,
    /// No fresh carbon data for any zone the pod may use: released (fail open).
    NoData,
}

impl ReleaseReason {
    /// The value of the `reason` label on `carbon_kube_gate_releases_total`
    /// (`green_window`, `deadline`, `no_data`; releasing now because now is
    /// the best window counts as `green_window`).
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::GreenWindow | Self::NowIsBest => "green_window",
            Self::Deadline => "deadline",
            Self::NoData => "no_data",
        }
    }

    /// The reason as written in the `carbon-kube.io/release-reason` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GreenWindow => "green_window",
            Self::NowIsBest => "now_is_best",
            Self::Deadline => "deadline",
            Self::NoData => "no_data",
        }
    }
}

/// The planner's answer for one pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleasePlan {
    /// When to release the pod (`<= now` means release now).
    pub release_at: UnixSeconds,
    /// The zone the window was chosen in, when there was data.
    pub zone: Option<ZoneId>,
    /// Why.
    pub reason: ReleaseReason,
    /// The latest start that still meets the deadline.
    pub latest_start: UnixSeconds,
    /// The deadline the plan was made for.
    pub deadline: UnixSeconds,
    /// Forecast average intensity over the run in the chosen window, g/kWh.
    pub expected_g_per_kwh: Option<f64>,
    /// Forecast average intensity over the run if released now in the best
    /// zone, g/kWh.
    pub now_g_per_kwh: Option<f64>,
}

impl ReleasePlan {
    /// Whether the pod should be released at `now`.
    pub fn is_due(&self, now: UnixSeconds) -> bool {
        now >= self.release_at
    }

    /// Expected saving against releasing now, as a fraction of the current
    /// intensity (0 when unknown).
    pub fn expected_saving_fraction(&self) -> f64 {
        match (self.now_g_per_kwh, self.expected_g_per_kwh) {
            (Some(n), Some(e)) if n > 0.0 => ((n - e) / n).max(0.0),
            _ => 0.0,
        }
    }

    /// One sentence for an Event or a log line, e.g. "deferred until
    /// 2023-05-02 14:00 UTC: forecast 95 g/kWh in DE vs 310 now; deadline
    /// 2023-05-02 20:00 UTC".
    pub fn explain(&self) -> String {
        let zone = self
            .zone
            .as_ref()
            .map_or_else(String::new, |z| format!(" in {z}"));
        let fig = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
        let deadline = fmt_utc(self.deadline);
        match self.reason {
            ReleaseReason::GreenWindow => format!(
                "deferred until {}: forecast {} g/kWh{zone} vs {} now; deadline {deadline}",
                fmt_utc(self.release_at),
                fig(self.expected_g_per_kwh),
                fig(self.now_g_per_kwh)
            ),
            ReleaseReason::NowIsBest => format!(
                "released now{zone}: {} g/kWh now and no window before the latest start {} is clearly greener (or has capacity left)",
                fig(self.now_g_per_kwh),
                fmt_utc(self.latest_start)
            ),
            ReleaseReason::Deadline => format!(
                "released for its deadline {deadline}: latest start {} reached",
                fmt_utc(self.latest_start)
            ),
            ReleaseReason::NoData => {
                "released now: no fresh carbon data for any zone the pod may use (fail open)"
                    .to_owned()
            }
        }
    }
}

/// Decides whether a freshly computed plan should replace a standing one:
/// yes when the standing one is due or past the latest start, when the fresh
/// one releases now or for the deadline, or when the fresh window is expected
/// to be at least `revision_hysteresis` cleaner.
pub fn should_revise(standing: &ReleasePlan, fresh: &ReleasePlan, cfg: &DeferralConfig) -> bool {
    if fresh.reason == ReleaseReason::Deadline || fresh.reason == ReleaseReason::NoData {
        return true;
    }
    if standing.release_at > fresh.latest_start {
        return true;
    }
    match (standing.expected_g_per_kwh, fresh.expected_g_per_kwh) {
        (Some(old), Some(new)) => new < old * (1.0 - cfg.revision_hysteresis),
        (None, Some(_)) => true,
        _ => false,
    }
}

/// Capacity already promised to planned pods, per zone and time slot, in
/// millicores. The caller sets each zone's capacity (what deferred work may
/// use), records a promise whenever it plans a pod into a window and
/// withdraws it when the plan changes. Slots before `forget_before` are dropped.
#[derive(Clone, Debug)]
pub struct PromisedCapacity {
    slot_seconds: i64,
    zones: BTreeMap<ZoneId, ZoneBook>,
}

#[derive(Clone, Debug, Default)]
struct ZoneBook {
    capacity_millis: u64,
    /// Slot number of `promised[0]`.
    origin: i64,
    promised: VecDeque<u64>,
}

impl ZoneBook {
    fn slot_value(&self, slot: i64) -> u64 {
        if slot < self.origin {
            return 0;
        }
        usize::try_from(slot - self.origin)
            .ok()
            .and_then(|i| self.promised.get(i).copied())
            .unwrap_or(0)
    }

    fn add(&mut self, from: i64, to: i64, millis: u64, add: bool) {
        if to <= from {
            return;
        }
        if self.promised.is_empty() {
            self.origin = from;
        }
        while from < self.origin {
            self.promised.push_front(0);
            self.origin -= 1;
        }
        for s in from..to {
            let Ok(i) = usize::try_from(s - self.origin) else {
                continue;
            };
            while self.promised.len() <= i {
                self.promised.push_back(0);
            }
            let v = &mut self.promised[i];
            *v = if add {
                v.saturating_add(millis)
            } else {
                v.saturating_sub(millis)
            };
        }
    }
}

impl PromisedCapacity {
    /// An empty ledger with slots of `slot_seconds` (e.g. the forecast step).
    pub fn new(slot_seconds: i64) -> Self {
        Self {
            slot_seconds: slot_seconds.max(1),
            zones: BTreeMap::new(),
        }
    }

    /// Length of a slot in seconds.
    pub fn slot_seconds(&self) -> i64 {
        self.slot_seconds
    }

    /// Sets how many millicores of `zone` may be promised in any slot (before
    /// the planner's headroom). Zones without a capacity are not limited.
    pub fn set_capacity(&mut self, zone: ZoneId, cpu_millis: u64) {
        self.zones.entry(zone).or_default().capacity_millis = cpu_millis;
    }

    fn slots(&self, start: UnixSeconds, duration_seconds: i64) -> (i64, i64) {
        let from = start.div_euclid(self.slot_seconds);
        let end = start + duration_seconds.max(1);
        let to = (end + self.slot_seconds - 1).div_euclid(self.slot_seconds);
        (from, to)
    }

    /// Records that `cpu_millis` of `zone` are promised over `[start, start + duration)`.
    pub fn promise(
        &mut self,
        zone: &ZoneId,
        start: UnixSeconds,
        duration_seconds: i64,
        cpu_millis: u64,
    ) {
        let (from, to) = self.slots(start, duration_seconds);
        self.zones
            .entry(zone.clone())
            .or_default()
            .add(from, to, cpu_millis, true);
    }

    /// Withdraws a promise made with the same arguments.
    pub fn withdraw(
        &mut self,
        zone: &ZoneId,
        start: UnixSeconds,
        duration_seconds: i64,
        cpu_millis: u64,
    ) {
        let (from, to) = self.slots(start, duration_seconds);
        if let Some(book) = self.zones.get_mut(zone) {
            book.add(from, to, cpu_millis, false);
        }
    }

    /// Drops every slot that ends before `t`.
    pub fn forget_before(&mut self, t: UnixSeconds) {
        let slot = t.div_euclid(self.slot_seconds);
        for book in self.zones.values_mut() {
            while book.origin < slot && !book.promised.is_empty() {
                book.promised.pop_front();
                book.origin += 1;
            }
        }
    }

    /// Millicores promised in `zone` during the slot containing `t`.
    pub fn promised_at(&self, zone: &ZoneId, t: UnixSeconds) -> u64 {
        self.zones
            .get(zone)
            .map_or(0, |b| b.slot_value(t.div_euclid(self.slot_seconds)))
    }

    /// Millicores still free to promise per slot from `from_slot`, `n` slots,
    /// after `headroom`; `None` when the zone's capacity is not limited.
    fn free_slots(
        &self,
        zone: &ZoneId,
        from_slot: i64,
        n: usize,
        headroom: f64,
    ) -> Option<Vec<u64>> {
        let mut out = Vec::new();
        self.free_slots_into(zone, from_slot, n, headroom, &mut out)
            .then_some(out)
    }

    /// Like [`Self::free_slots`], into a reused buffer; false when the zone
    /// is not limited.
    fn free_slots_into(
        &self,
        zone: &ZoneId,
        from_slot: i64,
        n: usize,
        headroom: f64,
        out: &mut Vec<u64>,
    ) -> bool {
        out.clear();
        let Some(book) = self.zones.get(zone) else {
            return false;
        };
        if book.capacity_millis == 0 {
            return false;
        }
        let cap = (book.capacity_millis as f64 * headroom) as u64;
        out.extend((0..n as i64).map(|k| cap.saturating_sub(book.slot_value(from_slot + k))));
        true
    }
}

/// One zone's usable data for planning.
struct ZoneView<'a> {
    zone: &'a ZoneId,
    /// Intensity per slot from the slot containing `now`.
    slots: Vec<f64>,
    /// Prefix sums of `slots`.
    prefix: Vec<f64>,
    /// Mean of the slots, used beyond the forecast's end.
    tail: f64,
}

impl ZoneView<'_> {
    /// Average intensity over `[t, t + d)`, where `t` is given in seconds
    /// after the start of slot 0.
    fn average(&self, offset: i64, d: i64, step: i64) -> f64 {
        let n = self.slots.len() as i64;
        let horizon = n * step;
        let a = offset.clamp(0, horizon);
        let b = (offset + d).clamp(0, horizon);
        let covered = self.integral(b, step) - self.integral(a, step);
        let uncovered = (d - (b - a)).max(0) as f64;
        (covered + uncovered * self.tail) / d.max(1) as f64
    }

    /// Average over a run of `d = dq · step + dr` seconds starting at the
    /// start of slot `k`, without divisions (the planner's inner loop).
    fn average_aligned(&self, k: usize, dq: usize, dr: i64, d: i64, step: i64) -> f64 {
        if k + dq >= self.slots.len() {
            return self.average(step * k as i64, d, step);
        }
        let whole = (self.prefix[k + dq] - self.prefix[k]) * step as f64;
        let part = self.slots[k + dq] * dr as f64;
        (whole + part) / d as f64
    }

    /// Integral of the intensity from slot 0's start to `x` seconds, in
    /// g/kWh·s, for `0 <= x <= horizon`.
    fn integral(&self, x: i64, step: i64) -> f64 {
        let k = (x / step) as usize;
        let rem = x - (k as i64) * step;
        let whole = self.prefix.get(k).copied().unwrap_or(0.0) * step as f64;
        let part = self.slots.get(k).copied().unwrap_or(0.0) * rem as f64;
        whole + part
    }
}

fn zone_view<'a>(
    zone: &'a ZoneId,
    record: &ZoneRecord,
    now: UnixSeconds,
    step: i64,
    needed_until: UnixSeconds,
) -> ZoneView<'a> {
    let slot0 = now.div_euclid(step) * step;
    let wanted = usize::try_from((needed_until - slot0).div_euclid(step) + 2).unwrap_or(1);
    let mut slots = Vec::with_capacity(wanted.min(crate_max_slots()));
    slots.push(record.carbon_intensity.g_per_kwh());
    let mut tail_sum = slots[0];
    let mut tail_n = 1.0;
    if let Some(f) = &record.forecast {
        let first = slot0 + step;
        if i64::from(f.step_seconds) == step {
            // Same grid: read the values directly.
            if first >= f.start
                && let Ok(i0) = usize::try_from((first - f.start) / step)
            {
                let rest = f.values.get(i0..).unwrap_or(&[]);
                let used = rest.len().min(wanted.saturating_sub(1));
                slots.extend(rest[..used].iter().map(|v| v.g_per_kwh()));
                // The tail (the mean of what the forecast says) is only used
                // when the run outlives the forecast: sum it only then.
                if used == rest.len() {
                    tail_sum += rest.iter().map(|v| v.g_per_kwh()).sum::<f64>();
                    tail_n += rest.len() as f64;
                }
            }
        } else {
            let mut t = first;
            while t < f.end() {
                let Some(v) = f.value_at(t) else { break };
                tail_sum += v.g_per_kwh();
                tail_n += 1.0;
                if slots.len() < wanted {
                    slots.push(v.g_per_kwh());
                }
                t += step;
            }
        }
    }
    let mut prefix = Vec::with_capacity(slots.len() + 1);
    prefix.push(0.0);
    let mut acc = 0.0;
    for v in &slots {
        acc += v;
        prefix.push(acc);
    }
    ZoneView {
        zone,
        slots,
        prefix,
        tail: tail_sum / tail_n,
    }
}

/// Upper bound on the slots a view keeps (three days of hours and then some).
const fn crate_max_slots() -> usize {
    carbon_kube_model::record::MAX_FORECAST_POINTS + 2
}

/// Plans the release of one deferrable pod. See the module documentation.
pub fn plan_release(
    req: &DeferralRequest<'_>,
    snapshot: &Snapshot,
    promised: &PromisedCapacity,
    cfg: &DeferralConfig,
) -> ReleasePlan {
    let now = req.now;
    let duration = req.expected_duration_seconds.max(1);
    let latest_start = req.latest_start();
    let latest_release = latest_start - cfg.start_safety_seconds.max(0);
    let step = promised.slot_seconds;
    let allowed: Vec<&ZoneId> = if req.zones.is_empty() {
        snapshot.zones.keys().collect()
    } else {
        req.zones.iter().collect()
    };
    let views: Vec<ZoneView<'_>> = allowed
        .iter()
        .filter_map(|z| {
            let r = snapshot.get(z)?;
            r.is_fresh(now, cfg.max_data_age_seconds)
                .then(|| zone_view(z, r, now, step, latest_start.max(now) + duration))
        })
        .collect();
    let mut plan = ReleasePlan {
        release_at: now,
        zone: None,
        reason: ReleaseReason::NoData,
        latest_start,
        deadline: req.deadline,
        expected_g_per_kwh: None,
        now_g_per_kwh: None,
    };
    if views.is_empty() {
        return plan;
    }
    let slot0 = now.div_euclid(step) * step;
    let offset_now = now - slot0;
    let headroom = cfg.capacity_headroom;
    // The best zone to release into now: capacity permitting (all of it: the
    // headroom is for promises about an uncertain future), else the cleanest
    // regardless of capacity (releasing never waits on capacity).
    let now_slot = now.div_euclid(step);
    let run_slots_from_now =
        ((now + duration + step - 1).div_euclid(step) - now_slot).max(1) as usize;
    let mut best_now: Option<(f64, usize)> = None;
    let mut cleanest_now: Option<(f64, usize)> = None;
    for (i, v) in views.iter().enumerate() {
        let avg = v.average(offset_now, duration, step);
        if cleanest_now.is_none_or(|(b, _)| avg < b) {
            cleanest_now = Some((avg, i));
        }
        let fits = promised
            .free_slots(v.zone, now_slot, run_slots_from_now, 1.0)
            .is_none_or(|free| free.iter().all(|f| *f >= req.cpu_millis));
        if fits && best_now.is_none_or(|(b, _)| avg < b) {
            best_now = Some((avg, i));
        }
    }
    let (now_avg, now_zone) = best_now.or(cleanest_now).unwrap_or((0.0, 0));
    plan.zone = Some(views[now_zone].zone.clone());
    plan.now_g_per_kwh = Some(now_avg);
    plan.expected_g_per_kwh = Some(now_avg);
    if now >= latest_release {
        plan.reason = ReleaseReason::Deadline;
        return plan;
    }
    plan.reason = ReleaseReason::NowIsBest;
    // Aligned candidate starts: slot boundaries after now, up to the latest release.
    let last_k = (latest_release - slot0).div_euclid(step);
    let run_slots = ((duration + step - 1) / step).max(1) as usize;
    let mut best: Option<(f64, f64, usize, UnixSeconds)> = best_now.map(|(a, i)| (a, a, i, now));
    let (dq, dr) = ((duration / step) as usize, duration % step);
    let mut free = Vec::new();
    let mut free_min = Vec::new();
    let mut deque = VecDeque::new();
    for (i, v) in views.iter().enumerate() {
        let n_cand = usize::try_from(last_k).unwrap_or(0);
        if n_cand == 0 {
            continue;
        }
        // Free capacity over each candidate's run: sliding minimum.
        let limited = promised.free_slots_into(
            v.zone,
            now_slot + 1,
            n_cand + run_slots,
            headroom,
            &mut free,
        );
        if limited {
            sliding_min_into(&free, run_slots, &mut deque, &mut free_min);
        }
        for k in 1..=n_cand {
            let t = slot0 + step * k as i64;
            if limited && free_min.get(k - 1).is_none_or(|f| *f < req.cpu_millis) {
                continue;
            }
            let avg = v.average_aligned(k, dq, dr, duration, step);
            let lead_h = (t - now) as f64 / 3600.0;
            let eff = avg * (1.0 + cfg.error_margin_per_hour * lead_h);
            if best.is_none_or(|(b, _, _, _)| eff < b) {
                best = Some((eff, avg, i, t));
            }
        }
    }
    if let Some((_, avg, i, t)) = best
        && t > now
        && now_avg > 0.0
        && (now_avg - avg * (1.0 + cfg.error_margin_per_hour * (t - now) as f64 / 3600.0))
            >= cfg.min_saving_fraction * now_avg
    {
        plan.release_at = t;
        plan.zone = Some(views[i].zone.clone());
        plan.expected_g_per_kwh = Some(avg);
        plan.reason = ReleaseReason::GreenWindow;
    }
    plan
}

/// Minimum of every window of `w` consecutive values, into `out`.
fn sliding_min_into(v: &[u64], w: usize, dq: &mut VecDeque<usize>, out: &mut Vec<u64>) {
    let w = w.max(1);
    out.clear();
    dq.clear();
    for (i, x) in v.iter().enumerate() {
        while dq.back().is_some_and(|&j| v[j] >= *x) {
            dq.pop_back();
        }
        dq.push_back(i);
        if dq.front().is_some_and(|&j| j + w <= i) {
            dq.pop_front();
        }
        if i + 1 >= w
            && let Some(&j) = dq.front()
        {
            out.push(v[j]);
        }
    }
}

/// Formats unix seconds as `YYYY-MM-DD HH:MM UTC` without a time library.
pub fn fmt_utc(t: UnixSeconds) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests;
