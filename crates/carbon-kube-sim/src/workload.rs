//! The workload (jobs) and the cluster (zones and nodes) a simulation runs.

use std::path::Path;

use carbon_kube_model::{UnixSeconds, ZoneId};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};

use crate::energy::EnergyModel;
use crate::error::{Result, SimError};
use crate::trace::{HOUR, TraceSet};

/// One batch job (or a long-running service, which is a job with no slack).
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Index in the workload.
    pub id: u32,
    /// When the job is submitted.
    pub arrival: UnixSeconds,
    /// How long it runs, seconds.
    pub duration: i64,
    /// CPU request, millicores.
    pub cpu_millis: u64,
    /// Memory request, MiB.
    pub memory_mib: u64,
    /// When it must have finished.
    pub deadline: UnixSeconds,
    /// Whether it may be paused (only the oracle's per-job bound uses it).
    pub interruptible: bool,
}

impl Job {
    /// vCPUs as a number.
    pub fn vcpus(&self) -> f64 {
        self.cpu_millis as f64 / 1000.0
    }

    /// Memory in GB.
    pub fn memory_gb(&self) -> f64 {
        self.memory_mib as f64 / 1024.0
    }

    /// The latest start that meets the deadline.
    pub fn latest_start(&self) -> UnixSeconds {
        self.deadline - self.duration
    }
}

/// How to turn a trace's rows into jobs.
#[derive(Clone, Debug)]
pub struct JobDefaults {
    /// Deadline = arrival + length + slack for rows without a deadline, seconds.
    pub slack_seconds: i64,
    /// Whether jobs may be paused, for rows that do not say.
    pub interruptible: bool,
    /// Memory per vCPU for rows without memory, GB.
    pub memory_gb_per_vcpu: f64,
}

/// Reads a job trace CSV: `arrival_time,length,cpus` in hours from the start
/// of the carbon traces (as in GAIA's `azure-100k.csv`), with optional columns
/// `memory_gb`, `deadline` (hours from the start), `interruptible`.
pub fn read_jobs_csv(path: &Path, start: UnixSeconds, defaults: &JobDefaults) -> Result<Vec<Job>> {
    let file = std::fs::File::open(path).map_err(|source| SimError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_jobs(path, file, start, defaults)
}

/// Reads a job trace from any reader; `path` names it in errors.
pub fn read_jobs(
    path: &Path,
    reader: impl std::io::Read,
    start: UnixSeconds,
    defaults: &JobDefaults,
) -> Result<Vec<Job>> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| SimError::file(path, format!("cannot read the CSV header: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            SimError::file(
                path,
                format!("no column {name:?} in the header (need arrival_time,length,cpus)"),
            )
        })
    };
    let (ca, cl, cc) = (need("arrival_time")?, need("length")?, need("cpus")?);
    let (cm, cd, ci) = (col("memory_gb"), col("deadline"), col("interruptible"));
    let mut jobs = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let rec = rec.map_err(|e| SimError::field(path, line, "row", e.to_string()))?;
        let num = |c: usize, name: &str| -> Result<f64> {
            let raw = rec.get(c).unwrap_or("");
            let v: f64 = raw.parse().map_err(|_| {
                SimError::field(path, line, name, format!("{raw:?} is not a number"))
            })?;
            if !v.is_finite() {
                return Err(SimError::field(
                    path,
                    line,
                    name,
                    format!("{raw:?} is not finite"),
                ));
            }
            Ok(v)
        };
        let arrival_h = num(ca, "arrival_time")?;
        if arrival_h < 0.0 {
            return Err(SimError::field(
                path,
                line,
                "arrival_time",
                format!("{arrival_h} is negative"),
            ));
        }
        let length_h = num(cl, "length")?;
        if length_h <= 0.0 {
            return Err(SimError::field(
                path,
                line,
                "length",
                format!("{length_h} is not a positive duration"),
            ));
        }
        let cpus = num(cc, "cpus")?;
        if cpus <= 0.0 {
            return Err(SimError::field(
                path,
                line,
                "cpus",
                format!("{cpus} is not a positive CPU count"),
            ));
        }
        let memory_gb = match cm.and_then(|c| rec.get(c)).filter(|s| !s.is_empty()) {
            Some(_) => {
                let m = num(cm.unwrap_or(0), "memory_gb")?;
                if m < 0.0 {
                    return Err(SimError::field(
                        path,
                        line,
                        "memory_gb",
                        format!("{m} is negative"),
                    ));
                }
                m
            }
            None => cpus * defaults.memory_gb_per_vcpu,
        };
        let arrival = start + (arrival_h * HOUR as f64).round() as i64;
        let duration = ((length_h * HOUR as f64).round() as i64).max(1);
        let deadline = match cd.and_then(|c| rec.get(c)).filter(|s| !s.is_empty()) {
            Some(_) => {
                let d = num(cd.unwrap_or(0), "deadline")?;
                let dl = start + (d * HOUR as f64).round() as i64;
                if dl < arrival + duration {
                    return Err(SimError::field(
                        path,
                        line,
                        "deadline",
                        format!(
                            "{d} h is before arrival + length ({} h)",
                            arrival_h + length_h
                        ),
                    ));
                }
                dl
            }
            None => arrival + duration + defaults.slack_seconds,
        };
        let interruptible = match ci.and_then(|c| rec.get(c)).filter(|s| !s.is_empty()) {
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => {
                    return Err(SimError::field(
                        path,
                        line,
                        "interruptible",
                        format!("{other:?} is not true or false"),
                    ));
                }
            },
            None => defaults.interruptible,
        };
        jobs.push(Job {
            id: 0,
            arrival,
            duration,
            cpu_millis: (cpus * 1000.0).round() as u64,
            memory_mib: (memory_gb * 1024.0).round() as u64,
            deadline,
            interruptible,
        });
    }
    if jobs.is_empty() {
        return Err(SimError::file(path, "the workload has no jobs"));
    }
    Ok(finish(jobs))
}

/// Sorts jobs by arrival and numbers them.
pub fn finish(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort_by_key(|j| j.arrival);
    for (i, j) in jobs.iter_mut().enumerate() {
        j.id = i as u32;
    }
    jobs
}

/// Keeps the jobs that arrive inside the traces, clamping deadlines to the
/// traces' end. Returns the jobs kept and how many were left out (arrival
/// outside, or cannot finish before the end).
pub fn fit_to_period(jobs: Vec<Job>, start: UnixSeconds, end: UnixSeconds) -> (Vec<Job>, usize) {
    let n = jobs.len();
    let kept: Vec<Job> = jobs
        .into_iter()
        .filter(|j| j.arrival >= start && j.arrival + j.duration <= end)
        .map(|mut j| {
            j.deadline = j.deadline.min(end);
            j
        })
        .collect();
    let dropped = n - kept.len();
    (finish(kept), dropped)
}

/// Generated workload parameters (for scenario files and the default scenario).
/// Defaults mirror GAIA's Azure-derived trace: about 11.4 jobs an hour, mean
/// length 3.8 h, and its CPU mix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratedWorkload {
    /// Mean arrivals per hour.
    pub jobs_per_hour: f64,
    /// Median job length, hours (log-normal).
    pub median_length_hours: f64,
    /// Log-normal sigma of the length.
    pub length_sigma: f64,
    /// Longest job, hours.
    pub max_length_hours: f64,
    /// CPU counts and their weights.
    pub cpu_mix: Vec<(u32, f64)>,
    /// Long-running services (start at hour 0, run the whole period, no slack).
    pub services: u32,
    /// vCPUs per service.
    pub service_cpus: u32,
}

impl Default for GeneratedWorkload {
    fn default() -> Self {
        Self {
            jobs_per_hour: 11.4,
            median_length_hours: 1.5,
            length_sigma: 1.3,
            max_length_hours: 72.0,
            cpu_mix: vec![(2, 0.581), (4, 0.302), (8, 0.077), (24, 0.035), (30, 0.005)],
            services: 6,
            service_cpus: 4,
        }
    }
}

impl GeneratedWorkload {
    /// Draws a workload over `[start, start + hours)`, deterministic in `seed`.
    pub fn generate(
        &self,
        start: UnixSeconds,
        hours: usize,
        seed: u64,
        defaults: &JobDefaults,
    ) -> Vec<Job> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5EED_F00D);
        let lengths = LogNormal::new(
            self.median_length_hours.max(0.01).ln(),
            self.length_sigma.max(0.0),
        )
        .unwrap_or_else(|_| LogNormal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!()));
        let total_w: f64 = self.cpu_mix.iter().map(|(_, w)| w).sum();
        let end = start + HOUR * hours as i64;
        let mut jobs = Vec::new();
        for _ in 0..self.services {
            let cpus = u64::from(self.service_cpus);
            jobs.push(Job {
                id: 0,
                arrival: start,
                duration: end - start,
                cpu_millis: cpus * 1000,
                memory_mib: (cpus as f64 * defaults.memory_gb_per_vcpu * 1024.0) as u64,
                deadline: end,
                interruptible: false,
            });
        }
        let mut t = start as f64;
        loop {
            let u: f64 = rng.random::<f64>().max(1e-12);
            t += -u.ln() / self.jobs_per_hour.max(1e-6) * HOUR as f64;
            let arrival = (t / 300.0).round() as i64 * 300;
            if arrival >= end {
                break;
            }
            let len_h: f64 = lengths
                .sample(&mut rng)
                .clamp(1.0 / 6.0, self.max_length_hours);
            let duration = ((len_h * 12.0).round() as i64).max(1) * 300;
            let mut pick = rng.random::<f64>() * total_w;
            let mut cpus = self.cpu_mix.first().map_or(2, |c| c.0);
            for (c, w) in &self.cpu_mix {
                if pick < *w {
                    cpus = *c;
                    break;
                }
                pick -= w;
            }
            jobs.push(Job {
                id: 0,
                arrival,
                duration,
                cpu_millis: u64::from(cpus) * 1000,
                memory_mib: (f64::from(cpus) * defaults.memory_gb_per_vcpu * 1024.0) as u64,
                deadline: arrival + duration + defaults.slack_seconds,
                interruptible: defaults.interruptible,
            });
        }
        fit_to_period(jobs, start, end).0
    }
}

/// One zone of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    /// Grid zone of the zone's nodes (must have a carbon trace).
    pub zone: ZoneId,
    /// Number of nodes.
    pub nodes: u32,
    /// vCPUs per node.
    pub cpus_per_node: u32,
    /// Memory per node, GB.
    pub memory_gb_per_node: f64,
    /// Power model of the zone's machines (defaults: Cloud Carbon Footprint).
    #[serde(default)]
    pub energy: EnergyModel,
}

/// The cluster: zones with nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// The zones.
    pub zones: Vec<ZoneSpec>,
}

impl ClusterSpec {
    /// Reads a cluster file (YAML or JSON).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.to_owned(),
            source,
        })?;
        let spec: Self = serde_saphyr::from_str(&text)
            .map_err(|e| SimError::file(path, format!("not a valid cluster file: {e}")))?;
        spec.validate().map_err(|m| SimError::file(path, m))?;
        Ok(spec)
    }

    /// Checks the spec.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.zones.is_empty() {
            return Err("zones: the cluster has no zones".into());
        }
        for (i, z) in self.zones.iter().enumerate() {
            if z.nodes == 0
                || z.cpus_per_node == 0
                || z.memory_gb_per_node.is_nan()
                || z.memory_gb_per_node <= 0.0
            {
                return Err(format!(
                    "zones[{i}] ({}): nodes, cpus_per_node and memory_gb_per_node must be positive",
                    z.zone
                ));
            }
            z.energy
                .validate()
                .map_err(|e| format!("zones[{i}].energy: {e}"))?;
        }
        Ok(())
    }

    /// One zone per trace, equal capacity per zone, total vCPUs about
    /// `factor` times the workload's peak CPU demand, in nodes of 32 vCPUs
    /// (4 GB per vCPU).
    pub fn default_for(traces: &TraceSet, jobs: &[Job], factor: f64) -> Self {
        let peak = peak_cpu_millis(jobs) as f64 / 1000.0;
        let zones = traces.zones.len().max(1);
        let per_zone = (peak * factor / zones as f64).max(32.0);
        let largest = jobs.iter().map(|j| j.cpu_millis).max().unwrap_or(0) as f64 / 1000.0;
        let node_cpus = 32.0f64.max(largest.ceil());
        let nodes = (per_zone / node_cpus).ceil().max(1.0) as u32;
        Self {
            zones: traces
                .zones
                .iter()
                .map(|t| ZoneSpec {
                    zone: t.zone.clone(),
                    nodes,
                    cpus_per_node: node_cpus as u32,
                    memory_gb_per_node: node_cpus * 4.0,
                    energy: EnergyModel::default(),
                })
                .collect(),
        }
    }

    /// Total vCPUs.
    pub fn total_cpus(&self) -> u64 {
        self.zones
            .iter()
            .map(|z| u64::from(z.nodes) * u64::from(z.cpus_per_node))
            .sum()
    }
}

/// The largest CPU demand of the workload at any instant, if every job ran at arrival.
pub fn peak_cpu_millis(jobs: &[Job]) -> u64 {
    let mut ev: Vec<(i64, i64)> = Vec::with_capacity(jobs.len() * 2);
    for j in jobs {
        ev.push((j.arrival, j.cpu_millis as i64));
        ev.push((j.arrival + j.duration, -(j.cpu_millis as i64)));
    }
    ev.sort();
    let (mut cur, mut peak) = (0i64, 0i64);
    for (_, d) in ev {
        cur += d;
        peak = peak.max(cur);
    }
    peak.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> JobDefaults {
        JobDefaults {
            slack_seconds: 24 * HOUR,
            interruptible: false,
            memory_gb_per_vcpu: 4.0,
        }
    }

    #[test]
    fn reads_the_gaia_format() {
        let jobs = read_jobs(
            Path::new("w.csv"),
            "arrival_time,length,cpus\n1.5,0.75,4\n0.0,2.0,2\n".as_bytes(),
            1000,
            &defaults(),
        )
        .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[0].arrival, jobs[0].duration, jobs[0].cpu_millis),
            (1000, 7200, 2000)
        );
        assert_eq!(jobs[1].arrival, 1000 + 5400);
        assert_eq!(jobs[1].deadline, 1000 + 5400 + 2700 + 24 * 3600);
        assert_eq!(jobs[1].memory_mib, 16 * 1024);
    }

    #[test]
    fn bad_rows_name_file_line_and_field() {
        let cases = [
            (
                "arrival_time,length,cpus\n1,-2,4\n",
                "w.csv:2: field `length`: -2 is not a positive duration",
            ),
            (
                "arrival_time,length,cpus\n1,2,4\nx,2,4\n",
                "w.csv:3: field `arrival_time`: \"x\" is not a number",
            ),
            ("arrival_time,length,cpus\n1,2,0\n", "w.csv:2: field `cpus`"),
            (
                "arrival_time,length,cpus,deadline\n5,2,1,6\n",
                "w.csv:2: field `deadline`",
            ),
            (
                "arrival_time,length,cpus,interruptible\n5,2,1,maybe\n",
                "w.csv:2: field `interruptible`",
            ),
            ("arrival_time,cpus\n1,2\n", "w.csv: no column \"length\""),
            (
                "arrival_time,length,cpus\n",
                "w.csv: the workload has no jobs",
            ),
        ];
        for (body, want) in cases {
            let err = read_jobs(Path::new("w.csv"), body.as_bytes(), 0, &defaults())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn peak_demand_counts_overlaps() {
        let j = |a: i64, d: i64, c: u64| Job {
            id: 0,
            arrival: a,
            duration: d,
            cpu_millis: c,
            memory_mib: 0,
            deadline: a + d,
            interruptible: false,
        };
        assert_eq!(
            peak_cpu_millis(&[j(0, 10, 1000), j(5, 10, 2000), j(10, 5, 500)]),
            3000
        );
    }
}
