//! Kubernetes objects to the accounting's plain views
//! ([`NodeUse`], [`PodUse`]).

use carbon_kube_k8s::node_match::pod_requests;
use carbon_kube_k8s::quantity::{cpu_millis, memory_bytes};
use carbon_kube_model::{UnixSeconds, keys};
use carbon_kube_policy::accounting::{NodeUse, PodUse, Workload};
use carbon_kube_policy::zone_map::{NodeView, RegionZoneMap, Resources, node_zone};
use k8s_openapi::api::core::v1::{Node, Pod};

/// Which pods count as placed by Carbon-Kube (for the placement
/// counterfactual).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacedBy {
    /// Pods whose `spec.schedulerName` is one of these (Carbon-Kube's
    /// scheduler profile or plugin build).
    SchedulerNames(Vec<String>),
    /// Every pod not opted out (the extender serves the default scheduler).
    AllPods,
}

/// The node as the accounting sees it.
pub fn node_use(n: &Node, region_map: &RegionZoneMap) -> NodeUse {
    let name = n.metadata.name.clone().unwrap_or_default();
    let q = |k: &str, f: fn(&str) -> Option<i64>| {
        n.status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(k))
            .and_then(|q| f(&q.0))
            .unwrap_or(0)
    };
    let allocatable = Resources::new(q("cpu", cpu_millis), q("memory", memory_bytes));
    let view = NodeView {
        name: name.clone(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        provider_id: n.spec.as_ref().and_then(|s| s.provider_id.clone()),
        allocatable,
        requested: Resources::default(),
    };
    NodeUse {
        name,
        zone: node_zone(&view, region_map).zone,
        allocatable,
    }
}

/// Whether `s` ends with `-` and at least 8 digits (a CronJob's Job name:
/// `<cronjob>-<scheduled minute>`); returns the prefix.
fn cronjob_prefix(s: &str) -> Option<&str> {
    let (prefix, digits) = s.rsplit_once('-')?;
    (digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()) && !prefix.is_empty())
        .then_some(prefix)
}

/// The pod's workload: its controller owner, with a ReplicaSet named
/// `<deployment>-<pod-template-hash>` reported as that Deployment and a Job
/// named `<cronjob>-<digits>` as that CronJob; a pod without a controller is
/// its own workload (kind `Pod`).
pub fn workload(pod: &Pod) -> Workload {
    let owner = pod
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true));
    let Some(o) = owner else {
        return Workload {
            kind: "Pod".into(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        };
    };
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    match o.kind.as_str() {
        "ReplicaSet" => {
            if let Some(d) = hash.and_then(|h| o.name.strip_suffix(h.as_str())?.strip_suffix('-')) {
                return Workload {
                    kind: "Deployment".into(),
                    name: d.to_owned(),
                };
            }
        }
        "Job" => {
            if let Some(c) = cronjob_prefix(&o.name) {
                return Workload {
                    kind: "CronJob".into(),
                    name: c.to_owned(),
                };
            }
        }
        _ => {}
    }
    Workload {
        kind: o.kind.clone(),
        name: o.name.clone(),
    }
}

fn parse_time(s: &str) -> Option<UnixSeconds> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// The pod as the accounting sees it, if it runs on a node (phase
/// `Running`, bound).
pub fn pod_use(pod: &Pod, placed_by: &PlacedBy) -> Option<PodUse> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.as_deref().filter(|n| !n.is_empty())?;
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
        return None;
    }
    let (cpu, mem) = pod_requests(spec);
    let annotations = pod.metadata.annotations.as_ref();
    let opted_out = annotations
        .and_then(|a| a.get(keys::ANNOTATION_OPT_OUT))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    let deferred_seconds = annotations
        .and_then(|a| a.get(keys::ANNOTATION_RELEASED_AT))
        .and_then(|v| parse_time(v))
        .zip(created)
        .map(|(released, created)| released - created)
        .filter(|d| *d > 0);
    let carbon_placed = !opted_out
        && match placed_by {
            PlacedBy::AllPods => true,
            PlacedBy::SchedulerNames(names) => spec
                .scheduler_name
                .as_deref()
                .is_some_and(|s| names.iter().any(|n| n == s)),
        };
    Some(PodUse {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        workload: workload(pod),
        node: node.to_owned(),
        requests: Resources::new(cpu, mem),
        cpu_usage_cores: None,
        measured_joules: None,
        deferred_seconds,
        carbon_placed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn workloads_are_deployments_cronjobs_or_the_owner() {
        let p = pod(
            json!({"metadata": {"name": "web-5d8f7c9b4-abcde", "labels": {"pod-template-hash": "5d8f7c9b4"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7c9b4", "uid": "u", "controller": true}]}}),
        );
        assert_eq!(
            workload(&p),
            Workload {
                kind: "Deployment".into(),
                name: "web".into()
            }
        );
        let p = pod(json!({"metadata": {"name": "nightly-29000000-x",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-29000000", "uid": "u", "controller": true}]}}));
        assert_eq!(
            workload(&p),
            Workload {
                kind: "CronJob".into(),
                name: "nightly".into()
            }
        );
        let p = pod(json!({"metadata": {"name": "db-0",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]}}));
        assert_eq!(
            workload(&p),
            Workload {
                kind: "StatefulSet".into(),
                name: "db".into()
            }
        );
        let p = pod(json!({"metadata": {"name": "lonely"}}));
        assert_eq!(
            workload(&p),
            Workload {
                kind: "Pod".into(),
                name: "lonely".into()
            }
        );
    }

    #[test]
    fn a_running_released_pod_has_its_deferral_and_placement() {
        let p = pod(json!({
            "metadata": {"name": "job", "namespace": "batch", "creationTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {keys::ANNOTATION_RELEASED_AT: "2026-01-01T03:00:00.250Z"}},
            "spec": {"nodeName": "n1", "schedulerName": "carbon-kube",
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]},
            "status": {"phase": "Running"}}));
        let u = pod_use(&p, &PlacedBy::SchedulerNames(vec!["carbon-kube".into()])).unwrap();
        assert_eq!(u.deferred_seconds, Some(3 * 3600));
        assert!(u.carbon_placed);
        assert_eq!(u.requests, Resources::new(500, 1 << 30));
        assert!(
            !pod_use(&p, &PlacedBy::SchedulerNames(vec![]))
                .unwrap()
                .carbon_placed
        );
        let pending = pod(
            json!({"metadata": {"name": "x"}, "spec": {"containers": []}, "status": {"phase": "Pending"}}),
        );
        assert_eq!(pod_use(&pending, &PlacedBy::AllPods), None);
    }
}
