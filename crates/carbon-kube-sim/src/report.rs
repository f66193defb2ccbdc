//! The report: one row per policy, per-zone breakdown, the oracle, and how
//! the inputs were made. Rendered as a table for people or JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::Outcome;
use crate::forecast::{ErrorModel, SuppliedSummary};
use crate::oracle::{IntegerGap, LpBound};

/// One policy's row.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyRow {
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// (baseline − policy) / baseline, percent.
    pub saving_vs_baseline_pct: f64,
    /// (baseline − policy) / (baseline − LP oracle), percent. The LP lets
    /// jobs pause and split their hours (it is a preemptive relaxation).
    pub share_of_oracle_saving_pct: Option<f64>,
    /// (baseline − policy) / (baseline − per-job optimum), percent: against
    /// whole, unsplit jobs each in its cleanest window (capacity ignored).
    pub share_of_per_job_saving_pct: Option<f64>,
}

/// The oracle's numbers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OracleReport {
    /// Capacity-relaxed per-job optimum, kgCO2eq (a loose lower bound).
    pub per_job_kg_co2: Option<f64>,
    /// The capacity-respecting LP bound: a preemptive relaxation (jobs may
    /// pause, split their hours across zones), so it can sit below the
    /// per-job optimum of whole jobs.
    pub lp: Option<LpBound>,
    /// LP vs integer program on a small slice.
    pub integer_gap: Option<IntegerGap>,
}

/// Everything a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Where the traces came from.
    pub traces: String,
    /// True when the traces are modelled, not real.
    pub modelled_traces: bool,
    /// First hour, UTC.
    pub period_start: String,
    /// End of the last hour, UTC.
    pub period_end: String,
    /// Zones.
    pub zones: Vec<String>,
    /// Where the workload came from.
    pub workload: String,
    /// Jobs simulated.
    pub jobs: usize,
    /// Jobs of the workload outside the period.
    pub jobs_left_out: usize,
    /// Slack added to jobs without deadlines, hours.
    pub slack_hours: f64,
    /// Cluster vCPUs.
    pub cluster_cpus: u64,
    /// Forecast error model.
    pub forecast_error: ErrorModel,
    /// In words.
    pub forecast_error_text: String,
    /// Forecasts supplied with `--forecasts` (None: the error model throughout).
    pub supplied_forecasts: Option<SuppliedSummary>,
    /// The oracle.
    pub oracle: OracleReport,
    /// One row per policy; the first is the baseline.
    pub policies: Vec<PolicyRow>,
    /// Notes for the reader.
    pub notes: Vec<String>,
}

impl Report {
    /// Fills in savings and the cause of each deadline miss from the
    /// outcomes (the baseline is the policy named `baseline`).
    pub fn rows(
        mut outcomes: Vec<Outcome>,
        lp_kg: Option<f64>,
        per_job_kg: Option<f64>,
    ) -> Vec<PolicyRow> {
        let baseline = outcomes.iter().find(|o| o.policy == "baseline").cloned();
        let base = baseline.as_ref().map_or(0.0, |o| o.kg_co2);
        if let Some(b) = &baseline {
            for o in &mut outcomes {
                o.split_misses(b);
            }
        }
        // A policy with migration against the same policy without it.
        let without: Option<f64> = outcomes
            .iter()
            .find(|o| o.policy == "carbon-kube")
            .map(|o| o.kg_co2);
        for o in &mut outcomes {
            if let (Some(m), Some(kg)) = (&mut o.migration, without) {
                m.extra_saving_vs_carbon_kube_kg = Some(kg - o.kg_co2);
                m.extra_saving_vs_carbon_kube_pct =
                    (kg > 0.0).then(|| 100.0 * (kg - o.kg_co2) / kg);
            }
        }
        let share = |bound: Option<f64>, saving: f64| {
            bound
                .filter(|kg| base - kg > 1e-9)
                .map(|kg| 100.0 * saving / (base - kg))
        };
        outcomes
            .into_iter()
            .map(|o| {
                let saving = base - o.kg_co2;
                PolicyRow {
                    saving_vs_baseline_pct: if base > 0.0 {
                        100.0 * saving / base
                    } else {
                        0.0
                    },
                    share_of_oracle_saving_pct: share(lp_kg, saving),
                    share_of_per_job_saving_pct: share(per_job_kg, saving),
                    outcome: o,
                }
            })
            .collect()
    }

    /// The report as a readable table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Carbon-Kube simulation, {} to {}",
            self.period_start, self.period_end
        );
        if self.modelled_traces {
            let _ = writeln!(
                s,
                "NOTE: the carbon traces are MODELLED, not measured: {}.\n      Run on real data with: carbon-kube simulate --traces <folder of Electricity Maps hourly CSV exports> --workload <jobs.csv>",
                self.traces
            );
        } else {
            let _ = writeln!(s, "Traces: {}", self.traces);
        }
        let _ = writeln!(
            s,
            "Zones: {}; cluster {} vCPUs; workload: {} ({} jobs, {} left out of the period; slack {} h)",
            self.zones.join(", "),
            self.cluster_cpus,
            self.workload,
            self.jobs,
            self.jobs_left_out,
            self.slack_hours
        );
        match &self.supplied_forecasts {
            Some(sup) => {
                let _ = writeln!(s, "Forecasts seen by policies: {}", sup.describe());
                if sup.coverage_pct < 100.0 {
                    let _ = writeln!(
                        s,
                        "  fallback where not covered: actual + error, {}",
                        self.forecast_error_text
                    );
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "Forecasts seen by policies: actual + error, {}",
                    self.forecast_error_text
                );
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<24} {:>11} {:>8} {:>9} {:>9} {:>15} {:>9} {:>9} {:>9} {:>10}",
            "policy",
            "kgCO2eq",
            "saving",
            "of LP",
            "of per-job",
            "misses (caused)",
            "delay h",
            "p95 h",
            "peak/h",
            "kWh"
        );
        for r in &self.policies {
            let o = &r.outcome;
            let pct = |p: Option<f64>| p.map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%"));
            let _ = writeln!(
                s,
                "{:<24} {:>11.1} {:>7.1}% {:>9} {:>9} {:>15} {:>9.2} {:>9.2} {:>9} {:>10.0}",
                o.policy,
                o.kg_co2,
                r.saving_vs_baseline_pct,
                pct(r.share_of_oracle_saving_pct),
                pct(r.share_of_per_job_saving_pct),
                format!("{} ({})", o.deadline_misses, o.deadline_misses_caused),
                o.mean_delay_hours,
                o.p95_delay_hours,
                o.peak_releases_per_hour,
                o.energy_kwh
            );
        }
        if let Some(lp) = &self.oracle.lp {
            let base = self
                .policies
                .iter()
                .find(|r| r.outcome.policy == "baseline")
                .map_or(0.0, |r| r.outcome.kg_co2);
            let _ = writeln!(
                s,
                "{:<24} {:>11.1} {:>7.1}%   (LP lower bound with capacity, {} windows, the reference for 'of LP': a preemptive relaxation, jobs may pause and split their hours)",
                "oracle (LP bound)",
                lp.kg_co2,
                if base > 0.0 {
                    100.0 * (base - lp.kg_co2) / base
                } else {
                    0.0
                },
                lp.windows.len()
            );
            if lp.overlap_excess_zone_hours == 0 {
                let _ = writeln!(
                    s,
                    "{:<24} the stitched windows respect capacity everywhere, so this equals the full-period LP",
                    ""
                );
            } else {
                let _ = writeln!(
                    s,
                    "{:<24} overlapping windows together exceed capacity in {} zone-hours (max {:.1} vCPUs): still a valid, slightly looser bound",
                    "", lp.overlap_excess_zone_hours, lp.max_overlap_excess_cpus
                );
            }
        }
        if let Some(pj) = self.oracle.per_job_kg_co2 {
            let _ = writeln!(
                s,
                "{:<24} {:>11.1}   (each whole job alone in its cleanest zone and window, capacity ignored; the reference for 'of per-job')",
                "oracle (per-job)", pj
            );
        }
        if let Some(g) = &self.oracle.integer_gap {
            let _ = writeln!(
                s,
                "integer check on the first {} jobs: LP {:.2} kg, best non-preemptive schedule {:.2} kg (gap {:.2}%)",
                g.jobs,
                g.lp_kg_co2,
                g.integer_kg_co2,
                100.0 * g.gap
            );
        }
        let _ = writeln!(
            s,
            "misses (caused): deadline misses, and in brackets those of jobs the carbon-agnostic baseline finished in time (caused by the policy's deferral or placement); the rest the baseline missed too (capacity)."
        );
        for r in &self.policies {
            if let Some(m) = &r.outcome.migration {
                let _ = writeln!(s);
                let _ = writeln!(s, "{}: {}", r.outcome.policy, m.describe());
            }
        }
        let _ = writeln!(s);
        let _ = write!(s, "{:<24}", "kgCO2eq by zone");
        for z in &self.zones {
            let _ = write!(s, " {z:>12}");
        }
        let _ = writeln!(s);
        for r in &self.policies {
            let _ = write!(s, "{:<24}", r.outcome.policy);
            for z in &r.outcome.zones {
                let _ = write!(s, " {:>12.1}", z.kg_co2);
            }
            let _ = writeln!(s);
        }
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        s
    }
}
