//! Kubernetes objects to the plain views `carbon_kube_policy::migration`
//! takes: which pods may move at all ([`pod_facts`]), their requests, the
//! nodes with their free room, and the nodes a replacement could use.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use carbon_kube_k8s::node_match::{NodeFacts, pod_requests};
use carbon_kube_k8s::quantity::{cpu_millis, memory_bytes};
use carbon_kube_model::migration::ZoneSelector;
use carbon_kube_model::{UnixSeconds, ZoneId, keys};
use carbon_kube_policy::migration::{OwnerKind, PodFacts};
use carbon_kube_policy::placement::PodView;
use carbon_kube_policy::zone_map::{
    NodeView, RegionZoneMap, Resources, ZoneResolution, ZoneVia, node_zone,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};

/// The pod's controller owner: kind, name, uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `ReplicaSet`, `StatefulSet`, `Job`, …
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
}

impl Owner {
    /// The policy's kind.
    pub fn policy_kind(&self) -> OwnerKind {
        match self.kind.as_str() {
            "ReplicaSet" => OwnerKind::ReplicaSet,
            "StatefulSet" => OwnerKind::StatefulSet,
            "Job" => OwnerKind::Job,
            "DaemonSet" => OwnerKind::DaemonSet,
            "Node" => OwnerKind::Node,
            _ => OwnerKind::Other,
        }
    }
}

/// The pod's controller owner reference, if any.
pub fn owner(pod: &Pod) -> Option<Owner> {
    pod.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| Owner {
            kind: r.kind.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        })
}

/// The opt-in value on the pod, else on its namespace's labels.
fn opt_in<'a>(pod: &'a Pod, namespace_labels: Option<&'a BTreeMap<String, String>>) -> &'a str {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::MIGRATE))
        .or_else(|| namespace_labels.and_then(|l| l.get(keys::MIGRATE)))
        .map_or("", |v| v.trim())
}

/// Whether a Job would replace an evicted pod: it is not finished and its
/// `backoffLimit` (default 6) has room for one more failure (an evicted pod
/// counts as failed unless a pod failure policy ignores disruptions).
pub fn job_recreates(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    let status = job.status.as_ref();
    let finished = status.and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
        c.iter()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    });
    if finished {
        return false;
    }
    let ignores_disruption = spec
        .and_then(|s| s.pod_failure_policy.as_ref())
        .is_some_and(|p| {
            p.rules.iter().any(|r| {
                r.action == "Ignore"
                    && r.on_pod_conditions
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "DisruptionTarget")
            })
        });
    let limit = spec.and_then(|s| s.backoff_limit).unwrap_or(6);
    let failed = status.and_then(|s| s.failed).unwrap_or(0);
    ignores_disruption || failed < limit
}

/// The facts `eligibility` decides on. `job_recreates` is only read for Job pods.
pub fn pod_facts(
    pod: &Pod,
    namespace_labels: Option<&BTreeMap<String, String>>,
    job_recreates: bool,
) -> PodFacts {
    let annotations = pod.metadata.annotations.as_ref();
    let spec = pod.spec.as_ref();
    let value = opt_in(pod, namespace_labels).to_ascii_lowercase();
    let critical_class = spec
        .and_then(|s| s.priority_class_name.as_deref())
        .is_some_and(|c| c == "system-cluster-critical" || c == "system-node-critical");
    let local_storage = spec.and_then(|s| s.volumes.as_ref()).is_some_and(|v| {
        v.iter().any(|v| {
            v.host_path.is_some()
                || v.empty_dir.as_ref().is_some_and(|e| {
                    e.size_limit.is_some() || e.medium.as_deref() == Some("Memory")
                })
        })
    });
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    PodFacts {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        owner: owner(pod).map(|o| o.policy_kind()),
        opted_in: value == "true",
        stateful_opt_in: value == "statefulset",
        job_recreates,
        mirror: annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
        system_critical: critical_class
            || spec
                .and_then(|s| s.priority)
                .is_some_and(|p| p >= 2_000_000_000),
        local_storage,
        opted_out: annotations
            .and_then(|a| a.get(keys::ANNOTATION_OPT_OUT))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        not_running: phase != Some("Running")
            || pod.metadata.deletion_timestamp.is_some()
            || spec
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty),
    }
}

/// Drops what the migrator never reads from a cached pod, so that a cache
/// of 50,000 pods holds what the cycle needs and little else: managed
/// fields (the largest part of a pod from the API server), labels, status
/// other than the phase and start time, the containers' commands,
/// environment, mounts, ports and probes, pod (anti-)affinity, and volumes
/// other than the `hostPath` and `emptyDir` ones eligibility looks at.
/// Kept: name, namespace, uid, resourceVersion, annotations, owner
/// references, timestamps, the node, selector, node affinity, tolerations,
/// priority, requests and overhead (what [`pod_facts`], [`pod_view`], node
/// matching, Events and the Eviction read).
pub fn trim_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.labels = None;
    p.metadata.generate_name = None;
    if let Some(status) = p.status.as_mut() {
        *status = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            start_time: status.start_time.take(),
            ..Default::default()
        };
    }
    if let Some(spec) = p.spec.as_mut() {
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| v.host_path.is_some() || v.empty_dir.is_some());
        }
        if let Some(affinity) = spec.affinity.as_mut() {
            affinity.pod_affinity = None;
            affinity.pod_anti_affinity = None;
        }
        spec.security_context = None;
        spec.dns_config = None;
        spec.host_aliases = None;
        spec.image_pull_secrets = None;
        spec.readiness_gates = None;
        spec.topology_spread_constraints = None;
        spec.resource_claims = None;
        spec.ephemeral_containers = None;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            *c = k8s_openapi::api::core::v1::Container {
                name: std::mem::take(&mut c.name),
                resources: c.resources.take().map(|r| {
                    k8s_openapi::api::core::v1::ResourceRequirements {
                        requests: r.requests,
                        ..Default::default()
                    }
                }),
                restart_policy: c.restart_policy.take(),
                ..Default::default()
            };
        }
    }
}

/// The pod as the placement and migration rules see it.
pub fn pod_view(pod: &Pod) -> PodView {
    let (cpu, mem) = pod.spec.as_ref().map_or((0, 0), pod_requests);
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        requests: Resources::new(cpu, mem),
    }
}

/// When the pod started running (its `status.startTime`, else creation).
pub fn started_at(pod: &Pod) -> Option<UnixSeconds> {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_second())
}

/// The pod's `carbon-kube.io/last-checkpoint` (RFC 3339), if readable.
pub fn last_checkpoint(pod: &Pod) -> Option<UnixSeconds> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(keys::ANNOTATION_LAST_CHECKPOINT)?
        .trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// The pod's deadline from `carbon-kube.io/deadline` (RFC 3339), if set
/// and readable. (An unreadable one was already reported by the gate that
/// admitted the pod; here it counts as none.)
pub fn deadline(pod: &Pod) -> Option<UnixSeconds> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(keys::ANNOTATION_DEADLINE)?
        .trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// Expected remaining run from `carbon-kube.io/expected-duration` (a
/// duration such as `2h`, counted from the start), if set.
pub fn expected_remaining(pod: &Pod, now: UnixSeconds) -> Option<i64> {
    let d = pod
        .metadata
        .annotations
        .as_ref()?
        .get(keys::ANNOTATION_EXPECTED_DURATION)?;
    let secs = humantime::parse_duration(d.trim()).ok()?.as_secs();
    let start = started_at(pod)?;
    Some((start + i64::try_from(secs).ok()? - now).max(0))
}

/// A node as the rules see it, with what matching needs.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    /// Name, labels, allocatable and requested room.
    pub view: NodeView,
    /// Its zone.
    pub zone: ZoneResolution,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Cordoned.
    pub unschedulable: bool,
}

impl NodeEntry {
    /// What node matching reads.
    pub fn facts(&self) -> NodeFacts<'_> {
        NodeFacts {
            name: &self.view.name,
            labels: &self.view.labels,
            taints: &self.taints,
            unschedulable: self.unschedulable,
        }
    }
}

/// Nodes with their zone and the room the bound pods take.
pub fn node_entries<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    bound: impl Iterator<Item = &'a Pod>,
    region_map: &RegionZoneMap,
) -> HashMap<String, NodeEntry> {
    let mut requested: HashMap<&str, Resources> = HashMap::new();
    for p in bound {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let (cpu, mem) = p.spec.as_ref().map_or((0, 0), pod_requests);
        let e = requested.entry(node).or_default();
        *e = e.saturating_add(Resources::new(cpu, mem));
    }
    nodes
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let q = |k: &str, f: fn(&str) -> Option<i64>| {
                n.status
                    .as_ref()
                    .and_then(|s| s.allocatable.as_ref())
                    .and_then(|a| a.get(k))
                    .and_then(|q| f(&q.0))
                    .unwrap_or(0)
            };
            let view = NodeView {
                name: name.clone(),
                labels: n.metadata.labels.clone().unwrap_or_default(),
                provider_id: n.spec.as_ref().and_then(|s| s.provider_id.clone()),
                allocatable: Resources::new(q("cpu", cpu_millis), q("memory", memory_bytes)),
                requested: requested.get(name.as_str()).copied().unwrap_or_default(),
            };
            let zone = node_zone(&view, region_map);
            let spec = n.spec.as_ref();
            let entry = NodeEntry {
                view,
                zone,
                taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
                unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            };
            (name, entry)
        })
        .collect()
}

/// The node labels that select `zone`'s nodes among `nodes`: the
/// `carbon-kube.io/grid-zone` values of nodes zoned by that label, and the
/// `topology.kubernetes.io/region` values of nodes zoned by their region
/// (the gate controller's zone affinity has the same two shapes). Empty
/// when no node of the zone is known.
pub fn zone_selector<'a>(
    zone: &ZoneId,
    nodes: impl IntoIterator<Item = &'a NodeEntry>,
) -> ZoneSelector {
    let mut by_label = BTreeSet::new();
    let mut by_region = BTreeSet::new();
    for n in nodes {
        if n.zone.zone.as_ref() != Some(zone) {
            continue;
        }
        match n.zone.via {
            ZoneVia::Label => {
                if let Some(v) = n.view.labels.get(keys::LABEL_GRID_ZONE) {
                    by_label.insert(v.clone());
                }
            }
            ZoneVia::UserMap { .. } | ZoneVia::CloudRegion { .. } => {
                if let Some(v) = n.view.labels.get(keys::LABEL_REGION) {
                    by_region.insert(v.clone());
                }
            }
            ZoneVia::Unknown(_) => {}
        }
    }
    ZoneSelector {
        grid_zone_values: by_label.into_iter().collect(),
        region_values: by_region.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_kube_policy::migration::{Ineligible, WorkloadKind, eligibility};
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec, PodStatus, Volume};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::Resource as _;
    use kube::api::ObjectMeta;

    fn running(kind: &str, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: kind.into(),
                    name: "web-abc".into(),
                    uid: "u".into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn opt_in_on_the_pod_or_its_namespace() {
        let p = running("ReplicaSet", &[(keys::MIGRATE, "true")]);
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Ok(WorkloadKind::Stateless)
        );
        let p = running("ReplicaSet", &[]);
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Err(Ineligible::NotOptedIn)
        );
        let ns = BTreeMap::from([(keys::MIGRATE.to_owned(), "true".to_owned())]);
        assert_eq!(
            eligibility(&pod_facts(&p, Some(&ns), false)),
            Ok(WorkloadKind::Stateless)
        );
        let p = running("StatefulSet", &[(keys::MIGRATE, "statefulset")]);
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Ok(WorkloadKind::Stateful)
        );
    }

    #[test]
    fn never_daemonsets_mirrors_critical_or_local_storage() {
        let p = running("DaemonSet", &[(keys::MIGRATE, "true")]);
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Err(Ineligible::DaemonSet)
        );
        let p = running(
            "ReplicaSet",
            &[
                (keys::MIGRATE, "true"),
                ("kubernetes.io/config.mirror", "x"),
            ],
        );
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Err(Ineligible::MirrorOrStatic)
        );
        let mut p = running("ReplicaSet", &[(keys::MIGRATE, "true")]);
        p.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Err(Ineligible::SystemCritical)
        );
        let mut p = running("ReplicaSet", &[(keys::MIGRATE, "true")]);
        p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("1Gi".into())),
                medium: None,
                mode: None,
            }),
            ..Volume::default()
        }]);
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Err(Ineligible::LocalStorage)
        );
        let mut p = running("ReplicaSet", &[(keys::MIGRATE, "true")]);
        p.status.as_mut().unwrap().phase = Some("Pending".into());
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Err(Ineligible::NotRunning)
        );
        let mut p = running("ReplicaSet", &[(keys::MIGRATE, "true")]);
        p.metadata.owner_references = None;
        assert_eq!(
            eligibility(&pod_facts(&p, None, false)),
            Err(Ineligible::BarePod)
        );
    }

    /// A pod as the API server returns it: managed fields, defaulted
    /// spec, a service account token volume, probes, status conditions.
    fn full_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-7d9f-abcde", "generateName": "web-7d9f-",
                "namespace": "shop", "uid": "0b6a4c4e-1d2f-4f6e-9a43-7d1c0f2e9b11",
                "resourceVersion": "4242", "creationTimestamp": "2026-12-07T10:00:00Z",
                "labels": {"app": "web", "pod-template-hash": "7d9f"},
                "annotations": {(keys::MIGRATE): "true", (keys::ANNOTATION_EXPECTED_DURATION): "3h"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f",
                    "uid": "5e1f", "controller": true, "blockOwnerDeletion": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                    "apiVersion": "v1", "time": "2026-12-07T10:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"main\"}": {".": {}, "f:image": {}}}}}}]
            },
            "spec": {
                "nodeName": "de-1",
                "nodeSelector": {"pool": "a"},
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["de-a", "fr-a"]}]}]}},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app": "web"}}}}]}
                },
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 300}],
                "priority": 0,
                "overhead": {"cpu": "10m"},
                "volumes": [
                    {"name": "kube-api-access", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
                ],
                "containers": [{
                    "name": "main", "image": "registry.k8s.io/pause:3.10",
                    "command": ["/pause"], "args": ["--flag"],
                    "env": [{"name": "A", "value": "b"}],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                    "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets"}],
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}
                }],
                "initContainers": [{"name": "side", "image": "x", "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "100m"}}}]
            },
            "status": {
                "phase": "Running", "startTime": "2026-12-07T10:00:05Z", "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "main", "image": "x", "imageID": "y", "ready": true,
                    "restartCount": 0, "started": true}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_trimmed_pod_decides_exactly_as_the_full_one() {
        use carbon_kube_k8s::node_match::{NodeFacts, pod_fits_node};
        let full = full_pod();
        let mut trimmed = full.clone();
        trim_pod(&mut trimmed);
        let ns = BTreeMap::new();
        assert_eq!(
            pod_facts(&full, Some(&ns), true),
            pod_facts(&trimmed, Some(&ns), true)
        );
        assert_eq!(
            eligibility(&pod_facts(&trimmed, None, true)),
            Err(Ineligible::LocalStorage),
            "the sized emptyDir is kept"
        );
        assert_eq!(pod_view(&full), pod_view(&trimmed));
        assert_eq!(pod_view(&trimmed).requests, Resources::new(610, 1 << 30));
        assert_eq!(owner(&full), owner(&trimmed));
        assert_eq!(started_at(&full), started_at(&trimmed));
        assert_eq!(
            expected_remaining(&full, 1_765_108_800),
            expected_remaining(&trimmed, 1_765_108_800)
        );
        assert_eq!(full.object_ref(&()), trimmed.object_ref(&()));
        for (labels, taints) in [
            (vec![("pool", "a"), ("zone", "de-a")], vec![]),
            (vec![("pool", "a"), ("zone", "us")], vec![]),
            (vec![("pool", "b"), ("zone", "de-a")], vec![]),
            (
                vec![("pool", "a"), ("zone", "fr-a")],
                vec![Taint {
                    key: "gpu".into(),
                    effect: "NoSchedule".into(),
                    ..Taint::default()
                }],
            ),
        ] {
            let labels: BTreeMap<String, String> = labels
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let node = NodeFacts {
                name: "n",
                labels: &labels,
                taints: &taints,
                unschedulable: false,
            };
            assert_eq!(
                pod_fits_node(full.spec.as_ref().unwrap(), &node),
                pod_fits_node(trimmed.spec.as_ref().unwrap(), &node),
                "{labels:?} {taints:?}"
            );
        }
        // And it is much smaller.
        let size = |p: &Pod| serde_json::to_string(p).unwrap().len();
        assert!(
            size(&trimmed) * 2 < size(&full),
            "{} vs {}",
            size(&trimmed),
            size(&full)
        );
    }

    #[test]
    fn the_zone_selector_names_the_labels_of_the_target_zones_nodes() {
        let node = |name: &str, labels: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": labels}
            }))
            .unwrap()
        };
        let nodes = [
            node("fr-1", serde_json::json!({(keys::LABEL_GRID_ZONE): "FR"})),
            node(
                "fr-2",
                serde_json::json!({(keys::LABEL_GRID_ZONE): "FR",
                                              (keys::LABEL_REGION): "eu-central-1"}),
            ),
            // Zoned by its region (AWS Paris): selected by the region.
            node(
                "paris",
                serde_json::json!({(keys::LABEL_REGION): "eu-west-3"}),
            ),
            node("de-1", serde_json::json!({(keys::LABEL_GRID_ZONE): "DE"})),
            node("nowhere", serde_json::json!({})),
        ];
        let entries = node_entries(nodes.iter(), std::iter::empty(), &RegionZoneMap::default());
        let fr = ZoneId::parse("FR").unwrap();
        let sel = zone_selector(&fr, entries.values());
        assert_eq!(sel.grid_zone_values, ["FR"]);
        assert_eq!(sel.region_values, ["eu-west-3"]);
        let none = zone_selector(&ZoneId::parse("PL").unwrap(), entries.values());
        assert!(none.is_empty());
    }

    #[test]
    fn jobs_recreate_while_their_backoff_limit_has_room() {
        use k8s_openapi::api::batch::v1::{JobSpec, JobStatus};
        let job = |limit: i32, failed: i32| Job {
            spec: Some(JobSpec {
                backoff_limit: Some(limit),
                ..JobSpec::default()
            }),
            status: Some(JobStatus {
                failed: Some(failed),
                ..JobStatus::default()
            }),
            ..Job::default()
        };
        assert!(job_recreates(&job(6, 0)));
        assert!(!job_recreates(&job(0, 0)));
        assert!(!job_recreates(&job(2, 2)));
    }
}
