#![allow(dead_code)]
//! Builders for unit tests: pods and nodes whose names say their intent.

use std::collections::BTreeMap;

use carbon_kube_model::keys;
use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, NodeSpec, NodeStatus, Pod, PodSchedulingGate, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

/// A pod under construction.
#[derive(Clone, Debug)]
pub struct PodBuilder {
    pod: Pod,
}

/// A pod named `name` in namespace `batch` with one container and no requests.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("batch".to_owned()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("busybox".into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        },
    }
}

/// `b` with Carbon-Kube's gate.
pub fn gated(b: PodBuilder) -> PodBuilder {
    b.gate(keys::SCHEDULING_GATE)
}

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.pod.spec.get_or_insert_with(PodSpec::default)
    }

    /// An annotation.
    pub fn annotate(mut self, k: &str, v: &str) -> Self {
        self.pod
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.to_owned(), v.to_owned());
        self
    }

    /// A scheduling gate.
    pub fn gate(mut self, name: &str) -> Self {
        self.spec()
            .scheduling_gates
            .get_or_insert_with(Vec::new)
            .push(PodSchedulingGate {
                name: name.to_owned(),
            });
        self
    }

    /// `spec.nodeName`.
    pub fn node_name(mut self, n: &str) -> Self {
        self.spec().node_name = Some(n.to_owned());
        self
    }

    /// An owner of kind `kind`.
    pub fn owned_by(mut self, kind: &str) -> Self {
        self.pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "owner".into(),
            uid: "owner-uid".into(),
            ..OwnerReference::default()
        }]);
        self
    }

    /// A nodeSelector entry.
    pub fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.spec()
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(k.to_owned(), v.to_owned());
        self
    }

    /// A required node affinity term `key In values`.
    pub fn require(mut self, key: &str, values: &[&str]) -> Self {
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.to_owned(),
                operator: "In".to_owned(),
                values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
            match_fields: None,
        };
        let affinity = self.spec().affinity.get_or_insert_with(Affinity::default);
        let na = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        na.required_during_scheduling_ignored_during_execution
            .get_or_insert_with(|| NodeSelector {
                node_selector_terms: Vec::new(),
            })
            .node_selector_terms
            .push(term);
        self
    }

    /// A CPU request on the container.
    pub fn cpu(mut self, q: &str) -> Self {
        if let Some(c) = self.spec().containers.first_mut() {
            c.resources = Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity(q.to_owned()))])),
                ..ResourceRequirements::default()
            });
        }
        self
    }

    /// `metadata.creationTimestamp`.
    pub fn created(mut self, t: i64) -> Self {
        self.pod.metadata.creation_timestamp =
            Some(Time(jiff::Timestamp::from_second(t).expect("valid time")));
        self
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(mut self, rv: &str) -> Self {
        self.pod.metadata.resource_version = Some(rv.to_owned());
        self
    }

    /// The pod.
    pub fn build(&self) -> Pod {
        self.pod.clone()
    }
}

/// A node labelled with grid zone `zone` and `cpu` cores.
pub fn node_in_zone(name: &str, zone: &str, cpu: &str) -> Node {
    node_with_labels(
        name,
        &[
            (keys::LABEL_GRID_ZONE, zone),
            ("kubernetes.io/hostname", name),
        ],
        cpu,
    )
}

/// A node with these labels.
pub fn node_with_labels(name: &str, labels: &[(&str, &str)], cpu: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity("16Gi".to_owned())),
            ])),
            ..NodeStatus::default()
        }),
    }
}
