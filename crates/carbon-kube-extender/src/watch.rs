//! Background tasks that keep the request path's caches current: the node
//! and pod watches (kube-rs watchers), the `carbon-intensity-data` and
//! `carbon-kube-config` ConfigMap watches, the snapshot file poller, and the
//! Events written when a pod lands where carbon sent it.
//!
//! Everything is watched, not polled (except the local snapshot file), so a
//! new snapshot or override takes effect within seconds. Watch errors are
//! retried with backoff and never reach the request path: the last good
//! state keeps serving, and stale data ages into neutral decisions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use carbon_kube_model::{Snapshot, keys};
use carbon_kube_policy::overrides::RuntimeOverrides;
use carbon_kube_policy::placement::PlacementConfigRaw;
use carbon_kube_policy::zone_map::{NodeView, Resources};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client};

use crate::state::Shared;
use crate::wire::{WireContainer, WirePodSpec, WireResources, pod_requests};

/// The node as the policy sees it.
pub fn node_view(node: &Node) -> NodeView {
    let q = |name: &str| {
        node.status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(name))
            .map(|q| q.0.as_str())
    };
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        allocatable: Resources::new(
            q("cpu").and_then(crate::quantity::cpu_millis).unwrap_or(0),
            q("memory")
                .and_then(crate::quantity::memory_bytes)
                .unwrap_or(0),
        ),
        requested: Resources::default(),
    }
}

fn container(c: &k8s_openapi::api::core::v1::Container) -> WireContainer {
    WireContainer {
        resources: Some(WireResources {
            requests: c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| *k == "cpu" || *k == "memory")
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect()
                }),
        }),
        restart_policy: c.restart_policy.clone(),
    }
}

/// A bound, running pod's `(uid, node, requests)`; `None` for pods that do
/// not use node resources.
pub fn bound_pod(pod: &Pod) -> Option<(String, String, Resources)> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.clone().filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let wire = WirePodSpec {
        containers: Some(spec.containers.iter().map(container).collect()),
        init_containers: spec
            .init_containers
            .as_ref()
            .map(|c| c.iter().map(container).collect()),
        overhead: spec
            .overhead
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()),
        scheduler_name: None,
    };
    let requests = pod_requests(Some(&wire)).unwrap_or_default();
    Some((pod.metadata.uid.clone()?, node, requests))
}

/// Watches nodes into the cache. Marks readiness check `nodes` after the
/// first complete list.
pub async fn watch_nodes(client: Client, shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(client);
    let mut relist: Option<Vec<NodeView>> = None;
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(ev)) => {
                match ev {
                    WatchEvent::Init => relist = Some(Vec::new()),
                    WatchEvent::InitApply(n) => {
                        if let Some(r) = relist.as_mut() {
                            r.push(node_view(&n));
                        }
                    }
                    WatchEvent::InitDone => {
                        let views = relist.take().unwrap_or_default();
                        tracing::info!(nodes = views.len(), "node cache synced");
                        shared
                            .cluster_mut()
                            .replace_nodes(views, &shared.region_map);
                        shared.readiness.set("nodes", true);
                    }
                    WatchEvent::Apply(n) => {
                        shared
                            .cluster_mut()
                            .upsert_node(node_view(&n), &shared.region_map);
                    }
                    WatchEvent::Delete(n) => {
                        if let Some(name) = &n.metadata.name {
                            shared.cluster_mut().remove_node(name);
                        }
                    }
                }
                let count = shared.cluster().nodes.len();
                shared
                    .metrics
                    .nodes_cached
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
        }
    }
}

/// Watches bound pods: sums their requests per node, and writes an Event on
/// a pod whose landing zone carbon decided.
pub async fn watch_pods(client: Client, shared: Arc<Shared>, recorder: Option<Recorder>) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default()
        .fields("spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed");
    let mut relist: Option<Vec<(String, String, Resources)>> = None;
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(ev)) => {
                match ev {
                    WatchEvent::Init => relist = Some(Vec::new()),
                    WatchEvent::InitApply(p) => {
                        if let (Some(r), Some(b)) = (relist.as_mut(), bound_pod(&p)) {
                            r.push(b);
                        }
                    }
                    WatchEvent::InitDone => {
                        let pods = relist.take().unwrap_or_default();
                        tracing::info!(pods = pods.len(), "pod cache synced");
                        shared.cluster_mut().replace_pods(pods);
                        shared.readiness.set("pods", true);
                    }
                    WatchEvent::Apply(p) => match bound_pod(&p) {
                        Some((uid, node, r)) => {
                            shared.cluster_mut().upsert_pod(&uid, &node, r);
                            if let Some(rec) = &recorder {
                                explain_landing(&shared, rec, &p, &uid, &node);
                            }
                        }
                        None => {
                            if let Some(uid) = &p.metadata.uid {
                                shared.cluster_mut().remove_pod(uid);
                            }
                        }
                    },
                    WatchEvent::Delete(p) => {
                        if let Some(uid) = &p.metadata.uid {
                            shared.cluster_mut().remove_pod(uid);
                        }
                    }
                }
                let count = shared.cluster().pod_count();
                shared
                    .metrics
                    .pods_tracked
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
    }
}

fn explain_landing(shared: &Arc<Shared>, recorder: &Recorder, pod: &Pod, uid: &str, node: &str) {
    let Some(decision) = shared.decisions.get(uid) else {
        return;
    };
    shared.decisions.invalidate(uid);
    let zone = shared.cluster().zone_of(node).cloned();
    let (reason, note) = match decision.summary.landing(zone.as_ref()) {
        Some(landing) => ("CarbonAwarePlacement", format!("{landing} (node {node})")),
        None => match &decision.failed_open {
            Some(why) => ("CarbonThresholdFailedOpen", format!("{why} (node {node})")),
            None => return,
        },
    };
    tracing::info!(pod = %format_args!("{}/{}", decision.namespace, decision.name), reason, "{note}");
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: Some(uid.to_owned()),
        ..ObjectReference::default()
    };
    let recorder = recorder.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        let ev = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Scheduling".into(),
            secondary: None,
        };
        let result = match recorder.publish(&ev, &reference).await {
            Ok(()) => "written",
            Err(e) => {
                tracing::warn!(error = %e, "writing a pod Event failed");
                "failed"
            }
        };
        shared
            .metrics
            .events
            .get_or_create(&crate::metrics::ResultLabels { result })
            .inc();
    });
}

/// An Event recorder for the extender.
pub fn recorder(client: Client) -> Recorder {
    let instance = std::env::var("HOSTNAME").ok();
    Recorder::new(
        client,
        Reporter {
            controller: "carbon-kube-extender".into(),
            instance,
        },
    )
}

/// Watches one ConfigMap by name; calls `apply` with its content, or `None`
/// when it does not exist. Marks readiness check `check` after the first list.
async fn watch_configmap(
    client: Client,
    namespace: String,
    name: &'static str,
    check: &'static str,
    shared: Arc<Shared>,
    apply: impl Fn(&Shared, Option<&ConfigMap>),
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut seen = false;
    loop {
        match stream.try_next().await {
            Ok(Some(WatchEvent::Init)) => seen = false,
            Ok(Some(WatchEvent::InitApply(cm) | WatchEvent::Apply(cm))) => {
                seen = true;
                apply(&shared, Some(&cm));
            }
            Ok(Some(WatchEvent::InitDone)) => {
                if !seen {
                    apply(&shared, None);
                }
                shared.readiness.set(check, true);
            }
            Ok(Some(WatchEvent::Delete(_))) => {
                seen = false;
                apply(&shared, None);
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, configmap = name, "ConfigMap watch failed; retrying")
            }
        }
    }
}

/// Applies the snapshot ConfigMap's content.
pub fn apply_snapshot_configmap(shared: &Shared, cm: Option<&ConfigMap>) {
    let Some(cm) = cm else {
        tracing::warn!(
            configmap = keys::SNAPSHOT_CONFIGMAP,
            "snapshot ConfigMap absent: scheduling without carbon (neutral)"
        );
        shared.set_snapshot(Snapshot::default());
        return;
    };
    // Bad zones are dropped (each a warning and a `bad_zone` count); an
    // unreadable ConfigMap is a warning and an `unreadable` count, and the
    // previous snapshot stays (it turns neutral when stale).
    if let Some(snapshot) = shared.metrics.snapshot_errors.read(cm) {
        tracing::info!(zones = snapshot.zones.len(), "carbon snapshot updated");
        shared.set_snapshot(snapshot);
    }
}

/// Applies the `carbon-kube-config` overrides over the base settings. A bad
/// override is rejected whole (the previous settings stay) and reported with
/// every field path. An override past its `validUntil` is ignored (the base
/// settings apply); one that expires later is undone by
/// [`Shared::expire_overrides`] from the gauge refresh loop.
pub fn apply_config_configmap(shared: &Shared, cm: Option<&ConfigMap>) {
    let empty = BTreeMap::new();
    let data = cm.and_then(|c| c.data.as_ref()).unwrap_or(&empty);
    let prefix = format!("ConfigMap {}: ", keys::CONFIG_CONFIGMAP);
    let now = shared.now();
    let result = RuntimeOverrides::from_string_map(data, &prefix).and_then(|o| {
        if !o.unknown.is_empty() {
            tracing::debug!(
                unknown = ?o.unknown,
                "keys of carbon-kube-config not used by the extender"
            );
        }
        let expired = o.is_expired(now);
        if expired {
            tracing::info!(
                valid_until = o.valid_until,
                "carbon-kube-config override has expired (validUntil); using the static settings"
            );
        }
        let raw = if expired {
            PlacementConfigRaw::default()
        } else {
            o.placement
        };
        shared
            .base_config
            .clone()
            .overlay(&raw)
            .validate_over(&Default::default(), &prefix)
            .map(|cfg| (cfg, o.valid_until.filter(|_| !expired)))
    });
    match result {
        Ok((cfg, valid_until)) => {
            if *shared.config() != cfg {
                tracing::info!(config = ?cfg.to_raw(), ?valid_until, "placement settings changed");
            }
            shared.set_config(cfg);
            *shared
                .override_valid_until
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = valid_until;
        }
        Err(e) => {
            shared.metrics.config_errors.inc();
            tracing::error!(error = %e, "rejected runtime override; keeping the previous settings");
        }
    }
}

/// Watches the snapshot ConfigMap.
pub async fn watch_snapshot(client: Client, namespace: String, shared: Arc<Shared>) {
    watch_configmap(
        client,
        namespace,
        keys::SNAPSHOT_CONFIGMAP,
        "snapshot",
        shared,
        apply_snapshot_configmap,
    )
    .await;
}

/// Watches the runtime overrides ConfigMap.
pub async fn watch_config(client: Client, namespace: String, shared: Arc<Shared>) {
    watch_configmap(
        client,
        namespace,
        keys::CONFIG_CONFIGMAP,
        "config",
        shared,
        apply_config_configmap,
    )
    .await;
}

/// Loads a snapshot file; a missing file is an empty snapshot.
pub fn load_snapshot_file(path: &PathBuf, shared: &Shared) {
    match std::fs::read_to_string(path) {
        Ok(text) => match Snapshot::parse_lenient(&text) {
            Ok((snapshot, errors)) => {
                for e in errors {
                    tracing::warn!(error = %e, file = %path.display(), "ignoring a bad zone");
                }
                tracing::info!(zones = snapshot.zones.len(), file = %path.display(), "snapshot file loaded");
                shared.set_snapshot(snapshot);
            }
            Err(e) => {
                tracing::error!(error = %e, file = %path.display(), "snapshot file unreadable; keeping the previous snapshot")
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, file = %path.display(), "no snapshot file: scheduling without carbon (neutral)");
            shared.set_snapshot(Snapshot::default());
        }
    }
}

/// Reloads the snapshot file whenever its modification time or size changes.
pub async fn watch_snapshot_file(path: PathBuf, shared: Arc<Shared>, every: Duration) {
    let stamp = |p: &PathBuf| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut last = stamp(&path);
    load_snapshot_file(&path, &shared);
    shared.readiness.set("snapshot", true);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now != last {
            last = now;
            load_snapshot_file(&path, &shared);
        }
    }
}

/// Refreshes the data-age gauges.
pub async fn refresh_gauges(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let snapshot = shared.snapshot();
        shared.metrics.snapshot.observe(&snapshot, shared.now());
        shared.expire_overrides(shared.now());
    }
}
