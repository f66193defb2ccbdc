//! [`ControlPlane`]: etcd, kube-apiserver and, on request,
//! kube-controller-manager and kwok, as child processes on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::binaries::Binaries;
use crate::kwok::{KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE, STAGES};
use crate::latency::LatencyProxy;
use crate::pki::Pki;
use crate::process::{Process, free_port, spawn_dir_reaper};
use crate::readiness::{apiserver_ok, health_client, http_ok, report_failure, wait_ready};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::{Error, KEEP_LOGS_ENV};

/// Controllers kube-controller-manager runs by default: what PodDisruptionBudget
/// status, Deployments, ReplicaSets, Jobs, CronJobs, StatefulSets, namespace
/// deletion and garbage collection need. Deliberately not the node lifecycle
/// controller: nodes only change readiness when a test says so.
pub const DEFAULT_CONTROLLERS: &[&str] = &[
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "statefulset-controller",
    "disruption-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "pod-garbage-collector-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
];

/// Service CIDR given to the API server (its first address is the `kubernetes` service).
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// Pod CIDR kwok allocates pod IPs from.
const KWOK_POD_CIDR: &str = "10.244.0.0/16";

/// What to start besides etcd and kube-apiserver.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Start kube-controller-manager (PDB status, ReplicaSets, Jobs, ...).
    pub controller_manager: bool,
    /// Controllers kube-controller-manager runs (`--controllers`).
    pub controllers: Vec<String>,
    /// Start kwok (fake nodes that become Ready, pods that become Running).
    pub kwok: bool,
    /// How long each component may take to become ready.
    pub start_timeout: Duration,
    /// Put a latency-injecting proxy between kube-apiserver and etcd, so a
    /// test can make etcd slow ([`ControlPlane::set_etcd_latency`]).
    pub etcd_latency_proxy: bool,
}

impl Default for ControlPlaneOptions {
    /// Everything: etcd, kube-apiserver, kube-controller-manager, kwok.
    fn default() -> Self {
        Self {
            controller_manager: true,
            controllers: DEFAULT_CONTROLLERS
                .iter()
                .map(ToString::to_string)
                .collect(),
            kwok: true,
            start_timeout: Duration::from_secs(120),
            etcd_latency_proxy: false,
        }
    }
}

impl ControlPlaneOptions {
    /// etcd and kube-apiserver only: enough for API-level tests.
    pub fn api_server_only() -> Self {
        Self {
            controller_manager: false,
            kwok: false,
            ..Self::default()
        }
    }

    /// Start kube-controller-manager or not.
    pub fn with_controller_manager(mut self, enabled: bool) -> Self {
        self.controller_manager = enabled;
        self
    }

    /// Start kwok or not.
    pub fn with_kwok(mut self, enabled: bool) -> Self {
        self.kwok = enabled;
        self
    }

    /// Route kube-apiserver's etcd traffic through a latency-injecting proxy
    /// (no latency until [`ControlPlane::set_etcd_latency`]).
    pub fn with_etcd_latency_proxy(mut self, enabled: bool) -> Self {
        self.etcd_latency_proxy = enabled;
        self
    }

    /// Replace the controllers kube-controller-manager runs.
    pub fn with_controllers<I, S>(mut self, controllers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.controllers = controllers.into_iter().map(Into::into).collect();
        self
    }
}

/// A running control plane. Every process it started is stopped, by process id,
/// when it is dropped or [`ControlPlane::stop`] is called; a watchdog per
/// process kills them even if the test process is SIGKILLed.
///
/// Clients are built per call ([`ControlPlane::client`]), so each test gets one
/// bound to its own tokio runtime while the processes are shared.
#[derive(Debug)]
pub struct ControlPlane {
    binaries: Binaries,
    dir: PathBuf,
    keep_logs: bool,
    temp_dir: Mutex<Option<tempfile::TempDir>>,
    dir_reaper: Mutex<Option<Child>>,
    processes: Mutex<Vec<Process>>,
    pki: Pki,
    server_url: String,
    kubeconfig: PathBuf,
    startup: Duration,
    schedulers_started: AtomicUsize,
    /// How kube-apiserver was started, to start it again on the same port
    /// and etcd ([`ControlPlane::start_apiserver`]).
    apiserver_args: Vec<String>,
    start_timeout: Duration,
    etcd_proxy: Option<LatencyProxy>,
    /// Serialises stops and starts of kube-apiserver.
    apiserver_lifecycle: tokio::sync::Mutex<()>,
}

/// What [`ControlPlane::start_components`] started.
struct Started {
    pki: Pki,
    server_url: String,
    kubeconfig: PathBuf,
    apiserver_args: Vec<String>,
    etcd_proxy: Option<LatencyProxy>,
}

impl ControlPlane {
    /// Starts a control plane with `options` and waits until every component is
    /// ready. Binaries come from [`Binaries::locate`].
    pub async fn start(options: ControlPlaneOptions) -> Result<Self, Error> {
        Self::start_with(Binaries::locate(), options).await
    }

    /// Starts a control plane from the binaries in `binaries`.
    pub async fn start_with(
        binaries: Binaries,
        options: ControlPlaneOptions,
    ) -> Result<Self, Error> {
        let mut needed = vec!["etcd", "kube-apiserver"];
        if options.controller_manager {
            needed.push("kube-controller-manager");
        }
        if options.kwok {
            needed.push("kwok");
        }
        binaries.require(&needed)?;

        // A port picked as free may be taken before the component binds it; one
        // retry makes that race harmless.
        match Self::start_once(&binaries, &options).await {
            Err(error) if is_port_clash(&error) => Self::start_once(&binaries, &options).await,
            result => result,
        }
    }

    async fn start_once(binaries: &Binaries, options: &ControlPlaneOptions) -> Result<Self, Error> {
        let began = Instant::now();
        crate::ensure_crypto_provider();
        let keep_logs = keep_logs();
        let temp_dir = tempfile::Builder::new()
            .prefix("carbon-kube-cp-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let dir = temp_dir.path().to_owned();
        if keep_logs {
            eprintln!(
                "carbon-kube-testkit: {KEEP_LOGS_ENV}=1, control plane logs go to {}",
                dir.display()
            );
        }
        let dir_reaper = if keep_logs {
            None
        } else {
            Some(spawn_dir_reaper(&dir)?)
        };

        let mut processes = Vec::new();
        let started = Self::start_components(binaries, options, &dir, &mut processes).await;
        let started = match started {
            Ok(values) => values,
            Err(error) => {
                // Stop what runs, keep the directory so the logs can be read.
                stop_all(&mut processes);
                if let Some(mut reaper) = dir_reaper {
                    let _ = reaper.kill();
                    let _ = reaper.wait();
                }
                let kept = temp_dir.keep();
                report_failure(&kept);
                return Err(error);
            }
        };
        Ok(Self {
            binaries: binaries.clone(),
            dir,
            keep_logs,
            temp_dir: Mutex::new(Some(temp_dir)),
            dir_reaper: Mutex::new(dir_reaper),
            processes: Mutex::new(processes),
            pki: started.pki,
            server_url: started.server_url,
            kubeconfig: started.kubeconfig,
            startup: began.elapsed(),
            schedulers_started: AtomicUsize::new(0),
            apiserver_args: started.apiserver_args,
            start_timeout: options.start_timeout,
            etcd_proxy: started.etcd_proxy,
            apiserver_lifecycle: tokio::sync::Mutex::new(()),
        })
    }

    async fn start_components(
        binaries: &Binaries,
        options: &ControlPlaneOptions,
        dir: &Path,
        processes: &mut Vec<Process>,
    ) -> Result<Started, Error> {
        let pki = Pki::generate(&dir.join("pki"))?;
        let timeout = options.start_timeout;

        // etcd
        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let mut etcd = Process::spawn(
            "etcd",
            &binaries.path("etcd")?,
            &[
                "--name=carbon-kube-testkit".to_owned(),
                format!("--data-dir={}", dir.join("etcd-data").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=carbon-kube-testkit={peer_url}"),
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            &[],
            dir.join("etcd.log"),
        )?;
        let http = health_client(None).map_err(Error::HealthClient)?;
        let etcd_ready = format!("{etcd_url}/readyz");
        let result = wait_ready(&mut etcd, timeout, || http_ok(&http, &etcd_ready)).await;
        processes.push(etcd);
        result?;
        let etcd_proxy = if options.etcd_latency_proxy {
            Some(LatencyProxy::start(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                etcd_port,
            )))?)
        } else {
            None
        };
        let etcd_servers = etcd_proxy
            .as_ref()
            .map_or(etcd_url, |proxy| format!("http://{}", proxy.addr()));

        // kube-apiserver
        let port = free_port()?;
        let server_url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        pki.write_kubeconfig(&kubeconfig, &server_url)?;
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_servers}"),
            "--advertise-address=127.0.0.1".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", pki.apiserver_cert.display()),
            format!("--tls-private-key-file={}", pki.apiserver_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            "--authorization-mode=RBAC,Node".to_owned(),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--allow-privileged=true".to_owned(),
            // As envtest: without the service-account controller's token
            // machinery every test would first have to create a ServiceAccount.
            "--disable-admission-plugins=ServiceAccount".to_owned(),
            format!("--service-account-issuer={server_url}"),
            format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            // 1.37 refuses a loopback advertise address with the lease
            // reconciler; nothing in the cluster needs the endpoints of the
            // `kubernetes` service (no pods really run).
            "--endpoint-reconciler-type=none".to_owned(),
            "--profiling=false".to_owned(),
        ];
        let mut apiserver = Process::spawn(
            "kube-apiserver",
            &binaries.path("kube-apiserver")?,
            &apiserver_args,
            &[],
            dir.join("kube-apiserver.log"),
        )?;
        let result = wait_apiserver_ready(&mut apiserver, &kubeconfig, timeout).await;
        processes.push(apiserver);
        result?;

        let components = health_client(Some(&pki.ca_pem)).map_err(Error::HealthClient)?;

        // kube-controller-manager and kwok start side by side.
        let mut controller_manager = None;
        if options.controller_manager {
            let kcm_port = free_port()?;
            let process = Process::spawn(
                "kube-controller-manager",
                &binaries.path("kube-controller-manager")?,
                &[
                    format!("--kubeconfig={}", kubeconfig.display()),
                    format!("--authentication-kubeconfig={}", kubeconfig.display()),
                    format!("--authorization-kubeconfig={}", kubeconfig.display()),
                    format!("--controllers={}", options.controllers.join(",")),
                    "--leader-elect=false".to_owned(),
                    "--use-service-account-credentials=false".to_owned(),
                    format!(
                        "--service-account-private-key-file={}",
                        pki.service_account_key.display()
                    ),
                    format!("--root-ca-file={}", pki.ca_cert.display()),
                    format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                    "--bind-address=127.0.0.1".to_owned(),
                    format!("--secure-port={kcm_port}"),
                    format!("--tls-cert-file={}", pki.component_cert.display()),
                    format!("--tls-private-key-file={}", pki.component_key.display()),
                    "--profiling=false".to_owned(),
                ],
                &[],
                dir.join("kube-controller-manager.log"),
            )?;
            controller_manager = Some((process, format!("https://127.0.0.1:{kcm_port}/healthz")));
        }
        let mut kwok = None;
        if options.kwok {
            let kwok_port = free_port()?;
            let stages_dir = dir.join("kwok-stages");
            std::fs::create_dir_all(&stages_dir).map_err(|e| Error::io(&stages_dir, e))?;
            let mut args = vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                "--manage-all-nodes=false".to_owned(),
                format!(
                    "--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}"
                ),
                format!("--server-address=127.0.0.1:{kwok_port}"),
                format!("--cidr={KWOK_POD_CIDR}"),
            ];
            for (file, contents) in STAGES {
                let path = stages_dir.join(file);
                std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))?;
                args.push(format!("--config={}", path.display()));
            }
            let workdir = dir.join("kwok-workdir");
            let process = Process::spawn(
                "kwok",
                &binaries.path("kwok")?,
                &args,
                // Keeps kwok away from a ~/.kwok/kwok.yaml of the developer.
                &[("KWOK_WORKDIR", &workdir)],
                dir.join("kwok.log"),
            )?;
            kwok = Some((process, format!("http://127.0.0.1:{kwok_port}/readyz")));
        }
        let (kcm_result, kwok_result) = tokio::join!(
            async {
                match controller_manager.as_mut() {
                    Some((process, url)) => {
                        wait_ready(process, timeout, || http_ok(&components, url)).await
                    }
                    None => Ok(()),
                }
            },
            async {
                match kwok.as_mut() {
                    Some((process, url)) => {
                        wait_ready(process, timeout, || http_ok(&components, url)).await
                    }
                    None => Ok(()),
                }
            },
        );
        processes.extend(controller_manager.map(|(process, _)| process));
        processes.extend(kwok.map(|(process, _)| process));
        kcm_result?;
        kwok_result?;
        Ok(Started {
            pki,
            server_url,
            kubeconfig,
            apiserver_args,
            etcd_proxy,
        })
    }

    /// Kills kube-apiserver (SIGKILL: a crash, open watches and requests are
    /// cut without a goodbye) and reaps it. etcd and its data stay; every
    /// other component and client sees connection errors until
    /// [`ControlPlane::start_apiserver`]. Idempotent.
    pub async fn kill_apiserver(&self) {
        let _lifecycle = self.apiserver_lifecycle.lock().await;
        let taken = {
            let mut processes = lock(&self.processes);
            processes
                .iter()
                .position(|p| p.name() == "kube-apiserver")
                .map(|i| processes.remove(i))
        };
        if let Some(mut process) = taken {
            process.kill();
        }
    }

    /// Starts kube-apiserver again with the same flags (the same port,
    /// certificates and etcd, so every client's configuration stays valid)
    /// and waits until it is ready. Does nothing if it runs.
    pub async fn start_apiserver(&self) -> Result<(), Error> {
        let _lifecycle = self.apiserver_lifecycle.lock().await;
        if lock(&self.processes)
            .iter()
            .any(|p| p.name() == "kube-apiserver")
        {
            return Ok(());
        }
        let mut apiserver = Process::spawn(
            "kube-apiserver",
            &self.binaries.path("kube-apiserver")?,
            &self.apiserver_args,
            &[],
            self.log_path("kube-apiserver"),
        )?;
        let result =
            wait_apiserver_ready(&mut apiserver, &self.kubeconfig, self.start_timeout).await;
        // Stopped in start order reversed: after the clients, before etcd.
        let mut processes = lock(&self.processes);
        let at = processes
            .iter()
            .position(|p| p.name() == "etcd")
            .map_or(0, |i| i + 1);
        processes.insert(at, apiserver);
        result
    }

    /// [`ControlPlane::kill_apiserver`], then [`ControlPlane::start_apiserver`].
    pub async fn restart_apiserver(&self) -> Result<(), Error> {
        self.kill_apiserver().await;
        self.start_apiserver().await
    }

    /// Makes etcd slow: every chunk between kube-apiserver and etcd is
    /// delivered `latency` later, each way (zero: fast again). Needs
    /// [`ControlPlaneOptions::with_etcd_latency_proxy`].
    pub fn set_etcd_latency(&self, latency: Duration) -> Result<(), Error> {
        match &self.etcd_proxy {
            Some(proxy) => {
                proxy.set_latency(latency);
                Ok(())
            }
            None => Err(Error::NoEtcdProxy),
        }
    }

    /// Freezes etcd (SIGSTOP): it answers nothing and its connections stay
    /// open, as with a stalled disk or a paused machine; kube-apiserver's
    /// requests wait or time out and its watches get no events until
    /// [`ControlPlane::resume_etcd`] thaws it (SIGCONT), its data intact.
    /// A frozen etcd is still stopped by [`ControlPlane::stop`] (SIGKILL
    /// after the grace period).
    pub fn pause_etcd(&self) -> Result<(), Error> {
        self.signal("etcd", nix::sys::signal::Signal::SIGSTOP)
    }

    /// Thaws etcd after [`ControlPlane::pause_etcd`] (SIGCONT). Idempotent.
    pub fn resume_etcd(&self) -> Result<(), Error> {
        self.signal("etcd", nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(
        &self,
        component: &'static str,
        signal: nix::sys::signal::Signal,
    ) -> Result<(), Error> {
        let error = |detail: String| Error::Signal {
            component,
            signal: signal.as_str(),
            detail,
        };
        let pid = lock(&self.processes)
            .iter()
            .find(|p| p.name() == component)
            .map(Process::pid)
            .ok_or_else(|| error("not running".to_owned()))?;
        let pid = i32::try_from(pid).map_err(|e| error(e.to_string()))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| error(e.to_string()))
    }

    /// The latency currently added to etcd traffic, each way.
    pub fn etcd_latency(&self) -> Duration {
        self.etcd_proxy
            .as_ref()
            .map_or(Duration::ZERO, LatencyProxy::latency)
    }

    /// A new client for the current tokio runtime, authenticated as
    /// `system:masters`, with kube's default retries.
    pub async fn client(&self) -> Result<Client, Error> {
        admin_client(&self.kubeconfig, true).await
    }

    /// A new client that does not retry 429/503/504 answers: for asserting
    /// them, e.g. a PodDisruptionBudget refusing an eviction.
    pub async fn client_without_retries(&self) -> Result<Client, Error> {
        admin_client(&self.kubeconfig, false).await
    }

    /// The `kube::Config` behind [`ControlPlane::client`], to customise.
    pub async fn kube_config(&self) -> Result<kube::Config, Error> {
        admin_config(&self.kubeconfig).await
    }

    /// URL of the API server, e.g. `https://127.0.0.1:38211`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Path of an admin kubeconfig, usable by kubectl, helm and other processes.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// PEM of the CA that signed the API server's serving certificate (and the
    /// client certificates): the `caBundle` a webhook configuration needs.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// Path of the CA certificate file.
    pub fn ca_cert_path(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// Directory holding the component logs (`<component>.log`), certificates
    /// and data. Removed on stop unless `CARBON_KUBE_KEEP_LOGS=1`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a component's log, e.g. `log_path("kube-apiserver")`.
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// The last `lines` lines of a component's log.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        crate::process::log_tail(&self.log_path(component), lines)
    }

    /// The binaries this control plane runs.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// How long [`ControlPlane::start`] took until everything was ready.
    pub fn startup_duration(&self) -> Duration {
        self.startup
    }

    /// Process ids of the running components, by component name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        lock(&self.processes)
            .iter()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    /// Starts a kube-scheduler with `config` against this control plane and
    /// waits until it is ready. It is stopped when the handle is dropped.
    pub async fn start_scheduler(&self, config: SchedulerConfig) -> Result<Scheduler, Error> {
        let n = self.schedulers_started.fetch_add(1, Ordering::Relaxed);
        Scheduler::start(self, config, n).await
    }

    /// A serving certificate for `names` (DNS names or IP addresses, e.g.
    /// `["127.0.0.1"]`) signed by the control plane's CA, as `(certificate PEM,
    /// private key PEM)`: for a webhook server the API server calls, with
    /// [`ControlPlane::ca_pem`] as the webhook configuration's `caBundle`.
    pub fn issue_serving_certificate(&self, names: &[&str]) -> Result<(String, String), Error> {
        self.pki.issue_serving_certificate(names)
    }

    pub(crate) fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period), reaps
    /// them and removes the directory unless `CARBON_KUBE_KEEP_LOGS=1`.
    /// Idempotent; also called on drop.
    pub fn stop(&self) {
        let mut processes = std::mem::take(&mut *lock(&self.processes));
        stop_all(&mut processes);
        if let Some(mut reaper) = lock(&self.dir_reaper).take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        if let Some(temp_dir) = lock(&self.temp_dir).take() {
            if self.keep_logs {
                let kept = temp_dir.keep();
                eprintln!(
                    "carbon-kube-testkit: control plane stopped; logs kept in {}",
                    kept.display()
                );
            } else {
                drop(temp_dir);
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops processes one by one in reverse start order, so that clients go before
/// the API server and the API server before etcd (etcd lingers for seconds
/// while clients are still connected).
pub(crate) fn stop_all(processes: &mut Vec<Process>) {
    while let Some(mut process) = processes.pop() {
        process.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn keep_logs() -> bool {
    std::env::var(KEEP_LOGS_ENV).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn is_port_clash(error: &Error) -> bool {
    match error {
        Error::ExitedEarly { tail, .. } | Error::NotReady { tail, .. } => {
            tail.contains("address already in use")
        }
        _ => false,
    }
}

/// Waits until kube-apiserver answers `/readyz` and `/livez`.
async fn wait_apiserver_ready(
    apiserver: &mut Process,
    kubeconfig: &Path,
    timeout: Duration,
) -> Result<(), Error> {
    let probe = admin_client(kubeconfig, false).await?;
    wait_ready(apiserver, timeout, || apiserver_ok(&probe, "/readyz")).await?;
    wait_ready(apiserver, timeout, || apiserver_ok(&probe, "/livez")).await
}

async fn admin_config(kubeconfig: &Path) -> Result<kube::Config, Error> {
    crate::ensure_crypto_provider();
    let file = Kubeconfig::read_from(kubeconfig).map_err(|source| Error::Kubeconfig {
        path: kubeconfig.to_owned(),
        source,
    })?;
    let mut config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: kubeconfig.to_owned(),
            source,
        })?;
    // Never send 127.0.0.1 traffic through an HTTPS_PROXY of the environment.
    config.proxy_url = None;
    Ok(config)
}

async fn admin_client(kubeconfig: &Path, retries: bool) -> Result<Client, Error> {
    let mut config = admin_config(kubeconfig).await?;
    config.default_retry = retries;
    Client::try_from(config).map_err(Error::Client)
}
