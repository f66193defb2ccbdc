//! The score publisher and the Karmada adapter against a real kube-apiserver
//! with the real CustomResourceDefinitions of Open Cluster Management
//! (`AddOnPlacementScore`, `Placement`, from Go module
//! `open-cluster-management.io/api`) and Karmada (`PropagationPolicy`, from
//! `github.com/karmada-io/karmada`), fetched by `hack/install-test-tools.sh`.
//! One control plane for the whole binary; each test works in its own
//! namespaces and node pool.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::time::Duration;

use carbon_kube_k8s::Readiness;
use carbon_kube_k8s::leader::LeaderSettings;
use carbon_kube_model::{CarbonIntensity, Snapshot, Source, ZoneId, ZoneRecord, keys};
use carbon_kube_multicluster::karmada::{self, KarmadaSettings};
use carbon_kube_multicluster::metrics::ReasonLabels;
use carbon_kube_multicluster::metrics::{KarmadaMetrics, PublisherMetrics};
use carbon_kube_multicluster::ocm;
use carbon_kube_multicluster::publisher::{self, PublisherSettings, publish_once};
use carbon_kube_policy::cluster_score::{ClusterScoreConfig, Hysteresis, PublishReason, Reference};
use carbon_kube_policy::zone_map::RegionZoneMap;
use carbon_kube_testkit::{
    Binaries, NODE_POOL_LABEL, Progress, TestNamespace, nodes_in_zone, shared, wait_until,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The CRD files this test needs, as hack/install-test-tools.sh names them.
const CRD_FILES: [&str; 4] = [
    "0000_05_clusters.open-cluster-management.io_addonplacementscores.crd.yaml",
    "0000_02_clusters.open-cluster-management.io_placements.crd.yaml",
    "policy.karmada.io_propagationpolicies.yaml",
    "policy.karmada.io_clusterpropagationpolicies.yaml",
];

fn crd_dir() -> PathBuf {
    Binaries::default_dir().join("../crds")
}

/// Installs the three CRDs once per test binary and waits until they are served.
async fn install_crds(client: &kube::Client) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for file in CRD_FILES {
            let path = crd_dir().join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run `make k8s-bin` (hack/install-test-tools.sh)",
                    path.display()
                )
            });
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
            for doc in docs.into_iter().filter(|d| d.get("kind").is_some()) {
                let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
                let name = crd.metadata.name.clone().unwrap();
                match api.create(&PostParams::default(), &crd).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => panic!("creating CRD {name}: {e}"),
                }
                wait_until(
                    format!("CRD {name} established"),
                    Duration::from_secs(30),
                    || {
                        let api = api.clone();
                        let name = name.clone();
                        async move {
                            let crd = api.get(&name).await;
                            let established = crd
                                .as_ref()
                                .ok()
                                .and_then(|c| c.status.as_ref())
                                .is_some_and(|s| {
                                    s.conditions
                                        .as_deref()
                                        .unwrap_or_default()
                                        .iter()
                                        .any(|c| c.type_ == "Established" && c.status == "True")
                                });
                            if established {
                                Progress::Done(())
                            } else {
                                Progress::Waiting(format!("{crd:?}"))
                            }
                        }
                    },
                )
                .await
                .unwrap();
            }
        }
        // Established is not yet served by every handler: wait for a list.
        for ar in [
            ocm::api_resource(),
            karmada::api_resource(),
            karmada::cluster_api_resource(),
        ] {
            wait_until(
                format!("{} served", ar.kind),
                Duration::from_secs(30),
                || {
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                    async move {
                        match api.list(&ListParams::default().limit(1)).await {
                            Ok(_) => Progress::Done(()),
                            Err(e) => Progress::Waiting(e.to_string()),
                        }
                    }
                },
            )
            .await
            .unwrap();
        }
    })
    .await;
}

fn record(g: f64, at: i64) -> ZoneRecord {
    ZoneRecord::new(
        CarbonIntensity::new(g).unwrap(),
        at,
        Source::new(Source::ELECTRICITY_MAPS),
    )
}

/// Writes the snapshot ConfigMap (`zone → g/kWh` measured at `at`) into `ns`.
async fn put_snapshot(ns: &TestNamespace, zones: &[(&str, f64)], at: i64) {
    let mut s = Snapshot::default();
    for (z, g) in zones {
        s.zones.insert(ZoneId::parse(z).unwrap(), record(*g, at));
    }
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": keys::SNAPSHOT_CONFIGMAP},
        "data": {keys::SNAPSHOT_KEY: s.to_json()},
    });
    ns.api::<ConfigMap>()
        .patch(
            keys::SNAPSHOT_CONFIGMAP,
            &PatchParams::apply("test").force(),
            &Patch::Apply(cm),
        )
        .await
        .unwrap();
}

/// Three 8-CPU nodes in DE and one in FR, in this test's pool.
async fn de_fr_nodes(ns: &TestNamespace) {
    ns.create_nodes(
        &nodes_in_zone("eu-central-1", "eu-central-1a")
            .with_label(keys::LABEL_GRID_ZONE, "DE")
            .with_cpu("8")
            .count(3)
            .static_ready(),
    )
    .await
    .unwrap();
    ns.create_nodes(
        &nodes_in_zone("eu-west-3", "eu-west-3a")
            .with_label(keys::LABEL_GRID_ZONE, "FR")
            .with_cpu("8")
            .static_ready(),
    )
    .await
    .unwrap();
}

/// The publisher of the cluster named after `ns`, counting `ns`'s nodes,
/// every 5 minutes, current values only, reference 400 g/kWh, band 5.
fn settings(ns: &TestNamespace) -> PublisherSettings {
    PublisherSettings {
        namespace: ns.name().to_owned(),
        snapshot_configmap: keys::SNAPSHOT_CONFIGMAP.to_owned(),
        cluster_name: ns.name().to_owned(),
        resource_name: ocm::DEFAULT_RESOURCE_NAME.to_owned(),
        score_name: ocm::DEFAULT_SCORE_NAME.to_owned(),
        score: ClusterScoreConfig {
            reference: Reference::Fixed(CarbonIntensity::new(400.0).unwrap()),
            horizon_seconds: 0,
            ..ClusterScoreConfig::default()
        },
        hysteresis: Hysteresis::for_interval(300, 5),
        node_selector: Some(format!("{NODE_POOL_LABEL}={}", ns.node_pool())),
        region_zones: RegionZoneMap::default(),
        interval: Duration::from_secs(300),
        leader: None,
    }
}

async fn score_object(ns: &TestNamespace) -> DynamicObject {
    Api::<DynamicObject>::namespaced_with(ns.client(), ns.name(), &ocm::api_resource())
        .get(ocm::DEFAULT_RESOURCE_NAME)
        .await
        .unwrap()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn the_score_object_is_created_and_moves_only_beyond_the_band() {
    let cp = shared().await;
    let ns = cp.test_namespace("mc-publish").await.unwrap();
    let client = ns.client();
    install_crds(&client).await;
    de_fr_nodes(&ns).await;
    let t0 = now();
    put_snapshot(&ns, &[("DE", 300.0), ("FR", 50.0)], t0).await;
    let s = settings(&ns);
    let metrics = PublisherMetrics::default();

    // 0.75 × 300 + 0.25 × 50 = 237.5 g/kWh → 100 × 162.5 / 400 = 40.6.
    let out = publish_once(&client, &client, &s, &metrics, t0)
        .await
        .unwrap();
    assert_eq!(
        (out.publication.value, out.publication.reason),
        (41, PublishReason::First)
    );
    // The nodes are read in pages: two pages of two nodes here.
    let views = carbon_kube_multicluster::publisher::list_node_views(
        &client,
        s.node_selector.as_deref(),
        2,
    )
    .await
    .unwrap();
    assert_eq!(views.len(), 4);
    assert_eq!(
        views.iter().map(|v| v.allocatable.cpu_millis).sum::<i64>(),
        32_000
    );
    let obj = score_object(&ns).await;
    let status = ocm::status_of(&obj).unwrap();
    assert_eq!(
        status.scores,
        [ocm::ScoreItem {
            name: "carbonScore".into(),
            value: 41
        }]
    );
    assert_eq!(
        status.valid_until.as_deref(),
        Some(ocm::format_time(t0 + 600).as_str())
    );
    let cond = &status.conditions[0];
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_str()
        ),
        ("CarbonDataFresh", "True", "Scored")
    );
    assert!(
        cond.message.contains("237 g/kWh") || cond.message.contains("238 g/kWh"),
        "{}",
        cond.message
    );
    assert_eq!(metrics.published.get(), 41);

    // One interval later DE is at 310 (fresh score 39): within the band, the
    // object keeps 41 and only its validity moves on.
    put_snapshot(&ns, &[("DE", 310.0), ("FR", 50.0)], t0 + 300).await;
    let out = publish_once(&client, &client, &s, &metrics, t0 + 300)
        .await
        .unwrap();
    assert_eq!((out.score.value, out.publication.value), (39, 41));
    assert_eq!(out.publication.reason, PublishReason::Renewed);
    let status = ocm::status_of(&score_object(&ns).await).unwrap();
    assert_eq!(status.scores[0].value, 41);
    assert_eq!(
        status.valid_until.as_deref(),
        Some(ocm::format_time(t0 + 900).as_str())
    );

    // A minute later, 43: still within the band and valid long enough:
    // nothing is written.
    put_snapshot(&ns, &[("DE", 285.0), ("FR", 50.0)], t0 + 360).await;
    let rv = score_object(&ns).await.metadata.resource_version;
    let out = publish_once(&client, &client, &s, &metrics, t0 + 360)
        .await
        .unwrap();
    assert_eq!(
        (
            out.score.value,
            out.publication.value,
            out.publication.write
        ),
        (43, 41, false)
    );
    assert_eq!(
        score_object(&ns).await.metadata.resource_version,
        rv,
        "no write within the band"
    );

    // DE drops to 200 (fresh 59): beyond the band, published.
    put_snapshot(&ns, &[("DE", 200.0), ("FR", 50.0)], t0 + 600).await;
    let out = publish_once(&client, &client, &s, &metrics, t0 + 600)
        .await
        .unwrap();
    assert_eq!(out.publication.reason, PublishReason::Moved { from: 41 });
    let status = ocm::status_of(&score_object(&ns).await).unwrap();
    assert_eq!(status.scores[0].value, 59);
    assert_eq!(
        status.valid_until.as_deref(),
        Some(ocm::format_time(t0 + 1200).as_str())
    );
    // The transition time of an unchanged condition is kept.
    assert_eq!(
        status.conditions[0].last_transition_time,
        cond.last_transition_time
    );
}

#[tokio::test]
async fn a_stale_snapshot_publishes_zero() {
    let cp = shared().await;
    let ns = cp.test_namespace("mc-stale").await.unwrap();
    let client = ns.client();
    install_crds(&client).await;
    de_fr_nodes(&ns).await;
    let t0 = now();
    put_snapshot(&ns, &[("DE", 100.0), ("FR", 20.0)], t0).await;
    let s = settings(&ns);
    let metrics = PublisherMetrics::default();
    let out = publish_once(&client, &client, &s, &metrics, t0)
        .await
        .unwrap();
    assert_eq!(out.publication.value, 80);
    // An hour later the poller has stopped: the records are older than 30 min.
    let out = publish_once(&client, &client, &s, &metrics, t0 + 3600)
        .await
        .unwrap();
    assert_eq!(
        out.publication.reason,
        PublishReason::DataMissing { from: 80 }
    );
    let status = ocm::status_of(&score_object(&ns).await).unwrap();
    assert_eq!(status.scores[0].value, 0);
    let cond = &status.conditions[0];
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "NoUsableCarbonData")
    );
    assert!(cond.message.contains("stale"), "{}", cond.message);
    // The snapshot ConfigMap deleted altogether: still 0, counted.
    ns.api::<ConfigMap>()
        .delete(keys::SNAPSHOT_CONFIGMAP, &Default::default())
        .await
        .unwrap();
    let out = publish_once(&client, &client, &s, &metrics, t0 + 3700)
        .await
        .unwrap();
    assert_eq!(out.publication.value, 0);
    assert_eq!(metrics.snapshot_errors.get("missing"), 1);
}

#[tokio::test]
async fn the_documented_placement_is_accepted() {
    let cp = shared().await;
    let ns = cp.test_namespace("mc-placement").await.unwrap();
    install_crds(&ns.client()).await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/multicluster/placement.yaml"
    ))
    .unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(
            "cluster.open-cluster-management.io",
            "v1beta1",
            "Placement",
        ),
        "placements",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client(), ns.name(), &ar);
    let obj: DynamicObject = serde_json::from_value(doc).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let addon = &created.data["spec"]["prioritizerPolicy"]["configurations"][0]["scoreCoordinate"];
    assert_eq!(addon["type"], "AddOn");
    assert_eq!(addon["addOn"]["resourceName"], ocm::DEFAULT_RESOURCE_NAME);
    assert_eq!(addon["addOn"]["scoreName"], ocm::DEFAULT_SCORE_NAME);
}

/// The documented PropagationPolicy, in `ns`, named `name`, for `clusters`,
/// opted in with `annotation` (none: not opted in).
async fn create_policy(
    ns: &TestNamespace,
    name: &str,
    clusters: &[&str],
    annotation: Option<&str>,
) -> DynamicObject {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/multicluster/propagationpolicy.yaml"
    ))
    .unwrap();
    let mut doc: Value = serde_saphyr::from_str(&text).unwrap();
    doc["metadata"]["name"] = json!(name);
    doc["metadata"]["annotations"] = match annotation {
        Some(v) => json!({ keys::KARMADA_CARBON_WEIGHTS: v }),
        None => json!({}),
    };
    doc["spec"]["placement"]["clusterAffinity"]["clusterNames"] = json!(clusters);
    doc["spec"]["placement"]["replicaScheduling"]["weightPreference"]["staticWeightList"] = json!(
        clusters
            .iter()
            .map(|c| json!({"targetCluster": {"clusterNames": [c]}, "weight": 7}))
            .collect::<Vec<_>>()
    );
    let api: Api<DynamicObject> =
        Api::namespaced_with(ns.client(), ns.name(), &karmada::api_resource());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(doc).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn karmada_weights_follow_the_scores_of_opted_in_policies_only() {
    let cp = shared().await;
    let green = cp.test_namespace("mc-green").await.unwrap();
    let expired = cp.test_namespace("mc-expired").await.unwrap();
    let broken = cp.test_namespace("mc-broken").await.unwrap();
    let policies = cp.test_namespace("mc-policies").await.unwrap();
    let client = policies.client();
    install_crds(&client).await;
    let t0 = now();

    // Member "green" publishes through the publisher: +41.
    de_fr_nodes(&green).await;
    put_snapshot(&green, &[("DE", 300.0), ("FR", 50.0)], t0).await;
    publish_once(
        &client,
        &client,
        &settings(&green),
        &PublisherMetrics::default(),
        t0,
    )
    .await
    .unwrap();
    // Member "expired" published +90 that expired a minute ago.
    let scores = |ns: &TestNamespace| {
        Api::<DynamicObject>::namespaced_with(client.clone(), ns.name(), &ocm::api_resource())
    };
    let obj =
        DynamicObject::new(ocm::DEFAULT_RESOURCE_NAME, &ocm::api_resource()).within(expired.name());
    scores(&expired)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
    scores(&expired)
        .patch_status(
            ocm::DEFAULT_RESOURCE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "scores": [{"name": ocm::DEFAULT_SCORE_NAME, "value": 90}],
                "validUntil": ocm::format_time(t0 - 60),
            }})),
        )
        .await
        .unwrap();
    // Member "broken" has an object without our score.
    let obj =
        DynamicObject::new(ocm::DEFAULT_RESOURCE_NAME, &ocm::api_resource()).within(broken.name());
    scores(&broken)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
    scores(&broken)
        .patch_status(
            ocm::DEFAULT_RESOURCE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "scores": [{"name": "cpuRatio", "value": 12}],
            }})),
        )
        .await
        .unwrap();

    let members = [
        green.name(),
        expired.name(),
        broken.name(),
        "member-without-score",
    ];
    create_policy(&policies, "opted-in", &members, Some("true")).await;
    let untouched = create_policy(&policies, "not-opted-in", &members, None).await;
    let garbled = create_policy(&policies, "garbled", &members, Some("yes please")).await;

    let settings = KarmadaSettings {
        resource_name: ocm::DEFAULT_RESOURCE_NAME.into(),
        score_name: ocm::DEFAULT_SCORE_NAME.into(),
        watch_namespace: Some(policies.name().to_owned()),
        interval: Duration::from_secs(300),
    };
    let metrics = KarmadaMetrics::default();
    let outcomes = karmada::reconcile_once(&client, &settings, &metrics, t0)
        .await
        .unwrap();
    let result = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.policy.ends_with(&format!("/{name}")))
            .map(|o| o.result)
    };
    assert_eq!(result("opted-in"), Some("updated"), "{outcomes:?}");
    assert_eq!(result("garbled"), Some("skipped"), "{outcomes:?}");
    assert_eq!(result("not-opted-in"), None, "{outcomes:?}");

    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), policies.name(), &karmada::api_resource());
    let updated = api.get("opted-in").await.unwrap();
    let mut weights = karmada::current_weights(&updated);
    weights.sort();
    let mut expected: Vec<(Vec<String>, i64)> = vec![
        (vec![green.name().to_owned()], 142),
        (vec![expired.name().to_owned()], 101),
        (vec![broken.name().to_owned()], 101),
        (vec!["member-without-score".to_owned()], 101),
    ];
    expected.sort();
    assert_eq!(weights, expected);
    let rs = &updated.data["spec"]["placement"]["replicaScheduling"];
    assert_eq!(
        (
            rs["replicaSchedulingType"].as_str(),
            rs["replicaDivisionPreference"].as_str()
        ),
        (Some("Divided"), Some("Weighted"))
    );
    let reason =
        &updated.metadata.annotations.as_ref().unwrap()[keys::ANNOTATION_CARBON_WEIGHTS_REASON];
    assert!(
        reason.contains(&format!("{} +41 → 142", green.name())),
        "{reason}"
    );
    assert!(reason.contains("score expired"), "{reason}");
    assert!(reason.contains("unreadable"), "{reason}");
    // Cluster affinity untouched.
    assert_eq!(
        updated.data["spec"]["placement"]["clusterAffinity"]["clusterNames"],
        json!(members)
    );

    // The others are exactly as created.
    for before in [&untouched, &garbled] {
        let after = api
            .get(before.metadata.name.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(
            after.metadata.resource_version,
            before.metadata.resource_version
        );
        assert!(
            karmada::current_weights(&after)
                .iter()
                .all(|(_, w)| *w == 7)
        );
    }

    // A second run with the same scores writes nothing.
    let rv = updated.metadata.resource_version.clone();
    let outcomes = karmada::reconcile_once(&client, &settings, &metrics, t0 + 10)
        .await
        .unwrap();
    assert!(
        outcomes
            .iter()
            .any(|o| o.policy.ends_with("/opted-in") && o.result == "unchanged"),
        "{outcomes:?}"
    );
    assert_eq!(
        api.get("opted-in").await.unwrap().metadata.resource_version,
        rv
    );
    assert_eq!(
        metrics
            .sources
            .get_or_create(&carbon_kube_multicluster::metrics::ResultLabels { result: "ok" })
            .get(),
        2
    );

    // Without --watch-namespace, an opted-in ClusterPropagationPolicy is
    // weighed the same way.
    let cluster_policies: Api<DynamicObject> =
        Api::all_with(client.clone(), &karmada::cluster_api_resource());
    let cpp_name = format!("{}-cluster", policies.name());
    let mut cpp: Value = serde_json::to_value(&updated).unwrap();
    cpp["kind"] = json!("ClusterPropagationPolicy");
    cpp["metadata"] = json!({
        "name": cpp_name,
        "annotations": { keys::KARMADA_CARBON_WEIGHTS: "true" },
    });
    cpp["spec"]["placement"]["replicaScheduling"]["weightPreference"]["staticWeightList"] = json!([
        {"targetCluster": {"clusterNames": [green.name()]}, "weight": 1}
    ]);
    cluster_policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(cpp).unwrap(),
        )
        .await
        .unwrap();
    let everywhere = KarmadaSettings {
        watch_namespace: None,
        ..settings
    };
    let outcomes = karmada::reconcile_once(&client, &everywhere, &metrics, t0 + 20)
        .await
        .unwrap();
    let cpp_id = format!("ClusterPropagationPolicy/{cpp_name}");
    assert!(
        outcomes
            .iter()
            .any(|o| o.policy == cpp_id && o.result == "updated"),
        "{outcomes:?}"
    );
    let mut weights = karmada::current_weights(&cluster_policies.get(&cpp_name).await.unwrap());
    weights.sort();
    assert_eq!(weights, expected);
    cluster_policies
        .delete(&cpp_name, &Default::default())
        .await
        .unwrap();
}

/// `carbon-kube cluster-score publish --once` as the binary runs it: flags
/// parsed and validated, clients built from kubeconfig files (this cluster
/// and the hub), one run.
#[tokio::test]
async fn the_command_publishes_once_through_kubeconfig_files() {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: carbon_kube_multicluster::ClusterScoreCommand,
    }

    let cp = shared().await;
    let ns = cp.test_namespace("mc-command").await.unwrap();
    install_crds(&ns.client()).await;
    de_fr_nodes(&ns).await;
    put_snapshot(&ns, &[("DE", 300.0), ("FR", 50.0)], now()).await;
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let selector = format!("{NODE_POOL_LABEL}={}", ns.node_pool());
    let cli = Cli::try_parse_from([
        "carbon-kube",
        "publish",
        "--once",
        "--cluster-name",
        ns.name(),
        "--namespace",
        ns.name(),
        "--kubeconfig",
        &kubeconfig,
        "--hub-kubeconfig",
        &kubeconfig,
        "--node-selector",
        &selector,
        "--horizon",
        "0s",
        "--reference",
        "400",
    ])
    .unwrap();
    carbon_kube_multicluster::run(cli.command).await.unwrap();
    let status = ocm::status_of(&score_object(&ns).await).unwrap();
    assert_eq!(
        status.scores,
        [ocm::ScoreItem {
            name: ocm::DEFAULT_SCORE_NAME.into(),
            value: 41
        }]
    );
    assert!(status.valid_until.is_some());
}

/// A publisher replica running [`publisher::run`] with leader election.
struct Replica {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics: PublisherMetrics,
    readiness: Readiness,
}

impl Replica {
    /// Publish decisions so far, every reason.
    fn decisions(&self) -> u64 {
        [
            "first",
            "moved",
            "data_missing",
            "expired",
            "renewed",
            "held",
        ]
        .into_iter()
        .map(|reason| {
            self.metrics
                .decisions
                .get_or_create(&ReasonLabels { reason })
                .get()
        })
        .sum()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn start_replica(ns: &TestNamespace, identity: &str) -> Replica {
    let mut s = settings(ns);
    s.interval = Duration::from_secs(1);
    s.leader = Some(LeaderSettings::new(
        "carbon-kube-cluster-score",
        "carbon-kube-cluster-score",
        ns.name(),
        Some(identity),
        3,
    ));
    let metrics = PublisherMetrics::default();
    let readiness = Readiness::default();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let client = ns.client();
    let task = tokio::spawn(publisher::run(
        client.clone(),
        client,
        s,
        metrics.clone(),
        readiness.clone(),
        async {
            let _ = rx.await;
        },
    ));
    Replica {
        stop,
        task,
        metrics,
        readiness,
    }
}

async fn lease_holder(ns: &TestNamespace) -> Option<String> {
    ns.api::<Lease>()
        .get_opt("carbon-kube-cluster-score")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

/// Issue 17: two publisher replicas with leader election (a Lease in the
/// release namespace, through carbon-kube-k8s's helper). Only the Lease
/// holder publishes; the standby is ready and decides nothing; when the
/// leader stops (giving the Lease up), the standby takes over and publishes.
#[tokio::test]
async fn only_the_lease_holder_publishes_and_a_standby_takes_over() {
    let cp = shared().await;
    let ns = cp.test_namespace("mc-leader").await.unwrap();
    install_crds(&ns.client()).await;
    de_fr_nodes(&ns).await;
    put_snapshot(&ns, &[("DE", 300.0), ("FR", 50.0)], now()).await;

    let a = start_replica(&ns, "replica-a");
    wait_until(
        "replica-a to lead and publish",
        Duration::from_secs(60),
        || async {
            if a.metrics.leader.get() == 1 && a.decisions() > 0 {
                Progress::Done(())
            } else {
                Progress::Waiting(format!(
                    "leader {}, decisions {}",
                    a.metrics.leader.get(),
                    a.decisions()
                ))
            }
        },
    )
    .await
    .unwrap();
    let b = start_replica(&ns, "replica-b");
    // Let the standby go through several runs while the leader publishes.
    let seen = a.decisions();
    wait_until(
        "three more runs of the leader",
        Duration::from_secs(60),
        || async {
            if a.decisions() >= seen + 3 && b.readiness.waiting().is_empty() {
                Progress::Done(())
            } else {
                Progress::Waiting(format!(
                    "leader decisions {}, standby waiting for {:?}",
                    a.decisions(),
                    b.readiness.waiting()
                ))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(b.metrics.leader.get(), 0, "one leader");
    assert_eq!(b.decisions(), 0, "the standby published nothing");
    assert_eq!(lease_holder(&ns).await.as_deref(), Some("replica-a"));
    assert_eq!(
        ocm::status_of(&score_object(&ns).await).unwrap().scores[0].value,
        41
    );

    // The leader stops and gives the Lease up: the standby takes over.
    a.stop().await;
    wait_until(
        "replica-b to lead and publish",
        Duration::from_secs(60),
        || async {
            if b.metrics.leader.get() == 1 && b.decisions() > 0 {
                Progress::Done(())
            } else {
                Progress::Waiting(format!(
                    "leader {}, decisions {}",
                    b.metrics.leader.get(),
                    b.decisions()
                ))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(lease_holder(&ns).await.as_deref(), Some("replica-b"));
    // It continues from the published object (restart-safe): no new "first".
    assert_eq!(
        b.metrics
            .decisions
            .get_or_create(&ReasonLabels { reason: "first" })
            .get(),
        0
    );
    assert_eq!(b.metrics.published.get(), 41);
    b.stop().await;
}
