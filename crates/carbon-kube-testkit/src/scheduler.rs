//! kube-scheduler instances started by tests: the configuration builder
//! ([`SchedulerConfig`], [`Extender`]) and the running handle ([`Scheduler`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::Error;
use crate::control_plane::ControlPlane;
use crate::fixtures::NODE_POOL_LABEL;
use crate::process::{Process, free_port, log_tail};
use crate::readiness::{health_client, http_ok, wait_ready};

/// API version of the `KubeSchedulerConfiguration` the builder writes.
pub const SCHEDULER_CONFIG_API_VERSION: &str = "kubescheduler.config.k8s.io/v1";

/// How long a scheduler may take to become ready.
const SCHEDULER_START_TIMEOUT: Duration = Duration::from_secs(90);

/// A `KubeSchedulerConfiguration`, built or read from YAML. When the scheduler
/// is started the harness sets `clientConnection.kubeconfig` to its admin
/// kubeconfig and turns leader election off (several schedulers share one API
/// server in tests); everything else is passed through as is.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    document: Value,
    verbosity: Option<u8>,
    binary: &'static str,
    profiling: bool,
}

/// The stock kube-scheduler binary.
pub const STOCK_SCHEDULER: &str = "kube-scheduler";
/// kube-scheduler with Carbon-Kube's framework plugin compiled in
/// (`scheduler-plugin/`, built by `make k8s-bin` with `test/k8s/build-plugin.sh`).
pub const CARBON_SCHEDULER: &str = "kube-scheduler-carbon";

impl SchedulerConfig {
    /// One profile named `scheduler_name` with the default plugins. Pods opt in
    /// with `spec.schedulerName: <scheduler_name>`.
    pub fn new(scheduler_name: impl Into<String>) -> Self {
        Self {
            document: json!({
                "apiVersion": SCHEDULER_CONFIG_API_VERSION,
                "kind": "KubeSchedulerConfiguration",
                "profiles": [{ "schedulerName": scheduler_name.into() }],
            }),
            verbosity: None,
            binary: STOCK_SCHEDULER,
            profiling: false,
        }
    }

    /// A configuration read from YAML (or JSON), e.g. the one the project ships.
    pub fn from_yaml(yaml: &str) -> Result<Self, Error> {
        let document: Value =
            serde_saphyr::from_str(yaml).map_err(|e| Error::SchedulerConfig(e.to_string()))?;
        if document.get("kind").and_then(Value::as_str) != Some("KubeSchedulerConfiguration") {
            return Err(Error::SchedulerConfig(
                "`kind` must be KubeSchedulerConfiguration".to_owned(),
            ));
        }
        Ok(Self {
            document,
            verbosity: None,
            binary: STOCK_SCHEDULER,
            profiling: false,
        })
    }

    /// Runs this binary of the binary directory instead of the stock
    /// kube-scheduler, e.g. [`CARBON_SCHEDULER`].
    pub fn with_binary(mut self, binary: &'static str) -> Self {
        self.binary = binary;
        self
    }

    /// The binary it runs with.
    pub fn binary(&self) -> &'static str {
        self.binary
    }

    /// Serves Go's `/debug/pprof` without credentials (`--profiling`), for
    /// benches that profile the scheduler ([`Scheduler::cpu_profile`]).
    pub fn with_profiling(mut self) -> Self {
        self.profiling = true;
        self
    }

    /// Sets the args of plugin `name` in every profile (added to
    /// `pluginConfig`, or replacing that plugin's entry), e.g. the carbon
    /// plugin's threshold and namespace.
    pub fn with_plugin_args(mut self, name: &str, args: Value) -> Self {
        let profiles = self.profiles_mut();
        if profiles.is_empty() {
            profiles.push(json!({}));
        }
        for profile in profiles.iter_mut() {
            let plugin_config = &mut profile["pluginConfig"];
            if !plugin_config.is_array() {
                *plugin_config = json!([]);
            }
            let Some(entries) = plugin_config.as_array_mut() else {
                continue;
            };
            entries.retain(|e| e["name"] != name);
            entries.push(json!({ "name": name, "args": args.clone() }));
        }
        self
    }

    /// Renames the first profile (and only the first).
    pub fn with_scheduler_name(mut self, scheduler_name: impl Into<String>) -> Self {
        let profiles = self.profiles_mut();
        if profiles.is_empty() {
            profiles.push(json!({}));
        }
        profiles[0]["schedulerName"] = Value::from(scheduler_name.into());
        self
    }

    /// Lets every profile place pods only on nodes of `pool` (nodes created by
    /// [`crate::TestNamespace::create_nodes`] carry their namespace as pool), via
    /// the NodeAffinity plugin's `addedAffinity`. Keeps tests that share a
    /// control plane off each other's nodes.
    pub fn restricted_to_node_pool(mut self, pool: impl Into<String>) -> Self {
        let affinity = json!({
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{
                    "matchExpressions": [{
                        "key": NODE_POOL_LABEL,
                        "operator": "In",
                        "values": [pool.into()],
                    }],
                }],
            },
        });
        let profiles = self.profiles_mut();
        if profiles.is_empty() {
            profiles.push(json!({}));
        }
        for profile in profiles.iter_mut() {
            let plugin_config = &mut profile["pluginConfig"];
            if !plugin_config.is_array() {
                *plugin_config = json!([]);
            }
            let Some(entries) = plugin_config.as_array_mut() else {
                continue;
            };
            match entries.iter_mut().find(|e| e["name"] == "NodeAffinity") {
                Some(entry) => entry["args"]["addedAffinity"] = affinity.clone(),
                None => entries.push(json!({
                    "name": "NodeAffinity",
                    "args": {
                        "apiVersion": SCHEDULER_CONFIG_API_VERSION,
                        "kind": "NodeAffinityArgs",
                        "addedAffinity": affinity.clone(),
                    },
                })),
            }
        }
        self
    }

    /// Adds an extender.
    pub fn with_extender(mut self, extender: Extender) -> Self {
        let extenders = &mut self.document["extenders"];
        if !extenders.is_array() {
            *extenders = json!([]);
        }
        if let Some(list) = extenders.as_array_mut() {
            list.push(serde_json::to_value(&extender).unwrap_or(Value::Null));
        }
        self
    }

    /// Removes all extenders (e.g. the in-cluster one of a shipped config).
    pub fn without_extenders(mut self) -> Self {
        if let Some(map) = self.document.as_object_mut() {
            map.remove("extenders");
        }
        self
    }

    /// klog verbosity (`--v`); 4 or more logs every extender call.
    pub fn with_verbosity(mut self, level: u8) -> Self {
        self.verbosity = Some(level);
        self
    }

    /// The `schedulerName`s of the profiles (`default-scheduler` when unset).
    pub fn scheduler_names(&self) -> Vec<String> {
        match self.document["profiles"].as_array() {
            Some(profiles) if !profiles.is_empty() => profiles
                .iter()
                .map(|p| {
                    p["schedulerName"]
                        .as_str()
                        .unwrap_or("default-scheduler")
                        .to_owned()
                })
                .collect(),
            _ => vec!["default-scheduler".to_owned()],
        }
    }

    /// The document kube-scheduler is given, with `kubeconfig` filled in and
    /// leader election off.
    pub fn to_document(&self, kubeconfig: &Path) -> Value {
        let mut document = self.document.clone();
        document["clientConnection"]["kubeconfig"] = Value::from(kubeconfig.display().to_string());
        document["leaderElection"]["leaderElect"] = Value::Bool(false);
        document
    }

    fn profiles_mut(&mut self) -> &mut Vec<Value> {
        let profiles = &mut self.document["profiles"];
        if !profiles.is_array() {
            *profiles = json!([]);
        }
        match profiles {
            Value::Array(list) => list,
            _ => unreachable!("profiles was just made an array"),
        }
    }
}

/// One entry of `extenders` in a `KubeSchedulerConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Extender {
    url_prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter_verb: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prioritize_verb: Option<String>,
    weight: i64,
    node_cache_capable: bool,
    ignorable: bool,
    #[serde(rename = "httpTimeout")]
    http_timeout: String,
    #[serde(rename = "enableHTTPS")]
    enable_https: bool,
}

impl Extender {
    /// An extender at `url_prefix` (e.g. `http://127.0.0.1:8080/carbon`) with
    /// no verbs yet, weight 1, not node-cache-capable, not ignorable, 5 s timeout.
    pub fn at(url_prefix: impl Into<String>) -> Self {
        let url_prefix = url_prefix.into();
        Self {
            enable_https: url_prefix.starts_with("https://"),
            url_prefix,
            filter_verb: None,
            prioritize_verb: None,
            weight: 1,
            node_cache_capable: false,
            ignorable: false,
            http_timeout: "5s".to_owned(),
        }
    }

    /// Calls `<urlPrefix>/<verb>` to filter nodes.
    pub fn filter_verb(mut self, verb: impl Into<String>) -> Self {
        self.filter_verb = Some(verb.into());
        self
    }

    /// Calls `<urlPrefix>/<verb>` to score nodes.
    pub fn prioritize_verb(mut self, verb: impl Into<String>) -> Self {
        self.prioritize_verb = Some(verb.into());
        self
    }

    /// Multiplier of the extender's scores (must be positive with a prioritize verb).
    pub fn weight(mut self, weight: i64) -> Self {
        self.weight = weight;
        self
    }

    /// Send node names only (`NodeNames`) instead of full Node objects.
    pub fn node_cache_capable(mut self, capable: bool) -> Self {
        self.node_cache_capable = capable;
        self
    }

    /// Schedule anyway when the extender fails or times out.
    pub fn ignorable(mut self, ignorable: bool) -> Self {
        self.ignorable = ignorable;
        self
    }

    /// Per-call timeout.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = format!("{}ms", timeout.as_millis());
        self
    }
}

/// A running kube-scheduler; stopped (by pid) when dropped.
#[derive(Debug)]
pub struct Scheduler {
    process: Process,
    config_path: PathBuf,
    names: Vec<String>,
    metrics_url: String,
    client: reqwest::Client,
}

impl Scheduler {
    pub(crate) async fn start(
        control_plane: &ControlPlane,
        config: SchedulerConfig,
        n: usize,
    ) -> Result<Self, Error> {
        let binary = control_plane.binaries().path(config.binary)?;
        let dir = control_plane.dir();
        let config_path = dir.join(format!("kube-scheduler-{n}.config.json"));
        let document = config.to_document(control_plane.kubeconfig_path());
        let text = serde_json::to_string_pretty(&document)
            .map_err(|e| Error::SchedulerConfig(e.to_string()))?;
        std::fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))?;

        let port = free_port()?;
        let kubeconfig = control_plane.kubeconfig_path().display().to_string();
        let pki = control_plane.pki();
        let mut args = vec![
            format!("--config={}", config_path.display()),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", pki.component_cert.display()),
            format!("--tls-private-key-file={}", pki.component_key.display()),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--profiling={}", config.profiling),
            // /metrics without credentials, for tests that read the plugin's
            // metrics (the test control plane only listens on 127.0.0.1).
            format!(
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics{}",
                if config.profiling {
                    ",/debug/pprof/*"
                } else {
                    ""
                }
            ),
        ];
        if let Some(level) = config.verbosity {
            args.push(format!("--v={level}"));
        }
        let mut process = Process::spawn(
            &format!("{}-{n}", config.binary),
            &binary,
            &args,
            &[],
            dir.join(format!("kube-scheduler-{n}.log")),
        )?;
        let client = health_client(Some(control_plane.ca_pem())).map_err(Error::HealthClient)?;
        let url = format!("https://127.0.0.1:{port}/readyz");
        wait_ready(&mut process, SCHEDULER_START_TIMEOUT, || {
            http_ok(&client, &url)
        })
        .await?;
        Ok(Self {
            process,
            config_path,
            names: config.scheduler_names(),
            metrics_url: format!("https://127.0.0.1:{port}/metrics"),
            client,
        })
    }

    /// A Go CPU profile (pprof format) of the next `seconds` seconds; needs
    /// [`SchedulerConfig::with_profiling`].
    pub async fn cpu_profile(&self, seconds: u32) -> Result<Vec<u8>, String> {
        let url = self.metrics_url.replace(
            "/metrics",
            &format!("/debug/pprof/profile?seconds={seconds}"),
        );
        let response = self
            .client
            .get(&url)
            .timeout(Duration::from_secs(u64::from(seconds) + 30))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
    }

    /// Its `/metrics` text (kube-scheduler's registry, including the carbon
    /// plugin's metrics in [`CARBON_SCHEDULER`]).
    pub async fn metrics(&self) -> Result<String, String> {
        let response = self
            .client
            .get(&self.metrics_url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("GET {}: {}", self.metrics_url, response.status()));
        }
        response.text().await.map_err(|e| e.to_string())
    }

    /// `schedulerName` of the first profile.
    pub fn scheduler_name(&self) -> &str {
        self.names
            .first()
            .map_or("default-scheduler", String::as_str)
    }

    /// Path of the configuration file it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Path of its log.
    pub fn log_path(&self) -> &Path {
        self.process.log()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(self.process.log(), lines)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops it now (dropping the handle does the same).
    pub fn stop(mut self) {
        self.process.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_profile_with_pool_restriction_and_extender() {
        let config = SchedulerConfig::new("carbon-test")
            .restricted_to_node_pool("pool-a")
            .with_extender(
                Extender::at("http://127.0.0.1:9999/carbon")
                    .filter_verb("filter")
                    .prioritize_verb("prioritize")
                    .weight(5)
                    .node_cache_capable(true)
                    .ignorable(true)
                    .http_timeout(Duration::from_secs(2)),
            );
        let doc = config.to_document(Path::new("/tmp/admin.kubeconfig"));
        assert_eq!(
            doc["clientConnection"]["kubeconfig"],
            "/tmp/admin.kubeconfig"
        );
        assert_eq!(doc["leaderElection"]["leaderElect"], false);
        assert_eq!(doc["profiles"][0]["schedulerName"], "carbon-test");
        let args = &doc["profiles"][0]["pluginConfig"][0];
        assert_eq!(args["name"], "NodeAffinity");
        let term = &args["args"]["addedAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0];
        assert_eq!(term["key"], NODE_POOL_LABEL);
        assert_eq!(term["values"][0], "pool-a");
        let extender = &doc["extenders"][0];
        assert_eq!(extender["urlPrefix"], "http://127.0.0.1:9999/carbon");
        assert_eq!(extender["filterVerb"], "filter");
        assert_eq!(extender["prioritizeVerb"], "prioritize");
        assert_eq!(extender["weight"], 5);
        assert_eq!(extender["nodeCacheCapable"], true);
        assert_eq!(extender["ignorable"], true);
        assert_eq!(extender["httpTimeout"], "2000ms");
        assert_eq!(extender["enableHTTPS"], false);
        assert_eq!(config.scheduler_names(), ["carbon-test"]);
    }

    #[test]
    fn plugin_args_replace_the_plugins_entry_and_the_binary_is_chosen() {
        let config = SchedulerConfig::new("carbon-test")
            .restricted_to_node_pool("pool-a")
            .with_plugin_args("CarbonKube", json!({ "threshold": 300 }))
            .with_plugin_args("CarbonKube", json!({ "threshold": 200 }));
        assert_eq!(config.binary(), STOCK_SCHEDULER);
        let doc = config.to_document(Path::new("/k"));
        let entries = doc["profiles"][0]["pluginConfig"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "NodeAffinity and one CarbonKube entry");
        assert_eq!(entries[1]["name"], "CarbonKube");
        assert_eq!(entries[1]["args"]["threshold"], 200);
        let config = config.with_binary(CARBON_SCHEDULER);
        assert_eq!(config.binary(), "kube-scheduler-carbon");
    }

    #[test]
    fn yaml_configs_keep_their_content_and_get_our_connection() {
        let yaml = "\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: true
clientConnection:
  kubeconfig: /etc/kubernetes/scheduler.conf
percentageOfNodesToScore: 50
profiles:
- schedulerName: carbon-kube
  pluginConfig:
  - name: NodeAffinity
    args:
      addedAffinity: {}
extenders:
- urlPrefix: http://carbon-kube.kube-system.svc/extender
  filterVerb: filter
";
        let config = SchedulerConfig::from_yaml(yaml)
            .unwrap()
            .without_extenders()
            .with_scheduler_name("carbon-kube-test")
            .restricted_to_node_pool("p");
        let doc = config.to_document(Path::new("/k"));
        assert_eq!(doc["percentageOfNodesToScore"], 50);
        assert_eq!(doc["leaderElection"]["leaderElect"], false);
        assert_eq!(doc["clientConnection"]["kubeconfig"], "/k");
        assert!(doc.get("extenders").is_none());
        let plugin_config = doc["profiles"][0]["pluginConfig"].as_array().unwrap();
        assert_eq!(
            plugin_config.len(),
            1,
            "existing NodeAffinity entry is reused"
        );
        assert!(plugin_config[0]["args"]["addedAffinity"].is_object());
        assert_eq!(config.scheduler_names(), ["carbon-kube-test"]);

        let err = SchedulerConfig::from_yaml("kind: Pod").unwrap_err();
        assert!(err.to_string().contains("KubeSchedulerConfiguration"));
    }
}
