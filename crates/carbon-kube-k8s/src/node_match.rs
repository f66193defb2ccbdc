//! Kubernetes' own node-matching semantics, shared by the gate controller
//! (which zones a gated pod may use) and the migrator (which nodes a moved
//! pod could be recreated on): `nodeSelector`, required node affinity,
//! `NoSchedule`/`NoExecute` taints and tolerations, cordons; and a pod's
//! effective resource requests. Matching, not deciding: the decisions are
//! in `carbon-kube-policy`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

use crate::quantity::{cpu_millis, memory_bytes};

/// What node matching reads of a node.
#[derive(Clone, Copy, Debug)]
pub struct NodeFacts<'a> {
    /// Node name (for `matchFields` on `metadata.name`).
    pub name: &'a str,
    /// Node labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Node taints (only `NoSchedule` and `NoExecute` keep pods off).
    pub taints: &'a [Taint],
    /// Whether the node is cordoned.
    pub unschedulable: bool,
}

/// Whether the scheduler could place a pod with `spec` on `node`, as far as
/// node selection goes (selector, required affinity, taints, cordon).
pub fn pod_fits_node(spec: &PodSpec, node: &NodeFacts<'_>) -> bool {
    if node.unschedulable {
        return false;
    }
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return false;
    }
    if let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && !required
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
    {
        return false;
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    node.taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// A node selector term matches when all its expressions and fields do. An
/// empty term matches nothing (as in Kubernetes).
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeFacts<'_>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node.name);
            requirement_matches(r, value)
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.trim().parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key_ok = match tol.key.as_deref() {
        None | Some("") => tol.operator.as_deref() == Some("Exists"),
        Some(k) => k == taint.key,
    };
    if !key_ok {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

/// A pod's effective CPU (millicores) and memory (bytes) requests as
/// kube-scheduler computes them: the containers plus sidecar init
/// containers, or the largest other init container if larger, plus the
/// overhead. Unreadable quantities count as 0.
pub fn pod_requests(spec: &PodSpec) -> (i64, i64) {
    fn req(c: &Container) -> (i64, i64) {
        let r = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |k: &str, f: fn(&str) -> Option<i64>| {
            r.and_then(|m| m.get(k)).and_then(|q| f(&q.0)).unwrap_or(0)
        };
        (get("cpu", cpu_millis), get("memory", memory_bytes))
    }
    let add = |a: (i64, i64), b: (i64, i64)| (a.0.saturating_add(b.0), a.1.saturating_add(b.1));
    let max = |a: (i64, i64), b: (i64, i64)| (a.0.max(b.0), a.1.max(b.1));
    let mut sum = (0, 0);
    for c in &spec.containers {
        sum = add(sum, req(c));
    }
    let mut sidecars = (0, 0);
    let mut init_max = (0, 0);
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = add(sidecars, req(c));
        } else {
            init_max = max(init_max, add(req(c), sidecars));
        }
    }
    let overhead = spec.overhead.as_ref().map_or((0, 0), |o| {
        (
            o.get("cpu").and_then(|q| cpu_millis(&q.0)).unwrap_or(0),
            o.get("memory")
                .and_then(|q| memory_bytes(&q.0))
                .unwrap_or(0),
        )
    });
    add(max(add(sum, sidecars), init_max), overhead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn container(cpu: &str, mem: &str, always: bool) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity(cpu.into())),
                    ("memory".to_owned(), Quantity(mem.into())),
                ])),
                ..ResourceRequirements::default()
            }),
            restart_policy: always.then(|| "Always".to_owned()),
            ..Container::default()
        }
    }

    #[test]
    fn requests_sum_containers_and_sidecars_or_the_largest_init_container() {
        let spec = PodSpec {
            containers: vec![
                container("500m", "1Gi", false),
                container("250m", "1Gi", false),
            ],
            init_containers: Some(vec![
                container("100m", "128Mi", true),
                container("2", "1Gi", false),
            ]),
            ..PodSpec::default()
        };
        // Containers + sidecar: 850m, 2Gi+128Mi; init 2 + sidecar: 2100m.
        assert_eq!(pod_requests(&spec), (2100, (2 << 30) + (128 << 20)));
    }

    #[test]
    fn taints_and_selectors() {
        let labels = BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]);
        let taints = [Taint {
            key: "dedicated".into(),
            value: Some("ml".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        let node = NodeFacts {
            name: "n1",
            labels: &labels,
            taints: &taints,
            unschedulable: false,
        };
        let mut spec = PodSpec::default();
        assert!(!pod_fits_node(&spec, &node));
        spec.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]);
        assert!(pod_fits_node(&spec, &node));
        spec.node_selector = Some(BTreeMap::from([("disk".to_owned(), "hdd".to_owned())]));
        assert!(!pod_fits_node(&spec, &node));
    }
}
