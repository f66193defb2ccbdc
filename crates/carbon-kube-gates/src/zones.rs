//! Which grid zones a gated pod may run in, and the node affinity that
//! sends it to the zone its release was planned for.
//!
//! A pod may run in the zones of the nodes that match its `nodeSelector`,
//! its required node affinity and whose `NoSchedule`/`NoExecute` taints it
//! tolerates. Each node's zone comes from the placement policy's
//! `zone_map::node_zone` (label `carbon-kube.io/grid-zone`, the operator's
//! region map, the built-in cloud tables). The matching is Kubernetes' own
//! semantics, not a decision: it lives in `carbon_kube_k8s::node_match`,
//! shared with the migrator.

use std::collections::{BTreeMap, BTreeSet};

use carbon_kube_k8s::node_match::{self, NodeFacts};
use carbon_kube_model::migration::ZoneSelector;
use carbon_kube_model::{ZoneId, keys};
use carbon_kube_policy::zone_map::{NodeView, RegionZoneMap, Resources, ZoneVia, node_zone};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PreferredSchedulingTerm, Taint,
};

/// What the controller keeps about a node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeEntry {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Taints that keep pods off (`NoSchedule`, `NoExecute`).
    pub taints: Vec<Taint>,
    /// The node's grid zone, when known.
    pub zone: Option<ZoneId>,
    /// How the zone was found.
    pub via: ZoneVia,
    /// Allocatable CPU, millicores.
    pub cpu_millis: u64,
    /// Whether the node is cordoned.
    pub unschedulable: bool,
}

/// Reads a node and resolves its zone.
pub fn node_entry(node: &Node, region_map: &RegionZoneMap) -> NodeEntry {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let cpu_millis = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("cpu"))
        .and_then(|q| cpu_millis(&q.0))
        .unwrap_or(0);
    let view = NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: labels.clone(),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        allocatable: Resources::new(i64::try_from(cpu_millis).unwrap_or(i64::MAX), 0),
        requested: Resources::default(),
    };
    let resolution = node_zone(&view, region_map);
    let spec = node.spec.as_ref();
    NodeEntry {
        name: view.name,
        labels,
        taints: spec
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .collect(),
        zone: resolution.zone,
        via: resolution.via,
        cpu_millis,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
    }
}

/// Parses a CPU quantity (`500m`, `2`, `1.5`) to millicores.
pub fn cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<u64>().ok();
    }
    let v = q.parse::<f64>().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * 1000.0).ceil() as u64)
}

/// CPU the pod requests, millicores: the larger of its containers' sum and
/// its largest init container, plus overhead.
pub fn pod_cpu_millis(pod: &Pod) -> u64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let req = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
            .and_then(|q| cpu_millis(&q.0))
            .unwrap_or(0)
    };
    let sum: u64 = spec.containers.iter().map(req).sum();
    let init = spec
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(req)
        .max()
        .unwrap_or(0);
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get("cpu"))
        .and_then(|q| cpu_millis(&q.0))
        .unwrap_or(0);
    sum.max(init) + overhead
}

/// The zones a pod may run in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Eligibility {
    /// Known zones of matching nodes, sorted.
    pub zones: Vec<ZoneId>,
    /// How many nodes match the pod.
    pub matching_nodes: usize,
    /// How many of those have no known zone.
    pub unknown_zone_nodes: usize,
    /// Names of the matching nodes with a known zone, sorted (the capacity
    /// ledger only counts room on these).
    pub nodes: Vec<String>,
}

/// The zones of the nodes `pod` may be scheduled on.
pub fn eligible_zones(pod: &Pod, nodes: &[NodeEntry]) -> Eligibility {
    let default = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default);
    let mut zones = BTreeSet::new();
    let mut e = Eligibility::default();
    for n in nodes.iter().filter(|n| pod_fits_node(spec, n)) {
        e.matching_nodes += 1;
        match &n.zone {
            Some(z) => {
                zones.insert(z.clone());
                e.nodes.push(n.name.clone());
            }
            None => e.unknown_zone_nodes += 1,
        }
    }
    e.zones = zones.into_iter().collect();
    e.nodes.sort();
    e
}

impl NodeEntry {
    /// What `carbon_kube_k8s::node_match` reads of the node.
    pub fn facts(&self) -> NodeFacts<'_> {
        NodeFacts {
            name: &self.name,
            labels: &self.labels,
            taints: &self.taints,
            unschedulable: self.unschedulable,
        }
    }
}

/// Whether the scheduler could place a pod with `spec` on `node`, as far as
/// node selection goes (selector, required affinity, taints, cordon).
pub fn pod_fits_node(spec: &PodSpec, node: &NodeEntry) -> bool {
    node_match::pod_fits_node(spec, &node.facts())
}

/// A node selector term matches when all its expressions and fields do. An
/// empty term matches nothing (as in Kubernetes).
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeEntry) -> bool {
    node_match::term_matches(term, &node.facts())
}

/// Node selector terms that select the nodes of `zone` among `nodes`: by the
/// `carbon-kube.io/grid-zone` label values in use, and by the region label
/// for nodes whose zone comes from their region (and that have no zone
/// label). Empty when no node of the zone is known.
pub fn zone_terms(zone: &ZoneId, nodes: &[NodeEntry]) -> Vec<NodeSelectorTerm> {
    let mut by_label = BTreeSet::new();
    let mut by_region = BTreeSet::new();
    for n in nodes.iter().filter(|n| n.zone.as_ref() == Some(zone)) {
        match n.via {
            ZoneVia::Label => {
                if let Some(v) = n.labels.get(keys::LABEL_GRID_ZONE) {
                    by_label.insert(v.clone());
                }
            }
            ZoneVia::UserMap { .. } | ZoneVia::CloudRegion { .. } => {
                if let Some(v) = n.labels.get(keys::LABEL_REGION) {
                    by_region.insert(v.clone());
                }
            }
            ZoneVia::Unknown(_) => {}
        }
    }
    selector_terms(&ZoneSelector {
        grid_zone_values: by_label.into_iter().collect(),
        region_values: by_region.into_iter().collect(),
    })
}

/// Node selector terms selecting the nodes of a [`ZoneSelector`]: one term
/// for the `carbon-kube.io/grid-zone` values, one for the region values of
/// nodes without that label. The gate controller builds the selector from
/// its nodes ([`zone_terms`]); the webhook takes it from a migration record.
pub fn selector_terms(sel: &ZoneSelector) -> Vec<NodeSelectorTerm> {
    let req = |key: &str, op: &str, values: Option<Vec<String>>| NodeSelectorRequirement {
        key: key.to_owned(),
        operator: op.to_owned(),
        values,
    };
    let mut terms = Vec::new();
    if !sel.grid_zone_values.is_empty() {
        terms.push(NodeSelectorTerm {
            match_expressions: Some(vec![req(
                keys::LABEL_GRID_ZONE,
                "In",
                Some(sel.grid_zone_values.clone()),
            )]),
            match_fields: None,
        });
    }
    if !sel.region_values.is_empty() {
        terms.push(NodeSelectorTerm {
            match_expressions: Some(vec![
                req(keys::LABEL_REGION, "In", Some(sel.region_values.clone())),
                req(keys::LABEL_GRID_ZONE, "DoesNotExist", None),
            ]),
            match_fields: None,
        });
    }
    terms
}

/// How the controller steers a released pod to the zone it was planned for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AffinityMode {
    /// No affinity: the scheduler (and the extender, if installed) chooses.
    None,
    /// A preferred node affinity (weight 100) for the zone: never makes a pod
    /// unschedulable.
    #[default]
    Preferred,
    /// A required node affinity for the zone, when Kubernetes allows adding
    /// it (otherwise preferred): the pod waits for room in that zone.
    Required,
}

/// The pod's affinity with the zone's terms added, and which kind was added.
/// `None` when there is nothing to add.
pub fn affinity_for_zone(
    current: Option<&Affinity>,
    terms: &[NodeSelectorTerm],
    mode: AffinityMode,
) -> Option<(Affinity, AffinityMode)> {
    if terms.is_empty() || mode == AffinityMode::None {
        return None;
    }
    let mut affinity = current.cloned().unwrap_or_default();
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    if mode == AffinityMode::Required {
        let required = na
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(|| NodeSelector {
                node_selector_terms: Vec::new(),
            });
        if required.node_selector_terms.is_empty() {
            // Allowed while gated: setting terms where there were none.
            required.node_selector_terms = terms.to_vec();
            return Some((affinity, AffinityMode::Required));
        }
        if let [only] = terms {
            // Allowed while gated: adding expressions to every existing term.
            let add = only.match_expressions.clone().unwrap_or_default();
            for t in &mut required.node_selector_terms {
                t.match_expressions
                    .get_or_insert_with(Vec::new)
                    .extend(add.iter().cloned());
            }
            return Some((affinity, AffinityMode::Required));
        }
        // Two alternatives cannot be ANDed into existing terms: prefer instead.
        let mut fallback = current.cloned().unwrap_or_default();
        add_preferred(&mut fallback, terms);
        return Some((fallback, AffinityMode::Preferred));
    }
    add_preferred(&mut affinity, terms);
    Some((affinity, AffinityMode::Preferred))
}

/// Adds one preferred node-affinity term per node in `nodes`, selecting it
/// by name (`matchFields` `metadata.name`, which takes one value per term):
/// where the capacity ledger has room for the pod's run, best first. The
/// weights halve down the list (100, 50, 25, ... at least 1), so the node
/// the ledger booked the run on clearly wins over the next ones, which in
/// turn win over nodes with no room. Preferred terms may change while a pod
/// is gated and never make it unschedulable; terms already on the pod are
/// kept.
pub fn prefer_nodes(current: Option<&Affinity>, nodes: &[String]) -> Option<Affinity> {
    if nodes.is_empty() {
        return None;
    }
    let mut affinity = current.cloned().unwrap_or_default();
    let preferred = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new);
    for (i, n) in nodes.iter().enumerate() {
        preferred.push(PreferredSchedulingTerm {
            weight: (100_i32 >> i.min(31)).max(1),
            preference: NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![n.clone()]),
                }]),
            },
        });
    }
    Some(affinity)
}

fn add_preferred(affinity: &mut Affinity, terms: &[NodeSelectorTerm]) {
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let preferred = na
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new);
    for t in terms {
        preferred.push(PreferredSchedulingTerm {
            weight: 100,
            preference: t.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{node_in_zone, node_with_labels, pod};
    use k8s_openapi::api::core::v1::Toleration;

    fn zone(z: &str) -> ZoneId {
        ZoneId::parse(z).unwrap()
    }

    fn entries(nodes: &[Node]) -> Vec<NodeEntry> {
        let map = RegionZoneMap::from_entries([("dc-fra", "DE")]).unwrap();
        nodes.iter().map(|n| node_entry(n, &map)).collect()
    }

    fn cluster() -> Vec<NodeEntry> {
        entries(&[
            node_in_zone("de-1", "DE", "4"),
            node_in_zone("fr-1", "FR", "8"),
            node_with_labels(
                "fra-1",
                &[(keys::LABEL_REGION, "dc-fra"), ("gpu", "true")],
                "2",
            ),
            node_with_labels("nowhere-1", &[("gpu", "true")], "2"),
        ])
    }

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("lots"), None);
        assert_eq!(pod_cpu_millis(&pod("p").cpu("250m").build()), 250);
    }

    #[test]
    fn an_unconstrained_pod_may_use_every_known_zone() {
        let e = eligible_zones(&pod("p").build(), &cluster());
        assert_eq!(e.zones, [zone("DE"), zone("FR")]);
        assert_eq!((e.matching_nodes, e.unknown_zone_nodes), (4, 1));
    }

    #[test]
    fn node_selector_and_required_affinity_narrow_the_zones() {
        let nodes = cluster();
        let e = eligible_zones(&pod("p").node_selector("gpu", "true").build(), &nodes);
        assert_eq!(e.zones, [zone("DE")]);
        assert_eq!(e.unknown_zone_nodes, 1);
        let e = eligible_zones(
            &pod("p").require(keys::LABEL_GRID_ZONE, &["FR"]).build(),
            &nodes,
        );
        assert_eq!(e.zones, [zone("FR")]);
        // Terms are ORed.
        let e = eligible_zones(
            &pod("p")
                .require(keys::LABEL_GRID_ZONE, &["FR"])
                .require(keys::LABEL_REGION, &["dc-fra"])
                .build(),
            &nodes,
        );
        assert_eq!(e.zones, [zone("DE"), zone("FR")]);
        let e = eligible_zones(&pod("p").node_selector("disk", "ssd").build(), &nodes);
        assert_eq!(e, Eligibility::default());
    }

    #[test]
    fn untolerated_taints_and_cordons_exclude_nodes() {
        let mut nodes = cluster();
        nodes[1].taints.push(Taint {
            key: "dedicated".into(),
            value: Some("ml".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        nodes[0].unschedulable = true;
        let e = eligible_zones(&pod("p").build(), &nodes);
        assert_eq!(e.zones, [zone("DE")]); // only the region-mapped node
        let mut tolerant = pod("p").build();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("ml".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        }]);
        assert_eq!(
            eligible_zones(&tolerant, &nodes).zones,
            [zone("DE"), zone("FR")]
        );
    }

    #[test]
    fn zone_terms_select_exactly_the_zone() {
        let nodes = cluster();
        let terms = zone_terms(&zone("DE"), &nodes);
        assert_eq!(terms.len(), 2);
        let selected: Vec<&str> = nodes
            .iter()
            .filter(|n| terms.iter().any(|t| term_matches(t, n)))
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(selected, ["de-1", "fra-1"]);
        assert!(zone_terms(&zone("GB"), &nodes).is_empty());
    }

    #[test]
    fn affinity_modes() {
        let nodes = cluster();
        let fr = zone_terms(&zone("FR"), &nodes);
        let (a, mode) = affinity_for_zone(None, &fr, AffinityMode::Preferred).unwrap();
        assert_eq!(mode, AffinityMode::Preferred);
        let pref = a
            .node_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(pref[0].weight, 100);
        // Required into a pod without terms: set.
        let (a, mode) = affinity_for_zone(None, &fr, AffinityMode::Required).unwrap();
        assert_eq!(mode, AffinityMode::Required);
        let req = a
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(req.node_selector_terms, fr);
        // Required into a pod with terms: ANDed into each.
        let p = pod("p").require("disk", &["ssd"]).build();
        let current = p.spec.unwrap().affinity;
        let (a, _) = affinity_for_zone(current.as_ref(), &fr, AffinityMode::Required).unwrap();
        let terms = a
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0].match_expressions.as_ref().unwrap().len(), 2);
        // Two alternatives cannot be ANDed: preferred instead, existing kept.
        let de = zone_terms(&zone("DE"), &nodes);
        let (a, mode) = affinity_for_zone(current.as_ref(), &de, AffinityMode::Required).unwrap();
        assert_eq!(mode, AffinityMode::Preferred);
        let na = a.node_affinity.unwrap();
        assert_eq!(
            na.required_during_scheduling_ignored_during_execution,
            current
                .unwrap()
                .node_affinity
                .unwrap()
                .required_during_scheduling_ignored_during_execution
        );
        assert!(affinity_for_zone(None, &fr, AffinityMode::None).is_none());
        assert!(affinity_for_zone(None, &[], AffinityMode::Required).is_none());
    }

    #[test]
    fn preferred_nodes_get_halving_weights_after_the_terms_already_there() {
        let de = zone_terms(&zone("DE"), &cluster());
        let (zone_aff, _) = affinity_for_zone(None, &de, AffinityMode::Preferred).unwrap();
        let nodes: Vec<String> = (0..10).map(|i| format!("n-{i}")).collect();
        let a = prefer_nodes(Some(&zone_aff), &nodes).unwrap();
        let terms = a
            .node_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        // The zone's terms stay first; then one term per node, by name.
        let z = de.len();
        assert_eq!(terms.len(), z + 10);
        assert!(terms[..z].iter().all(|t| t.weight == 100));
        let weights: Vec<i32> = terms[z..].iter().map(|t| t.weight).collect();
        assert_eq!(weights, [100, 50, 25, 12, 6, 3, 1, 1, 1, 1]);
        let f = terms[z + 1].preference.match_fields.as_ref().unwrap();
        assert_eq!(f[0].key, "metadata.name");
        assert_eq!(f[0].operator, "In");
        assert_eq!(f[0].values.as_deref(), Some(&["n-1".to_owned()][..]));
        assert!(prefer_nodes(None, &[]).is_none());
    }
}
