//! The one error type of the test kit, with variants named for the step that failed.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting or using the test control plane.
///
/// Messages are written for a person reading a failed test: they say what
/// failed, where the component logs are and, for process failures, end with the
/// last lines of the component's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes binary the harness needs is not in the binary directory.
    #[error(
        "{binary} not found at {path}: run `make k8s-bin` to build the test binaries \
         (see docs/testing.md), or point CARBON_KUBE_K8S_BIN at a directory that holds them"
    )]
    MissingBinary {
        /// File name of the binary, e.g. `kube-apiserver`.
        binary: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },

    /// A file or directory of the harness could not be created or written.
    #[error("failed to write {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// No free TCP port could be reserved on 127.0.0.1.
    #[error("failed to reserve a free port on 127.0.0.1: {0}")]
    FreePort(#[source] std::io::Error),

    /// Generating the certificates or keys failed.
    #[error("failed to generate certificates: {0}")]
    Certificates(#[from] rcgen::Error),

    /// A component process could not be started at all.
    #[error("failed to start {component} ({program}): {source}")]
    Spawn {
        /// Component name, e.g. `etcd`.
        component: String,
        /// The program that was executed.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A component process exited while the harness waited for it to become ready.
    #[error(
        "{component} exited before it became ready ({status}); full log: {log}\n\
         --- last lines of {component}'s log ---\n{tail}"
    )]
    ExitedEarly {
        /// Component name.
        component: String,
        /// How it exited.
        status: String,
        /// Path of its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },

    /// A component did not pass its readiness check in time.
    #[error(
        "{component} was not ready after {timeout:?} (last check: {last}); full log: {log}\n\
         --- last lines of {component}'s log ---\n{tail}"
    )]
    NotReady {
        /// Component name.
        component: String,
        /// How long the harness waited.
        timeout: Duration,
        /// Outcome of the last readiness check.
        last: String,
        /// Path of its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },

    /// The admin kubeconfig written by the harness could not be loaded.
    #[error("failed to load kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Path of the kubeconfig.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// A `kube::Client` could not be built from the kubeconfig.
    #[error("failed to build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),

    /// A call to the Kubernetes API failed.
    #[error("{action}: {source}")]
    Api {
        /// What the harness was doing, e.g. `create namespace foo`.
        action: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },

    /// A wait helper gave up.
    #[error("timed out after {timeout:?} waiting for {what}; last observed: {last}")]
    Timeout {
        /// What was awaited, e.g. `pod ns/web to be bound`.
        what: String,
        /// How long the helper waited.
        timeout: Duration,
        /// The last state the helper observed.
        last: String,
    },

    /// The HTTP client used for health checks could not be built.
    #[error("failed to build the health-check HTTP client: {0}")]
    HealthClient(String),

    /// A `KubeSchedulerConfiguration` given to the harness could not be used.
    #[error("invalid KubeSchedulerConfiguration: {0}")]
    SchedulerConfig(String),

    /// The shared control plane of this test binary failed to start earlier.
    #[error("the shared control plane of this test binary failed to start: {0}")]
    SharedStartFailed(String),

    /// A test asked for a slow etcd on a control plane started without the
    /// latency proxy.
    #[error(
        "this control plane has no etcd latency proxy: start it with \
         ControlPlaneOptions::with_etcd_latency_proxy(true) (see shared_with)"
    )]
    NoEtcdProxy,

    /// Signalling a control-plane process (e.g. freezing etcd) failed, or
    /// the process is not running.
    #[error("cannot send {signal} to {component}: {detail}")]
    Signal {
        /// The component, e.g. `etcd`.
        component: &'static str,
        /// The signal, e.g. `SIGSTOP`.
        signal: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            action: action.into(),
            source,
        }
    }

    /// The HTTP status code of a failed API call, if the server answered with one.
    ///
    /// Handy for asserting that the API server refused something, e.g. an
    /// eviction blocked by a PodDisruptionBudget (429).
    pub fn api_status_code(&self) -> Option<u16> {
        match self {
            Self::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}
