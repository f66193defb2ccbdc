//! The extender wire format of `k8s.io/kube-scheduler/extender/v1`.
//!
//! Those Go types carry no JSON tags, so the top-level keys are the Go field
//! names in PascalCase (`Pod`, `Nodes`, `NodeNames`; `FailedNodes`,
//! `FailedAndUnresolvableNodes`, `Error`; `Host`, `Score`), while the nested
//! Pod and Node objects are ordinary camelCase API objects without
//! `apiVersion`/`kind`. Unset fields arrive as `null`. Go decodes keys
//! case-insensitively, so lower-case spellings are accepted too.
//!
//! Only what the policy needs is decoded: node objects are kept as raw JSON
//! and echoed back untouched when kube-scheduler sends full nodes
//! (`nodeCacheCapable: false`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use carbon_kube_policy::placement::PodView;
use carbon_kube_policy::zone_map::{NodeView, Resources};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::quantity::{cpu_millis, memory_bytes};

/// A node name, borrowed from the request when it has no escapes.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Name<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// `ExtenderArgs`: the body of `POST /filter` and `POST /prioritize`.
#[derive(Debug, Deserialize)]
pub struct ExtenderArgs<'a> {
    /// The pod being scheduled.
    #[serde(rename = "Pod", alias = "pod", default)]
    pub pod: Option<WirePod>,
    /// Full candidate nodes (`nodeCacheCapable: false`).
    #[serde(rename = "Nodes", alias = "nodes", borrow, default)]
    pub nodes: Option<WireNodeList<'a>>,
    /// Candidate node names (`nodeCacheCapable: true`).
    #[serde(
        rename = "NodeNames",
        alias = "nodenames",
        alias = "nodeNames",
        borrow,
        default
    )]
    pub node_names: Option<Vec<Name<'a>>>,
}

/// A `NodeList` whose items are kept as raw JSON.
#[derive(Debug, Deserialize)]
pub struct WireNodeList<'a> {
    /// The nodes.
    #[serde(borrow, default)]
    pub items: Option<Vec<&'a RawValue>>,
}

/// The fields of a Pod the policy reads.
#[derive(Debug, Default, Deserialize)]
pub struct WirePod {
    /// Pod metadata.
    #[serde(default)]
    pub metadata: Option<WireMeta>,
    /// Pod spec.
    #[serde(default)]
    pub spec: Option<WirePodSpec>,
}

/// The metadata fields read.
#[derive(Debug, Default, Deserialize)]
pub struct WireMeta {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// UID.
    #[serde(default)]
    pub uid: Option<String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The pod spec fields read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePodSpec {
    /// Containers.
    #[serde(default)]
    pub containers: Option<Vec<WireContainer>>,
    /// Init containers.
    #[serde(default)]
    pub init_containers: Option<Vec<WireContainer>>,
    /// Pod overhead.
    #[serde(default)]
    pub overhead: Option<BTreeMap<String, String>>,
    /// Scheduler name.
    #[serde(default)]
    pub scheduler_name: Option<String>,
}

/// A container's requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireContainer {
    /// Resources.
    #[serde(default)]
    pub resources: Option<WireResources>,
    /// `Always` marks a sidecar init container.
    #[serde(default)]
    pub restart_policy: Option<String>,
}

/// Resource requirements.
#[derive(Debug, Default, Deserialize)]
pub struct WireResources {
    /// Requests.
    #[serde(default)]
    pub requests: Option<BTreeMap<String, String>>,
}

/// A request quantity that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} is not a Kubernetes quantity")]
pub struct BadQuantity {
    /// Where it was.
    pub field: String,
    /// What it said.
    pub value: String,
}

fn requests_of(
    map: Option<&BTreeMap<String, String>>,
    field: &str,
) -> Result<Resources, BadQuantity> {
    let mut r = Resources::default();
    let Some(map) = map else {
        return Ok(r);
    };
    if let Some(v) = map.get("cpu") {
        r.cpu_millis = cpu_millis(v).ok_or_else(|| BadQuantity {
            field: format!("{field}.cpu"),
            value: v.clone(),
        })?;
    }
    if let Some(v) = map.get("memory") {
        r.memory_bytes = memory_bytes(v).ok_or_else(|| BadQuantity {
            field: format!("{field}.memory"),
            value: v.clone(),
        })?;
    }
    Ok(r)
}

fn max_each(a: Resources, b: Resources) -> Resources {
    Resources::new(
        a.cpu_millis.max(b.cpu_millis),
        a.memory_bytes.max(b.memory_bytes),
    )
}

/// The pod's effective requests as kube-scheduler computes them: the sum of
/// the containers (and sidecar init containers), or the largest init
/// container if larger, plus the pod overhead.
pub fn pod_requests(spec: Option<&WirePodSpec>) -> Result<Resources, BadQuantity> {
    let Some(spec) = spec else {
        return Ok(Resources::default());
    };
    let mut sum = Resources::default();
    for (i, c) in spec.containers.iter().flatten().enumerate() {
        let r = requests_of(
            c.resources.as_ref().and_then(|r| r.requests.as_ref()),
            &format!("spec.containers[{i}].resources.requests"),
        )?;
        sum = sum.saturating_add(r);
    }
    let mut init_max = Resources::default();
    let mut sidecars = Resources::default();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = requests_of(
            c.resources.as_ref().and_then(|r| r.requests.as_ref()),
            &format!("spec.initContainers[{i}].resources.requests"),
        )?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.saturating_add(r);
        } else {
            init_max = max_each(init_max, r.saturating_add(sidecars));
        }
    }
    let total = max_each(sum.saturating_add(sidecars), init_max);
    let overhead = requests_of(spec.overhead.as_ref(), "spec.overhead")?;
    Ok(total.saturating_add(overhead))
}

impl WirePod {
    /// The pod as the policy sees it.
    pub fn to_view(&self) -> Result<PodView, BadQuantity> {
        let meta = self.metadata.as_ref();
        Ok(PodView {
            name: meta.and_then(|m| m.name.clone()).unwrap_or_default(),
            namespace: meta.and_then(|m| m.namespace.clone()).unwrap_or_default(),
            annotations: meta.and_then(|m| m.annotations.clone()).unwrap_or_default(),
            requests: pod_requests(self.spec.as_ref())?,
        })
    }

    /// The pod's UID, if sent.
    pub fn uid(&self) -> Option<&str> {
        self.metadata.as_ref().and_then(|m| m.uid.as_deref())
    }
}

/// The fields of a Node the policy reads.
#[derive(Debug, Default, Deserialize)]
pub struct WireNode {
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<WireMeta>,
    /// Spec.
    #[serde(default)]
    pub spec: Option<WireNodeSpec>,
    /// Status.
    #[serde(default)]
    pub status: Option<WireNodeStatus>,
}

/// Node spec fields read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireNodeSpec {
    /// `spec.providerID`.
    #[serde(default, rename = "providerID")]
    pub provider_id: Option<String>,
}

/// Node status fields read.
#[derive(Debug, Default, Deserialize)]
pub struct WireNodeStatus {
    /// `status.allocatable`.
    #[serde(default)]
    pub allocatable: Option<BTreeMap<String, String>>,
}

impl WireNode {
    /// The node as the policy sees it (`requested` left at zero).
    pub fn to_view(&self) -> Result<NodeView, BadQuantity> {
        let meta = self.metadata.as_ref();
        Ok(NodeView {
            name: meta.and_then(|m| m.name.clone()).unwrap_or_default(),
            labels: meta.and_then(|m| m.labels.clone()).unwrap_or_default(),
            provider_id: self.spec.as_ref().and_then(|s| s.provider_id.clone()),
            allocatable: requests_of(
                self.status.as_ref().and_then(|s| s.allocatable.as_ref()),
                "status.allocatable",
            )?,
            requested: Resources::default(),
        })
    }
}

/// Serializes `(key, value)` pairs as a JSON object.
pub struct PairMap<'a>(pub &'a [(&'a str, &'a str)]);

impl Serialize for PairMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A `NodeList` echoing raw node objects.
pub struct RawNodeList<'a>(pub &'a [&'a RawValue]);

impl Serialize for RawNodeList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Items<'a>(&'a [&'a RawValue]);
        impl Serialize for Items<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for n in self.0 {
                    seq.serialize_element(n)?;
                }
                seq.end()
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("metadata", &serde_json::Map::new())?;
        m.serialize_entry("items", &Items(self.0))?;
        m.end()
    }
}

/// `ExtenderFilterResult`.
#[derive(Serialize)]
pub struct FilterResult<'a> {
    /// Passing nodes, when full nodes were sent.
    #[serde(rename = "Nodes")]
    pub nodes: Option<RawNodeList<'a>>,
    /// Passing node names, when names were sent.
    #[serde(rename = "NodeNames")]
    pub node_names: Option<Vec<&'a str>>,
    /// Nodes that failed and that preemption could fix (never used: no
    /// eviction makes a grid greener).
    #[serde(rename = "FailedNodes")]
    pub failed_nodes: PairMap<'a>,
    /// Nodes that failed on carbon, with the reason.
    #[serde(rename = "FailedAndUnresolvableNodes")]
    pub failed_and_unresolvable: PairMap<'a>,
    /// Error for the whole request, empty on success.
    #[serde(rename = "Error")]
    pub error: &'a str,
}

/// Appends `s` as a JSON string, byte for byte what `serde_json` writes.
///
/// `serde_json` escapes only `"`, `\` and control characters. Node names
/// are DNS names and contain none, so the common case is one scan and one
/// copy; anything else goes through `serde_json` itself.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    // Not short-circuiting, so that it compiles to a vector loop.
    let needs_escape = s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        return serde_json::to_writer(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Writes the [`FilterResult`] of a request with node names (`NodeNames`
/// set, `Nodes` null, `FailedNodes` empty, `Error` empty) straight from the
/// decision, byte for byte what `serde_json::to_vec` of that `FilterResult`
/// gives, without collecting the (up to 15,000) names first.
pub fn write_filter_names<'n>(
    out: &mut Vec<u8>,
    passed: impl IntoIterator<Item = &'n str>,
    failed: impl IntoIterator<Item = (&'n str, &'n str)>,
) -> serde_json::Result<()> {
    out.extend_from_slice(br#"{"Nodes":null,"NodeNames":["#);
    for (i, name) in passed.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name)?;
    }
    out.extend_from_slice(br#"],"FailedNodes":{},"FailedAndUnresolvableNodes":{"#);
    for (i, (name, reason)) in failed.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name)?;
        out.push(b':');
        write_str(out, reason)?;
    }
    out.extend_from_slice(br#"},"Error":""}"#);
    Ok(())
}

/// Writes a list of [`HostPriority`], byte for byte what `serde_json::to_vec`
/// of the same `Vec<HostPriority>` gives, without building that vector.
pub fn write_host_priorities<'n>(
    out: &mut Vec<u8>,
    hosts: impl IntoIterator<Item = (&'n str, i64)>,
) -> serde_json::Result<()> {
    out.push(b'[');
    for (i, (host, score)) in hosts.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"Host":"#);
        write_str(out, host)?;
        out.extend_from_slice(br#","Score":"#);
        // A single digit (scores are 0-10) directly; others via serde_json.
        match u8::try_from(score) {
            Ok(d @ 0..=9) => out.push(b'0' + d),
            _ => serde_json::to_writer(&mut *out, &score)?,
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// `HostPriority`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostPriority<'a> {
    /// Node name.
    #[serde(rename = "Host", borrow)]
    pub host: Cow<'a, str>,
    /// Score, 0–10.
    #[serde(rename = "Score")]
    pub score: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tricky_strings() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "pool-a-de-node-00001",
            "a\"b",
            "back\\slash",
            "tab\tnew\nline\r",
            "\u{7f}del",
            "ünïcödé 区域 🌍",
            "\u{1f}\u{0}x",
            "/slash/",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.push((0u8..=0x7f).map(char::from).collect());
        v
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in tricky_strings() {
            let mut out = Vec::new();
            write_str(&mut out, &s).expect("written");
            assert_eq!(out, serde_json::to_vec(&s).expect("encoded"), "{s:?}");
        }
    }

    #[test]
    fn filter_answers_are_what_serde_json_writes() {
        let names = tricky_strings();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let failed: Vec<(&str, &str)> = all.iter().map(|n| (*n, "why \"not\"")).collect();
        for (passed, failed) in [
            (&all[..], &failed[..0]),
            (&all[..0], &failed[..]),
            (&all[..1], &failed[2..4]),
            (&all[..0], &failed[..0]),
        ] {
            let mut out = Vec::new();
            write_filter_names(&mut out, passed.iter().copied(), failed.iter().copied())
                .expect("written");
            let expected = serde_json::to_vec(&FilterResult {
                nodes: None,
                node_names: Some(passed.to_vec()),
                failed_nodes: PairMap(&[]),
                failed_and_unresolvable: PairMap(failed),
                error: "",
            })
            .expect("encoded");
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected)
            );
        }
    }

    #[test]
    fn priorities_are_what_serde_json_writes() {
        let names = tricky_strings();
        let list: Vec<HostPriority<'_>> = names
            .iter()
            .zip([0, 1, 5, 9, 10, 11, -1, 100, i64::MAX, i64::MIN])
            .map(|(n, score)| HostPriority {
                host: Cow::Borrowed(n),
                score,
            })
            .collect();
        for part in [&list[..], &list[..0], &list[..1]] {
            let mut out = Vec::new();
            write_host_priorities(&mut out, part.iter().map(|h| (h.host.as_ref(), h.score)))
                .expect("written");
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&serde_json::to_vec(part).expect("encoded"))
            );
        }
    }
}
