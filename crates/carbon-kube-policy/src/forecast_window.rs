//! A zone's carbon intensity over a future run: the record's current value
//! for the current slot, the forecast's values after it, and past the
//! forecast's end the mean of what it says. Shared by [`crate::deferral`]
//! (which window to release in) and [`crate::migration`] (what a running pod
//! would emit here or there over its remaining run).

use carbon_kube_model::{UnixSeconds, ZoneId, ZoneRecord};

/// One zone's usable data for planning.
pub(crate) struct ZoneView<'a> {
    pub(crate) zone: &'a ZoneId,
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
    pub(crate) fn average(&self, offset: i64, d: i64, step: i64) -> f64 {
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
    pub(crate) fn average_aligned(&self, k: usize, dq: usize, dr: i64, d: i64, step: i64) -> f64 {
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

pub(crate) fn zone_view<'a>(
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
