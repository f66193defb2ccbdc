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
//! - **room on one node** for the whole run ([`CapacityLedger`]): after the
//!   work that runs there (until its expected end, or for good when its end
//!   is unknown) and what other plans were promised, so a thousand pods
//!   waiting for the same dip do not all land on it at once, and a plan is
//!   only made where it can be honoured. Releasing now needs the same room;
//!   when there is none now the pod waits for the greenest window that has
//!   it ([`ReleaseReason::WaitForRoom`]); when no window before the latest
//!   release has room it is held until then, promising nothing
//!   ([`ReleaseReason::NoRoom`]), rather than take room promised to pods
//!   whose deadlines come sooner. Callers plan pods in order of latest start
//!   (most urgent first), so the urgent pod gets the room.
//!
//! A **namespace budget** ([`DeferralRequest::budget`], see
//! [`crate::budget`]) only lowers the minimum saving: a namespace at risk of
//! exhausting its budget holds pods for half the usual saving, an exhausted
//! one for any greener window (the greenest wins), reason
//! [`ReleaseReason::Budget`] when the budget alone made the pod wait. The
//! candidate windows, the room checks and the deadline release are the same.
//!
//! **Deadlines are sacred**: at or after the latest start (minus a safety
//! margin) the plan is always "release now". **Fail open**: with no fresh data
//! for any allowed zone the plan is "release now" with reason
//! [`ReleaseReason::NoData`]. Every plan carries its reason and the figures
//! behind it ([`ReleasePlan::explain`]).
//!
//! Pure: no IO, no clock. The gate controller and the simulator call it with
//! their own `now`, snapshot and ledger.

mod ledger;

pub use ledger::{Booking, CapacityLedger};

use carbon_kube_model::{Snapshot, UnixSeconds, ZoneId};
use serde::{Deserialize, Serialize};

use crate::budget::BudgetPressure;
use crate::forecast_window::{ZoneView, zone_view};
use crate::zone_map::Resources;

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
    /// CPU and memory the pod requests (for the capacity ledger: the pod
    /// needs this much room on one node).
    pub requests: Resources,
    /// The nodes the pod may run on (its node selector, affinity and
    /// tolerations), sorted; empty means every node of its zones.
    pub nodes: &'a [String],
    /// How the pod's namespace budget bears on the plan
    /// ([`BudgetPressure::None`] without a budget or without fresh usage data).
    pub budget: BudgetPressure,
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
    /// greener window has room.
    NowIsBest,
    /// No node has room for the run now: held for, and released in, the
    /// greenest window before the deadline that has room.
    WaitForRoom,
    /// No window before the latest release has room as the ledger stands,
    /// but one does once pods with a later latest start give up the room
    /// their plans counted on: the most urgent pod takes it (released now,
    /// or held for that window), and their plans are made again.
    UrgentRoom,
    /// No node has room for the run now nor in any window before the latest
    /// release, even so: held, promising nothing, until the latest release (planned
    /// again whenever the caller replans), so it never takes room promised to
    /// pods that need it sooner.
    NoRoom,
    /// Held for, and released in, a greener window that would not have held
    /// the pod without its namespace's carbon budget (at risk or exhausted):
    /// the saving is below the usual minimum. Same deadline as always.
    Budget,
    /// The latest start has come: released whatever the data says.
    Deadline,
    /// No fresh carbon data for any zone the pod may use: released (fail open).
    NoData,
}

impl ReleaseReason {
    /// The value of the `reason` label on `carbon_kube_gate_releases_total`
    /// (`green_window`, `budget`, `wait_for_room`, `urgent_room`, `no_room`,
    /// `deadline`, `no_data`;
    /// releasing now because now is the best window counts as
    /// `green_window`).
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::GreenWindow | Self::NowIsBest => "green_window",
            Self::Budget => "budget",
            Self::WaitForRoom => "wait_for_room",
            Self::UrgentRoom => "urgent_room",
            Self::NoRoom => "no_room",
            Self::Deadline => "deadline",
            Self::NoData => "no_data",
        }
    }

    /// The reason as written in the `carbon-kube.io/release-reason` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GreenWindow => "green_window",
            Self::NowIsBest => "now_is_best",
            Self::Budget => "budget",
            Self::WaitForRoom => "wait_for_room",
            Self::UrgentRoom => "urgent_room",
            Self::NoRoom => "no_room",
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
    /// Whether the plan holds the pod gated for later (a green window, the
    /// first window with room, or no room before its latest release).
    pub fn holds(&self, now: UnixSeconds) -> bool {
        self.release_at > now
            && matches!(
                self.reason,
                ReleaseReason::GreenWindow
                    | ReleaseReason::Budget
                    | ReleaseReason::WaitForRoom
                    | ReleaseReason::UrgentRoom
                    | ReleaseReason::NoRoom
            )
    }

    /// Whether the plan holds room in the ledger (a green window, or the
    /// first window with room; not a pod held for lack of room).
    pub fn promises_room(&self, now: UnixSeconds) -> bool {
        self.holds(now) && self.reason != ReleaseReason::NoRoom
    }

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
            ReleaseReason::Budget => format!(
                "deferred until {} for the namespace's carbon budget: forecast {} g/kWh{zone} vs {} now, a smaller saving than holds pods otherwise; deadline {deadline}",
                fmt_utc(self.release_at),
                fig(self.expected_g_per_kwh),
                fig(self.now_g_per_kwh)
            ),
            ReleaseReason::NowIsBest => format!(
                "released now{zone}: {} g/kWh now and no window before the latest start {} is clearly greener (or has room left)",
                fig(self.now_g_per_kwh),
                fmt_utc(self.latest_start)
            ),
            ReleaseReason::WaitForRoom => format!(
                "waiting until {} for room: no node{zone} has room for the run now; forecast {} g/kWh then; deadline {deadline}",
                fmt_utc(self.release_at),
                fig(self.expected_g_per_kwh)
            ),
            ReleaseReason::UrgentRoom => format!(
                "starting at {}{zone} on room other plans had counted on: no window had room as planned, and this pod's latest start {} comes before theirs (their plans are made again)",
                fmt_utc(self.release_at),
                fmt_utc(self.latest_start)
            ),
            ReleaseReason::NoRoom => format!(
                "held until {} at the latest: no node{zone} has room for the run now or in any window before then (room is promised to pods with earlier deadlines); planned again as room frees; deadline {deadline}",
                fmt_utc(self.release_at)
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

/// Plans the release of one deferrable pod. See the module documentation.
pub fn plan_release(
    req: &DeferralRequest<'_>,
    snapshot: &Snapshot,
    ledger: &CapacityLedger,
    cfg: &DeferralConfig,
) -> ReleasePlan {
    let now = req.now;
    let duration = req.expected_duration_seconds.max(1);
    let latest_start = req.latest_start();
    let latest_release = latest_start - cfg.start_safety_seconds.max(0);
    let step = ledger.slot_seconds();
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
    let need = req.requests;
    let (mut fits, mut scratch) = (Vec::new(), Vec::new());
    // The best zone to release into now: one node must have room for the
    // whole run (all of it: the headroom is for promises about an uncertain
    // future); else the cleanest, to queue in if no later window has room.
    let now_slot = now.div_euclid(step);
    let (now_from, now_to) = ledger.slots(now, duration);
    let run_slots_from_now = usize::try_from(now_to - now_from).unwrap_or(1).max(1);
    let mut best_now: Option<(f64, usize)> = None;
    let mut cleanest_now: Option<(f64, usize)> = None;
    for (i, v) in views.iter().enumerate() {
        let avg = v.average(offset_now, duration, step);
        if cleanest_now.is_none_or(|(b, _)| avg < b) {
            cleanest_now = Some((avg, i));
        }
        let limited = ledger.fitting_starts(
            v.zone,
            now_slot,
            1,
            run_slots_from_now,
            need,
            1.0,
            None,
            req.nodes,
            &mut fits,
            &mut scratch,
        );
        let room = !limited || fits.first().copied().unwrap_or(false);
        if room && best_now.is_none_or(|(b, _)| avg < b) {
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
    plan.reason = if best_now.is_some() {
        ReleaseReason::NowIsBest
    } else {
        ReleaseReason::NoRoom
    };
    // Aligned candidate starts: slot boundaries after now, up to the latest
    // release, each only where one node has room for the whole run.
    let last_k = (latest_release - slot0).div_euclid(step);
    let n_cand = usize::try_from(last_k).unwrap_or(0);
    let run_slots = ((duration + step - 1) / step).max(1) as usize;
    let mut best: Option<(f64, f64, usize, UnixSeconds)> = best_now.map(|(a, i)| (a, a, i, now));
    let (dq, dr) = ((duration / step) as usize, duration % step);
    if n_cand > 0 {
        for (i, v) in views.iter().enumerate() {
            let limited = ledger.fitting_starts(
                v.zone,
                now_slot + 1,
                n_cand,
                run_slots,
                need,
                cfg.capacity_headroom,
                None,
                req.nodes,
                &mut fits,
                &mut scratch,
            );
            for k in 1..=n_cand {
                if limited && !fits.get(k - 1).copied().unwrap_or(false) {
                    continue;
                }
                let t = slot0 + step * k as i64;
                let avg = v.average_aligned(k, dq, dr, duration, step);
                let lead_h = (t - now) as f64 / 3600.0;
                let eff = avg * (1.0 + cfg.error_margin_per_hour * lead_h);
                if best.is_none_or(|(b, _, _, _)| eff < b) {
                    best = Some((eff, avg, i, t));
                }
            }
        }
    }
    let Some((eff, avg, i, t)) = best else {
        // No room now nor in any window before the latest release, as the
        // ledger stands. The urgent pod wins: the earliest start (now
        // included) where one node has room once the plans of pods with a
        // later latest start give theirs up; those plans are made again.
        for v in &views {
            let limited = ledger.fitting_starts(
                v.zone,
                now_slot,
                n_cand + 1,
                run_slots_from_now.max(run_slots),
                need,
                1.0,
                Some(latest_start),
                req.nodes,
                &mut fits,
                &mut scratch,
            );
            if let Some(k) = fits.iter().position(|f| *f).filter(|_| limited) {
                let t = if k == 0 { now } else { slot0 + step * k as i64 };
                if plan.reason == ReleaseReason::UrgentRoom && t >= plan.release_at {
                    continue;
                }
                plan.release_at = t;
                plan.zone = Some(v.zone.clone());
                plan.expected_g_per_kwh = Some(v.average(t - slot0, duration, step));
                plan.reason = ReleaseReason::UrgentRoom;
            }
        }
        if plan.reason != ReleaseReason::UrgentRoom {
            // Not even then: hold the pod (promising nothing) until its latest
            // release; the caller plans it again as room frees.
            plan.release_at = latest_release;
        }
        return plan;
    };
    // The budget only lowers the bar a later window must clear; `t` is one
    // of the same candidates (at most the latest release) either way.
    let worth = |min_saving: f64| {
        best_now.is_none() || (now_avg > 0.0 && now_avg - eff >= min_saving * now_avg)
    };
    let worth_it = worth(req.budget.min_saving_fraction(cfg.min_saving_fraction));
    if t > now && worth_it {
        plan.release_at = t;
        plan.zone = Some(views[i].zone.clone());
        plan.expected_g_per_kwh = Some(avg);
        plan.reason = if best_now.is_none() {
            ReleaseReason::WaitForRoom
        } else if worth(cfg.min_saving_fraction) {
            ReleaseReason::GreenWindow
        } else {
            ReleaseReason::Budget
        };
    }
    plan
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
