//! Heap held by the extender's caches at 5,000 nodes and 50,000 bound pods,
//! measured as the growth of the process RSS. Nodes are real-shaped (the recorded kwok
//! node, relabelled), converted as the node watch converts them; pods are
//! entered as the pod watch enters them (UID, node, requests). The watch
//! streams' transient buffers are not included: they hold one object at a
//! time after the initial list.
//!
//! Run: `cargo bench -p carbon-kube-extender --bench memory`.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use carbon_kube_policy::zone_map::{RegionZoneMap, Resources};
use k8s_openapi::api::core::v1::Node;

/// Resident set size of this process, bytes (Linux).
fn rss() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: isize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

fn mib(b: isize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    const NODES: usize = 5000;
    const PODS: usize = 50_000;
    let state = common::shared(0);
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| serde_json::from_value(common::full_node(i)).unwrap())
        .collect();
    let before = rss();
    {
        let mut c = state.cluster_mut();
        for n in &nodes {
            c.upsert_node(
                carbon_kube_extender::watch::node_view(n),
                &RegionZoneMap::default(),
            );
        }
    }
    let after_nodes = rss();
    {
        let mut c = state.cluster_mut();
        for p in 0..PODS {
            let uid = format!("{:08x}-0000-4000-8000-{:012x}", p, p * 7919);
            c.upsert_pod(
                &uid,
                &common::node_name(p % NODES),
                Resources::new(250, 256 << 20),
            );
        }
    }
    let after_pods = rss();
    println!(
        "memory: {NODES} nodes: {:.1} MiB ({:.0} bytes/node); {PODS} bound pods: {:.1} MiB ({:.0} bytes/pod); caches total {:.1} MiB",
        mib(after_nodes - before),
        (after_nodes - before) as f64 / NODES as f64,
        mib(after_pods - after_nodes),
        (after_pods - after_nodes) as f64 / PODS as f64,
        mib(after_pods - before)
    );
    drop(nodes);
}
