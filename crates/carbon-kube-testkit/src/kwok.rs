//! kwok: fake nodes and the lifecycle of pods bound to them.
//!
//! The stage files under `kwok/` are copied unchanged from kwok v0.8.0's
//! `kustomize/stage` ("fast" set): nodes become Ready at once and keep their
//! lease, pods on fake nodes become Running and Ready at once, pods owned by a
//! Job then succeed, and deleted pods lose their finalizers and go away.

/// Annotation that makes kwok manage a node.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// Value of [`KWOK_NODE_ANNOTATION`] kwok is told to select on.
pub const KWOK_NODE_ANNOTATION_VALUE: &str = "fake";

/// `(file name, contents)` of the stage configurations given to kwok.
pub(crate) const STAGES: [(&str, &str); 5] = [
    (
        "node-initialize.yaml",
        include_str!("../kwok/node-initialize.yaml"),
    ),
    (
        "node-heartbeat-with-lease.yaml",
        include_str!("../kwok/node-heartbeat-with-lease.yaml"),
    ),
    ("pod-ready.yaml", include_str!("../kwok/pod-ready.yaml")),
    (
        "pod-complete.yaml",
        include_str!("../kwok/pod-complete.yaml"),
    ),
    ("pod-delete.yaml", include_str!("../kwok/pod-delete.yaml")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_a_kwok_stage_with_its_file_name() {
        for (file, contents) in STAGES {
            let value: serde_json::Value = serde_saphyr::from_str(contents).unwrap();
            assert_eq!(value["apiVersion"], "kwok.x-k8s.io/v1alpha1", "{file}");
            assert_eq!(value["kind"], "Stage", "{file}");
            let name = value["metadata"]["name"].as_str().unwrap();
            assert_eq!(format!("{name}.yaml"), file);
        }
    }
}
