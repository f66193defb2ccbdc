//! Control-plane faults under the extender (issue 18), with the real
//! kube-scheduler calling it, on a control plane whose etcd traffic runs
//! through the testkit's latency proxy:
//!
//! - kube-apiserver killed (SIGKILL) for 3 s and started again;
//! - etcd frozen (SIGSTOP) for 5 s while pods are being created, then thawed.
//!
//! What must hold every time: during the fault the extender keeps answering
//! from its caches (fail open: a filter request is answered, and its nodes
//! pass); afterwards its watches resume (a node created after the fault
//! joins its node cache, and a snapshot published after the fault decides
//! the next pods, which land in the zone it makes green), and nothing is
//! lost (every pod the API server accepted is bound). The faults disturb the
//! whole control plane, so the tests of this binary take turns (`FAULTS`).
//!
//! `FAULT_ROUNDS` (default 1; `make soak` sets more) repeats each scenario.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use carbon_kube_extender::Args;
use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{
    ControlPlane, Extender, Progress, SchedulerConfig, TestNamespace, fault_rounds, nodes_in_zone,
    pod_named, shared_for_faults, wait_until,
};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The tests of this binary disturb the shared control plane: one at a time.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(120);
const SHIPPED_CONFIG: &str = include_str!("../../../deploy/scheduler/kube-scheduler-config.yaml");
const TX: &str = "US-TEX-ERCO";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// The first real 2023 hour where DE is under 200 g/kWh and Texas over 300,
/// and the first where Texas is under 200 and DE over 300: `(de, tx)` each.
fn real_hours() -> ((f64, f64), (f64, f64)) {
    let de = support::year("DE");
    let tx = support::year(TX);
    let find = |ok: &dyn Fn(f64, f64) -> bool| {
        (0..de.len().min(tx.len()))
            .map(|i| (de[i].1, tx[i].1))
            .find(|(d, t)| ok(*d, *t))
            .unwrap()
    };
    (
        find(&|d, t| d < 200.0 && t > 300.0),
        find(&|d, t| t < 200.0 && d > 300.0),
    )
}

/// Publishes DE and Texas at `(de, tx)` g/kWh, measured now.
async fn publish(ns: &TestNamespace, (de, tx): (f64, f64)) {
    let mut s = Snapshot::default();
    for (zone, v) in [("DE", de), (TX, tx)] {
        s.zones.insert(
            ZoneId::parse(zone).unwrap(),
            ZoneRecord::new(
                CarbonIntensity::new(v).unwrap(),
                now(),
                Source::new(Source::ELECTRICITY_MAPS),
            ),
        );
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(keys::SNAPSHOT_CONFIGMAP.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            keys::SNAPSHOT_KEY.to_owned(),
            s.to_json(),
        )])),
        ..ConfigMap::default()
    };
    ns.api::<ConfigMap>()
        .patch(
            keys::SNAPSHOT_CONFIGMAP,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

/// The extender on this runtime, serving until dropped.
struct RunningExtender {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningExtender {
    async fn start(cp: &ControlPlane, ns: &TestNamespace) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let args = Cli::parse_from(["extender", "--namespace", ns.name()]).args;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(carbon_kube_extender::serve(
            args,
            listener,
            Some(cp.client().await.unwrap()),
            async {
                let _ = rx.await;
            },
        ));
        let ext = Self {
            addr,
            _stop: tx,
            task,
        };
        wait_until("extender /readyz", WAIT, || async {
            match ext.get("/readyz").await {
                (200, _) => Progress::Done(()),
                (_, body) => Progress::Waiting(body),
            }
        })
        .await
        .unwrap();
        ext
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("{}{path}", self.url())).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// `carbon_kube_scheduler_nodes_cached`.
    async fn nodes_cached(&self) -> f64 {
        let text = self.get("/metrics").await.1;
        text.lines()
            .find_map(|l| l.strip_prefix("carbon_kube_scheduler_nodes_cached "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    }

    /// A filter request as kube-scheduler sends it (nodeCacheCapable: names
    /// only), for `nodes`; returns the status and the nodes that pass.
    async fn filter(&self, nodes: &[String]) -> (u16, Vec<String>) {
        let fixture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/recorded-filter-names.json"
        ))
        .unwrap();
        let mut body: Value = serde_json::from_str(&fixture).unwrap();
        body["NodeNames"] = json!(nodes);
        let r = reqwest::Client::new()
            .post(format!("{}/filter", self.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let passed = v["NodeNames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (status, passed)
    }
}

impl Drop for RunningExtender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One scenario's cluster: two DE and two Texas nodes, the extender and the
/// stock kube-scheduler from the shipped configuration calling it.
struct Scene {
    ns: TestNamespace,
    ext: RunningExtender,
    _sched: carbon_kube_testkit::Scheduler,
    nodes: Vec<String>,
}

impl Scene {
    async fn start(cp: &ControlPlane, name: &str, first: (f64, f64)) -> Self {
        let ns = cp.test_namespace(name).await.unwrap();
        let mut nodes = Vec::new();
        for zone in ["DE", TX] {
            let made = ns
                .create_nodes(
                    &nodes_in_zone(format!("r-{zone}"), format!("{zone}-a"))
                        .named(zone.to_ascii_lowercase())
                        .with_label(keys::LABEL_GRID_ZONE, zone)
                        .static_ready()
                        .count(2),
                )
                .await
                .unwrap();
            nodes.extend(made.into_iter().filter_map(|n| n.metadata.name));
        }
        publish(&ns, first).await;
        let ext = RunningExtender::start(cp, &ns).await;
        let doc: Value = serde_saphyr::from_str(SHIPPED_CONFIG).unwrap();
        let e = &doc["extenders"][0];
        let config = SchedulerConfig::from_yaml(SHIPPED_CONFIG)
            .unwrap()
            .with_scheduler_name(ns.scheduler_name())
            .restricted_to_node_pool(ns.node_pool())
            .without_extenders()
            .with_extender(
                Extender::at(ext.url())
                    .filter_verb(e["filterVerb"].as_str().unwrap())
                    .prioritize_verb(e["prioritizeVerb"].as_str().unwrap())
                    .weight(e["weight"].as_i64().unwrap())
                    .node_cache_capable(true)
                    .ignorable(e["ignorable"].as_bool().unwrap())
                    .http_timeout(Duration::from_secs(1)),
            );
        let sched = cp.start_scheduler(config).await.unwrap();
        Self {
            ns,
            ext,
            _sched: sched,
            nodes,
        }
    }

    fn pod(&self, name: &str) -> Pod {
        pod_named(name)
            .scheduled_by(self.ns.scheduler_name())
            .requesting("100m", "64Mi")
            .build()
    }

    /// Creates `names`, four at a time; the names the API server accepted.
    async fn create(&self, names: &[String]) -> Vec<String> {
        let api: Api<Pod> = self.ns.api();
        futures::stream::iter(names.iter().cloned())
            .map(|n| {
                let (api, pod) = (api.clone(), self.pod(&n));
                async move {
                    api.create(&PostParams::default(), &pod)
                        .await
                        .ok()
                        .map(|_| n)
                }
            })
            .buffer_unordered(4)
            .filter_map(futures::future::ready)
            .collect()
            .await
    }

    /// Waits until every pod of `names` is bound; their zones.
    async fn zones_of(&self, names: &[String]) -> Vec<String> {
        let nodes: Api<Node> = Api::all(self.ns.client());
        let mut zones = Vec::new();
        for n in names {
            let node = self.ns.wait_for_pod_bound(n, WAIT).await.unwrap();
            let node = nodes.get(&node).await.unwrap();
            zones.push(
                node.metadata
                    .labels
                    .unwrap_or_default()
                    .get(keys::LABEL_GRID_ZONE)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        zones
    }

    /// Every pod of this scenario the API server holds, all bound.
    async fn all_bound(&self, expected: usize) {
        wait_until("every accepted pod bound", WAIT, || async {
            let pods = self
                .ns
                .api::<Pod>()
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            let bound = pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .count();
            if pods.len() == expected && bound == expected {
                Progress::Done(())
            } else {
                Progress::Waiting(format!(
                    "{bound} of {} bound, {expected} expected",
                    pods.len()
                ))
            }
        })
        .await
        .unwrap();
    }

    /// After a fault: a node created now joins the extender's cache (its
    /// node watch resumed) and a grid that turned decides the next pods (its
    /// snapshot watch resumed).
    async fn watches_resumed(&self, turned: (f64, f64), round: usize) {
        let all_nodes = || async {
            Api::<Node>::all(self.ns.client())
                .list(&ListParams::default())
                .await
                .map_or(0, |l| l.items.len())
        };
        self.ns
            .create_nodes(
                &nodes_in_zone("r-late", "late-a")
                    .named(format!("late{round}"))
                    .with_label(keys::LABEL_GRID_ZONE, TX)
                    .static_ready(),
            )
            .await
            .unwrap();
        wait_until("the new node in the extender's cache", WAIT, || async {
            let (want, have) = (all_nodes().await as f64, self.ext.nodes_cached().await);
            if have == want {
                Progress::Done(())
            } else {
                Progress::Waiting(format!("{have} cached, {want} nodes"))
            }
        })
        .await
        .unwrap();
        publish(&self.ns, turned).await;
        // The snapshot watch applies it; pods created from then on land in
        // Texas, now the green zone (DE over the threshold is filtered).
        let names: Vec<String> = (0..4).map(|i| format!("after-{round}-{i}")).collect();
        let api: Api<Pod> = self.ns.api();
        for tries in 0.. {
            let probe = format!("probe-{round}-{tries}");
            let accepted = self.create(std::slice::from_ref(&probe)).await;
            let zones = self.zones_of(&accepted).await;
            let gone = kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..kube::api::DeleteParams::default()
            };
            api.delete(&probe, &gone).await.unwrap();
            carbon_kube_testkit::wait_for_deletion(&api, &probe, WAIT)
                .await
                .unwrap();
            if zones.iter().all(|z| z == TX) {
                break;
            }
            // Placed before the watch applied the new snapshot: again.
            assert!(tries < 20, "the new snapshot never decided: {zones:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let rest = self.create(&names).await;
        assert_eq!(rest.len(), 4);
        let zones = self.zones_of(&rest).await;
        assert!(zones.iter().all(|z| z == TX), "{zones:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_restart_under_the_extender_loses_nothing() {
    let _turn = FAULTS.lock().await;
    let cp = shared_for_faults().await;
    let (green_de, green_tx) = real_hours();
    for round in 0..fault_rounds() {
        let scene = Scene::start(cp, "ext-apiserver-restart", green_de).await;
        let before: Vec<String> = (0..6).map(|i| format!("before-{i}")).collect();
        let accepted = scene.create(&before).await;
        assert_eq!(accepted.len(), before.len());
        let zones = scene.zones_of(&accepted).await;
        assert!(zones.iter().all(|z| z == "DE"), "{zones:?}");

        cp.kill_apiserver().await;
        // Fail open: the extender answers from its caches meanwhile.
        let (status, passed) = scene.ext.filter(&scene.nodes).await;
        assert_eq!(status, 200, "round {round}: the extender must answer");
        assert!(
            passed.iter().any(|n| n.contains("-de-")),
            "round {round}: the green zone still passes: {passed:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (status, _) = scene.ext.filter(&scene.nodes).await;
        assert_eq!(status, 200);
        cp.start_apiserver().await.unwrap();

        scene.watches_resumed(green_tx, round).await;
        // Nothing lost: the 6 pods from before, the 4 after.
        scene.all_bound(10).await;
        let _ = scene.ns.delete().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_stall_under_the_extender_loses_nothing() {
    let _turn = FAULTS.lock().await;
    let cp = shared_for_faults().await;
    let (green_de, green_tx) = real_hours();
    for round in 0..fault_rounds() {
        let scene = Scene::start(cp, "ext-etcd-stall", green_de).await;
        // Pods created while etcd is frozen: their requests wait (or time
        // out: then the API server did not accept them, and they are not
        // counted).
        let during: Vec<String> = (0..6).map(|i| format!("during-{i}")).collect();
        cp.pause_etcd().unwrap();
        let thaw = async {
            // Fail open: the extender answers from its caches meanwhile.
            let (status, passed) = scene.ext.filter(&scene.nodes).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            cp.resume_etcd().unwrap();
            (status, passed)
        };
        let (accepted, (status, passed)) = tokio::join!(scene.create(&during), thaw);
        assert_eq!(status, 200, "round {round}: the extender must answer");
        assert!(
            passed.iter().any(|n| n.contains("-de-")),
            "round {round}: the green zone still passes: {passed:?}"
        );
        let zones = scene.zones_of(&accepted).await;
        assert!(zones.iter().all(|z| z == "DE"), "{zones:?}");

        scene.watches_resumed(green_tx, round).await;
        scene.all_bound(accepted.len() + 4).await;
        println!(
            "round {round}: {} of {} pods created during the stall were accepted, all bound",
            accepted.len(),
            during.len()
        );
        let _ = scene.ns.delete().await;
    }
}
