//! The scale soak (issue 18, docs/reliability.md): every Carbon-Kube
//! component at once, as the processes an operator runs, on a control plane
//! with thousands of kwok nodes, for a bounded time.
//!
//! - the test control plane (etcd, kube-apiserver, kube-controller-manager
//!   with the ReplicaSet controller, kwok; v1.37.2) with `SOAK_NODES` kwok
//!   nodes (default 5,000) in four grid zones (DE, GB, US-CAL-CISO,
//!   US-TEX-ERCO), 32 CPUs each;
//! - a fake Electricity Maps API in this process serving real 2023 hourly
//!   values (the shared Electricity Maps exports): the current hour's value
//!   and a 72-hour forecast, the year's hours mapped onto the wall clock from
//!   the first day (at the current hour of day) on which the greenest zone
//!   gets at least 15 % greener within six hours, so that deferrable pods
//!   have a green window to wait for;
//! - `carbon-kube poller --interval SOAK_POLL_SECONDS` (default 15 s)
//!   fetching from it and publishing the snapshot ConfigMap, which every other
//!   component watches;
//! - `carbon-kube extender` behind the real kube-scheduler (the shipped
//!   configuration, `deploy/scheduler/kube-scheduler-config.yaml`, client rate
//!   limit lifted as in the e2e bench);
//! - `carbon-kube gates controller` (leader-elected) with `SOAK_DEFERRED`
//!   gated pods (default 5,000) arriving through the run: a third urgent
//!   (latest start 2 to 12 minutes after creation, so they reach it within
//!   the run), the rest flexible (latest start 1 to 6 hours away: they wait
//!   for the green window, and are planned again on every new snapshot);
//! - `carbon-kube migrator --dry-run --min-dwell 0s` (leader-elected) over
//!   `SOAK_MIGRATE_PODS` (default 2,000) running opted-in ReplicaSet pods,
//!   a cycle at least every 30 s;
//! - `SOAK_PODS` ordinary pods (default 50,000) created at an even rate over
//!   `SOAK_MINUTES` (default 15), each deleted `SOAK_HOLD_SECONDS` (20) after
//!   it is bound; creation pauses while `SOAK_MAX_PENDING` (500) are
//!   unbound, so an overloaded machine creates fewer (the count is printed).
//!
//! Every `SOAK_SAMPLE_SECONDS` (10) it samples each process's resident memory
//! and CPU time (`/proc`) and the components' metrics, and its own watch of
//! the namespace: time from creation to binding, time from creation to the
//! gate controller's first plan, gated pods past their latest start.
//! At the end it prints, per component, mean RSS and CPU over the first and
//! the last third of the run (flat memory = no leak), decisions per second,
//! the latencies per third, and checks every deferred pod by a fresh list:
//! none may be gated past its latest start, none released after it. It
//! fails (non-zero exit) if one is, or if a component exits. The samples
//! (CSV), a Markdown summary and every component's log are kept under
//! `target/tmp/soak/<time>/`.
//!
//! Run: `make soak-scale` (= `cargo test --release -p carbon-kube --test
//! soak`); not part of `cargo test` (`test = false` in Cargo.toml).

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carbon_kube_model::keys;
use carbon_kube_sim::trace::{Column, read_em_csv};
use carbon_kube_testkit::{
    ControlPlane, ControlPlaneOptions, Extender, SchedulerConfig, nodes_in_zone, pod_named,
    shared_data,
};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSchedulingGate};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_carbon-kube");
const SHIPPED_CONFIG: &str = include_str!("../../../deploy/scheduler/kube-scheduler-config.yaml");
const ZONES: [&str; 4] = ["DE", "GB", "US-CAL-CISO", "US-TEX-ERCO"];
const RUN_LABEL: &str = "soak-run";
const ROLE_LABEL: &str = "soak-role";
/// Expected run time written on every deferred pod.
const EXPECTED_MINUTES: i64 = 10;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_now() -> i64 {
    Timestamp::now().as_second()
}

fn rfc3339(t: i64) -> String {
    Timestamp::from_second(t).unwrap().to_string()
}

struct Settings {
    nodes: usize,
    pods: usize,
    minutes: usize,
    deferred: usize,
    migrate_pods: usize,
    sample_seconds: usize,
    max_pending: usize,
    hold_seconds: usize,
    poll_seconds: usize,
}

impl Settings {
    fn from_env() -> Self {
        Self {
            nodes: env("SOAK_NODES", 5000),
            pods: env("SOAK_PODS", 50_000),
            minutes: env("SOAK_MINUTES", 15).max(1),
            deferred: env("SOAK_DEFERRED", 5000),
            migrate_pods: env("SOAK_MIGRATE_PODS", 2000),
            sample_seconds: env("SOAK_SAMPLE_SECONDS", 10).max(1),
            max_pending: env("SOAK_MAX_PENDING", 500).max(1),
            hold_seconds: env("SOAK_HOLD_SECONDS", 20),
            poll_seconds: env("SOAK_POLL_SECONDS", 15).max(1),
        }
    }
}

// ---------------------------------------------------------------------------
// The fake Electricity Maps API: real 2023 hours on the wall clock.

#[derive(Clone)]
struct Traces {
    series: Arc<BTreeMap<String, Vec<f64>>>,
    /// The trace hour shown at `start_hour` (unix hours).
    h0: i64,
    start_hour: i64,
}

impl Traces {
    fn load() -> Self {
        let mut series = BTreeMap::new();
        for zone in ZONES {
            let path = shared_data().join(format!(
                "carbon_intensity/electricitymaps_hourly/{zone}_2023_hourly.csv"
            ));
            let raw = read_em_csv(&path, Column::Direct)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            series.insert(zone.to_owned(), raw.values);
        }
        let len = series.values().map(Vec::len).min().unwrap() as i64;
        let start_hour = unix_now().div_euclid(3600);
        let greenest = |h: i64| {
            series
                .values()
                .map(|v| v[h.rem_euclid(len) as usize])
                .fold(f64::INFINITY, f64::min)
        };
        // The first day from about today's date (at this hour of day) whose
        // greenest zone gets at least 15 % greener within six hours.
        let hour_of_day = start_hour.rem_euclid(24);
        let first_day = (start_hour / 24).rem_euclid(365);
        let h0 = (0..365)
            .map(|d| ((first_day + d) % 364) * 24 + hour_of_day)
            .find(|&h| (1..=6).any(|k| greenest(h + k) <= 0.85 * greenest(h)))
            .unwrap_or(first_day * 24 + hour_of_day);
        Self {
            series: Arc::new(series),
            h0,
            start_hour,
        }
    }

    fn value(&self, zone: &str, unix_hour: i64) -> Option<f64> {
        let v = self.series.get(zone)?;
        let i = (self.h0 + unix_hour - self.start_hour).rem_euclid(v.len() as i64);
        v.get(i as usize).copied()
    }
}

type Query = axum::extract::Query<HashMap<String, String>>;

async fn em_latest(
    axum::extract::State(t): axum::extract::State<Traces>,
    axum::extract::Query(q): Query,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let zone = q.get("zone").cloned().unwrap_or_default();
    let hour = unix_now().div_euclid(3600);
    match t.value(&zone, hour) {
        Some(v) => axum::Json(json!({
            "zone": zone, "carbonIntensity": v, "datetime": rfc3339(hour * 3600),
            "isEstimated": false, "emissionFactorType": "direct",
        }))
        .into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, "unknown zone").into_response(),
    }
}

async fn em_forecast(
    axum::extract::State(t): axum::extract::State<Traces>,
    axum::extract::Query(q): Query,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let zone = q.get("zone").cloned().unwrap_or_default();
    let hour = unix_now().div_euclid(3600);
    let forecast: Vec<_> = (0..72)
        .filter_map(|k| {
            let v = t.value(&zone, hour + k)?;
            Some(json!({"carbonIntensity": v, "datetime": rfc3339((hour + k) * 3600)}))
        })
        .collect();
    axum::Json(json!({"zone": zone, "forecast": forecast})).into_response()
}

async fn em_power(axum::extract::Query(q): Query) -> axum::Json<serde_json::Value> {
    axum::Json(json!({"zone": q.get("zone").cloned().unwrap_or_default()}))
}

async fn start_fake_electricity_maps(traces: Traces) -> String {
    let app = axum::Router::new()
        .route("/v3/carbon-intensity/latest", axum::routing::get(em_latest))
        .route(
            "/v3/carbon-intensity/forecast",
            axum::routing::get(em_forecast),
        )
        .route("/v3/power-breakdown/latest", axum::routing::get(em_power))
        .with_state(traces);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v3", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

// ---------------------------------------------------------------------------
// The components, as processes of the release binary.

struct Component {
    name: &'static str,
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    /// Base URL of its /metrics, /readyz.
    http: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(
    name: &'static str,
    args: &[String],
    envs: &[(&str, &str)],
    kubeconfig: &Path,
    dir: &Path,
    port: u16,
) -> Component {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("CARBON_KUBE_LOG_FORMAT", "text")
        .envs(envs.iter().copied())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {BIN} {name}: {e}"));
    let pid = child.id().unwrap();
    Component {
        name,
        child,
        pid,
        log,
        http: format!("http://127.0.0.1:{port}"),
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn wait_ready(http: &reqwest::Client, c: &mut Component) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(r) = http.get(format!("{}/readyz", c.http)).send().await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = c.child.try_wait() {
            panic!(
                "{} exited ({status}) before it was ready:\n{}",
                c.name,
                log_tail(&c.log, 30)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready after 600 s:\n{}",
            c.name,
            log_tail(&c.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Resident memory (MiB) and CPU seconds (user + system) of a process.
fn proc_sample(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)?
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    Some((rss_kb / 1024.0, ticks / 100.0))
}

/// The sum of every series of `name` in a Prometheus/OpenMetrics text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `(label value, count)` of every series of `name` split by `label`.
fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let Some(v) = series
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        *out.entry(v.to_owned()).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

// ---------------------------------------------------------------------------
// The harness's view of the pods.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Churn,
    Deferred,
}

struct Track {
    created: Instant,
    role: Role,
    latest_start: i64,
    bound: bool,
    planned: bool,
    released: bool,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Track>,
    /// (seconds into the run, seconds from creation to binding).
    bind_latency: Vec<(f64, f64)>,
    /// (seconds into the run, seconds from creation to the first plan).
    plan_latency: Vec<(f64, f64)>,
    created_churn: usize,
    created_deferred: usize,
    create_errors: usize,
    bound_churn: usize,
    deleted: usize,
    delete_errors: usize,
    released_seen: usize,
    delete_queue: VecDeque<(Instant, String)>,
    watch_errors: usize,
}

impl State {
    fn pending_churn(&self) -> usize {
        self.pods
            .values()
            .filter(|t| t.role == Role::Churn && !t.bound)
            .count()
    }

    /// Deferred pods still gated (as this watch sees them) past their latest start.
    fn gated_past_latest_start(&self, now: i64) -> usize {
        self.pods
            .values()
            .filter(|t| t.role == Role::Deferred && !t.released && t.latest_start < now)
            .count()
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.name == keys::SCHEDULING_GATE))
}

fn observe(state: &Mutex<State>, pod: &Pod, t0: Instant, hold: Duration) {
    let Some(name) = pod.metadata.name.as_deref() else {
        return;
    };
    let mut s = state.lock().unwrap();
    let now = Instant::now();
    let since = now.duration_since(t0).as_secs_f64();
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let planned = annotation(pod, keys::ANNOTATION_PLANNED_RELEASE).is_some();
    let released = !is_gated(pod);
    let Some(t) = s.pods.get_mut(name) else {
        return;
    };
    let created = t.created;
    let (mut new_bind, mut new_plan, mut new_release) = (false, false, false);
    if bound && !t.bound {
        t.bound = true;
        new_bind = true;
    }
    if planned && !t.planned {
        t.planned = true;
        new_plan = true;
    }
    if t.role == Role::Deferred && released && !t.released {
        t.released = true;
        new_release = true;
    }
    let role = t.role;
    if new_bind && role == Role::Churn {
        s.bind_latency
            .push((since, now.duration_since(created).as_secs_f64()));
        s.bound_churn += 1;
        s.delete_queue.push_back((now + hold, name.to_owned()));
    }
    if new_plan {
        s.plan_latency
            .push((since, now.duration_since(created).as_secs_f64()));
    }
    if new_release {
        s.released_seen += 1;
    }
}

async fn watch_pods(api: Api<Pod>, state: Arc<Mutex<State>>, t0: Instant, hold: Duration) {
    let config = watcher::Config::default().labels(&format!("{RUN_LABEL}=1"));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                observe(&state, &pod, t0, hold);
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(name) = pod.metadata.name.as_deref() {
                    let mut s = state.lock().unwrap();
                    if s.pods.get(name).is_some_and(|t| t.role == Role::Churn) {
                        s.pods.remove(name);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => state.lock().unwrap().watch_errors += 1,
        }
    }
}

fn churn_pod(i: usize, scheduler: &str) -> Pod {
    pod_named(format!("c-{i}"))
        .scheduled_by(scheduler)
        .requesting("100m", "128Mi")
        .with_label(RUN_LABEL, "1")
        .with_label(ROLE_LABEL, "churn")
        .build()
}

/// A gated pod whose latest start is `latest_start` (unix seconds).
fn deferred_pod(i: usize, scheduler: &str, latest_start: i64) -> Pod {
    let mut pod = pod_named(format!("d-{i}"))
        .scheduled_by(scheduler)
        .requesting("100m", "128Mi")
        .with_label(RUN_LABEL, "1")
        .with_label(ROLE_LABEL, "deferred")
        .with_annotation(
            keys::ANNOTATION_DEADLINE,
            rfc3339(latest_start + EXPECTED_MINUTES * 60),
        )
        .with_annotation(
            keys::ANNOTATION_EXPECTED_DURATION,
            format!("{EXPECTED_MINUTES}m"),
        )
        .build();
    if let Some(spec) = pod.spec.as_mut() {
        spec.scheduling_gates = Some(vec![PodSchedulingGate {
            name: keys::SCHEDULING_GATE.to_owned(),
        }]);
    }
    pod
}

/// A deterministic spread in [0, 1) for pod `i` (no RNG needed).
fn spread(i: usize) -> f64 {
    ((i as u64).wrapping_mul(2_654_435_761) % 1_000_003) as f64 / 1_000_003.0
}

/// Creates churn and deferred pods at their even rates until `end`.
async fn create_pods(
    api: Api<Pod>,
    state: Arc<Mutex<State>>,
    settings: Arc<Settings>,
    scheduler: String,
    t0: Instant,
    end: Instant,
) {
    let run = end.duration_since(t0).as_secs_f64();
    while Instant::now() < end {
        let elapsed = t0.elapsed().as_secs_f64();
        let (mut batch, now) = (Vec::new(), unix_now());
        {
            let mut s = state.lock().unwrap();
            let due_churn = ((settings.pods as f64) * elapsed / run) as usize;
            let due_deferred = (((settings.deferred as f64) * elapsed / (0.8 * run)) as usize)
                .min(settings.deferred);
            let mut room = settings.max_pending.saturating_sub(s.pending_churn());
            while s.created_deferred < due_deferred && batch.len() < 64 {
                let i = s.created_deferred;
                // A third urgent (latest start 2-12 min away), the rest 1-6 h.
                let latest = if i % 3 == 0 {
                    now + 120 + (spread(i) * 600.0) as i64
                } else {
                    now + 3600 + (spread(i) * 5.0 * 3600.0) as i64
                };
                s.pods.insert(
                    format!("d-{i}"),
                    Track {
                        created: Instant::now(),
                        role: Role::Deferred,
                        latest_start: latest,
                        bound: false,
                        planned: false,
                        released: false,
                    },
                );
                batch.push(deferred_pod(i, &scheduler, latest));
                s.created_deferred += 1;
            }
            while s.created_churn < due_churn.min(settings.pods) && room > 0 && batch.len() < 128 {
                let i = s.created_churn;
                s.pods.insert(
                    format!("c-{i}"),
                    Track {
                        created: Instant::now(),
                        role: Role::Churn,
                        latest_start: i64::MAX,
                        bound: false,
                        planned: false,
                        released: false,
                    },
                );
                batch.push(churn_pod(i, &scheduler));
                s.created_churn += 1;
                room -= 1;
            }
        }
        let failed: Vec<String> = stream::iter(batch)
            .map(|pod| {
                let api = api.clone();
                async move {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    api.create(&PostParams::default(), &pod)
                        .await
                        .err()
                        .map(|_| name)
                }
            })
            .buffer_unordered(16)
            .filter_map(futures::future::ready)
            .collect()
            .await;
        // A pod the API server did not accept is not followed.
        {
            let mut s = state.lock().unwrap();
            s.create_errors += failed.len();
            for name in failed {
                s.pods.remove(&name);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes churn pods whose hold after binding has passed.
async fn delete_pods(api: Api<Pod>, state: Arc<Mutex<State>>, end: Instant) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    while Instant::now() < end {
        let due: Vec<String> = {
            let mut s = state.lock().unwrap();
            let now = Instant::now();
            let mut due = Vec::new();
            while s.delete_queue.front().is_some_and(|(t, _)| *t <= now) && due.len() < 256 {
                due.push(s.delete_queue.pop_front().unwrap().1);
            }
            due
        };
        let results: Vec<bool> = stream::iter(due)
            .map(|name| {
                let (api, dp) = (api.clone(), dp.clone());
                async move {
                    match api.delete(&name, &dp).await {
                        Ok(_) => true,
                        Err(kube::Error::Api(s)) if s.code == 404 => true,
                        Err(_) => false,
                    }
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        {
            let mut s = state.lock().unwrap();
            s.deleted += results.iter().filter(|ok| **ok).count();
            s.delete_errors += results.iter().filter(|ok| !**ok).count();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------
// Samples and the summary.

struct Sample {
    t: f64,
    /// (process, RSS MiB, CPU seconds).
    procs: Vec<(String, f64, f64)>,
    /// Selected metrics.
    metrics: BTreeMap<&'static str, f64>,
    bound_churn: usize,
    created: usize,
    gated_past_latest_start: usize,
    pending: usize,
}

/// The metrics each component's sample keeps: (component, key, metric).
const METRICS: &[(&str, &str, &str)] = &[
    (
        "extender",
        "extender_decisions",
        "carbon_kube_scheduler_decisions_total",
    ),
    (
        "extender",
        "extender_pods_tracked",
        "carbon_kube_scheduler_pods_tracked",
    ),
    (
        "extender",
        "extender_nodes_cached",
        "carbon_kube_scheduler_nodes_cached",
    ),
    (
        "extender",
        "extender_snapshot_errors",
        "carbon_kube_scheduler_snapshot_errors_total",
    ),
    ("gates", "gates_deferred", "carbon_kube_deferred_pods"),
    ("gates", "gates_releases", "carbon_kube_gate_releases_total"),
    ("gates", "gates_plans", "carbon_kube_gate_plans_total"),
    (
        "gates",
        "gates_release_errors",
        "carbon_kube_gate_release_errors_total",
    ),
    (
        "gates",
        "gates_near_deadline",
        "carbon_kube_deferred_pods_near_deadline",
    ),
    (
        "migrator",
        "migrator_cycles",
        "carbon_kube_migrator_cycles_total",
    ),
    (
        "migrator",
        "migrator_decisions",
        "carbon_kube_migrations_total",
    ),
    (
        "poller",
        "poller_requests",
        "carbon_kube_poller_requests_total",
    ),
];

/// kube-apiserver's own metrics.
async fn apiserver_metrics(client: &kube::Client) -> String {
    let req = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    client.request_text(req).await.unwrap_or_default()
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    match http
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() - 1) as f64 * p).round() as usize;
    values[i]
}

/// Counts of WARN and ERROR lines in a component log, and the most frequent
/// messages (timestamps stripped).
fn log_summary(path: &Path) -> (usize, usize, Vec<(usize, String)>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut warn, mut error) = (0, 0);
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for l in text.lines() {
        let level = if l.contains(" WARN ") {
            warn += 1;
            "WARN"
        } else if l.contains(" ERROR ") {
            error += 1;
            "ERROR"
        } else {
            continue;
        };
        let msg = l.split_once(level).map_or(l, |(_, r)| r).trim();
        let key: String = msg.chars().take(90).collect();
        *kinds.entry(format!("{level} {key}")).or_insert(0) += 1;
    }
    let mut top: Vec<(usize, String)> = kinds.into_iter().map(|(k, n)| (n, k)).collect();
    top.sort_by(|a, b| b.0.cmp(&a.0));
    top.truncate(4);
    (warn, error, top)
}

fn main() {
    carbon_kube_testkit::ensure_crypto_provider();
    let settings = Arc::new(Settings::from_env());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(run(settings));
    if !ok {
        std::process::exit(1);
    }
}

#[allow(clippy::too_many_lines)]
async fn run(settings: Arc<Settings>) -> bool {
    let started_at = unix_now();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("soak")
        .join(started_at.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "soak: {} nodes, {} churned pods over {} min, {} deferred, {} migrator pods; output in {}",
        settings.nodes,
        settings.pods,
        settings.minutes,
        settings.deferred,
        settings.migrate_pods,
        dir.display()
    );
    let setup = Instant::now();
    let cp = ControlPlane::start(ControlPlaneOptions::default())
        .await
        .unwrap();
    let ns = cp.test_namespace("soak").await.unwrap();
    // Nodes in chunks of 125, eight chunks at a time (create_nodes waits
    // for each node to be Ready in turn).
    let chunks: Vec<(usize, &str, usize)> = ZONES
        .iter()
        .enumerate()
        .flat_map(|(i, zone)| {
            let per_zone = settings.nodes / ZONES.len();
            (0..per_zone.div_ceil(125)).map(move |c| (i, *zone, (per_zone - c * 125).min(125)))
        })
        .collect();
    let made: usize = stream::iter(chunks)
        .map(|(i, zone, count)| {
            let ns = &ns;
            async move {
                ns.create_nodes(
                    &nodes_in_zone(format!("region-{i}"), format!("region-{i}-a"))
                        .named(zone.to_ascii_lowercase())
                        .count(count)
                        .with_label(keys::LABEL_GRID_ZONE, zone)
                        .with_cpu("32")
                        .with_memory("128Gi")
                        .with_pods(110),
                )
                .await
                .unwrap()
                .len()
            }
        })
        .buffer_unordered(8)
        .fold(0, |a, n| async move { a + n })
        .await;
    assert_eq!(made, settings.nodes / ZONES.len() * ZONES.len());
    println!(
        "soak: control plane and {} kwok nodes ready in {:.0} s",
        settings.nodes,
        setup.elapsed().as_secs_f64()
    );

    let traces = Traces::load();
    println!(
        "soak: 2023 hour {} (day {}, {:02}:00 UTC) shown now; greenest zone now {:.0} g/kWh, over the next 6 h {:?}",
        traces.h0,
        traces.h0 / 24 + 1,
        traces.h0 % 24,
        ZONES
            .iter()
            .filter_map(|z| traces.value(z, traces.start_hour))
            .fold(f64::INFINITY, f64::min),
        (1..=6)
            .map(|k| ZONES
                .iter()
                .filter_map(|z| traces.value(z, traces.start_hour + k))
                .fold(f64::INFINITY, f64::min)
                .round())
            .collect::<Vec<_>>()
    );
    let em_url = start_fake_electricity_maps(traces).await;
    let kubeconfig = cp.kubeconfig_path().to_owned();
    let nsn = ns.name().to_owned();
    let s = |v: &str| v.to_owned();
    let zones = ZONES.join(",");

    let poller_port = free_port();
    let mut poller = spawn(
        "poller",
        &[
            s("poller"),
            s("--interval"),
            format!("{}s", settings.poll_seconds),
            s("--zones"),
            zones,
            s("--namespace"),
            nsn.clone(),
            s("--chain"),
            s("default=electricity_maps,static"),
            s("--electricity-maps-url"),
            em_url,
            s("--listen"),
            format!("127.0.0.1:{poller_port}"),
        ],
        &[("ELECTRICITY_MAPS_API_KEY", "soak-fake-key")],
        &kubeconfig,
        &dir,
        poller_port,
    );
    // The first snapshot, before the readers start.
    let cms: Api<ConfigMap> = ns.api();
    let deadline = Instant::now() + Duration::from_secs(300);
    while cms
        .get_opt(keys::SNAPSHOT_CONFIGMAP)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        if let Ok(Some(status)) = poller.child.try_wait() {
            panic!("poller exited ({status}):\n{}", log_tail(&poller.log, 30));
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot after 300 s:\n{}",
            log_tail(&poller.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let extender_port = free_port();
    let mut extender = spawn(
        "extender",
        &[
            s("extender"),
            s("--listen"),
            format!("127.0.0.1:{extender_port}"),
            s("--namespace"),
            nsn.clone(),
            s("--max-data-age-seconds"),
            s("5400"),
        ],
        &[],
        &kubeconfig,
        &dir,
        extender_port,
    );
    let gates_port = free_port();
    let mut gates = spawn(
        "gates",
        &[
            s("gates"),
            s("controller"),
            s("--namespace"),
            nsn.clone(),
            s("--watch-namespace"),
            nsn.clone(),
            s("--health-listen"),
            format!("127.0.0.1:{gates_port}"),
            s("--identity"),
            s("soak-gates"),
        ],
        &[],
        &kubeconfig,
        &dir,
        gates_port,
    );
    let migrator_port = free_port();
    let mut migrator = spawn(
        "migrator",
        &[
            s("migrator"),
            s("--dry-run"),
            s("--min-dwell"),
            s("0s"),
            s("--interval"),
            s("30s"),
            s("--max-data-age"),
            s("90m"),
            s("--namespace"),
            nsn.clone(),
            s("--watch-namespace"),
            nsn.clone(),
            s("--health-listen"),
            format!("127.0.0.1:{migrator_port}"),
            s("--identity"),
            s("soak-migrator"),
        ],
        &[],
        &kubeconfig,
        &dir,
        migrator_port,
    );
    let http = reqwest::Client::new();
    for c in [&mut poller, &mut extender, &mut gates, &mut migrator] {
        wait_ready(&http, c).await;
    }

    // kube-scheduler: the shipped configuration with the extender.
    let doc: serde_json::Value = serde_saphyr::from_str(SHIPPED_CONFIG).unwrap();
    let e = &doc["extenders"][0];
    let scheduler_name = ns.scheduler_name().to_owned();
    let config = SchedulerConfig::from_yaml(SHIPPED_CONFIG)
        .unwrap()
        .restricted_to_node_pool(ns.node_pool())
        .without_extenders()
        .with_extender(
            Extender::at(&extender.http)
                .filter_verb("filter")
                .prioritize_verb("prioritize")
                .weight(e["weight"].as_i64().unwrap())
                .node_cache_capable(true)
                .ignorable(true)
                .http_timeout(Duration::from_secs(1)),
        )
        .with_scheduler_name(&scheduler_name);
    let binary = config.binary();
    let mut doc = config.to_document(Path::new("/x"));
    doc["clientConnection"]["qps"] = json!(5000);
    doc["clientConnection"]["burst"] = json!(10000);
    let config = SchedulerConfig::from_yaml(&doc.to_string())
        .unwrap()
        .with_binary(binary);
    let scheduler = cp.start_scheduler(config).await.unwrap();

    // The migrator's population: running, opted-in ReplicaSet pods.
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "soak-movable"},
        "spec": {
            "replicas": settings.migrate_pods,
            "selector": {"matchLabels": {"app": "soak-movable"}},
            "template": {
                "metadata": {
                    "labels": {"app": "soak-movable", ROLE_LABEL: "migrate"},
                    "annotations": {keys::MIGRATE: "true"},
                },
                "spec": {
                    "schedulerName": scheduler_name,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "main", "image": carbon_kube_testkit::PAUSE_IMAGE,
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    }],
                },
            },
        },
    }))
    .unwrap();
    if settings.migrate_pods > 0 {
        ns.api::<ReplicaSet>()
            .create(&PostParams::default(), &rs)
            .await
            .unwrap();
        let pods: Api<Pod> = ns.api();
        let lp = ListParams::default().labels("app=soak-movable");
        let deadline = Instant::now() + Duration::from_secs(1200);
        loop {
            let running = pods
                .list(&lp)
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|p| {
                            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        })
                        .count()
                })
                .unwrap_or(0);
            if running >= settings.migrate_pods {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {running}/{} migrator pods running\n{}",
                settings.migrate_pods,
                scheduler.log_tail(20)
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    println!(
        "soak: components ready, {} migrator pods running; setup {:.0} s",
        settings.migrate_pods,
        setup.elapsed().as_secs_f64()
    );

    let admin = cp.client().await.unwrap();
    let api_before = apiserver_metrics(&admin).await;

    // The run.
    let state = Arc::new(Mutex::new(State::default()));
    let t0 = Instant::now();
    let run_for = Duration::from_secs(settings.minutes as u64 * 60);
    let end = t0 + run_for;
    let hold = Duration::from_secs(settings.hold_seconds as u64);
    let pods: Api<Pod> = ns.api();
    let watch = tokio::spawn(watch_pods(pods.clone(), state.clone(), t0, hold));
    let creator = tokio::spawn(create_pods(
        pods.clone(),
        state.clone(),
        settings.clone(),
        scheduler_name.clone(),
        t0,
        end,
    ));
    let deleter = tokio::spawn(delete_pods(pods.clone(), state.clone(), end));

    let mut procs: Vec<(String, u32)> = cp.pids();
    procs.push(("kube-scheduler".into(), scheduler.pid()));
    let mut components = [poller, extender, gates, migrator];
    for c in &components {
        procs.push((c.name.to_owned(), c.pid));
    }
    // This process: the pod churn, its watch and the fake provider.
    procs.push(("soak harness".into(), std::process::id()));
    let mut samples: Vec<Sample> = Vec::new();
    let mut died: Vec<String> = Vec::new();
    let mut csv = String::from("t,process,rss_mib,cpu_s\n");
    while Instant::now() < end + Duration::from_secs(1) {
        let t = t0.elapsed().as_secs_f64();
        let proc_samples: Vec<(String, f64, f64)> = procs
            .iter()
            .filter_map(|(n, pid)| proc_sample(*pid).map(|(r, c)| (n.clone(), r, c)))
            .collect();
        let mut metrics = BTreeMap::new();
        for c in &components {
            let text = scrape(&http, &c.http).await;
            for (component, key, name) in METRICS {
                if *component == c.name {
                    metrics.insert(*key, metric_sum(&text, name));
                }
            }
        }
        for c in &mut components {
            if let Ok(Some(status)) = c.child.try_wait()
                && !died.iter().any(|d| d.starts_with(c.name))
            {
                died.push(format!("{} ({status})", c.name));
            }
        }
        let (bound_churn, created, gated_past, pending) = {
            let s = state.lock().unwrap();
            (
                s.bound_churn,
                s.created_churn + s.created_deferred,
                s.gated_past_latest_start(unix_now()),
                s.pending_churn(),
            )
        };
        for (n, r, c) in &proc_samples {
            let _ = writeln!(csv, "{t:.1},{n},{r:.1},{c:.2}");
        }
        println!(
            "soak: t={t:>5.0}s created {created} bound(churn) {bound_churn} unbound(churn) {pending} deferred(gates) {:.0} releases {:.0} extender decisions {:.0} migrator cycles {:.0} gated-past-latest-start {gated_past}",
            metrics.get("gates_deferred").copied().unwrap_or(f64::NAN),
            metrics.get("gates_releases").copied().unwrap_or(f64::NAN),
            metrics
                .get("extender_decisions")
                .copied()
                .unwrap_or(f64::NAN),
            metrics.get("migrator_cycles").copied().unwrap_or(f64::NAN),
        );
        samples.push(Sample {
            t,
            procs: proc_samples,
            metrics,
            bound_churn,
            created,
            gated_past_latest_start: gated_past,
            pending,
        });
        tokio::time::sleep(Duration::from_secs(settings.sample_seconds as u64)).await;
    }
    let _ = creator.await;
    let _ = deleter.await;
    watch.abort();
    let api_after = apiserver_metrics(&admin).await;
    std::fs::write(dir.join("samples.csv"), &csv).unwrap();

    // The authoritative check: every deferred pod, from a fresh list.
    let now = unix_now();
    let list = pods
        .list(&ListParams::default().labels(&format!("{ROLE_LABEL}=deferred")))
        .await
        .unwrap();
    let (mut stuck, mut late, mut held, mut released, mut unplanned) = (0, 0, 0, 0, 0);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut lateness_margin = f64::INFINITY;
    for pod in &list.items {
        let Some(latest) = annotation(pod, keys::ANNOTATION_DEADLINE)
            .and_then(|d| d.parse::<Timestamp>().ok())
            .map(|t| t.as_second() - EXPECTED_MINUTES * 60)
        else {
            continue;
        };
        if is_gated(pod) {
            held += 1;
            if latest < now {
                stuck += 1;
            }
            if annotation(pod, keys::ANNOTATION_PLANNED_RELEASE).is_none() {
                unplanned += 1;
            }
        } else {
            released += 1;
            let reason = annotation(pod, keys::ANNOTATION_RELEASE_REASON).unwrap_or("?");
            *reasons.entry(reason.to_owned()).or_insert(0) += 1;
            if let Some(at) = annotation(pod, keys::ANNOTATION_RELEASED_AT)
                .and_then(|d| d.parse::<Timestamp>().ok())
            {
                let margin = (latest - at.as_second()) as f64;
                lateness_margin = lateness_margin.min(margin);
                if margin < 0.0 {
                    late += 1;
                }
            }
        }
    }
    let reached_in_run = list
        .items
        .iter()
        .filter_map(|p| annotation(p, keys::ANNOTATION_DEADLINE))
        .filter_map(|d| d.parse::<Timestamp>().ok())
        .filter(|t| t.as_second() - EXPECTED_MINUTES * 60 < now)
        .count();

    // The summary.
    let mut out = String::new();
    let st = state.lock().unwrap();
    let total = samples.last().map_or(0.0, |s| s.t).max(1.0);
    let third = |i: usize| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| {
                let k = ((s.t / total) * 3.0).floor() as usize;
                k.min(2) == i
            })
            .collect()
    };
    let (first, middle, last) = (third(0), third(1), third(2));
    let _ = writeln!(
        out,
        "# Scale soak, {}\n\n{} kwok nodes in {} zones, {} min, sampled every {} s; \
         {} churn pods created ({} asked), {} bound and {} deleted; {} deferred pods created; {} migrator pods; \
         create errors {}, delete errors {}, harness watch errors {}.\n",
        rfc3339(started_at),
        settings.nodes,
        ZONES.len(),
        settings.minutes,
        settings.sample_seconds,
        st.created_churn,
        settings.pods,
        st.bound_churn,
        st.deleted,
        st.created_deferred,
        settings.migrate_pods,
        st.create_errors,
        st.delete_errors,
        st.watch_errors
    );
    let _ = writeln!(
        out,
        "| process | RSS first third (MiB) | RSS last third | last / first | CPU % first third | middle | last |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let mean_rss = |v: &[&Sample], name: &str| {
        let xs: Vec<f64> = v
            .iter()
            .filter_map(|s| s.procs.iter().find(|p| p.0 == name).map(|p| p.1))
            .collect();
        xs.iter().sum::<f64>() / xs.len().max(1) as f64
    };
    let cpu_pct = |v: &[&Sample], name: &str| {
        let pts: Vec<(f64, f64)> = v
            .iter()
            .filter_map(|s| s.procs.iter().find(|p| p.0 == name).map(|p| (s.t, p.2)))
            .collect();
        match (pts.first(), pts.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) / (b.0 - a.0) * 100.0,
            _ => f64::NAN,
        }
    };
    let mut flat = true;
    for (name, _) in &procs {
        let (a, b) = (mean_rss(&first, name), mean_rss(&last, name));
        let ratio = b / a.max(1e-9);
        let component = ["poller", "extender", "gates", "migrator"].contains(&name.as_str());
        if component && ratio > 1.25 {
            flat = false;
        }
        let _ = writeln!(
            out,
            "| {name} | {a:.0} | {b:.0} | {ratio:.2} | {:.0} | {:.0} | {:.0} |",
            cpu_pct(&first, name),
            cpu_pct(&middle, name),
            cpu_pct(&last, name)
        );
    }
    let rate = |v: &[&Sample], key: &str| {
        let pts: Vec<(f64, f64)> = v
            .iter()
            .filter_map(|s| s.metrics.get(key).map(|m| (s.t, *m)))
            .collect();
        match (pts.first(), pts.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) / (b.0 - a.0),
            _ => f64::NAN,
        }
    };
    let bind_rate = |v: &[&Sample]| match (v.first(), v.last()) {
        (Some(a), Some(b)) if b.t > a.t => (b.bound_churn - a.bound_churn) as f64 / (b.t - a.t),
        _ => f64::NAN,
    };
    let create_rate = |v: &[&Sample]| match (v.first(), v.last()) {
        (Some(a), Some(b)) if b.t > a.t => (b.created - a.created) as f64 / (b.t - a.t),
        _ => f64::NAN,
    };
    let lat = |v: &[(f64, f64)], i: usize| {
        let mut xs: Vec<f64> = v
            .iter()
            .filter(|(t, _)| ((((t / total) * 3.0).floor()) as usize).min(2) == i)
            .map(|(_, l)| *l)
            .collect();
        let n = xs.len();
        (
            percentile(&mut xs, 0.5),
            percentile(&mut xs, 0.99),
            xs.last().copied().unwrap_or(f64::NAN),
            n,
        )
    };
    let _ = writeln!(
        out,
        "\n| per third | first | middle | last |\n|---|---:|---:|---:|"
    );
    let row = |label: &str, f: &dyn Fn(&[&Sample]) -> f64| {
        format!(
            "| {label} | {:.1} | {:.1} | {:.1} |\n",
            f(&first),
            f(&middle),
            f(&last)
        )
    };
    out.push_str(&row("pods created / s (churn + deferred)", &create_rate));
    out.push_str(&row("churn pods bound / s", &bind_rate));
    out.push_str(&row("extender decisions / s (filter + prioritize)", &|v| {
        rate(v, "extender_decisions")
    }));
    out.push_str(&row("gate releases / s", &|v| rate(v, "gates_releases")));
    out.push_str(&row("gate plans written / s", &|v| rate(v, "gates_plans")));
    out.push_str(&row("migrator decisions / s (dry run)", &|v| {
        rate(v, "migrator_decisions")
    }));
    out.push_str(&row("migrator cycles / min", &|v| {
        rate(v, "migrator_cycles") * 60.0
    }));
    out.push_str(&row("poller requests / min", &|v| {
        rate(v, "poller_requests") * 60.0
    }));
    for (label, v) in [
        ("create → bound (s)", &st.bind_latency),
        (
            "create → first plan of a deferred pod (s)",
            &st.plan_latency,
        ),
    ] {
        let cells: Vec<String> = (0..3)
            .map(|i| {
                let (p50, p99, max, n) = lat(v, i);
                format!("p50 {p50:.1}, p99 {p99:.1}, max {max:.1} (n {n})")
            })
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    let max_of = |key: &str| {
        samples
            .iter()
            .filter_map(|s| s.metrics.get(key).copied())
            .fold(0.0_f64, f64::max)
    };
    let max_unbound = samples.iter().map(|s| s.pending).max().unwrap_or(0);
    let max_gated_past = samples
        .iter()
        .map(|s| s.gated_past_latest_start)
        .max()
        .unwrap_or(0);
    // The gate controller's count of gated pods against this harness's.
    let terminated = |text: &str| metric_sum(text, "apiserver_terminated_watchers_total");
    let _ = writeln!(
        out,
        "\nWatches: kube-apiserver closed {:.0} watchers for not keeping up during the run \
         (apiserver_terminated_watchers_total); the extender's node cache held {:.0} nodes at most; \
         the gate controller counted at most {:.0} deferred pods; at most {max_unbound} churn pods \
         unbound at a sample; the harness's own watch saw at most {max_gated_past} deferred pods \
         gated past their latest start at a sample.",
        terminated(&api_after) - terminated(&api_before),
        max_of("extender_nodes_cached"),
        max_of("gates_deferred"),
    );
    let _ = writeln!(
        out,
        "\nDeferred pods at the end (fresh list): {} created, {held} still gated ({unplanned} without a plan), \
         {released} released by reason {reasons:?}; {reached_in_run} had their latest start within the run; \
         **gated past their latest start: {stuck}**, **released after it: {late}** \
         (smallest margin between release and latest start: {lateness_margin:.0} s). \
         Gate release errors: {:.0}; snapshot errors (extender): {:.0}.",
        list.items.len(),
        max_of("gates_release_errors"),
        max_of("extender_snapshot_errors"),
    );
    let release_reasons = metric_by_label(
        &scrape(&http, &components[2].http).await,
        "carbon_kube_gate_releases_total",
        "reason",
    );
    let _ = writeln!(
        out,
        "Gate controller releases by reason (its counter): {release_reasons:?}."
    );
    let _ = writeln!(
        out,
        "\n| component log | WARN lines | ERROR lines | most frequent |\n|---|---:|---:|---|"
    );
    for c in &components {
        let (w, e, top) = log_summary(&c.log);
        let top: Vec<String> = top
            .iter()
            .map(|(n, k)| format!("{n}x `{}`", k.replace('|', "/").replace('`', "'")))
            .collect();
        let _ = writeln!(out, "| {} | {w} | {e} | {} |", c.name, top.join("; "));
    }
    let memory_verdict = if flat {
        "flat (every component's last-third RSS within 1.25x of its first third)"
    } else {
        "NOT flat: a component's RSS grew more than 1.25x from the first to the last third"
    };
    let _ = writeln!(out, "\nMemory: {memory_verdict}.");
    if !died.is_empty() {
        let _ = writeln!(out, "\n**Components that exited: {died:?}**");
    }
    drop(st);
    println!("{out}");
    std::fs::write(dir.join("summary.md"), &out).unwrap();
    println!("soak: summary in {}", dir.join("summary.md").display());
    drop(scheduler);
    drop(components);
    cp.stop();
    stuck == 0 && late == 0 && died.is_empty()
}
