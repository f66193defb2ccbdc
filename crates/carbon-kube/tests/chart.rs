//! The Helm chart (`charts/carbon-kube`), checked by the real tools:
//!
//! - `helm lint` and `helm template` for the defaults and every `ci/*.yaml`
//!   scenario, the values schema rejecting typos, every value commented;
//! - the rendered manifests sent to the real kube-apiserver of the test
//!   control plane (server-side dry run, then applied), the pods they create
//!   admitted under the `restricted` Pod Security Standard;
//! - least privilege, by the API server's own SubjectAccessReviews;
//! - every PromQL expression of the dashboards and alert rules parsed, its
//!   metric names found in the `/metrics` of the running binaries or in
//!   kube-scheduler's documented metrics; `promtool check rules` and
//!   `promtool test rules`.
//!
//! helm, promtool and the CRDs come from `make k8s-bin` (test/k8s/build.sh and
//! hack/install-test-tools.sh); a missing tool fails the test and says so.

#![allow(clippy::unwrap_used)] // Test code: a panic is a test failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use carbon_kube_testkit::{Binaries, Progress, TestNamespace, shared, wait_until};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::discovery::{Scope, pinned_kind};
use serde_json::{Value, json};

/// Version the chart is rendered for (the test control plane's).
const KUBE_VERSION: &str = carbon_kube_testkit::KUBERNETES_VERSION;

/// The scenarios the issue asks for, each a file `ci/<name>-values.yaml`.
const SCENARIOS: &[&str] = &[
    "minimal",
    "ha",
    "existing-secret",
    "network-policy",
    "cert-manager",
    "plugin",
    "multicluster",
];

// ---------------------------------------------------------------------------
// helm

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/carbon-kube")
}

fn tool(name: &'static str) -> PathBuf {
    Binaries::locate().path(name).unwrap_or_else(|e| {
        panic!("{e} (helm comes from test/k8s/build.sh, promtool from hack/install-test-tools.sh; both run by `make k8s-bin`)")
    })
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Values file of a scenario; `None` for the defaults.
fn scenario_file(scenario: &str) -> Option<PathBuf> {
    (scenario != "default").then(|| chart_dir().join(format!("ci/{scenario}-values.yaml")))
}

/// `helm template` of a scenario with extra `--set` flags; the raw output.
fn try_render(release: &str, namespace: &str, scenario: &str, sets: &[&str]) -> Output {
    let chart = chart_dir();
    let mut args: Vec<String> = vec![
        "template".into(),
        release.into(),
        chart.display().to_string(),
        "--namespace".into(),
        namespace.into(),
        "--kube-version".into(),
        KUBE_VERSION.into(),
    ];
    if let Some(file) = scenario_file(scenario) {
        args.push("--values".into());
        args.push(file.display().to_string());
    }
    for set in sets {
        args.push("--set".into());
        args.push((*set).into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&tool("helm"), &args)
}

/// The rendered objects of a scenario (empty documents dropped).
fn render(release: &str, namespace: &str, scenario: &str, sets: &[&str]) -> Vec<Value> {
    let out = try_render(release, namespace, scenario, sets);
    assert!(
        out.status.success(),
        "helm template ({scenario}) failed:\n{}",
        text(&out)
    );
    parse_manifests(&String::from_utf8_lossy(&out.stdout))
}

fn parse_manifests(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
        .unwrap_or_else(|e| panic!("helm output is not YAML: {e}\n{yaml}"));
    docs.into_iter()
        .filter(|d| d.is_object() && d.get("kind").is_some())
        .collect()
}

fn kind_name(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Pod templates of the workloads, with the workload's kind/name.
fn pod_specs(objects: &[Value]) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for obj in objects {
        let spec = match obj["kind"].as_str() {
            Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job") => {
                &obj["spec"]["template"]["spec"]
            }
            Some("CronJob") => &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => continue,
        };
        out.push((kind_name(obj), spec));
    }
    out
}

#[test]
fn helm_lint_passes_for_the_defaults_and_every_scenario() {
    let chart = chart_dir().display().to_string();
    for scenario in std::iter::once("default").chain(SCENARIOS.iter().copied()) {
        let mut args = vec!["lint", &chart, "--strict", "--kube-version", KUBE_VERSION];
        let file = scenario_file(scenario).map(|f| f.display().to_string());
        if let Some(file) = &file {
            assert!(Path::new(file).is_file(), "scenario file {file} is missing");
            args.extend(["--values", file]);
        }
        let out = run(&tool("helm"), &args);
        assert!(
            out.status.success(),
            "helm lint ({scenario}):\n{}",
            text(&out)
        );
        assert!(text(&out).contains("0 chart(s) failed"), "{}", text(&out));
    }
    // Every ci/ file is one of the scenarios above (none silently untested).
    let mut on_disk: Vec<String> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = SCENARIOS
        .iter()
        .map(|s| format!("{s}-values.yaml"))
        .collect();
    expected.sort();
    assert_eq!(on_disk, expected);
}

#[test]
fn every_scenario_renders_workloads_that_meet_the_restricted_standard() {
    for scenario in std::iter::once("default").chain(SCENARIOS.iter().copied()) {
        let objects = render("carbon-kube", "carbon-kube", scenario, &[]);
        let pods = pod_specs(&objects);
        assert!(!pods.is_empty(), "{scenario}: no workload rendered");
        for (workload, spec) in pods {
            let what = format!("{scenario}: {workload}");
            let psc = &spec["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{what}: runAsNonRoot");
            assert_eq!(
                psc["seccompProfile"]["type"], "RuntimeDefault",
                "{what}: seccompProfile"
            );
            let sa = spec["serviceAccountName"].as_str().unwrap_or("");
            assert_eq!(
                workload.split_once('/').unwrap().1,
                sa,
                "{what}: runs as its component's own service account"
            );
            for c in spec["containers"].as_array().unwrap() {
                let name = c["name"].as_str().unwrap();
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}/{name}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}/{name}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}/{name}");
                assert!(
                    c["resources"]["requests"].is_object(),
                    "{what}/{name}: resource requests"
                );
            }
        }
        // One ServiceAccount per component, none mounting tokens by default.
        for sa in of_kind(&objects, "ServiceAccount") {
            assert_eq!(
                sa["automountServiceAccountToken"],
                false,
                "{}",
                kind_name(sa)
            );
        }
    }
}

#[test]
fn the_install_command_of_the_design_keeps_keys_in_the_secret_only() {
    // helm install carbon-kube ./charts/carbon-kube --set electricityMaps.apiKey=...
    //   --set noaa.apiKey=... --namespace carbon-kube --create-namespace
    let em = "em-key-4f1d9c";
    let noaa = "noaa-key-77ab2e";
    let out = try_render(
        "carbon-kube",
        "carbon-kube",
        "default",
        &[
            &format!("electricityMaps.apiKey={em}"),
            &format!("noaa.apiKey={noaa}"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    for secret in [em, noaa] {
        assert!(
            !yaml.contains(secret),
            "the plain key {secret} appears in the manifests"
        );
    }
    let objects = parse_manifests(&yaml);
    let secrets = of_kind(&objects, "Secret");
    assert_eq!(secrets.len(), 1);
    let secret = secrets[0];
    assert_eq!(secret["metadata"]["name"], "carbon-kube-secrets");
    let data = secret["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["electricity-maps-key", "noaa-key"]
    );
    // The base64 form only in the Secret.
    for obj in objects.iter().filter(|o| o["kind"] != "Secret") {
        let s = obj.to_string();
        for value in data.values() {
            assert!(!s.contains(value.as_str().unwrap()), "{}", kind_name(obj));
        }
    }
    // The poller reads them as optional references to that Secret.
    let cron = of_kind(&objects, "CronJob")[0];
    let env = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"];
    let refs: BTreeMap<&str, (&str, &str)> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let r = &e["valueFrom"]["secretKeyRef"];
            assert_eq!(r["optional"], true);
            (
                e["name"].as_str().unwrap(),
                (r["name"].as_str().unwrap(), r["key"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        refs["ELECTRICITY_MAPS_API_KEY"],
        ("carbon-kube-secrets", "electricity-maps-key")
    );
    assert_eq!(refs["NOAA_API_KEY"], ("carbon-kube-secrets", "noaa-key"));

    // existingSecret: no Secret of the chart's own, references to the given one.
    let objects = render("carbon-kube", "carbon-kube", "existing-secret", &[]);
    assert!(of_kind(&objects, "Secret").is_empty());
    let cron = of_kind(&objects, "CronJob")[0];
    let env = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert_eq!(env.len(), 4);
    assert!(
        env.iter()
            .all(|e| e["valueFrom"]["secretKeyRef"]["name"] == "carbon-kube-secrets")
    );
}

#[test]
fn the_scheduler_runs_the_cluster_version_of_kube_scheduler() {
    let objects = render("carbon-kube", "carbon-kube", "default", &[]);
    let deploy = of_kind(&objects, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "carbon-kube-scheduler")
        .expect("scheduler Deployment");
    let containers = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(
        containers[0]["image"],
        format!("registry.k8s.io/kube-scheduler:{KUBE_VERSION}")
    );
    assert_eq!(deploy["spec"]["replicas"], 2);
    // A provider's version string (EKS, GKE) is reduced to a real tag.
    let objects = render(
        "carbon-kube",
        "carbon-kube",
        "default",
        &["scheduler.kubeScheduler.image.tag=v1.36.4"],
    );
    assert!(
        objects
            .iter()
            .any(|o| o.to_string().contains("kube-scheduler:v1.36.4"))
    );
}

/// The chart renders the scheduler configuration and extender settings that
/// deploy/ ships (and the extender's own tests run against).
#[test]
fn the_scheduler_configuration_is_the_one_in_deploy() {
    let objects = render("carbon-kube", "carbon-kube", "default", &[]);
    let cm = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "carbon-kube-scheduler")
        .expect("scheduler ConfigMap");
    let rendered: Value =
        serde_saphyr::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap()).unwrap();
    let shipped: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/scheduler/kube-scheduler-config.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rendered, shipped);
    // And the extender settings match deploy/examples/extender-config.yaml
    // but for the example's region map.
    let mut settings: Value =
        serde_saphyr::from_str(cm["data"]["extender.yaml"].as_str().unwrap()).unwrap();
    let mut example: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/examples/extender-config.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    settings["regionZones"] = json!({});
    example["regionZones"] = json!({});
    assert_eq!(settings, example);
}

/// `scheduler.mode: plugin` runs kube-scheduler-carbon from the Carbon-Kube
/// image with the plugin configuration that deploy/ ships (and the
/// behaviour suite runs against), and no extender sidecar.
#[test]
fn plugin_mode_runs_the_plugin_build_with_the_shipped_configuration() {
    let objects = render(
        "carbon-kube",
        "carbon-kube",
        "default",
        &["scheduler.mode=plugin", "zoneMap.dc-1=DE"],
    );
    let deploy = of_kind(&objects, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "carbon-kube-scheduler")
        .expect("scheduler Deployment");
    let containers = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "no extender sidecar");
    assert_eq!(containers[0]["command"][0], "kube-scheduler-carbon");
    assert!(
        containers[0]["image"]
            .as_str()
            .unwrap()
            .contains("/carbon-kube:")
    );
    let cm = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "carbon-kube-scheduler")
        .expect("scheduler ConfigMap");
    assert!(cm["data"].get("extender.yaml").is_none());
    let mut rendered: Value =
        serde_saphyr::from_str(cm["data"]["scheduler-config.yaml"].as_str().unwrap()).unwrap();
    let shipped: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/scheduler/kube-scheduler-plugin-config.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    // The chart spells out every setting the shipped file leaves at its
    // default; the rest is the same document.
    let args = rendered["profiles"][0]["pluginConfig"][0]["args"].clone();
    assert_eq!(args["threshold"], 250);
    assert_eq!(args["carbonWeight"], 70);
    assert_eq!(args["onNoGreenNode"], "failOpen");
    assert_eq!(args["regionZones"]["dc-1"], "DE");
    rendered["profiles"][0]["pluginConfig"][0]["args"] = json!({"namespace": args["namespace"]});
    assert_eq!(rendered, shipped);
    // Metrics come from kube-scheduler's port only.
    let service = of_kind(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "carbon-kube-scheduler-metrics")
        .expect("metrics Service");
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], "https-metrics");
}

/// Every carbon-kube container's rendered arguments are accepted by the real
/// binary: run with no cluster, each gets past argument parsing and settings
/// validation and stops where it needs Kubernetes or its mounted files.
#[test]
fn rendered_arguments_are_accepted_by_the_binary() {
    let mut checked = BTreeSet::new();
    for scenario in ["default", "ha", "cert-manager"] {
        let objects = render("carbon-kube", "carbon-kube", scenario, &[]);
        for (workload, spec) in pod_specs(&objects) {
            for c in spec["containers"].as_array().unwrap() {
                if !c["image"].as_str().unwrap().contains("/carbon-kube:") {
                    continue;
                }
                let args: Vec<&str> = c["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                let out = Command::new(env!("CARGO_BIN_EXE_carbon-kube"))
                    .args(&args)
                    .env("KUBECONFIG", "/nonexistent/kubeconfig")
                    .env_remove("KUBERNETES_SERVICE_HOST")
                    .env_remove("ELECTRICITY_MAPS_API_KEY")
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                let what = format!("{scenario}: {workload} {args:?}");
                assert!(!out.status.success(), "{what}: ran without a cluster?");
                assert!(
                    !stderr.contains("Usage:") && !stderr.contains("invalid"),
                    "{what}: arguments refused:\n{stderr}"
                );
                assert!(
                    stderr.contains("Kubernetes")
                        || stderr.contains("kubeconfig")
                        || stderr.contains("/etc/carbon-kube/")
                        // The tuner reads its replay window from its volume.
                        || stderr.contains("/var/lib/carbon-kube-tuner/"),
                    "{what}: stopped for another reason:\n{stderr}"
                );
                // The command and, for the poller, its mode.
                let key = match args[0] {
                    "gates" => format!("gates {}", args[1]),
                    "poller" => format!("poller {}", args[1].split('=').next().unwrap()),
                    other => other.to_owned(),
                };
                checked.insert(key);
            }
        }
    }
    let expected = [
        "extender",
        "gates controller",
        "gates webhook",
        "accounting",
        "migrator",
        "poller --interval",
        "poller --once",
        "tune",
    ];
    assert_eq!(checked, expected.iter().map(ToString::to_string).collect());
}

/// With `networkPolicy.enabled` every workload's pods are selected by a
/// NetworkPolicy of the chart (none is left unrestricted).
#[test]
fn every_workload_is_covered_by_a_network_policy() {
    let objects = render("carbon-kube", "carbon-kube", "network-policy", &[]);
    let selectors: Vec<&serde_json::Map<String, Value>> = of_kind(&objects, "NetworkPolicy")
        .iter()
        .map(|p| p["spec"]["podSelector"]["matchLabels"].as_object().unwrap())
        .collect();
    let mut workloads = 0;
    for obj in &objects {
        let template = match obj["kind"].as_str() {
            Some("Deployment") => &obj["spec"]["template"],
            Some("CronJob") => &obj["spec"]["jobTemplate"]["spec"]["template"],
            _ => continue,
        };
        workloads += 1;
        let labels = template["metadata"]["labels"].as_object().unwrap();
        assert!(
            selectors
                .iter()
                .any(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v))),
            "{} is selected by no NetworkPolicy",
            kind_name(obj)
        );
    }
    // The scheduler, the poller, the gate webhook and controller, the tuner.
    assert!(workloads >= 5, "{workloads} workloads");
}

/// The image the chart runs matches the Dockerfile: the pods run as the
/// image's user, and the image's one entrypoint is the `carbon-kube` binary
/// (whose subcommands the containers' arguments start with, see
/// `rendered_arguments_are_accepted_by_the_binary`).
#[test]
fn the_chart_runs_the_image_as_the_dockerfile_builds_it() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Dockerfile"))
            .unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(last_stage.contains("USER 65532:65532"), "{last_stage}");
    assert!(
        last_stage.contains(r#"ENTRYPOINT ["/usr/local/bin/carbon-kube"]"#),
        "{last_stage}"
    );
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["podSecurityContext"]["runAsUser"], 65532);
    assert_eq!(values["podSecurityContext"]["runAsGroup"], 65532);
}

#[test]
fn a_values_typo_is_rejected_by_the_schema() {
    for (set, names) in [
        ("scheduler.replica=3", "replica"),
        ("thresold=200", "thresold"),
        ("carbonPoller.mode=deamon", "carbonPoller/mode"),
        ("networkPolicy.enable=true", "enable"),
        ("scheduler.config.carbonWeight=170", "carbonWeight"),
    ] {
        let out = try_render("carbon-kube", "carbon-kube", "default", &[set]);
        let message = text(&out);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            message.contains("values don't meet the specifications of the schema")
                && message.contains(names),
            "--set {set}: the error does not name the problem:\n{message}"
        );
    }
}

/// Every key of values.yaml is documented by a `# --` comment (one on a map
/// covers its subtree), and values.yaml and values.schema.json name the same keys.
#[test]
fn every_value_is_commented_and_described_by_the_schema() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let key_re = |l: &str| -> Option<(usize, String)> {
        let trimmed = l.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with('-') || trimmed.is_empty() {
            return None;
        }
        let (key, _) = trimmed.split_once(':')?;
        Some((l.len() - trimmed.len(), key.trim_matches('"').to_owned()))
    };
    let mut uncommented = Vec::new();
    // Indentation of the nearest commented ancestor (its subtree is covered).
    let mut covered: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, key)) = key_re(line) else {
            continue;
        };
        if let Some(c) = covered {
            if indent > c {
                continue;
            }
            covered = None;
        }
        // A `# --` comment block (the helm-docs convention) documents a value;
        // plain `#` lines are section headings and cover nothing.
        let commented = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .any(|l| l.trim_start().starts_with("# --"));
        let is_parent = line.trim_end().ends_with(':')
            && lines[i + 1..]
                .iter()
                .find_map(|n| key_re(n))
                .is_some_and(|(ni, _)| ni > indent);
        if commented {
            covered = Some(indent);
        } else if !is_parent {
            uncommented.push(format!("line {}: {key}", i + 1));
        }
    }
    assert!(
        uncommented.is_empty(),
        "values without a comment:\n{}",
        uncommented.join("\n")
    );

    let values: Value = serde_saphyr::from_str(&text).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let mut missing = Vec::new();
    schema_keys_in_values(&schema, &schema, &values, "", &mut missing);
    assert!(
        missing.is_empty(),
        "schema properties with no default in values.yaml: {missing:?}"
    );
}

/// Walks closed objects (`additionalProperties: false`) of the schema and
/// lists properties that values.yaml lacks. (The reverse, a values key the
/// schema lacks, fails `helm lint`.)
fn schema_keys_in_values(
    root: &Value,
    schema: &Value,
    values: &Value,
    path: &str,
    missing: &mut Vec<String>,
) {
    let schema = match schema["$ref"].as_str() {
        Some(r) => root
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => schema,
    };
    if schema["additionalProperties"] != false {
        return;
    }
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (key, sub) in props {
        let p = format!("{path}.{key}");
        match values.get(key) {
            Some(v) => schema_keys_in_values(root, sub, v, &p, missing),
            // Optional sub-keys of Kubernetes-shaped values (resources.claims, ...).
            None if values.is_object()
                && !path.ends_with("resources")
                && !path.ends_with("issuerRef")
                && !path.ends_with("dns") =>
            {
                missing.push(p);
            }
            None => {}
        }
    }
}

// ---------------------------------------------------------------------------
// The real API server

/// Directory of the CRDs hack/install-test-tools.sh fetched.
fn crd_dir() -> PathBuf {
    let dir = Binaries::default_dir().join("../crds");
    assert!(
        dir.join("monitoring.coreos.com_servicemonitors.yaml")
            .is_file(),
        "CRDs missing in {}: run `make k8s-bin` (hack/install-test-tools.sh)",
        dir.display()
    );
    dir
}

/// Installs the ServiceMonitor, PrometheusRule, Certificate and Issuer CRDs
/// once per test binary and waits until they are served.
async fn install_crds(client: &kube::Client) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let mut kinds = Vec::new();
        for entry in std::fs::read_dir(crd_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            for crd in parse_manifests(&std::fs::read_to_string(&path).unwrap()) {
                let group = crd["spec"]["group"].as_str().unwrap().to_owned();
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
                let version = crd["spec"]["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["storage"] == true)
                    .unwrap()["name"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                apply(client, "", &crd, false).await.unwrap();
                kinds.push(GroupVersionKind::gvk(&group, &version, &kind));
            }
        }
        for gvk in kinds {
            wait_until(
                &format!("CRD {} served", gvk.kind),
                Duration::from_secs(30),
                || {
                    let client = client.clone();
                    let gvk = gvk.clone();
                    async move {
                        match pinned_kind(&client, &gvk).await {
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

/// Server-side apply of one object (in `namespace` unless it names its own).
async fn apply(
    client: &kube::Client,
    namespace: &str,
    obj: &Value,
    dry_run: bool,
) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap_or_default());
    let (ar, caps) = pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{}: kind not served: {e}", kind_name(obj)))?;
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or(namespace);
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let mut params = PatchParams::apply("carbon-kube-chart-test").force();
    if dry_run {
        params = params.dry_run();
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(name, &params, &Patch::Apply(obj))
        .await
        .map(drop)
        .map_err(|e| format!("{}: {e}", kind_name(obj)))
}

/// A namespace enforcing the `restricted` Pod Security Standard.
async fn restricted_namespace(prefix: &str) -> TestNamespace {
    let cp = shared().await;
    let ns = cp.test_namespace(prefix).await.unwrap();
    let patch = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(ns.client())
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    ns
}

/// Renders `scenario` as release `<namespace>` into the namespace, dry-runs
/// every object, then applies them all. Returns the objects.
async fn install(ns: &TestNamespace, scenario: &str, sets: &[&str]) -> Vec<Value> {
    let client = ns.client();
    install_crds(&client).await;
    let objects = render(ns.name(), ns.name(), scenario, sets);
    let mut errors = Vec::new();
    for obj in &objects {
        if let Err(e) = apply(&client, ns.name(), obj, true).await {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "{scenario}: server-side dry run refused:\n{}",
        errors.join("\n")
    );
    for obj in &objects {
        apply(&client, ns.name(), obj, false)
            .await
            .unwrap_or_else(|e| panic!("{scenario}: apply failed: {e}"));
    }
    objects
}

/// Waits until the controllers created `want` pods matching `selector`; the
/// namespace enforces `restricted`, so a pod exists only if admitted.
async fn wait_for_pods(ns: &TestNamespace, selector: &str, want: usize, what: &str) {
    let pods: Api<Pod> = ns.api();
    let lp = ListParams::default().labels(selector);
    let result = wait_until(
        &format!("{what}: {want} pods admitted"),
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let lp = lp.clone();
            async move {
                match pods.list(&lp).await {
                    Ok(l) if l.items.len() >= want => Progress::Done(()),
                    Ok(l) => Progress::Waiting(format!("{} pods", l.items.len())),
                    Err(e) => Progress::Waiting(e.to_string()),
                }
            }
        },
    )
    .await;
    if let Err(e) = result {
        // Say why: the ReplicaSet or Job conditions name the admission error.
        let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(ns.client(), ns.name())
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter_map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        panic!("{e}\nevents:\n{events}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_is_accepted_by_the_api_server_and_its_pods_are_admitted() {
    for scenario in std::iter::once("default").chain(SCENARIOS.iter().copied()) {
        let ns = restricted_namespace(&format!("chart-{scenario}")).await;
        let objects = install(&ns, scenario, &[]).await;

        // Deployments: their ReplicaSets' pods pass `restricted` admission.
        for d in of_kind(&objects, "Deployment") {
            let name = d["metadata"]["name"].as_str().unwrap();
            let live: Deployment = ns.api().get(name).await.unwrap();
            let replicas = usize::try_from(live.spec.replicas.unwrap_or(1)).unwrap();
            let selector = d["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect::<Vec<_>>()
                .join(",");
            wait_for_pods(&ns, &selector, replicas, &format!("{scenario}: {name}")).await;
        }
        // CronJobs: run one Job from the template (what `kubectl create job
        // --from=cronjob/...` does) and see its pod admitted.
        for c in of_kind(&objects, "CronJob") {
            let name = c["metadata"]["name"].as_str().unwrap();
            let cron: CronJob = ns.api().get(name).await.unwrap();
            let template = cron.spec.job_template;
            let job = Job {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-manual")),
                    labels: template.metadata.and_then(|m| m.labels),
                    ..ObjectMeta::default()
                },
                spec: Some(JobSpec {
                    ..template.spec.unwrap()
                }),
                status: None,
            };
            ns.api::<Job>()
                .create(&PostParams::default(), &job)
                .await
                .unwrap();
            wait_for_pods(
                &ns,
                &format!("job-name={name}-manual"),
                1,
                &format!("{scenario}: job from {name}"),
            )
            .await;
        }
    }
}

/// The install command of the design, run for real by helm against the test
/// API server: it installs, prints NOTES that say how to verify it and how to
/// schedule a first pod, and an upgrade keeps the webhook's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_and_upgrade_work_against_the_api_server() {
    let cp = shared().await;
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let chart = chart_dir().display().to_string();
    let namespace = format!("carbon-kube-{}", std::process::id());
    let helm = |extra: &[&str]| {
        let mut args = vec![
            "upgrade",
            "--install",
            "carbon-kube",
            &chart,
            "--namespace",
            &namespace,
            "--create-namespace",
            "--kubeconfig",
            &kubeconfig,
            "--set",
            "electricityMaps.apiKey=em-test-key",
            "--set",
            "noaa.apiKey=noaa-test-key",
            "--set",
            "gates.enabled=true",
            "--set",
            "tuner.enabled=true",
        ];
        args.extend_from_slice(extra);
        let out = run(&tool("helm"), &args);
        assert!(out.status.success(), "helm {args:?}:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let notes = helm(&[]);
    for wanted in [
        "STATUS: deployed",
        &format!("kubectl get pods -n {namespace}"),
        "kubectl logs",
        "carbon-intensity-data",
        "schedulerName",
        "carbon-kube.io/max-delay",
        "configmap carbon-kube-tuner -o jsonpath='{.data.tunerStatus}'",
    ] {
        assert!(notes.contains(wanted), "NOTES lack {wanted:?}:\n{notes}");
    }
    assert!(
        !notes.contains("em-test-key"),
        "the key is printed:\n{notes}"
    );

    let client = cp.client().await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, &namespace);
    let tls_name = "carbon-kube-gates-webhook-tls";
    let before = secrets.get(tls_name).await.unwrap().data.unwrap();
    let notes = helm(&["--set", "scheduler.replicas=3"]);
    assert!(notes.contains("REVISION: 2"), "{notes}");
    let after = secrets.get(tls_name).await.unwrap().data.unwrap();
    assert_eq!(
        before, after,
        "the upgrade replaced the webhook certificate"
    );

    let out = run(
        &tool("helm"),
        &[
            "uninstall",
            "carbon-kube",
            "--namespace",
            &namespace,
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    assert!(out.status.success(), "helm uninstall:\n{}", text(&out));
}

// ---------------------------------------------------------------------------
// Least privilege

/// One request a service account might make.
#[derive(Clone, Copy, Debug)]
struct Access<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
    name: &'a str,
}

const fn access<'a>(verb: &'a str, group: &'a str, resource: &'a str) -> Access<'a> {
    Access {
        verb,
        group,
        resource,
        subresource: "",
        namespace: "",
        name: "",
    }
}

impl<'a> Access<'a> {
    const fn ns(mut self, namespace: &'a str) -> Self {
        self.namespace = namespace;
        self
    }
    const fn named(mut self, name: &'a str) -> Self {
        self.name = name;
        self
    }
    const fn sub(mut self, subresource: &'a str) -> Self {
        self.subresource = subresource;
        self
    }
}

/// The API server's answer to "may `user` do `access`?".
async fn allowed(client: &kube::Client, user: &str, access: Access<'_>) -> bool {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let review = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                format!(
                    "system:serviceaccounts:{}",
                    user.split(':').nth(2).unwrap_or_default()
                ),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: opt(access.verb),
                group: Some(access.group.to_owned()),
                resource: opt(access.resource),
                subresource: opt(access.subresource),
                namespace: opt(access.namespace),
                name: opt(access.name),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        status: None,
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

async fn assert_access(
    client: &kube::Client,
    account: &str,
    allow: &[Access<'_>],
    deny: &[Access<'_>],
) {
    let mut wrong = Vec::new();
    for a in allow {
        if !allowed(client, account, *a).await {
            wrong.push(format!("denied but needed: {a:?}"));
        }
    }
    for a in deny {
        if allowed(client, account, *a).await {
            wrong.push(format!("allowed but dangerous: {a:?}"));
        }
    }
    assert!(wrong.is_empty(), "{account}:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_account_has_exactly_the_access_it_needs() {
    let ns = restricted_namespace("chart-rbac").await;
    let objects = install(
        &ns,
        "default",
        &[
            "gates.enabled=true",
            "gates.controller.budgets.enabled=true",
            "migrator.enabled=true",
            "tuner.enabled=true",
            "accounting.enabled=true",
        ],
    )
    .await;
    let client = ns.client();
    let n = ns.name();
    let sa = |component: &str| format!("system:serviceaccount:{n}:{n}-carbon-kube-{component}");
    let accounts: BTreeSet<String> = of_kind(&objects, "ServiceAccount")
        .iter()
        .map(|s| {
            format!(
                "system:serviceaccount:{n}:{}",
                s["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        accounts,
        BTreeSet::from([
            sa("scheduler"),
            sa("poller"),
            sa("gates-webhook"),
            sa("gates-controller"),
            sa("migrator"),
            sa("tuner"),
            sa("accounting")
        ]),
        "one ServiceAccount per component"
    );
    let gates_lease = format!("{n}-carbon-kube-gates-controller");
    let migrator_lease = format!("{n}-carbon-kube-migrator");
    let accounting_lease = format!("{n}-carbon-kube-accounting");
    let scheduler_lease = format!("{n}-carbon-kube-scheduler");

    // Dangerous for everyone.
    let dangerous = [
        access("get", "", "secrets").ns("kube-system").named("any"),
        access("list", "", "secrets"),
        access("get", "", "secrets").ns(n),
        access("update", "", "nodes").named("node-1"),
        access("patch", "", "nodes").named("node-1"),
        access("delete", "", "nodes").named("node-1"),
        access("create", "rbac.authorization.k8s.io", "clusterroles"),
        access("bind", "rbac.authorization.k8s.io", "clusterroles").named("cluster-admin"),
        access("escalate", "rbac.authorization.k8s.io", "clusterroles").named("cluster-admin"),
        access("create", "rbac.authorization.k8s.io", "rolebindings").ns(n),
        access("create", "", "pods").ns(n).sub("exec"),
        access("create", "apps", "deployments").ns(n),
        access("update", "", "configmaps")
            .ns(n)
            .named("carbon-kube-config"),
        access("update", "", "configmaps")
            .ns("kube-system")
            .named("kube-proxy"),
        access(
            "create",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
        ),
    ];

    // The scheduler: kube-scheduler's bootstrap roles plus the extender's reads.
    assert_access(
        &client,
        &sa("scheduler"),
        &[
            access("list", "", "nodes"),
            access("watch", "", "nodes"),
            access("list", "", "pods"),
            access("watch", "", "pods"),
            access("create", "", "pods")
                .ns("default")
                .named("p")
                .sub("binding"),
            access("get", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
            access("watch", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
            access("list", "", "configmaps")
                .ns(n)
                .named("carbon-kube-config"),
            access("create", "events.k8s.io", "events").ns("default"),
            access("patch", "events.k8s.io", "events").ns("default"),
            access("create", "coordination.k8s.io", "leases").ns(n),
            access("get", "coordination.k8s.io", "leases")
                .ns(n)
                .named(&scheduler_lease),
            access("update", "coordination.k8s.io", "leases")
                .ns(n)
                .named(&scheduler_lease),
            access("get", "", "configmaps")
                .ns("kube-system")
                .named("extension-apiserver-authentication"),
            // Preemption deletes victim pods: system:kube-scheduler grants it.
            access("delete", "", "pods").ns("default").named("victim"),
        ],
        &[
            &dangerous[..],
            &[
                access("update", "", "configmaps")
                    .ns(n)
                    .named("carbon-intensity-data"),
                access("update", "coordination.k8s.io", "leases")
                    .ns(n)
                    .named("other-lease"),
                access("update", "", "pods").ns("default").named("p"),
            ],
        ]
        .concat(),
    )
    .await;

    // The poller: one ConfigMap in its namespace.
    assert_access(
        &client,
        &sa("poller"),
        &[
            access("create", "", "configmaps").ns(n),
            access("get", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
            access("update", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
        ],
        &[
            &dangerous[..],
            &[
                access("delete", "", "pods").ns(n).named("p"),
                access("list", "", "pods"),
                access("list", "", "configmaps").ns(n),
                access("get", "", "configmaps")
                    .ns(n)
                    .named("carbon-kube-config"),
                access("get", "", "configmaps")
                    .ns("default")
                    .named("carbon-intensity-data"),
                access("create", "", "configmaps").ns("default"),
                access("delete", "", "configmaps")
                    .ns(n)
                    .named("carbon-intensity-data"),
                access("create", "coordination.k8s.io", "leases").ns(n),
                access("create", "events.k8s.io", "events").ns(n),
            ],
        ]
        .concat(),
    )
    .await;

    // The gate webhook: reads namespaces and (steering migrated pods'
    // replacements, with the migrator enabled) lists and watches the owners
    // the migrator labels; nothing else.
    assert_access(
        &client,
        &sa("gates-webhook"),
        &[
            access("list", "", "namespaces"),
            access("watch", "", "namespaces"),
            access("list", "apps", "replicasets"),
            access("watch", "apps", "replicasets"),
            access("watch", "apps", "statefulsets"),
            access("watch", "batch", "jobs"),
        ],
        &[
            &dangerous[..],
            &[
                access("list", "", "pods"),
                access("patch", "", "pods").ns("default").named("p"),
                access("update", "", "namespaces").named("default"),
                access("get", "", "configmaps")
                    .ns(n)
                    .named("carbon-intensity-data"),
                access("create", "coordination.k8s.io", "leases").ns(n),
            ],
        ]
        .concat(),
    )
    .await;

    // The gate controller: reads and patches pods (removing the gate), reads
    // nodes and the snapshot, writes Events, holds its Lease.
    assert_access(
        &client,
        &sa("gates-controller"),
        &[
            access("list", "", "pods"),
            access("watch", "", "pods"),
            access("patch", "", "pods").ns("default").named("p"),
            access("list", "", "nodes"),
            access("watch", "", "nodes"),
            access("get", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
            access("watch", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
            // The tuner's run status, exported as carbon_rl_tuner_*.
            access("list", "", "configmaps")
                .ns(n)
                .named("carbon-kube-tuner"),
            access("watch", "", "configmaps")
                .ns(n)
                .named("carbon-kube-tuner"),
            access("create", "events.k8s.io", "events").ns("default"),
            access("create", "coordination.k8s.io", "leases").ns(n),
            access("get", "coordination.k8s.io", "leases")
                .ns(n)
                .named(&gates_lease),
            access("update", "coordination.k8s.io", "leases")
                .ns(n)
                .named(&gates_lease),
            // Budgets: the Namespaces' budget annotations and the
            // accounting controller's usage document.
            access("get", "", "namespaces").named("default"),
            access("list", "", "namespaces"),
            access("watch", "", "namespaces"),
            access("get", "", "configmaps")
                .ns(n)
                .named("carbon-kube-accounting"),
            access("watch", "", "configmaps")
                .ns(n)
                .named("carbon-kube-accounting"),
        ],
        &[
            &dangerous[..],
            &[
                access("delete", "", "pods").ns("default").named("p"),
                access("create", "", "pods").ns("default"),
                access("create", "", "pods")
                    .ns("default")
                    .named("p")
                    .sub("binding"),
                access("create", "", "pods")
                    .ns("default")
                    .named("p")
                    .sub("eviction"),
                access("update", "", "configmaps")
                    .ns(n)
                    .named("carbon-intensity-data"),
                access("update", "", "configmaps")
                    .ns(n)
                    .named("carbon-kube-accounting"),
                access("get", "", "configmaps").ns(n).named("other"),
                access("update", "", "namespaces").named("default"),
                access("patch", "", "namespaces").named("default"),
                access("update", "coordination.k8s.io", "leases")
                    .ns(n)
                    .named(&scheduler_lease),
                access("update", "coordination.k8s.io", "leases")
                    .ns("kube-system")
                    .named("kube-scheduler"),
            ],
        ]
        .concat(),
    )
    .await;

    // The migrator: reads pods, nodes, namespaces and the snapshot; evicts
    // through the Eviction API only (never deletes or patches pods); keeps
    // its state on ReplicaSets, StatefulSets and Jobs; writes Events; holds
    // its Lease.
    assert_access(
        &client,
        &sa("migrator"),
        &[
            access("list", "", "pods"),
            access("watch", "", "pods"),
            access("create", "", "pods")
                .ns("default")
                .named("p")
                .sub("eviction"),
            access("list", "", "nodes"),
            access("list", "", "namespaces"),
            access("watch", "apps", "replicasets"),
            access("patch", "apps", "replicasets")
                .ns("default")
                .named("r"),
            access("patch", "apps", "statefulsets")
                .ns("default")
                .named("s"),
            access("patch", "batch", "jobs").ns("default").named("j"),
            access("get", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
            // The runtime overrides (migration.* keys).
            access("watch", "", "configmaps")
                .ns(n)
                .named("carbon-kube-config"),
            access("create", "events.k8s.io", "events").ns("default"),
            access("create", "coordination.k8s.io", "leases").ns(n),
            access("update", "coordination.k8s.io", "leases")
                .ns(n)
                .named(&migrator_lease),
        ],
        &[
            &dangerous[..],
            &[
                access("delete", "", "pods").ns("default").named("p"),
                access("patch", "", "pods").ns("default").named("p"),
                access("create", "", "pods").ns("default"),
                access("delete", "apps", "replicasets")
                    .ns("default")
                    .named("r"),
                access("patch", "apps", "deployments")
                    .ns("default")
                    .named("d"),
                access("update", "apps", "replicasets")
                    .ns("default")
                    .named("r"),
                access("update", "", "configmaps")
                    .ns(n)
                    .named("carbon-intensity-data"),
                access("update", "", "configmaps")
                    .ns(n)
                    .named("carbon-kube-config"),
                access("update", "coordination.k8s.io", "leases")
                    .ns(n)
                    .named(&gates_lease),
            ],
        ]
        .concat(),
    )
    .await;

    // The tuner (shadow mode): its own ConfigMap in its namespace, nothing
    // else; it trains on files and reads nothing from the API.
    assert_access(
        &client,
        &sa("tuner"),
        &[
            access("create", "", "configmaps").ns(n),
            access("get", "", "configmaps")
                .ns(n)
                .named("carbon-kube-tuner"),
            access("update", "", "configmaps")
                .ns(n)
                .named("carbon-kube-tuner"),
        ],
        &[
            &dangerous[..],
            &[
                access("get", "", "configmaps")
                    .ns(n)
                    .named("carbon-intensity-data"),
                access("update", "", "configmaps")
                    .ns(n)
                    .named("carbon-intensity-data"),
                access("delete", "", "configmaps")
                    .ns(n)
                    .named("carbon-kube-tuner"),
                access("list", "", "configmaps").ns(n),
                access("create", "", "configmaps").ns("default"),
                access("update", "", "configmaps")
                    .ns("default")
                    .named("carbon-kube-tuner"),
                access("list", "", "pods"),
                access("list", "", "nodes"),
                access("create", "coordination.k8s.io", "leases").ns(n),
                access("create", "events.k8s.io", "events").ns(n),
            ],
        ]
        .concat(),
    )
    .await;

    // The accounting controller: lists and watches pods and nodes, reads the
    // snapshot, reads back and writes its own ConfigMap, holds its Lease;
    // writes nothing else.
    assert_access(
        &client,
        &sa("accounting"),
        &[
            access("list", "", "pods"),
            access("watch", "", "pods"),
            access("list", "", "nodes"),
            access("watch", "", "nodes"),
            access("get", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
            access("watch", "", "configmaps")
                .ns(n)
                .named("carbon-intensity-data"),
            access("get", "", "configmaps")
                .ns(n)
                .named("carbon-kube-accounting"),
            access("patch", "", "configmaps")
                .ns(n)
                .named("carbon-kube-accounting"),
            access("create", "", "configmaps").ns(n),
            access("create", "coordination.k8s.io", "leases").ns(n),
            access("update", "coordination.k8s.io", "leases")
                .ns(n)
                .named(&accounting_lease),
        ],
        &[
            &dangerous[..],
            &[
                access("get", "", "pods").ns("default").named("p"),
                access("patch", "", "pods").ns("default").named("p"),
                access("delete", "", "pods").ns("default").named("p"),
                access("create", "", "pods")
                    .ns("default")
                    .named("p")
                    .sub("eviction"),
                access("patch", "", "configmaps")
                    .ns(n)
                    .named("carbon-intensity-data"),
                access("patch", "", "configmaps")
                    .ns(n)
                    .named("carbon-kube-tuner"),
                access("delete", "", "configmaps")
                    .ns(n)
                    .named("carbon-kube-accounting"),
                access("list", "", "configmaps").ns(n),
                access("create", "", "configmaps").ns("default"),
                access("list", "", "namespaces"),
                access("create", "events.k8s.io", "events").ns("default"),
                access("update", "coordination.k8s.io", "leases")
                    .ns(n)
                    .named(&migrator_lease),
            ],
        ]
        .concat(),
    )
    .await;

    // Nothing cluster-wide that a namespaced Role could do: every ClusterRole
    // rule names cluster-scoped resources or ones needed in every namespace.
    for role in of_kind(&objects, "ClusterRole") {
        for rule in role["rules"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                assert!(
                    // The migrator's evictions and owner state are needed
                    // in every namespace it watches.
                    [
                        "nodes",
                        "pods",
                        "events",
                        "namespaces",
                        "pods/eviction",
                        "replicasets",
                        "statefulsets",
                        "jobs",
                    ]
                    .contains(&resource.as_str().unwrap()),
                    "{}: {resource} could be namespaced",
                    kind_name(role)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Alert rules and dashboards

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("promtool");
    let chart = chart_dir();
    let rules = chart.join("rules/carbon-kube.rules.yaml");
    let out = run(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
    // Every unit-test file under tests/, and every alert tested in one.
    let mut tested = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(chart.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".test.yaml") {
            continue;
        }
        files += 1;
        let out = run(&promtool, &["test", "rules", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "promtool test rules {}:\n{}",
            path.display(),
            text(&out)
        );
        let cases: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for case in cases["tests"].as_array().unwrap() {
            for t in case["alert_rule_test"].as_array().into_iter().flatten() {
                if t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                    tested.insert(t["alertname"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    assert!(
        files > 0,
        "no promtool unit tests in {}",
        chart.join("tests").display()
    );
    let alerts: BTreeSet<String> = rule_groups()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    let untested: Vec<_> = alerts.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "alerts no unit test sees firing: {untested:?}"
    );
}

/// The groups of every rule file in rules/.
fn rule_groups() -> Vec<Value> {
    let mut groups = Vec::new();
    for entry in std::fs::read_dir(chart_dir().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        let file: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        groups.extend(file["groups"].as_array().unwrap().iter().cloned());
    }
    groups
}

/// The dashboards in dashboards/, by file stem.
fn dashboards() -> BTreeMap<String, (String, Value)> {
    std::fs::read_dir(chart_dir().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, (text, json))
        })
        .collect()
}

#[test]
fn the_chart_ships_the_tested_rules_and_the_dashboards_for_the_grafana_sidecar() {
    let objects = render("carbon-kube", "carbon-kube", "ha", &[]);
    let rules = of_kind(&objects, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    // The ha scenario enables the gates, the tuner and the migrator: their
    // rule files too, in order.
    let mut groups = Vec::new();
    for file in [
        "carbon-kube.rules.yaml",
        "carbon-kube-gates.rules.yaml",
        "carbon-kube-tuner.rules.yaml",
        "carbon-kube-migrator.rules.yaml",
    ] {
        let rule_file: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(chart_dir().join("rules").join(file)).unwrap(),
        )
        .unwrap();
        groups.extend(rule_file["groups"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(rules[0]["spec"]["groups"], Value::Array(groups));
    let without_gates = render("carbon-kube", "carbon-kube", "ha", &["gates.enabled=false"]);
    let text = serde_json::to_string(&of_kind(&without_gates, "PrometheusRule")[0]).unwrap();
    assert!(
        !text.contains("CarbonKubeGate"),
        "gate alerts without the gates"
    );
    let without_tuner = render("carbon-kube", "carbon-kube", "ha", &["tuner.enabled=false"]);
    let text = serde_json::to_string(&of_kind(&without_tuner, "PrometheusRule")[0]).unwrap();
    assert!(
        !text.contains("CarbonKubeTuner"),
        "tuner alerts without the tuner"
    );
    assert!(
        !of_kind(&without_tuner, "ConfigMap")
            .iter()
            .any(|c| c["metadata"]["name"] == "carbon-kube-dashboard-rl-tuner"),
        "the RL Tuner dashboard without the tuner"
    );

    let dashboards = dashboards();
    let titles: BTreeSet<&str> = dashboards
        .values()
        .map(|(_, d)| d["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Carbon-Kube Overview",
        "Carbon-Kube Scheduler Performance",
        "Carbon-Kube RL Tuner",
        "Carbon-Kube Accounting",
    ] {
        assert!(
            titles.contains(wanted),
            "no dashboard {wanted:?}: {titles:?}"
        );
    }
    let uids: BTreeSet<&str> = dashboards
        .values()
        .map(|(_, d)| d["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids.len(), dashboards.len(), "dashboard uids are unique");
    let maps = of_kind(&objects, "ConfigMap");
    for (stem, (text, _)) in &dashboards {
        // Pretty-printed: reviewable one field per line.
        assert!(
            text.lines().count() > 50 && text.lines().all(|l| l.len() < 400),
            "{stem}.json is not pretty-printed"
        );
        let cm = maps
            .iter()
            .find(|c| c["metadata"]["name"] == format!("carbon-kube-dashboard-{stem}"))
            .unwrap_or_else(|| panic!("no ConfigMap for {stem}"));
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(
            cm["metadata"]["annotations"]["grafana_folder"],
            "Carbon-Kube"
        );
        let shipped = cm["data"][format!("carbon-kube-{stem}.json")]
            .as_str()
            .unwrap();
        assert_eq!(shipped.trim_end(), text.trim_end(), "{stem}");
    }
    // Off by default: no monitoring objects without the CRDs or Grafana.
    let defaults = render("carbon-kube", "carbon-kube", "default", &[]);
    for kind in ["PrometheusRule", "ServiceMonitor"] {
        assert!(
            of_kind(&defaults, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
}

/// kube-scheduler's metrics the dashboards may use, as defined in
/// k8s.io/kubernetes v1.37.2 pkg/scheduler/metrics/metrics.go and listed in
/// <https://kubernetes.io/docs/reference/instrumentation/metrics/> (name,
/// type). Only stable and beta metrics.
const KUBE_SCHEDULER_METRICS: &[(&str, &str)] = &[
    ("scheduler_schedule_attempts_total", "counter"),
    ("scheduler_scheduling_attempt_duration_seconds", "histogram"),
    ("scheduler_pending_pods", "gauge"),
    ("scheduler_preemption_attempts_total", "counter"),
    ("scheduler_pod_scheduling_sli_duration_seconds", "histogram"),
    (
        "scheduler_framework_extension_point_duration_seconds",
        "histogram",
    ),
];

/// Series names an exposition declares: counters as `<name>_total`,
/// histograms as `_bucket`, `_sum`, `_count`, everything else as is.
fn series_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.extend(expand(name, kind));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            names.insert(name.to_owned());
        }
    }
    names
}

fn expand(name: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" => vec![format!("{}_total", name.trim_end_matches("_total"))],
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        _ => vec![name.to_owned()],
    }
}

/// A `carbon-kube` child process, killed (by its id) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str], kubeconfig: Option<&Path>, log: &Path) -> Running {
    let log_file = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_carbon-kube"));
    match kubeconfig {
        Some(path) => cmd.env("KUBECONFIG", path),
        None => cmd.env_remove("KUBECONFIG"),
    };
    let child = cmd
        .args(args)
        .env_remove("ELECTRICITY_MAPS_API_KEY")
        .env("CARBON_KUBE_LOG_FORMAT", "text")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    Running(child)
}

/// Waits for `url` to answer 200 and returns its body.
async fn get_ok(http: &reqwest::Client, url: &str, log: &Path) -> String {
    let found = wait_until(
        format!("{url} to answer 200"),
        Duration::from_secs(60),
        || async {
            match http.get(url).send().await {
                Ok(r) if r.status().is_success() => match r.text().await {
                    Ok(body) => Progress::Done(body),
                    Err(e) => Progress::Waiting(e.to_string()),
                },
                Ok(r) => Progress::Waiting(r.status().to_string()),
                Err(e) => Progress::Waiting(e.to_string()),
            }
        },
    )
    .await;
    found.unwrap_or_else(|e| {
        panic!(
            "{e}\nlog:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

/// Metric names the running binaries export: the poller (static provider,
/// to a file, no cluster) and the extender (standalone, reading that file,
/// with the chart's rendered settings), each scraped on /metrics.
async fn exported_metrics() -> BTreeSet<String> {
    carbon_kube_testkit::ensure_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.json");
    let http = reqwest::Client::new();

    let poller_port = free_port().to_string();
    let poller_log = dir.path().join("poller.log");
    let _poller = spawn(
        &[
            "poller",
            "--interval",
            "10s",
            "--zones",
            "DE,FR",
            "--chain",
            "default=static",
            "--output",
            snapshot.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{poller_port}"),
        ],
        None,
        &poller_log,
    );
    let base = format!("http://127.0.0.1:{poller_port}");
    get_ok(&http, &format!("{base}/readyz"), &poller_log).await;
    let mut names = series_names(&get_ok(&http, &format!("{base}/metrics"), &poller_log).await);

    // The extender with the settings file the chart renders.
    let objects = render("carbon-kube", "carbon-kube", "ha", &[]);
    let cm = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "carbon-kube-scheduler")
        .unwrap();
    let settings = dir.path().join("extender.yaml");
    std::fs::write(&settings, cm["data"]["extender.yaml"].as_str().unwrap()).unwrap();
    let extender_port = free_port().to_string();
    let extender_log = dir.path().join("extender.log");
    let _extender = spawn(
        &[
            "extender",
            "--standalone",
            "--snapshot-file",
            snapshot.to_str().unwrap(),
            "--config",
            settings.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{extender_port}"),
        ],
        None,
        &extender_log,
    );
    let base = format!("http://127.0.0.1:{extender_port}");
    get_ok(&http, &format!("{base}/readyz"), &extender_log).await;
    // Requests recorded from a real kube-scheduler (the extender's fixtures),
    // so the per-request families (decisions, latency) have series.
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../carbon-kube-extender/tests/fixtures");
    for verb in ["filter", "prioritize"] {
        let body = std::fs::read(fixtures.join(format!("recorded-{verb}-nodes.json"))).unwrap();
        let answer = http
            .post(format!("{base}/{verb}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{verb}: {}", answer.status());
    }
    names.extend(series_names(
        &get_ok(&http, &format!("{base}/metrics"), &extender_log).await,
    ));

    // The gate controller and webhook need Kubernetes: the test control plane.
    let cp = shared().await;
    let ns = cp.test_namespace("chart-gates").await.unwrap();
    // A tuner run's status, which the gate controller exports (the tuner is a
    // CronJob, never scraped); tests/tuner.rs writes one with the real tuner.
    create_tuner_status(&ns).await;
    // A namespace budget and the accounting usage, so the budget families
    // (--budgets) have series.
    create_budget_usage(&ns).await;
    let controller_port = free_port().to_string();
    let controller_log = dir.path().join("gates-controller.log");
    let _controller = spawn(
        &[
            "gates",
            "controller",
            "--namespace",
            ns.name(),
            "--watch-namespace",
            ns.name(),
            "--no-leader-elect",
            "--budgets",
            "--health-listen",
            &format!("127.0.0.1:{controller_port}"),
        ],
        Some(cp.kubeconfig_path()),
        &controller_log,
    );
    // A gated pod with no deadline at all: released at once (fail open), so
    // the per-reason release family has a series.
    let mut pod = carbon_kube_testkit::pod_named("gated").build();
    pod.spec.as_mut().unwrap().scheduling_gates =
        Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: "carbon-kube.io/green-window".to_owned(),
        }]);
    ns.create_pod(&pod).await.unwrap();
    let base = format!("http://127.0.0.1:{controller_port}");
    get_ok(&http, &format!("{base}/readyz"), &controller_log).await;
    let metrics = wait_until(
        "the gate controller to count a release",
        Duration::from_secs(60),
        || async {
            match http.get(format!("{base}/metrics")).send().await {
                Ok(r) => match r.text().await {
                    Ok(body)
                        if body.contains("carbon_kube_gate_releases_total{")
                            && body.contains("carbon_rl_tuner_reward_average{")
                            && body.contains("carbon_kube_budget_state{") =>
                    {
                        Progress::Done(body)
                    }
                    Ok(_) => Progress::Waiting(
                        "no release counted, no tuner run or no budget assessed".into(),
                    ),
                    Err(e) => Progress::Waiting(e.to_string()),
                },
                Err(e) => Progress::Waiting(e.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nlog:\n{}",
            std::fs::read_to_string(&controller_log).unwrap_or_default()
        )
    });
    names.extend(series_names(&metrics));

    let (cert, key) = cp.issue_serving_certificate(&["127.0.0.1"]).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let webhook_health = free_port().to_string();
    let webhook_log = dir.path().join("gates-webhook.log");
    let _webhook = spawn(
        &[
            "gates",
            "webhook",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--health-listen",
            &format!("127.0.0.1:{webhook_health}"),
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        Some(cp.kubeconfig_path()),
        &webhook_log,
    );
    let base = format!("http://127.0.0.1:{webhook_health}");
    get_ok(&http, &format!("{base}/readyz"), &webhook_log).await;
    names.extend(series_names(
        &get_ok(&http, &format!("{base}/metrics"), &webhook_log).await,
    ));

    // The migrator, confined to the test namespace (nothing opted in there).
    let migrator_port = free_port().to_string();
    let migrator_log = dir.path().join("migrator.log");
    let _migrator = spawn(
        &[
            "migrator",
            "--namespace",
            ns.name(),
            "--watch-namespace",
            ns.name(),
            "--no-leader-elect",
            "--health-listen",
            &format!("127.0.0.1:{migrator_port}"),
        ],
        Some(cp.kubeconfig_path()),
        &migrator_log,
    );
    let base = format!("http://127.0.0.1:{migrator_port}");
    get_ok(&http, &format!("{base}/readyz"), &migrator_log).await;
    names.extend(series_names(
        &get_ok(&http, &format!("{base}/metrics"), &migrator_log).await,
    ));

    // The accounting controller, confined to the test namespace, with the
    // poller's snapshot, a node in DE and a pod placed by Carbon-Kube there:
    // every counter family gets a series.
    let snapshot_json = std::fs::read_to_string(&snapshot).unwrap();
    ns.api::<k8s_openapi::api::core::v1::ConfigMap>()
        .create(
            &PostParams::default(),
            &k8s_openapi::api::core::v1::ConfigMap {
                metadata: ObjectMeta {
                    name: Some("carbon-intensity-data".to_owned()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "carbon-intensity.json".to_owned(),
                    snapshot_json,
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let node = ns
        .create_nodes(
            &carbon_kube_testkit::nodes_in_zone("eu-central", "de-a")
                .named("acct")
                .with_label("carbon-kube.io/grid-zone", "DE")
                .with_cpu("4")
                .with_memory("8Gi"),
        )
        .await
        .unwrap();
    ns.create_pod(
        &carbon_kube_testkit::pod_named("accounted")
            .requesting("1", "1Gi")
            .scheduled_by("carbon-kube")
            .bound_to(node[0].metadata.name.clone().unwrap())
            .build(),
    )
    .await
    .unwrap();
    let accounting_port = free_port().to_string();
    let accounting_log = dir.path().join("accounting.log");
    let _accounting = spawn(
        &[
            "accounting",
            "--namespace",
            ns.name(),
            "--watch-namespace",
            ns.name(),
            "--no-leader-elect",
            "--tick",
            "1s",
            "--health-listen",
            &format!("127.0.0.1:{accounting_port}"),
        ],
        Some(cp.kubeconfig_path()),
        &accounting_log,
    );
    let base = format!("http://127.0.0.1:{accounting_port}");
    get_ok(&http, &format!("{base}/readyz"), &accounting_log).await;
    let metrics = wait_until(
        "the accounting controller to account the pod",
        Duration::from_secs(60),
        || async {
            match http.get(format!("{base}/metrics")).send().await {
                Ok(r) => match r.text().await {
                    Ok(body)
                        if body.contains("carbon_kube_accounting_counterfactual_grams_total{") =>
                    {
                        Progress::Done(body)
                    }
                    Ok(_) => Progress::Waiting("no accounted pod yet".to_owned()),
                    Err(e) => Progress::Waiting(e.to_string()),
                },
                Err(e) => Progress::Waiting(e.to_string()),
            }
        },
    )
    .await
    .unwrap();
    names.extend(series_names(&metrics));
    names
}

/// Writes a `carbon-kube-tuner` ConfigMap with a run status (every optimiser,
/// unseen zones) into `ns`, with the codec the tuner writes it with.
/// Gives the test namespace a daily budget and writes the accounting
/// controller's usage document with today's use, as `--budgets` reads them.
async fn create_budget_usage(ns: &TestNamespace) {
    use carbon_kube_model::accounting::{
        ACCOUNTING_CONFIGMAP, ANNOTATION_BUDGET_GRAMS, ANNOTATION_BUDGET_PERIOD, DayUsage,
        USAGE_KEY, UsageDocument,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let namespaces: Api<Namespace> = Api::all(ns.client());
    namespaces
        .patch(
            ns.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                ANNOTATION_BUDGET_GRAMS: "1000",
                ANNOTATION_BUDGET_PERIOD: "day",
            }}})),
        )
        .await
        .unwrap();
    let doc = UsageDocument {
        generated_at: now,
        namespaces: BTreeMap::from([(
            ns.name().to_owned(),
            vec![DayUsage {
                day_start: now - now.rem_euclid(86_400),
                operational_grams: 400.0,
                ..DayUsage::default()
            }],
        )]),
    };
    let cm = k8s_openapi::api::core::v1::ConfigMap {
        metadata: ObjectMeta {
            name: Some(ACCOUNTING_CONFIGMAP.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            USAGE_KEY.to_owned(),
            serde_json::to_string(&doc).unwrap(),
        )])),
        ..Default::default()
    };
    ns.api::<k8s_openapi::api::core::v1::ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

async fn create_tuner_status(ns: &TestNamespace) {
    use carbon_kube_model::tuner::{
        OptimiserResult, TUNER_CONFIGMAP, TUNER_STATUS_KEY, TunerStatus,
    };
    let status = TunerStatus {
        finished_at: 1_800_000_000,
        mode: "shadow".into(),
        schedule: Some("0 */6 * * *".into()),
        chosen: "cma-es".into(),
        promoted: false,
        published: false,
        reason: "test".into(),
        optimisers: ["current", "grid", "cma-es", "ppo"]
            .iter()
            .map(|o| OptimiserResult {
                optimiser: (*o).to_owned(),
                unseen_saving_ratio: Some(0.1),
                unseen_reward: Some(0.1),
                ..OptimiserResult::default()
            })
            .collect(),
    };
    let cm = k8s_openapi::api::core::v1::ConfigMap {
        metadata: ObjectMeta {
            name: Some(TUNER_CONFIGMAP.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            TUNER_STATUS_KEY.to_owned(),
            status.to_json(),
        )])),
        ..Default::default()
    };
    ns.api::<k8s_openapi::api::core::v1::ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

/// PromQL expressions with the Grafana variables they use replaced by values
/// (`$__rate_interval` → `5m`, ...; `$namespace` only ever appears inside
/// label matcher strings).
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
}

/// Every (where, expression) of the dashboards and the alert rules.
fn all_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (stem, (_, dashboard)) in dashboards() {
        let mut panels: Vec<&Value> = Vec::new();
        for p in dashboard["panels"].as_array().unwrap() {
            panels.push(p);
            panels.extend(p["panels"].as_array().into_iter().flatten());
        }
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.is_empty(),
                    "{stem}: panel {} has an empty query",
                    p["title"]
                );
                out.push((format!("{stem}: {}", p["title"]), grafana_to_promql(expr)));
            }
        }
        for v in dashboard["templating"]["list"].as_array().unwrap() {
            let Some(query) = v["query"]["query"].as_str() else {
                continue;
            };
            // label_values(EXPR, label): EXPR is PromQL.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map(|(e, _)| e.trim())
                .unwrap_or_else(|| {
                    panic!("{stem}: variable query {query:?} is not label_values(EXPR, label)")
                });
            out.push((format!("{stem}: variable {}", v["name"]), inner.to_owned()));
        }
    }
    for group in rule_groups() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            out.push((
                format!("rule {name}"),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

struct MetricNames(BTreeSet<String>);

impl promql_parser::util::ExprVisitor for MetricNames {
    type Error = String;

    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, String> {
        use promql_parser::parser::Expr;
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let name = selector
            .name
            .clone()
            .ok_or_else(|| format!("selector without a metric name: {selector}"))?;
        self.0.insert(name);
        Ok(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promql_expression_names_only_exported_metrics() {
    let exported = exported_metrics().await;
    let kube_scheduler: BTreeSet<String> = KUBE_SCHEDULER_METRICS
        .iter()
        .flat_map(|(name, kind)| expand(name, kind))
        .collect();
    // The metrics the design names are really exported.
    for name in [
        "carbon_kube_scheduler_decisions_total",
        "carbon_kube_scheduler_latency_seconds_bucket",
        "carbon_kube_carbon_intensity_current",
        "carbon_kube_carbon_data_age_seconds",
        "carbon_kube_poller_requests_total",
        "carbon_kube_poller_last_success_timestamp_seconds",
        "carbon_kube_deferred_pods",
        "carbon_kube_deferral_expected_savings_grams_total",
        "carbon_kube_gate_releases_total",
        "carbon_kube_gates_webhook_errors_total",
        "carbon_kube_migrations_total",
        "carbon_kube_migration_expected_savings_grams_total",
        "carbon_kube_migration_landings_total",
        "carbon_rl_tuner_reward_average",
        "carbon_rl_tuner_validation_saving_ratio",
        "carbon_rl_tuner_last_success_timestamp_seconds",
    ] {
        assert!(exported.contains(name), "{name} not exported: {exported:?}");
    }
    let expressions = all_expressions();
    assert!(
        expressions.len() > 30,
        "only {} expressions",
        expressions.len()
    );
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in &expressions {
        let ast = match promql_parser::parser::parse(expr) {
            Ok(ast) => ast,
            Err(e) => {
                problems.push(format!("{place}: does not parse: {e}\n  {expr}"));
                continue;
            }
        };
        let mut names = MetricNames(BTreeSet::new());
        if let Err(e) = promql_parser::util::walk_expr(&mut names, &ast) {
            problems.push(format!("{place}: {e}"));
        }
        for name in names.0 {
            if !exported.contains(&name) && !kube_scheduler.contains(&name) {
                problems.push(format!(
                    "{place}: {name} is exported by no binary nor kube-scheduler"
                ));
            }
            used.insert(name);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dashboards show kube-scheduler's own metrics too.
    assert!(used.iter().any(|n| n.starts_with("scheduler_")), "{used:?}");
}

// ---------------------------------------------------------------------------
// The tuner: CronJob → ConfigMap → the gate controller's /metrics

/// A copy of `kubeconfig` whose user acts as `user` (impersonation), so a
/// process runs with exactly that ServiceAccount's RBAC.
fn impersonating(kubeconfig: &Path, user: &str, out: &Path) -> PathBuf {
    let mut config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    for u in config["users"].as_array_mut().unwrap() {
        u["user"]["as"] = Value::String(user.to_owned());
    }
    std::fs::write(out, serde_json::to_string(&config).unwrap()).unwrap();
    out.to_owned()
}

/// The value of the first series of `exposition` whose line starts with `prefix`.
fn sample(exposition: &str, prefix: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The tuner as the chart deploys it, against the real API server: with the
/// CronJob's rendered arguments (on a small slice of the shared data) and
/// only the tuner's ServiceAccount (impersonated), it writes
/// `carbon-kube-tuner` (create, then update on the second run); the gate
/// controller, with only its own ServiceAccount, exports the run on
/// /metrics, and forgets it when the ConfigMap goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tuners_runs_reach_the_gate_controllers_metrics_through_its_configmap() {
    carbon_kube_testkit::ensure_crypto_provider();
    let cp = shared().await;
    let ns = restricted_namespace("chart-tuner").await;
    let objects = install(
        &ns,
        "default",
        &[
            "tuner.enabled=true",
            "tuner.mode=active",
            "gates.enabled=true",
        ],
    )
    .await;
    let n = ns.name();
    let client = ns.client();
    let tuner_sa = format!("system:serviceaccount:{n}:{n}-carbon-kube-tuner");
    // Active mode: it may also publish into carbon-kube-config.
    assert!(
        allowed(
            &client,
            &tuner_sa,
            access("update", "", "configmaps")
                .ns(n)
                .named("carbon-kube-config")
        )
        .await
    );
    let dir = tempfile::tempdir().unwrap();
    let as_tuner = impersonating(
        cp.kubeconfig_path(),
        &tuner_sa,
        &dir.path().join("tuner.kubeconfig"),
    );
    // The CronJob's arguments, with the replay window and the size of the run
    // replaced: a small run on the shared data.
    let cron = of_kind(&objects, "CronJob")
        .into_iter()
        .find(|c| c["metadata"]["name"] == format!("{n}-carbon-kube-tuner"))
        .unwrap();
    let rendered: Vec<String> =
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
    assert!(rendered.contains(&"--apply".to_owned()), "{rendered:?}");
    assert!(rendered.contains(&"--active".to_owned()), "{rendered:?}");
    let data = carbon_kube_testkit::shared_data();
    let mut args: Vec<String> = rendered
        .iter()
        .filter(|a| {
            ![
                "--traces=",
                "--jobs=",
                "--optimisers=",
                "--budget=",
                "--output-dir=",
                "--report=",
            ]
            .iter()
            .any(|p| a.starts_with(p))
        })
        .cloned()
        .collect();
    for a in [
        format!(
            "--traces={}",
            data.join("carbon_intensity/electricitymaps_hourly")
                .display()
        ),
        format!(
            "--jobs={}",
            data.join("workload_traces/gaia/azure-100k.csv").display()
        ),
        "--optimisers=grid".to_owned(),
        "--budget=2".to_owned(),
        "--train-zones=DE".to_owned(),
        "--unseen-zones=GB".to_owned(),
        "--train-starts=2022-05-09".to_owned(),
        "--validate-starts=2023-05-08".to_owned(),
        "--days=2".to_owned(),
        "--max-jobs=60".to_owned(),
        "--validate-seeds=1".to_owned(),
        format!("--output-dir={}", dir.path().join("runs").display()),
        format!("--kubeconfig={}", as_tuner.display()),
    ] {
        args.push(a);
    }
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = ns.api();
    let mut versions = Vec::new();
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_carbon-kube"))
            .args(&args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("CARBON_KUBE_LOG_FORMAT", "text")
            .output()
            .unwrap();
        assert!(out.status.success(), "tune {args:?}:\n{}", text(&out));
        let cm = configmaps.get("carbon-kube-tuner").await.unwrap();
        versions.push(cm.metadata.resource_version.clone().unwrap());
    }
    assert_ne!(
        versions[0], versions[1],
        "the second run updates the ConfigMap"
    );
    let cm = configmaps.get("carbon-kube-tuner").await.unwrap();
    let data = cm.data.unwrap();
    let status = carbon_kube_model::tuner::TunerStatus::from_json(&data["tunerStatus"]).unwrap();
    assert_eq!(status.mode, "active");
    assert_eq!(status.schedule.as_deref(), Some("0 */6 * * *"));
    let names: Vec<&str> = status
        .optimisers
        .iter()
        .map(|o| o.optimiser.as_str())
        .collect();
    assert_eq!(names, ["current", "grid"]);
    // The proposal beside the status reads back with the components' codec.
    assert!(data.contains_key("validUntil"), "{data:?}");
    // Published only when promoted; then carbon-kube-config holds it.
    let published = configmaps.get_opt("carbon-kube-config").await.unwrap();
    assert_eq!(status.published, status.promoted);
    assert_eq!(published.is_some(), status.published, "{status:?}");
    // What --output-dir wrote locally is what the cluster got.
    let local: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("runs/carbon-kube-tuner.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        local["data"]["tunerStatus"].as_str(),
        Some(data["tunerStatus"].as_str())
    );

    // The gate controller, as its ServiceAccount, exports the run.
    let as_controller = impersonating(
        cp.kubeconfig_path(),
        &format!("system:serviceaccount:{n}:{n}-carbon-kube-gates-controller"),
        &dir.path().join("controller.kubeconfig"),
    );
    let port = free_port().to_string();
    let log = dir.path().join("gates-controller.log");
    let _controller = spawn(
        &[
            "gates",
            "controller",
            "--namespace",
            n,
            "--watch-namespace",
            n,
            "--no-leader-elect",
            "--health-listen",
            &format!("127.0.0.1:{port}"),
        ],
        Some(&as_controller),
        &log,
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let scrape = |want: &'static str| {
        let (http, url, log) = (http.clone(), url.clone(), log.clone());
        async move {
            wait_until(want, Duration::from_secs(60), || async {
                match http.get(&url).send().await {
                    Ok(r) => match r.text().await {
                        Ok(body) if body.contains(want) => Progress::Done(body),
                        Ok(_) => Progress::Waiting(format!("no {want}")),
                        Err(e) => Progress::Waiting(e.to_string()),
                    },
                    Err(e) => Progress::Waiting(e.to_string()),
                }
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\nlog:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
        }
    };
    let body = scrape(r#"carbon_rl_tuner_chosen{optimiser="grid"} 1"#).await;
    #[allow(clippy::cast_precision_loss)]
    let finished = status.finished_at as f64;
    assert_eq!(
        sample(&body, "carbon_rl_tuner_last_success_timestamp_seconds "),
        Some(finished)
    );
    assert_eq!(
        sample(&body, "carbon_rl_tuner_schedule_interval_seconds "),
        Some(21_600.0)
    );
    assert_eq!(sample(&body, "carbon_rl_tuner_active "), Some(1.0));
    assert_eq!(
        sample(&body, "carbon_rl_tuner_promoted "),
        Some(f64::from(u8::from(status.promoted)))
    );
    for row in &status.optimisers {
        let o = &row.optimiser;
        assert_eq!(
            sample(
                &body,
                &format!(
                    r#"carbon_rl_tuner_validation_saving_ratio{{optimiser="{o}",zones="trained"}}"#
                )
            ),
            Some(row.validation_saving_ratio),
            "{o}"
        );
        assert_eq!(
            sample(
                &body,
                &format!(r#"carbon_rl_tuner_reward_average{{optimiser="{o}",period="unseen"}}"#)
            ),
            row.unseen_reward,
            "{o}"
        );
    }
    // The ConfigMap goes: so does the run.
    configmaps
        .delete("carbon-kube-tuner", &Default::default())
        .await
        .unwrap();
    let body = scrape("carbon_rl_tuner_last_success_timestamp_seconds 0").await;
    assert!(!body.contains("carbon_rl_tuner_reward_average{"), "{body}");
}
