//! Energy per job, after Cloud Carbon Footprint's methodology: CPU power per
//! vCPU interpolated between idle and full load at an average utilisation,
//! plus memory power per GB, times the data centre's PUE.
//!
//! Defaults: the mean `Min Watts` and `Max Watts` per vCPU over the CPU
//! microarchitectures in Cloud Carbon Footprint's AWS coefficients
//! (`cloud-carbon-coefficients`, `output/coefficients-aws-use.csv`, Apache-2.0),
//! and CCF's published memory coefficient (0.392 W/GB), AWS PUE (1.135) and
//! default utilisation (50 %).

use serde::{Deserialize, Serialize};

/// Mean idle watts per vCPU over CCF's AWS microarchitectures.
pub const CCF_AWS_MIN_WATTS_PER_VCPU: f64 = 1.135;
/// Mean full-load watts per vCPU over CCF's AWS microarchitectures.
pub const CCF_AWS_MAX_WATTS_PER_VCPU: f64 = 4.340;
/// CCF's memory coefficient, watts per GB.
pub const CCF_MEMORY_WATTS_PER_GB: f64 = 0.392;
/// CCF's PUE for AWS.
pub const CCF_AWS_PUE: f64 = 1.135;
/// CCF's default average CPU utilisation when none is known.
pub const CCF_DEFAULT_UTILISATION: f64 = 0.5;

/// Power model of the machines a zone runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergyModel {
    /// Watts per vCPU at idle.
    pub min_watts_per_vcpu: f64,
    /// Watts per vCPU at full load.
    pub max_watts_per_vcpu: f64,
    /// Average CPU utilisation of a running job, 0..=1.
    pub cpu_utilisation: f64,
    /// Watts per GB of memory.
    pub memory_watts_per_gb: f64,
    /// Power usage effectiveness of the data centre.
    pub pue: f64,
}

impl Default for EnergyModel {
    fn default() -> Self {
        Self {
            min_watts_per_vcpu: CCF_AWS_MIN_WATTS_PER_VCPU,
            max_watts_per_vcpu: CCF_AWS_MAX_WATTS_PER_VCPU,
            cpu_utilisation: CCF_DEFAULT_UTILISATION,
            memory_watts_per_gb: CCF_MEMORY_WATTS_PER_GB,
            pue: CCF_AWS_PUE,
        }
    }
}

impl EnergyModel {
    /// Facility power of a job, kW.
    pub fn job_kw(&self, vcpus: f64, memory_gb: f64) -> f64 {
        let cpu_w = vcpus
            * (self.min_watts_per_vcpu
                + self.cpu_utilisation * (self.max_watts_per_vcpu - self.min_watts_per_vcpu));
        let mem_w = memory_gb * self.memory_watts_per_gb;
        (cpu_w + mem_w) * self.pue / 1000.0
    }

    /// Idle facility power of `vcpus` vCPUs, kW: what the machine draws for
    /// them doing nothing (`min_watts_per_vcpu`, times PUE). The accounting
    /// controller allocates it to pods as their idle share.
    pub fn idle_kw(&self, vcpus: f64) -> f64 {
        vcpus * self.min_watts_per_vcpu * self.pue / 1000.0
    }

    /// Facility power above idle of `busy_cores` fully busy cores (CPU usage
    /// in cores), kW. [`Self::job_kw`] is `idle_kw(vcpus)` plus this for
    /// `vcpus × cpu_utilisation` busy cores plus [`Self::memory_kw`].
    pub fn dynamic_cpu_kw(&self, busy_cores: f64) -> f64 {
        busy_cores * (self.max_watts_per_vcpu - self.min_watts_per_vcpu) * self.pue / 1000.0
    }

    /// Facility power of `memory_gb` GB of memory, kW.
    pub fn memory_kw(&self, memory_gb: f64) -> f64 {
        memory_gb * self.memory_watts_per_gb * self.pue / 1000.0
    }

    /// Checks the model's ranges.
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min_watts_per_vcpu >= 0.0
            && self.max_watts_per_vcpu >= self.min_watts_per_vcpu
            && (0.0..=1.0).contains(&self.cpu_utilisation)
            && self.memory_watts_per_gb >= 0.0
            && self.pue >= 1.0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "energy model out of range: {self:?} (need 0 <= min <= max watts, utilisation in 0..=1, PUE >= 1)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_four_vcpu_job_draws_tens_of_watts() {
        let kw = EnergyModel::default().job_kw(4.0, 16.0);
        // 4 × (1.135 + 0.5 × 3.205) + 16 × 0.392 = 17.22 W, × 1.135.
        assert!((kw - 0.019_545).abs() < 1e-5, "{kw}");
    }

    #[test]
    fn idle_plus_dynamic_plus_memory_is_the_job_power() {
        let m = EnergyModel::default();
        let parts = m.idle_kw(4.0) + m.dynamic_cpu_kw(4.0 * m.cpu_utilisation) + m.memory_kw(16.0);
        assert!((parts - m.job_kw(4.0, 16.0)).abs() < 1e-12, "{parts}");
    }
}
