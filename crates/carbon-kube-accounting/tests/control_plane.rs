//! The accounting controller against a real control plane (kube-apiserver,
//! kube-controller-manager, kwok) from `carbon-kube-testkit`: real nodes in
//! two grid zones, a Deployment and bare pods, a published snapshot, and a
//! stored history (the ConfigMap a previous leader wrote). The controller's
//! counters and the ConfigMap it writes are checked, and the report is built
//! from that ConfigMap.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use carbon_kube_accounting::controller::{
    AccountingSettings, KeplerSettings, documents_from_configmap, run_accounting,
};
use carbon_kube_accounting::kepler::DEFAULT_QUERY;
use carbon_kube_accounting::metrics::AccountingMetrics;
use carbon_kube_accounting::report::{Format, Period, build_report};
use carbon_kube_accounting::system_clock;
use carbon_kube_accounting::view::PlacedBy;
use carbon_kube_k8s::Readiness;
use carbon_kube_model::accounting::{ACCOUNTING_CONFIGMAP, DataQuality};
use carbon_kube_model::accounting_details::{DETAILS_KEY, DetailsDocument, HourIntensity};
use carbon_kube_model::{CarbonIntensity, Forecast, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_testkit::{
    NODE_POOL_LABEL, Progress, TestNamespace, ensure_crypto_provider, nodes_in_zone, pod_named,
    shared, wait_until,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::oneshot;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const WAIT: Duration = Duration::from_secs(90);
const DE: f64 = 400.0;
const FR: f64 = 50.0;
/// DE's intensity an hour before the test, in the stored history.
const DE_BEFORE: f64 = 900.0;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn record(g: f64) -> ZoneRecord {
    let t = now();
    let mut r = ZoneRecord::new(
        CarbonIntensity::new(g).unwrap(),
        t,
        Source::new(Source::ELECTRICITY_MAPS),
    );
    r.forecast = Some(Forecast {
        start: t.div_euclid(3600) * 3600 - 3600,
        step_seconds: 3600,
        values: vec![CarbonIntensity::new(g).unwrap(); 72],
    });
    r
}

async fn apply(ns: &TestNamespace, name: &str, data: BTreeMap<String, String>) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    ns.api::<ConfigMap>()
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

/// A Prometheus stand-in answering Kepler's counter for one pod, 100 J more
/// at every query.
struct KeplerCounter {
    namespace: String,
    pod: &'static str,
    calls: std::sync::atomic::AtomicU64,
}

impl Respond for KeplerCounter {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ResponseTemplate::new(200).set_body_json(json!({
            "status": "success",
            "data": {"resultType": "vector", "result": [{
                "metric": {"pod_namespace": self.namespace, "pod_name": self.pod},
                "value": [0, (100 * (n + 1)).to_string()]
            }]}
        }))
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

/// Sum of the samples of `name` whose labels contain every `k="v"` of `labels`.
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One control plane for the binary: a Deployment on a DE node, a deferred
/// bare pod on the DE node and a carbon-placed bare pod on the FR node are
/// accounted every second; the counters and the ConfigMap carry the
/// operational/idle/embodied split at each zone's intensity, the
/// counterfactuals, and the report reads them back.
#[tokio::test]
async fn the_controller_accounts_real_pods_into_counters_and_the_configmap() {
    ensure_crypto_provider();
    let cp = shared().await;
    let ns = cp.test_namespace("accounting").await.unwrap();
    let mut node_names = BTreeMap::new();
    for (region, zone, grid) in [("eu-central", "de-a", "DE"), ("eu-west", "fr-a", "FR")] {
        let nodes = ns
            .create_nodes(
                &nodes_in_zone(region, zone)
                    .named(grid.to_ascii_lowercase())
                    .with_label(keys::LABEL_GRID_ZONE, grid)
                    .with_cpu("8")
                    .with_memory("32Gi"),
            )
            .await
            .unwrap();
        node_names.insert(grid, nodes[0].metadata.name.clone().unwrap());
    }
    let mut snapshot = Snapshot::default();
    snapshot
        .zones
        .insert(ZoneId::parse("DE").unwrap(), record(DE));
    snapshot
        .zones
        .insert(ZoneId::parse("FR").unwrap(), record(FR));
    apply(
        &ns,
        keys::SNAPSHOT_CONFIGMAP,
        BTreeMap::from([(keys::SNAPSHOT_KEY.to_owned(), snapshot.to_json())]),
    )
    .await;
    // What a previous leader stored: DE at 900 g/kWh over the past six hours.
    let hour = now().div_euclid(3600) * 3600;
    let mut details = DetailsDocument::default();
    details.zone_history.insert(
        "DE".into(),
        (1..=6)
            .rev()
            .map(|h| HourIntensity {
                hour_start: hour - h * 3600,
                g_per_kwh_seconds: DE_BEFORE * 3600.0,
                seconds: 3600.0,
            })
            .collect(),
    );
    apply(
        &ns,
        ACCOUNTING_CONFIGMAP,
        BTreeMap::from([(
            DETAILS_KEY.to_owned(),
            serde_json::to_string(&details).unwrap(),
        )]),
    )
    .await;

    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeName": node_names["DE"],
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]
                }
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    // Deferred by an hour: the gate controller's released-at annotation.
    let created_plus_hour = jiff::Timestamp::from_second(now() + 3600)
        .unwrap()
        .to_string();
    ns.create_pod(
        &pod_named("batch")
            .requesting("2", "1Gi")
            .bound_to(&node_names["DE"])
            .with_annotation(keys::ANNOTATION_RELEASED_AT, created_plus_hour)
            .build(),
    )
    .await
    .unwrap();
    ns.create_pod(
        &pod_named("green")
            .requesting("2", "1Gi")
            .bound_to(&node_names["FR"])
            .scheduled_by(keys::SCHEDULER_NAME)
            .build(),
    )
    .await
    .unwrap();
    for p in ["batch", "green"] {
        ns.wait_for_pod_running(p, WAIT).await.unwrap();
    }

    // Kepler (through a Prometheus stand-in) measures the deferred pod only.
    let prometheus = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/query"))
        .respond_with(KeplerCounter {
            namespace: ns.name().to_owned(),
            pod: "batch",
            calls: std::sync::atomic::AtomicU64::new(0),
        })
        .mount(&prometheus)
        .await;
    let settings = AccountingSettings {
        // No metrics-server in the test cluster: the failed list leaves
        // every pod on its requests, and accounting goes on.
        cpu_usage_from_metrics_api: true,
        kepler: Some(KeplerSettings {
            url: url::Url::parse(&format!("{}/", prometheus.uri())).unwrap(),
            query: DEFAULT_QUERY.to_owned(),
            timeout: Duration::from_secs(10),
        }),
        namespace: ns.name().to_owned(),
        pod_namespace: Some(ns.name().to_owned()),
        tick: Duration::from_secs(1),
        publish_interval: Duration::from_secs(1),
        placed_by: PlacedBy::SchedulerNames(vec![keys::SCHEDULER_NAME.to_owned()]),
        ..AccountingSettings::default()
    };
    let mut registry = Registry::default();
    let metrics = AccountingMetrics::register(&mut registry, 100);
    let registry = Arc::new(registry);
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_accounting(
        cp.client().await.unwrap(),
        settings,
        metrics,
        Readiness::default(),
        system_clock(),
        async {
            let _ = rx.await;
        },
    ));

    // Every pod accounted for a few ticks, and the ConfigMap written since.
    let ns_name = ns.name().to_owned();
    let text = wait_until("4 pods accounted over 3 ticks", WAIT, || async {
        let text = encode(&registry);
        let pods = sum(&text, "carbon_kube_accounting_pods", &[]);
        let web = sum(
            &text,
            "carbon_kube_accounting_energy_joules_total",
            &[("workload", "web"), ("scope", "operational")],
        );
        let measured = sum(
            &text,
            "carbon_kube_accounting_energy_joules_total",
            &[("workload", "batch"), ("quality", "measured")],
        );
        if pods >= 4.0
            && sum(&text, "carbon_kube_accounting_ticks_total", &[]) >= 3.0
            && web > 0.0
            && measured > 0.0
        {
            Progress::Done(text)
        } else {
            Progress::Waiting(format!("pods {pods}, web joules {web}"))
        }
    })
    .await
    .unwrap();

    // Kepler's 100 J per tick for the measured pod, times the PUE; the
    // others modelled.
    let measured = sum(
        &text,
        "carbon_kube_accounting_energy_joules_total",
        &[
            ("workload", "batch"),
            ("scope", "operational"),
            ("quality", "measured"),
        ],
    );
    let ticks = sum(&text, "carbon_kube_accounting_ticks_total", &[]);
    let k = measured / (100.0 * 1.135);
    assert!(
        k >= 1.0 && k <= ticks && (k - k.round()).abs() < 1e-6,
        "{measured} J is not whole ticks of 100 J x PUE over {ticks} ticks: {text}"
    );
    assert_eq!(
        sum(
            &text,
            "carbon_kube_accounting_energy_joules_total",
            &[("workload", "green"), ("quality", "measured")],
        ),
        0.0
    );
    assert!(
        sum(
            &text,
            "carbon_kube_accounting_kepler_queries_total",
            &[("outcome", "ok")]
        ) >= 3.0
    );

    // Operational grams per joule are each zone's intensity.
    let per_kwh = |workload: &str| {
        let l = [
            ("namespace", ns_name.as_str()),
            ("workload", workload),
            ("scope", "operational"),
        ];
        sum(&text, "carbon_kube_accounting_emissions_grams_total", &l)
            / sum(&text, "carbon_kube_accounting_energy_joules_total", &l)
            * 3.6e6
    };
    assert!((per_kwh("web") - DE).abs() < 1e-6, "{text}");
    assert!((per_kwh("green") - FR).abs() < 1e-6, "{text}");
    // The Deployment is one workload; bare pods are their own.
    for (kind, name) in [("Deployment", "web"), ("Pod", "batch"), ("Pod", "green")] {
        for scope in ["operational", "idle", "embodied"] {
            // Only the pod's own energy can be measured, and only Kepler's pod is.
            let quality = if name == "batch" && scope == "operational" {
                "measured"
            } else {
                "modelled"
            };
            let g = sum(
                &text,
                "carbon_kube_accounting_emissions_grams_total",
                &[
                    ("namespace", ns_name.as_str()),
                    ("workload_kind", kind),
                    ("workload", name),
                    ("scope", scope),
                    ("quality", quality),
                    ("signal", "average"),
                ],
            );
            assert!(g > 0.0, "{kind}/{name} {scope}: {text}");
        }
    }
    // Counterfactuals: the deferred pod against DE an hour earlier (900),
    // the placed pod against the capacity-weighted mean of the two zones.
    let cf = |kind: &str, name: &str| {
        sum(
            &text,
            name,
            &[("namespace", ns_name.as_str()), ("kind", kind)],
        )
    };
    let deferred = cf(
        "deferred",
        "carbon_kube_accounting_counterfactual_grams_total",
    ) / cf(
        "deferred",
        "carbon_kube_accounting_counterfactual_actual_grams_total",
    );
    assert!(
        deferred > 1.5 && deferred <= DE_BEFORE / DE + 1e-9,
        "{deferred}: {text}"
    );
    let placed = cf(
        "placed",
        "carbon_kube_accounting_counterfactual_grams_total",
    ) / cf(
        "placed",
        "carbon_kube_accounting_counterfactual_actual_grams_total",
    );
    assert!(
        ((placed - (DE + FR) / 2.0 / FR) / placed).abs() < 1e-6,
        "{placed}: {text}"
    );

    // The ConfigMap: the usage document budgets read, and the details.
    let (usage, details) = wait_until(
        "the ConfigMap with this namespace's usage",
        WAIT,
        || async {
            let cm = ns
                .api::<ConfigMap>()
                .get(ACCOUNTING_CONFIGMAP)
                .await
                .unwrap();
            let (u, d) = documents_from_configmap(&cm).unwrap();
            match u.namespaces.get(&ns_name) {
                Some(days) if days.iter().any(|d| d.operational_grams > 0.0) => {
                    Progress::Done((u, d))
                }
                _ => Progress::Waiting("no usage yet".into()),
            }
        },
    )
    .await
    .unwrap();
    let days = &usage.namespaces[&ns_name];
    let today = days.last().unwrap();
    assert_eq!(today.quality, DataQuality::Modelled);
    assert!(
        today.idle_grams > 0.0 && today.embodied_grams > 0.0,
        "{today:?}"
    );
    assert!(today.energy_joules > 0.0);
    assert!(details.zone_history.contains_key("FR"), "history recorded");
    assert!(
        details.zone_history["DE"].len() >= 6,
        "the stored history was kept: {:?}",
        details.zone_history["DE"]
    );
    let report = build_report(
        &usage,
        &details,
        std::slice::from_ref(&ns_name),
        &Period::All,
        now(),
    );
    let row = &report.namespaces[0];
    assert!(
        row.deferred_saved_grams > 0.0 && row.placed_saved_grams > 0.0,
        "{row:?}"
    );
    assert!(report.render(Format::Csv).contains(&ns_name));

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let _ = NODE_POOL_LABEL; // the pool label is set by create_nodes
}
