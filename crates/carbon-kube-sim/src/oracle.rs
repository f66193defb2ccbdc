//! The offline oracle: lower bounds on the emissions of *any* schedule of the
//! workload that meets every deadline, computed with perfect knowledge of the
//! actual traces.
//!
//! - [`per_job_optimum`]: each job alone in its cleanest zone and window,
//!   ignoring capacity. A loose bound.
//! - [`windowed_lp`]: the time-indexed LP relaxation with per-zone, per-hour
//!   CPU and memory capacity, solved in windows of one week of arrivals (each
//!   window's horizon runs to its last deadline, so windows overlap in time).
//!   Every window gets the *full* capacity of the hours it spans; dropping
//!   the coupling of overlapping windows only removes constraints, so the sum
//!   of the window optima is a lower bound on the full LP, which is a lower
//!   bound on every feasible schedule. `docs/simulator.md` has the argument.
//! - [`integer_gap`]: on a small slice, the same LP next to a non-preemptive
//!   integer program on hourly starts (a feasible schedule at zone level), so
//!   the true optimum of that slice lies between the two.

use std::collections::BTreeMap;

use good_lp::{
    Expression, ProblemVariables, Solution, SolverModel, Variable, clarabel, microlp, variable,
};
use serde::Serialize;

use crate::engine::World;
use crate::error::{Result, SimError};
use crate::trace::HOUR;
use crate::workload::Job;

/// The capacity-relaxed per-job optimum, kgCO2eq.
pub fn per_job_optimum(w: &World<'_>) -> f64 {
    let zones = w.cluster.zones.len();
    let hours = w.traces.hours() as i64;
    // Prefix sums of actual intensity per cluster zone (g/kWh·h).
    let prefix: Vec<Vec<f64>> = (0..zones)
        .map(|z| {
            let mut p = Vec::with_capacity(hours as usize + 2);
            p.push(0.0);
            for h in 0..=hours {
                let last = p.last().copied().unwrap_or(0.0);
                p.push(last + w.actual(z, h));
            }
            p
        })
        .collect();
    let integral = |z: usize, t: i64| -> f64 {
        // ∫ intensity from the traces' start to t, in g/kWh·h.
        let x = (t - w.traces.start).max(0);
        let h = (x / HOUR).min(hours);
        let rem = (x - h * HOUR) as f64 / HOUR as f64;
        prefix[z][h as usize] + rem * w.actual(z, h)
    };
    let mut total = 0.0;
    for j in w.jobs {
        let mut best = f64::INFINITY;
        for z in 0..zones {
            let kw = w.job_kw(j, z);
            if j.interruptible {
                best = best.min(kw * cheapest_hours(w, j, z));
                continue;
            }
            let (a, b) = (j.arrival, j.latest_start().max(j.arrival));
            let mut starts = vec![a, b];
            let first = (a - w.traces.start).div_euclid(HOUR) + 1;
            let last = (b + j.duration - w.traces.start).div_euclid(HOUR);
            for h in first..=last {
                let t = w.traces.start + h * HOUR;
                for s in [t, t - j.duration] {
                    if s > a && s < b {
                        starts.push(s);
                    }
                }
            }
            for s in starts {
                let e = kw * (integral(z, s + j.duration) - integral(z, s));
                best = best.min(e);
            }
        }
        total += best;
    }
    total / 1000.0
}

/// The cheapest `duration` of time inside the job's window, pausing allowed, g per kW.
fn cheapest_hours(w: &World<'_>, j: &Job, z: usize) -> f64 {
    let mut segs: Vec<(f64, f64)> = Vec::new();
    let mut t = j.arrival;
    while t < j.deadline {
        let h = (t - w.traces.start).div_euclid(HOUR);
        let end = (w.traces.start + (h + 1) * HOUR).min(j.deadline);
        segs.push((w.actual(z, h), (end - t) as f64 / HOUR as f64));
        t = end;
    }
    segs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut need = j.duration as f64 / HOUR as f64;
    let mut g = 0.0;
    for (i, len) in segs {
        let take = len.min(need);
        g += i * take;
        need -= take;
        if need <= 0.0 {
            break;
        }
    }
    g
}

/// One window of the LP.
#[derive(Clone, Debug, Serialize)]
pub struct WindowResult {
    /// First arrival hour of the window (hours after the traces' start).
    pub first_hour: i64,
    /// Jobs in the window.
    pub jobs: usize,
    /// Hours the window's horizon spans.
    pub hours: i64,
    /// LP optimum, kgCO2eq.
    pub kg_co2: f64,
}

/// The stitched LP bound.
#[derive(Clone, Debug, Serialize)]
pub struct LpBound {
    /// Sum of the window optima: a lower bound on any feasible schedule, kgCO2eq.
    pub kg_co2: f64,
    /// The windows.
    pub windows: Vec<WindowResult>,
    /// Largest excess of the stitched solution over a zone's CPU capacity in
    /// any hour (vCPUs). Zero means the stitched solution is feasible for the
    /// full-period LP, so the bound *equals* the full LP optimum.
    pub max_overlap_excess_cpus: f64,
    /// Zone-hours with such an excess.
    pub overlap_excess_zone_hours: u64,
}

/// vCPU-hours used per (zone, hour) by an LP solution.
type ZoneHourUsage = BTreeMap<(usize, i64), f64>;

/// Window length in hours of arrivals.
pub const WINDOW_HOURS: i64 = 168;

struct LpJob<'j> {
    job: &'j Job,
    class: usize,
    /// (hour index, max vCPU-hours in that hour)
    hours: Vec<(i64, f64)>,
}

/// Solves the preemptive time-indexed LP relaxation for `jobs`, with every
/// zone's full capacity in every hour; returns (grams, per zone-hour vCPU use).
#[expect(
    clippy::needless_range_loop,
    reason = "the LP's variables are indexed [class][zone][hour]; indices read clearer than zipped iterators"
)]
fn solve_lp(w: &World<'_>, jobs: &[&Job]) -> Result<(f64, ZoneHourUsage)> {
    if jobs.is_empty() {
        return Ok((0.0, BTreeMap::new()));
    }
    let zones = w.cluster.zones.len();
    let start = w.traces.start;
    // Energy classes: memory per vCPU, in 1/100 GB.
    let mut classes: Vec<u64> = Vec::new();
    let mut lp_jobs = Vec::with_capacity(jobs.len());
    let (mut h0, mut h1) = (i64::MAX, i64::MIN);
    for j in jobs {
        let ratio = (j.memory_gb() / j.vcpus().max(1e-9) * 100.0).round() as u64;
        let class = match classes.iter().position(|c| *c == ratio) {
            Some(i) => i,
            None => {
                classes.push(ratio);
                classes.len() - 1
            }
        };
        let mut hours = Vec::new();
        let mut t = j.arrival;
        while t < j.deadline {
            let h = (t - start).div_euclid(HOUR);
            let end = (start + (h + 1) * HOUR).min(j.deadline);
            hours.push((h, j.vcpus() * (end - t) as f64 / HOUR as f64));
            t = end;
        }
        h0 = h0.min(hours.first().map_or(0, |x| x.0));
        h1 = h1.max(hours.last().map_or(0, |x| x.0));
        lp_jobs.push(LpJob {
            job: j,
            class,
            hours,
        });
    }
    let n_hours = (h1 - h0 + 1) as usize;
    let mut vars = ProblemVariables::new();
    let mut work: Vec<Vec<Variable>> = Vec::with_capacity(lp_jobs.len());
    for lj in &lp_jobs {
        work.push(
            lj.hours
                .iter()
                .map(|(_, ub)| vars.add(variable().min(0.0).max(*ub)))
                .collect(),
        );
    }
    // u[class][zone][hour]
    let mut alloc: Vec<Vec<Vec<Variable>>> = Vec::with_capacity(classes.len());
    let mut objective = Expression::from(0.0);
    for &ratio in &classes {
        let mut per_zone = Vec::with_capacity(zones);
        for z in 0..zones {
            let cap =
                f64::from(w.cluster.zones[z].nodes) * f64::from(w.cluster.zones[z].cpus_per_node);
            let kw_per_vcpu = w.cluster.zones[z].energy.job_kw(1.0, ratio as f64 / 100.0);
            let mut per_hour = Vec::with_capacity(n_hours);
            for k in 0..n_hours {
                let v = vars.add(variable().min(0.0).max(cap));
                objective.add_mul(kw_per_vcpu * w.actual(z, h0 + k as i64), v);
                per_hour.push(v);
            }
            per_zone.push(per_hour);
        }
        alloc.push(per_zone);
    }
    let mut model = vars.minimise(objective.clone()).using(clarabel);
    // Each job does all its work.
    for (lj, ws) in lp_jobs.iter().zip(&work) {
        let total: Expression = ws.iter().copied().sum();
        let need = lj.job.vcpus() * lj.job.duration as f64 / HOUR as f64;
        model.add_constraint(total.eq(need));
    }
    // Work of each class in each hour is allocated to zones.
    let mut balance: Vec<Vec<Expression>> =
        vec![vec![Expression::from(0.0); n_hours]; classes.len()];
    for (lj, ws) in lp_jobs.iter().zip(&work) {
        for ((h, _), v) in lj.hours.iter().zip(ws) {
            balance[lj.class][(h - h0) as usize].add_mul(1.0, *v);
        }
    }
    for (c, per_hour) in balance.into_iter().enumerate() {
        for (k, mut e) in per_hour.into_iter().enumerate() {
            for z in 0..zones {
                e.add_mul(-1.0, alloc[c][z][k]);
            }
            model.add_constraint(e.eq(0.0));
        }
    }
    // Zone capacity (CPU via the bounds when there is one class; memory, and
    // CPU across classes, here).
    for z in 0..zones {
        let spec = &w.cluster.zones[z];
        let cpu_cap = f64::from(spec.nodes) * f64::from(spec.cpus_per_node);
        let mem_cap = f64::from(spec.nodes) * spec.memory_gb_per_node;
        for k in 0..n_hours {
            if classes.len() > 1 {
                let e: Expression = (0..classes.len()).map(|c| alloc[c][z][k]).sum();
                model.add_constraint(e.leq(cpu_cap));
            }
            let mut m = Expression::from(0.0);
            for (c, ratio) in classes.iter().enumerate() {
                m.add_mul(*ratio as f64 / 100.0, alloc[c][z][k]);
            }
            model.add_constraint(m.leq(mem_cap));
        }
    }
    let sol = model
        .solve()
        .map_err(|e| SimError::Oracle(format!("LP with {} jobs: {e}", jobs.len())))?;
    let grams = sol.eval(&objective);
    let mut usage = BTreeMap::new();
    for per_zone in &alloc {
        for (z, per_hour) in per_zone.iter().enumerate() {
            for (k, v) in per_hour.iter().enumerate() {
                let x = sol.value(*v);
                if x > 1e-9 {
                    *usage.entry((z, h0 + k as i64)).or_insert(0.0) += x;
                }
            }
        }
    }
    Ok((grams, usage))
}

/// The stitched windowed LP bound (see the module docs). `progress` is called
/// after each window with the number of jobs it held.
pub fn windowed_lp(w: &World<'_>, progress: &dyn Fn(u64)) -> Result<LpBound> {
    let mut by_window: BTreeMap<i64, Vec<&Job>> = BTreeMap::new();
    for j in w.jobs {
        let h = (j.arrival - w.traces.start).div_euclid(HOUR);
        by_window
            .entry(h.div_euclid(WINDOW_HOURS))
            .or_default()
            .push(j);
    }
    let mut total = 0.0;
    let mut windows = Vec::new();
    let mut usage = ZoneHourUsage::new();
    for (k, jobs) in by_window {
        let (g, u) = solve_lp(w, &jobs)?;
        let span = jobs
            .iter()
            .map(|j| (j.deadline - w.traces.start).div_euclid(HOUR))
            .max()
            .unwrap_or(0)
            - k * WINDOW_HOURS
            + 1;
        windows.push(WindowResult {
            first_hour: k * WINDOW_HOURS,
            jobs: jobs.len(),
            hours: span,
            kg_co2: g / 1000.0,
        });
        total += g;
        for (key, v) in u {
            *usage.entry(key).or_insert(0.0) += v;
        }
        progress(jobs.len() as u64);
    }
    let mut max_excess: f64 = 0.0;
    let mut excess_hours = 0;
    for ((z, _), v) in &usage {
        let spec = &w.cluster.zones[*z];
        let cap = f64::from(spec.nodes) * f64::from(spec.cpus_per_node);
        if *v > cap + 1e-6 {
            max_excess = max_excess.max(v - cap);
            excess_hours += 1;
        }
    }
    Ok(LpBound {
        kg_co2: total / 1000.0,
        windows,
        max_overlap_excess_cpus: max_excess,
        overlap_excess_zone_hours: excess_hours,
    })
}

/// LP bound and integer schedule on one small slice.
#[derive(Clone, Debug, Serialize)]
pub struct IntegerGap {
    /// Jobs in the slice.
    pub jobs: usize,
    /// LP relaxation (lower bound), kgCO2eq.
    pub lp_kg_co2: f64,
    /// Best non-preemptive schedule on hourly starts (upper bound), kgCO2eq.
    pub integer_kg_co2: f64,
    /// (integer − LP) / LP.
    pub gap: f64,
}

/// Solves the LP and the integer program for the first `max_jobs` batch jobs
/// (long-running services, which span the whole period, are left out).
pub fn integer_gap(w: &World<'_>, max_jobs: usize) -> Result<IntegerGap> {
    let jobs: Vec<&Job> = w
        .jobs
        .iter()
        .filter(|j| j.duration <= 72 * HOUR)
        .take(max_jobs)
        .collect();
    let (lp_g, _) = solve_lp(w, &jobs)?;
    let zones = w.cluster.zones.len();
    let start = w.traces.start;
    let mut vars = ProblemVariables::new();
    let mut objective = Expression::from(0.0);
    let mut per_job: Vec<Expression> = Vec::with_capacity(jobs.len());
    // (zone, hour) -> CPU and memory occupancy expressions
    let mut occ: BTreeMap<(usize, i64), (Expression, Expression)> = BTreeMap::new();
    for j in &jobs {
        let mut starts = vec![j.arrival];
        let mut t = start + ((j.arrival - start).div_euclid(HOUR) + 1) * HOUR;
        while t <= j.latest_start() {
            starts.push(t);
            t += HOUR;
        }
        let mut sum = Expression::from(0.0);
        for z in 0..zones {
            for &s in &starts {
                let x = vars.add(variable().binary());
                let mut g = 0.0;
                w.for_each_hour(j, z, s, |_, grams, _| g += grams);
                objective.add_mul(g, x);
                sum.add_mul(1.0, x);
                let first = (s - start).div_euclid(HOUR);
                let last = (s + j.duration - 1 - start).div_euclid(HOUR);
                for h in first..=last {
                    let e = occ
                        .entry((z, h))
                        .or_insert_with(|| (Expression::from(0.0), Expression::from(0.0)));
                    e.0.add_mul(j.vcpus(), x);
                    e.1.add_mul(j.memory_gb(), x);
                }
            }
        }
        per_job.push(sum);
    }
    let mut model = vars.minimise(objective.clone()).using(microlp);
    for e in per_job {
        model.add_constraint(e.eq(1.0));
    }
    for ((z, _), (cpu, mem)) in occ {
        let spec = &w.cluster.zones[z];
        model.add_constraint(cpu.leq(f64::from(spec.nodes) * f64::from(spec.cpus_per_node)));
        model.add_constraint(mem.leq(f64::from(spec.nodes) * spec.memory_gb_per_node));
    }
    let sol = model
        .solve()
        .map_err(|e| SimError::Oracle(format!("integer program with {} jobs: {e}", jobs.len())))?;
    let int_g = sol.eval(&objective);
    Ok(IntegerGap {
        jobs: jobs.len(),
        lp_kg_co2: lp_g / 1000.0,
        integer_kg_co2: int_g / 1000.0,
        gap: if lp_g > 0.0 {
            (int_g - lp_g) / lp_g
        } else {
            0.0
        },
    })
}
