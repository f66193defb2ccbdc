//! Control-plane faults under the gate controller (issue 18), on a real
//! kube-apiserver whose etcd traffic runs through the testkit's latency
//! proxy:
//!
//! - kube-apiserver killed and restarted while pods are being released;
//! - the leader killed in the middle of its releases, the standby taking over;
//! - etcd slow while two replicas compete for the lease and release;
//! - clock skew between the poller (the snapshot's timestamps) and the
//!   controller (its `now`).
//!
//! What must hold every time: every gated pod is released (none lost), by
//! its latest start, and once: the controllers' release counters add up to
//! the number of pods (less at most the one release in flight when a process
//! died, whose pod is released all the same), and no pod has more than one
//! `Released` Event. The faults disturb the whole control plane, so the
//! tests of this binary take turns (`FAULTS`).
//!
//! `FAULT_ROUNDS` (default 1; `make soak` sets more) repeats each scenario.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use carbon_kube_gates::actuator::PacingConfig;
use carbon_kube_gates::admission::has_gate;
use carbon_kube_gates::controller::{ControllerSettings, LeaderSettings, run_controller};
use carbon_kube_gates::metrics::ControllerMetrics;
use carbon_kube_gates::reconcile::{ANNOTATION_RELEASE_PLAN, ANNOTATION_RELEASED_AT};
use carbon_kube_gates::{Clock, system_clock};
use carbon_kube_k8s::Readiness;
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{
    ControlPlane, NODE_POOL_LABEL, Progress, TestNamespace, fault_rounds, nodes_in_zone, pod_named,
    shared_for_faults, wait_for, wait_until,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSchedulingGate};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

/// The tests of this binary disturb the shared control plane: one at a time.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(120);
/// Each pod may wait this long; its latest start is creation + this - 1m.
const MAX_DELAY: &str = "30m";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A DE record measured at `t` whose forecast, on a `step` grid from the
/// slot after `t`, is `values`.
fn record_at(t: i64, step: i64, current: f64, values: &[f64]) -> ZoneRecord {
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(current).unwrap(),
        t,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    r.forecast = Some(Forecast {
        start: t.div_euclid(step) * step + step,
        step_seconds: u32::try_from(step).unwrap(),
        values: values
            .iter()
            .map(|v| CarbonIntensity::new(*v).unwrap())
            .collect(),
    });
    r
}

async fn publish(ns: &TestNamespace, record: ZoneRecord) {
    let mut s = Snapshot::default();
    s.zones.insert(ZoneId::parse("DE").unwrap(), record);
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

/// DE green now and for the next day: every pod is released at once (now
/// is best), as fast as pacing allows.
async fn publish_green_now(ns: &TestNamespace) {
    publish(ns, record_at(now(), 3600, 50.0, &[50.0; 24])).await;
}

async fn de_nodes(ns: &TestNamespace) {
    ns.create_nodes(
        &nodes_in_zone("eu-central", "de-a")
            .named("de")
            .with_label(keys::LABEL_GRID_ZONE, "DE")
            .with_cpu("64")
            .with_pods(500)
            .static_ready()
            .count(2),
    )
    .await
    .unwrap();
}

fn gated_pod(ns: &TestNamespace, name: &str, max_delay: &str, duration: &str) -> Pod {
    let mut p = pod_named(name)
        .with_node_selector(NODE_POOL_LABEL, ns.node_pool())
        .with_annotation(keys::ANNOTATION_MAX_DELAY, max_delay)
        .with_annotation(keys::ANNOTATION_EXPECTED_DURATION, duration)
        .build();
    p.spec.as_mut().unwrap().scheduling_gates = Some(vec![PodSchedulingGate {
        name: keys::SCHEDULING_GATE.to_owned(),
    }]);
    p
}

async fn create_gated(ns: &TestNamespace, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("job-{i:03}")).collect();
    for name in &names {
        ns.api::<Pod>()
            .create(
                &PostParams::default(),
                &gated_pod(ns, name, MAX_DELAY, "1m"),
            )
            .await
            .unwrap();
    }
    names
}

fn settings(ns: &TestNamespace, pace: f64) -> ControllerSettings {
    ControllerSettings {
        snapshot_namespace: ns.name().to_owned(),
        pod_namespace: Some(ns.name().to_owned()),
        tick: Duration::from_millis(300),
        min_pass_interval: Duration::from_millis(100),
        overrides_configmap: None,
        pacing: PacingConfig {
            cluster_per_second: pace,
            cluster_burst: 1,
            zone_per_second: 0.0,
            zone_burst: 1,
        },
        ..ControllerSettings::default()
    }
}

fn with_leader(
    mut s: ControllerSettings,
    ns: &TestNamespace,
    identity: &str,
) -> ControllerSettings {
    s.leader = Some(LeaderSettings {
        lease_name: "carbon-kube-gates".into(),
        namespace: ns.name().to_owned(),
        identity: identity.into(),
        duration_seconds: 3,
        grace_seconds: 1,
    });
    s
}

/// A gate controller on a runtime of its own, so the test can kill it
/// mid-flight (the runtime is dropped: every task stops where it is, as in
/// a crashed process).
struct Replica {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<String>>,
    registry: Arc<Registry>,
}

impl Replica {
    fn start(cp: &'static ControlPlane, settings: ControllerSettings, clock: Clock) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut registry = Registry::default();
        let metrics = ControllerMetrics::register(&mut registry);
        let (stop, rx) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        runtime.spawn(async move {
            let client = cp.client().await.unwrap();
            let result = run_controller(
                client,
                settings,
                metrics,
                Readiness::default(),
                clock,
                async {
                    let _ = rx.await;
                },
            )
            .await;
            let _ = done_tx.send(format!("{result:?}"));
        });
        Self {
            runtime: Some(runtime),
            stop: Some(stop),
            done: Some(done),
            registry: Arc::new(registry),
        }
    }

    fn metric(&self, line_prefix: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b)
    }

    /// Releases this replica counted (all reasons).
    fn releases(&self) -> f64 {
        self.metric("carbon_kube_gate_releases_total")
    }

    fn release_errors(&self) -> f64 {
        self.metric("carbon_kube_gate_release_errors_total")
    }

    /// Kills the replica where it stands: no lease release, no goodbye.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Stops the replica in order (it gives its lease up) and checks it
    /// ended cleanly.
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let done = self.done.take().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(30), done)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result, "Ok(())");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn annotation(p: &Pod, k: &str) -> Option<String> {
    p.metadata.annotations.as_ref()?.get(k).cloned()
}

/// Pods of the namespace released so far.
async fn released_count(ns: &TestNamespace) -> usize {
    ns.api::<Pod>()
        .list(&ListParams::default())
        .await
        .map(|l| l.items.iter().filter(|p| !has_gate(p)).count())
        .unwrap_or(0)
}

async fn wait_released_at_least(ns: &TestNamespace, n: usize) {
    wait_until(format!("{n} pods released"), WAIT, || async {
        let k = released_count(ns).await;
        if k >= n {
            Progress::Done(())
        } else {
            Progress::Waiting(format!("{k} released"))
        }
    })
    .await
    .unwrap();
}

/// Waits until every pod in `names` is released, then checks each was
/// released by its latest start, carries its release annotations, and has
/// at most one `Released` Event. Returns the number of `Released` Events.
async fn check_every_pod_released_once(ns: &TestNamespace, names: &[String]) -> usize {
    let pods = ns.api::<Pod>();
    for name in names {
        let p = wait_for(&pods, name, WAIT, |p| {
            !has_gate(p) && annotation(p, ANNOTATION_RELEASED_AT).is_some()
        })
        .await
        .unwrap();
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .as_second();
        let latest_start = created + 30 * 60 - 60;
        let released_at: jiff::Timestamp = annotation(&p, ANNOTATION_RELEASED_AT)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            released_at.as_second() <= latest_start,
            "{name} released at {released_at}, after its latest start"
        );
        assert!(annotation(&p, keys::ANNOTATION_RELEASE_REASON).is_some());
    }
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.items {
        if e.reason.as_deref() != Some("Released") {
            continue;
        }
        let pod = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        let count = e
            .series
            .as_ref()
            .map_or(1, |s| usize::try_from(s.count).unwrap_or(usize::MAX));
        *per_pod.entry(pod).or_default() += count;
    }
    for (pod, n) in &per_pod {
        assert!(*n <= 1, "{pod} has {n} Released Events: released twice");
    }
    per_pod.values().sum()
}

/// kube-apiserver killed (SIGKILL) while the controller releases 24 pods at
/// 2 per second, down for 3 s, started again on the same port and etcd: the
/// controller's watches resume, every pod is released once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_restart_mid_release_loses_and_repeats_nothing() {
    const N: usize = 24;
    let cp = shared_for_faults().await;
    let _turn = FAULTS.lock().await;
    for round in 0..fault_rounds() {
        let ns = cp.test_namespace("gates-apiserver-restart").await.unwrap();
        de_nodes(&ns).await;
        publish_green_now(&ns).await;
        let names = create_gated(&ns, N).await;
        let replica = Replica::start(cp, settings(&ns, 2.0), system_clock());
        wait_released_at_least(&ns, N / 4).await;
        cp.kill_apiserver().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        cp.start_apiserver().await.unwrap();
        let events = check_every_pod_released_once(&ns, &names).await;
        let (counted, errors) = (replica.releases(), replica.release_errors());
        // Every successful release patch is counted once; a patch cut off by
        // the kill may have gone through uncounted (then it is an error here
        // and a conflict, the gate already gone, on the retry).
        assert!(
            counted <= N as f64,
            "round {round}: {counted} releases of {N} pods"
        );
        assert!(
            counted + errors >= N as f64,
            "round {round}: {counted} releases and {errors} errors for {N} pods"
        );
        assert!(events <= N);
        replica.stop().await;
        eprintln!(
            "round {round}: {counted} releases counted, {errors} release errors, {events} Released Events"
        );
    }
}

/// Two replicas with leader election; the leader is killed (its runtime
/// dropped mid-release, the lease left to expire) after a quarter of 30
/// pods; the standby takes over and releases the rest. No pod twice, none
/// lost: at most the one release in flight at the kill is uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_during_releases_is_replaced_without_double_releases() {
    const N: usize = 30;
    let cp = shared_for_faults().await;
    let _turn = FAULTS.lock().await;
    for round in 0..fault_rounds() {
        let ns = cp.test_namespace("gates-leader-kill").await.unwrap();
        de_nodes(&ns).await;
        publish_green_now(&ns).await;
        let names = create_gated(&ns, N).await;
        let mut first = Replica::start(
            cp,
            with_leader(settings(&ns, 3.0), &ns, "replica-one"),
            system_clock(),
        );
        wait_released_at_least(&ns, 1).await;
        // The standby starts once the first leads, so the roles are known.
        let second = Replica::start(
            cp,
            with_leader(settings(&ns, 3.0), &ns, "replica-two"),
            system_clock(),
        );
        wait_released_at_least(&ns, N / 4).await;
        first.kill();
        let before = released_count(&ns).await;
        let events = check_every_pod_released_once(&ns, &names).await;
        let counted = first.releases() + second.releases();
        assert!(
            second.releases() >= 1.0,
            "round {round}: the standby released nothing ({before} released at the kill)"
        );
        assert!(
            counted <= N as f64,
            "round {round}: {counted} releases of {N} pods"
        );
        assert!(
            counted + first.release_errors() + second.release_errors() + 1.0 >= N as f64,
            "round {round}: {counted} releases counted for {N} pods"
        );
        assert!(events <= N);
        eprintln!(
            "round {round}: leader killed with {before} of {N} released; {} by the first, {} by the second",
            first.releases(),
            second.releases()
        );
        second.stop().await;
    }
}

/// etcd made slow (150 ms each way on every chunk between kube-apiserver and
/// etcd) while two replicas hold an election with a 3 s lease and release
/// 20 pods: slow lease renewals must not let both act on the same pod.
/// Both stay alive, so every release is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_etcd_under_two_replicas_releases_each_pod_once() {
    const N: usize = 20;
    let cp = shared_for_faults().await;
    let _turn = FAULTS.lock().await;
    for round in 0..fault_rounds() {
        let ns = cp.test_namespace("gates-slow-etcd").await.unwrap();
        de_nodes(&ns).await;
        publish_green_now(&ns).await;
        let names = create_gated(&ns, N).await;
        cp.set_etcd_latency(Duration::from_millis(150)).unwrap();
        let one = Replica::start(
            cp,
            with_leader(settings(&ns, 4.0), &ns, "replica-one"),
            system_clock(),
        );
        let two = Replica::start(
            cp,
            with_leader(settings(&ns, 4.0), &ns, "replica-two"),
            system_clock(),
        );
        let result = tokio::time::timeout(
            Duration::from_secs(180),
            check_every_pod_released_once(&ns, &names),
        )
        .await;
        cp.set_etcd_latency(Duration::ZERO).unwrap();
        let events = result.unwrap();
        let counted = one.releases() + two.releases();
        let errors = one.release_errors() + two.release_errors();
        assert_eq!(
            counted, N as f64,
            "round {round}: {counted} releases counted for {N} pods ({errors} errors)"
        );
        assert!(events <= N);
        eprintln!(
            "round {round}: {} + {} releases, {errors} errors, {events} Released Events",
            one.releases(),
            two.releases()
        );
        one.stop().await;
        two.stop().await;
    }
}

/// A clock `skew` seconds off the system clock.
fn skewed_clock(skew: i64) -> Clock {
    Arc::new(move || jiff::Timestamp::now().as_second() + skew)
}

/// Clock skew between the poller and the controller. The snapshot is
/// written by the system clock (the poller): DE at 400 g/kWh now, green
/// (50) 40 to 50 minutes from now on a 5-minute forecast. Controllers whose
/// clocks run 20 minutes behind or ahead still see the window and plan the
/// pod into it (the data is not rejected wrongly); one a year behind (the
/// data dated a year ahead of it) and one 150 minutes ahead (the data older
/// than the 2 h limit by its clock) treat the data as stale and release at
/// once with reason `no_data` (never fresh forever, never a pod held on data
/// it cannot date).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_between_poller_and_controller_neither_trusts_forever_nor_rejects_wrongly() {
    let cp = shared_for_faults().await;
    let _turn = FAULTS.lock().await;
    let cases: [(&str, i64, Option<&str>); 4] = [
        ("behind-20m", -20 * 60, None),
        ("ahead-20m", 20 * 60, None),
        ("behind-1y", -365 * 86_400, Some("no_data")),
        ("ahead-150m", 150 * 60, Some("no_data")),
    ];
    let mut runs = Vec::new();
    for (label, skew, _) in cases {
        let ns = cp
            .test_namespace(&format!("gates-skew-{label}"))
            .await
            .unwrap();
        de_nodes(&ns).await;
        let forecast: Vec<f64> = (0..24)
            .map(|i| if (7..9).contains(&i) { 50.0 } else { 400.0 })
            .collect();
        publish(&ns, record_at(now(), 300, 400.0, &forecast)).await;
        ns.api::<Pod>()
            .create(&PostParams::default(), &gated_pod(&ns, "job", "6h", "5m"))
            .await
            .unwrap();
        let replica = Replica::start(cp, settings(&ns, 0.0), skewed_clock(skew));
        runs.push((ns, replica));
    }
    for ((label, skew, released), (ns, replica)) in cases.iter().zip(runs) {
        let pods = ns.api::<Pod>();
        match released {
            None => {
                let p = wait_for(&pods, "job", WAIT, |p| {
                    annotation(p, ANNOTATION_RELEASE_PLAN).is_some()
                })
                .await
                .unwrap();
                assert!(has_gate(&p), "{label}: released instead of planned");
                let plan: serde_json::Value =
                    serde_json::from_str(&annotation(&p, ANNOTATION_RELEASE_PLAN).unwrap())
                        .unwrap();
                assert_eq!(plan["reason"], "green_window", "{label}: {plan}");
                assert_eq!(plan["zone"], "DE", "{label}: {plan}");
                // The window is where the forecast dates it, 35 to 50
                // minutes after the snapshot: the forecast's times are read
                // as the absolute times they are, whatever the clocks say.
                let offset = plan["releaseAt"].as_i64().unwrap() - now();
                assert!(
                    (25 * 60..=50 * 60).contains(&offset),
                    "{label} ({skew} s): planned {offset} s from now: {plan}"
                );
            }
            Some(reason) => {
                let p = wait_for(&pods, "job", WAIT, |p| !has_gate(p))
                    .await
                    .unwrap();
                assert_eq!(
                    annotation(&p, keys::ANNOTATION_RELEASE_REASON).as_deref(),
                    Some(*reason),
                    "{label}"
                );
            }
        }
        replica.stop().await;
    }
}
