//! Energy per job: the policy crate's [`EnergyModel`] (Cloud Carbon
//! Footprint's methodology), re-exported here so that the simulator and the
//! migrator's `migration` rule use the same pod-power function.

pub use carbon_kube_policy::energy::{
    CCF_AWS_MAX_WATTS_PER_VCPU, CCF_AWS_MIN_WATTS_PER_VCPU, CCF_AWS_PUE, CCF_DEFAULT_UTILISATION,
    CCF_MEMORY_WATTS_PER_GB, EnergyModel,
};
