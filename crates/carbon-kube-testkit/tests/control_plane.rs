//! Tests of the harness itself, against one real control plane shared by every
//! test in this file (etcd, kube-apiserver, kube-controller-manager, kwok, and
//! kube-schedulers started per test).
//!
//! Run one: `cargo test -p carbon-kube-testkit --test control_plane -- pod_is_bound`.

use std::time::Duration;

use carbon_kube_testkit::{
    Extender, NODE_POOL_LABEL, Progress, ZONE_LABEL, nodes_in_zone, pod_named, shared, wait_for,
    wait_for_deletion, wait_until,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::api::policy::v1::{Eviction, PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn api_server_reports_the_pinned_version() {
    let cp = shared().await;
    eprintln!(
        "control plane ready in {:?} (logs in {})",
        cp.startup_duration(),
        cp.dir().display()
    );
    let client = cp.client().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, carbon_kube_testkit::KUBERNETES_VERSION);
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "37");

    // The handles other processes need are real files and URLs.
    assert!(cp.kubeconfig_path().is_file());
    assert!(cp.server_url().starts_with("https://127.0.0.1:"));
    assert!(cp.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    let names: Vec<String> = cp.pids().into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        ["etcd", "kube-apiserver", "kube-controller-manager", "kwok"]
    );
}

#[tokio::test]
async fn watch_sees_an_object_added_then_modified() {
    let cp = shared().await;
    let ns = cp.test_namespace("watch").await.unwrap();
    let config_maps: Api<ConfigMap> = ns.api();

    // Start from the current resource version so no event can be missed.
    let list = config_maps
        .list_metadata(&Default::default())
        .await
        .unwrap();
    let version = list.metadata.resource_version.unwrap();
    let params = WatchParams::default()
        .fields("metadata.name=settings")
        .timeout(60);
    let mut events = config_maps.watch(&params, &version).await.unwrap().boxed();

    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".to_owned()),
            ..ObjectMeta::default()
        },
        data: Some([("mode".to_owned(), "green".to_owned())].into()),
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    config_maps
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "mode": "brown" } })),
        )
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(TIMEOUT, events.try_next())
            .await
            .expect("watch event within the timeout")
            .unwrap()
            .expect("watch stream still open");
        match event {
            WatchEvent::Added(cm) => seen.push(("ADDED", cm.data.unwrap()["mode"].clone())),
            WatchEvent::Modified(cm) => seen.push(("MODIFIED", cm.data.unwrap()["mode"].clone())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected watch event {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "green".to_owned()),
            ("MODIFIED", "brown".to_owned())
        ]
    );
}

#[tokio::test]
async fn pod_is_bound_by_kube_scheduler_to_a_kwok_node_and_runs() {
    let cp = shared().await;
    let ns = cp.test_namespace("pod-is-bound").await.unwrap();
    let nodes = ns
        .create_nodes(
            &nodes_in_zone("eu-west", "eu-west-1a")
                .count(2)
                .with_cpu("8")
                .with_memory("32Gi"),
        )
        .await
        .unwrap();
    assert_eq!(nodes.len(), 2);
    let started = std::time::Instant::now();
    let _scheduler = cp.start_scheduler(ns.scheduler_config()).await.unwrap();
    eprintln!("kube-scheduler ready in {:?}", started.elapsed());

    ns.create_pod(
        &pod_named("web")
            .requesting("500m", "256Mi")
            .scheduled_by(ns.scheduler_name())
            .build(),
    )
    .await
    .unwrap();
    let node_name = ns.wait_for_pod_bound("web", TIMEOUT).await.unwrap();

    let node = Api::<Node>::all(ns.client()).get(&node_name).await.unwrap();
    assert_eq!(node.labels()[NODE_POOL_LABEL], ns.node_pool());
    assert_eq!(node.labels()[ZONE_LABEL], "eu-west-1a");
    assert_eq!(node.annotations()["kwok.x-k8s.io/node"], "fake");

    // kwok plays the kubelet: the pod becomes Running with an IP from kwok's CIDR.
    let pod = ns.wait_for_pod_running("web", TIMEOUT).await.unwrap();
    let status = pod.status.unwrap();
    let pod_ip = status.pod_ip.unwrap();
    assert!(pod_ip.starts_with("10.244."), "pod IP {pod_ip}");
    assert!(status.start_time.is_some());
}

#[tokio::test]
async fn extender_filter_is_consulted_and_its_verdict_respected() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let cp = shared().await;
    let ns = cp.test_namespace("extender").await.unwrap();
    let dirty = ns
        .create_nodes(&nodes_in_zone("eu", "eu-coal").named("coal"))
        .await
        .unwrap();
    let clean = ns
        .create_nodes(&nodes_in_zone("eu", "eu-wind").named("wind"))
        .await
        .unwrap();
    let (dirty, clean) = (dirty[0].name_any(), clean[0].name_any());

    // The extender keeps only the node in the windy zone.
    let extender = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/carbon/filter"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "NodeNames": [clean],
            "FailedNodes": { dirty.as_str(): "zone eu-coal is too carbon-intensive" },
            "Error": "",
        })))
        .mount(&extender)
        .await;
    let config = ns.scheduler_config().with_extender(
        Extender::at(format!("{}/carbon", extender.uri()))
            .filter_verb("filter")
            .node_cache_capable(true)
            .http_timeout(Duration::from_secs(5)),
    );
    let scheduler = cp.start_scheduler(config).await.unwrap();

    ns.create_pod(
        &pod_named("batch")
            .scheduled_by(scheduler.scheduler_name())
            .build(),
    )
    .await
    .unwrap();
    let bound_to = ns.wait_for_pod_bound("batch", TIMEOUT).await.unwrap();
    assert_eq!(bound_to, clean);

    // The scheduler sent the extender both candidates, by name (node cache capable).
    let requests = extender.received_requests().await.unwrap();
    assert!(!requests.is_empty());
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let mut candidates: Vec<&str> = body["NodeNames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    candidates.sort_unstable();
    let mut expected = [dirty.as_str(), clean.as_str()];
    expected.sort_unstable();
    assert_eq!(candidates, expected);
    assert_eq!(body["Pod"]["metadata"]["name"], "batch");
}

#[tokio::test]
async fn job_pod_runs_and_job_completes_under_kwok() {
    let cp = shared().await;
    let ns = cp.test_namespace("job").await.unwrap();
    let node = ns
        .create_nodes(&nodes_in_zone("eu-north", "eu-north-1a"))
        .await
        .unwrap()[0]
        .name_any();

    // Watch the Job's pods from before the Job exists, to see every phase.
    let pods: Api<Pod> = ns.api();
    let params = WatchParams::default()
        .labels("job-name=crunch")
        .timeout(120);
    let mut events = pods.watch(&params, "0").await.unwrap().boxed();

    let job = Job {
        metadata: ObjectMeta {
            name: Some("crunch".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    // Bound directly: this test is about the Job controller and kwok.
                    node_name: Some(node.clone()),
                    ..pod_named("unused").build().spec.unwrap()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    let jobs: Api<Job> = ns.api();
    jobs.create(&PostParams::default(), &job).await.unwrap();

    let mut phases = Vec::new();
    while phases.last().map(String::as_str) != Some("Succeeded") {
        let event = tokio::time::timeout(TIMEOUT, events.try_next())
            .await
            .expect("pod event within the timeout")
            .unwrap()
            .expect("watch stream still open");
        if let WatchEvent::Added(pod) | WatchEvent::Modified(pod) = event {
            assert_eq!(
                pod.spec.as_ref().unwrap().node_name.as_deref(),
                Some(node.as_str())
            );
            if let Some(phase) = pod.status.and_then(|s| s.phase)
                && phases.last() != Some(&phase)
            {
                phases.push(phase);
            }
        }
    }
    assert!(
        phases.iter().any(|p| p == "Running"),
        "the pod was never seen Running: {phases:?}"
    );

    let job = wait_for(&jobs, "crunch", TIMEOUT, |job: &Job| {
        job.status.as_ref().is_some_and(|s| {
            s.succeeded == Some(1)
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
        })
    })
    .await
    .unwrap();
    assert!(job.status.unwrap().completion_time.is_some());
}

#[tokio::test]
async fn pod_disruption_budget_blocks_eviction_with_429() {
    let cp = shared().await;
    let ns = cp.test_namespace("pdb").await.unwrap();
    let node = ns
        .create_nodes(&nodes_in_zone("eu-south", "eu-south-1a"))
        .await
        .unwrap()[0]
        .name_any();
    ns.create_pod(
        &pod_named("guarded")
            .with_label("app", "guarded")
            .bound_to(&node)
            .build(),
    )
    .await
    .unwrap();
    ns.wait_for_pod_running("guarded", TIMEOUT).await.unwrap();

    let pdb = PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some("keep-one".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some([("app".to_owned(), "guarded".to_owned())].into()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    };
    let pdbs: Api<PodDisruptionBudget> = ns.api();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    // The disruption controller (kube-controller-manager) has evaluated it.
    wait_for(&pdbs, "keep-one", TIMEOUT, |pdb: &PodDisruptionBudget| {
        let generation = pdb.metadata.generation;
        pdb.status.as_ref().is_some_and(|s| {
            s.observed_generation == generation
                && s.current_healthy == Some(1)
                && s.disruptions_allowed == Some(0)
        })
    })
    .await
    .unwrap();

    // kube retries 429 by default; this client does not, so the refusal is seen.
    let client = cp.client_without_retries().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, ns.name());
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some("guarded".to_owned()),
            namespace: Some(ns.name().to_owned()),
            ..ObjectMeta::default()
        },
        delete_options: None,
    };
    let refused = pods
        .create_subresource::<_, serde_json::Value>(
            "eviction",
            "guarded",
            &PostParams::default(),
            &eviction,
        )
        .await
        .unwrap_err();
    match refused {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 429, "{status:?}");
            assert!(status.message.contains("disruption budget"), "{status:?}");
        }
        other => panic!("expected a 429 from the API server, got {other:?}"),
    }
    assert!(pods.get_opt("guarded").await.unwrap().is_some());

    // Relax the budget: the same eviction now goes through and kwok removes the pod.
    pdbs.patch(
        "keep-one",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "minAvailable": 0 } })),
    )
    .await
    .unwrap();
    wait_until("the PDB to allow one disruption", TIMEOUT, || async {
        match pdbs.get("keep-one").await {
            Ok(pdb) => match pdb.status {
                Some(s) if s.disruptions_allowed == Some(1) => Progress::Done(()),
                other => Progress::Waiting(format!("{other:?}")),
            },
            Err(e) => Progress::Waiting(e.to_string()),
        }
    })
    .await
    .unwrap();
    pods.create_subresource::<_, serde_json::Value>(
        "eviction",
        "guarded",
        &PostParams::default(),
        &eviction,
    )
    .await
    .unwrap();
    wait_for_deletion(&pods, "guarded", TIMEOUT).await.unwrap();
}

#[tokio::test]
async fn helm_works_with_the_admin_kubeconfig() {
    let cp = shared().await;
    let ns = cp.test_namespace("helm").await.unwrap();
    let helm = cp.binaries().path("helm").unwrap();
    let output = tokio::process::Command::new(helm)
        .args(["list", "--output", "json", "--namespace", ns.name()])
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        // Keep helm's cache and config away from the developer's home.
        .env("HELM_CACHE_HOME", cp.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", cp.dir().join("helm/config"))
        .env("HELM_DATA_HOME", cp.dir().join("helm/data"))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "helm failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let releases: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(releases, json!([]));
}
