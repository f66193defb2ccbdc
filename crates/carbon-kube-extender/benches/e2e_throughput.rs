//! Scheduling throughput of the real kube-scheduler (v1.37.2) with 5,000
//! nodes, side by side in one run: the shipped carbon-kube configuration
//! with the extender, the same configuration without it (the stock
//! kube-scheduler), and kube-scheduler-carbon with the shipped plugin
//! configuration (`deploy/scheduler/kube-scheduler-plugin-config.yaml`;
//! `E2E_NO_PLUGIN=1` skips it) (and, with `E2E_ALL_NODES=1`, extender and
//! stock again at `percentageOfNodesToScore: 100`). Same pods each time.
//!
//! For each variant: `E2E_PODS` pods (10m CPU, 16Mi) are created while no
//! scheduler serves their `schedulerName`, then the scheduler starts; the
//! throughput is the number of pods bound between the first and the last
//! binding divided by that time (from kube-scheduler's `Scheduled` Events,
//! which carry microsecond times; progress is polled once a second). kube-scheduler's client rate limit is
//! lifted (qps 5000) so that the API client does not cap every variant alike. The extender runs in
//! this process on its own thread and runtime, only during the variant that
//! uses it (it starts, syncs its caches and is ready before the scheduler
//! starts).
//!
//! Run: `cargo bench -p carbon-kube-extender --bench e2e_throughput`
//! (`E2E_NODES`, `E2E_PODS` override 5,000 and 1,000; `E2E_ROUNDS` repeats
//! the pair, alternating which runs first; each variant prints the CPU time
//! per pod of every process).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{
    CARBON_SCHEDULER, ControlPlane, ControlPlaneOptions, Extender, SchedulerConfig, TestNamespace,
    nodes_in_zone, pod_named,
};
use clap::Parser;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};

const SHIPPED_CONFIG: &str = include_str!("../../../deploy/scheduler/kube-scheduler-config.yaml");
const SHIPPED_PLUGIN_CONFIG: &str =
    include_str!("../../../deploy/scheduler/kube-scheduler-plugin-config.yaml");

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: carbon_kube_extender::Args,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces): state is 3rd,
    // utime the 14th and stime the 15th field of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// CPU seconds per component: the control plane's processes, the
/// scheduler, and this process (the extender plus the bench's polling).
fn cpu_sample(cp: &ControlPlane, scheduler_pid: u32) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = cp
        .pids()
        .into_iter()
        .map(|(name, pid)| (name, cpu_seconds(&pid.to_string())))
        .collect();
    out.push((
        "kube-scheduler".into(),
        cpu_seconds(&scheduler_pid.to_string()),
    ));
    out.push(("this process (extender)".into(), cpu_seconds("self")));
    out
}

/// How to start the extender for a variant: its argv, the API client
/// configuration and the listener kube-scheduler's configuration points to.
struct ExtenderSetup {
    argv: Vec<String>,
    kube: kube::Config,
    listener: std::net::TcpListener,
    url: String,
}

/// A server on its own thread and multi-threaded runtime, as in the
/// `carbon-kube` binary, so that its CPU time and wake-ups are its own and
/// not the bench's. Stopped and joined when dropped.
struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `serve(stopped)`; `stopped` resolves when the handle is dropped.
    fn spawn<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(futures::future::BoxFuture<'static, ()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(Box::pin(async move {
                let _ = rx.await;
            })));
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the extender as `setup` says and waits until it is ready.
async fn start_extender(setup: &ExtenderSetup) -> ServerThread {
    let args = Cli::parse_from(&setup.argv).args;
    let kube = setup.kube.clone();
    let listener = setup.listener.try_clone().unwrap();
    let server = ServerThread::spawn(move |stopped| async move {
        let client = kube::Client::try_from(kube).unwrap();
        carbon_kube_extender::serve(args, listener, Some(client), stopped)
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{}/readyz", setup.url)).send().await
            && r.status() == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server
}

/// The API server's request and watch-event counters (E2E_DIAG=1), to see
/// which API traffic a variant adds.
async fn api_counters(client: &kube::Client) -> std::collections::BTreeMap<String, f64> {
    let req = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(req).await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                || l.starts_with("apiserver_watch_events_total{")
                || l.starts_with("apiserver_watch_events_sizes_sum{")
        })
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The least any extender can do (E2E_NOOP=1): keep every node and give
/// each the same score, with no watches, no policy and no Events. Run beside
/// the real one, it tells what the extender protocol itself costs
/// kube-scheduler on this machine.
fn noop_router() -> axum::Router {
    #[derive(serde::Deserialize)]
    struct Args<'a> {
        #[serde(rename = "NodeNames", borrow)]
        node_names: Vec<&'a str>,
    }
    async fn filter(body: axum::body::Bytes) -> axum::Json<serde_json::Value> {
        let args: Args<'_> = serde_json::from_slice(&body).unwrap();
        axum::Json(serde_json::json!({
            "Nodes": null, "NodeNames": args.node_names, "FailedNodes": {},
            "FailedAndUnresolvableNodes": {}, "Error": "",
        }))
    }
    async fn prioritize(body: axum::body::Bytes) -> axum::Json<serde_json::Value> {
        let args: Args<'_> = serde_json::from_slice(&body).unwrap();
        let list: Vec<serde_json::Value> = args
            .node_names
            .iter()
            .map(|n| serde_json::json!({"Host": n, "Score": 5}))
            .collect();
        axum::Json(serde_json::Value::Array(list))
    }
    axum::Router::new()
        .route("/filter", axum::routing::post(filter))
        .route("/prioritize", axum::routing::post(prioritize))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
}

/// Serves [`noop_router`] on a free local port; returns its URL.
fn start_noop_extender() -> (String, ServerThread) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = ServerThread::spawn(move |stopped| async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, noop_router())
            .with_graceful_shutdown(stopped)
            .await
            .unwrap();
    });
    (url, server)
}

async fn run_variant(
    cp: &ControlPlane,
    ns: &TestNamespace,
    label: &str,
    config: SchedulerConfig,
    pods: usize,
    extender: Option<&ExtenderSetup>,
) -> f64 {
    let name = format!("{}-{label}", ns.scheduler_name());
    let binary = config.binary();
    // Lift kube-scheduler's client rate limit (50 QPS by default), which
    // would otherwise cap every variant at the same ~100 bindings/s.
    let mut doc = config
        .with_scheduler_name(&name)
        .to_document(std::path::Path::new("/x"));
    doc["clientConnection"]["qps"] = serde_json::json!(5000);
    doc["clientConnection"]["burst"] = serde_json::json!(10000);
    let mut config = SchedulerConfig::from_yaml(&doc.to_string())
        .unwrap()
        .with_binary(binary);
    // E2E_PPROF=<dir>: a Go CPU profile of kube-scheduler during the run
    // (the first E2E_PPROF_SECONDS, default 10), written to <dir>/<label>.pprof.
    let pprof_dir = std::env::var_os("E2E_PPROF").map(std::path::PathBuf::from);
    if pprof_dir.is_some() {
        config = config.with_profiling();
    }
    let api: Api<Pod> = ns.api();
    // E2E_DISTINCT=1: every pod requests a different amount of CPU, so
    // kube-scheduler's opportunistic batching (which reuses results for
    // identical pods, and which an extender disables) does not apply.
    let distinct = std::env::var_os("E2E_DISTINCT").is_some();
    stream::iter(0..pods)
        .map(|i| {
            let cpu = if distinct {
                format!("{}m", 10 + i)
            } else {
                "10m".to_owned()
            };
            let pod = pod_named(format!("{label}-{i}"))
                .scheduled_by(&name)
                .requesting(cpu, "16Mi")
                .with_label("run", label)
                .build();
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pod).await.unwrap() }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    // The extender runs only for the variant that uses it: the run without
    // it pays nothing for its watches.
    let running = match extender {
        Some(setup) => Some(start_extender(setup).await),
        None => None,
    };
    let sched = cp.start_scheduler(config).await.unwrap();
    let diag = std::env::var_os("E2E_DIAG").is_some();
    let admin = cp.client().await.unwrap();
    let api_before = if diag {
        api_counters(&admin).await
    } else {
        Default::default()
    };
    let cpu_before = cpu_sample(cp, sched.pid());
    let wall = Instant::now();
    // Count the pods still unbound, once a second: cheap for the API server
    // and this process (the throughput comes from Event times, not polling).
    let lp = ListParams::default()
        .labels(&format!("run={label}"))
        .fields("spec.nodeName=")
        .match_any();
    let deadline = Instant::now() + Duration::from_secs(900);
    let wait_bound = async {
        loop {
            let list = api.list(&lp).await.unwrap();
            let bound = pods - list.items.len();
            if bound == pods {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: only {bound}/{pods} bound\n{}",
                sched.log_tail(20)
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let profile = async {
        match &pprof_dir {
            Some(dir) => {
                let seconds = u32::try_from(env("E2E_PPROF_SECONDS", 10)).unwrap();
                Some((dir, sched.cpu_profile(seconds).await))
            }
            None => None,
        }
    };
    let ((), profile) = tokio::join!(wait_bound, profile);
    if let Some((dir, profile)) = profile {
        let path = dir.join(format!("{label}.pprof"));
        match profile {
            Ok(bytes) => {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(&path, bytes).unwrap();
                println!("e2e: {label}: CPU profile in {}", path.display());
            }
            Err(e) => println!("e2e: {label}: no CPU profile: {e}"),
        }
    }
    let cpu_after = cpu_sample(cp, sched.pid());
    if diag {
        let after = api_counters(&admin).await;
        let mut delta: Vec<(f64, &String)> = after
            .iter()
            .map(|(k, v)| (v - api_before.get(k).copied().unwrap_or(0.0), k))
            .filter(|(d, _)| *d > 0.0)
            .collect();
        delta.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (d, k) in delta.iter().take(25) {
            println!("e2e: {label}: diag {:.2} per pod {k}", d / pods as f64);
        }
    }
    let wall = wall.elapsed().as_secs_f64();
    // The idle rate with everything bound (node heartbeats, leases, watches),
    // so that the per-pod figures can be told from time-based costs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_before = cpu_sample(cp, sched.pid());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_after = cpu_sample(cp, sched.pid());
    let text = sched.metrics().await.unwrap_or_default();
    // Opportunistic batching (kube-scheduler reuses one pod's filter and
    // score results for the next identical pods): how often each variant
    // could use it, to compare like with like.
    let batch: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("scheduler_batch_attempts_total{"))
        .filter_map(|l| {
            let result = l.split("result=\"").nth(1)?.split('"').next()?;
            Some(format!("{result} {}", l.split_whitespace().last()?))
        })
        .collect();
    println!("e2e: {label}: batch attempts: {}", batch.join(", "));
    if binary == CARBON_SCHEDULER {
        // The plugin's own time per pod (its latency histogram: the policy
        // calls and the Go-side preparation, inside kube-scheduler).
        let value = |name: &str, verb: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(&format!("verb=\"{verb}\"")))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        for verb in ["filter", "prioritize"] {
            let sum = value("carbon_kube_scheduler_latency_seconds_sum", verb);
            let count = value("carbon_kube_scheduler_latency_seconds_count", verb).max(1.0);
            println!(
                "e2e: {label}: plugin {verb}: {count:.0} calls, {:.1} µs per call",
                sum / count * 1e6
            );
        }
    }
    drop(sched);
    drop(running);
    let (mut total, mut marginal) = (0.0, 0.0);
    let mut line = String::new();
    for (((name, before), (_, after)), ((_, i0), (_, i1))) in cpu_before
        .iter()
        .zip(&cpu_after)
        .zip(idle_before.iter().zip(&idle_after))
    {
        let used = after - before;
        let idle_rate = (i1 - i0) / 5.0;
        let per_pod = (used - idle_rate * wall).max(0.0) * 1000.0 / pods as f64;
        total += used;
        marginal += per_pod;
        line.push_str(&format!(
            " {name} {per_pod:.2} ms (idle {:.0} ms/s);",
            idle_rate * 1000.0
        ));
    }
    println!(
        "e2e: {label}: CPU per pod beyond the idle rate:{line} total {marginal:.2} ms; all CPU {:.0} % of 2 cores over {wall:.1} s",
        total / wall / 2.0 * 100.0
    );
    // kube-scheduler's Scheduled Events carry microsecond eventTimes.
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut times: Vec<i128> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .is_some_and(|n| n.starts_with(&format!("{label}-")))
        })
        .filter_map(|e| e.event_time.map(|t| t.0.as_microsecond() as i128))
        .collect();
    times.sort_unstable();
    assert!(
        times.len() >= pods * 9 / 10,
        "{label}: only {} Scheduled events",
        times.len()
    );
    let secs = ((times[times.len() - 1] - times[0]) as f64 / 1e6).max(1e-3);
    let rate = (times.len() - 1) as f64 / secs;
    println!(
        "e2e: {label}: {pods} pods, {:.2} s from first to last binding, {rate:.1} pods/s",
        secs
    );
    rate
}

fn main() {
    carbon_kube_k8s::telemetry::install_crypto_provider();
    let nodes = env("E2E_NODES", 5000);
    let pods = env("E2E_PODS", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let t = Instant::now();
        let cp = ControlPlane::start(ControlPlaneOptions::default())
            .await
            .unwrap();
        let ns = cp.test_namespace("e2e").await.unwrap();
        let zones = ["DE", "GB", "US-TEX-ERCO", "US-CAL-CISO"];
        for (i, zone) in zones.iter().enumerate() {
            ns.create_nodes(
                &nodes_in_zone(format!("region-{i}"), format!("region-{i}-a"))
                    .named(zone.to_ascii_lowercase())
                    .count(nodes / zones.len())
                    .with_label(keys::LABEL_GRID_ZONE, *zone)
                    .static_ready(),
            )
            .await
            .unwrap();
        }
        println!(
            "e2e: control plane and {nodes} nodes ready in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        let mut snapshot = Snapshot::default();
        for (zone, v) in [
            ("DE", 180.0),
            ("GB", 120.0),
            ("US-TEX-ERCO", 410.0),
            ("US-CAL-CISO", 230.0),
        ] {
            snapshot.zones.insert(
                ZoneId::parse(zone).unwrap(),
                ZoneRecord::new(
                    CarbonIntensity::new(v).unwrap(),
                    now(),
                    Source::new(Source::ELECTRICITY_MAPS),
                ),
            );
        }
        let cms: Api<ConfigMap> = ns.api();
        cms.create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some(keys::SNAPSHOT_CONFIGMAP.into()),
                    ..ObjectMeta::default()
                },
                data: Some([(keys::SNAPSHOT_KEY.to_owned(), snapshot.to_json())].into()),
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut argv = vec![
            "extender".to_owned(),
            "--namespace".to_owned(),
            ns.name().to_owned(),
        ];
        // E2E_EXTENDER_ARGS="--no-events" etc.
        argv.extend(
            std::env::var("E2E_EXTENDER_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned),
        );
        let setup = ExtenderSetup {
            argv,
            kube: cp.kube_config().await.unwrap(),
            listener,
            url: url.clone(),
        };
        let doc: serde_json::Value = serde_saphyr::from_str(SHIPPED_CONFIG).unwrap();
        let e = &doc["extenders"][0];
        let base = || {
            SchedulerConfig::from_yaml(SHIPPED_CONFIG)
                .unwrap()
                .restricted_to_node_pool(ns.node_pool())
                .without_extenders()
        };
        let all_nodes = |c: SchedulerConfig| {
            let mut doc = c.to_document(std::path::Path::new("/x"));
            doc["percentageOfNodesToScore"] = serde_json::json!(100);
            SchedulerConfig::from_yaml(&doc.to_string()).unwrap()
        };
        let extender_at = |url: &str| {
            Extender::at(url)
                .filter_verb("filter")
                .prioritize_verb("prioritize")
                .weight(e["weight"].as_i64().unwrap())
                .node_cache_capable(true)
                .ignorable(true)
                .http_timeout(Duration::from_secs(1))
        };
        let with_extender = base().with_extender(extender_at(&url));
        let plugin = {
            let doc: serde_json::Value = serde_saphyr::from_str(SHIPPED_PLUGIN_CONFIG).unwrap();
            let mut args = doc["profiles"][0]["pluginConfig"][0]["args"].clone();
            args["namespace"] = ns.name().into();
            let mut doc = doc;
            // E2E_CARBON_FILTER_FIRST=1: the CarbonKube filter runs before
            // the in-tree filters (a plugin named in `filter.enabled` as
            // well as in multiPoint runs first), so a node in a rejected
            // zone costs one lookup instead of every in-tree filter.
            if std::env::var_os("E2E_CARBON_FILTER_FIRST").is_some() {
                doc["profiles"][0]["plugins"]["filter"] =
                    serde_json::json!({"enabled": [{"name": "CarbonKube"}]});
            }
            SchedulerConfig::from_yaml(&doc.to_string())
                .unwrap()
                .with_binary(CARBON_SCHEDULER)
                .restricted_to_node_pool(ns.node_pool())
                .with_plugin_args("CarbonKube", args)
        };
        let with_plugin = std::env::var_os("E2E_NO_PLUGIN").is_none();
        // E2E_NOOP=1: a third variant per round, the same configuration with
        // an extender that does nothing (see `noop_router`).
        let noop = std::env::var_os("E2E_NOOP").map(|_| start_noop_extender());
        // E2E_ROUNDS rounds, alternating which variant runs first, so that
        // none always meets the fuller cluster.
        for round in 0..env("E2E_ROUNDS", 1) {
            let (mut without, mut with, mut noop_rate, mut plugin_rate) = (0.0, 0.0, None, None);
            let order = if round % 2 == 0 {
                ["without", "plugin", "with", "noop"]
            } else {
                ["noop", "with", "plugin", "without"]
            };
            for variant in order {
                let label = format!("{variant}{round}");
                match (variant, &noop) {
                    ("with", _) => {
                        let config = with_extender.clone();
                        with = run_variant(&cp, &ns, &label, config, pods, Some(&setup)).await;
                    }
                    ("without", _) => {
                        without = run_variant(&cp, &ns, &label, base(), pods, None).await;
                    }
                    ("plugin", _) if with_plugin => {
                        let config = plugin.clone();
                        plugin_rate =
                            Some(run_variant(&cp, &ns, &label, config, pods, None).await);
                    }
                    ("noop", Some((noop_url, _))) => {
                        let config = base().with_extender(extender_at(noop_url));
                        noop_rate = Some(run_variant(&cp, &ns, &label, config, pods, None).await);
                    }
                    _ => {}
                }
            }
            println!(
                "e2e: shipped configuration, round {round}: with extender / without = {:.2}x",
                with / without
            );
            if let Some(rate) = plugin_rate {
                println!(
                    "e2e: shipped configuration, round {round}: plugin build / stock kube-scheduler = {:.2}x",
                    rate / without
                );
            }
            if let Some(rate) = noop_rate {
                println!(
                    "e2e: shipped configuration, round {round}: no-op extender / without = {:.2}x",
                    rate / without
                );
            }
        }
        if std::env::var_os("E2E_ALL_NODES").is_some() {
            let without = run_variant(&cp, &ns, "without-all", all_nodes(base()), pods, None).await;
            let with = run_variant(
                &cp,
                &ns,
                "with-all",
                all_nodes(with_extender),
                pods,
                Some(&setup),
            )
            .await;
            println!(
                "e2e: percentageOfNodesToScore 100: with extender / without = {:.2}x",
                with / without
            );
        }
        cp.stop();
    });
}
