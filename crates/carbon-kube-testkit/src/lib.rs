//! Carbon-Kube's dev-only test kit: a real Kubernetes control plane for tests,
//! and fixtures to use it.
//!
//! [`ControlPlane`] runs etcd, kube-apiserver, kube-controller-manager and kwok
//! (v1.37.2 binaries built by `make k8s-bin`) as child processes on 127.0.0.1,
//! with certificates it generates. Tests start kube-schedulers on it with the
//! configuration they need ([`SchedulerConfig`], [`Extender`]). kwok simulates
//! nodes and pods: no container ever runs (no kubelet, no CNI).
//!
//! What it does not do: build the binaries (`make k8s-bin` does), skip tests
//! when they are missing (it fails and says what to run), or clean up objects
//! between tests (each test works in its own [`TestNamespace`] and node pool).
//!
//! ```no_run
//! # async fn example() -> Result<(), carbon_kube_testkit::Error> {
//! use std::time::Duration;
//! use carbon_kube_testkit::{nodes_in_zone, pod_named, shared};
//!
//! let cp = shared().await; // one control plane per test binary
//! let ns = cp.test_namespace("pod-is-bound").await?;
//! ns.create_nodes(&nodes_in_zone("eu-west", "eu-west-1a").count(2)).await?;
//! let _scheduler = cp.start_scheduler(ns.scheduler_config()).await?;
//! ns.create_pod(&pod_named("web").scheduled_by(ns.scheduler_name()).build()).await?;
//! let node = ns.wait_for_pod_bound("web", Duration::from_secs(30)).await?;
//! assert!(node.contains("eu-west-1a"));
//! # Ok(()) }
//! ```
//!
//! See `docs/testing.md` for how the binaries are built and how to read logs.

mod binaries;
mod control_plane;
mod error;
mod fixtures;
pub mod hostile;
mod kwok;
mod latency;
pub mod logs;
mod pki;
mod process;
mod readiness;
mod scheduler;
mod wait;

pub use binaries::{BIN_DIR_ENV, Binaries, KUBERNETES_VERSION};
pub use control_plane::{ControlPlane, ControlPlaneOptions, DEFAULT_CONTROLLERS};
pub use error::Error;
pub use fixtures::{
    NODE_POOL_LABEL, NodeSet, NodeSimulation, PAUSE_IMAGE, PodTemplate, REGION_LABEL,
    TestNamespace, ZONE_LABEL, node_is_ready, nodes_in_zone, pod_named,
};
pub use kwok::{KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE};
pub use scheduler::{
    CARBON_SCHEDULER, Extender, SCHEDULER_CONFIG_API_VERSION, STOCK_SCHEDULER, Scheduler,
    SchedulerConfig,
};
pub use wait::{
    Progress, pod_is_running_and_ready, wait_for, wait_for_deletion, wait_for_pod_bound,
    wait_for_pod_running, wait_until,
};

/// Environment variable: how many rounds a fault test repeats its scenario
/// (default 1; `make soak` sets more).
pub const FAULT_ROUNDS_ENV: &str = "FAULT_ROUNDS";

/// The rounds a fault test repeats its scenario: [`FAULT_ROUNDS_ENV`], at
/// least 1.
pub fn fault_rounds() -> usize {
    std::env::var(FAULT_ROUNDS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// The shared control plane of a fault-test binary: with the latency proxy
/// in front of etcd (see [`ControlPlaneOptions::with_etcd_latency_proxy`]),
/// and the rustls crypto provider installed.
pub async fn shared_for_faults() -> &'static ControlPlane {
    ensure_crypto_provider();
    shared_with(ControlPlaneOptions::default().with_etcd_latency_proxy(true)).await
}

/// Set to `1` to keep the control plane's directory (logs, certificates,
/// kubeconfig) after the test binary ends; its path is printed.
pub const KEEP_LOGS_ENV: &str = "CARBON_KUBE_KEEP_LOGS";

/// The control plane shared by all tests of this test binary.
static SHARED: tokio::sync::OnceCell<Result<ControlPlane, String>> =
    tokio::sync::OnceCell::const_new();

/// The control plane shared by every test in this test binary (etcd,
/// kube-apiserver, kube-controller-manager and kwok with
/// [`ControlPlaneOptions::default`]), started by the first caller.
///
/// Panics with the start-up error (which names the component, its log and the
/// log's last lines) if it cannot start; every later caller panics with the
/// same message instead of trying again. Use [`try_shared`] for a `Result`.
///
/// The processes are stopped when the test binary exits (an exit hook), or by
/// their watchdogs if it is killed.
pub async fn shared() -> &'static ControlPlane {
    match try_shared().await {
        Ok(control_plane) => control_plane,
        Err(error) => panic!("{error}"),
    }
}

/// Like [`shared`], returning the start-up error instead of panicking.
pub async fn try_shared() -> Result<&'static ControlPlane, Error> {
    try_shared_with(ControlPlaneOptions::default()).await
}

/// Like [`shared`], but the first caller starts it with `options` (e.g.
/// [`ControlPlaneOptions::with_etcd_latency_proxy`] for the fault tests).
/// Every test of a binary should ask with the same options: later callers
/// get the control plane that was started, whatever they pass.
pub async fn shared_with(options: ControlPlaneOptions) -> &'static ControlPlane {
    match try_shared_with(options).await {
        Ok(control_plane) => control_plane,
        Err(error) => panic!("{error}"),
    }
}

/// Like [`shared_with`], returning the start-up error instead of panicking.
pub async fn try_shared_with(options: ControlPlaneOptions) -> Result<&'static ControlPlane, Error> {
    SHARED
        .get_or_init(|| async {
            ControlPlane::start(options)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .as_ref()
        .map_err(|message| Error::SharedStartFailed(message.clone()))
}

// Statics are never dropped, so the shared control plane is stopped by an exit
// hook. `dtor` registers it in the binary's destructor list; the `unsafe` marker
// is the crate's required acknowledgement that the function runs after `main`,
// when parts of std may already be torn down. The body only signals and reaps
// child processes and removes a directory, which is sound at that point. The
// per-process watchdogs remain the backstop if the process is killed instead.
#[dtor::dtor(unsafe)]
fn stop_shared_control_plane() {
    if let Some(Ok(control_plane)) = SHARED.get() {
        control_plane.stop();
    }
}

/// The shared public data folder (`../shared/data` beside the repository),
/// or `$CARBON_KUBE_SHARED_DATA` when set. Tests, benches and examples read
/// recorded API bodies and real traces from here; nothing in it is copied
/// into the repository.
pub fn shared_data() -> std::path::PathBuf {
    std::env::var_os("CARBON_KUBE_SHARED_DATA").map_or_else(
        || concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data").into(),
        std::path::PathBuf::from,
    )
}

/// Installs ring as rustls' process-wide crypto provider (kube and reqwest are
/// built without a default one). Idempotent.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
