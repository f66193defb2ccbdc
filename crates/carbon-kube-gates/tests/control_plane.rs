//! The webhook and the controller against a real control plane
//! (kube-apiserver, kube-controller-manager, kube-scheduler, kwok) from
//! `carbon-kube-testkit`. Every test works in its own namespace; every
//! controller watches only its test's namespace.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use carbon_kube_gates::admission::{AdmissionConfig, has_gate};
use carbon_kube_gates::controller::{ControllerSettings, LeaderSettings, run_controller};
use carbon_kube_gates::metrics::{ControllerMetrics, WebhookMetrics};
use carbon_kube_gates::reconcile::{ANNOTATION_RELEASE_PLAN, ANNOTATION_RELEASED_AT};
use carbon_kube_gates::webhook::{Namespaces, WebhookState, app, reflect_namespaces, serve_https};
use carbon_kube_gates::zones::AffinityMode;
use carbon_kube_gates::{actuator::PacingConfig, spec::parse_time, system_clock};
use carbon_kube_k8s::Readiness;
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{
    ControlPlane, NODE_POOL_LABEL, Progress, TestNamespace, ensure_crypto_provider, nodes_in_zone,
    pod_named, shared, wait_for, wait_until,
};
use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, PodSchedulingGate};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::oneshot;

const STEP: i64 = 10;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn ms(t: &str) -> i64 {
    let ts: jiff::Timestamp = t.parse().unwrap();
    ts.as_millisecond()
}

/// A zone record measured now whose forecast, on a 10 s grid from the
/// current slot, has `values`.
fn record(values: &[f64]) -> ZoneRecord {
    let t = now();
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(values[0]).unwrap(),
        t,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    r.forecast = Some(Forecast {
        start: t.div_euclid(STEP) * STEP,
        step_seconds: STEP as u32,
        values: values
            .iter()
            .map(|v| CarbonIntensity::new(*v).unwrap())
            .collect(),
    });
    r
}

/// `high` for `before` slots, then `low` for `len` slots, then `high`.
fn dip(high: f64, low: f64, before: usize, len: usize) -> Vec<f64> {
    (0..72)
        .map(|i| {
            if (before..before + len).contains(&i) {
                low
            } else {
                high
            }
        })
        .collect()
}

async fn publish_snapshot(ns: &TestNamespace, zones: &[(&str, Vec<f64>)]) {
    let mut s = Snapshot::default();
    for (z, v) in zones {
        s.zones.insert(ZoneId::parse(z).unwrap(), record(v));
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
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

/// A pod carrying Carbon-Kube's gate, restricted to this test's node pool.
fn gated_pod(ns: &TestNamespace, name: &str, annotations: &[(&str, &str)]) -> Pod {
    let mut t = pod_named(name).with_node_selector(NODE_POOL_LABEL, ns.node_pool());
    for (k, v) in annotations {
        t = t.with_annotation(*k, *v);
    }
    let mut p = t.build();
    p.spec.as_mut().unwrap().scheduling_gates = Some(vec![PodSchedulingGate {
        name: keys::SCHEDULING_GATE.to_owned(),
    }]);
    p
}

fn settings(ns: &TestNamespace) -> ControllerSettings {
    let mut s = ControllerSettings {
        snapshot_namespace: ns.name().to_owned(),
        pod_namespace: Some(ns.name().to_owned()),
        tick: Duration::from_millis(500),
        ..ControllerSettings::default()
    };
    s.reconcile.deferral.start_safety_seconds = 20;
    s.reconcile.hard_deadline_margin_seconds = 5;
    s
}

struct RunningController {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    registry: Arc<Registry>,
}

impl RunningController {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

async fn start_controller(cp: &ControlPlane, settings: ControllerSettings) -> RunningController {
    let client = cp.client().await.unwrap();
    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_controller(
        client,
        settings,
        metrics,
        Readiness::default(),
        system_clock(),
        async {
            let _ = rx.await;
        },
    ));
    RunningController {
        stop: Some(stop),
        task,
        registry: Arc::new(registry),
    }
}

/// When the pod's `PodScheduled` condition turned true (unix seconds).
fn scheduled_at(p: &Pod) -> i64 {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second())
        .expect("a bound pod has a PodScheduled condition")
}

fn annotation(p: &Pod, k: &str) -> Option<String> {
    p.metadata.annotations.as_ref()?.get(k).cloned()
}

fn released(p: &Pod) -> bool {
    !has_gate(p) && annotation(p, ANNOTATION_RELEASED_AT).is_some()
}

async fn wait_released(ns: &TestNamespace, name: &str, timeout: Duration) -> Pod {
    wait_for(&ns.api::<Pod>(), name, timeout, released)
        .await
        .unwrap()
}

async fn events_of(ns: &TestNamespace, pod: &str) -> Vec<Event> {
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
        .collect()
}

async fn wait_event(ns: &TestNamespace, pod: &str, reason: &str) -> Event {
    wait_until(
        format!("Event {reason} on pod {pod}"),
        Duration::from_secs(30),
        || async {
            let events = events_of(ns, pod).await;
            match events.iter().find(|e| e.reason.as_deref() == Some(reason)) {
                Some(e) => Progress::Done(e.clone()),
                None => Progress::Waiting(format!(
                    "events: {:?}",
                    events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------
// The webhook

#[tokio::test]
async fn the_webhook_gates_opted_in_pods_jobs_included_and_fails_open_when_down() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-webhook").await.unwrap();
    let optin = cp.test_namespace("gates-ns-optin").await.unwrap();
    // The namespace opts all its pods in, with its own max delay.
    Api::<Namespace>::all(ns.client())
        .patch(
            optin.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "labels": {keys::LABEL_NAMESPACE_DEFER: "enabled"},
                "annotations": {keys::ANNOTATION_MAX_DELAY: "2h"}}})),
        )
        .await
        .unwrap();

    // The webhook, on a random port, with a certificate from the control
    // plane's CA and a real namespace reflector.
    let (cert, key) = cp.issue_serving_certificate(&["127.0.0.1"]).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
        .await
        .unwrap();
    let readiness = Readiness::default();
    let (store, writer) = reflector::store::<Namespace>();
    let reflector_task = tokio::spawn(reflect_namespaces(
        cp.client().await.unwrap(),
        writer,
        readiness.clone(),
    ));
    let mut registry = Registry::default();
    let state = WebhookState::new(
        AdmissionConfig::default(),
        Namespaces::Store(store.clone()),
        WebhookMetrics::register(&mut registry),
        system_clock(),
    );
    let server = serve_https("127.0.0.1:0".parse().unwrap(), tls, app(state))
        .await
        .unwrap();
    wait_until(
        "the namespace opt-in to reach the webhook",
        Duration::from_secs(30),
        || {
            let store = store.clone();
            let name = optin.name().to_owned();
            async move {
                match store.get(&ObjectRef::new(&name)) {
                    Some(n)
                        if n.metadata
                            .labels
                            .as_ref()
                            .is_some_and(|l| l.contains_key(keys::LABEL_NAMESPACE_DEFER)) =>
                    {
                        Progress::Done(())
                    }
                    _ => Progress::Waiting("not yet".into()),
                }
            }
        },
    )
    .await
    .unwrap();

    // Registered like the Helm chart does: failurePolicy Ignore, a short
    // timeout, CREATE of pods; scoped to this test's namespaces.
    let name = format!("carbon-kube-gates-{}", ns.name());
    let mut config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "gates.carbon-kube.io",
            "clientConfig": {"url": format!("https://{}/mutate", server.addr)},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": 3,
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In",
                "values": [ns.name(), optin.name()]}]}
        }]
    }))
    .unwrap();
    config.webhooks.as_mut().unwrap()[0].client_config.ca_bundle =
        Some(ByteString(cp.ca_pem().as_bytes().to_vec()));
    let configs = Api::<MutatingWebhookConfiguration>::all(ns.client());
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    // The API server picks the configuration up asynchronously: probe with
    // server-side dry runs until an opted-in pod comes back gated.
    let pods = ns.api::<Pod>();
    let probe = pod_named("probe")
        .with_annotation(keys::ANNOTATION_MAX_DELAY, "1h")
        .build();
    wait_until(
        "the webhook to be called",
        Duration::from_secs(30),
        || async {
            let dry = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            match pods.create(&dry, &probe).await {
                Ok(p) if has_gate(&p) => Progress::Done(()),
                Ok(_) => Progress::Waiting("created ungated".into()),
                Err(e) => Progress::Waiting(e.to_string()),
            }
        },
    )
    .await
    .unwrap();

    // Opted in by annotation: gated. Not opted in: untouched.
    let asks = pod_named("nightly")
        .with_annotation(keys::ANNOTATION_DEADLINE, "2099-01-01T00:00:00Z")
        .build();
    let created = pods.create(&PostParams::default(), &asks).await.unwrap();
    assert!(has_gate(&created), "{created:?}");
    let plain = pods
        .create(&PostParams::default(), &pod_named("web").build())
        .await
        .unwrap();
    assert!(!has_gate(&plain));
    // Bound pods are never gated.
    let bound = pods
        .create(
            &PostParams::default(),
            &pod_named("bound")
                .with_annotation(keys::ANNOTATION_MAX_DELAY, "1h")
                .bound_to("some-node")
                .build(),
        )
        .await
        .unwrap();
    assert!(!has_gate(&bound));
    // Opted in by the namespace: gated, with the namespace's max delay written on it.
    let by_ns = optin
        .api::<Pod>()
        .create(&PostParams::default(), &pod_named("report").build())
        .await
        .unwrap();
    assert!(has_gate(&by_ns));
    assert_eq!(
        annotation(&by_ns, keys::ANNOTATION_MAX_DELAY).as_deref(),
        Some("2h")
    );

    // A Job's pods (created by the real job controller) are gated too, and
    // `kubectl get pods` shows them as SchedulingGated.
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "etl"},
        "spec": {"template": {
            "metadata": {"annotations": {keys::ANNOTATION_MAX_DELAY: "3h"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}}}
    }))
    .unwrap();
    ns.api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    let job_pod = wait_until("the Job's pod", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("job-name=etl"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        match list.into_iter().next() {
            Some(p) => Progress::Done(p),
            None => Progress::Waiting("no pod yet".into()),
        }
    })
    .await
    .unwrap();
    assert!(has_gate(&job_pod), "{job_pod:?}");

    // Webhook down: failurePolicy Ignore, pods are created ungated.
    server.stop().await;
    let undeferred = pods
        .create(
            &PostParams::default(),
            &pod_named("while-down")
                .with_annotation(keys::ANNOTATION_MAX_DELAY, "1h")
                .build(),
        )
        .await
        .unwrap();
    assert!(!has_gate(&undeferred));

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("carbon_kube_gates_webhook_decisions_total{decision=\"gate_namespace\"} 1"),
        "{text}"
    );
    configs
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    reflector_task.abort();
}

// ---------------------------------------------------------------------------
// The controller

/// DE dips to 50 g/kWh 20-30 s from now for 4 minutes; FR falls from
/// 300 to 50 over 4 minutes. A pod that may use both is held for the DE dip,
/// released in it with a required affinity for DE, and the real scheduler
/// binds it there. A pod restricted to FR, whose best window lies after its
/// deadline, goes by its latest start; one whose latest start has already
/// come goes at once, reason `deadline`.
#[tokio::test]
async fn pods_go_in_the_green_window_to_the_chosen_zone_and_by_their_deadline() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-window").await.unwrap();
    ns.create_nodes(
        &nodes_in_zone("eu-central", "de-a")
            .named("de")
            .with_label(keys::LABEL_GRID_ZONE, "DE")
            .count(2),
    )
    .await
    .unwrap();
    ns.create_nodes(
        &nodes_in_zone("eu-west", "fr-a")
            .named("fr")
            .with_label(keys::LABEL_GRID_ZONE, "FR")
            .count(2),
    )
    .await
    .unwrap();
    let _scheduler = cp.start_scheduler(ns.scheduler_config()).await.unwrap();
    let falling: Vec<f64> = (0..72)
        .map(|i| (300.0 - 10.0 * i as f64).max(50.0))
        .collect();
    publish_snapshot(&ns, &[("DE", dip(400.0, 50.0, 3, 27)), ("FR", falling)]).await;
    let mut s = settings(&ns);
    s.affinity = AffinityMode::Required;
    let controller = start_controller(cp, s).await;

    let pods = ns.api::<Pod>();
    let with_scheduler = |mut p: Pod| {
        p.spec.as_mut().unwrap().scheduler_name = Some(ns.scheduler_name().to_owned());
        p
    };
    let green = with_scheduler(gated_pod(
        &ns,
        "green",
        &[
            (keys::ANNOTATION_MAX_DELAY, "10m"),
            (keys::ANNOTATION_EXPECTED_DURATION, "1m"),
        ],
    ));
    let mut in_time = with_scheduler(gated_pod(
        &ns,
        "in-time",
        &[
            (keys::ANNOTATION_MAX_DELAY, "60s"),
            (keys::ANNOTATION_EXPECTED_DURATION, "20s"),
        ],
    ));
    in_time
        .spec
        .as_mut()
        .unwrap()
        .node_selector
        .get_or_insert_with(BTreeMap::new)
        .insert(keys::LABEL_GRID_ZONE.to_owned(), "FR".to_owned());
    let too_late = with_scheduler(gated_pod(
        &ns,
        "too-late",
        &[
            (keys::ANNOTATION_MAX_DELAY, "30s"),
            (keys::ANNOTATION_EXPECTED_DURATION, "20s"),
        ],
    ));
    let mut created = BTreeMap::new();
    for p in [&green, &in_time, &too_late] {
        let c = pods.create(&PostParams::default(), p).await.unwrap();
        created.insert(
            c.metadata.name.clone().unwrap(),
            c.metadata.creation_timestamp.clone().unwrap().0.as_second(),
        );
    }

    // The green pod is planned into the DE dip, and waits SchedulingGated.
    let planned = wait_for(&pods, "green", Duration::from_secs(30), |p| {
        annotation(p, keys::ANNOTATION_PLANNED_RELEASE).is_some()
    })
    .await
    .unwrap();
    let plan: serde_json::Value =
        serde_json::from_str(&annotation(&planned, ANNOTATION_RELEASE_PLAN).unwrap()).unwrap();
    assert_eq!(plan["zone"], "DE", "{plan}");
    assert_eq!(plan["reason"], "green_window", "{plan}");
    let planned_at =
        parse_time(&annotation(&planned, keys::ANNOTATION_PLANNED_RELEASE).unwrap()).unwrap();
    assert!(planned_at > created["green"], "planned for later: {plan}");
    let gated = wait_for(&pods, "green", Duration::from_secs(30), |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated")
                })
            })
    })
    .await
    .unwrap();
    assert!(has_gate(&gated));
    let deferred = wait_event(&ns, "green", "Deferred").await;
    assert!(
        deferred
            .note
            .as_deref()
            .unwrap_or_default()
            .starts_with("deferred until")
            && deferred
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("in DE"),
        "{deferred:?}"
    );

    // Released no earlier than planned, with the reason, and bound in DE.
    let out = wait_released(&ns, "green", Duration::from_secs(120)).await;
    let released_at = ms(&annotation(&out, ANNOTATION_RELEASED_AT).unwrap());
    assert!(
        released_at >= planned_at * 1000,
        "released before its window"
    );
    assert_eq!(
        annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
        Some("green_window")
    );
    let node = ns
        .wait_for_pod_bound("green", Duration::from_secs(60))
        .await
        .unwrap();
    let node = Api::<Node>::all(ns.client()).get(&node).await.unwrap();
    assert_eq!(
        node.metadata.labels.unwrap()[keys::LABEL_GRID_ZONE],
        "DE",
        "bound outside the chosen zone"
    );
    wait_event(&ns, "green", "Released").await;

    // The FR pod goes by its latest start (deadline − expected duration).
    let out = wait_released(&ns, "in-time", Duration::from_secs(120)).await;
    let released_at = ms(&annotation(&out, ANNOTATION_RELEASED_AT).unwrap());
    let latest_start = created["in-time"] + 60 - 20;
    assert!(
        released_at <= latest_start * 1000,
        "released after its latest start: {released_at} > {latest_start}000"
    );
    let node = ns
        .wait_for_pod_bound("in-time", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(node.contains("-fr-"), "{node}");

    // The pod with no slack goes at once, for its deadline.
    let out = wait_released(&ns, "too-late", Duration::from_secs(30)).await;
    assert_eq!(
        annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
        Some("deadline")
    );

    let text = controller.metrics();
    assert!(
        text.contains("carbon_kube_gate_releases_total{reason=\"deadline\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("carbon_kube_deferral_expected_savings_grams_total"),
        "{text}"
    );
    controller.stop().await;
}

/// Bad annotations (unparseable deadline, deadline in the past, negative
/// duration, a gate with no deadline at all) release the pod at once with a
/// Warning Event naming the problem; `release-now` releases by hand.
#[tokio::test]
async fn bad_annotations_are_explained_and_the_pod_released() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-bad").await.unwrap();
    ns.create_nodes(
        &nodes_in_zone("eu-central", "de-a")
            .with_label(keys::LABEL_GRID_ZONE, "DE")
            .static_ready(),
    )
    .await
    .unwrap();
    publish_snapshot(&ns, &[("DE", dip(400.0, 50.0, 30, 30))]).await;
    let controller = start_controller(cp, settings(&ns)).await;
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 4] = [
        (
            "garbled",
            vec![(keys::ANNOTATION_DEADLINE, "tomorrow evening")],
            keys::ANNOTATION_DEADLINE,
        ),
        (
            "past",
            vec![(keys::ANNOTATION_DEADLINE, "2020-01-01T00:00:00Z")],
            "not after the pod's creation",
        ),
        (
            "negative",
            vec![
                (keys::ANNOTATION_MAX_DELAY, "2h"),
                (keys::ANNOTATION_EXPECTED_DURATION, "-30m"),
            ],
            "negative",
        ),
        ("bare", vec![], "no deadline to plan against"),
    ];
    let pods = ns.api::<Pod>();
    for (name, ann, _) in &cases {
        pods.create(&PostParams::default(), &gated_pod(&ns, name, ann))
            .await
            .unwrap();
    }
    // A valid pod waiting for its window, then released by a person. Its run
    // (5 min) fits inside the dip, so the planner's minimum saving is met and
    // it waits rather than going now.
    pods.create(
        &PostParams::default(),
        &gated_pod(
            &ns,
            "by-hand",
            &[
                (keys::ANNOTATION_MAX_DELAY, "2h"),
                (keys::ANNOTATION_EXPECTED_DURATION, "5m"),
            ],
        ),
    )
    .await
    .unwrap();
    for (name, _, expect) in &cases {
        let out = wait_released(&ns, name, Duration::from_secs(30)).await;
        assert_eq!(
            annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
            Some("invalid")
        );
        let e = wait_event(&ns, name, "InvalidDeferral").await;
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        let note = e.note.unwrap_or_default();
        assert!(note.contains(expect), "{name}: {note}");
    }
    wait_for(&pods, "by-hand", Duration::from_secs(30), |p| {
        annotation(p, keys::ANNOTATION_PLANNED_RELEASE).is_some()
    })
    .await
    .unwrap();
    pods.patch(
        "by-hand",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {keys::ANNOTATION_RELEASE_NOW: "true"}}})),
    )
    .await
    .unwrap();
    let out = wait_released(&ns, "by-hand", Duration::from_secs(30)).await;
    assert_eq!(
        annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
        Some("manual")
    );
    let text = controller.metrics();
    assert!(
        text.contains("carbon_kube_gate_releases_total{reason=\"invalid\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("carbon_kube_gate_releases_total{reason=\"manual\"} 1"),
        "{text}"
    );
    controller.stop().await;
}

/// A controller that crashes (its runtime is dropped: no lease release, no
/// cleanup) while pods wait is replaced by another replica, which takes the
/// lease when it expires and releases each pod at its planned time, or at
/// once if that time passed during the outage, from the plans on the pods.
#[tokio::test]
async fn a_crashed_controller_is_replaced_and_pods_still_go_on_plan() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-restart").await.unwrap();
    for (zone, stem) in [("DE", "de"), ("GB", "gb")] {
        ns.create_nodes(
            &nodes_in_zone("eu", stem)
                .named(stem)
                .with_label(keys::LABEL_GRID_ZONE, zone)
                .static_ready(),
        )
        .await
        .unwrap();
    }
    // DE's dip starts 20-30 s from now (and passes during the outage); GB's 50-60 s.
    publish_snapshot(
        &ns,
        &[
            ("DE", dip(400.0, 50.0, 3, 2)),
            ("GB", dip(400.0, 50.0, 6, 3)),
        ],
    )
    .await;
    let leader = |identity: &str| {
        let mut s = settings(&ns);
        s.leader = Some(LeaderSettings {
            lease_name: "carbon-kube-gates".into(),
            namespace: ns.name().to_owned(),
            identity: identity.into(),
            duration_seconds: 3,
            grace_seconds: 1,
        });
        s
    };
    let pods = ns.api::<Pod>();
    for (name, zone) in [("de-job", "DE"), ("gb-job", "GB")] {
        let mut p = gated_pod(
            &ns,
            name,
            &[
                (keys::ANNOTATION_MAX_DELAY, "15m"),
                (keys::ANNOTATION_EXPECTED_DURATION, "20s"),
            ],
        );
        p.spec
            .as_mut()
            .unwrap()
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(keys::LABEL_GRID_ZONE.to_owned(), zone.to_owned());
        pods.create(&PostParams::default(), &p).await.unwrap();
    }

    // Replica one, on a runtime of its own so it can be killed.
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s1 = leader("replica-one");
    first.spawn(async move {
        let client = cp.client().await.unwrap();
        let mut registry = Registry::default();
        let metrics = ControllerMetrics::register(&mut registry);
        run_controller(
            client,
            s1,
            metrics,
            Readiness::default(),
            system_clock(),
            std::future::pending(),
        )
        .await
    });
    let mut plans = BTreeMap::new();
    for name in ["de-job", "gb-job"] {
        let p = wait_for(&pods, name, Duration::from_secs(30), |p| {
            annotation(p, ANNOTATION_RELEASE_PLAN).is_some()
        })
        .await
        .unwrap();
        assert!(has_gate(&p));
        plans.insert(name, annotation(&p, ANNOTATION_RELEASE_PLAN).unwrap());
    }
    let lease = ns.api::<Lease>().get("carbon-kube-gates").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("replica-one")
    );
    first.shutdown_background();

    // The outage outlasts DE's planned time.
    let de_planned: serde_json::Value = serde_json::from_str(&plans["de-job"]).unwrap();
    let de_at = de_planned["releaseAt"].as_i64().unwrap();
    while now() <= de_at + 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for name in ["de-job", "gb-job"] {
        assert!(
            has_gate(&pods.get(name).await.unwrap()),
            "{name} released during the outage"
        );
    }

    let second = start_controller(cp, leader("replica-two")).await;
    for name in ["de-job", "gb-job"] {
        let out = wait_released(&ns, name, Duration::from_secs(120)).await;
        let plan: serde_json::Value = serde_json::from_str(&plans[name]).unwrap();
        let released_at = ms(&annotation(&out, ANNOTATION_RELEASED_AT).unwrap());
        assert!(
            released_at >= plan["releaseAt"].as_i64().unwrap() * 1000,
            "{name} released before its planned time"
        );
        assert_eq!(
            annotation(&out, ANNOTATION_RELEASE_PLAN).as_deref(),
            Some(plans[name].as_str()),
            "{name}: the new replica changed a plan it had no reason to change"
        );
        assert_eq!(
            annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
            Some("green_window")
        );
    }
    let lease = ns.api::<Lease>().get("carbon-kube-gates").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("replica-two")
    );
    second.stop().await;
}

/// 1,000 gated pods waiting for one window are released no faster than the
/// configured pace: in any interval of T seconds, at most burst + rate × T
/// releases (timestamps written by the controller at each release).
#[tokio::test]
async fn a_thousand_pods_waiting_for_one_window_are_paced() {
    const N: usize = 1000;
    const RATE: f64 = 100.0;
    const BURST: u32 = 20;
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-crowd").await.unwrap();
    ns.create_nodes(
        &nodes_in_zone("eu-central", "de-a")
            .with_label(keys::LABEL_GRID_ZONE, "DE")
            .static_ready(),
    )
    .await
    .unwrap();
    publish_snapshot(&ns, &[("DE", dip(400.0, 50.0, 2, 60))]).await;
    let mut s = settings(&ns);
    s.events = false;
    s.pacing = PacingConfig {
        cluster_per_second: RATE,
        cluster_burst: BURST,
        zone_per_second: 0.0,
        zone_burst: 1,
    };
    let controller = start_controller(cp, s).await;
    let pods = ns.api::<Pod>();
    let created: Vec<_> = futures::stream::iter(0..N)
        .map(|i| {
            let pods = pods.clone();
            let p = gated_pod(
                &ns,
                &format!("crowd-{i:04}"),
                &[
                    (keys::ANNOTATION_MAX_DELAY, "1h"),
                    (keys::ANNOTATION_EXPECTED_DURATION, "10m"),
                ],
            );
            async move { pods.create(&PostParams::default(), &p).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(created.iter().all(Result::is_ok));

    let all = wait_until("every pod released", Duration::from_secs(180), || async {
        let list = pods.list(&ListParams::default()).await.map(|l| l.items);
        match list {
            Ok(items) if items.iter().all(released) => Progress::Done(items),
            Ok(items) => Progress::Waiting(format!(
                "{} of {} still gated",
                items.iter().filter(|p| has_gate(p)).count(),
                items.len()
            )),
            Err(e) => Progress::Waiting(e.to_string()),
        }
    })
    .await
    .unwrap();
    assert_eq!(all.len(), N);
    let mut times: Vec<i64> = all
        .iter()
        .map(|p| ms(&annotation(p, ANNOTATION_RELEASED_AT).unwrap()))
        .collect();
    times.sort_unstable();
    for window_ms in [1000_i64, 2000, 5000] {
        let bound = f64::from(BURST) + RATE * window_ms as f64 / 1000.0 + 1.0;
        let mut j = 0;
        for i in 0..times.len() {
            while times[i] - times[j] >= window_ms {
                j += 1;
            }
            let count = (i - j + 1) as f64;
            assert!(
                count <= bound,
                "{count} releases within {window_ms} ms (bound {bound})"
            );
        }
    }
    for p in &all {
        // Planned into the window, or (if first seen inside it) released as
        // "now is the best window": both count as green_window.
        let reason = annotation(p, keys::ANNOTATION_RELEASE_REASON);
        assert!(
            matches!(reason.as_deref(), Some("green_window" | "now_is_best")),
            "{reason:?}"
        );
    }
    let text = controller.metrics();
    assert!(
        text.contains(&format!(
            "carbon_kube_gate_releases_total{{reason=\"green_window\"}} {N}"
        )),
        "{text}"
    );
    controller.stop().await;
}

/// Issue 14: a zone nearly full (one 4-CPU node, 3 CPUs taken by work that
/// was never deferred), many deferred pods that want the same green window,
/// and one urgent pod. The ledger sees the running work and plans most urgent
/// first, so the urgent pod gets the one free CPU in the window and is bound
/// before its latest start; no deferred pod is planned into room that is
/// not there (it waits for room, or is held for lack of it).
#[tokio::test]
async fn the_urgent_pod_gets_the_room_in_a_nearly_full_zone() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-urgent").await.unwrap();
    ns.create_nodes(
        &nodes_in_zone("eu-central", "de-a")
            .named("de")
            .with_label(keys::LABEL_GRID_ZONE, "DE")
            .with_cpu("4"),
    )
    .await
    .unwrap();
    let _scheduler = cp.start_scheduler(ns.scheduler_config()).await.unwrap();
    let pods = ns.api::<Pod>();
    let filler = pod_named("filler")
        .requesting("3", "1Gi")
        .with_node_selector(NODE_POOL_LABEL, ns.node_pool())
        .scheduled_by(ns.scheduler_name())
        .build();
    pods.create(&PostParams::default(), &filler).await.unwrap();
    ns.wait_for_pod_bound("filler", Duration::from_secs(60))
        .await
        .unwrap();
    // Green from 120 s to 240 s from now (room for a slow controller start
    // when the suite runs in parallel).
    publish_snapshot(&ns, &[("DE", dip(400.0, 50.0, 12, 12))]).await;
    let mut s = settings(&ns);
    s.reconcile.deferral.capacity_headroom = 1.0;
    let one_cpu = |name: &str, max_delay: &str, duration: &str| {
        let mut p = gated_pod(
            &ns,
            name,
            &[
                (keys::ANNOTATION_MAX_DELAY, max_delay),
                (keys::ANNOTATION_EXPECTED_DURATION, duration),
            ],
        );
        let spec = p.spec.as_mut().unwrap();
        spec.scheduler_name = Some(ns.scheduler_name().to_owned());
        spec.containers[0].resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_owned(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".to_owned()),
            )])),
            ..Default::default()
        });
        p
    };
    // The deferred crowd first (long runs, deadlines far away), then the
    // urgent pod: creation order must not decide who gets the room.
    for i in 0..6 {
        let p = one_cpu(&format!("deferred-{i}"), "30m", "20m");
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let urgent = pods
        .create(&PostParams::default(), &one_cpu("urgent", "300s", "30s"))
        .await
        .unwrap();
    let latest_start = urgent.metadata.creation_timestamp.unwrap().0.as_second() + 300 - 30;
    let controller = start_controller(cp, s).await;

    // Every pod gets a plan; the urgent one holds the window.
    let planned = wait_until("every pod planned", Duration::from_secs(120), || async {
        match pods.list(&ListParams::default()).await {
            Ok(l) => {
                let gated: Vec<Pod> = l
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.name.as_deref() != Some("filler"))
                    .collect();
                if gated.len() == 7
                    && gated
                        .iter()
                        .all(|p| annotation(p, ANNOTATION_RELEASE_PLAN).is_some())
                {
                    Progress::Done(gated)
                } else {
                    Progress::Waiting(format!(
                        "without a plan: {:?}",
                        gated
                            .iter()
                            .filter(|p| annotation(p, ANNOTATION_RELEASE_PLAN).is_none())
                            .map(|p| (
                                p.metadata.name.clone().unwrap_or_default(),
                                annotation(p, keys::ANNOTATION_RELEASE_REASON)
                            ))
                            .collect::<Vec<_>>()
                    ))
                }
            }
            Err(e) => Progress::Waiting(e.to_string()),
        }
    })
    .await
    .unwrap();
    let plan_of = |p: &Pod| -> serde_json::Value {
        serde_json::from_str(&annotation(p, ANNOTATION_RELEASE_PLAN).unwrap()).unwrap()
    };
    let urgent_plan = planned
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("urgent"))
        .map(plan_of)
        .unwrap();
    assert_eq!(urgent_plan["reason"], "green_window", "{urgent_plan}");
    let urgent_start = urgent_plan["releaseAt"].as_i64().unwrap();
    let mut reasons = BTreeMap::<String, usize>::new();
    for p in planned
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some("urgent"))
    {
        let plan = plan_of(p);
        let reason = plan["reason"].as_str().unwrap().to_owned();
        // The only free CPU is the urgent pod's from its window for 30 s: no
        // deferred pod's 20-minute run may be planned to overlap it.
        if reason == "green_window" || reason == "wait_for_room" {
            assert!(
                plan["releaseAt"].as_i64().unwrap() >= urgent_start + 30,
                "{} planned into the urgent pod's room: {plan}",
                p.metadata.name.as_deref().unwrap_or_default()
            );
        }
        *reasons.entry(reason).or_default() += 1;
    }
    assert!(
        reasons.get("no_room").copied().unwrap_or(0) >= 4,
        "the crowd waits for room it does not have: {reasons:?}"
    );

    // The urgent pod is released in its window and bound before its latest start.
    ns.wait_for_pod_bound("urgent", Duration::from_secs(300))
        .await
        .unwrap();
    let bound = pods.get("urgent").await.unwrap();
    let scheduled_at = scheduled_at(&bound);
    assert!(
        scheduled_at <= latest_start,
        "bound at {scheduled_at}, after its latest start {latest_start}"
    );
    // Nothing else took the free CPU first.
    for i in 0..6 {
        let p = pods.get(&format!("deferred-{i}")).await.unwrap();
        assert!(
            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none(),
            "deferred-{i} was bound before the urgent pod's run ended"
        );
    }
    wait_event(&ns, "deferred-5", "Deferred").await;
    controller.stop().await;
}
/// Issue 14, the cluster side: a released pod goes to a node where the
/// ledger has room for its run, not into room promised to another plan. One
/// zone, a 4-CPU and a 2-CPU node. A 4-CPU pod is planned into a green window
/// (it fits only on the big node); then a 1-CPU pod with a 5-minute run and no
/// slack is released at once. kube-scheduler alone would put it on the
/// emptier big node (where it would still run in the window, so the 4-CPU
/// pod would find no room); the controller prefers the small node, the only
/// one with room for the whole run, and the 4-CPU pod is bound on the big
/// node in its window, before its latest start.
#[tokio::test]
async fn a_released_pod_prefers_a_node_with_room_and_keeps_promised_room_free() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-room").await.unwrap();
    let big = ns
        .create_nodes(
            &nodes_in_zone("eu-central", "de-a")
                .named("big")
                .with_label(keys::LABEL_GRID_ZONE, "DE")
                .with_cpu("4"),
        )
        .await
        .unwrap();
    let small = ns
        .create_nodes(
            &nodes_in_zone("eu-central", "de-a")
                .named("small")
                .with_label(keys::LABEL_GRID_ZONE, "DE")
                .with_cpu("2"),
        )
        .await
        .unwrap();
    let (big, small) = (
        big[0].metadata.name.clone().unwrap(),
        small[0].metadata.name.clone().unwrap(),
    );
    let _scheduler = cp.start_scheduler(ns.scheduler_config()).await.unwrap();
    // Green from 120 s to 240 s from now.
    publish_snapshot(&ns, &[("DE", dip(400.0, 50.0, 12, 12))]).await;
    let mut s = settings(&ns);
    s.reconcile.deferral.capacity_headroom = 1.0;
    let with_cpu = |name: &str, cpu: &str, max_delay: &str, duration: &str| {
        let mut p = gated_pod(
            &ns,
            name,
            &[
                (keys::ANNOTATION_MAX_DELAY, max_delay),
                (keys::ANNOTATION_EXPECTED_DURATION, duration),
            ],
        );
        let spec = p.spec.as_mut().unwrap();
        spec.scheduler_name = Some(ns.scheduler_name().to_owned());
        spec.containers[0].resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_owned(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.to_owned()),
            )])),
            ..Default::default()
        });
        p
    };
    let pods = ns.api::<Pod>();
    let wide = pods
        .create(
            &PostParams::default(),
            &with_cpu("wide", "4", "600s", "60s"),
        )
        .await
        .unwrap();
    let wide_latest = wide.metadata.creation_timestamp.unwrap().0.as_second() + 600 - 60;
    let controller = start_controller(cp, s).await;
    let planned = wait_for(&pods, "wide", Duration::from_secs(60), |p| {
        annotation(p, ANNOTATION_RELEASE_PLAN).is_some()
    })
    .await
    .unwrap();
    let plan: serde_json::Value =
        serde_json::from_str(&annotation(&planned, ANNOTATION_RELEASE_PLAN).unwrap()).unwrap();
    assert_eq!(plan["reason"], "green_window", "{plan}");

    // No slack: released at once, and steered to the small node.
    pods.create(
        &PostParams::default(),
        &with_cpu("short", "1", "330s", "300s"),
    )
    .await
    .unwrap();
    let short = wait_released(&ns, "short", Duration::from_secs(60)).await;
    let preferred: Vec<(i32, String)> = short
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| {
            let f = t.preference.match_fields?.into_iter().next()?;
            Some((t.weight, f.values?.into_iter().next()?))
        })
        .collect();
    assert_eq!(preferred, [(100, small.clone())], "{short:?}");
    let event = wait_event(&ns, "short", "Released").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains(&format!(
            "preferring the node with room for its run: {small}"
        )),
        "{note}"
    );
    ns.wait_for_pod_bound("short", Duration::from_secs(60))
        .await
        .unwrap();
    let short = pods.get("short").await.unwrap();
    assert_eq!(
        short.spec.as_ref().and_then(|s| s.node_name.clone()),
        Some(small.clone())
    );

    // The 4-CPU pod finds its room on the big node in its window.
    ns.wait_for_pod_bound("wide", Duration::from_secs(400))
        .await
        .unwrap();
    let wide = pods.get("wide").await.unwrap();
    assert_eq!(
        wide.spec.as_ref().and_then(|s| s.node_name.clone()),
        Some(big.clone())
    );
    let scheduled_at = scheduled_at(&wide);
    assert!(
        scheduled_at <= wide_latest,
        "bound at {scheduled_at}, after its latest start {wide_latest}"
    );
    controller.stop().await;
}

// ---------------------------------------------------------------------------
// Runtime overrides

#[tokio::test]
async fn a_runtime_override_applies_until_its_valid_until_and_then_the_flags_do() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("gates-overrides").await.unwrap();
    ns.create_nodes(
        &nodes_in_zone("eu-central", "de-a")
            .named("de")
            .with_label(keys::LABEL_GRID_ZONE, "DE")
            .count(1),
    )
    .await
    .unwrap();
    // Waiting a minute halves the intensity: with the flags (minimum saving
    // 3 %) a pod is held for the window.
    publish_snapshot(&ns, &[("DE", dip(400.0, 200.0, 6, 30))]).await;
    let time = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();
    let overrides = |min_saving: &str, valid_until: String| ConfigMap {
        metadata: ObjectMeta {
            name: Some(keys::CONFIG_CONFIGMAP.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            (
                "deferral.minSavingFraction".to_owned(),
                min_saving.to_owned(),
            ),
            ("validUntil".to_owned(), valid_until),
        ])),
        ..ConfigMap::default()
    };
    // The override asks for a 90 % saving, valid for an hour: nothing is
    // worth holding, the pod is released at once.
    let cms = ns.api::<ConfigMap>();
    cms.create(
        &PostParams::default(),
        &overrides("0.9", time(now() + 3600)),
    )
    .await
    .unwrap();
    let controller = start_controller(cp, settings(&ns)).await;
    let pods = ns.api::<Pod>();
    let annotations = [
        (keys::ANNOTATION_MAX_DELAY, "20m"),
        (keys::ANNOTATION_EXPECTED_DURATION, "1m"),
    ];
    pods.create(
        &PostParams::default(),
        &gated_pod(&ns, "overridden", &annotations),
    )
    .await
    .unwrap();
    let p = wait_released(&ns, "overridden", Duration::from_secs(30)).await;
    assert_eq!(
        annotation(&p, keys::ANNOTATION_RELEASE_REASON).as_deref(),
        Some("now_is_best"),
        "{:?}",
        p.metadata.annotations
    );
    // The same override, expired: the flags apply again and the next pod
    // waits for the window.
    cms.replace(
        keys::CONFIG_CONFIGMAP,
        &PostParams::default(),
        &overrides("0.9", time(now() - 1)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pods.create(
        &PostParams::default(),
        &gated_pod(&ns, "flags", &annotations),
    )
    .await
    .unwrap();
    wait_event(&ns, "flags", "Deferred").await;
    let p = pods.get("flags").await.unwrap();
    assert!(has_gate(&p), "held for the window with the flags");
    controller.stop().await;
}

// ---------------------------------------------------------------------------
// Namespace budgets

/// Publishes the accounting controller's usage document: `grams` used today
/// per namespace, written `age` seconds ago.
async fn publish_usage(ns: &TestNamespace, grams: &[(&str, f64)], age: i64) {
    use carbon_kube_model::accounting::{ACCOUNTING_CONFIGMAP, DayUsage, USAGE_KEY, UsageDocument};
    let t = now() - age;
    let doc = UsageDocument {
        generated_at: t,
        namespaces: grams
            .iter()
            .map(|(n, g)| {
                let day = DayUsage {
                    day_start: t.div_euclid(86_400) * 86_400,
                    operational_grams: *g,
                    ..DayUsage::default()
                };
                ((*n).to_owned(), vec![day])
            })
            .collect(),
    };
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ACCOUNTING_CONFIGMAP},
        "data": {USAGE_KEY: serde_json::to_string(&doc).unwrap()}
    });
    ns.api::<ConfigMap>()
        .patch(
            ACCOUNTING_CONFIGMAP,
            &PatchParams::apply("budget-test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

async fn set_budget(ns: &TestNamespace, grams: &str) {
    use carbon_kube_model::accounting::{ANNOTATION_BUDGET_GRAMS, ANNOTATION_BUDGET_PERIOD};
    Api::<Namespace>::all(ns.client())
        .patch(
            ns.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                ANNOTATION_BUDGET_GRAMS: grams, ANNOTATION_BUDGET_PERIOD: "day"}}})),
        )
        .await
        .unwrap();
}

async fn wait_metric(controller: &RunningController, line: &str) {
    wait_until(
        format!("metric {line}"),
        Duration::from_secs(30),
        || async {
            let text = controller.metrics();
            if text.contains(line) {
                Progress::Done(())
            } else {
                Progress::Waiting(
                    text.lines()
                        .filter(|l| l.starts_with("carbon_kube_budget_state"))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            }
        },
    )
    .await
    .unwrap();
}

/// Issue 17: two namespaces, one over its daily carbon budget and one well
/// under it, the same forecast (a window 5 % greener in 90 s: less than the
/// 10 % minimum saving). The under-budget namespace's pod is released at
/// once; the over-budget namespace's pod waits for the greener window
/// (reason `budget`, a `DeferredForBudget` Event with the namespace's
/// figures); its pods with short deadlines are still released by their
/// latest start; and once the usage data goes stale, the budget has no
/// effect (fail open).
#[tokio::test]
async fn an_over_budget_namespace_waits_for_greener_windows_but_never_past_a_deadline() {
    use carbon_kube_gates::budgets::BudgetSettings;
    use carbon_kube_model::accounting::ACCOUNTING_CONFIGMAP;
    use carbon_kube_policy::budget::BudgetConfig;
    ensure_crypto_provider();
    let cp = shared().await;
    let over = cp.test_namespace("budget-over").await.unwrap();
    let under = cp.test_namespace("budget-under").await.unwrap();
    for ns in [&over, &under] {
        ns.create_nodes(
            &nodes_in_zone("eu-central", "de-a")
                .with_label(keys::LABEL_GRID_ZONE, "DE")
                .static_ready(),
        )
        .await
        .unwrap();
    }
    // 300 g/kWh falling by 1 per slot for 90 s, 285 for the next minute, 300 after.
    let forecast: Vec<f64> = (0..72)
        .map(|i| match i {
            0..9 => 300.0 - i as f64,
            9..15 => 285.0,
            _ => 300.0,
        })
        .collect();
    publish_snapshot(&over, &[("DE", forecast)]).await;
    set_budget(&over, "100").await;
    set_budget(&under, "1000000").await;
    publish_usage(&over, &[(over.name(), 500.0), (under.name(), 1.0)], 0).await;
    let budgets = BudgetSettings {
        usage_namespace: over.name().to_owned(),
        usage_configmap: ACCOUNTING_CONFIGMAP.to_owned(),
        config: BudgetConfig::default(),
    };
    // One controller per namespace (each watches only its own), both
    // reading the snapshot and the usage from `over`.
    let mut s = settings(&over);
    s.budgets = Some(budgets.clone());
    let c_over = start_controller(cp, s).await;
    let mut s = settings(&under);
    s.snapshot_namespace = over.name().to_owned();
    s.budgets = Some(budgets);
    let c_under = start_controller(cp, s).await;
    wait_metric(
        &c_over,
        &format!(
            "carbon_kube_budget_state{{budget_namespace=\"{}\"}} 2",
            over.name()
        ),
    )
    .await;
    wait_metric(
        &c_under,
        &format!(
            "carbon_kube_budget_state{{budget_namespace=\"{}\"}} 0",
            under.name()
        ),
    )
    .await;

    let patient = [
        (keys::ANNOTATION_MAX_DELAY, "10m"),
        (keys::ANNOTATION_EXPECTED_DURATION, "30s"),
    ];
    let mut created = BTreeMap::new();
    for (ns, name, annotations) in [
        (&under, "thrifty", &patient[..]),
        (&over, "thrifty", &patient[..]),
        (
            &over,
            "urgent",
            &[
                (keys::ANNOTATION_MAX_DELAY, "60s"),
                (keys::ANNOTATION_EXPECTED_DURATION, "20s"),
            ][..],
        ),
        (
            &over,
            "too-late",
            &[
                (keys::ANNOTATION_MAX_DELAY, "30s"),
                (keys::ANNOTATION_EXPECTED_DURATION, "20s"),
            ][..],
        ),
    ] {
        let c = ns
            .api::<Pod>()
            .create(&PostParams::default(), &gated_pod(ns, name, annotations))
            .await
            .unwrap();
        created.insert(
            (ns.name().to_owned(), name),
            c.metadata.creation_timestamp.unwrap().0.as_second(),
        );
    }

    // Under budget: 5 % is not worth holding a pod for; released at once.
    let out = wait_released(&under, "thrifty", Duration::from_secs(30)).await;
    assert_eq!(
        annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
        Some("now_is_best")
    );

    // Over budget: planned into the greener window, for the budget, and said so.
    let planned = wait_for(
        &over.api::<Pod>(),
        "thrifty",
        Duration::from_secs(30),
        |p| annotation(p, keys::ANNOTATION_PLANNED_RELEASE).is_some(),
    )
    .await
    .unwrap();
    let plan: serde_json::Value =
        serde_json::from_str(&annotation(&planned, ANNOTATION_RELEASE_PLAN).unwrap()).unwrap();
    assert_eq!(plan["reason"], "budget", "{plan}");
    assert_eq!(plan["expectedGPerKwh"], 285.0, "{plan}");
    let planned_at =
        parse_time(&annotation(&planned, keys::ANNOTATION_PLANNED_RELEASE).unwrap()).unwrap();
    assert!(
        planned_at > created[&(over.name().to_owned(), "thrifty")],
        "planned for later: {plan}"
    );
    let event = wait_event(&over, "thrifty", "DeferredForBudget").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("for the namespace's carbon budget")
            && note.contains(&format!(
                "namespace {} has used 500 g of its 100 g day budget",
                over.name()
            ))
            && note.contains("exhausted"),
        "{note}"
    );

    // Short deadlines in the over-budget namespace: by the latest start.
    for (name, max_delay, duration) in [("urgent", 60, 20), ("too-late", 30, 20)] {
        let out = wait_released(&over, name, Duration::from_secs(60)).await;
        let released_at = ms(&annotation(&out, ANNOTATION_RELEASED_AT).unwrap());
        let latest_start = created[&(over.name().to_owned(), name)] + max_delay - duration;
        assert!(
            released_at <= latest_start * 1000,
            "{name} released after its latest start: {released_at} > {latest_start}000"
        );
    }
    let out = wait_released(&over, "too-late", Duration::from_secs(1)).await;
    assert_eq!(
        annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
        Some("deadline")
    );

    // The patient pod goes in its window, not before, with the reason.
    let out = wait_released(&over, "thrifty", Duration::from_secs(150)).await;
    let released_at = ms(&annotation(&out, ANNOTATION_RELEASED_AT).unwrap());
    assert!(
        released_at >= planned_at * 1000,
        "released before its window"
    );
    assert_eq!(
        annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
        Some("budget")
    );
    let text = c_over.metrics();
    for line in [
        format!(
            "carbon_kube_budget_used_grams{{budget_namespace=\"{}\"}} 500.0",
            over.name()
        ),
        format!(
            "carbon_kube_budget_grams{{budget_namespace=\"{}\"}} 100.0",
            over.name()
        ),
        format!(
            "carbon_kube_budget_exhaustion_seconds{{budget_namespace=\"{}\"}} 0.0",
            over.name()
        ),
        "carbon_kube_gate_releases_total{reason=\"budget\"}".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }

    // Stale usage: the budget no longer applies; a new pod is released at once.
    publish_usage(&over, &[(over.name(), 500.0)], 3 * 3600).await;
    wait_metric(
        &c_over,
        &format!(
            "carbon_kube_budget_state{{budget_namespace=\"{}\"}} -1",
            over.name()
        ),
    )
    .await;
    over.api::<Pod>()
        .create(
            &PostParams::default(),
            &gated_pod(&over, "after-stale", &patient),
        )
        .await
        .unwrap();
    let out = wait_released(&over, "after-stale", Duration::from_secs(30)).await;
    assert_ne!(
        annotation(&out, keys::ANNOTATION_RELEASE_REASON).as_deref(),
        Some("budget")
    );
    c_over.stop().await;
    c_under.stop().await;
}
