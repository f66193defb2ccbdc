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
        let mut first = slot0 + step;
        // A forecast that starts after the next slot (its writer's clock runs
        // ahead of `now`'s, or the provider skipped a slot): the current
        // value stands for the slots before it, then the forecast is read as
        // usual; dropping it would plan on the current value alone.
        if f.start > first {
            let gap = f
                .start
                .saturating_sub(first)
                .saturating_add(step - 1)
                .div_euclid(step);
            let fill = usize::try_from(gap)
                .unwrap_or(usize::MAX)
                .min(wanted.min(crate_max_slots()).saturating_sub(slots.len()));
            slots.extend(std::iter::repeat_n(slots[0], fill));
            first = first.saturating_add(gap.saturating_mul(step));
        }
        if i64::from(f.step_seconds) == step {
            // Same grid: read the values directly.
            if first >= f.start
                && let Ok(i0) = usize::try_from((first - f.start) / step)
            {
                let rest = f.values.get(i0..).unwrap_or(&[]);
                let used = rest.len().min(wanted.saturating_sub(slots.len()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_model::{CarbonIntensity, Forecast, Source};

    fn ci(v: f64) -> CarbonIntensity {
        CarbonIntensity::new(v).unwrap()
    }

    /// A record written by a clock `skew` seconds ahead of the reader's
    /// `now`: current value 400, then a forecast on `grid` whose 4th to 6th
    /// slots are green (50).
    fn skewed(now: UnixSeconds, skew: i64, grid: u32) -> ZoneRecord {
        let theirs = now + skew;
        let mut r = ZoneRecord::new(ci(400.0), theirs, Source::new(Source::ELECTRICITY_MAPS));
        let g = i64::from(grid);
        r.forecast = Some(Forecast {
            start: theirs.div_euclid(g) * g + g,
            step_seconds: grid,
            values: (0..12)
                .map(|i| ci(if (3..6).contains(&i) { 50.0 } else { 400.0 }))
                .collect(),
        });
        r
    }

    /// Clock skew (issue 18): a forecast from a writer whose clock runs
    /// ahead starts after the reader's next slot. It used to be dropped
    /// whole (the view was the current value, flat: no green window); the
    /// gap is now the current value and the forecast follows, on the same
    /// grid and on another one.
    #[test]
    fn a_forecast_from_a_clock_ahead_is_read_after_a_gap() {
        let now = 1_700_000_000 - 1_700_000_000 % 3600 + 100;
        let zone = ZoneId::parse("DE").unwrap();
        for (grid, step) in [(3600, 3600), (1800, 3600), (900, 900)] {
            for skew in [0, 2 * i64::from(grid), 5 * i64::from(grid) + 17] {
                let r = skewed(now, skew, grid);
                let f = r.forecast.as_ref().unwrap();
                let v = zone_view(&zone, &r, now, step, now + 30 * step);
                let slot0 = now.div_euclid(step) * step;
                // Each slot of the view says what the record says for that
                // time: the forecast where it has a value, else the current.
                for (k, got) in v.slots.iter().enumerate() {
                    let t = slot0 + step * k as i64;
                    let want = if k == 0 {
                        400.0
                    } else {
                        f.value_at(t).map_or(400.0, |x| x.g_per_kwh())
                    };
                    assert_eq!(
                        *got, want,
                        "grid {grid}, step {step}, skew {skew}, slot {k}"
                    );
                }
                assert!(
                    v.slots.contains(&50.0),
                    "grid {grid}, skew {skew}: the green window is seen: {:?}",
                    v.slots
                );
            }
        }
    }

    /// A forecast dated far in the future costs no more than the slots the
    /// view needs.
    #[test]
    fn a_forecast_far_ahead_fills_only_the_needed_slots() {
        let now = 1_700_000_000;
        let zone = ZoneId::parse("DE").unwrap();
        for skew in [365 * 86_400, 100 * 365 * 86_400] {
            let r = skewed(now, skew, 3600);
            let v = zone_view(&zone, &r, now, 3600, now + 10 * 3600);
            assert!(v.slots.len() <= 13, "{}", v.slots.len());
            assert!(v.slots.iter().all(|x| *x == 400.0));
        }
    }
}
