//! Kubernetes resource quantities: carbon-kube-k8s's parser, re-exported
//! (the extender, the gate controller and the migrator read requests the
//! same way).

pub use carbon_kube_k8s::quantity::{cpu_millis, memory_bytes};
