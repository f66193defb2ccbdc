//! The carbon behaviour suite on a real control plane (carbon-kube-testkit):
//! kwok nodes in three grid zones, the shipped scheduler configurations,
//! snapshots built from real 2023 hours. Every behaviour test runs twice:
//! with the stock kube-scheduler and the extender (`_extender`), and with
//! kube-scheduler-carbon, the framework plugin (`_plugin`,
//! scheduler-plugin/), so the two modes cannot drift.

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use carbon_kube_extender::Args;
use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{
    CARBON_SCHEDULER, ControlPlane, Extender, Scheduler, SchedulerConfig, TestNamespace,
    nodes_in_zone, pod_named, shared as shared_control_plane,
};
use clap::Parser;
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use support::year;
use tokio::sync::oneshot;

const BOUND: Duration = Duration::from_secs(60);
const SHIPPED_CONFIG: &str = include_str!("../../../deploy/scheduler/kube-scheduler-config.yaml");
const SHIPPED_PLUGIN_CONFIG: &str =
    include_str!("../../../deploy/scheduler/kube-scheduler-plugin-config.yaml");

/// Where the carbon decisions are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The stock kube-scheduler calling the extender over HTTP.
    Extender,
    /// kube-scheduler-carbon with the CarbonKube framework plugin.
    Plugin,
}

/// Runs a behaviour test in both modes.
macro_rules! both_modes {
    ($($test:ident),* $(,)?) => {
        mod extender_mode {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Mode::Extender).await;
                }
            )*
        }
        mod plugin_mode {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Mode::Plugin).await;
                }
            )*
        }
    };
}

both_modes!(
    pods_land_in_the_greenest_zone_that_fits_then_the_next,
    hard_constraints_win_over_carbon,
    a_new_snapshot_moves_the_next_pods,
    threshold_override_opt_out_and_fail_open,
    stale_or_deleted_data_is_neutral,
);

/// The value of the sample `name{labels}` in a Prometheus or OpenMetrics
/// text, whatever the label order (the extender writes OpenMetrics, the
/// plugin's kube-scheduler the Prometheus text format).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let mut have: Vec<(&str, &str)> = set
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        have.sort_unstable();
        let mut want = labels.to_vec();
        want.sort_unstable();
        (have == want).then(|| value.split_whitespace().next()?.parse().ok())?
    })
}

/// The carbon side of a test: the extender (and the stock kube-scheduler
/// calling it), or kube-scheduler-carbon.
struct Running {
    mode: Mode,
    ext: Option<RunningExtender>,
    sched: Scheduler,
}

impl Running {
    /// The metrics of whoever makes the carbon decisions.
    async fn metrics(&self) -> String {
        match &self.ext {
            Some(ext) => ext.get("/metrics").await.1,
            None => self.sched.metrics().await.unwrap_or_else(|e| e),
        }
    }

    /// Waits until the sample `name{labels}` is `value` (`None`: absent).
    async fn wait_sample(&self, name: &str, labels: &[(&str, &str)], value: Option<f64>) {
        self.wait_sample_until(name, labels, |got| got == value)
            .await;
    }

    /// Waits until the sample `name{labels}` satisfies `ok`.
    async fn wait_sample_until(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        ok: impl Fn(Option<f64>) -> bool,
    ) {
        carbon_kube_testkit::wait_until(format!("{name}{labels:?} to change"), BOUND, || async {
            let got = sample(&self.metrics().await, name, labels);
            if ok(got) {
                carbon_kube_testkit::Progress::Done(())
            } else {
                carbon_kube_testkit::Progress::Waiting(format!("{got:?}"))
            }
        })
        .await
        .unwrap();
    }

    /// The `result` label of an Event handed over: the extender writes them
    /// itself; the plugin hands them to kube-scheduler's broadcaster.
    fn event_result(&self) -> &'static str {
        match self.mode {
            Mode::Extender => "written",
            Mode::Plugin => "recorded",
        }
    }

    /// Stops the extender (the scheduler keeps running until dropped).
    async fn stop(&mut self) {
        if let Some(ext) = self.ext.take() {
            ext.stop().await;
        }
    }
}

/// The shipped plugin configuration, reading this test's ConfigMaps and
/// confined to this test's nodes.
fn plugin_scheduler_config(ns: &TestNamespace) -> SchedulerConfig {
    let doc: serde_json::Value = serde_saphyr::from_str(SHIPPED_PLUGIN_CONFIG).unwrap();
    assert_eq!(doc["profiles"][0]["schedulerName"], keys::SCHEDULER_NAME);
    let mut args = doc["profiles"][0]["pluginConfig"][0]["args"].clone();
    assert_eq!(args["namespace"], keys::DEFAULT_NAMESPACE);
    args["namespace"] = ns.name().into();
    SchedulerConfig::from_yaml(SHIPPED_PLUGIN_CONFIG)
        .unwrap()
        .with_binary(CARBON_SCHEDULER)
        .with_scheduler_name(ns.scheduler_name())
        .restricted_to_node_pool(ns.node_pool())
        .with_plugin_args("CarbonKube", args)
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

/// A running extender; stopped by [`RunningExtender::stop`] or on drop.
struct RunningExtender {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningExtender {
    async fn start(cp: &ControlPlane, ns: &TestNamespace, extra: &[&str]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut argv = vec!["extender", "--namespace", ns.name()];
        argv.extend_from_slice(extra);
        let args = Cli::parse_from(argv).args;
        let client = cp.client().await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(carbon_kube_extender::serve(
            args,
            listener,
            Some(client),
            async {
                let _ = rx.await;
            },
        ));
        let ext = Self {
            addr,
            stop: Some(tx),
            task,
        };
        ext.wait_ready().await;
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

    async fn wait_ready(&self) {
        carbon_kube_testkit::wait_until("extender /readyz", BOUND, || async {
            match self.get("/readyz").await {
                (200, _) => carbon_kube_testkit::Progress::Done(()),
                (_, body) => carbon_kube_testkit::Progress::Waiting(body),
            }
        })
        .await
        .unwrap();
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningExtender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shipped configuration, pointed at `url` and confined to this test's
/// nodes. Weight, timeout, ignorable and nodeCacheCapable come from the file.
fn scheduler_config(ns: &TestNamespace, url: &str) -> SchedulerConfig {
    let doc: serde_json::Value = serde_saphyr::from_str(SHIPPED_CONFIG).unwrap();
    let e = &doc["extenders"][0];
    assert_eq!(doc["profiles"][0]["schedulerName"], keys::SCHEDULER_NAME);
    let timeout: u64 = e["httpTimeout"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    SchedulerConfig::from_yaml(SHIPPED_CONFIG)
        .unwrap()
        .with_scheduler_name(ns.scheduler_name())
        .restricted_to_node_pool(ns.node_pool())
        .without_extenders()
        .with_extender(
            Extender::at(url)
                .filter_verb(e["filterVerb"].as_str().unwrap())
                .prioritize_verb(e["prioritizeVerb"].as_str().unwrap())
                .weight(e["weight"].as_i64().unwrap())
                .node_cache_capable(e["nodeCacheCapable"].as_bool().unwrap())
                .ignorable(e["ignorable"].as_bool().unwrap())
                .http_timeout(Duration::from_secs(timeout)),
        )
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// A snapshot with the given intensities, measured `age` seconds ago.
fn snapshot(values: &[(&str, f64)], age: i64) -> Snapshot {
    let mut s = Snapshot::default();
    for (zone, v) in values {
        s.zones.insert(
            ZoneId::parse(zone).unwrap(),
            ZoneRecord::new(
                CarbonIntensity::new(*v).unwrap(),
                now() - age,
                Source::new(Source::ELECTRICITY_MAPS),
            ),
        );
    }
    s
}

/// The first real 2023 hour where GB < DE < 250 < US-TEX-ERCO with GB at
/// least 60 g/kWh cleaner than DE, as `(gb, de, tx)` g/kWh.
fn real_hour_gb_de_tx() -> (f64, f64, f64) {
    let de = year("DE");
    let gb = year("GB");
    let tx = year("US-TEX-ERCO");
    (0..de.len())
        .map(|i| (gb[i].1, de[i].1, tx[i].1))
        .find(|(g, d, t)| g < d && *d < 230.0 && *t > 300.0 && d - g > 60.0)
        .unwrap()
}

async fn put_configmap(ns: &TestNamespace, name: &str, data: BTreeMap<String, String>) {
    let api: Api<ConfigMap> = ns.api();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    match api.get_opt(name).await.unwrap() {
        Some(old) => {
            let mut cm = cm;
            cm.metadata.resource_version = old.metadata.resource_version;
            api.replace(name, &PostParams::default(), &cm)
                .await
                .unwrap();
        }
        None => {
            api.create(&PostParams::default(), &cm).await.unwrap();
        }
    }
}

async fn put_snapshot(ns: &TestNamespace, s: &Snapshot) {
    put_configmap(
        ns,
        keys::SNAPSHOT_CONFIGMAP,
        [(keys::SNAPSHOT_KEY.to_owned(), s.to_json())].into(),
    )
    .await;
}

async fn put_config(ns: &TestNamespace, pairs: &[(&str, &str)]) {
    put_configmap(
        ns,
        keys::CONFIG_CONFIGMAP,
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
    .await;
}

/// Nodes: one small GB node (fits three 600m pods), two DE, two Texas.
async fn three_zones(ns: &TestNamespace) {
    for (zone, region, count, cpu) in [
        ("GB", "eu-west", 1, "2"),
        ("DE", "eu-central", 2, "4"),
        ("US-TEX-ERCO", "us-south", 2, "4"),
    ] {
        ns.create_nodes(
            &nodes_in_zone(region, format!("{region}-a"))
                .named(zone.to_ascii_lowercase())
                .count(count)
                .with_cpu(cpu)
                .with_label(keys::LABEL_GRID_ZONE, zone),
        )
        .await
        .unwrap();
    }
}

fn zone_of(node: &str) -> &'static str {
    if node.contains("-de-") {
        "DE"
    } else if node.contains("-gb-") {
        "GB"
    } else if node.contains("-us-tex-erco-") {
        "US-TEX-ERCO"
    } else {
        panic!("unexpected node {node}")
    }
}

async fn place(ns: &TestNamespace, pod: Pod) -> &'static str {
    let name = pod.metadata.name.clone().unwrap();
    ns.create_pod(&pod).await.unwrap();
    let node = ns.wait_for_pod_bound(&name, BOUND).await.unwrap();
    zone_of(&node)
}

async fn start(mode: Mode, ns: &TestNamespace) -> Running {
    let cp = shared_control_plane().await;
    match mode {
        Mode::Extender => {
            let ext = RunningExtender::start(cp, ns, &[]).await;
            let sched = cp
                .start_scheduler(scheduler_config(ns, &ext.url()))
                .await
                .unwrap();
            Running {
                mode,
                ext: Some(ext),
                sched,
            }
        }
        Mode::Plugin => {
            let sched = cp
                .start_scheduler(plugin_scheduler_config(ns))
                .await
                .unwrap();
            Running {
                mode,
                ext: None,
                sched,
            }
        }
    }
}

async fn pods_land_in_the_greenest_zone_that_fits_then_the_next(mode: Mode) {
    let cp = shared_control_plane().await;
    let ns = cp
        .test_namespace(&format!("greenest-{mode:?}").to_lowercase())
        .await
        .unwrap();
    three_zones(&ns).await;
    let (gb, de, tx) = real_hour_gb_de_tx();
    put_snapshot(
        &ns,
        &snapshot(&[("DE", de), ("GB", gb), ("US-TEX-ERCO", tx)], 60),
    )
    .await;
    let mut run = start(mode, &ns).await;
    let mut zones = Vec::new();
    for i in 0..4 {
        let pod = pod_named(format!("job-{i}"))
            .scheduled_by(ns.scheduler_name())
            .requesting("600m", "256Mi")
            .build();
        zones.push(place(&ns, pod).await);
    }
    // The GB node fits three; the fourth goes to the next greenest, DE,
    // though the DE nodes have more room all along; the Texas nodes (above
    // 250 g/kWh) are filtered out.
    assert_eq!(
        zones,
        ["GB", "GB", "GB", "DE"],
        "scheduler log:\n{}",
        run.sched.log_tail(30)
    );

    // The first pod has an Event saying why.
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    carbon_kube_testkit::wait_until("a CarbonAwarePlacement Event on job-0", BOUND, || async {
        let list = events.list(&Default::default()).await.unwrap();
        match list.items.iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("job-0")
                && e.reason.as_deref() == Some("CarbonAwarePlacement")
        }) {
            Some(e) => {
                let note = e.note.clone().unwrap_or_default();
                assert!(note.starts_with("placed in GB at"), "{note}");
                carbon_kube_testkit::Progress::Done(())
            }
            None => carbon_kube_testkit::Progress::Waiting(format!("{} events", list.items.len())),
        }
    })
    .await
    .unwrap();
    let metrics = run.metrics().await;
    assert!(
        sample(
            &metrics,
            "carbon_kube_scheduler_decisions_total",
            &[("verb", "filter"), ("outcome", "applied")]
        )
        .is_some_and(|n| n >= 4.0),
        "{metrics}"
    );
    run.wait_sample_until(
        "carbon_kube_scheduler_events_total",
        &[("result", run.event_result())],
        |n| n.is_some_and(|n| n >= 1.0),
    )
    .await;
    run.stop().await;
}

async fn hard_constraints_win_over_carbon(mode: Mode) {
    let cp = shared_control_plane().await;
    let ns = cp
        .test_namespace(&format!("affinity-{mode:?}").to_lowercase())
        .await
        .unwrap();
    three_zones(&ns).await;
    let (gb, de, tx) = real_hour_gb_de_tx();
    put_snapshot(
        &ns,
        &snapshot(&[("DE", de), ("GB", gb), ("US-TEX-ERCO", tx)], 60),
    )
    .await;
    let mut run = start(mode, &ns).await;
    let mut pod = pod_named("pinned-to-texas")
        .scheduled_by(ns.scheduler_name())
        .requesting("100m", "64Mi")
        .build();
    pod.spec.as_mut().unwrap().affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: keys::LABEL_GRID_ZONE.into(),
                        operator: "In".into(),
                        values: Some(vec!["US-TEX-ERCO".into()]),
                    }]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    });
    assert_eq!(place(&ns, pod).await, "US-TEX-ERCO");
    let metrics = run.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "carbon_kube_scheduler_decisions_total",
            &[("verb", "filter"), ("outcome", "failed_open")]
        ),
        Some(1.0),
        "{metrics}"
    );
    run.stop().await;
}

async fn a_new_snapshot_moves_the_next_pods(mode: Mode) {
    let cp = shared_control_plane().await;
    let ns = cp
        .test_namespace(&format!("flip-{mode:?}").to_lowercase())
        .await
        .unwrap();
    three_zones(&ns).await;
    put_snapshot(
        &ns,
        &snapshot(&[("DE", 120.0), ("GB", 200.0), ("US-TEX-ERCO", 410.0)], 60),
    )
    .await;
    let mut run = start(mode, &ns).await;
    let pod = |n: &str| {
        pod_named(n)
            .scheduled_by(ns.scheduler_name())
            .requesting("100m", "64Mi")
            .build()
    };
    assert_eq!(place(&ns, pod("before")).await, "DE");
    // Texas turns green, Germany dirty.
    put_snapshot(
        &ns,
        &snapshot(&[("DE", 420.0), ("GB", 200.0), ("US-TEX-ERCO", 90.0)], 60),
    )
    .await;
    run.wait_sample(
        "carbon_kube_carbon_intensity_current",
        &[("zone", "US-TEX-ERCO"), ("source", "electricity_maps")],
        Some(90.0),
    )
    .await;
    assert_eq!(place(&ns, pod("after")).await, "US-TEX-ERCO");
    run.stop().await;
}

async fn threshold_override_opt_out_and_fail_open(mode: Mode) {
    let cp = shared_control_plane().await;
    let ns = cp
        .test_namespace(&format!("threshold-{mode:?}").to_lowercase())
        .await
        .unwrap();
    three_zones(&ns).await;
    // Every zone above 250 g/kWh; reject mode first.
    put_snapshot(
        &ns,
        &snapshot(&[("DE", 300.0), ("GB", 330.0), ("US-TEX-ERCO", 410.0)], 60),
    )
    .await;
    put_config(&ns, &[("onNoGreenNode", "reject")]).await;
    let mut run = start(mode, &ns).await;
    let base = |n: &str| {
        pod_named(n)
            .scheduled_by(ns.scheduler_name())
            .requesting("100m", "64Mi")
    };
    // Rejected: stays pending, and the scheduler says why.
    ns.create_pod(&base("rejected").build()).await.unwrap();
    let pods: Api<Pod> = ns.api();
    carbon_kube_testkit::wait_until(
        "the rejected pod's FailedScheduling condition",
        BOUND,
        || async {
            let p = pods.get("rejected").await.unwrap();
            let msg = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")
                .and_then(|c| c.message)
                .unwrap_or_default();
            if msg.contains("above the threshold of 250 g/kWh") {
                carbon_kube_testkit::Progress::Done(())
            } else {
                carbon_kube_testkit::Progress::Waiting(msg)
            }
        },
    )
    .await
    .unwrap();
    // A pod's own threshold lets it through to the zone under it.
    let lax = base("lax")
        .with_annotation(keys::ANNOTATION_MAX_INTENSITY, "310")
        .build();
    assert_eq!(place(&ns, lax).await, "DE");
    // An opted-out pod schedules.
    let out = base("opted-out")
        .with_annotation(keys::ANNOTATION_OPT_OUT, "true")
        .build();
    place(&ns, out).await;
    // Fail open (the default): pods schedule although every zone is dirty.
    put_config(&ns, &[("onNoGreenNode", "failOpen")]).await;
    run.wait_sample(
        "carbon_kube_scheduler_settings",
        &[("setting", "fail_open")],
        Some(1.0),
    )
    .await;
    place(&ns, base("failed-open").build()).await;
    run.stop().await;
}

async fn stale_or_deleted_data_is_neutral(mode: Mode) {
    let cp = shared_control_plane().await;
    let ns = cp
        .test_namespace(&format!("neutral-{mode:?}").to_lowercase())
        .await
        .unwrap();
    three_zones(&ns).await;
    // Reject mode, every zone dirty, but the data is two hours old: neutral.
    put_snapshot(
        &ns,
        &snapshot(
            &[("DE", 300.0), ("GB", 330.0), ("US-TEX-ERCO", 410.0)],
            7200,
        ),
    )
    .await;
    put_config(&ns, &[("onNoGreenNode", "reject")]).await;
    let mut run = start(mode, &ns).await;
    let base = |n: &str| {
        pod_named(n)
            .scheduled_by(ns.scheduler_name())
            .requesting("100m", "64Mi")
            .build()
    };
    place(&ns, base("stale")).await;
    // Fresh dirty data: rejected (the extender is really in the path).
    put_snapshot(
        &ns,
        &snapshot(&[("DE", 301.0), ("GB", 330.0), ("US-TEX-ERCO", 410.0)], 60),
    )
    .await;
    run.wait_sample(
        "carbon_kube_carbon_intensity_current",
        &[("zone", "DE"), ("source", "electricity_maps")],
        Some(301.0),
    )
    .await;
    ns.create_pod(&base("blocked")).await.unwrap();
    let blocked = ns
        .wait_for_pod_bound("blocked", Duration::from_secs(8))
        .await;
    assert!(
        blocked.is_err(),
        "fresh dirty data with reject must block: {blocked:?}"
    );
    // The snapshot is deleted: neutral, pods schedule.
    let cms: Api<ConfigMap> = ns.api();
    cms.delete(keys::SNAPSHOT_CONFIGMAP, &DeleteParams::default())
        .await
        .unwrap();
    run.wait_sample(
        "carbon_kube_carbon_intensity_current",
        &[("zone", "DE"), ("source", "electricity_maps")],
        None,
    )
    .await;
    place(&ns, base("deleted")).await;
    if mode == Mode::Extender {
        // The extender stops: kube-scheduler ignores it (ignorable: true).
        put_snapshot(
            &ns,
            &snapshot(&[("DE", 300.0), ("GB", 330.0), ("US-TEX-ERCO", 410.0)], 60),
        )
        .await;
        run.stop().await;
        place(&ns, base("no-extender")).await;
    }
}

/// A stand-in extender that records what the real kube-scheduler sends and
/// answers with the real handlers. With `CARBON_KUBE_RECORD_FIXTURES=1` the
/// requests are written to `tests/fixtures/recorded-*.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_kube_schedulers_requests_parse() {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::routing::post;

    type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let cp = shared_control_plane().await;
    let ns = cp.test_namespace("record").await.unwrap();
    three_zones(&ns).await;
    let (gb, de, tx) = real_hour_gb_de_tx();
    let snap = snapshot(&[("DE", de), ("GB", gb), ("US-TEX-ERCO", tx)], 60);
    for cache_capable in [true, false] {
        let (state, _registry) = support::shared(snap.clone(), now(), Vec::new());
        let seen: Seen = Arc::default();
        async fn record(
            State((state, seen, verb)): State<(
                Arc<carbon_kube_extender::state::Shared>,
                Seen,
                &'static str,
            )>,
            body: Bytes,
        ) -> Vec<u8> {
            seen.lock().unwrap().push((verb.to_owned(), body.to_vec()));
            let (out, _) = if verb == "filter" {
                carbon_kube_extender::service::filter(&state, &body)
            } else {
                carbon_kube_extender::service::prioritize(&state, &body)
            }
            .unwrap();
            out
        }
        let app = axum::Router::new()
            .route(
                "/filter",
                post(record).with_state((state.clone(), seen.clone(), "filter")),
            )
            .route(
                "/prioritize",
                post(record).with_state((state.clone(), seen.clone(), "prioritize")),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let config = scheduler_config(&ns, &url);
        let doc = serde_json::to_string(&config.to_document(std::path::Path::new("/x"))).unwrap();
        let config = SchedulerConfig::from_yaml(&doc.replace(
            "\"nodeCacheCapable\":true",
            &format!("\"nodeCacheCapable\":{cache_capable}"),
        ))
        .unwrap();
        let sched = cp.start_scheduler(config).await.unwrap();
        let name = format!("recorded-{cache_capable}");
        let pod = pod_named(&name)
            .scheduled_by(ns.scheduler_name())
            .requesting("250m", "128Mi")
            .with_annotation(keys::ANNOTATION_MAX_INTENSITY, "300")
            .build();
        ns.create_pod(&pod).await.unwrap();
        ns.wait_for_pod_bound(&name, BOUND).await.unwrap();
        drop(sched);
        server.abort();
        let seen = seen.lock().unwrap().clone();
        for verb in ["filter", "prioritize"] {
            let (_, body) = seen
                .iter()
                .find(|(v, _)| v == verb)
                .unwrap_or_else(|| panic!("no {verb} request recorded"));
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                ["NodeNames", "Nodes", "Pod"],
                "PascalCase top-level keys (sorted)"
            );
            assert!(v["Pod"].get("apiVersion").is_none() && v["Pod"].get("kind").is_none());
            assert_eq!(v["Pod"]["spec"]["schedulerName"], ns.scheduler_name());
            if cache_capable {
                assert!(v["Nodes"].is_null());
                assert_eq!(v["NodeNames"].as_array().unwrap().len(), 5);
            } else {
                assert!(v["NodeNames"].is_null());
                assert_eq!(
                    v["Nodes"]["items"].as_array().unwrap().len(),
                    if verb == "filter" { 5 } else { 3 }
                );
            }
            if std::env::var_os("CARBON_KUBE_RECORD_FIXTURES").is_some() {
                let path = format!(
                    "{}/tests/fixtures/recorded-{verb}-{}.json",
                    env!("CARGO_MANIFEST_DIR"),
                    if cache_capable { "names" } else { "nodes" }
                );
                std::fs::write(&path, body).unwrap();
            }
        }
    }
}
