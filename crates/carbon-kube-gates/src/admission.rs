//! The webhook's decision for one pod being created: put it behind the
//! `carbon-kube.io/green-window` gate or leave it alone, and the JSON patch
//! that does it. Pure: the namespace's opt-in comes in as an argument.
//!
//! A pod is gated when it asks (its own `carbon-kube.io/deadline` or
//! `carbon-kube.io/max-delay`) or its namespace has the label
//! `carbon-kube.io/defer=enabled`, and none of these holds:
//!
//! - it is already bound (`spec.nodeName`), a mirror pod, or a DaemonSet pod;
//! - it lives in an excluded namespace (`kube-system` always);
//! - it opted out (`carbon-kube.io/opt-out: "true"`);
//! - it already carries the gate (the user put it in the template).
//!
//! A pod that is opted in only by its namespace gets the namespace's
//! `carbon-kube.io/max-delay` annotation (or the webhook's default) and, if
//! the namespace sets one, its `carbon-kube.io/expected-duration`, written on
//! the pod so the controller needs nothing but the pod. A pod whose
//! annotations are wrong is still gated, with a warning to the client: the
//! controller then explains the problem in an Event and releases it at once,
//! so it is never stuck.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use carbon_kube_model::{UnixSeconds, keys};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::spec::{SpecDefaults, SpecOutcome, describe_problems, read_spec};

/// Value of [`keys::LABEL_NAMESPACE_DEFER`] that opts a namespace in.
pub const NAMESPACE_DEFER_ENABLED: &str = "enabled";

/// Annotation kubelet puts on mirror pods of static pods.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What the webhook knows about a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// The namespace has `carbon-kube.io/defer=enabled`.
    pub defer_enabled: bool,
    /// The namespace's `carbon-kube.io/max-delay` annotation.
    pub max_delay: Option<String>,
    /// The namespace's `carbon-kube.io/expected-duration` annotation.
    pub expected_duration: Option<String>,
}

impl NamespaceInfo {
    /// Reads a namespace's labels and annotations.
    pub fn from_meta(
        labels: Option<&BTreeMap<String, String>>,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Self {
        Self {
            defer_enabled: labels
                .and_then(|l| l.get(keys::LABEL_NAMESPACE_DEFER))
                .is_some_and(|v| v == NAMESPACE_DEFER_ENABLED),
            max_delay: annotations.and_then(|a| a.get(keys::ANNOTATION_MAX_DELAY).cloned()),
            expected_duration: annotations
                .and_then(|a| a.get(keys::ANNOTATION_EXPECTED_DURATION).cloned()),
        }
    }
}

/// Webhook settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Namespaces whose pods are never gated (`kube-system` is always added).
    pub excluded_namespaces: BTreeSet<String>,
    /// Max delay written on pods opted in by their namespace when the
    /// namespace sets none.
    pub namespace_default_max_delay: String,
    /// Used only to validate annotations for the warning.
    pub spec_defaults: SpecDefaults,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            excluded_namespaces: BTreeSet::from(["kube-system".to_owned()]),
            namespace_default_max_delay: "6h".to_owned(),
            spec_defaults: SpecDefaults::default(),
        }
    }
}

/// Why a pod was gated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateReason {
    /// Its own annotations asked.
    PodAnnotations,
    /// Its namespace opted in.
    Namespace,
}

/// Why a pod was left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither the pod nor its namespace asked.
    NotOptedIn,
    /// Not a pod creation, or no pod in the request.
    NotAPodCreate,
    /// `spec.nodeName` is set: the pod bypasses the scheduler.
    AlreadyBound,
    /// A mirror pod of a static pod.
    MirrorPod,
    /// Owned by a DaemonSet.
    DaemonSet,
    /// In an excluded namespace.
    ExcludedNamespace(String),
    /// `carbon-kube.io/opt-out: "true"`.
    OptedOut,
    /// The pod already carries the gate.
    AlreadyGated,
}

impl SkipReason {
    /// Label value for `carbon_kube_gates_webhook_decisions_total{decision}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotOptedIn => "skip_not_opted_in",
            Self::NotAPodCreate => "skip_not_a_pod_create",
            Self::AlreadyBound => "skip_bound",
            Self::MirrorPod => "skip_mirror_pod",
            Self::DaemonSet => "skip_daemonset",
            Self::ExcludedNamespace(_) => "skip_excluded_namespace",
            Self::OptedOut => "skip_opted_out",
            Self::AlreadyGated => "skip_already_gated",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOptedIn => f.write_str("neither the pod nor its namespace opted in"),
            Self::NotAPodCreate => f.write_str("not a pod creation"),
            Self::AlreadyBound => f.write_str("spec.nodeName is set"),
            Self::MirrorPod => f.write_str("mirror pod"),
            Self::DaemonSet => f.write_str("DaemonSet pod"),
            Self::ExcludedNamespace(ns) => write!(f, "namespace {ns} is excluded"),
            Self::OptedOut => write!(f, "{}=true", keys::ANNOTATION_OPT_OUT),
            Self::AlreadyGated => write!(f, "already carries {}", keys::SCHEDULING_GATE),
        }
    }
}

/// The webhook's decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Gate the pod with this patch.
    Gate {
        /// The JSON patch to return.
        patch: Patch,
        /// Why.
        reason: GateReason,
        /// Warnings for the client (bad annotations).
        warnings: Vec<String>,
    },
    /// Leave the pod as it is.
    Skip(SkipReason),
}

impl Decision {
    /// Label value for `carbon_kube_gates_webhook_decisions_total{decision}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Gate {
                reason: GateReason::PodAnnotations,
                ..
            } => "gate_pod",
            Self::Gate {
                reason: GateReason::Namespace,
                ..
            } => "gate_namespace",
            Self::Skip(s) => s.metric_label(),
        }
    }
}

/// Decides whether to gate `pod`, created in `namespace` at about `now`.
pub fn decide(
    pod: &Pod,
    namespace: &str,
    ns: Option<&NamespaceInfo>,
    cfg: &AdmissionConfig,
    now: UnixSeconds,
) -> Decision {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let spec = pod.spec.as_ref();
    if namespace == "kube-system" || cfg.excluded_namespaces.contains(namespace) {
        return Decision::Skip(SkipReason::ExcludedNamespace(namespace.to_owned()));
    }
    if spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
    {
        return Decision::Skip(SkipReason::AlreadyBound);
    }
    if annotations.contains_key(MIRROR_POD_ANNOTATION) {
        return Decision::Skip(SkipReason::MirrorPod);
    }
    if pod
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.kind == "DaemonSet")
    {
        return Decision::Skip(SkipReason::DaemonSet);
    }
    if annotations
        .get(keys::ANNOTATION_OPT_OUT)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Decision::Skip(SkipReason::OptedOut);
    }
    if has_gate(pod) {
        return Decision::Skip(SkipReason::AlreadyGated);
    }
    let pod_asks = annotations.contains_key(keys::ANNOTATION_DEADLINE)
        || annotations.contains_key(keys::ANNOTATION_MAX_DELAY);
    let ns_asks = ns.is_some_and(|n| n.defer_enabled);
    if !pod_asks && !ns_asks {
        return Decision::Skip(SkipReason::NotOptedIn);
    }
    let mut added: BTreeMap<String, String> = BTreeMap::new();
    if !pod_asks && let Some(ns) = ns {
        added.insert(
            keys::ANNOTATION_MAX_DELAY.to_owned(),
            ns.max_delay
                .clone()
                .unwrap_or_else(|| cfg.namespace_default_max_delay.clone()),
        );
        if !annotations.contains_key(keys::ANNOTATION_EXPECTED_DURATION)
            && let Some(d) = &ns.expected_duration
        {
            added.insert(keys::ANNOTATION_EXPECTED_DURATION.to_owned(), d.clone());
        }
    }
    let mut merged = annotations.clone();
    merged.extend(added.clone());
    let mut warnings = Vec::new();
    if let SpecOutcome::Invalid(problems) = read_spec(&merged, now, &cfg.spec_defaults) {
        warnings.push(format!(
            "carbon-kube: deferral annotations are invalid, the pod will be released at once: {}",
            describe_problems(&problems)
        ));
    }
    Decision::Gate {
        patch: gate_patch(pod, &added),
        reason: if pod_asks {
            GateReason::PodAnnotations
        } else {
            GateReason::Namespace
        },
        warnings,
    }
}

/// Whether the pod carries Carbon-Kube's gate.
pub fn has_gate(pod: &Pod) -> bool {
    gate_index(pod).is_some()
}

/// Index of Carbon-Kube's gate in `spec.schedulingGates`.
pub fn gate_index(pod: &Pod) -> Option<usize> {
    pod.spec
        .as_ref()?
        .scheduling_gates
        .as_ref()?
        .iter()
        .position(|g| g.name == keys::SCHEDULING_GATE)
}

/// A JSON pointer from unescaped tokens.
pub(crate) fn pointer<'a>(tokens: impl IntoIterator<Item = &'a str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

pub(crate) fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// Operations that set `annotations` on a pod whose current annotations are
/// `current` (creating the map when there is none).
pub(crate) fn annotation_ops(
    current: Option<&BTreeMap<String, String>>,
    annotations: &BTreeMap<String, String>,
) -> Vec<PatchOperation> {
    if annotations.is_empty() {
        return Vec::new();
    }
    match current {
        None => vec![add(
            pointer(["metadata", "annotations"]),
            json!(annotations),
        )],
        Some(_) => annotations
            .iter()
            .map(|(k, v)| {
                add(
                    pointer(["metadata", "annotations", k.as_str()]),
                    Value::String(v.clone()),
                )
            })
            .collect(),
    }
}

fn gate_patch(pod: &Pod, added: &BTreeMap<String, String>) -> Patch {
    let gate = json!({ "name": keys::SCHEDULING_GATE });
    let has_list = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some();
    let mut ops = vec![if has_list {
        add(pointer(["spec", "schedulingGates", "-"]), gate)
    } else {
        add(pointer(["spec", "schedulingGates"]), json!([gate]))
    }];
    ops.extend(annotation_ops(pod.metadata.annotations.as_ref(), added));
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{gated, pod};

    const NOW: i64 = 1_777_716_000;

    fn patch_json(d: &Decision) -> Value {
        match d {
            Decision::Gate { patch, .. } => serde_json::to_value(patch).unwrap(),
            Decision::Skip(s) => panic!("expected a gate, got skip: {s}"),
        }
    }

    fn apply(pod: &Pod, d: &Decision) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        let Decision::Gate { patch, .. } = d else {
            panic!("no patch")
        };
        json_patch::patch(&mut doc, patch).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn a_pod_with_a_deadline_is_gated() {
        let p = pod("job").annotate(keys::ANNOTATION_DEADLINE, "2026-05-02T20:00:00Z");
        let d = decide(&p.build(), "batch", None, &AdmissionConfig::default(), NOW);
        assert_eq!(d.metric_label(), "gate_pod");
        assert_eq!(
            patch_json(&d),
            json!([{"op": "add", "path": "/spec/schedulingGates",
                    "value": [{"name": "carbon-kube.io/green-window"}]}])
        );
        let out = apply(&p.build(), &d);
        assert!(has_gate(&out));
    }

    #[test]
    fn other_gates_are_kept_and_ours_appended() {
        let p = pod("job")
            .annotate(keys::ANNOTATION_MAX_DELAY, "4h")
            .gate("example.com/quota")
            .build();
        let d = decide(&p, "batch", None, &AdmissionConfig::default(), NOW);
        let out = apply(&p, &d);
        let names: Vec<_> = out
            .spec
            .unwrap()
            .scheduling_gates
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["example.com/quota", keys::SCHEDULING_GATE]);
    }

    #[test]
    fn a_namespace_opt_in_writes_its_max_delay_on_the_pod() {
        let ns = NamespaceInfo {
            defer_enabled: true,
            max_delay: Some("8h".into()),
            expected_duration: Some("30m".into()),
        };
        let p = pod("report").annotate("team", "finance").build();
        let d = decide(&p, "batch", Some(&ns), &AdmissionConfig::default(), NOW);
        assert_eq!(d.metric_label(), "gate_namespace");
        let out = apply(&p, &d);
        let a = out.metadata.annotations.unwrap();
        assert_eq!(a[keys::ANNOTATION_MAX_DELAY], "8h");
        assert_eq!(a[keys::ANNOTATION_EXPECTED_DURATION], "30m");
        assert_eq!(a["team"], "finance");
        // Without a namespace value, the webhook's default; a pod without
        // annotations gets the whole map.
        let ns = NamespaceInfo {
            defer_enabled: true,
            ..NamespaceInfo::default()
        };
        let p = pod("report").build();
        let d = decide(&p, "batch", Some(&ns), &AdmissionConfig::default(), NOW);
        let out = apply(&p, &d);
        assert_eq!(
            out.metadata.annotations.unwrap()[keys::ANNOTATION_MAX_DELAY],
            "6h"
        );
        // A pod with its own deadline keeps it.
        let p = pod("x")
            .annotate(keys::ANNOTATION_DEADLINE, "2026-05-02T20:00:00Z")
            .build();
        let d = decide(&p, "batch", Some(&ns), &AdmissionConfig::default(), NOW);
        assert_eq!(d.metric_label(), "gate_pod");
        let out = apply(&p, &d);
        assert!(
            !out.metadata
                .annotations
                .unwrap()
                .contains_key(keys::ANNOTATION_MAX_DELAY)
        );
    }

    #[test]
    fn pods_that_must_not_wait_are_left_alone() {
        let cfg = AdmissionConfig {
            excluded_namespaces: BTreeSet::from(["carbon-kube".to_owned()]),
            ..AdmissionConfig::default()
        };
        let asks = || pod("p").annotate(keys::ANNOTATION_MAX_DELAY, "2h");
        let cases = [
            (asks().build(), "kube-system", "skip_excluded_namespace"),
            (asks().build(), "carbon-kube", "skip_excluded_namespace"),
            (asks().node_name("n1").build(), "batch", "skip_bound"),
            (
                asks().annotate(MIRROR_POD_ANNOTATION, "abc").build(),
                "batch",
                "skip_mirror_pod",
            ),
            (
                asks().owned_by("DaemonSet").build(),
                "batch",
                "skip_daemonset",
            ),
            (
                asks().annotate(keys::ANNOTATION_OPT_OUT, "true").build(),
                "batch",
                "skip_opted_out",
            ),
            (gated(asks()).build(), "batch", "skip_already_gated"),
            (pod("plain").build(), "batch", "skip_not_opted_in"),
        ];
        for (p, ns, label) in cases {
            let d = decide(&p, ns, None, &cfg, NOW);
            assert_eq!(d.metric_label(), label, "{p:?}");
        }
        // Job pods are gated like any other.
        let d = decide(&asks().owned_by("Job").build(), "batch", None, &cfg, NOW);
        assert_eq!(d.metric_label(), "gate_pod");
    }

    #[test]
    fn bad_annotations_still_gate_with_a_warning() {
        let p = pod("p")
            .annotate(keys::ANNOTATION_DEADLINE, "whenever")
            .build();
        let d = decide(&p, "batch", None, &AdmissionConfig::default(), NOW);
        let Decision::Gate { warnings, .. } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("released at once"), "{warnings:?}");
        assert!(
            warnings[0].contains("carbon-kube.io/deadline"),
            "{warnings:?}"
        );
    }
}
