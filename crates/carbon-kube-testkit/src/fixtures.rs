//! Fixtures for tests on the shared control plane: a namespace per test
//! ([`TestNamespace`]), node sets in zones ([`nodes_in_zone`]) and pods
//! ([`pod_named`]).
//!
//! Tests share one control plane per test binary, so everything a test creates
//! is scoped: objects live in its namespace, and the nodes it creates carry the
//! label [`NODE_POOL_LABEL`] set to the namespace name, which a scheduler built
//! with [`TestNamespace::scheduler_config`] is restricted to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec,
    ResourceRequirements, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::Error;
use crate::control_plane::ControlPlane;
use crate::kwok::{KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE};
use crate::scheduler::SchedulerConfig;
use crate::wait::{Progress, wait_for_pod_bound, wait_for_pod_running, wait_until};

/// Label put on every node a [`TestNamespace`] creates; value: the namespace name.
pub const NODE_POOL_LABEL: &str = "testkit.carbon-kube.dev/pool";

/// Well-known region label.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// Well-known zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Taint the API server puts on every new node until it is Ready.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Image of pods created by [`pod_named`]; never pulled (no kubelet).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// How long node helpers wait for nodes to become Ready.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

static NAMESPACES_CREATED: AtomicUsize = AtomicUsize::new(0);

/// A namespace of its own for one test, with a client for the test's runtime.
///
/// Nodes created through it belong to its node pool. Nothing is deleted
/// automatically (the control plane is thrown away at the end of the test
/// binary); call [`TestNamespace::delete`] to clean up earlier.
#[derive(Clone)]
pub struct TestNamespace {
    client: Client,
    name: String,
    nodes_created: std::sync::Arc<AtomicUsize>,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Creates a namespace named `<prefix>-<unique suffix>` (DNS-1123, at most
    /// 30 characters) with a fresh client for the calling runtime.
    pub async fn test_namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        let client = self.client().await?;
        TestNamespace::create(client, prefix).await
    }
}

impl TestNamespace {
    /// Creates a uniquely named namespace with `client`.
    pub async fn create(client: Client, prefix: &str) -> Result<Self, Error> {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    "testkit.carbon-kube.dev/test".to_owned(),
                    "true".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|e| Error::api(format!("create namespace {name}"), e))?;
        Ok(Self {
            client,
            name,
            nodes_created: std::sync::Arc::default(),
        })
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client (bound to the runtime that created this namespace).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An `Api` for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Value of [`NODE_POOL_LABEL`] on this test's nodes (the namespace name).
    pub fn node_pool(&self) -> &str {
        &self.name
    }

    /// A scheduler name unique to this test (the namespace name).
    pub fn scheduler_name(&self) -> &str {
        &self.name
    }

    /// A scheduler configuration for this test: one profile named
    /// [`TestNamespace::scheduler_name`] that places pods only on this test's
    /// node pool. Add extenders with [`SchedulerConfig::with_extender`].
    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig::new(self.scheduler_name()).restricted_to_node_pool(self.node_pool())
    }

    /// Creates the nodes of `nodes` in this test's pool, waits until each is
    /// Ready and free of the `node.kubernetes.io/not-ready` taint, and returns
    /// them (as last read).
    pub async fn create_nodes(&self, nodes: &NodeSet) -> Result<Vec<Node>, Error> {
        let first = self.nodes_created.fetch_add(nodes.count, Ordering::Relaxed);
        let api = Api::<Node>::all(self.client.clone());
        let mut names = Vec::with_capacity(nodes.count);
        for node in nodes.build(&self.name, first) {
            let name = node.metadata.name.clone().unwrap_or_default();
            api.create(&PostParams::default(), &node)
                .await
                .map_err(|e| Error::api(format!("create node {name}"), e))?;
            names.push(name);
        }
        let mut ready = Vec::with_capacity(names.len());
        for name in names {
            ready.push(make_schedulable(&api, &name, &nodes.taints).await?);
        }
        Ok(ready)
    }

    /// Creates `pod` in this namespace.
    pub async fn create_pod(&self, pod: &Pod) -> Result<Pod, Error> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.api::<Pod>()
            .create(&PostParams::default(), pod)
            .await
            .map_err(|e| Error::api(format!("create pod {}/{name}", self.name), e))
    }

    /// Waits until pod `name` is bound and returns the node name.
    pub async fn wait_for_pod_bound(&self, name: &str, timeout: Duration) -> Result<String, Error> {
        wait_for_pod_bound(&self.api(), name, timeout).await
    }

    /// Waits until pod `name` is Running and Ready (kwok nodes make it so).
    pub async fn wait_for_pod_running(&self, name: &str, timeout: Duration) -> Result<Pod, Error> {
        wait_for_pod_running(&self.api(), name, timeout).await
    }

    /// Deletes the namespace and this test's nodes (without waiting).
    pub async fn delete(self) -> Result<(), Error> {
        let selector = format!("{NODE_POOL_LABEL}={}", self.name);
        Api::<Node>::all(self.client.clone())
            .delete_collection(
                &kube::api::DeleteParams::default(),
                &kube::api::ListParams::default().labels(&selector),
            )
            .await
            .map_err(|e| Error::api(format!("delete nodes {selector}"), e))?;
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &kube::api::DeleteParams::default())
            .await
            .map_err(|e| Error::api(format!("delete namespace {}", self.name), e))?;
        Ok(())
    }
}

/// Waits until `name` is Ready, then removes the not-ready taint the API server
/// added at creation (the node lifecycle controller, which would do that, is not
/// run), leaving `taints`.
async fn make_schedulable(api: &Api<Node>, name: &str, taints: &[Taint]) -> Result<Node, Error> {
    wait_until(
        format!("node {name} to be Ready"),
        NODE_READY_TIMEOUT,
        || async {
            match api.get_opt(name).await {
                Ok(Some(node)) if node_is_ready(&node) => Progress::Done(()),
                Ok(Some(_)) => Progress::Waiting("not Ready yet (is kwok running?)".to_owned()),
                Ok(None) => Progress::Waiting("not found".to_owned()),
                Err(e) => Progress::Waiting(e.to_string()),
            }
        },
    )
    .await?;
    let patch = json!({ "spec": { "taints": taints } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            Error::api(
                format!("remove the {NOT_READY_TAINT} taint of node {name}"),
                e,
            )
        })
}

/// True if the node's `Ready` condition is `True`.
pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How a fake node is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSimulation {
    /// kwok manages it (annotation `kwok.x-k8s.io/node: fake`): it becomes Ready,
    /// keeps a lease, and pods bound to it become Running.
    Kwok,
    /// A plain Node object created with a Ready status; pods bound to it stay
    /// Pending (nothing runs them). For tests that only need scheduling.
    StaticReady,
}

/// `count` identical nodes in one zone. Build with [`nodes_in_zone`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSet {
    region: String,
    zone: String,
    count: usize,
    name_prefix: Option<String>,
    cpu: String,
    memory: String,
    pods: u32,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    simulation: NodeSimulation,
}

/// One kwok node in `zone` of `region` with 4 CPUs, 16Gi memory and 110 pods;
/// adjust with the builder methods.
pub fn nodes_in_zone(region: impl Into<String>, zone: impl Into<String>) -> NodeSet {
    NodeSet {
        region: region.into(),
        zone: zone.into(),
        count: 1,
        name_prefix: None,
        cpu: "4".to_owned(),
        memory: "16Gi".to_owned(),
        pods: 110,
        labels: BTreeMap::new(),
        taints: Vec::new(),
        simulation: NodeSimulation::Kwok,
    }
}

impl NodeSet {
    /// How many nodes.
    pub fn count(mut self, count: usize) -> Self {
        self.count = count;
        self
    }

    /// Name stem (default: the zone); nodes are named `<pool>-<stem>-<n>`.
    pub fn named(mut self, stem: impl Into<String>) -> Self {
        self.name_prefix = Some(stem.into());
        self
    }

    /// CPU capacity and allocatable, e.g. `"8"` or `"3500m"`.
    pub fn with_cpu(mut self, cpu: impl Into<String>) -> Self {
        self.cpu = cpu.into();
        self
    }

    /// Memory capacity and allocatable, e.g. `"32Gi"`.
    pub fn with_memory(mut self, memory: impl Into<String>) -> Self {
        self.memory = memory.into();
        self
    }

    /// Pod capacity.
    pub fn with_pods(mut self, pods: u32) -> Self {
        self.pods = pods;
        self
    }

    /// An extra label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// A taint (`effect`: `NoSchedule`, `PreferNoSchedule` or `NoExecute`).
    pub fn with_taint(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        effect: impl Into<String>,
    ) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        });
        self
    }

    /// Plain Node objects with a Ready status instead of kwok nodes.
    pub fn static_ready(mut self) -> Self {
        self.simulation = NodeSimulation::StaticReady;
        self
    }

    /// The Node objects, for pool `pool`, numbered from `first`.
    pub fn build(&self, pool: &str, first: usize) -> Vec<Node> {
        let stem = dns_label(self.name_prefix.as_deref().unwrap_or(&self.zone));
        (first..first + self.count)
            .map(|n| self.node(format!("{pool}-{stem}-{n}"), pool))
            .collect()
    }

    fn node(&self, name: String, pool: &str) -> Node {
        let mut labels = BTreeMap::from([
            (REGION_LABEL.to_owned(), self.region.clone()),
            (ZONE_LABEL.to_owned(), self.zone.clone()),
            (NODE_POOL_LABEL.to_owned(), pool.to_owned()),
            ("kubernetes.io/hostname".to_owned(), name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ]);
        labels.extend(self.labels.clone());
        let mut annotations = BTreeMap::new();
        if self.simulation == NodeSimulation::Kwok {
            labels.insert("type".to_owned(), "kwok".to_owned());
            annotations.insert(
                KWOK_NODE_ANNOTATION.to_owned(),
                KWOK_NODE_ANNOTATION_VALUE.to_owned(),
            );
        }
        let resources = BTreeMap::from([
            ("cpu".to_owned(), Quantity(self.cpu.clone())),
            ("memory".to_owned(), Quantity(self.memory.clone())),
            ("pods".to_owned(), Quantity(self.pods.to_string())),
        ]);
        let conditions = (self.simulation == NodeSimulation::StaticReady).then(|| {
            let now = Time(jiff_now());
            vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                reason: Some("KubeletReady".to_owned()),
                message: Some("static test node (carbon-kube-testkit)".to_owned()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now),
            }]
        });
        Node {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(resources.clone()),
                allocatable: Some(resources),
                conditions,
                ..NodeStatus::default()
            }),
        }
    }
}

/// A pod with one container of [`PAUSE_IMAGE`]. Build with [`pod_named`].
#[derive(Debug, Clone, PartialEq)]
pub struct PodTemplate {
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    requests: BTreeMap<String, Quantity>,
    scheduler_name: Option<String>,
    node_name: Option<String>,
    node_selector: BTreeMap<String, String>,
}

/// A pod called `name` requesting nothing, for the default scheduler.
pub fn pod_named(name: impl Into<String>) -> PodTemplate {
    PodTemplate {
        name: name.into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        requests: BTreeMap::new(),
        scheduler_name: None,
        node_name: None,
        node_selector: BTreeMap::new(),
    }
}

impl PodTemplate {
    /// Resource requests, e.g. `requesting("500m", "256Mi")`.
    pub fn requesting(mut self, cpu: impl Into<String>, memory: impl Into<String>) -> Self {
        self.requests.insert("cpu".to_owned(), Quantity(cpu.into()));
        self.requests
            .insert("memory".to_owned(), Quantity(memory.into()));
        self
    }

    /// Scheduled by the scheduler profile `scheduler_name`.
    pub fn scheduled_by(mut self, scheduler_name: impl Into<String>) -> Self {
        self.scheduler_name = Some(scheduler_name.into());
        self
    }

    /// Bound directly to `node` (`spec.nodeName`), bypassing any scheduler.
    pub fn bound_to(mut self, node: impl Into<String>) -> Self {
        self.node_name = Some(node.into());
        self
    }

    /// A label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// An annotation.
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// A `nodeSelector` entry.
    pub fn with_node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    /// The Pod object.
    pub fn build(&self) -> Pod {
        let non_empty = |map: &BTreeMap<String, String>| (!map.is_empty()).then(|| map.clone());
        Pod {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: non_empty(&self.labels),
                annotations: non_empty(&self.annotations),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".to_owned(),
                    image: Some(PAUSE_IMAGE.to_owned()),
                    resources: (!self.requests.is_empty()).then(|| ResourceRequirements {
                        requests: Some(self.requests.clone()),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                scheduler_name: self.scheduler_name.clone(),
                node_name: self.node_name.clone(),
                node_selector: non_empty(&self.node_selector),
                termination_grace_period_seconds: Some(0),
                ..PodSpec::default()
            }),
            status: None,
        }
    }
}

/// `<prefix>-<pid>-<n>`, lowercased to a DNS-1123 label of at most 30 characters.
fn unique_name(prefix: &str) -> String {
    let n = NAMESPACES_CREATED.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("{:x}{n}", std::process::id());
    let mut stem = dns_label(prefix);
    stem.truncate(30 - suffix.len().min(12) - 1);
    let stem = stem.trim_end_matches('-');
    let stem = if stem.is_empty() { "test" } else { stem };
    format!("{stem}-{suffix}")
}

/// Lowercase alphanumerics and `-`, no leading or trailing `-`.
fn dns_label(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_short_distinct_dns_labels() {
        let a = unique_name("Pod_is bound to a KWOK node, really very long");
        let b = unique_name("Pod_is bound to a KWOK node, really very long");
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.len() <= 30, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(name.starts_with("pod-is-bound"), "{name}");
        }
        assert!(unique_name("---").starts_with("test-"));
    }

    #[test]
    fn node_sets_carry_zone_pool_capacity_and_kwok_annotation() {
        let nodes = nodes_in_zone("eu-west", "eu-west-1a")
            .count(2)
            .with_cpu("8")
            .with_memory("32Gi")
            .with_pods(50)
            .with_label("carbon-kube.dev/tier", "batch")
            .build("pool-x", 3);
        assert_eq!(nodes.len(), 2);
        let node = &nodes[0];
        assert_eq!(node.metadata.name.as_deref(), Some("pool-x-eu-west-1a-3"));
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[ZONE_LABEL], "eu-west-1a");
        assert_eq!(labels[REGION_LABEL], "eu-west");
        assert_eq!(labels[NODE_POOL_LABEL], "pool-x");
        assert_eq!(labels["carbon-kube.dev/tier"], "batch");
        let annotations = node.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[KWOK_NODE_ANNOTATION], "fake");
        let capacity = node.status.as_ref().unwrap().capacity.as_ref().unwrap();
        assert_eq!(capacity["cpu"].0, "8");
        assert_eq!(capacity["memory"].0, "32Gi");
        assert_eq!(capacity["pods"].0, "50");
        assert_eq!(
            nodes[1].metadata.name.as_deref(),
            Some("pool-x-eu-west-1a-4")
        );
    }

    #[test]
    fn static_nodes_are_ready_and_not_managed_by_kwok() {
        let node = &nodes_in_zone("r", "z").static_ready().build("p", 0)[0];
        assert!(node_is_ready(node));
        assert!(
            !node
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(KWOK_NODE_ANNOTATION)
        );
    }

    #[test]
    fn pods_request_resources_and_name_their_scheduler() {
        let pod = pod_named("web")
            .requesting("500m", "256Mi")
            .scheduled_by("carbon")
            .with_label("app", "web")
            .build();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.scheduler_name.as_deref(), Some("carbon"));
        let requests = spec.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert_eq!(requests["cpu"].0, "500m");
        assert_eq!(pod.metadata.labels.unwrap()["app"], "web");
    }
}
