//! CPU usage from the Kubernetes resource metrics API (`metrics.k8s.io/v1beta1`
//! `PodMetrics`, served by metrics-server), with `--cpu-usage-from-metrics-api`.
//!
//! One list per tick; a pod's usage is the sum of its containers' `usage.cpu`
//! (metrics-server's rate over its own window, typically 15 s to 1 min), taken
//! as the pod's mean usage over the tick. A failed list (no metrics-server,
//! no permission) leaves every pod on its requests for that tick; a pod
//! without metrics stays on its requests.

use std::collections::HashMap;

use carbon_kube_k8s::quantity::cpu_millis;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

use crate::kepler::PodKey;

/// CPU cores per pod from `PodMetrics` objects (their `containers[].usage.cpu`);
/// objects without a namespace, a name or a readable CPU quantity are skipped.
pub fn cpu_cores<'a>(items: impl IntoIterator<Item = &'a DynamicObject>) -> HashMap<PodKey, f64> {
    let mut out = HashMap::new();
    for item in items {
        let (Some(ns), Some(name)) = (&item.metadata.namespace, &item.metadata.name) else {
            continue;
        };
        let Some(containers) = item.data.get("containers").and_then(|c| c.as_array()) else {
            continue;
        };
        let millis: Option<i64> = containers
            .iter()
            .map(|c| {
                c.pointer("/usage/cpu")
                    .and_then(|q| q.as_str())
                    .and_then(cpu_millis)
            })
            .sum();
        if let Some(m) = millis {
            out.insert((ns.clone(), name.clone()), m as f64 / 1000.0);
        }
    }
    out
}

/// Lists every pod's metrics (or one namespace's).
pub async fn fetch(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<HashMap<PodKey, f64>, kube::Error> {
    let gvk = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "pods");
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let list = api.list(&ListParams::default()).await?;
    Ok(cpu_cores(&list.items))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The shape of `kubectl get --raw /apis/metrics.k8s.io/v1beta1/pods`
    /// (metrics-server 0.7): CPU in nanocores, memory in KiB.
    #[test]
    fn usage_is_the_sum_of_the_containers() {
        let list: kube::core::ObjectList<DynamicObject> = serde_json::from_value(serde_json::json!({
            "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
            "items": [
                {"metadata": {"name": "web-1", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
                 "timestamp": "2026-01-01T00:00:00Z", "window": "20.048s",
                 "containers": [
                    {"name": "app", "usage": {"cpu": "250000000n", "memory": "81920Ki"}},
                    {"name": "sidecar", "usage": {"cpu": "1500u", "memory": "10240Ki"}}]},
                {"metadata": {"name": "broken", "namespace": "shop"},
                 "containers": [{"name": "app", "usage": {"cpu": "lots"}}]}
            ]
        }))
        .unwrap();
        let m = cpu_cores(&list.items);
        assert_eq!(m.len(), 1);
        assert!((m[&("shop".to_owned(), "web-1".to_owned())] - 0.252).abs() < 1e-9);
    }
}
